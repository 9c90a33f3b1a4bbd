//! Hybrid stepping: windows of FE steps replaced by a forecaster's frames when an error
//! indicator trusts them, the FE taking the window back when it does not.
//!
//! The FE run records a frame on the zone grid every `stride` steps. After a warm-up of `t_in`
//! frames by the FE, each window of `t_out` frames goes: forecast from the last `t_in` frames;
//! indicator; **accept** (indicator below the tolerance, fewer than `max_consecutive`
//! accepted in a row, and with [`HybridConfig::handback_limit`] a hand-back loss below it,
//! with [`Hybrid::with_handback_budget`] the indicator below what that loss leaves) →
//! the last forecast frame goes back to the mesh with a velocity from the last frames
//! ([`super::handback`]) and the FE continues from there, `t_out · stride` steps later;
//! **reject** → the FE runs the window itself, from its state untouched by the try. A
//! tolerance of 0 rejects every window, which is then the FE-only run bit for bit.
//!
//! On several ranks each rank transfers its own nodes and every rank holds the grid frames;
//! the network runs on rank 0 ([`OnRankZero`]) and its forecast is broadcast, so decisions
//! and fields are the same bits on any rank count.

use super::handback::VelocityEstimate;
pub use super::indicators::{
    EnergyBalance, EnergyChange, FeProbe, FeProbeShort, Indicator, Residual, WindowView,
};
use super::transfer::ZoneTransfer;
use super::CouplingError;
use crate::sim::{Control, Observer, Simulation};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

mod forecaster;
mod landing;

pub use forecaster::{Forecaster, OnRankZero};

/// How the hybrid run goes.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct HybridConfig {
    /// FE steps between frames (the dataset's `frames.stride`).
    pub stride: usize,
    /// A window is accepted when its indicator is below this; 0 accepts none.
    pub tolerance: f64,
    /// At most this many accepted windows in a row, then the FE runs one (0: no cap).
    pub max_consecutive: usize,
    pub velocity: VelocityEstimate,
    /// What the indicator's window error is relative to.
    pub error_scale: ErrorScale,
    /// Every this many accepted windows, the FE also runs the window (from the same start,
    /// unobserved, then put back) to measure the forecast's true error ([`Audit`]); the run
    /// goes on from the forecast as it would have. 0: no audits.
    pub audit_every: usize,
    /// `Some(limit)`: a window the indicator trusts is accepted only if the hand-back's own
    /// loss ([`super::handback::loss`], the error scale applied) is below `limit` too — what
    /// the grid cannot hold of the FE field, which no forecast can bring back and no grid
    /// indicator sees. Measured on the state the window starts from when the FE computed it,
    /// else (after accepted windows: a handed-back state holds only what the grid holds) the
    /// last measured value stands.
    #[serde(default)]
    pub handback_limit: Option<f64>,
    /// `Some(est)`: when the FE takes a window right after a hand-back whose velocity has no
    /// lag (`bdf2`, `two_frames`, `fit`), that velocity is formed again by `est` (a central
    /// difference) around the frame handed back, from the frames before it and the first of
    /// the refused window's forecast, unless that forecast jumps away from the frames before
    /// it (see `landing::seam`); also before the FE runs what is left of the run after the
    /// last window. `None`: the FE carries the one-sided velocity on.
    #[serde(default)]
    pub retake_velocity: Option<VelocityEstimate>,
}

/// An accepted window the FE re-ran to measure the forecast's true error.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Audit {
    /// The window's number (from 0, among all windows of the run).
    pub window: usize,
    /// Its indicator value, in the tolerance's unit (the error scale applied).
    pub score: f64,
    /// The relative L2 error of the forecast over the window's frames on the grid against
    /// the FE's (the calibration's unit), and the same in the tolerance's unit.
    pub error: f64,
    pub scaled_error: f64,
}

/// What a window's error is measured against when it is compared with the tolerance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorScale {
    /// The window's own field (the calibration's unit): a quiet window after the wave has
    /// left is judged as strictly as the loudest.
    #[default]
    Window,
    /// The largest field of the run so far: the indicator's value is scaled by the largest
    /// of the window's input frames over the largest frame the FE has recorded (both L2 on
    /// the grid), so the tolerance bounds the window's error in the unit of the run's
    /// `max_rel_l2_error` (whose denominator, the run's largest field, can only grow). Only
    /// as good as the indicator's calibration on quiet windows: see docs/coupling.md.
    Run,
}

