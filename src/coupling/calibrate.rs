//! How far an error indicator can be trusted, measured and stored: held-out scenarios of a
//! dataset job are run by the FE, every window of the model is forecast from the FE's own past
//! frames, and its true error (relative L2 over the window's frames, grid points inside the
//! mesh) is set against each indicator's value from the FE state at the window's start
//! (`wavecp calibrate`, `examples/indicator_study.rs`).
//!
//! With [`Sampling::rollout`] = `n` the windows are those a hybrid run sees instead: each
//! scenario runs as a hybrid run that accepts up to `n` windows in a row (BDF2 hand-back; the
//! FE then runs one), the FE re-running each accepted window from the state it starts in
//! ([`super::hybrid::Audit`]) for its true error — so all but the first of a run of accepted
//! windows start from the previous window's hand-back and read its forecast. Fewer windows a
//! scenario (at most one every `t_out` frames). A large `n` lets errors compound unchecked
//! (measured: the fine model's median window error 53 % with every window accepted).
//!
//! The scenarios are split: the first part calibrates ([`Calibration`]: the tolerance of a
//! hybrid run in error units), the rest (drawn with the next seed, and with their own
//! frequency factor to check out of the trained range) checks it — for each tolerance, how
//! many of the held-out windows would be accepted and how many of those are in truth worse
//! than the tolerance.

use super::calibrate_split::{checked, split, Rule};
pub use super::calibrate_split::{
    CalibrationReport, HeldOut, LeftOut, RegimeSummary, SampledWindow,
};
pub use super::error_model::spearman;
use super::error_model::ErrorModel;
use super::grid_indicators::{
    learned_inputs, learned_inputs_run, LEARNED_INPUTS, LEARNED_INPUTS_RUN,
};
use super::hybrid::rel_l2;
use super::hybrid::{Forecaster, Indicator, WindowView};
use super::network::NetworkForecaster;
use super::transfer::{ZoneGrid, ZoneTransfer};
use super::CouplingError;
use crate::comm::Serial;
use crate::config::SourceConfig;
use crate::dataset::DatasetJob;
use crate::nn::Device;
use crate::surrogate::calibration::Calibration;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

/// Which windows to sample.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub model: PathBuf,
    /// A dataset job: its mesh, zone, frames and scenario ranges (sources drawn with `seed`).
    pub job: PathBuf,
    pub indicators: Vec<String>,
    pub scenarios: usize,
    pub seed: u64,
    /// Multiplies the drawn source frequencies (> 1 leaves the trained range).
    pub frequency_factor: f64,
    /// Sources drawn in `[x0, x1] × [y0, y1]` instead of the job's ranges (a box outside
    /// them: sources where none was in training).
    pub source_box: Option<[f64; 4]>,
    /// 0: windows from the FE's exact states. `n > 0`: windows as a hybrid run accepting up
    /// to `n` in a row sees them (see the module doc); the first indicator only.
    pub rollout: usize,
}

/// What the held-out scenarios of [`calibrate`] change: the frequency factor and the box the
/// sources are drawn in.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub frequency_factor: f64,
    pub source_box: Option<[f64; 4]>,
}

/// How [`calibrate`] goes about it: the calibration rule's risk, the share of the scenarios
/// held out and what changes in them, and for a learned indicator the scenarios its error
/// model is fitted on first (drawn with seed `s.seed + 2`, apart from both).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub risk: f64,
    pub holdout: f64,
    pub check: Check,
    pub fit_scenarios: usize,
    /// Not 0: the error model is fitted on the windows of hybrid runs of the fit scenarios
    /// too (accepting up to this many in a row, as [`Sampling::rollout`]), reading whether a
    /// window follows an accepted one ([`LEARNED_INPUTS_RUN`]); 0: exact FE starts only.
    pub fit_rollout: usize,
}

/// The sampled windows: per window its scenario and true error, per indicator its values;
/// and the time spent forecasting and scoring.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    pub scenario: Vec<usize>,
    /// Per scenario, its regime out of the model's trained ranges (`Conditioning::regime`:
    /// the parameters clearly outside, sorted; empty inside them or only just outside, or
    /// for a model not conditioned on its scenario).
    pub outside: Vec<Vec<String>>,
    pub errors: Vec<f64>,
    pub scores: Vec<Vec<f64>>,
    pub inference_s: f64,
    pub indicator_s: Vec<f64>,
}

