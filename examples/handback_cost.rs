//! The cost of a hand-back on a job's mesh: `Simulation::start_from` (the Taylor start of
//! the leap-frog from a field and a velocity, finiteness checks, ghosts) timed 21 times after
//! 200 steps, median and minimum, with a hash of the `u_prev` it builds (the same bits before
//! and after a change to it).
//!
//! ```sh
//! cargo run --release --example handback_cost -- examples/fine_square/hybrid_prior.toml
//! ```

use std::path::{Path, PathBuf};
use wavecp::comm::Serial;
use wavecp::config::Config;

fn main() -> anyhow::Result<()> {
    let job = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: handback_cost SOLVE_JOB"))?,
    );
    let base = job.parent().unwrap_or(Path::new("."));
    let cfg = Config::load(&job, &["output.path=\"\"".to_string()])?;
    let (mut sim, _) = wavecp::sim::from_job(&cfg, base, &Serial)?;
    sim.advance(200);
    let u = sim.u()[..sim.solver().num_dofs()].to_vec();
    let prev = sim.u_prev()[..u.len()].to_vec();
    let dt = sim.dt();
    let v: Vec<f64> = u.iter().zip(&prev).map(|(a, b)| (a - b) / dt).collect();
    let step = sim.steps_done();
    let mut times = vec![];
    for _ in 0..21 {
        let t = std::time::Instant::now();
        sim.start_from(&u, &v, step)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let h = sim
        .u_prev()
        .iter()
        .fold(0u64, |h, x| h.rotate_left(5) ^ x.to_bits());
    println!(
        "nodes {} median start_from {:.2} ms (min {:.2}) u_prev hash {h:x}",
        u.len(),
        times[10],
        times[0]
    );
    Ok(())
}
