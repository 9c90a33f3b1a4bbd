//! `wavecp bench couple --job JOB --tolerances …`: the speed-up–error curve of a hybrid job over
//! the tolerance (its Pareto front), every point a `wavecp solve JOB --reference` run with
//! trained weights, so that speed-up and error are measured together, net of inference,
//! transfers and indicator.
//!
//! Each point runs the hybrid with the FE-only reference in lockstep on this process (no file
//! written: the error is computed at the job's output steps all the same). The reference is run
//! again at every tolerance so that each point's speed-up is a ratio measured in one run.

use super::solve::run_hybrid;
use crate::comm::Serial;
use crate::config::Config;
use crate::sim::{DriverError, RunOptions};
use serde::Serialize;
use std::path::Path;

/// One tolerance's run.
#[derive(Debug, Clone, Serialize)]
pub struct ParetoPoint {
    pub tolerance: f64,
    /// The indicator value the tolerance became (a calibrated model), else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicator_threshold: Option<f64>,
    /// Which of the model's calibrations gave it (as the hybrid report's
    /// `indicator_calibration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicator_calibration: Option<String>,
    pub windows_accepted: usize,
    pub windows_rejected: usize,
    /// Windows the indicator trusted that the hand-back check refused (as the hybrid
    /// report's `handback_refused`; 0 without `coupling.handback_check`).
    pub handback_refused: usize,
    pub steps_surrogate: usize,
    pub wall_s: f64,
    pub reference_wall_s: f64,
    pub speedup: f64,
    pub max_rel_l2_error: f64,
    pub fe_s: f64,
    pub inference_s: f64,
    pub transfer_s: f64,
    pub indicator_s: f64,
    /// No other point is at least as fast and at least as accurate, and better in one.
    pub on_front: bool,
}

/// The curve and the run it was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct ParetoReport {
    pub job: String,
    pub model: String,
    pub indicator: String,
    pub velocity: String,
    /// Where the network ran: `cpu`, or the GPU's name.
    pub network_device: String,
    /// The threads the FE (and a network on the CPU) ran on.
    pub threads: usize,
    pub nodes: usize,
    pub steps: usize,
    pub windows: usize,
    pub points: Vec<ParetoPoint>,
}

/// Marks the points no other point dominates (faster or as fast, and as accurate or better).
pub fn mark_front(points: &mut [ParetoPoint]) {
    let key: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.speedup, p.max_rel_l2_error))
        .collect();
    for (i, p) in points.iter_mut().enumerate() {
        let (s, e) = key[i];
        p.on_front = !key
            .iter()
            .enumerate()
            .any(|(j, &(s2, e2))| j != i && s2 >= s && e2 <= e && (s2 > s || e2 < e));
    }
}

/// Runs the job at each tolerance with its FE-only reference (serial).
pub fn pareto(
    cfg: &Config,
    base: &Path,
    job: &str,
    tolerances: &[f64],
) -> Result<ParetoReport, DriverError> {
    let c = cfg.coupling.as_ref().ok_or_else(|| DriverError::Invalid {
        key: "coupling".into(),
        msg: "the Pareto front needs a job with a [coupling] section".into(),
    })?;
    let mut report = ParetoReport {
        job: job.into(),
        model: c.model.display().to_string(),
        indicator: c.indicator.clone(),
        velocity: c.velocity.clone(),
        network_device: String::new(),
        threads: rayon::current_num_threads(),
        nodes: 0,
        steps: 0,
        windows: 0,
        points: Vec::with_capacity(tolerances.len()),
    };
    let opts = RunOptions {
        reference: true,
        ..RunOptions::default()
    };
    for &tolerance in tolerances {
        let mut cfg = cfg.clone();
        cfg.output.path = Default::default();
        if let Some(c) = cfg.coupling.as_mut() {
            c.tolerance = tolerance;
        }
        let (run, h) = run_hybrid(&cfg, base, &opts, &Serial)?;
        tracing::info!(
            "tolerance {tolerance}: {} of {} windows accepted, speed-up {:.2}x, error {:.3e}",
            h.windows_accepted,
            h.windows_accepted + h.windows_rejected,
            h.speedup.unwrap_or(f64::NAN),
            h.max_rel_l2_error.unwrap_or(f64::NAN)
        );
        report.nodes = run.nodes;
        report.network_device = h.network_device.clone().unwrap_or_default();
        report.steps = h.steps_total;
        report.windows = h.windows_accepted + h.windows_rejected;
        report.points.push(ParetoPoint {
            tolerance,
            indicator_threshold: h.indicator_threshold,
            indicator_calibration: h.indicator_calibration.clone(),
            windows_accepted: h.windows_accepted,
            windows_rejected: h.windows_rejected,
            handback_refused: h.handback_refused,
            steps_surrogate: h.steps_surrogate,
            wall_s: h.wall_s,
            reference_wall_s: h.reference_wall_s.unwrap_or(f64::NAN),
            speedup: h.speedup.unwrap_or(f64::NAN),
            max_rel_l2_error: h.max_rel_l2_error.unwrap_or(f64::NAN),
            fe_s: h.fe_s,
            inference_s: h.inference_s,
            transfer_s: h.transfer_s,
            indicator_s: h.indicator_s,
            on_front: false,
        });
    }
    mark_front(&mut report.points);
    Ok(report)
}
