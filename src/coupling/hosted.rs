//! What a host program (the C ABI) steps: [`open`] gives a [`HostedRun`] for any job, the FE
//! model, a hybrid job or a submodel job (coupling::subhost). A hybrid job (`[coupling]`,
//! `mode = "hybrid"`) is the job's FE simulation ([`Hosted`]) with the hybrid window loop run
//! between the host's calls:
//!
//! `advance(n)` runs the loop to the step `n` ahead, resuming its state (the recorded frames,
//! the window counts) from the previous call: frames every `stride` steps from the first step
//! the host advanced from, windows of `t_out` frames from the `t_in`-th. A window that does not
//! fit in the steps asked for is the FE's, so a host that advances by whole windows (or the
//! whole run at once) gets the windows `wavecp solve` takes, bit for bit; one that advances step
//! by step gets the FE run.

use super::hybrid::{Hybrid, HybridState, HybridSummary, OnRankZero};
use super::solve::{from_coupling, indicator, parts_on, OnRanks};
use crate::config::Config;
use crate::sim::{DriverError, Hosted, Simulation};
use std::path::Path;

/// The hybrid loop's side of a hosted hybrid job.
pub struct HostedHybrid {
    parts: OnRanks,
    indicator: String,
    state: Option<HybridState>,
    summary: HybridSummary,
}

fn unsupported(what: &str) -> DriverError {
    DriverError::Invalid {
        key: "coupling.mode".into(),
        msg: what.into(),
    }
}

impl HostedHybrid {
    /// The simulation of `cfg` (a hybrid job) and its hybrid loop, on the ranks of `comm`
    /// (collective): the model read on rank 0, the zone transfer on every rank.
    pub fn new<'c>(
        cfg: &Config,
        base: &Path,
        job_file: Option<&Path>,
        comm: &'c dyn crate::comm::Comm,
    ) -> Result<(Hosted<'c>, HostedHybrid), DriverError> {
        let c = cfg
            .coupling
            .as_ref()
            .ok_or_else(|| unsupported("the job has no [coupling] section"))?;
        if c.mode != "hybrid" {
            return Err(unsupported(&format!(
                "`{}` jobs cannot be stepped by a host yet (only `hybrid` ones)",
                c.mode
            )));
        }
        let hosted = Hosted::new_coupled(cfg, base, job_file, comm)?;
        let parts = parts_on(c, (cfg, base), hosted.simulation())?;
        Ok((
            hosted,
            HostedHybrid {
                parts,
                indicator: c.indicator.clone(),
                state: None,
                summary: HybridSummary::default(),
            },
        ))
    }

    /// Runs the hybrid loop `n` steps on (collective).
    pub fn advance(&mut self, hosted: &mut Hosted<'_>, n: usize) -> Result<(), DriverError> {
        let last = hosted.simulation().steps_done() + n;
        let OnRanks {
            transfer,
            net,
            cfg,
            frames,
            estimator,
            budget,
            ..
        } = &mut self.parts;
        let ind = indicator(&self.indicator, estimator.as_ref())?;
        let state = self.state.take();
        let (summary, st) = hosted.drive(|sim| {
            let net = OnRankZero::new(net.as_mut(), *frames, sim.comm());
            let at = budget.as_ref().map(|r| move |b| r.at(b));
            let mut h = Hybrid::new(sim, transfer, net, ind, *cfg).map_err(from_coupling)?;
            if let Some(at) = &at {
                h = h.with_handback_budget(at);
            }
            if let Some(s) = state {
                h = h.resume(s).map_err(from_coupling)?;
            }
            let (summary, _) = h.run_with(last, &mut (), &mut []).map_err(from_coupling)?;
            Ok((summary, h.state()))
        })?;
        self.state = Some(st);
        self.summary = summary;
        self.parts.describe(&mut self.summary);
        Ok(())
    }

    /// Forgets the recorded frames (after the host replaced the field or loaded a state
    /// without one): the next advance starts the loop's warm-up from where the field is.
    pub fn reset(&mut self) {
        self.state = None;
    }

    /// The loop's state, for a saved state (empty before the first advance).
    pub fn save(&self) -> Vec<u8> {
        self.state
            .as_ref()
            .map(crate::comm::to_bytes)
            .unwrap_or_default()
    }

    /// Continues from [`HostedHybrid::save`]'s bytes (empty: from a fresh warm-up).
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), DriverError> {
        self.state = if bytes.is_empty() {
            None
        } else {
            Some(
                bincode::deserialize(bytes).map_err(|e| DriverError::Invalid {
                    key: "state".into(),
                    msg: format!("the hybrid loop's state does not read back: {e}"),
                })?,
            )
        };
        Ok(())
    }

    /// The loop's counts and times so far (windows counted from the first advance).
    pub fn summary(&self) -> &HybridSummary {
        &self.summary
    }
}

