//! `wavecp bench couple`: what hybrid stepping costs against the FE alone, over the FE node
//! count at a fixed network grid, and a cost model that predicts it.
//!
//! Each size is a unit square of Q1 cells with absorbing sides and a Gaussian pulse, its time
//! step the largest stable one that divides the network's frame spacing (so the FE steps per
//! frame grow with the mesh: `stride ∝ √N`). The FE-only run and the hybrid run with every
//! window accepted (the speed-up's upper bound: what the network could save if the indicator
//! trusted it everywhere) cover the same steps: a warm-up of `t_in` frames by the FE, then
//! `windows` windows of `t_out` frames. The network is the given architecture with its
//! initial weights: its cost does not depend on them, and its accuracy is not what this
//! measures (docs/coupling.md has the accuracy).
//!
//! The cost model: per window, the FE costs `t_out · stride · c_step(N)` and the hybrid
//! `c_inf + (b_transfer + b_indicator) · N`; the warm-up is FE in both. `c_step(N)` comes from
//! a 10-step probe at each size (the FE's cost per step is the one thing a user knows of their
//! model); `c_inf` is the median of 5 forecasts timed alone (the network's cost depends on its
//! grid only); `b_transfer` and `b_indicator` come from the hybrid run at the smallest size
//! only. The FE probe indicator runs `stride` FE steps, so its cost is `stride · c_step(N)`
//! plus `b_indicator · N` for the rest. The speed-ups are then predictions, set against the
//! measured ones.

use super::handback::VelocityEstimate;
use super::hybrid::{ErrorScale, Forecaster, Hybrid, HybridConfig, HybridSummary, Indicator};
use super::network::NetworkForecaster;
use super::transfer::{ZoneGrid, ZoneTransfer};
use super::CouplingError;
use crate::fem::WaveSpeed;
use crate::mesh::{rectangle, CellShape};
use crate::nn::Device;
use crate::sim::Simulation;
use crate::solver::{BoundaryKind, OperatorKind, Problem, WaveSolver};
use serde::Serialize;
use std::time::Instant;

/// What `bench couple` runs.
#[derive(Debug, Clone)]
pub struct CoupleBench {
    /// Approximate FE node counts, smallest first (the cost model is fitted on the first).
    pub nodes: Vec<usize>,
    /// The network's architecture (a model TOML), its grid side and frames in and out.
    pub model: std::path::PathBuf,
    pub grid: usize,
    pub t_in: usize,
    pub t_out: usize,
    pub frame_dt: f64,
    /// Windows after the warm-up.
    pub windows: usize,
    pub indicator: String,
    pub device: Device,
}

/// One size's measurements and the model's prediction.
#[derive(Debug, Clone, Serialize)]
pub struct CoupleCase {
    pub nodes: usize,
    pub dt: f64,
    /// FE steps per frame and per window.
    pub stride: usize,
    pub window_steps: usize,
    pub steps: usize,
    /// FE seconds per step (10-step probe).
    pub step_s: f64,
    pub fe_only_s: f64,
    pub hybrid_s: f64,
    pub fe_s: f64,
    pub inference_s: f64,
    pub transfer_s: f64,
    pub indicator_s: f64,
    pub windows_accepted: usize,
    pub speedup: f64,
    /// Per window after the warm-up: FE seconds against the hybrid's (inference, transfers,
    /// indicator, hand-back): the speed-up of a long run.
    pub window_speedup: f64,
    pub predicted_hybrid_s: f64,
    pub predicted_speedup: f64,
    /// `predicted / measured − 1` of the speed-up.
    pub prediction_error: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct CoupleReport {
    pub model: String,
    pub grid: usize,
    pub t_in: usize,
    pub t_out: usize,
    pub frame_dt: f64,
    pub windows: usize,
    pub indicator: String,
    /// The cost model's constants: seconds per forecast, and seconds per FE node for the
    /// transfers and the indicator of one window.
    pub inference_per_window_s: f64,
    pub transfer_per_node_s: f64,
    pub indicator_per_node_s: f64,
    pub cases: Vec<CoupleCase>,
    /// The node count where the model's long-run (per-window) speed-up crosses 1.
    pub break_even_nodes: Option<f64>,
}

/// The benchmark's square of about `nodes` nodes, with its time step dividing `frame_dt`.
fn square(nodes: usize, frame_dt: f64) -> Result<(Problem, f64, usize), CouplingError> {
    let side = ((nodes as f64).sqrt().round() as usize)
        .saturating_sub(1)
        .max(2);
    let mesh = rectangle(CellShape::Quad, side, side, [0.0, 1.0], [0.0, 1.0])
        .map_err(|e| CouplingError::Setup(e.to_string()))?;
    let problem = Problem {
        speed: WaveSpeed::PerCell(vec![1.0; mesh.num_cells()]),
        boundaries: (1..=4).map(|t| (t, BoundaryKind::Absorbing)).collect(),
        sources: vec![],
        operator: OperatorKind::Csr,
        mesh,
    };
    let solver = WaveSolver::new(&problem).map_err(crate::sim::DriverError::from)?;
    let stride = (frame_dt / (0.9 * solver.dt_limit())).ceil().max(1.0) as usize;
    Ok((problem, frame_dt / stride as f64, stride))
}

/// A simulation of `problem` at `dt`, a Gaussian pulse at rest at (0.4, 0.6).
fn simulation(problem: &Problem, dt: f64) -> Result<Simulation<'static>, CouplingError> {
    let e = crate::sim::DriverError::from;
    let mut solver = WaveSolver::new(problem).map_err(e)?;
    solver.set_dt(dt).map_err(e)?;
    let u0: Vec<f64> = problem
        .mesh
        .coords
        .iter()
        .map(|p| (-((p[0] - 0.4).powi(2) + (p[1] - 0.6).powi(2)) / 0.005).exp())
        .collect();
    let v0 = vec![0.0; u0.len()];
    solver.set_initial(&u0, &v0).map_err(e)?;
    Ok(Simulation::serial(solver)?)
}

