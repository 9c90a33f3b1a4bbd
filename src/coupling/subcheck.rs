//! Checkpoints of a submodel run: written between windows (every `checkpoint.every` steps, every
//! `checkpoint.minutes`, and before a stop), atomically, so a crash leaves the last good one; a
//! restart (`--restart`) continues bit for bit — the submodel's two time levels, the interface
//! trace, the network's input frames, the window counters and, with `--reference`, the whole
//! model, the oracle and the errors so far.

use super::hybrid::Forecaster;
use super::submodel::Trace;
use super::subrun::{Run, Windows};
use crate::config::Config;
use crate::sim::{DriverError, State};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn err(msg: impl std::fmt::Display) -> DriverError {
    DriverError::Invalid {
        key: "checkpoint".into(),
        msg: msg.to_string(),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RefSaved {
    sim: State,
    wall_s: f64,
    pending: Vec<(usize, Vec<f64>)>,
    oracle: State,
    trace: Trace,
    max: [f64; 3],
}

/// Everything a submodel run continues from.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// What the run is: the submodel's nodes, steps a frame, windows in all.
    shape: [usize; 3],
    sub: State,
    trace: Trace,
    frames: Vec<Vec<f64>>,
    /// FE, inference, transfer seconds.
    times: [f64; 3],
    scale: f64,
    indicator_now: f64,
    done: Windows,
    outputs: usize,
    reference: Option<RefSaved>,
}

/// When to write, where, and the test hook that stops a run as a signal would.
pub struct Checkpoints {
    path: PathBuf,
    every: usize,
    minutes: f64,
    since: Instant,
    last_step: usize,
    stop_after_windows: Option<usize>,
    shape: [usize; 3],
    pub written: usize,
    /// Set by SIGTERM / SIGUSR1 (a batch system's warning before the time limit).
    signal: Arc<AtomicBool>,
}

impl Checkpoints {
    /// With `signals`, SIGTERM and SIGUSR1 stop the run after the window in progress, with a
    /// checkpoint first.
    pub(super) fn new(
        cfg: &Config,
        (stop_after_windows, signals): (Option<usize>, bool),
        shape: [usize; 3],
    ) -> Result<Self, DriverError> {
        let signal = Arc::new(AtomicBool::new(false));
        if signals {
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
                signal_hook::flag::register(sig, Arc::clone(&signal))
                    .map_err(|e| err(format!("cannot install a signal handler: {e}")))?;
            }
        }
        Ok(Checkpoints {
            path: cfg.checkpoint.path.clone(),
            every: cfg.checkpoint.every,
            minutes: cfg.checkpoint.minutes,
            since: Instant::now(),
            last_step: 0,
            stop_after_windows,
            shape,
            written: 0,
            signal,
        })
    }

    /// After a window: a checkpoint when one is due (or a stop is asked for); `Ok(false)`
    /// to stop.
    pub(super) fn after_window<F: Forecaster>(
        &mut self,
        run: &Run<'_, F>,
        last: bool,
    ) -> Result<bool, DriverError> {
        let step = run.sub.sim().steps_done();
        let stop = !last
            && (self.stop_after_windows == Some(run.done.indicator.len())
                || self.signal.load(Ordering::Relaxed));
        let due = (self.every > 0 && step / self.every > self.last_step / self.every)
            || (self.minutes > 0.0
                && self.since.elapsed() >= Duration::from_secs_f64(60.0 * self.minutes));
        if !self.path.as_os_str().is_empty() && (due || stop) && !last {
            self.write(run)?;
            self.last_step = step;
            self.since = Instant::now();
        }
        Ok(!stop)
    }

    fn write<F: Forecaster>(&mut self, run: &Run<'_, F>) -> Result<(), DriverError> {
        let reference = run.reference.as_ref().map(|r| RefSaved {
            sim: r.sim.state(),
            wall_s: r.wall.as_secs_f64(),
            pending: r.pending.iter().cloned().collect(),
            oracle: r.oracle.sim().state(),
            trace: r.trace.clone(),
            max: [r.max_ref, r.max_diff, r.max_oracle],
        });
        let saved = Saved {
            shape: self.shape,
            sub: run.sub.sim().state(),
            trace: run.trace.clone(),
            frames: run.frames.iter().cloned().collect(),
            times: [
                run.fe.as_secs_f64(),
                run.inference.as_secs_f64(),
                run.transfer.as_secs_f64(),
            ],
            scale: run.scale,
            indicator_now: run.indicator_now,
            done: run.done.clone(),
            outputs: run.writer.as_ref().map_or(0, |w| w.steps_written()),
            reference,
        };
        let bytes = bincode::serialize(&saved).map_err(err)?;
        crate::output::write_atomic(&self.path, &bytes).map_err(|e| err(e.to_string()))?;
        self.written += 1;
        tracing::info!(
            "checkpoint after window {} (step {}): {}",
            saved.done.indicator.len(),
            saved.sub.step,
            self.path.display()
        );
        Ok(())
    }

    /// Restores `run` from the checkpoint, if there is one; returns the output steps it had
    /// written (the output file is reopened at them) or `None` to start at t = 0.
    pub(super) fn restore<F: Forecaster>(
        &mut self,
        run: &mut Run<'_, F>,
    ) -> Result<Option<usize>, DriverError> {
        if self.path.as_os_str().is_empty() || !self.path.exists() {
            return Ok(None);
        }
        let bytes =
            std::fs::read(&self.path).map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        let s: Saved = bincode::deserialize(&bytes).map_err(|e| {
            err(format!(
                "{} is not a submodel checkpoint ({e})",
                self.path.display()
            ))
        })?;
        if s.shape != self.shape {
            return Err(err(format!(
                "{} was written by another submodel run ({} nodes, {} steps a frame, {} windows; this one {:?})",
                self.path.display(),
                s.shape[0],
                s.shape[1],
                s.shape[2],
                self.shape
            )));
        }
        if s.reference.is_some() != run.reference.is_some() {
            return Err(err(format!(
                "{} was written by a run {} --reference; continue it the same way",
                self.path.display(),
                if s.reference.is_some() {
                    "with"
                } else {
                    "without"
                }
            )));
        }
        self.last_step = s.sub.step;
        run.sub.sim_mut().restore(&s.sub)?;
        run.trace = s.trace;
        run.frames = s.frames.into();
        run.fe = Duration::from_secs_f64(s.times[0]);
        run.inference = Duration::from_secs_f64(s.times[1]);
        run.transfer = Duration::from_secs_f64(s.times[2]);
        run.scale = s.scale;
        run.indicator_now = s.indicator_now;
        run.done = s.done;
        if let (Some(r), Some(rs)) = (&mut run.reference, s.reference) {
            r.sim.restore(&rs.sim)?;
            r.wall = Duration::from_secs_f64(rs.wall_s);
            r.pending = rs.pending.into();
            r.oracle.sim_mut().restore(&rs.oracle)?;
            r.trace = rs.trace;
            [r.max_ref, r.max_diff, r.max_oracle] = rs.max;
        }
        tracing::info!(
            "restarting after window {} (step {}) from {}",
            run.done.indicator.len(),
            run.sub.sim().steps_done(),
            self.path.display()
        );
        Ok(Some(s.outputs))
    }
}