/// What a host steps, whatever the job's mode: the FE model ([`Hosted`]), a hybrid job
/// ([`HybridRun`]) or a submodel job ([`HostedSubmodel`](super::subhost::HostedSubmodel)). Calls marked collective in
/// [`Hosted`] are collective here too.
pub trait HostedRun {
    /// `n` steps on (collective).
    fn advance(&mut self, n: usize) -> Result<(), DriverError>;
    /// The simulation whose field the host sees (the zone's for a submodel).
    fn simulation(&self) -> &Simulation<'_>;
    /// Steps to the job's `time.end`.
    fn job_steps(&self) -> usize;
    /// This rank's nodes by their numbers in the job's mesh, and their coordinates.
    fn node_ids(&self) -> &[u64];
    fn coords(&self) -> &[[f64; 2]];
    /// Replaces both time levels (collective).
    fn set_field(&mut self, u: &[f64], u_prev: &[f64]) -> Result<(), DriverError>;
    fn boundary_nodes(&self, name: &str) -> Result<Vec<u64>, DriverError>;
    fn external_nodes(&self, name: &str) -> Result<usize, DriverError>;
    fn set_boundary_values(&mut self, name: &str, values: &[f64]) -> Result<(), DriverError>;
    fn num_receivers(&self) -> usize;
    /// Collective.
    fn receiver_values(&self) -> Vec<f64>;
    fn save_state(&self) -> Vec<u8>;
    /// Collective.
    fn load_state(&mut self, bytes: &[u8]) -> Result<(), DriverError>;
    /// Collective.
    fn write_output(&mut self) -> Result<(), DriverError>;
    /// Collective.
    fn finish(&mut self) -> Result<(), DriverError>;
    fn is_finished(&self) -> bool;
    /// A hybrid job's counts so far.
    fn hybrid(&self) -> Option<&HybridSummary> {
        None
    }
    /// A submodel job's windows done and the latest one's indicator.
    fn submodel(&self) -> Option<(usize, f64)> {
        None
    }
}

/// Where a hosted run stands, as JSON (the C ABI's `wavecp_sim_summary_json`): `mode` (`fe`,
/// `hybrid` or `submodel`), `step`, `time`, `dt`, `job_steps`, `finished`, and for a hybrid
/// job `hybrid` (the loop's summary so far, the fields of `wavecp solve --json`'s `hybrid`
/// object that a run without `--reference` has), for a submodel job `submodel` (`windows`,
/// `indicator`: the latest window's, null before the first).
pub fn summary_json(run: &dyn HostedRun) -> serde_json::Value {
    let sim = run.simulation();
    let mode = match (run.hybrid(), run.submodel()) {
        (Some(_), _) => "hybrid",
        (_, Some(_)) => "submodel",
        _ => "fe",
    };
    let mut v = serde_json::json!({
        "mode": mode,
        "step": sim.steps_done(),
        "time": sim.time(),
        "dt": sim.dt(),
        "job_steps": run.job_steps(),
        "finished": run.is_finished(),
    });
    if let Some(h) = run.hybrid() {
        // Plain fields and sequences: serialising it cannot fail (no map with non-string keys).
        v["hybrid"] = serde_json::to_value(h).unwrap_or_else(|e| e.to_string().into());
    }
    if let Some((windows, indicator)) = run.submodel() {
        v["submodel"] = serde_json::json!({ "windows": windows, "indicator": indicator });
    }
    v
}

/// The run of `cfg` a host steps, by the job's mode (collective): the FE model, a hybrid job,
/// or a submodel job (one rank).
pub fn open<'c>(
    cfg: &Config,
    base: &Path,
    job_file: Option<&Path>,
    comm: &'c dyn crate::comm::Comm,
) -> Result<Box<dyn HostedRun + 'c>, DriverError> {
    match cfg.coupling.as_ref().map(|c| c.mode.as_str()) {
        None => Ok(Box::new(Hosted::new(cfg, base, job_file, comm)?)),
        Some("submodel") => {
            if comm.size() > 1 {
                return Err(unsupported(&format!(
                    "a submodel job runs on one rank (the zone is small); this communicator has {}",
                    comm.size()
                )));
            }
            Ok(Box::new(super::subhost::HostedSubmodel::new(cfg, base)?))
        }
        Some(_) => {
            let (hosted, hybrid) = HostedHybrid::new(cfg, base, job_file, comm)?;
            Ok(Box::new(HybridRun { hosted, hybrid }))
        }
    }
}

