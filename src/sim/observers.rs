//! What `wavecp solve` does around each step, as observers of a [`Simulation`]: receivers and
//! output, checkpoints and stop signals, progress, and the test hooks that kill or pause a run.
//! They share [`Io`], the run's output position, so that a checkpoint records exactly what the
//! file holds.

use super::checkpoint::write_checkpoint;
use super::distribute::RootIo;
use super::extras::{lock, ExtraField, ExtraStep, SharedExtras};
use super::setup::{invalid, DriverError};
use super::{Control, Observer, Simulation};
use crate::comm::Comm;
use crate::config::Config;
use crate::mesh::PointLocation;
use crate::progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Steps between the collective checks for signals and wall-clock checkpoints.
const POLL: usize = 8;

/// The output side of a run, shared by its observers: rank 0's file and maps, this rank's
/// receivers and the rows buffered since the last output step, how many output steps the file
/// holds, the last energy, and the time spent on all of it.
pub(crate) struct Io {
    pub root: Option<RootIo>,
    pub receivers: Vec<PointLocation>,
    pub rec_u: Vec<f64>,
    pub outputs: usize,
    pub energy: f64,
    pub time: Duration,
    /// A coupled run's extras (output fields, checkpoint state).
    pub extras: Option<SharedExtras>,
}

impl Io {
    /// Buffers one receiver row on the ranks that own receivers (no allocation in the loop:
    /// `rec_u` holds `output.every + 1` rows).
    pub fn record(&mut self, sim: &Simulation<'_>) {
        if let Some(io) = self.root.as_mut() {
            if io.nrec > 0 {
                io.rec_t.push(sim.time());
            }
        }
        let u = sim.solver().u();
        for loc in &self.receivers {
            self.rec_u.push(loc.interpolate(u));
        }
    }

    /// Writes one output step: the receivers buffered since the last one, the field, the
    /// energy. Collective.
    pub fn write(&mut self, sim: &Simulation<'_>, energy: f64) -> Result<(), DriverError> {
        let comm = sim.comm();
        flush_receivers(self, comm)?;
        let has_writer = self.root.as_ref().is_some_and(|i| i.writer.is_some());
        let mut flag = [f64::from(u8::from(has_writer))];
        comm.max_f64(&mut flag);
        if flag[0] == 0.0 {
            return Ok(());
        }
        let at = match &self.extras {
            None => None,
            Some(x) => {
                let at = lock(x).at.take();
                Some(at.filter(|a| a.step == sim.steps_done()).ok_or_else(|| {
                    invalid(
                        "coupling",
                        format!(
                            "the coupled run gave no output fields for step {}",
                            sim.steps_done()
                        ),
                    )
                })?)
            }
        };
        self.write_field(comm, (sim.time(), sim.u(), energy), at)
    }

    /// Writes the forecast frames a coupled run left for the output, in order (collective:
    /// every rank left the same steps). Returns how many.
    pub fn write_frames(&mut self, comm: &dyn Comm) -> Result<usize, DriverError> {
        let Some(x) = &self.extras else {
            return Ok(0);
        };
        let frames = std::mem::take(&mut lock(x).frames);
        let n = frames.len();
        if n > 0 {
            flush_receivers(self, comm)?;
        }
        for f in frames {
            self.write_field(comm, (f.time, &f.u, f64::NAN), Some(f.extras))?;
        }
        Ok(n)
    }

    /// One output step of `(time, owned u, energy)` with its extras (`None` for a plain run).
    /// Collective.
    fn write_field(
        &mut self,
        comm: &dyn Comm,
        (time, owned, energy): (f64, &[f64], f64),
        at: Option<ExtraStep>,
    ) -> Result<(), DriverError> {
        let u = gather_global(&self.root, owned, comm);
        let (fields, values) = match at {
            None => (vec![], vec![]),
            Some(at) => self.gather_extras(comm, at, u.as_deref()),
        };
        #[cfg(feature = "hdf5")]
        if let (Some(io), Some(u)) = (self.root.as_mut(), u) {
            if let Some(w) = &mut io.writer {
                let fields: Vec<&[f64]> = fields.iter().map(Vec::as_slice).collect();
                w.write_step_with(time, &u, energy, &fields, &values)?;
            }
        }
        #[cfg(not(feature = "hdf5"))]
        let _ = (time, u, energy, fields, values);
        Ok(())
    }

    /// A coupled run's extras of one output step, on rank 0 in global order (`u`: the
    /// gathered field there). Collective: every rank holds the same kinds of extras.
    fn gather_extras(
        &self,
        comm: &dyn Comm,
        at: ExtraStep,
        u: Option<&[f64]>,
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let n = u.map_or(0, <[f64]>::len);
        let mut fields = Vec::with_capacity(at.fields.len());
        for f in at.fields {
            fields.push(match f {
                ExtraField::Values(v) => gather_global(&self.root, &v, comm).unwrap_or_default(),
                ExtraField::SameAsU => u.map(<[f64]>::to_vec).unwrap_or_default(),
                ExtraField::Constant(c) => vec![c; n],
            });
        }
        (fields, at.values)
    }
}