pub(super) fn setup(e: impl std::fmt::Display) -> CouplingError {
    CouplingError::Setup(e.to_string())
}

/// Runs the scenarios and scores every window (one rank); a learned indicator predicts with
/// the error model its calibration in `s.model` carries.
pub fn sample(s: &Sampling) -> Result<Windows, CouplingError> {
    let meta = crate::surrogate::modelfile::load(&s.model)
        .map_err(setup)?
        .meta;
    sample_fitted(s, &|n| super::solve::fitted(&meta, n).cloned())
}

/// [`sample`] with the error model of each learned indicator given by `fitted` (by name).
pub(super) fn sample_fitted(
    s: &Sampling,
    fitted: &dyn Fn(&str) -> Option<ErrorModel>,
) -> Result<Windows, CouplingError> {
    if s.rollout > 0 {
        let name = s.indicators.first().ok_or_else(|| setup("no indicator"))?;
        let model = fitted(name);
        let make = || super::solve::indicator(name, model.as_ref()).map_err(setup);
        return sample_rollout(s, &make);
    }
    let inds: Vec<Box<dyn Indicator>> = s
        .indicators
        .iter()
        .map(|n| super::solve::indicator(n, fitted(n).as_ref()).map_err(setup))
        .collect::<Result<_, _>>()?;
    sample_with(s, inds)
}

/// Records each window's [`learned_inputs`], with the run's input when `run` (scores 0).
#[derive(Clone)]
struct Inputs {
    rows: Rc<RefCell<Vec<Vec<f64>>>>,
    run: bool,
}

impl Indicator for Inputs {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        let x = if self.run {
            learned_inputs_run(&w)?
        } else {
            learned_inputs(&w)?
        };
        self.rows.borrow_mut().push(x);
        Ok(0.0)
    }
}

/// The ridge penalty of `grid_learned`'s error model (on standardized basis functions; the
/// held-out ranking moved by < 0.01 over 0.3–30 on the fine model).
pub const LEARNED_LAMBDA: f64 = 3.0;

/// Whether `indicator` is fitted (an error model) before it is calibrated.
pub fn is_learned(indicator: &str) -> bool {
    indicator == "grid_learned"
}

/// What the fit of a learned indicator's error model saw.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub scenarios: usize,
    pub windows: usize,
    /// Of them, windows of hybrid runs ([`Plan::fit_rollout`]).
    pub run_windows: usize,
    /// The fitted predictions against the true errors on the fit windows themselves.
    pub spearman_fit: f64,
    pub lambda: f64,
}

/// Fits `grid_learned`'s error model on every window of the scenarios of `s` (exact FE
/// starts); with `rollout > 0` also on the windows of a hybrid run of each accepting up to
/// `rollout` in a row ([`Plan::fit_rollout`]), the model then reading [`LEARNED_INPUTS_RUN`].
pub fn fit_learned(s: &Sampling, rollout: usize) -> Result<(ErrorModel, FitReport), CouplingError> {
    let inputs = Inputs {
        rows: Rc::new(RefCell::new(vec![])),
        run: rollout > 0,
    };
    let exact = Sampling {
        rollout: 0,
        ..s.clone()
    };
    let mut w = sample_with(&exact, vec![Box::new(inputs.clone())])?;
    let mut run_windows = 0;
    if rollout > 0 {
        let make = || Ok(Box::new(inputs.clone()) as Box<dyn Indicator>);
        let r = sample_rollout(
            &Sampling {
                rollout,
                ..s.clone()
            },
            &make,
        )?;
        run_windows = r.errors.len();
        w.errors.extend(r.errors);
    }
    let rows = inputs.rows.take();
    if rows.len() != w.errors.len() {
        return Err(setup(format!(
            "{} windows scored, {} with a true error: the rollout scored a window it did not audit",
            rows.len(),
            w.errors.len()
        )));
    }
    let what = if rollout > 0 {
        LEARNED_INPUTS_RUN
    } else {
        LEARNED_INPUTS
    };
    let m = ErrorModel::fit(what, &rows, &w.errors, true, LEARNED_LAMBDA)
        .map_err(|e| setup(format!("fitting the error model: {e}")))?;
    let pred = rows
        .iter()
        .map(|r| m.predict_ln(r))
        .collect::<Result<Vec<f64>, _>>()
        .map_err(setup)?;
    let report = FitReport {
        scenarios: s.scenarios,
        windows: rows.len(),
        run_windows,
        spearman_fit: spearman(&pred, &w.errors),
        lambda: LEARNED_LAMBDA,
    };
    Ok((m, report))
}

