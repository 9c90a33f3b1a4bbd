//! `wavecp solve` with a `[coupling]` section: the job's run, its time loop handed to
//! [`Hybrid`] with the trained network as forecaster.
//!
//! On several ranks the network runs on rank 0 ([`OnRankZero`]): one copy of the model, and
//! the grid is small (64 × 64 × 8 frames is 256 KiB) beside the field, so gathering the frame
//! there and broadcasting the forecast costs little against a window of FE steps; the
//! transfers give the serial bits on any rank count ([`ZoneTransfer::distribute`]), the
//! indicators sum through `repro_sum`, so the decisions and the field are the same on 1, 2 or
//! 4 ranks bit for bit.
//!
//! The run's output gains, at each output step, which stepper produced it (`stepper`: 0 the
//! FE, 1 a surrogate window handed back there) and the indicator of the window it lies in;
//! with `--reference` the FE-only run advances beside it and the file gains `u_ref` and
//! `u_diff = |u − u_ref|`. Checkpoints keep the hybrid's state (its frames and counters) and
//! the reference's error so far, so a restarted run continues bit for bit.

pub use super::demo::demo_config;
use super::error_model::ErrorModel;
use super::grid_indicators::{GridLearned, GridSmoothness};
use super::handback::VelocityEstimate;
use super::hybrid::{
    EnergyBalance, EnergyChange, ErrorScale, FeProbe, FeProbeShort, Forecaster, Hybrid,
    HybridConfig, HybridHooks, HybridState, HybridSummary, Indicator, OnRankZero, Residual,
};
use super::network::NetworkForecaster;
use super::transfer::{ZoneGrid, ZoneTransfer};
use super::CouplingError;
use crate::comm::{repro_sum, Comm};
use crate::config::{Config, CouplingConfig};
use crate::output::StepExtras;
use crate::sim::extras::{lock, ExtraField, ExtraFrame, ExtraStep, Extras, SharedExtras};
use crate::sim::{
    AfterStep, Control, Coupled, DriverError, Observer, RunOptions, RunSummary, Simulation,
};
use crate::surrogate::calibration::ThresholdRule;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) fn err(e: impl std::fmt::Display) -> DriverError {
    DriverError::Invalid {
        key: "coupling".into(),
        msg: e.to_string(),
    }
}

/// A coupling error as the job's: a simulation's error as it is, the others under the
/// `coupling` key (without repeating it).
pub(super) fn from_coupling(e: CouplingError) -> DriverError {
    match e {
        CouplingError::Simulation(d) => d,
        CouplingError::Setup(m) => err(m),
        other => err(other),
    }
}

/// The named indicator; a learned one predicts with `fitted`, the error model its calibration
/// in the model file carries ([`fitted`]).
pub fn indicator(
    name: &str,
    fitted: Option<&ErrorModel>,
) -> Result<Box<dyn Indicator>, DriverError> {
    Ok(match name {
        "fe_probe" => Box::new(FeProbe),
        "fe_probe_short" => Box::new(FeProbeShort),
        "energy_balance" => Box::new(EnergyBalance),
        "energy_change" => Box::new(EnergyChange),
        "residual" => Box::new(Residual),
        "grid_seam" => Box::new(GridSmoothness::seam()),
        "grid_learned" => {
            match fitted {
                Some(model) => Box::new(GridLearned {
                    model: model.clone(),
                }),
                None => return Err(err(
                    "`grid_learned` predicts the window error with an error model fitted to the \
                     network: the model file has none (wavecp calibrate --indicator grid_learned)",
                )),
            }
        }
        other => return Err(err(format!("no indicator `{other}`"))),
    })
}

/// The point fields and values a hybrid run writes beside `u`.
pub fn extra_names(reference: bool) -> StepExtras {
    let mut fields = vec!["stepper".to_string()];
    if reference {
        fields.extend(["u_ref".to_string(), "u_diff".to_string()]);
    }
    StepExtras::new(fields, vec!["indicator".into()])
}

/// The FE-only run beside the hybrid one (`--reference`), and how far they drifted apart.
struct Reference<'c> {
    sim: Simulation<'c>,
    wall: Duration,
    /// Max over output steps of ‖u − u_ref‖₂ and of ‖u_ref‖₂.
    max_diff: f64,
    max_ref: f64,
}