/// What a hybrid run did and where its time went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HybridSummary {
    pub windows_accepted: usize,
    pub windows_rejected: usize,
    /// Steps from the hybrid's start to where it stopped (a restarted run counts from the
    /// original start, as the window counts do).
    pub steps_total: usize,
    pub steps_surrogate: usize,
    /// Time of the hybrid stepping (FE, inference, transfers, indicator, hand-back), without
    /// what its observers spent (output, checkpoints, a reference run), in this invocation.
    pub wall_s: f64,
    /// Time in the FE kernel for the steps the FE ran (not the indicator's probes).
    pub fe_s: f64,
    pub inference_s: f64,
    pub transfer_s: f64,
    pub indicator_s: f64,
    /// Time the audits' FE runs took (not in `fe_s`).
    pub audit_s: f64,
    /// The audited windows, in order (`coupling.audit_every`).
    pub audits: Vec<Audit>,
    /// With a calibrated indicator: how many audited windows' true error (in the
    /// tolerance's unit) was above the tolerance — the calibration's promise broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audits_above_tolerance: Option<usize>,
    /// With `--reference`: the time the FE-only run took for the same steps, its ratio to
    /// `wall_s`, and max over output steps of ‖u − u_ref‖₂ / max over output steps of ‖u_ref‖₂.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_wall_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rel_l2_error: Option<f64>,
    /// With a model calibrated for the indicator: the indicator value the tolerance (a window
    /// error) became; windows scoring below it are accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicator_threshold: Option<f64>,
    /// Which of the model's calibrations gave the threshold: `in_range`, or out of the
    /// trained ranges `out_of_range:<regime>` (the run's own parameters outside, e.g.
    /// `frequency`), `out_of_range:smallest:pooled,<regimes>` (none of its own; the smallest
    /// of those sharing part of them and the pooled one), `out_of_range:pooled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator_calibration: Option<String>,
    /// The job's scenario parameters outside a conditioned model's trained ranges
    /// (`coupling.out_of_range`), as `name = value outside [lo, hi]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub out_of_range: Vec<String>,
    /// Where the network ran (`coupling.device`): `cpu`, or the GPU's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_device: Option<String>,
    /// Each window's indicator value (none where it was not tried: a tolerance of 0, or the
    /// cap on accepted windows in a row) and whether it was accepted, in order.
    pub windows: Vec<(Option<f64>, bool)>,
    /// With [`HybridConfig::handback_limit`]: the hand-back losses measured (window, loss in
    /// the tolerance's unit), and how many windows the indicator trusted that they refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub handback_losses: Vec<(usize, f64)>,
    pub handback_refused: usize,
    /// With [`HybridConfig::retake_velocity`]: how many times the FE took over from a
    /// hand-back with its velocity formed again, and how many times it kept the one-sided
    /// velocity because the refused forecast's start was off the frames before it.
    pub retakes: usize,
    pub retakes_declined: usize,
}

/// Everything a hybrid run needs besides the simulation's own state to continue bit for bit:
/// what a checkpoint of a hybrid run keeps.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HybridState {
    /// The step of the first frame: frames lie every `stride` steps from it, windows every
    /// `t_out · stride` steps from its `t_in`-th frame.
    pub origin: usize,
    /// The latest frames on the zone grid, oldest first, and the step of the newest.
    pub frames: Vec<Vec<f64>>,
    pub newest: usize,
    /// Accepted windows in a row up to now.
    pub in_a_row: usize,
    pub windows: Vec<(Option<f64>, bool)>,
    pub steps_surrogate: usize,
    /// The largest L2 norm of a frame the FE recorded so far, for
    /// [`ErrorScale::Run`].
    pub run_max: f64,
    pub audits: Vec<Audit>,
    /// [`HybridSummary::handback_losses`] and [`HybridSummary::handback_refused`].
    #[serde(default)]
    pub handback_losses: Vec<(usize, f64)>,
    #[serde(default)]
    pub handback_refused: usize,
    /// [`HybridSummary::retakes`] and [`HybridSummary::retakes_declined`].
    #[serde(default)]
    pub retakes: usize,
    #[serde(default)]
    pub retakes_declined: usize,
    /// What the state was made with (checked on resuming): FE steps between frames, frames
    /// a forecast reads, grid points.
    pub stride: usize,
    pub t_in: usize,
    pub points: usize,
}