/// [`sample`] with the indicators given (`s.indicators` unread; exact FE starts only).
pub fn sample_with(
    s: &Sampling,
    mut inds: Vec<Box<dyn Indicator>>,
) -> Result<Windows, CouplingError> {
    if s.rollout > 0 {
        return Err(setup(
            "sample_with samples exact FE starts; rollouts go through sample",
        ));
    }
    let (job, base, transfer) = job_and_transfer(s)?;
    let base = base.as_path();
    let (stride, start, count) = (job.frames.stride, job.frames.start, job.frames.count);
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut pick = |r: [f64; 2]| rng.random_range(r[0]..=r[1]);
    let mut w = Windows {
        scores: vec![vec![]; inds.len()],
        indicator_s: vec![0.0; inds.len()],
        ..Windows::default()
    };
    let mut net: Option<NetworkForecaster> = None;
    for scenario in 0..s.scenarios {
        let (mut sim, params) = scenario_sim(s, (&job, base), &mut pick)?;
        let net = network(&mut net, s, &transfer, stride as f64 * sim.dt())?;
        w.outside.push(outside(net, &params));
        condition(net, params)?;
        let (t_in, t_out) = (net.t_in(), net.t_out());
        if count < t_in + t_out {
            return Err(setup(format!(
                "the job records {count} frames a scenario; a window needs {t_in} + {t_out}"
            )));
        }
        sim.advance(start);
        let (mut frames, mut states) = (vec![], vec![]);
        for k in 0..count {
            if k > 0 {
                sim.advance(stride);
            }
            let mut g = vec![0.0; transfer.points()];
            transfer.to_grid(sim.u(), &mut g)?;
            frames.push(g);
            states.push(sim.state());
        }
        for k in t_in - 1..count - t_out {
            let past: Vec<&[f64]> = frames[k + 1 - t_in..=k].iter().map(|f| &f[..]).collect();
            net.set_input_time((start + (k + 1 - t_in) * stride) as f64 * sim.dt());
            let t0 = Instant::now();
            let forecast = net.forecast(&past)?;
            w.inference_s += t0.elapsed().as_secs_f64();
            w.errors.push(rel_l2(&forecast, &frames[k + 1..=k + t_out]));
            w.scenario.push(scenario);
            for (i, ind) in inds.iter_mut().enumerate() {
                sim.restore(&states[k])?;
                let t0 = Instant::now();
                let score = ind.score(WindowView {
                    sim: &mut sim,
                    transfer: &transfer,
                    past: &past,
                    forecast: &forecast,
                    stride,
                    reads_forecast: false,
                })?;
                w.indicator_s[i] += t0.elapsed().as_secs_f64();
                w.scores[i].push(score);
            }
        }
    }
    Ok(w)
}

/// The dataset job of `s`, its folder, and the transfer between its mesh and its zone grid.
fn job_and_transfer(s: &Sampling) -> Result<(DatasetJob, PathBuf, ZoneTransfer), CouplingError> {
    let job = DatasetJob::load(&s.job, &[]).map_err(|e| {
        setup(format!(
            "{} (calibration runs scenarios of the dataset job the model was trained from, with its [zone], [frames] and [sampling])",
            e.to_string().trim_end()
        ))
    })?;
    let base = s.job.parent().unwrap_or(Path::new(".")).to_path_buf();
    let z = &job.zone;
    let grid = ZoneGrid {
        x: z.x,
        y: z.y,
        nx: z.nx,
        ny: z.ny,
    };
    let mesh = crate::sim::load_mesh(&job.mesh, &base)?;
    let transfer = ZoneTransfer::new(&mesh, grid)?;
    Ok((job, base, transfer))
}

