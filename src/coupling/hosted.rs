//! A hybrid job (`[coupling]`, `mode = "hybrid"`) stepped by a host program (the C ABI): the
//! job's FE simulation ([`Hosted`]) with the hybrid window loop run between the host's calls.
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
use crate::sim::{DriverError, Hosted};
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
            ..
        } = &mut self.parts;
        let ind = indicator(&self.indicator)?;
        let state = self.state.take();
        let (summary, st) = hosted.drive(|sim| {
            let net = OnRankZero::new(net.as_mut(), *frames, sim.comm());
            let mut h = Hybrid::new(sim, transfer, net, ind, *cfg).map_err(from_coupling)?;
            if let Some(s) = state {
                h = h.resume(s).map_err(from_coupling)?;
            }
            let (summary, _) = h.run_with(last, &mut (), &mut []).map_err(from_coupling)?;
            Ok((summary, h.state()))
        })?;
        self.state = Some(st);
        self.summary = summary;
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