/// What the caller of [`Hybrid::run_with`] shares with its observers, told what the loop
/// does: a checkpoint needs the state, an output step who produced it.
pub trait HybridHooks {
    /// The state changed (a frame recorded, a window decided); called before the observers
    /// see the step it changed at.
    fn state_changed(&mut self, _state: &HybridState) {}
    /// The window of steps `steps` was decided: its indicator value (none when not tried)
    /// and whether it was accepted (the next observed step is then `steps.end`).
    fn window(&mut self, _steps: std::ops::Range<usize>, _score: Option<f64>, _accepted: bool) {}
    /// Whether the forecast frame at `step` inside an accepted window is wanted on the mesh
    /// ([`HybridHooks::forecast_frame`]; an output step the simulation never stands at).
    fn wants_frame(&self, _step: usize) -> bool {
        false
    }
    /// The forecast frame at `step` (time `time`) inside an accepted window, on the mesh
    /// (this rank's owned values), before the hand-back lands after it.
    fn forecast_frame(
        &mut self,
        _step: usize,
        _time: f64,
        _u: Vec<f64>,
    ) -> Result<(), CouplingError> {
        Ok(())
    }
}

impl HybridHooks for () {}

/// A hybrid run over a simulation.
pub struct Hybrid<'s, 'c, F: Forecaster, I: Indicator> {
    sim: &'s mut Simulation<'c>,
    transfer: &'s ZoneTransfer,
    forecaster: F,
    indicator: I,
    cfg: HybridConfig,
    /// The frames as a deque (the state's `frames` is filled only when it is handed out).
    frames: VecDeque<Vec<f64>>,
    st: HybridState,
    started: bool,
    times: Times,
    /// Mesh fields reused by every hand-back.
    scratch: (Vec<f64>, Vec<f64>),
    /// [`Hybrid::with_handback_budget`]'s threshold for a tolerance.
    budget: Option<&'s dyn Fn(f64) -> f64>,
}

/// Where a hybrid run's time goes.
#[derive(Debug, Default)]
struct Times {
    fe: Duration,
    inference: Duration,
    transfer: Duration,
    indicator: Duration,
    audit: Duration,
}

impl<'s, 'c, F: Forecaster, I: Indicator> Hybrid<'s, 'c, F, I> {
    /// Checks that the pieces fit: one rank, a transfer over the whole mesh, a forecaster that
    /// reads at least two frames (the indicator and the velocity need them), a stride.
    pub fn new(
        sim: &'s mut Simulation<'c>,
        transfer: &'s ZoneTransfer,
        forecaster: F,
        indicator: I,
        cfg: HybridConfig,
    ) -> Result<Self, CouplingError> {
        let bad = |m: String| Err(CouplingError::Setup(m));
        if !transfer.covers_mesh() || transfer.field_len() != sim.u().len() {
            let (covered, nodes) = transfer.mesh_coverage();
            return bad(format!(
                "the zone grid covers {covered} of the mesh's {nodes} nodes (fields of {} values on this rank, the simulation's have {}); the surrogate replaces steps of the whole model, so its zone must cover the mesh",
                transfer.field_len(),
                sim.u().len()
            ));
        }
        if forecaster.t_in() < 2 || forecaster.t_out() == 0 {
            return bad(format!(
                "a forecaster reading {} frames and giving {}: hybrid stepping needs at least 2 in and 1 out",
                forecaster.t_in(),
                forecaster.t_out()
            ));
        }
        if forecaster.t_out() <= cfg.velocity.lag() {
            return bad(format!(
                "a forecast of {} frames cannot be handed back {} frames before its end (the velocity estimate's lag): take a model with more output frames or another velocity",
                forecaster.t_out(),
                cfg.velocity.lag()
            ));
        }
        if cfg.stride == 0 || cfg.tolerance.is_nan() || cfg.tolerance < 0.0 {
            return bad(format!(
                "stride {} and tolerance {}: the stride must be at least 1 and the tolerance a number >= 0",
                cfg.stride, cfg.tolerance
            ));
        }
        let st = HybridState {
            origin: sim.steps_done(),
            stride: cfg.stride,
            t_in: forecaster.t_in(),
            points: transfer.points(),
            ..HybridState::default()
        };
        Ok(Hybrid {
            sim,
            transfer,
            forecaster,
            indicator,
            cfg,
            frames: VecDeque::new(),
            st,
            started: false,
            times: Times::default(),
            scratch: Default::default(),
            budget: None,
        })
    }