/// Gathers the buffered receiver rows to rank 0 and appends them to the file. Collective.
pub(crate) fn flush_receivers(io: &mut Io, comm: &dyn Comm) -> Result<(), DriverError> {
    let gathered = comm.gather_f64(&io.rec_u);
    io.rec_u.clear();
    let Some(io) = io.root.as_mut() else {
        return Ok(());
    };
    let rows = io.rec_t.len();
    if io.nrec == 0 || rows == 0 {
        io.rec_t.clear();
        return Ok(());
    }
    let g = gathered.unwrap_or_default();
    let mut table = vec![0.0; rows * io.nrec];
    let (mut off, mut id) = (0usize, 0usize);
    for &c in &io.rec_counts {
        let c = c as usize;
        for r in 0..rows {
            for j in 0..c {
                table[r * io.nrec + io.rec_ids[id + j] as usize] = g[off + r * c + j];
            }
        }
        off += rows * c;
        id += c;
    }
    #[cfg(feature = "hdf5")]
    if let Some(w) = &mut io.writer {
        w.append_receivers(&io.rec_t, &table)?;
        io.rec_rows_written = w.receiver_rows();
    }
    io.rec_t.clear();
    Ok(())
}

/// Owned values of every rank in global node order, on rank 0. Collective.
pub(crate) fn gather_global(
    root: &Option<RootIo>,
    owned: &[f64],
    comm: &dyn Comm,
) -> Option<Vec<f64>> {
    let g = comm.gather_f64(owned)?;
    let io = root.as_ref()?;
    let mut out = vec![0.0; io.nodes];
    for (v, &i) in g.iter().zip(&io.owned_ids) {
        out[i as usize] = *v;
    }
    Some(out)
}

/// Receivers every step; at every `every`-th step and the last: the finiteness and energy
/// checks and an output step. Also the hooks that abort or pause after an output step.
pub(crate) struct Output {
    pub every: usize,
    pub last: usize,
    pub abort_after: Option<usize>,
    pub pause_after: Option<usize>,
}

impl Observer<Io> for Output {
    fn after_step(
        &mut self,
        sim: &Simulation<'_>,
        io: &mut Io,
        _: &mut Control,
    ) -> Result<(), DriverError> {
        let t = Instant::now();
        io.outputs += io.write_frames(sim.comm())?;
        io.record(sim);
        let n = sim.steps_done();
        if n.is_multiple_of(self.every) || n == self.last {
            sim.solver().check_finite_on(sim.comm())?;
            io.energy = sim.energy();
            if !io.energy.is_finite() {
                return Err(DriverError::EnergyOverflow {
                    step: n,
                    time: sim.time(),
                });
            }
            io.write(sim, io.energy)?;
            io.outputs += 1;
            if self.abort_after == Some(io.outputs) {
                std::process::abort();
            }
            if self.pause_after == Some(io.outputs) {
                if let Some(p) = io.root.as_ref().and_then(RootIo::writer_path) {
                    pause_for_reader(&p);
                }
            }
        }
        io.time += t.elapsed();
        Ok(())
    }
}

/// Checkpoints every `checkpoint.every` steps and every `checkpoint.minutes`, and a stop on
/// SIGTERM / SIGUSR1 (or the `stop_after_steps` hook) with a checkpoint first. One small
/// reduction every `POLL` steps decides, for all ranks together, whether to checkpoint by time
/// or stop (a reduction per step would cost more than a step on many ranks with small parts:
/// docs/scaling.md).
pub(crate) struct Checkpoints<'a> {
    pub cfg: &'a Config,
    pub last: usize,
    pub stop_after: Option<usize>,
    pub written: usize,
    /// The step a stop request ended the run at.
    pub stopped_at: Option<usize>,
    signal: Arc<AtomicBool>,
    since: Instant,
}

impl<'a> Checkpoints<'a> {
    /// With `signals`, installs the SIGTERM / SIGUSR1 handlers.
    pub fn new(
        cfg: &'a Config,
        last: usize,
        signals: bool,
        stop_after: Option<usize>,
    ) -> Result<Self, DriverError> {
        let signal = Arc::new(AtomicBool::new(false));
        if signals {
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
                signal_hook::flag::register(sig, Arc::clone(&signal))
                    .map_err(|e| invalid("signals", format!("cannot install a handler: {e}")))?;
            }
        }
        Ok(Checkpoints {
            cfg,
            last,
            stop_after,
            written: 0,
            stopped_at: None,
            signal,
            since: Instant::now(),
        })
    }
}