/// The untrained network of `b`, as a model file would hold it.
fn network(b: &CoupleBench) -> Result<crate::surrogate::modelfile::Loaded, CouplingError> {
    use crate::surrogate::modelfile::{Loaded, ModelMeta};
    let setup = |e: String| CouplingError::Setup(format!("{}: {e}", b.model.display()));
    let spec = std::fs::read_to_string(&b.model).map_err(|e| setup(e.to_string()))?;
    let spec = crate::nn::model::ModelSpec::from_toml(&spec).map_err(|e| setup(e.to_string()))?;
    let model = crate::nn::Model::new(spec).map_err(|e| setup(e.to_string()))?;
    let meta = ModelMeta {
        t_in: b.t_in,
        t_out: b.t_out,
        ny: b.grid,
        nx: b.grid,
        mean: 0.0,
        std: 0.1,
        frame_dt: b.frame_dt,
        dataset: "none (bench couple: initial weights)".into(),
        epoch: 0,
        train_loss: f64::NAN,
        val_loss: f64::NAN,
        trainable_params: model.num_params(),
        peak_rss_mb: 0.0,
        epoch_s: 0.0,
        zone: Some([0.0, 1.0, 0.0, 1.0]),
        calibrations: Default::default(),
        conditioning: None,
    };
    Ok(Loaded {
        model,
        meta,
        train: None,
    })
}

/// The hybrid run of one size with every window accepted.
fn hybrid(
    b: &CoupleBench,
    (problem, dt, stride): (&Problem, f64, usize),
    last: usize,
) -> Result<HybridSummary, CouplingError> {
    let grid = ZoneGrid {
        x: [0.0, 1.0],
        y: [0.0, 1.0],
        nx: b.grid,
        ny: b.grid,
    };
    let transfer = ZoneTransfer::new(&problem.mesh, grid)?;
    let net = NetworkForecaster::from_loaded(
        network(b)?,
        &b.model,
        b.device,
        &transfer,
        stride as f64 * dt,
    )?;
    // One untimed forecast: the first allocates the network's buffers and wakes the threads.
    let mut net = net;
    let zeros = vec![0.0; transfer.points()];
    net.forecast(&vec![&zeros[..]; b.t_in])?;
    let indicator: Box<dyn Indicator> = super::solve::indicator(&b.indicator, None)
        .map_err(|e| CouplingError::Setup(e.to_string()))?;
    let cfg = HybridConfig {
        stride,
        tolerance: f64::INFINITY,
        max_consecutive: 0,
        velocity: VelocityEstimate::Bdf2,
        error_scale: ErrorScale::Window,
        audit_every: 0,
        handback_limit: None,
        retake_velocity: None,
    };
    let mut sim = simulation(problem, dt)?;
    let mut h = Hybrid::new(&mut sim, &transfer, net, indicator, cfg)?;
    h.run(last)
}

/// The network's seconds per forecast: the median of 5, after one untimed.
fn inference_cost(b: &CoupleBench) -> Result<f64, CouplingError> {
    let grid = ZoneGrid {
        x: [0.0, 1.0],
        y: [0.0, 1.0],
        nx: b.grid,
        ny: b.grid,
    };
    let mesh = rectangle(CellShape::Quad, 8, 8, [0.0, 1.0], [0.0, 1.0])
        .map_err(|e| CouplingError::Setup(e.to_string()))?;
    let transfer = ZoneTransfer::new(&mesh, grid)?;
    let mut net =
        NetworkForecaster::from_loaded(network(b)?, &b.model, b.device, &transfer, b.frame_dt)?;
    let zeros = vec![0.0; transfer.points()];
    let past = vec![&zeros[..]; b.t_in];
    net.forecast(&past)?;
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            net.forecast(&past).map(|_| t0.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[2])
}

