//! A hand-written time loop over wavecp's `Simulation`: builds a job's simulation, advances it
//! step by step, and writes the field at each of the job's output steps (step 0, every
//! `output.every`-th, the last) in global node order as little-endian f64 to a file. Runs
//! serially or under `mpirun`; the tests compare its file with `wavecp solve`'s output, bit for
//! bit.
//!
//!     cargo run --release --example advance_loop -- JOB.toml FIELD.bin
//!     mpirun -np 3 target/release/examples/advance_loop JOB.toml FIELD.bin

use std::io::Write;
use std::path::Path;
use wavecp::comm::Comm;
use wavecp::config::Config;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: advance_loop JOB.toml FIELD.bin");
    let job = Path::new(&args[1]);
    let cfg = Config::load(job, &[])?;
    let base = job.parent().unwrap_or(Path::new("."));
    let comm = wavecp::comm::world();
    let comm: &dyn Comm = comm.as_ref();
    let (mut sim, nsteps) = wavecp::sim::from_job(&cfg, base, comm)?;
    let mut out = (comm.rank() == 0)
        .then(|| std::fs::File::create(&args[2]).map(std::io::BufWriter::new))
        .transpose()?;
    // Where this rank's owned values go in global order (gathered once, on rank 0).
    let layout = sim.layout();
    let ids = comm.gather_u64(&layout.global[..layout.n_owned]);
    let mut write = |sim: &wavecp::sim::Simulation<'_>| -> anyhow::Result<()> {
        let values = comm.gather_f64(sim.u());
        if let (Some(out), Some(ids), Some(values)) = (out.as_mut(), ids.as_ref(), values) {
            let mut field = vec![0.0f64; ids.len()];
            for (&i, v) in ids.iter().zip(values) {
                field[i as usize] = v;
            }
            for v in field {
                out.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    };
    write(&sim)?;
    while sim.steps_done() < nsteps {
        sim.advance(1);
        let n = sim.steps_done();
        if n % cfg.output.every == 0 || n == nsteps {
            write(&sim)?;
        }
    }
    if let Some(mut out) = out {
        out.flush()?;
    }
    Ok(())
}
