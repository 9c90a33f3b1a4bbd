//! Checkpoints: the restart state written by rank 0 in global node order (so a run may
//! continue on another number of ranks), checked on reading, and restored into a
//! [`Simulation`].

use super::distribute::{checkpoint_exists, RootIo};
use super::observers::{flush_receivers, gather_global, Io};
use super::setup::{DriverError, Setup};
use super::{Simulation, State};
use crate::comm::Comm;
use crate::config::Config;
use crate::mesh::PointLocation;
use serde::Serialize;
use std::path::Path;

/// The restart state (`wavecp solve --restart`), written by rank 0 in global node order, so a
/// run may continue on a different number of ranks.
///
/// On disk: `CHECKPOINT_MAGIC`, the SHA-256 of the payload, the payload (bincode). The payload
/// carries a digest of the job's discrete problem, so a checkpoint of another job (another mesh,
/// material, source, boundary, initial state or receiver set) is refused, and the checksum
/// refuses any damaged byte before a value is trusted.
#[derive(Serialize, serde::Deserialize)]
struct Checkpoint {
    job: [u8; 32],
    nodes: u64,
    dt: f64,
    step: u64,
    u: Vec<f64>,
    u_prev: Vec<f64>,
    outputs: u64,
    rec_rows: u64,
    initial_energy: f64,
    /// A coupled run's own state (its frames, its counters), opaque here; empty for an FE run.
    coupling: Vec<u8>,
}
const CHECKPOINT_MAGIC: [u8; 8] = *b"WAVECPC4";
const CHECKPOINT_HEAD: usize = 8 + 32;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// What a checkpoint must match: the SHA-256 of everything that defines the discrete problem
/// (mesh, wave speed, boundaries, sources, initial fields, receivers). Not `time.end`, the
/// output or the solver's threads and partition: a run may be continued longer, with other
/// output settings or on another number of ranks.
pub(crate) fn job_digest(s: &Setup) -> [u8; 32] {
    use sha2::Digest;
    struct H(sha2::Sha256);
    impl std::io::Write for H {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = H(sha2::Sha256::new());
    let recs: Vec<(&[f64; 2], &PointLocation)> =
        s.receivers.iter().map(|r| (&r.0.position, &r.1)).collect();
    // Serialising into a hasher cannot fail; a failure would only weaken the check.
    let _ = bincode::serialize_into(
        &mut h,
        &(
            &s.problem.mesh,
            &s.problem.speed,
            &s.problem.boundaries,
            &s.problem.sources,
            &s.u0,
            &s.v0,
            &recs,
        ),
    );
    h.0.finalize().into()
}

pub(crate) fn checkpoint_exists_on(cfg: &Config, comm: &dyn Comm) -> bool {
    let mut f = [f64::from(u8::from(
        comm.rank() == 0 && checkpoint_exists(cfg),
    ))];
    comm.max_f64(&mut f);
    f[0] > 0.0
}

/// Writes the checkpoint (through a temporary file and a rename). Collective.
pub(crate) fn write_checkpoint(
    cfg: &Config,
    sim: &Simulation<'_>,
    io: &mut Io,
) -> Result<(), DriverError> {
    let comm = sim.comm();
    // Receivers first, then everything pushed to the file, so the file holds every row the
    // checkpoint says it does even if the process is killed right after.
    flush_receivers(io, comm)?;
    #[cfg(feature = "hdf5")]
    let flushed = match io.root.as_mut().and_then(|r| r.writer.as_mut()) {
        Some(w) => w.flush(),
        None => Ok(()),
    };
    #[cfg(not(feature = "hdf5"))]
    let flushed: Result<(), crate::output::OutputError> = Ok(());
    let u = gather_global(&io.root, sim.u(), comm);
    let up = gather_global(&io.root, sim.u_prev(), comm);
    let mut ok = vec![0u8];
    if let Err(e) = flushed {
        ok = vec![1];
        ok.extend(e.to_string().into_bytes());
    } else if let (Some(root), Some(u), Some(u_prev)) = (io.root.as_ref(), u, up) {
        let ck = Checkpoint {
            job: root.job,
            nodes: root.nodes as u64,
            dt: sim.dt(),
            step: sim.steps_done() as u64,
            u,
            u_prev,
            outputs: io.outputs as u64,
            rec_rows: root.rec_rows_written as u64,
            initial_energy: sim.initial_energy(),
            coupling: io
                .extras
                .as_ref()
                .map(|x| super::extras::lock(x).state.clone())
                .unwrap_or_default(),
        };
        let payload = crate::comm::to_bytes(&ck);
        let mut bytes = Vec::with_capacity(CHECKPOINT_HEAD + payload.len());
        bytes.extend(CHECKPOINT_MAGIC);
        bytes.extend(sha256(&payload));
        bytes.extend(payload);
        if let Err(e) = crate::output::write_atomic(&cfg.checkpoint.path, &bytes) {
            ok = vec![1];
            ok.extend(e.to_string().into_bytes());
        }
    }
    comm.broadcast_bytes(&mut ok);
    if ok[0] != 0 {
        return Err(DriverError::OtherRank(
            String::from_utf8_lossy(&ok[1..]).into_owned(),
        ));
    }
    tracing::debug!("checkpoint at step {}", sim.steps_done());
    Ok(())
}

/// Reads and checks a checkpoint written by `write_checkpoint` for this job.
fn read_checkpoint(
    path: &Path,
    io: &RootIo,
    dt: f64,
    nsteps: usize,
    output_every: usize,
    coupled: bool,
) -> Result<Checkpoint, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < CHECKPOINT_HEAD || bytes[..6] != CHECKPOINT_MAGIC[..6] {
        return Err("not a wavecp checkpoint".into());
    }
    if bytes[..8] != CHECKPOINT_MAGIC {
        return Err(format!(
            "written by another version of wavecp (format {}, this one reads {}); start the run anew without --restart",
            String::from_utf8_lossy(&bytes[6..8]),
            String::from_utf8_lossy(&CHECKPOINT_MAGIC[6..8]),
        ));
    }
    let payload = &bytes[CHECKPOINT_HEAD..];
    if sha256(payload)[..] != bytes[8..CHECKPOINT_HEAD] {
        return Err("damaged: its checksum does not match its contents (a truncated or corrupted file); start the run anew without --restart".into());
    }
    let ck: Checkpoint = bincode::deserialize(payload)
        .map_err(|e| format!("damaged, although its checksum matches ({e})"))?;
    if ck.job != io.job {
        return Err("written for another job: the mesh, materials, boundaries, sources, initial state or receivers differ; start the run anew without --restart, or restore the job it was written for".into());
    }
    if ck.nodes as usize != io.nodes || ck.u.len() != io.nodes || ck.u_prev.len() != io.nodes {
        return Err(format!(
            "written for a mesh of {} nodes, this job has {}",
            ck.nodes, io.nodes
        ));
    }
    if ck.dt.to_bits() != dt.to_bits() {
        return Err(format!(
            "written with dt = {:e}, this job has dt = {dt:e} (time.dt, time.safety or time.end changed)",
            ck.dt
        ));
    }
    if ck.step > nsteps as u64 {
        return Err(format!(
            "taken at step {}, past the end of this job ({nsteps} steps)",
            ck.step
        ));
    }
    // Output steps kept: t = 0 and every `output.every`-th step up to the checkpoint's step, at
    // most (the last step is always written, so a run continued longer may have one more).
    let max_outputs = ck.step / output_every as u64 + 2;
    if ck.outputs == 0 || ck.outputs > max_outputs || ck.rec_rows > ck.step + 1 {
        return Err(format!(
            "inconsistent: {} output steps and {} receiver rows at step {}",
            ck.outputs, ck.rec_rows, ck.step
        ));
    }
    if coupled == ck.coupling.is_empty() {
        return Err(if coupled {
            "written by a run without a [coupling] section; a hybrid run cannot continue it (start it anew without --restart)".into()
        } else {
            "written by a hybrid run (with a [coupling] section); continue it with the same job"
                .into()
        });
    }
    if !ck.initial_energy.is_finite() || ck.u.iter().chain(&ck.u_prev).any(|v| !v.is_finite()) {
        return Err("holds values that are not finite numbers".into());
    }
    Ok(ck)
}