/// Runs the benchmark (the smallest size first: it fits the cost model).
pub fn run(b: &CoupleBench) -> Result<CoupleReport, CouplingError> {
    let c_inf = inference_cost(b)?;
    let mut cases = Vec::new();
    let mut fit: Option<(f64, f64)> = None;
    for &n in &b.nodes {
        let (problem, dt, stride) = square(n, b.frame_dt)?;
        let nodes = problem.mesh.num_nodes();
        let window_steps = b.t_out * stride;
        let warm = (b.t_in - 1) * stride;
        let steps = warm + b.windows * window_steps;
        let mut sim = simulation(&problem, dt)?;
        let t = Instant::now();
        sim.advance(10);
        let step_s = t.elapsed().as_secs_f64() / 10.0;
        let mut sim = simulation(&problem, dt)?;
        let t = Instant::now();
        sim.advance(steps);
        let fe_only_s = t.elapsed().as_secs_f64();
        drop(sim);
        let h = hybrid(b, (&problem, dt, stride), steps)?;
        let w = h.windows_accepted.max(1) as f64;
        // The FE probe's steps, priced at this size's step cost.
        let probe = probe_steps(&b.indicator, stride) as f64 * step_s;
        let (b_tr, b_ind) = *fit.get_or_insert((
            h.transfer_s / (w * nodes as f64),
            (h.indicator_s / w - probe).max(0.0) / nodes as f64,
        ));
        let per_window = c_inf + (b_tr + b_ind) * nodes as f64 + probe;
        let predicted_hybrid_s = warm as f64 * step_s + b.windows as f64 * per_window;
        let predicted_speedup = steps as f64 * step_s / predicted_hybrid_s;
        let speedup = fe_only_s / h.wall_s;
        let measured_window = (h.inference_s + h.transfer_s + h.indicator_s) / w;
        cases.push(CoupleCase {
            nodes,
            dt,
            stride,
            window_steps,
            steps,
            step_s,
            fe_only_s,
            hybrid_s: h.wall_s,
            fe_s: h.fe_s,
            inference_s: h.inference_s,
            transfer_s: h.transfer_s,
            indicator_s: h.indicator_s,
            windows_accepted: h.windows_accepted,
            speedup,
            window_speedup: window_steps as f64 * fe_only_s / steps as f64 / measured_window,
            predicted_hybrid_s,
            predicted_speedup,
            prediction_error: predicted_speedup / speedup - 1.0,
        });
    }
    let (b_tr, b_ind) = fit.unwrap_or_default();
    Ok(CoupleReport {
        model: b.model.display().to_string(),
        grid: b.grid,
        t_in: b.t_in,
        t_out: b.t_out,
        frame_dt: b.frame_dt,
        windows: b.windows,
        indicator: b.indicator.clone(),
        inference_per_window_s: c_inf,
        transfer_per_node_s: b_tr,
        indicator_per_node_s: b_ind,
        break_even_nodes: break_even(&cases, b, (c_inf, b_tr + b_ind)),
        cases,
    })
}

/// Where the model's per-window speed-up crosses 1, on the sizes' trend: the FE's cost per
/// node-step and `dt·√N` taken as their means over the sizes measured.
fn break_even(cases: &[CoupleCase], b: &CoupleBench, (c_inf, per_node): (f64, f64)) -> Option<f64> {
    if cases.is_empty() {
        return None;
    }
    let k = cases.len() as f64;
    let a = cases.iter().map(|c| c.step_s / c.nodes as f64).sum::<f64>() / k;
    let h = cases
        .iter()
        .map(|c| c.dt * (c.nodes as f64).sqrt())
        .sum::<f64>()
        / k;
    let speedup = |n: f64| {
        let stride = (b.frame_dt / (h / n.sqrt())).ceil();
        let fe = b.t_out as f64 * stride * a * n;
        let probe = probe_steps(&b.indicator, stride as usize) as f64 * a * n;
        fe / (c_inf + per_node * n + probe)
    };
    let mut n = 1e2f64;
    let mut prev = speedup(n);
    while n < 1e9 {
        let next = n * 1.05;
        let s = speedup(next);
        if prev < 1.0 && s >= 1.0 {
            return Some(next);
        }
        (n, prev) = (next, s);
    }
    None
}

/// The FE steps an indicator runs a window (the probes; the others none).
fn probe_steps(indicator: &str, stride: usize) -> usize {
    match indicator {
        "fe_probe" => stride,
        "fe_probe_short" => super::hybrid::FeProbeShort::steps(stride),
        _ => 0,
    }
}