/// What a checkpoint of a hybrid run keeps besides the simulation's state.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    hybrid: HybridState,
    landed_at: Option<usize>,
    score: Option<f64>,
    /// `(max_diff, max_ref)` with `--reference`.
    reference: Option<(f64, f64)>,
}

/// What the hybrid loop shares with its observers: the run's extras, and what an output
/// step reports.
struct Ctx<'c> {
    comm: &'c dyn Comm,
    extras: SharedExtras,
    /// Whether the run writes output (forecast frames are kept only then; with a reference
    /// they are still compared at the output steps, so that `max_rel_l2_error` is the same
    /// written or not).
    writes: bool,
    /// When the hybrid loop was told a forecast frame is wanted: its mapping to the mesh is
    /// output work, not stepping.
    frame_clock: std::cell::Cell<Option<Instant>>,
    names: StepExtras,
    every: usize,
    last: usize,
    reference: Option<Reference<'c>>,
    /// The step the last accepted window landed on, and the last window's indicator.
    landed_at: Option<usize>,
    score: Option<f64>,
    hybrid: HybridState,
    /// Time the run's observers took (output, checkpoints, the reference).
    observed: Duration,
}

impl Ctx<'_> {
    fn save(&self) {
        let saved = Saved {
            hybrid: self.hybrid.clone(),
            landed_at: self.landed_at,
            score: self.score,
            reference: self.reference.as_ref().map(|r| (r.max_diff, r.max_ref)),
        };
        lock(&self.extras).state = crate::comm::to_bytes(&saved);
    }

    /// The extras of output step `n` whose field is `u` (this rank's owned values), produced
    /// by the FE (`stepper` 0) or the surrogate (1); advances the reference to it. Collective.
    fn extras_at(&mut self, n: usize, u: &[f64], stepper: f64) -> Result<ExtraStep, DriverError> {
        let mut by_name = vec![("stepper", ExtraField::Constant(stepper))];
        if let Some(r) = self.reference.as_mut() {
            let t = Instant::now();
            r.sim.advance(n - r.sim.steps_done());
            r.wall += t.elapsed();
            let u_ref = r.sim.u();
            let diff: Vec<f64> = u.iter().zip(u_ref).map(|(a, b)| (a - b).abs()).collect();
            let sq = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x * x).collect() };
            let (d, m) = (
                repro_sum(self.comm, &sq(&diff)).sqrt(),
                repro_sum(self.comm, &sq(u_ref)).sqrt(),
            );
            (r.max_diff, r.max_ref) = (r.max_diff.max(d), r.max_ref.max(m));
            tracing::debug!(
                "output step {n} ({}): |u - u_ref| {d:.4e}, |u_ref| {m:.4e}, error so far {:.4e}",
                if stepper > 0.0 { "surrogate" } else { "FE" },
                r.max_diff / r.max_ref.max(f64::MIN_POSITIVE)
            );
            by_name.push(("u_ref", ExtraField::Values(u_ref.to_vec())));
            by_name.push(("u_diff", ExtraField::Values(diff)));
        }
        let fields = self
            .names
            .fields
            .iter()
            .map(|f| {
                let i = by_name.iter().position(|(k, _)| k == f);
                i.map(|i| by_name[i].1.clone())
                    .ok_or_else(|| err(format!("no output field `{f}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ExtraStep {
            step: n,
            fields,
            values: vec![self.score.unwrap_or(f64::NAN)],
        })
    }

    /// The extras of output step `sim.steps_done()`.
    fn output_step(&mut self, sim: &Simulation<'_>) -> Result<(), DriverError> {
        let n = sim.steps_done();
        let stepper = if self.landed_at == Some(n) { 1.0 } else { 0.0 };
        let at = self.extras_at(n, sim.u(), stepper)?;
        lock(&self.extras).at = Some(at);
        self.save();
        Ok(())
    }
}

impl HybridHooks for Ctx<'_> {
    fn state_changed(&mut self, state: &HybridState) {
        self.hybrid = state.clone();
        self.save();
    }

    fn window(&mut self, steps: std::ops::Range<usize>, score: Option<f64>, accepted: bool) {
        self.score = score;
        if accepted {
            self.landed_at = Some(steps.end);
        }
    }

    fn wants_frame(&self, step: usize) -> bool {
        let wanted = (self.writes || self.reference.is_some())
            && step.is_multiple_of(self.every)
            && step < self.last;
        if wanted {
            self.frame_clock.set(Some(Instant::now()));
        }
        wanted
    }

    fn forecast_frame(&mut self, step: usize, time: f64, u: Vec<f64>) -> Result<(), CouplingError> {
        let t = self.frame_clock.take().unwrap_or_else(Instant::now);
        let extras = self.extras_at(step, &u, 1.0)?;
        if self.writes {
            lock(&self.extras)
                .frames
                .push(ExtraFrame { time, u, extras });
        }
        self.save();
        self.observed += t.elapsed();
        Ok(())
    }
}

