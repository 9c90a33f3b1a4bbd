//! A submodel job (`[coupling] mode = "submodel"`) stepped by a host program (the C ABI): the
//! zone's FE model driven by the network's boundary forecasts, advanced when the host says.
//!
//! The run is `wavecp solve`'s (coupling::subrun) taken a step at a time: the warm-up's frames
//! with the interface at rest, then windows of `t_out` frames, each forecast when the host's
//! advance first enters it and followed step by step to its end, however the host cuts the
//! steps: any sequence of advances reaches the same bits as one. The host sees the zone's
//! nodes (their numbers in the outer mesh); the interface belongs to the network, so no
//! boundary takes the host's values.

use super::hosted::HostedRun;
use super::hybrid::Forecaster;
use super::network::NetworkForecaster;
use super::solve::{err, from_coupling};
use super::submodel::Trace;
use super::subrun::{build_run, forecast, l2_diff, network, rest_trace, writer, Run, Windows};
use crate::comm::Serial;
use crate::config::Config;
use crate::sim::{DriverError, Simulation, State};
use std::collections::VecDeque;
use std::path::Path;

const MAGIC: [u8; 8] = *b"WAVECPSM";

/// A window the host's advances are inside: its forecast (for the indicator), the frames
/// reached so far, the indicator so far.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Open {
    forecast: Vec<Vec<f64>>,
    reached: usize,
    indicator: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    magic: [u8; 8],
    /// The submodel's nodes and steps a frame: another job's state is refused.
    shape: [usize; 2],
    sub: State,
    trace: Trace,
    frames: Vec<Vec<f64>>,
    scale: f64,
    indicator_now: f64,
    done: Windows,
    open: Option<Open>,
}

/// A submodel job's run, stepped from outside.
pub struct HostedSubmodel {
    run: Run<'static, NetworkForecaster>,
    open: Option<Open>,
    job_steps: usize,
    node_ids: Vec<u64>,
    coords: Vec<[f64; 2]>,
    finished: bool,
}

impl HostedSubmodel {
    /// The submodel of `cfg` (one rank: the zone is small), its network opened, its output
    /// file created when the job names one (steps are written by `write_output`).
    pub fn new(cfg: &Config, base: &Path) -> Result<Self, DriverError> {
        let (grid, frame_dt, _, open) = network(cfg, base)?;
        let (mut run, _, windows) = build_run(cfg, base, (grid, frame_dt), open, None)?;
        run.writer = writer(cfg, &run.sub, false)?;
        // The host decides when to write.
        run.every = 0;
        rest_trace(&mut run)?;
        run.frame().map_err(from_coupling)?;
        let (t_in, t_out) = (run.net.t_in(), run.net.t_out());
        let job_steps = (t_in - 1 + windows * t_out) * run.stride;
        let sm = run.sub.submesh();
        let node_ids = sm.outer_node.iter().map(|&v| u64::from(v)).collect();
        let coords = sm.mesh.coords.clone();
        Ok(HostedSubmodel {
            run,
            open: None,
            job_steps,
            node_ids,
            coords,
            finished: false,
        })
    }
}

impl HostedRun for HostedSubmodel {
    /// `n` steps on: the rest of the warm-up, then windows (collective on one rank).
    fn advance(&mut self, n: usize) -> Result<(), DriverError> {
        self.check_open("advance")?;
        let run = &mut self.run;
        let (t_in, stride) = (run.net.t_in(), run.stride);
        let warm_end = (t_in - 1) * stride;
        for _ in 0..n {
            let s = run.sub.sim().steps_done();
            if s >= warm_end && self.open.is_none() {
                let w = run.done.indicator.len();
                self.open = Some(Open {
                    forecast: forecast(run, w)?,
                    reached: 0,
                    indicator: 0.0,
                });
            }
            run.steps(1)?;
            if !(run.sub.sim().steps_done()).is_multiple_of(stride) {
                continue;
            }
            let g = run.frame().map_err(from_coupling)?;
            if let Some(o) = &mut self.open {
                o.indicator = o.indicator.max(l2_diff(&g, &o.forecast[o.reached]));
                o.reached += 1;
                if o.reached == o.forecast.len() {
                    run.indicator_now = o.indicator;
                    run.done.indicator.push(o.indicator);
                    run.done.errors.push(0.0);
                    self.open = None;
                }
            }
        }
        Ok(())
    }