impl Observer<Io> for Checkpoints<'_> {
    fn after_step(
        &mut self,
        sim: &Simulation<'_>,
        io: &mut Io,
        ctl: &mut Control,
    ) -> Result<(), DriverError> {
        let t = Instant::now();
        let (n, comm, ck) = (sim.steps_done(), sim.comm(), &self.cfg.checkpoint);
        let mut flags = [0.0, 0.0];
        if n.is_multiple_of(POLL) || n == self.last || self.stop_after == Some(n) {
            flags = [
                f64::from(u8::from(
                    self.signal.load(Ordering::Relaxed) || self.stop_after == Some(n),
                )),
                f64::from(u8::from(
                    comm.rank() == 0
                        && ck.minutes > 0.0
                        && self.since.elapsed().as_secs_f64() >= 60.0 * ck.minutes,
                )),
            ];
            comm.max_f64(&mut flags);
        }
        let by_steps = ck.every > 0 && n.is_multiple_of(ck.every);
        let halt = flags[0] > 0.0 && n < self.last;
        if (by_steps || flags[1] > 0.0 || halt) && !ck.path.as_os_str().is_empty() {
            write_checkpoint(self.cfg, sim, io)?;
            self.written += 1;
            self.since = Instant::now();
        }
        if halt {
            tracing::warn!(
                "stopped at step {n} of {} on request (signal); {}",
                self.last,
                if ck.path.as_os_str().is_empty() {
                    "no checkpoint path is set, so the run cannot be continued".to_string()
                } else {
                    format!(
                        "checkpoint {} written: continue with --restart",
                        ck.path.display()
                    )
                }
            );
            flush_receivers(io, comm)?;
            self.stopped_at = Some(n);
            ctl.stop = true;
        }
        io.time += t.elapsed();
        Ok(())
    }
}

/// The progress bar on a terminal, periodic log lines in a batch log.
pub(crate) struct ShowProgress(pub Progress);

impl<C> Observer<C> for ShowProgress {
    fn after_step(
        &mut self,
        sim: &Simulation<'_>,
        _: &mut C,
        _: &mut Control,
    ) -> Result<(), DriverError> {
        self.0.set(sim.steps_done() as u64);
        Ok(())
    }
}

/// Test hooks that end the process as a crash would: `(rank, step)` exits that rank at once
/// after the step, before its output (`fail_rank_at`); `kill_at` SIGKILLs the process after
/// the step's output and checkpoint.
pub(crate) enum Crash {
    RankExits(usize, usize),
    Kill(usize),
}

impl<C> Observer<C> for Crash {
    fn after_step(
        &mut self,
        sim: &Simulation<'_>,
        _: &mut C,
        _: &mut Control,
    ) -> Result<(), DriverError> {
        let (n, rank) = (sim.steps_done(), sim.comm().rank());
        match *self {
            Crash::RankExits(r, s) if (r, s) == (rank, n) => {
                eprintln!("rank {rank}: dying at step {n} (test hook)");
                std::process::exit(17);
            }
            Crash::Kill(s) if s == n => {
                // SAFETY: raise only sends a signal to this process; nothing is shared with it.
                unsafe { libc::raise(libc::SIGKILL) };
            }
            _ => {}
        }
        Ok(())
    }
}

/// Test hook: makes `OUT.paused` and waits (up to a minute) for a reader to remove it.
fn pause_for_reader(running: &Path) {
    let marker = crate::output::target::sibling(running, "paused");
    if std::fs::write(&marker, b"").is_err() {
        return;
    }
    let t = Instant::now();
    while marker.exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl RootIo {
    /// Closes the output of a complete run and moves it to its final name; returns the final
    /// paths of the file and its XDMF sidecar.
    pub fn finish(&mut self) -> Result<(Option<PathBuf>, Option<PathBuf>), DriverError> {
        #[cfg(feature = "hdf5")]
        if let Some(w) = self.writer.take() {
            let xdmf = w.xdmf_path().is_some();
            let path = w.finish()?;
            let x = xdmf.then(|| path.with_extension("xdmf"));
            return Ok((Some(path), x));
        }
        Ok((None, None))
    }

    pub fn writer_path(&self) -> Option<PathBuf> {
        #[cfg(feature = "hdf5")]
        return self.writer.as_ref().map(|w| w.path().to_path_buf());
        #[cfg(not(feature = "hdf5"))]
        None
    }

    pub fn writer_xdmf(&self) -> Option<PathBuf> {
        #[cfg(feature = "hdf5")]
        return self
            .writer
            .as_ref()
            .and_then(|w| w.xdmf_path().map(Path::to_path_buf));
        #[cfg(not(feature = "hdf5"))]
        None
    }
}