/// The run's observers as one observer of the hybrid loop, with the output step's extras
/// set first.
struct Observed<'a, 'b>(&'a mut AfterStep<'b>);

impl<'c> Observer<Ctx<'c>> for Observed<'_, '_> {
    fn after_step(
        &mut self,
        sim: &Simulation<'_>,
        ctx: &mut Ctx<'c>,
        ctl: &mut Control,
    ) -> Result<(), DriverError> {
        let t = Instant::now();
        let n = sim.steps_done();
        if n.is_multiple_of(ctx.every) || n == ctx.last {
            ctx.output_step(sim)?;
        }
        ctl.stop |= (self.0)(sim)?;
        ctx.observed += t.elapsed();
        Ok(())
    }
}

/// The network, the transfer and the hybrid settings of a job, checked against each other.
struct Parts {
    transfer: ZoneTransfer,
    net: NetworkForecaster,
    cfg: HybridConfig,
    /// The indicator threshold the tolerance became and the calibration it came from, when
    /// the model carries a calibration of the job's indicator.
    threshold: Option<(f64, String)>,
    /// The job's scenario parameters outside the model's trained ranges.
    out_of_range: Vec<String>,
    /// The error model of a learned indicator.
    estimator: Option<ErrorModel>,
    /// With `coupling.handback_budget`: the rule for the threshold of what the hand-back's
    /// loss leaves of the tolerance.
    budget: Option<ThresholdRule>,
}

/// The error model the model file's calibration of `indicator` carries, if any.
pub fn fitted<'m>(
    meta: &'m crate::surrogate::modelfile::ModelMeta,
    indicator: &str,
) -> Option<&'m ErrorModel> {
    meta.calibrations
        .get(indicator)
        .and_then(|c| c.estimator.as_ref())
}

/// The indicator threshold `c.tolerance` becomes under the model's calibration of the job's
/// indicator, and which calibration gave it (`in_range`, `out_of_range:<regime>`,
/// `out_of_range:smallest:<regimes>`, `out_of_range:pooled`); or `None` (the tolerance then
/// bounds the raw indicator value). For a source outside the trained ranges in the
/// parameters `outside` run with `trust`, the calibration out of the ranges
/// (`wavecp calibrate --out-of-range`) as [`Calibration::threshold_outside`] picks it when
/// the model has one, else (warned) the one in range. Also the rule that gave it, for other
/// tolerances ([`ThresholdRule::Raw`] without a calibration).
fn calibrated(
    c: &CouplingConfig,
    meta: &crate::surrogate::modelfile::ModelMeta,
    outside_trusted: Option<&[String]>,
) -> (Option<(f64, String)>, ThresholdRule) {
    let have = meta.calibrations.indicators();
    match meta.calibrations.get(&c.indicator) {
        Some(cal) => {
            let (t, from, n, m, rule) = match (&cal.out_of_range, outside_trusted) {
                (Some(o), Some(outside)) => {
                    let (t, basis) = o.threshold_outside(outside, c.tolerance);
                    let m = o.scenarios_behind(&basis);
                    let rule = ThresholdRule::Outside {
                        calibration: (**o).clone(),
                        outside: outside.to_vec(),
                    };
                    (t, basis.label(), o.windows_behind(&basis), m, rule)
                }
                (o, outside) => {
                    if o.is_none() && outside.is_some() {
                        tracing::warn!(
                            "the model's calibration of `{}` has none out of the trained ranges (wavecp calibrate --out-of-range): the one in range is used, which does not hold there",
                            c.indicator
                        );
                    }
                    let n = cal.scores.len();
                    let m = cal.scenario_count();
                    let rule = ThresholdRule::InRange(cal.clone());
                    (cal.threshold(c.tolerance), "in_range".into(), n, m, rule)
                }
            };
            let named = match m {
                0 => "the windows' rule".to_string(),
                m => format!("{m} scenarios, the rule by scenario too"),
            };
            tracing::info!(
                "tolerance {} (window error, relative L2) -> {} below {t:.4e} (calibration {from}: {n} windows, {named}; risk {})",
                c.tolerance,
                c.indicator,
                cal.risk
            );
            (Some((t, from)), rule)
        }
        None if have.is_empty() => {
            tracing::warn!(
                "the model carries no calibration (wavecp calibrate): the tolerance bounds the raw `{}` value",
                c.indicator
            );
            (None, ThresholdRule::Raw)
        }
        None => {
            tracing::warn!(
                "the model's calibrations are of {}, not `{}`: the tolerance bounds the raw indicator value",
                have.join(", "),
                c.indicator
            );
            (None, ThresholdRule::Raw)
        }
    }
}

