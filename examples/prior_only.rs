//! The submodel driven by the prior alone, no network: the baseline a conditioned network's
//! correction is measured against (docs/coupling.md, "What the network needs"). The prior,
//! grid and frame spacing are the job's model's (`coupling.model`); `--free-space` drops the
//! sides' reflections.
//!
//! Run: cargo run --release --example prior_only -- jobs/submodel.toml [--free-space]
//!      [--set KEY=VALUE ...]

use std::path::{Path, PathBuf};
use wavecp::coupling::hybrid::Forecaster;
use wavecp::coupling::subrun::{run_with, SubmodelOptions};
use wavecp::coupling::transfer::ZoneGrid;
use wavecp::coupling::CouplingError;
use wavecp::surrogate::condition::prior_response;

/// Forecasts the prior on the grid at the frames to come.
struct Prior {
    grid: ZoneGrid,
    params: Vec<f64>,
    speed: f64,
    walls: Option<[f64; 4]>,
    frames: (usize, usize, f64),
    t0: f64,
}

impl Forecaster for Prior {
    fn t_in(&self) -> usize {
        self.frames.0
    }
    fn t_out(&self) -> usize {
        self.frames.1
    }
    fn set_input_time(&mut self, t0: f64) {
        self.t0 = t0;
    }
    fn forecast(&mut self, _: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
        let (g, (t_in, t_out, dt)) = (&self.grid, self.frames);
        Ok((0..t_out)
            .map(|f| {
                let t = self.t0 + (t_in + f) as f64 * dt;
                let mut v = Vec::with_capacity(g.nx * g.ny);
                for j in 0..g.ny {
                    for i in 0..g.nx {
                        let p = g.point(i, j);
                        v.push(prior_response(&self.params, self.speed, self.walls, p, t));
                    }
                }
                v
            })
            .collect())
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let job = PathBuf::from(
        args.first()
            .ok_or_else(|| anyhow::anyhow!("give a job file"))?,
    );
    let free = args.iter().any(|a| a == "--free-space");
    let sets: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].clone())
        .collect();
    let mut cfg = wavecp::config::Config::load(&job, &sets)?;
    cfg.output.path = PathBuf::new();
    let base = job.parent().unwrap_or(Path::new(".")).to_path_buf();
    let c = cfg
        .coupling
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no [coupling]"))?;
    let meta = wavecp::surrogate::modelfile::load(&base.join(&c.model))?.meta;
    let cond = meta
        .conditioning
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the model has no prior"))?;
    let z = meta
        .zone
        .ok_or_else(|| anyhow::anyhow!("the model has no zone"))?;
    let grid = ZoneGrid {
        x: [z[0], z[1]],
        y: [z[2], z[3]],
        nx: meta.nx,
        ny: meta.ny,
    };
    let s = &cfg.source[0];
    let prior = Prior {
        grid,
        params: vec![
            s.position[0],
            s.position[1],
            s.frequency,
            s.amplitude,
            s.delay.unwrap_or(1.2 / s.frequency),
        ],
        speed: cond.prior_speed.unwrap_or(1.0),
        walls: if free { None } else { cond.prior_walls },
        frames: (meta.t_in, meta.t_out, meta.frame_dt),
        t0: 0.0,
    };
    let opts = SubmodelOptions {
        reference: true,
        ..Default::default()
    };
    let comm = wavecp::comm::Serial;
    let r = run_with(&cfg, &base, (&opts, &comm), (grid, meta.frame_dt), |_| {
        Ok(prior)
    })?;
    println!(
        "{}",
        serde_json::json!({
            "prior": if free { "free space" } else { "with the sides' reflections" },
            "max_rel_l2_error": r.max_rel_l2_error,
            "oracle_max_rel_l2_error": r.oracle_max_rel_l2_error,
            "indicator_max": r.indicator_max,
            "windows": r.windows,
        })
    );
    Ok(())
}