/// The FE simulation of the next scenario of `s` over the job's recorded time range, at step
/// 0, and its parameters as a conditioned model reads them (`pick` draws its source from the
/// scenarios' generator).
fn scenario_sim(
    s: &Sampling,
    (job, base): (&DatasetJob, &Path),
    pick: &mut impl FnMut([f64; 2]) -> f64,
) -> Result<(crate::sim::Simulation<'static>, Vec<f64>), CouplingError> {
    let f = &job.frames;
    let end = (f.start + (f.count - 1) * f.stride) as f64 * job.time.dt.unwrap_or(1.0);
    let cfg = job.fe_config(end, vec![scenario_source(s, job, pick)]);
    let params = super::subrun::scenario(&cfg)?;
    Ok((crate::sim::from_job(&cfg, base, &Serial)?.0, params))
}

/// The regime of `params` out of the trained ranges of `net` ([`Conditioning::regime`]).
///
/// [`Conditioning::regime`]: crate::surrogate::condition::Conditioning::regime
fn outside(net: &NetworkForecaster, params: &[f64]) -> Vec<String> {
    (net.meta().conditioning.as_ref()).map_or(vec![], |c| c.regime(params))
}

/// Tells a model conditioned on the scenario the one it runs in.
fn condition(net: &mut NetworkForecaster, params: Vec<f64>) -> Result<(), CouplingError> {
    if net.conditioned() {
        net.set_scenario(params)?;
    }
    Ok(())
}

/// The network of `s`, opened on the first call for frames `frame_dt` apart.
fn network<'n>(
    net: &'n mut Option<NetworkForecaster>,
    s: &Sampling,
    transfer: &ZoneTransfer,
    frame_dt: f64,
) -> Result<&'n mut NetworkForecaster, CouplingError> {
    if net.is_none() {
        *net = Some(NetworkForecaster::open(
            &s.model,
            Device::Cpu,
            transfer,
            frame_dt,
        )?);
    }
    net.as_mut().ok_or_else(|| setup("no network"))
}

/// The source of the next scenario of `s` (`pick` draws from the scenarios' generator).
fn scenario_source(
    s: &Sampling,
    job: &DatasetJob,
    pick: &mut impl FnMut([f64; 2]) -> f64,
) -> SourceConfig {
    let r = &job.sampling;
    let (sx, sy) = match s.source_box {
        Some(b) => ([b[0], b[1]], [b[2], b[3]]),
        None => (r.source_x, r.source_y),
    };
    SourceConfig {
        position: [pick(sx), pick(sy)],
        frequency: s.frequency_factor * pick(r.frequency),
        amplitude: pick(r.amplitude),
        delay: r.delay.map(&mut *pick),
    }
}

/// [`sample`] with [`Sampling::rollout`]: every scenario a hybrid run accepting up to
/// `rollout` windows in a row, each audited, scored by the indicator `make` gives.
fn sample_rollout(
    s: &Sampling,
    make: &dyn Fn() -> Result<Box<dyn Indicator>, CouplingError>,
) -> Result<Windows, CouplingError> {
    use super::handback::VelocityEstimate;
    use super::hybrid::{ErrorScale, Hybrid, HybridConfig};
    let (job, base, transfer) = job_and_transfer(s)?;
    let base = base.as_path();
    let (stride, start, count) = (job.frames.stride, job.frames.start, job.frames.count);
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut pick = |r: [f64; 2]| rng.random_range(r[0]..=r[1]);
    let mut w = Windows {
        scores: vec![vec![]],
        indicator_s: vec![0.0],
        ..Windows::default()
    };
    let mut net: Option<NetworkForecaster> = None;
    let cfg = HybridConfig {
        stride,
        tolerance: f64::INFINITY,
        max_consecutive: s.rollout,
        velocity: VelocityEstimate::Bdf2,
        error_scale: ErrorScale::Window,
        audit_every: 1,
        handback_limit: None,
        retake_velocity: None,
    };
    for scenario in 0..s.scenarios {
        let (mut sim, params) = scenario_sim(s, (&job, base), &mut pick)?;
        let net = network(&mut net, s, &transfer, stride as f64 * sim.dt())?;
        w.outside.push(outside(net, &params));
        condition(net, params)?;
        sim.advance(start);
        let ind = make()?;
        let last = start + (count - 1) * stride;
        let h = Hybrid::new(&mut sim, &transfer, net, ind, cfg)?.run(last)?;
        w.inference_s += h.inference_s;
        w.indicator_s[0] += h.indicator_s;
        for a in &h.audits {
            w.errors.push(a.error);
            w.scores[0].push(a.score);
            w.scenario.push(scenario);
        }
    }
    Ok(w)
}