fn parts(c: &CouplingConfig, (cfg, base): (&Config, &Path), dt: f64) -> Result<Parts, DriverError> {
    let model = base.join(&c.model);
    let loaded = crate::surrogate::modelfile::load(&model).map_err(err)?;
    let meta = loaded.meta.clone();
    let zone = meta.zone.ok_or_else(|| {
        err(format!(
            "{} does not record the zone it was trained on (trained before zones were kept): retrain it",
            model.display()
        ))
    })?;
    let grid = ZoneGrid {
        x: [zone[0], zone[1]],
        y: [zone[2], zone[3]],
        nx: meta.nx,
        ny: meta.ny,
    };
    // The whole mesh, numbered as the simulations' layouts number it.
    let mesh = crate::sim::load_mesh(&cfg.mesh, base)?;
    let interp = c.interpolation.parse().map_err(err)?;
    let transfer = ZoneTransfer::with_interpolation(&mesh, grid, interp).map_err(err)?;
    let ratio = meta.frame_dt / dt;
    let stride = ratio.round() as usize;
    if stride == 0 || (ratio - stride as f64).abs() > 1e-6 * ratio {
        return Err(err(format!(
            "{} was trained on frames {:e} apart, which is {ratio} steps of this run's dt = {dt:e}, not a whole number: set time.dt to {:e} / k",
            model.display(),
            meta.frame_dt,
            meta.frame_dt
        )));
    }
    let frame_dt = stride as f64 * dt;
    let device = c.device.parse().map_err(err)?;
    let mut net = NetworkForecaster::from_loaded(loaded, &model, device, &transfer, frame_dt)
        .map_err(from_coupling)?;
    let (out_of_range, names) = match &meta.conditioning {
        Some(cond) => condition(&mut net, cond, (cfg, &mesh), (c, &model))?,
        None => (vec![], vec![]),
    };
    let trusted = c.out_of_range == "trust";
    // Only just outside (no regime) is where the calibration in range was sampled.
    let outside = (trusted && !names.is_empty()).then_some(&names[..]);
    let (threshold, rule) = calibrated(c, &meta, outside);
    if c.handback_check {
        tracing::info!(
            "hand-back check: a window is refused when handing the field to the grid and back loses {} or more{}",
            c.tolerance,
            if c.handback_budget {
                ", or when its indicator is above the threshold of what that loss leaves of the tolerance"
            } else {
                " (the loss not charged to the tolerance: coupling.handback_budget = false)"
            }
        );
    }
    let velocity = match c.velocity.as_str() {
        "two_frames" => VelocityEstimate::TwoFrames,
        "fit" => VelocityEstimate::Fit(net.t_out() + 1),
        "central4" => VelocityEstimate::Central4,
        _ => VelocityEstimate::Bdf2,
    };
    let cfg = HybridConfig {
        stride,
        // Clearly outside the trained ranges with `fe`: a tolerance of 0 accepts nothing.
        tolerance: if names.is_empty() || trusted {
            threshold.as_ref().map_or(c.tolerance, |t| t.0)
        } else {
            0.0
        },
        max_consecutive: c.max_consecutive,
        velocity,
        error_scale: match c.error_scale.as_str() {
            "run" => ErrorScale::Run,
            _ => ErrorScale::Window,
        },
        audit_every: c.audit_every,
        handback_limit: c.handback_check.then_some(c.tolerance),
        retake_velocity: (c.retake_velocity == "central4").then_some(VelocityEstimate::Central4),
    };
    Ok(Parts {
        transfer,
        net,
        cfg,
        threshold,
        out_of_range,
        estimator: fitted(&meta, &c.indicator).cloned(),
        budget: (c.handback_check && c.handback_budget).then_some(rule),
    })
}