    fn simulation(&self) -> &Simulation<'_> {
        self.run.sub.sim()
    }

    /// Steps to the job's `time.end` (the warm-up and its whole windows).
    fn job_steps(&self) -> usize {
        self.job_steps
    }

    /// The zone's nodes, by their numbers in the outer (job's) mesh.
    fn node_ids(&self) -> &[u64] {
        &self.node_ids
    }

    fn coords(&self) -> &[[f64; 2]] {
        &self.coords
    }

    /// Appends the current step (field, energy, the latest indicator) to the job's output.
    fn write_output(&mut self) -> Result<(), DriverError> {
        self.check_open("write_output")?;
        let sim = self.run.sub.sim();
        sim.solver().check_finite_on(&Serial)?;
        self.run.output()
    }

    /// Closes the output under its final name; afterwards only queries work.
    fn finish(&mut self) -> Result<(), DriverError> {
        if let Some(w) = self.run.writer.take() {
            w.finish().map_err(|e| err(e.to_string()))?;
        }
        self.finished = true;
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.finished
    }

    /// The run's state (the zone's field, the interface trace, the recorded frames, the
    /// windows and the one in progress) as bytes.
    fn save_state(&self) -> Vec<u8> {
        let r = &self.run;
        crate::comm::to_bytes(&Saved {
            magic: MAGIC,
            shape: self.shape(),
            sub: r.sub.sim().state(),
            trace: r.trace.clone(),
            frames: r.frames.iter().cloned().collect(),
            scale: r.scale,
            indicator_now: r.indicator_now,
            done: r.done.clone(),
            open: self.open.clone(),
        })
    }

    /// Continues bit for bit from `save_state`'s bytes of the same job.
    fn load_state(&mut self, bytes: &[u8]) -> Result<(), DriverError> {
        self.check_open("load_state")?;
        let s: Saved = bincode::deserialize(bytes)
            .ok()
            .filter(|s: &Saved| s.magic == MAGIC)
            .ok_or_else(|| bad_state("not a submodel state".into()))?;
        if s.shape != self.shape() || s.sub.u.len() != self.node_ids.len() {
            return Err(bad_state(format!(
                "saved by another submodel ({} nodes, {} steps a frame; this one {:?})",
                s.shape[0],
                s.shape[1],
                self.shape()
            )));
        }
        let r = &mut self.run;
        r.sub.sim_mut().restore(&s.sub)?;
        r.trace = s.trace;
        r.frames = VecDeque::from(s.frames);
        r.scale = s.scale;
        r.indicator_now = s.indicator_now;
        r.done = s.done;
        self.open = s.open;
        Ok(())
    }

    fn set_field(&mut self, _: &[f64], _: &[f64]) -> Result<(), DriverError> {
        Err(no_boundary(
            "set_field: the zone's field follows the network's boundary; load a saved state instead",
        ))
    }

    fn boundary_nodes(&self, name: &str) -> Result<Vec<u64>, DriverError> {
        Err(no_boundary(&format!(
            "boundary `{name}`: a submodel's boundary is the network's"
        )))
    }

    fn external_nodes(&self, name: &str) -> Result<usize, DriverError> {
        self.boundary_nodes(name).map(|v| v.len())
    }

    fn set_boundary_values(&mut self, name: &str, _: &[f64]) -> Result<(), DriverError> {
        self.boundary_nodes(name).map(|_| ())
    }

    fn num_receivers(&self) -> usize {
        0
    }

    fn receiver_values(&self) -> Vec<f64> {
        Vec::new()
    }

    fn submodel(&self) -> Option<(usize, f64)> {
        Some(self.windows())
    }
}

impl HostedSubmodel {
    fn check_open(&self, what: &str) -> Result<(), DriverError> {
        if self.finished {
            return Err(err(format!(
                "{what}: the simulation is finished (its output is closed); create a new one"
            )));
        }
        Ok(())
    }

    /// Windows done and the latest one's indicator (‖FE frames − forecast‖ on the grid).
    pub fn windows(&self) -> (usize, f64) {
        (self.run.done.indicator.len(), self.run.indicator_now)
    }

    fn shape(&self) -> [usize; 2] {
        [self.node_ids.len(), self.run.stride]
    }
}

fn no_boundary(msg: &str) -> DriverError {
    DriverError::Invalid {
        key: "boundary".into(),
        msg: msg.into(),
    }
}

fn bad_state(msg: String) -> DriverError {
    DriverError::Invalid {
        key: "state".into(),
        msg,
    }
}
