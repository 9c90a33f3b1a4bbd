//! The best any model on a zone grid can do over a whole hybrid run: every window accepted and
//! forecast perfectly (the FE's own frames sampled on the grid, an oracle), so what is left of
//! the run's error is the hand-back's — the grid → mesh interpolation and the velocity formed
//! from frames — compounded window after window. Where the oracle is already above an error
//! budget, no model on that grid reaches it with every window taken.
//!
//! ```sh
//! cargo run --release --example oracle_run -- \
//!     examples/fine_square/hybrid_full.toml 23 8 8 16,16c,32,32c,64 bdf2,central4
//! ```
//! Arguments: SOLVE_JOB FRAME_STRIDE (steps) T_IN T_OUT GRID_SIZES VELOCITIES. A grid size
//! ending in `c` hands back through the cubic grid → mesh interpolation. Prints one JSON line
//! a case: the relative L2 error of the field at each window's end against the uninterrupted
//! run, over the run's largest field (the unit of `max_rel_l2_error`), and its maximum.

use std::path::{Path, PathBuf};
use wavecp::comm::Serial;
use wavecp::config::Config;
use wavecp::coupling::handback::VelocityEstimate;
use wavecp::coupling::hybrid::{ErrorScale, Forecaster, Hybrid, HybridConfig};
use wavecp::coupling::indicators::{Indicator, WindowView};
use wavecp::coupling::transfer::{Interpolation, ZoneGrid, ZoneTransfer};
use wavecp::coupling::CouplingError;

/// The FE run's own frames, window after window (every window is accepted).
struct Oracle {
    frames: Vec<Vec<f64>>,
    t_in: usize,
    t_out: usize,
    calls: usize,
}

impl Forecaster for Oracle {
    fn t_in(&self) -> usize {
        self.t_in
    }
    fn t_out(&self) -> usize {
        self.t_out
    }
    fn forecast(&mut self, _past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
        let first = self.t_in + self.calls * self.t_out;
        self.calls += 1;
        Ok(self.frames[first..first + self.t_out].to_vec())
    }
}

struct Trusting;

impl Indicator for Trusting {
    fn score(&mut self, _: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        Ok(0.0)
    }
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 7,
        "usage: oracle_run SOLVE_JOB FRAME_STRIDE T_IN T_OUT GRID_SIZES VELOCITIES"
    );
    let job = PathBuf::from(&args[1]);
    let base = job.parent().unwrap_or(Path::new("."));
    let mut cfg = Config::load(&job, &[])?;
    cfg.coupling = None;
    let stride: usize = args[2].parse()?;
    let (t_in, t_out): (usize, usize) = (args[3].parse()?, args[4].parse()?);
    let mesh = wavecp::sim::load_mesh(&cfg.mesh, base)?;
    let b = mesh.bbox();
    let grids = args[5]
        .split(',')
        .map(|s| -> anyhow::Result<(String, ZoneTransfer)> {
            let (n, interp) = match s.strip_suffix('c') {
                Some(n) => (n.parse()?, Interpolation::Cubic),
                None => (s.parse()?, Interpolation::Bilinear),
            };
            let g = ZoneGrid {
                x: [b[0], b[2]],
                y: [b[1], b[3]],
                nx: n,
                ny: n,
            };
            Ok((
                s.to_string(),
                ZoneTransfer::with_interpolation(&mesh, g, interp)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let velocities = args[6]
        .split(',')
        .map(|v| match v {
            "bdf2" => Ok(VelocityEstimate::Bdf2),
            "central4" => Ok(VelocityEstimate::Central4),
            _ => anyhow::bail!("velocity {v}: bdf2 or central4"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    // The uninterrupted run: frames on every grid, the field at every window's end, and the
    // run's largest field over the frame steps.
    let (mut sim, _) = wavecp::sim::from_job(&cfg, base, &Serial)?;
    let start = sim.state();
    let window = t_out * stride;
    let first = (t_in - 1) * stride;
    let windows = (cfg.time.end / sim.dt()).round() as usize;
    let windows = (windows - first) / window;
    let ends: Vec<usize> = (1..=windows).map(|j| first + j * window).collect();
    let mut frames: Vec<Vec<Vec<f64>>> = vec![vec![]; grids.len()];
    let mut at_ends = vec![];
    let mut largest: f64 = 0.0;
    let last = *ends.last().expect("at least one window");
    loop {
        let s = sim.steps_done();
        largest = largest.max(norm(sim.u()));
        for ((_, t), f) in grids.iter().zip(frames.iter_mut()) {
            let mut g = vec![0.0; t.points()];
            t.to_grid(sim.u(), &mut g)?;
            f.push(g);
        }
        if ends.contains(&s) {
            at_ends.push(sim.u().to_vec());
        }
        if s >= last {
            break;
        }
        sim.advance(stride);
    }
    for ((name, t), f) in grids.iter().zip(&frames) {
        for &velocity in &velocities {
            sim.restore(&start)?;
            let oracle = Oracle {
                frames: f.clone(),
                t_in,
                t_out,
                calls: 0,
            };
            let hcfg = HybridConfig {
                stride,
                tolerance: 1.0,
                max_consecutive: 0,
                velocity,
                error_scale: ErrorScale::Window,
                audit_every: 0,
                handback_limit: None,
                retake_velocity: None,
            };
            let mut h = Hybrid::new(&mut sim, t, oracle, Trusting, hcfg)?;
            let mut errors = vec![];
            for (j, &e) in ends.iter().enumerate() {
                h.run(e)?;
                errors.push(dist(h.sim().u(), &at_ends[j]) / largest);
            }
            let max = errors.iter().cloned().fold(0.0, f64::max);
            println!(
                "{}",
                serde_json::json!({"grid": name, "velocity": format!("{velocity:?}"),
                    "windows": windows, "max_rel_l2_error": max, "at_window_ends": errors})
            );
        }
    }
    Ok(())
}