/// Tells a model conditioned on its scenario the job's source; refused when its prior reflects
/// off another rectangle than the job's mesh. Returns the source's parameters outside the
/// model's trained ranges (warned about: what then happens is `coupling.out_of_range`), as
/// `name = value outside [lo, hi]`, and its regime ([`Conditioning::regime`]: the names of
/// those clearly outside).
///
/// [`Conditioning::regime`]: crate::surrogate::condition::Conditioning::regime
fn condition(
    net: &mut NetworkForecaster,
    cond: &crate::surrogate::condition::Conditioning,
    (cfg, mesh): (&Config, &crate::mesh::Mesh),
    (c, model): (&CouplingConfig, &Path),
) -> Result<(Vec<String>, Vec<String>), DriverError> {
    check_walls(cond, mesh.bbox(), model)?;
    let params = super::subrun::scenario(cfg)?;
    let (outside, names) = (cond.outside_training(&params), cond.regime(&params));
    net.set_scenario(params).map_err(from_coupling)?;
    if !outside.is_empty() {
        let then = if names.is_empty() {
            format!(
                "only just (no parameter more than {} half-widths past its training runs' extremes, near where they were drawn), so the calibration in range decides",
                crate::surrogate::condition::REGIME_MARGIN
            )
        } else if c.out_of_range == "fe" {
            "the FE runs every window (coupling.out_of_range = \"trust\" lets the indicator decide)"
                .into()
        } else {
            "the indicator decides (coupling.out_of_range = \"trust\")".into()
        };
        tracing::warn!(
            "the job's source lies outside what {} was trained on ({}): {then}",
            model.display(),
            outside.join(", "),
        );
    }
    Ok((outside, names))
}

/// Refuses a model whose prior reflects off another rectangle than the job's mesh, whose
/// bounding box is `b` ([`crate::mesh::Mesh::bbox`]).
pub(super) fn check_walls(
    cond: &crate::surrogate::condition::Conditioning,
    b: [f64; 4],
    model: &Path,
) -> Result<(), DriverError> {
    let Some(w) = cond.prior_walls else {
        return Ok(());
    };
    let size = (w[1] - w[0]).abs().max((w[3] - w[2]).abs());
    let off = [b[0] - w[0], b[2] - w[1], b[1] - w[2], b[3] - w[3]];
    if off.iter().any(|d| d.abs() > 1e-9 * size) {
        return Err(err(format!(
            "{}'s prior adds the reflections of the absorbing rectangle x in [{}, {}], y in [{}, {}] it was trained in; this job's mesh spans x in [{}, {}], y in [{}, {}]",
            model.display(), w[0], w[1], w[2], w[3], b[0], b[2], b[1], b[3]
        )));
    }
    Ok(())
}

/// What every rank holds of the pieces: the transfer of its own nodes, the network (rank 0
/// only), the settings, and the forecaster's frames in and out.
pub(super) struct OnRanks {
    pub transfer: ZoneTransfer,
    pub net: Option<NetworkForecaster>,
    pub cfg: HybridConfig,
    pub frames: (usize, usize),
    pub threshold: Option<(f64, String)>,
    pub out_of_range: Vec<String>,
    pub estimator: Option<ErrorModel>,
    /// [`Parts`]'s budget rule, on every rank.
    pub budget: Option<ThresholdRule>,
    /// Where the network runs (rank 0; `None` elsewhere).
    pub network_device: Option<String>,
}

impl OnRanks {
    /// What the set-up decided, into `s` as `wavecp solve` reports it: the threshold the
    /// tolerance became, the source parameters outside the trained ranges, the network's device.
    pub fn describe(&self, s: &mut HybridSummary) {
        s.indicator_threshold = self.threshold.as_ref().map(|t| t.0);
        s.indicator_calibration = self.threshold.as_ref().map(|t| t.1.clone());
        s.out_of_range = self.out_of_range.clone();
        s.network_device = self.network_device.clone();
    }
}