/// Reads the checkpoint on rank 0, restores each rank's owned values into `sim` and reopens
/// the output file at the checkpoint's position (`io.outputs`). Collective.
pub(crate) fn restore(
    cfg: &Config,
    sim: &mut Simulation<'_>,
    nsteps: usize,
    shared: &mut Io,
) -> Result<(), DriverError> {
    let comm = sim.comm();
    let path = &cfg.checkpoint.path;
    let mut head = Vec::new();
    let mut parts = None;
    if let Some(io) = shared.root.as_mut() {
        let coupled = shared.extras.is_some();
        let read = read_checkpoint(path, io, sim.dt(), nsteps, cfg.output.every, coupled);
        match read {
            Ok(ck) => {
                #[cfg(feature = "hdf5")]
                if !cfg.output.path.as_os_str().is_empty() {
                    let w = crate::output::VtkHdfWriter::reopen(
                        &cfg.output.path,
                        ck.outputs as usize,
                        ck.rec_rows as usize,
                        cfg.output.xdmf,
                    );
                    match w {
                        Ok(w) => {
                            io.writer = Some(w);
                            io.rec_rows_written = ck.rec_rows as usize;
                        }
                        Err(e) => {
                            head.push(1u8);
                            head.extend(e.to_string().into_bytes());
                        }
                    }
                }
                if head.is_empty() {
                    head.push(0u8);
                    head.extend(crate::comm::to_bytes(&(
                        ck.step,
                        ck.outputs,
                        ck.initial_energy,
                        &ck.coupling,
                    )));
                    let mut per_rank = Vec::with_capacity(comm.size());
                    let mut off = 0usize;
                    for &c in &io.owned_counts {
                        let ids = &io.owned_ids[off..off + c];
                        off += c;
                        let u: Vec<f64> = ids.iter().map(|&i| ck.u[i as usize]).collect();
                        let up: Vec<f64> = ids.iter().map(|&i| ck.u_prev[i as usize]).collect();
                        per_rank.push(crate::comm::to_bytes(&(u, up)));
                    }
                    parts = Some(per_rank);
                }
            }
            Err(msg) => {
                head.push(1u8);
                head.extend(format!("checkpoint {}: {msg}", path.display()).into_bytes());
            }
        }
    }
    comm.broadcast_bytes(&mut head);
    if head.first() != Some(&0) {
        return Err(DriverError::OtherRank(
            String::from_utf8_lossy(head.get(1..).unwrap_or_default()).into_owned(),
        ));
    }
    let (step, outputs, e0, coupling): (u64, u64, f64, Vec<u8>) =
        bincode::deserialize(&head[1..]).map_err(|e| DriverError::OtherRank(e.to_string()))?;
    if let Some(x) = &shared.extras {
        super::extras::lock(x).state = coupling;
    }
    let mine = comm.scatter_bytes(parts);
    let (u, up): (Vec<f64>, Vec<f64>) =
        bincode::deserialize(&mine).map_err(|e| DriverError::OtherRank(e.to_string()))?;
    sim.restore(&State {
        step: step as usize,
        u,
        u_prev: up,
        initial_energy: e0,
    })?;
    shared.outputs = outputs as usize;
    Ok(())
}