/// Calibrates `s.indicators[0]` on `1 − holdout` of the scenarios, checks it at `tolerances`
/// on the others (drawn with seed `s.seed + 1` and as `check` says). A learned indicator's
/// error model is fitted first, on `plan.fit_scenarios` more, and returned in the calibration.
pub fn calibrate(
    s: &Sampling,
    plan: Plan,
    tolerances: &[f64],
) -> Result<(Calibration, CalibrationReport), CouplingError> {
    let Plan {
        risk,
        holdout,
        check,
        fit_scenarios,
        fit_rollout,
    } = plan;
    let indicator = checked(s, holdout)?;
    let (estimator, fit) = match (is_learned(indicator), fit_scenarios) {
        (false, 0) => (None, None),
        (false, n) => {
            return Err(setup(format!(
                "`{indicator}` is not fitted: {n} fit scenarios are for a learned indicator (grid_learned)"
            )))
        }
        (true, 0) => {
            return Err(setup(format!(
                "`{indicator}` fits an error model first: give it fit scenarios"
            )))
        }
        (true, n) => {
            let fit = Sampling {
                scenarios: n,
                seed: s.seed.wrapping_add(2),
                ..s.clone()
            };
            let (m, r) = fit_learned(&fit, fit_rollout)?;
            (Some(m), Some(r))
        }
    };
    let fitted = |n: &str| estimator.clone().filter(|_| n == indicator);
    let (mut c, mut report) = split(
        s,
        &fitted,
        (risk, holdout, check),
        tolerances,
        Rule::InRange,
    )?;
    c.estimator = estimator;
    report.fit = fit;
    Ok((c, report))
}

/// Calibrates the indicator of `base` (a model's calibration in range; a learned indicator
/// keeps its error model) on scenarios outside the trained ranges, drawn as `s` says
/// (`frequency_factor`, `source_box`), and checks it on held-out ones as `check` says:
/// returns `base` with that calibration as its [`Calibration::out_of_range`]. The windows of
/// an earlier calibration out of range stay in it, so that one calibration covers several
/// regimes (a higher frequency, a source elsewhere), each sampled by its own call.
pub fn calibrate_out_of_range(
    s: &Sampling,
    base: &Calibration,
    (risk, holdout, check): (f64, f64, Check),
    tolerances: &[f64],
) -> Result<(Calibration, CalibrationReport), CouplingError> {
    if s.indicators.first() != Some(&base.indicator) {
        return Err(setup(format!(
            "the calibration given is of `{}`, the scenarios are sampled for {:?}",
            base.indicator, s.indicators
        )));
    }
    if s.frequency_factor == 1.0 && s.source_box.is_none() {
        return Err(setup(
            "scenarios out of range need a frequency factor other than 1 or a source box",
        ));
    }
    let fitted = |n: &str| base.estimator.clone().filter(|_| n == base.indicator);
    let rule = Rule::OutOfRange(base.out_of_range.as_deref());
    let (regime, mut report) = split(s, &fitted, (risk, holdout, check), tolerances, rule)?;
    report.regime = "out_of_range";
    let mut c = base.clone();
    c.out_of_range = Some(Box::new(regime));
    Ok((c, report))
}