/// [`parts`] on rank 0, its outcome told to every rank (collective): each rank gets its
/// [`OnRanks`], or every rank rank 0's error.
pub(super) fn parts_on(
    c: &CouplingConfig,
    job: (&Config, &Path),
    sim: &Simulation<'_>,
) -> Result<OnRanks, DriverError> {
    let comm = sim.comm();
    let root = (comm.rank() == 0).then(|| parts(c, job, sim.dt()));
    type Told = (
        HybridConfig,
        usize,
        usize,
        Option<(f64, String)>,
        Vec<String>,
        Option<ErrorModel>,
        // The budget rule as JSON: its calibration's optional fields are skipped when empty,
        // which bincode cannot read back.
        Option<String>,
    );
    let mut head = match &root {
        Some(Ok(p)) => {
            let budget = (p.budget.as_ref().map(serde_json::to_string).transpose())
                .map_err(|e| format!("the hand-back budget's rule does not serialize: {e}"));
            let told: Result<Told, String> = budget.map(|b| {
                (
                    p.cfg,
                    p.net.t_in(),
                    p.net.t_out(),
                    p.threshold.clone(),
                    p.out_of_range.clone(),
                    p.estimator.clone(),
                    b,
                )
            });
            crate::comm::to_bytes(&told)
        }
        Some(Err(e)) => crate::comm::to_bytes(&Err::<Told, _>(e.to_string())),
        None => vec![],
    };
    comm.broadcast_bytes(&mut head);
    let told: Result<Told, String> =
        bincode::deserialize(&head).map_err(|e| err(format!("set-up from rank 0: {e}")))?;
    let (whole, net) = match root {
        Some(Err(e)) => return Err(e),
        Some(Ok(p)) => (Some(p.transfer), Some(p.net)),
        None => (None, None),
    };
    let network_device = net.as_ref().map(NetworkForecaster::device);
    let (cfg, t_in, t_out, threshold, out_of_range, estimator, budget) =
        told.map_err(DriverError::OtherRank)?;
    let budget = match budget {
        Some(json) => {
            Some(serde_json::from_str(&json).map_err(|e| err(format!("set-up from rank 0: {e}")))?)
        }
        None => None,
    };
    let transfer = ZoneTransfer::distribute(whole, sim.layout(), comm).map_err(err)?;
    Ok(OnRanks {
        transfer,
        net,
        cfg,
        frames: (t_in, t_out),
        threshold,
        out_of_range,
        estimator,
        budget,
        network_device,
    })
}

/// The FE-only run of the job at `step`, for `--reference` (the steps to get there are not
/// counted in its time: they were counted before the restart).
fn reference<'c>(
    (cfg, base): (&Config, &Path),
    comm: &'c dyn Comm,
    step: usize,
) -> Result<Reference<'c>, DriverError> {
    let (mut sim, _) = crate::sim::from_job(cfg, base, comm)?;
    sim.advance(step);
    Ok(Reference {
        sim,
        wall: Duration::ZERO,
        max_diff: 0.0,
        max_ref: 0.0,
    })
}