    /// Charges the hand-back's loss to the window that incurs it (with
    /// [`HybridConfig::handback_limit`]): a window the indicator trusts that starts from the
    /// FE's own state, where the loss is measured, is accepted only if its value is also below
    /// `threshold_at(limit − loss)`, the threshold of what the loss leaves of the tolerance
    /// (`threshold_at(limit)` being [`HybridConfig::tolerance`]). The forecast's error and the
    /// grid's loss add up in the field handed back; bounding each by the tolerance alone lets
    /// their sum reach twice it. The windows after it start from what the grid holds and are
    /// not charged again: refusing one of them does not bring the lost part back (the FE then
    /// runs on from the handed-back field), and measured it made runs worse (docs/coupling.md).
    /// `threshold_at` must be the same function on every rank.
    pub fn with_handback_budget(mut self, threshold_at: &'s dyn Fn(f64) -> f64) -> Self {
        self.budget = Some(threshold_at);
        self
    }

    /// Continues from `state` (a checkpoint's), the simulation being restored to the step it
    /// was taken at: refused when it was made with another stride, forecaster input or grid,
    /// or does not fit the simulation's step.
    pub fn resume(mut self, state: HybridState) -> Result<Self, CouplingError> {
        let keep = self.keep();
        let s = self.sim.steps_done();
        let fits = state.stride == self.st.stride
            && state.t_in == self.st.t_in
            && state.points == self.st.points
            && state.frames.iter().all(|f| f.len() == state.points)
            && !state.frames.is_empty()
            && state.frames.len() <= keep
            && state.origin <= state.newest
            && state.newest <= s;
        if !fits {
            return Err(CouplingError::Setup(format!(
                "the checkpoint's hybrid state (frames {} steps apart, {} read, {} grid points, {} kept up to step {}) does not fit this run (frames {} steps apart, {} read, {} grid points, at step {s})",
                state.stride,
                state.t_in,
                state.points,
                state.frames.len(),
                state.newest,
                self.st.stride,
                self.st.t_in,
                self.st.points
            )));
        }
        self.frames = state.frames.iter().cloned().collect();
        self.st = HybridState {
            frames: vec![],
            ..state
        };
        self.started = true;
        Ok(self)
    }

    /// The state as a checkpoint keeps it.
    pub fn state(&self) -> HybridState {
        HybridState {
            frames: self.frames.iter().cloned().collect(),
            ..self.st.clone()
        }
    }