/// A hybrid job as a host steps it: the FE simulation and the window loop between advances.
pub struct HybridRun<'c> {
    hosted: Hosted<'c>,
    hybrid: HostedHybrid,
}

/// The calls every hosted run answers from a [`Hosted`] simulation.
macro_rules! from_hosted {
    ($h:ident) => {
        fn simulation(&self) -> &Simulation<'_> {
            self.$h().simulation()
        }
        fn job_steps(&self) -> usize {
            self.$h().job_steps()
        }
        fn node_ids(&self) -> &[u64] {
            self.$h().node_ids()
        }
        fn coords(&self) -> &[[f64; 2]] {
            self.$h().coords()
        }
        fn boundary_nodes(&self, name: &str) -> Result<Vec<u64>, DriverError> {
            self.$h().boundary_nodes(name)
        }
        fn external_nodes(&self, name: &str) -> Result<usize, DriverError> {
            self.$h().external_nodes(name)
        }
        fn num_receivers(&self) -> usize {
            self.$h().num_receivers()
        }
        fn receiver_values(&self) -> Vec<f64> {
            self.$h().receiver_values()
        }
        fn is_finished(&self) -> bool {
            self.$h().is_finished()
        }
    };
}

impl<'c> Fe<'c> for HybridRun<'c> {
    fn fe(&self) -> &Hosted<'c> {
        &self.hosted
    }
}

impl<'c> HostedRun for Hosted<'c> {
    from_hosted!(fe);
    fn advance(&mut self, n: usize) -> Result<(), DriverError> {
        Hosted::advance(self, n)
    }
    fn set_field(&mut self, u: &[f64], u_prev: &[f64]) -> Result<(), DriverError> {
        Hosted::set_field(self, u, u_prev)
    }
    fn set_boundary_values(&mut self, name: &str, values: &[f64]) -> Result<(), DriverError> {
        Hosted::set_boundary_values(self, name, values)
    }
    fn save_state(&self) -> Vec<u8> {
        Hosted::save_state(self)
    }
    fn load_state(&mut self, bytes: &[u8]) -> Result<(), DriverError> {
        if !Hosted::load_state(self, bytes)?.is_empty() {
            return Err(DriverError::Invalid {
                key: "state".into(),
                msg: "the state holds a hybrid loop's frames and this job has no [coupling]".into(),
            });
        }
        Ok(())
    }
    fn write_output(&mut self) -> Result<(), DriverError> {
        Hosted::write_output(self)
    }
    fn finish(&mut self) -> Result<(), DriverError> {
        Hosted::finish(self).map(|_| ())
    }
}

/// `Hosted` seen as itself, for the macro.
trait Fe<'c> {
    fn fe(&self) -> &Hosted<'c>;
}

impl<'c> Fe<'c> for Hosted<'c> {
    fn fe(&self) -> &Hosted<'c> {
        self
    }
}

impl HostedRun for HybridRun<'_> {
    from_hosted!(fe);
    fn advance(&mut self, n: usize) -> Result<(), DriverError> {
        self.hybrid.advance(&mut self.hosted, n)
    }
    fn set_field(&mut self, u: &[f64], u_prev: &[f64]) -> Result<(), DriverError> {
        self.hosted.set_field(u, u_prev)?;
        // The recorded frames are of the field replaced: the loop warms up again from here.
        self.hybrid.reset();
        Ok(())
    }
    fn set_boundary_values(&mut self, name: &str, values: &[f64]) -> Result<(), DriverError> {
        self.hosted.set_boundary_values(name, values)
    }
    fn save_state(&self) -> Vec<u8> {
        self.hosted.save_state_with(self.hybrid.save())
    }
    fn load_state(&mut self, bytes: &[u8]) -> Result<(), DriverError> {
        let extra = self.hosted.load_state(bytes)?;
        self.hybrid.load(&extra)
    }
    fn write_output(&mut self) -> Result<(), DriverError> {
        self.hosted.write_output()
    }
    fn finish(&mut self) -> Result<(), DriverError> {
        self.hosted.finish().map(|_| ())
    }
    fn hybrid(&self) -> Option<&HybridSummary> {
        Some(self.hybrid.summary())
    }
}