/// The hybrid loop of `c` over `sim` to step `last`.
fn drive<'c>(
    c: &CouplingConfig,
    job: (&Config, &Path),
    (sim, last): (&mut Simulation<'c>, usize),
    (extras, reference_on, restart): (&SharedExtras, bool, bool),
    started: &mut bool,
    after: &mut AfterStep<'_>,
) -> Result<(HybridSummary, bool), DriverError> {
    let mut parts = parts_on(c, job, sim)?;
    let comm = sim.comm();
    let saved = std::mem::take(&mut lock(extras).state);
    let saved: Option<Saved> = if restart && !saved.is_empty() {
        Some(bincode::deserialize(&saved).map_err(|e| err(format!("checkpoint: {e}")))?)
    } else {
        None
    };
    if let Some(s) = &saved {
        if s.reference.is_some() != reference_on {
            return Err(err(format!(
                "the checkpoint was written by a run {} --reference; continue it the same way",
                if reference_on { "without" } else { "with" }
            )));
        }
    }
    let mut ctx = Ctx {
        comm: sim.comm(),
        extras: extras.clone(),
        writes: !job.0.output.path.as_os_str().is_empty(),
        frame_clock: Default::default(),
        names: extra_names(reference_on),
        every: job.0.output.every,
        last,
        reference: None,
        landed_at: None,
        score: None,
        hybrid: HybridState::default(),
        observed: Duration::ZERO,
    };
    if reference_on {
        let mut r = reference(job, comm, sim.steps_done())?;
        if let Some((d, m)) = saved.as_ref().and_then(|s| s.reference) {
            (r.max_diff, r.max_ref) = (d, m);
        }
        ctx.reference = Some(r);
    }
    let net = OnRankZero::new(parts.net.as_mut(), parts.frames, comm);
    let ind = indicator(&c.indicator, parts.estimator.as_ref())?;
    let at = parts.budget.as_ref().map(|r| move |b| r.at(b));
    let mut h = Hybrid::new(sim, &parts.transfer, net, ind, parts.cfg).map_err(from_coupling)?;
    if let Some(at) = &at {
        h = h.with_handback_budget(at);
    }
    if let Some(s) = saved {
        (ctx.landed_at, ctx.score) = (s.landed_at, s.score);
        h = h.resume(s.hybrid).map_err(from_coupling)?;
    }
    let mut observed = Observed(after);
    *started = true;
    let (mut summary, stopped) = h
        .run_with(last, &mut ctx, &mut [&mut observed])
        .map_err(from_coupling)?;
    summary.wall_s = (summary.wall_s - ctx.observed.as_secs_f64()).max(0.0);
    parts.describe(&mut summary);
    if parts.threshold.is_some() {
        let above = summary
            .audits
            .iter()
            .filter(|a| a.scaled_error > c.tolerance);
        summary.audits_above_tolerance = Some(above.count());
    }
    if let Some(r) = &ctx.reference {
        summary.reference_wall_s = Some(r.wall.as_secs_f64());
        summary.speedup = Some(r.wall.as_secs_f64() / summary.wall_s.max(1e-12));
        summary.max_rel_l2_error = Some(if r.max_ref > 0.0 {
            r.max_diff / r.max_ref
        } else {
            r.max_diff
        });
    }
    Ok((summary, stopped))
}

/// Runs a job with a `[coupling]` section (collective): the job's setup,
/// output, checkpoints and progress as `wavecp solve` has them, the time loop hybrid. With
/// `opts.reference` the FE-only run advances beside it. Returns the run's summary and the
/// hybrid loop's.
pub fn run_hybrid(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    comm: &dyn Comm,
) -> Result<(RunSummary, HybridSummary), DriverError> {
    let c = cfg
        .coupling
        .as_ref()
        .ok_or_else(|| err("the job has no [coupling] section"))?;
    let reference_on = opts.reference;
    let opts = RunOptions {
        extras: extra_names(reference_on),
        ..opts.clone()
    };
    // The initial output step: the hybrid and the reference are the same FE state there.
    let initial = {
        let by_name = |f: &String| match f.as_str() {
            "u_ref" => ExtraField::SameAsU,
            _ => ExtraField::Constant(0.0),
        };
        ExtraStep {
            step: 0,
            fields: opts.extras.fields.iter().map(by_name).collect(),
            values: vec![f64::NAN],
        }
    };
    let extras: SharedExtras = Arc::new(Mutex::new(Extras {
        at: Some(initial),
        ..Extras::default()
    }));
    let mut hybrid = None;
    let restart = opts.restart;
    let mut started = false;
    let mut run = |sim: &mut Simulation<'_>, last: usize, after: &mut AfterStep<'_>| {
        let flags = (&extras, reference_on, restart);
        let (s, stopped) = drive(c, (cfg, base), (sim, last), flags, &mut started, after)?;
        hybrid = Some(s);
        Ok(stopped)
    };
    let coupled = Coupled {
        drive: &mut run,
        extras: extras.clone(),
    };
    let summary = crate::sim::run_on_with(cfg, base, &opts, comm, Some(coupled));
    if summary.is_err() && !started && !restart && comm.rank() == 0 {
        discard_running(&cfg.output.path);
    }
    let hybrid = hybrid.ok_or_else(|| err("the hybrid loop did not run"));
    Ok((summary?, hybrid?))
}

/// Removes the running output (`NAME.running.*`) of a fresh run whose coupling failed to set
/// up: it holds the initial step only, and left behind it reads as a run to continue.
fn discard_running(out: &Path) {
    use crate::output::target::{running_path, sibling};
    if out.as_os_str().is_empty() {
        return;
    }
    let run = running_path(out);
    let tables = ["receivers.csv", "energy.csv"].map(|t| sibling(&run, t));
    for p in tables.into_iter().chain([run.with_extension("xdmf"), run]) {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("could not remove {}: {e}", p.display());
            }
        }
    }
}