    /// The simulation it steps (where the run stands).
    pub fn sim(&self) -> &Simulation<'c> {
        self.sim
    }

    fn keep(&self) -> usize {
        // Four for the retake's check of the refused forecast's start.
        self.forecaster.t_in().max(4)
    }

    /// Advances to step `last`: the FE warm-up, then windows; the FE runs what is left when
    /// less than a window remains.
    pub fn run(&mut self, last: usize) -> Result<HybridSummary, CouplingError> {
        Ok(self.run_with(last, &mut (), &mut [])?.0)
    }

    /// [`Hybrid::run`] with observers, as [`Simulation::run`] calls them: after every FE step,
    /// and once after each hand-back (at the step it lands on; the steps of an accepted
    /// window are not observed). Returns the summary and whether an observer stopped the run.
    ///
    /// The schedule depends only on the steps, so a run stopped at any step and continued
    /// with [`Hybrid::resume`] from its [`Hybrid::state`] takes the same path: frames every
    /// `stride` steps from the origin, windows every `t_out · stride` steps from its
    /// `t_in`-th frame.
    pub fn run_with<C: HybridHooks>(
        &mut self,
        last: usize,
        shared: &mut C,
        observers: &mut [&mut dyn Observer<C>],
    ) -> Result<(HybridSummary, bool), CouplingError> {
        let wall = Instant::now();
        let (stride, t_in, t_out) = (
            self.cfg.stride,
            self.forecaster.t_in(),
            self.forecaster.t_out(),
        );
        let window = t_out * stride;
        if !self.started {
            self.started = true;
            self.st.origin = self.sim.steps_done();
            self.record(shared)?;
        }
        let first_window = self.first_window(t_in);
        let mut stopped = false;
        loop {
            let s = self.sim.steps_done();
            if (s - self.st.origin).is_multiple_of(stride) && self.st.newest < s {
                // A run stopped at a frame's step before recording it.
                self.record(shared)?;
            }
            let frame_ends = s + stride - (s - self.st.origin) % stride;
            let on_window = s >= first_window && (s - first_window).is_multiple_of(window);
            if !on_window {
                // Warm-up, or inside a window the FE runs: on to the next frame.
                if frame_ends > last {
                    break;
                }
                stopped = self.fe_to(frame_ends, shared, observers)?;
            } else {
                if s + window > last {
                    break;
                }
                stopped = self.window(t_in, window, shared, observers)?;
            }
            if stopped {
                break;
            }
        }
        if !stopped {
            if self.sim.steps_done() < last {
                self.retake(t_in, window, None)?;
                shared.state_changed(&self.state());
            }
            stopped = self.fe_to(last, shared, observers)?;
        }
        let windows = &self.st.windows;
        let accepted = windows.iter().filter(|w| w.1).count();
        let secs = |d: Duration| d.as_secs_f64();
        let s = HybridSummary {
            windows_accepted: accepted,
            windows_rejected: windows.len() - accepted,
            steps_total: self.sim.steps_done() - self.st.origin,
            steps_surrogate: self.st.steps_surrogate,
            wall_s: wall.elapsed().as_secs_f64(),
            fe_s: secs(self.times.fe),
            inference_s: secs(self.times.inference),
            transfer_s: secs(self.times.transfer),
            indicator_s: secs(self.times.indicator),
            audit_s: secs(self.times.audit),
            audits: self.st.audits.clone(),
            windows: windows.clone(),
            handback_losses: self.st.handback_losses.clone(),
            handback_refused: self.st.handback_refused,
            retakes: self.st.retakes,
            retakes_declined: self.st.retakes_declined,
            ..HybridSummary::default()
        };
        Ok((s, stopped))
    }

    /// Decides the window starting at the current step and runs it (the hand-back, or its
    /// first frame by the FE: the rest follow frame by frame); whether an observer stopped
    /// the run.
    fn window<C: HybridHooks>(
        &mut self,
        t_in: usize,
        window: usize,
        shared: &mut C,
        observers: &mut [&mut dyn Observer<C>],
    ) -> Result<bool, CouplingError> {
        let start = self.sim.steps_done();
        let capped = self.cfg.max_consecutive > 0 && self.st.in_a_row >= self.cfg.max_consecutive;
        // A tolerance of 0 accepts nothing: the forecast and the indicator are not spent.
        let tried = if capped || self.cfg.tolerance == 0.0 {
            None
        } else {
            Some(self.try_window(t_in)?)
        };
        let score = tried.as_ref().map(|t| t.0);
        let trusted = tried
            .as_ref()
            .filter(|(score, _, _)| *score < self.cfg.tolerance);
        let accepted = match (trusted, self.cfg.handback_limit) {
            (Some(&(score, _, factor)), Some(limit))
                if !self.hands_back(score, factor, limit)? =>
            {
                self.st.handback_refused += 1;
                false
            }
            (t, _) => t.is_some(),
        };
        if let (true, Some((score, forecast, factor))) = (accepted, &tried) {
            let n = self.st.windows.iter().filter(|w| w.1).count() + 1;
            if self.cfg.audit_every > 0 && n.is_multiple_of(self.cfg.audit_every) {
                self.audit(forecast, *score, *factor)?;
            }
        }
        if !accepted {
            // Before the window is counted: whether the FE takes it from a hand-back reads
            // the windows so far.
            self.retake(t_in, window, tried.as_ref().map(|t| &t.1[..]))?;
        }
        self.st.windows.push((score, accepted));
        // The surrogate's part: the window, less the frames a central velocity reads after the
        // frame handed back (the FE then runs them, frame by frame).
        let lands = window - self.cfg.velocity.lag() * self.cfg.stride;
        shared.window(start..start + lands, score, accepted);
        match tried.filter(|_| accepted) {
            Some((_, forecast, _)) => {
                self.frames_inside(start, &forecast, shared)?;
                self.hand_back(forecast, lands)?;
                self.st.steps_surrogate += lands;
                self.st.in_a_row += 1;
                shared.state_changed(&self.state());
                let mut ctl = Control::default();
                for o in observers.iter_mut() {
                    o.after_step(self.sim, shared, &mut ctl)?;
                }
                Ok(ctl.stop)
            }
            None => {
                self.st.in_a_row = 0;
                shared.state_changed(&self.state());
                let next = start + self.cfg.stride;
                self.fe_to(next, shared, observers)
            }
        }
    }

    /// The forecast frames before the last, on the mesh, for the steps the caller wants (output
    /// work: in `wall_s`, not in `transfer_s`).
    fn frames_inside<C: HybridHooks>(
        &mut self,
        start: usize,
        forecast: &[Vec<f64>],
        shared: &mut C,
    ) -> Result<(), CouplingError> {
        let inside = forecast.len() - 1 - self.cfg.velocity.lag();
        for (k, f) in forecast.iter().enumerate().take(inside) {
            let step = start + (k + 1) * self.cfg.stride;
            if shared.wants_frame(step) {
                let mut u = self.sim.u().to_vec();
                self.transfer.to_mesh(f, &mut u)?;
                shared.forecast_frame(step, step as f64 * self.sim.dt(), u)?;
            }
        }
        Ok(())
    }

    /// The FE (observed step by step) to step `target`, recording the frame there when it is
    /// a frame's step; whether an observer stopped the run (the frame is then recorded when
    /// the run resumes).
    fn fe_to<C: HybridHooks>(
        &mut self,
        target: usize,
        shared: &mut C,
        observers: &mut [&mut dyn Observer<C>],
    ) -> Result<bool, CouplingError> {
        let c0 = self.sim.compute_time();
        let stopped = self.sim.run(target, shared, observers)?;
        self.times.fe += self.sim.compute_time().saturating_sub(c0);
        let s = self.sim.steps_done();
        if !stopped && (s - self.st.origin).is_multiple_of(self.cfg.stride) && self.st.newest < s {
            self.record(shared)?;
        }
        Ok(stopped)
    }

    /// The current field on the grid, appended to the frames (only as many kept as a window
    /// and the velocity need).
    fn record<C: HybridHooks>(&mut self, shared: &mut C) -> Result<(), CouplingError> {
        let t = Instant::now();
        let mut g = vec![0.0; self.transfer.points()];
        self.transfer
            .to_grid_on(self.sim.u(), &mut g, self.sim.comm())?;
        // Only the FE's frames set the run's scale: a bad forecast must not make the next
        // windows' errors look smaller.
        self.st.run_max = self.st.run_max.max(l2(&g));
        self.push(g);
        self.st.newest = self.sim.steps_done();
        self.times.transfer += t.elapsed();
        shared.state_changed(&self.state());
        Ok(())
    }

    fn push(&mut self, g: Vec<f64>) {
        self.frames.push_back(g);
        let keep = self.keep();
        while self.frames.len() > keep {
            self.frames.pop_front();
        }
    }

    /// The forecast of the next window, its indicator value in the tolerance's unit, and the
    /// error scale's factor.
    fn try_window(&mut self, t_in: usize) -> Result<(f64, Vec<Vec<f64>>, f64), CouplingError> {
        let forecast = self.forecast(t_in)?;
        let kept: Vec<&[f64]> = self.frames.iter().map(|f| &f[..]).collect();
        let past = &kept[kept.len() - t_in..];
        let t = Instant::now();
        let score = self.indicator.score(WindowView {
            sim: &mut *self.sim,
            transfer: self.transfer,
            past: &kept,
            forecast: &forecast,
            stride: self.cfg.stride,
            reads_forecast: self.st.in_a_row > 0,
        })?;
        self.times.indicator += t.elapsed();
        let factor = self.scale(past);
        Ok((score * factor, forecast, factor))
    }

    /// Whether a window the indicator trusts (its value `score`) may be handed back under the
    /// hand-back limit: its loss below `limit`, and with a budget, where the loss was
    /// measured (the window starts from the FE's own state), its value below the threshold
    /// of what the loss leaves.
    fn hands_back(&mut self, score: f64, factor: f64, limit: f64) -> Result<bool, CouplingError> {
        let (loss, measured_here) = self.handback_loss(factor)?;
        if loss >= limit {
            return Ok(false);
        }
        let Some(at) = self.budget.filter(|_| measured_here) else {
            return Ok(true);
        };
        let t = Instant::now();
        let threshold = at(limit - loss);
        self.times.indicator += t.elapsed();
        tracing::debug!(
            "window {}: hand-back loss {loss:.4e} leaves {:.4e} of the tolerance, threshold {threshold:.4e}, indicator {score:.4e}",
            self.st.windows.len(),
            limit - loss
        );
        Ok(score < threshold)
    }

    /// The hand-back's loss in the tolerance's unit (`factor`: the window's error scale),
    /// measured when the FE computed the state the window starts from; else the last one
    /// measured stands, as a state handed back would show no loss whatever the field lost.
    /// Also whether it was measured here.
    fn handback_loss(&mut self, factor: f64) -> Result<(f64, bool), CouplingError> {
        let own = self.st.in_a_row == 0 && self.st.newest == self.sim.steps_done();
        if let (false, Some(&(_, l))) = (own, self.st.handback_losses.last()) {
            return Ok((l, false));
        }
        let t = Instant::now();
        let g = self
            .frames
            .back()
            .ok_or_else(|| CouplingError::Setup("no frame recorded".into()))?;
        let loss = super::handback::loss(self.transfer, self.sim.u(), g, self.sim.comm())?;
        self.st
            .handback_losses
            .push((self.st.windows.len(), loss * factor));
        self.times.indicator += t.elapsed();
        Ok((loss * factor, true))
    }

    /// Runs the FE over the window the forecast covers, from the current state, and records
    /// the forecast's true error; the state is put back.
    fn audit(
        &mut self,
        forecast: &[Vec<f64>],
        score: f64,
        factor: f64,
    ) -> Result<(), CouplingError> {
        let t = Instant::now();
        let saved = self.sim.state();
        let mut truth = Vec::with_capacity(forecast.len());
        for _ in forecast {
            self.sim.advance(self.cfg.stride);
            let mut g = vec![0.0; self.transfer.points()];
            self.transfer
                .to_grid_on(self.sim.u(), &mut g, self.sim.comm())?;
            truth.push(g);
        }
        self.sim.restore(&saved)?;
        let error = rel_l2(forecast, &truth);
        let a = Audit {
            window: self.st.windows.len(),
            score,
            error,
            scaled_error: error * factor,
        };
        tracing::info!(
            "audit of window {}: indicator {:.3e}, true error {:.3e} ({:.3e} in the tolerance's unit)",
            a.window,
            a.score,
            a.error,
            a.scaled_error
        );
        self.st.audits.push(a);
        self.times.audit += t.elapsed();
        Ok(())
    }

    /// The factor from the window's error scale to the configured one: 1, or the largest
    /// input frame against the largest frame the FE recorded so far (≤ 1).
    fn scale(&self, past: &[&[f64]]) -> f64 {
        match self.cfg.error_scale {
            ErrorScale::Window => 1.0,
            ErrorScale::Run => {
                let here = past.iter().map(|f| l2(f)).fold(0.0, f64::max);
                if self.st.run_max > 0.0 {
                    (here / self.st.run_max).min(1.0)
                } else {
                    1.0
                }
            }
        }
    }
}

fn l2(f: &[f64]) -> f64 {
    f.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Relative L2 difference of two frame sequences.
pub fn rel_l2(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let (mut d, mut r) = (0.0, 0.0);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        d += (x - y) * (x - y);
        r += y * y;
    }
    (d / r.max(f64::MIN_POSITIVE)).sqrt()
}
