//! The hand-back's own error on a job's mesh, without the network: the FE's exact frames are
//! sampled on a zone grid of each size (and, as the baseline, kept on the mesh), handed back
//! as a perfect forecast would be (the frame, and its velocity: BDF2 from it and the two
//! before, as the hybrid loop does, or the fourth-order central difference from the two
//! frames on either side, which a forecast handed back two frames before its end would allow)
//! and the FE runs one more window; the relative L2 difference to the uninterrupted run, at
//! the hand-back and a window later, is the floor under any model on that grid.
//!
//! ```sh
//! cargo run --release --example handback_floor -- \
//!     examples/fine_square/hybrid.toml 23 8 16,32,64
//! ```
//! Arguments: SOLVE_JOB FRAME_STRIDE (steps) WINDOW_FRAMES GRID_SIZES [FIRST_FRAMES, e.g. 8,16,24,32].
//! A grid size ending in `c` (`16c`) hands back through the cubic grid → mesh interpolation
//! instead of the bilinear one.

use std::path::{Path, PathBuf};
use wavecp::comm::Serial;
use wavecp::config::Config;
use wavecp::coupling::handback::VelocityEstimate;
use wavecp::coupling::transfer::{Interpolation, ZoneGrid, ZoneTransfer};

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n).sqrt()
}

/// A grid size and its interpolation: `16` bilinear, `16c` cubic.
fn grid_size(s: &str) -> anyhow::Result<(usize, Interpolation)> {
    Ok(match s.strip_suffix('c') {
        Some(n) => (n.parse()?, Interpolation::Cubic),
        None => (s.parse()?, Interpolation::Bilinear),
    })
}

fn list(s: &str) -> anyhow::Result<Vec<usize>> {
    Ok(s.split(',').map(str::parse).collect::<Result<_, _>>()?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: handback_floor SOLVE_JOB FRAME_STRIDE WINDOW_FRAMES GRID_SIZES [FIRST_FRAMES]"
    );
    let job = PathBuf::from(&args[1]);
    let base = job.parent().unwrap_or(Path::new("."));
    let cfg = Config::load(&job, &[])?;
    let (stride, window) = (args[2].parse::<usize>()?, args[3].parse::<usize>()?);
    let grids: Vec<(usize, Interpolation)> = args[4]
        .split(',')
        .map(grid_size)
        .collect::<anyhow::Result<_>>()?;
    let firsts = list(args.get(5).map_or("8,16,24,32", String::as_str))?;
    let mesh = wavecp::sim::load_mesh(&cfg.mesh, base)?;
    let b = mesh.bbox();
    let (x, y) = ([b[0], b[2]], [b[1], b[3]]);
    let transfers: Vec<(String, ZoneTransfer)> = grids
        .iter()
        .map(|&(n, interp)| {
            let g = ZoneGrid { x, y, nx: n, ny: n };
            let name = match interp {
                Interpolation::Bilinear => format!("grid_{n}"),
                Interpolation::Cubic => format!("grid_{n}_cubic"),
            };
            Ok((name, ZoneTransfer::with_interpolation(&mesh, g, interp)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let (mut sim, _) = wavecp::sim::from_job(&cfg, base, &Serial)?;
    let state0 = sim.state();
    let frame_dt = stride as f64 * sim.dt();
    let est = VelocityEstimate::Bdf2;
    let mut rows = vec![];
    anyhow::ensure!(
        firsts.iter().all(|&f| f >= 2) && window >= 2,
        "a hand-back needs frames two before and two after it: first frames and window ≥ 2"
    );
    for &first in &firsts {
        // Frames `first` − 2 … `first` + 2, the state at `first`, and the uninterrupted run a
        // window after it.
        sim.restore(&state0)?;
        sim.advance((first - 2) * stride);
        let mut frames = vec![sim.u().to_vec()];
        let more = |sim: &mut wavecp::sim::Simulation, frames: &mut Vec<Vec<f64>>| {
            for _ in 0..2 {
                sim.advance(stride);
                frames.push(sim.u().to_vec());
            }
        };
        more(&mut sim, &mut frames);
        let (start, step) = (sim.state(), sim.steps_done());
        more(&mut sim, &mut frames);
        sim.advance(window * stride - 2 * stride);
        let truth = sim.u().to_vec();
        let mut row = serde_json::json!({"frame": first, "t": step as f64 * sim.dt(),
            "window_steps": window * stride});
        // Each of the five frames (k − 2 … k + 2) on the grid `t`, or as they are.
        let sampled = |t: Option<&ZoneTransfer>| -> anyhow::Result<Vec<Vec<f64>>> {
            frames
                .iter()
                .map(|f| match t {
                    None => Ok(f.clone()),
                    Some(t) => {
                        let mut g = vec![0.0; t.points()];
                        t.to_grid(f, &mut g)?;
                        Ok(g)
                    }
                })
                .collect()
        };
        let cases = std::iter::once(("mesh".to_string(), None))
            .chain(transfers.iter().map(|(n, t)| (n.clone(), Some(t))));
        for (name, t) in cases {
            let g = sampled(t)?;
            let refs: Vec<&[f64]> = g.iter().map(|f| &f[..]).collect();
            let bdf2 = est.velocity(&refs[..3], frame_dt).expect("three frames");
            let central: Vec<f64> = (0..g[0].len())
                .map(|i| (g[0][i] - 8.0 * g[1][i] + 8.0 * g[3][i] - g[4][i]) / (12.0 * frame_dt))
                .collect();
            let on_mesh = |f: &[f64]| -> anyhow::Result<Vec<f64>> {
                let mut u = frames[2].clone();
                match t {
                    None => u.copy_from_slice(f),
                    Some(t) => t.to_mesh(f, &mut u)?,
                }
                Ok(u)
            };
            let u = on_mesh(&g[2])?;
            let mut later = vec![];
            for v in [&bdf2, &central] {
                sim.restore(&start)?;
                sim.start_from(&u, &on_mesh(v)?, step)?;
                sim.advance(window * stride);
                later.push(rel(sim.u(), &truth));
            }
            row[name] = serde_json::json!({"at_handback": rel(&u, &frames[2]),
                "window_later_bdf2": later[0], "window_later_central4": later[1]});
        }
        eprintln!("{row}");
        rows.push(row);
    }
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}
