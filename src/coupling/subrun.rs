//! `[coupling] mode = "submodel"` (issue 19): the FE submodel of the model's zone runs alone,
//! driven by the boundary values the network forecasts.
//!
//! The run: the zone cut from the job's mesh ([`restrict`]); a warm-up of `t_in` frames with the
//! interface at rest (the job's sources must stay outside the zone long enough: the network's
//! dataset draws them so); then windows of `t_out` frames: the network reads the submodel's own
//! last `t_in` frames on the zone grid (and the scenario, for a conditioned model), its
//! forecast is sampled at the interface nodes ([`GridSampler`]) and appended to the [`Trace`],
//! and the submodel steps through the window with its interface interpolated in time. The
//! interior is the FE's: the forecast's interior frames only give the window's **indicator**,
//! how far the FE's frames drift from the network's (both on the grid, over the largest frame so
//! far), which is large when the boundary forecast and the physics it drives disagree.
//!
//! With `--reference` the whole model runs beside it (timed on its own: the cost ratio is its
//! wall time over the submodel's, inference and transfers included) and an **oracle**
//! submodel, fed the whole model's own interface values at the frame times, measures what the
//! time interpolation alone costs.

use super::hybrid::Forecaster;
use super::network::NetworkForecaster;
use super::solve::{err, from_coupling};
use super::submodel::{restrict, SubProblem, Submodel, TimeInterp, Trace};
use super::transfer::{GridSampler, ZoneGrid, ZoneTransfer};
use super::CouplingError;
use crate::comm::Comm;
use crate::config::Config;
use crate::output::StepExtras;
use crate::output::VtkHdfWriter;
use crate::sim::{DriverError, Simulation};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a submodel run is asked for.
#[derive(Debug, Clone, Default)]
pub struct SubmodelOptions {
    /// Run the whole model beside it, compare on the zone, run the oracle.
    pub reference: bool,
    /// A bar on a terminal (log lines in a batch log either way).
    pub progress: bool,
    /// Continue from the job's checkpoint (`checkpoint.path`) when it exists.
    pub restart: bool,
    /// Testing aid: stop (as a signal would, after a checkpoint) after this many windows.
    pub stop_after_windows: Option<usize>,
    /// Install SIGTERM / SIGUSR1 handlers (checkpoint and stop after the current window).
    pub signals: bool,
}

/// What a submodel run reports (`--json`: the `submodel` object).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubmodelSummary {
    /// Forecast windows (after the warm-up).
    pub windows: usize,
    pub t_in: usize,
    pub t_out: usize,
    /// Steps a frame, the step, the steps run.
    pub stride: usize,
    pub dt: f64,
    pub steps: usize,
    pub outer_nodes: usize,
    pub submodel_nodes: usize,
    pub interface_nodes: usize,
    pub time_interpolation: TimeInterp,
    /// The submodel's wall time: FE steps, inference and transfers (output excluded).
    pub wall_s: f64,
    pub fe_s: f64,
    pub inference_s: f64,
    pub transfer_s: f64,
    /// Per window: max over its frames of ‖g_FE − g_net‖₂ (on the grid: the FE's frames against
    /// the network's forecast of them) / the run's largest ‖g_FE‖₂, the unit of
    /// `max_rel_l2_error`. The output file's `indicator` is the numerator, the latest window's.
    pub indicator: Vec<f64>,
    pub indicator_max: f64,
    /// Windows whose indicator exceeds `coupling.tolerance`.
    pub windows_above_tolerance: usize,
    /// With `--reference`: the whole model's wall time and the ratio of the two.
    pub reference_wall_s: Option<f64>,
    pub cost_ratio: Option<f64>,
    /// Max over frames of ‖u_sub − u_full‖₂ on the zone's nodes / max ‖u_full‖₂ there.
    pub max_rel_l2_error: Option<f64>,
    /// Per window: max over its frames of ‖u_sub − u_full‖₂ / the run's max ‖u_full‖₂ (their
    /// largest is `max_rel_l2_error`).
    pub window_errors: Option<Vec<f64>>,
    /// The same error for the oracle (fed the whole model's interface values at the frames).
    pub oracle_max_rel_l2_error: Option<f64>,
    /// The output file (none when the run stopped early: it stays `NAME.running.vtkhdf`).
    pub output: Option<PathBuf>,
    /// Stopped after a checkpoint before the last window.
    pub interrupted: bool,
    /// The window a restart continued after.
    pub resumed_after_window: Option<usize>,
    pub checkpoints_written: usize,
    /// The job's source parameters outside the model's trained ranges (run anyway only with
    /// `coupling.out_of_range = "trust"`).
    pub out_of_range: Vec<String>,
}

/// The job's single Ricker source as the scenario a conditioned model reads
/// ([`crate::surrogate::condition::PARAMS`] order: x, y, frequency, amplitude, delay, speed).
pub(super) fn scenario(cfg: &Config) -> Result<Vec<f64>, DriverError> {
    let [s] = cfg.source.as_slice() else {
        return Err(err(format!(
            "the model reads one source's parameters and the job has {} sources",
            cfg.source.len()
        )));
    };
    Ok(vec![
        s.position[0],
        s.position[1],
        s.frequency,
        s.amplitude,
        (s.delay).unwrap_or(crate::sources::ricker_default_delay(s.frequency)),
        cfg.material.c.unwrap_or(1.0),
    ])
}

/// The whole model beside the submodel, and the oracle fed by it.
pub(super) struct Reference<'c> {
    pub(super) sim: Simulation<'c>,
    pub(super) wall: Duration,
    /// Its local index of each submodel node and of each interface node.
    pub(super) zone: Vec<usize>,
    pub(super) iface: Vec<usize>,
    /// The zone's field at the frames the oracle has not reached yet.
    pub(super) pending: VecDeque<(usize, Vec<f64>)>,
    pub(super) oracle: Submodel,
    pub(super) trace: Trace,
    /// Max ‖u_full‖₂, ‖u_sub − u_full‖₂, ‖u_oracle − u_full‖₂ over the frames.
    pub(super) max_ref: f64,
    pub(super) max_diff: f64,
    pub(super) max_oracle: f64,
}

impl Reference<'_> {
    fn zone_field(&self) -> Vec<f64> {
        let u = self.sim.u();
        self.zone.iter().map(|&i| u[i]).collect()
    }

    /// One step of the whole model; at a frame, its interface values go to the oracle's trace,
    /// the oracle catches up to what the trace covers with interior frames (`lag` frames
    /// behind), and the zone's field is returned.
    fn step(&mut self, stride: usize, lag: usize) -> Result<Option<Vec<f64>>, CouplingError> {
        let t = Instant::now();
        self.sim.advance(1);
        self.wall += t.elapsed();
        let n = self.sim.steps_done();
        if !n.is_multiple_of(stride) {
            return Ok(None);
        }
        let u = self.sim.u();
        let vals = self.iface.iter().map(|&i| u[i]).collect();
        self.trace.push(self.sim.time(), vals)?;
        self.trace.keep_last(6);
        let zone = self.zone_field();
        self.pending.push_back((n, zone.clone()));
        let reach = (n / stride).saturating_sub(lag) * stride;
        let todo = reach.saturating_sub(self.oracle.sim().steps_done());
        self.oracle.advance_along(&self.trace, todo)?;
        self.compare_oracle();
        Ok(Some(zone))
    }

    /// The oracle to the whole model's step (one-sided interpolation over the last frames).
    fn catch_up(&mut self, stride: usize) -> Result<(), CouplingError> {
        while self.oracle.sim().steps_done() < self.sim.steps_done() {
            let todo = (self.sim.steps_done() - self.oracle.sim().steps_done()).min(stride);
            self.oracle.advance_along(&self.trace, todo)?;
            self.compare_oracle();
        }
        Ok(())
    }

    /// The oracle against the frames it has reached.
    fn compare_oracle(&mut self) {
        let at = self.oracle.sim().steps_done();
        while let Some((n, f)) = self.pending.front() {
            if *n > at {
                break;
            }
            if *n == at {
                let d = l2_diff(self.oracle.sim().u(), f);
                self.max_oracle = self.max_oracle.max(d);
            }
            self.pending.pop_front();
        }
    }
}

fn l2(a: &[f64]) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

pub(super) fn l2_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Everything a submodel run holds.
pub(super) struct Run<'c, F: Forecaster> {
    pub(super) sub: Submodel,
    pub(super) to_grid: ZoneTransfer,
    pub(super) sampler: GridSampler,
    pub(super) net: F,
    pub(super) stride: usize,
    pub(super) frame_dt: f64,
    /// The interface values the submodel follows.
    pub(super) trace: Trace,
    /// The last `t_in` frames on the grid.
    pub(super) frames: VecDeque<Vec<f64>>,
    pub(super) fe: Duration,
    pub(super) inference: Duration,
    pub(super) transfer: Duration,
    /// Largest ‖g‖₂ of a recorded frame.
    pub(super) scale: f64,
    pub(super) reference: Option<Reference<'c>>,
    pub(super) writer: Option<VtkHdfWriter>,
    pub(super) every: usize,
    pub(super) indicator_now: f64,
    /// The windows done: the next one's index, their indicators and errors.
    pub(super) done: Windows,
}

impl<F: Forecaster> Run<'_, F> {
    /// Records the submodel's frame (its field on the grid), returns it.
    pub(super) fn frame(&mut self) -> Result<Vec<f64>, CouplingError> {
        let t = Instant::now();
        let mut g = vec![0.0; self.to_grid.grid().nx * self.to_grid.grid().ny];
        self.to_grid.to_grid(self.sub.sim().u(), &mut g)?;
        self.transfer += t.elapsed();
        self.scale = self.scale.max(l2(&g));
        self.frames.push_back(g.clone());
        while self.frames.len() > self.net.t_in() {
            self.frames.pop_front();
        }
        Ok(g)
    }

    /// `n` steps along the trace, the reference and the output following; returns the largest
    /// zone error ‖u_sub − u_full‖₂ at the frames passed (0 without a reference).
    pub(super) fn steps(&mut self, n: usize) -> Result<f64, DriverError> {
        let mut worst: f64 = 0.0;
        for _ in 0..n {
            let t = Instant::now();
            self.sub
                .advance_along(&self.trace, 1)
                .map_err(from_coupling)?;
            self.fe += t.elapsed();
            let step = self.sub.sim().steps_done();
            if let Some(r) = &mut self.reference {
                if let Some(f) = r.step(self.stride, 2).map_err(from_coupling)? {
                    r.max_ref = r.max_ref.max(l2(&f));
                    let d = l2_diff(self.sub.sim().u(), &f);
                    r.max_diff = r.max_diff.max(d);
                    worst = worst.max(d);
                }
            }
            if self.every > 0 && step.is_multiple_of(self.every) {
                self.output()?;
            }
        }
        Ok(worst)
    }

    pub(super) fn output(&mut self) -> Result<(), DriverError> {
        let Some(w) = &mut self.writer else {
            return Ok(());
        };
        let sim = self.sub.sim();
        let u = sim.u();
        let energy = sim.energy();
        let ind = [self.indicator_now];
        let r = match &self.reference {
            Some(r) => {
                let f = r.zone_field();
                let d: Vec<f64> = u.iter().zip(&f).map(|(a, b)| (a - b).abs()).collect();
                w.write_step_with(sim.time(), u, energy, &[&f, &d], &ind)
            }
            None => w.write_step_with(sim.time(), u, energy, &[], &ind),
        };
        r.map_err(|e| err(e.to_string()))
    }
}

/// The step of a submodel run: the job's `time.dt`, or the largest `frame_dt / k` within
/// `time.safety` of the submodel's stability limit.
fn time_step(cfg: &Config, sp: &SubProblem, frame_dt: f64) -> Result<(f64, usize), DriverError> {
    let dt = match cfg.time.dt {
        Some(dt) => dt,
        None => {
            let solver = crate::solver::WaveSolver::new(&sp.problem)?;
            let k = (frame_dt / (cfg.time.safety * solver.dt_limit()))
                .ceil()
                .max(1.0);
            frame_dt / k
        }
    };
    let ratio = frame_dt / dt;
    let stride = ratio.round() as usize;
    if stride == 0 || (ratio - stride as f64).abs() > 1e-6 * ratio {
        return Err(err(format!(
            "the model's frames are {frame_dt:e} apart, which is {ratio} steps of time.dt = {dt:e}, not a whole number: set time.dt to {frame_dt:e} / k"
        )));
    }
    Ok((frame_dt / stride as f64, stride))
}

/// The whole model and the oracle for `--reference` (the job at the submodel's `dt`).
fn reference<'c>(
    (cfg, base): (&Config, &Path),
    comm: &'c dyn Comm,
    sub: &Submodel,
    oracle: Submodel,
    dt: f64,
) -> Result<Reference<'c>, DriverError> {
    let mut cfg = cfg.clone();
    cfg.time.dt = Some(dt);
    let (sim, _) = crate::sim::from_job(&cfg, base, comm)?;
    let mut local = vec![usize::MAX; sim.layout().global.len()];
    for (i, g) in sim.layout().global.iter().enumerate() {
        local[*g as usize] = i;
    }
    let zone = sub
        .submesh()
        .outer_node
        .iter()
        .map(|g| local[*g as usize])
        .collect();
    let iface = sub
        .interface_outer()
        .iter()
        .map(|g| local[*g as usize])
        .collect();
    let mut trace = Trace::default();
    let u0: Vec<f64> = {
        let u = sim.u();
        let idx: &Vec<usize> = &iface;
        idx.iter().map(|&i| u[i]).collect()
    };
    trace.push(0.0, u0).map_err(from_coupling)?;
    Ok(Reference {
        sim,
        wall: Duration::ZERO,
        zone,
        iface,
        pending: VecDeque::new(),
        oracle,
        trace,
        max_ref: 0.0,
        max_diff: 0.0,
        max_oracle: 0.0,
    })
}

/// Runs a job whose `[coupling]` has `mode = "submodel"` (one rank) with its trained model.
pub fn run_submodel(
    cfg: &Config,
    base: &Path,
    opts: &SubmodelOptions,
    comm: &dyn Comm,
) -> Result<SubmodelSummary, DriverError> {
    let (grid, frame_dt, outside, open) = network(cfg, base)?;
    let mut s = run_made(cfg, base, (opts, comm), (grid, frame_dt), open)?;
    s.out_of_range = outside;
    Ok(s)
}

/// The job's network: the zone grid and frame spacing its file records, the job's source
/// parameters outside its trained ranges ([`in_range`]), and what opens it on the job's device
/// for a submodel's grid transfer, given the outer mesh's bounding box (refused when its prior
/// reflects off another rectangle; told the job's scenario, when it reads one).
#[allow(clippy::type_complexity)]
pub(super) fn network<'a>(
    cfg: &'a Config,
    base: &Path,
) -> Result<
    (
        ZoneGrid,
        f64,
        Vec<String>,
        impl FnOnce(&ZoneTransfer, [f64; 4]) -> Result<NetworkForecaster, DriverError> + 'a,
    ),
    DriverError,
> {
    let c = coupling(cfg)?;
    let model = base.join(&c.model);
    let loaded = crate::surrogate::modelfile::load(&model).map_err(err)?;
    let z = loaded.meta.zone.ok_or_else(|| {
        err(format!(
            "{} does not record the zone it was trained on: retrain it",
            model.display()
        ))
    })?;
    let grid = ZoneGrid {
        x: [z[0], z[1]],
        y: [z[2], z[3]],
        nx: loaded.meta.nx,
        ny: loaded.meta.ny,
    };
    let frame_dt = loaded.meta.frame_dt;
    let outside = match &loaded.meta.conditioning {
        Some(cond) => in_range(cfg, cond, &model)?,
        None => vec![],
    };
    let open = move |t: &ZoneTransfer, outer: [f64; 4]| {
        if let Some(cond) = &loaded.meta.conditioning {
            super::solve::check_walls(cond, outer, &model)?;
        }
        let device = c.device.parse().map_err(err)?;
        let mut net = NetworkForecaster::from_loaded(loaded, &model, device, t, frame_dt)
            .map_err(from_coupling)?;
        if net.conditioned() {
            net.set_scenario(scenario(cfg)?).map_err(from_coupling)?;
        }
        Ok(net)
    };
    Ok((grid, frame_dt, outside, open))
}

/// A conditioned model's calibration holds only inside the source ranges it was trained on.
/// The submodel has no FE to hand a window to (the network's forecast is its boundary), so
/// outside them `coupling.out_of_range = "fe"` (the default) refuses the job and `"trust"`
/// runs it with a warning. Returns the parameters outside.
fn in_range(
    cfg: &Config,
    cond: &crate::surrogate::condition::Conditioning,
    model: &Path,
) -> Result<Vec<String>, DriverError> {
    let c = coupling(cfg)?;
    let outside = cond.outside_training(&scenario(cfg)?);
    if outside.is_empty() {
        return Ok(outside);
    }
    if c.out_of_range == "fe" {
        return Err(err(format!(
            "the job's source lies outside what {} was trained on ({}): the submodel's boundary is the network's forecast and has no FE to fall back on; run the whole model (no [coupling]) or set coupling.out_of_range = \"trust\" to run it anyway",
            model.display(),
            outside.join(", ")
        )));
    }
    tracing::warn!(
        "the job's source lies outside what {} was trained on ({}): its boundary forecasts are not calibrated there (coupling.out_of_range = \"trust\")",
        model.display(),
        outside.join(", ")
    );
    Ok(outside)
}

fn coupling(cfg: &Config) -> Result<&crate::config::CouplingConfig, DriverError> {
    cfg.coupling
        .as_ref()
        .ok_or_else(|| err("the job has no [coupling] section"))
}

/// The submodel run of a job, not yet started: the zone's problem and its simulation, the
/// transfers, the forecaster `make` gives (from the submodel's grid transfer and the outer
/// mesh's bounding box), the whole model and the oracle beside it when
/// `reference` names their communicator. Returns it with the outer mesh's node count and the
/// number of windows to `time.end`.
pub(super) fn build_run<'c, F: Forecaster>(
    cfg: &Config,
    base: &Path,
    (grid, frame_dt): (ZoneGrid, f64),
    make: impl FnOnce(&ZoneTransfer, [f64; 4]) -> Result<F, DriverError>,
    reference: Option<&'c dyn Comm>,
) -> Result<(Run<'c, F>, usize, usize), DriverError> {
    let c = coupling(cfg)?;
    let setup = crate::sim::setup(cfg, base)?;
    let outer_nodes = setup.problem.mesh.num_nodes();
    let outer_box = setup.problem.mesh.bbox();
    let sp = restrict(&setup, grid.x, grid.y).map_err(from_coupling)?;
    if sp.sources_outside < setup.problem.sources.len() {
        tracing::warn!(
            "{} source(s) lie inside the zone: the submodel keeps them, the network was not trained so",
            setup.problem.sources.len() - sp.sources_outside
        );
    }
    let (dt, stride) = time_step(cfg, &sp, frame_dt)?;
    let oracle_sp = reference
        .map(|_| restrict(&setup, grid.x, grid.y))
        .transpose()
        .map_err(from_coupling)?;
    drop(setup);
    let interp = c.time_interpolation;
    let n_iface = sp.submesh.interface_nodes().len();
    let zeros = vec![0.0; n_iface];
    let sub = Submodel::new(sp, dt, interp, &zeros, &zeros).map_err(from_coupling)?;
    let to_grid = ZoneTransfer::new(&sub.submesh().mesh, grid).map_err(err)?;
    let ip = c.interpolation.parse().map_err(err)?;
    let sampler = GridSampler::new(grid, &sub.interface_coords(), ip).map_err(err)?;
    let net = make(&to_grid, outer_box)?;
    let reference = match (oracle_sp, reference) {
        (Some(osp), Some(comm)) => {
            let oracle = Submodel::new(osp, dt, interp, &zeros, &zeros).map_err(from_coupling)?;
            Some(self::reference((cfg, base), comm, &sub, oracle, dt)?)
        }
        _ => None,
    };
    let run = Run {
        sub,
        to_grid,
        sampler,
        net,
        stride,
        frame_dt,
        frames: VecDeque::new(),
        fe: Duration::ZERO,
        inference: Duration::ZERO,
        transfer: Duration::ZERO,
        scale: 0.0,
        reference,
        writer: None,
        every: cfg.output.every,
        indicator_now: f64::NAN,
        trace: Trace::default(),
        done: Windows::default(),
    };
    let frames_total = (cfg.time.end / frame_dt + 1e-9).floor() as usize + 1;
    let (t_in, t_out) = (run.net.t_in(), run.net.t_out());
    if frames_total < t_in + t_out {
        return Err(err(format!(
            "time.end = {} holds {frames_total} frames {frame_dt:e} apart: the warm-up ({t_in}) and one window ({t_out}) need {}",
            cfg.time.end,
            t_in + t_out
        )));
    }
    let windows = (frames_total - t_in) / t_out;
    Ok((run, outer_nodes, windows))
}

/// [`run_submodel`] with any forecaster of frames `frame_dt` apart on `grid` (the zone), made
/// by `make` from the submodel's grid transfer: the network, or in tests an oracle.
pub fn run_with<F: Forecaster>(
    cfg: &Config,
    base: &Path,
    run: (&SubmodelOptions, &dyn Comm),
    zone: (ZoneGrid, f64),
    make: impl FnOnce(&ZoneTransfer) -> Result<F, DriverError>,
) -> Result<SubmodelSummary, DriverError> {
    run_made(cfg, base, run, zone, |t, _| make(t))
}

/// [`run_with`] with `make` also given the outer mesh's bounding box.
fn run_made<F: Forecaster>(
    cfg: &Config,
    base: &Path,
    (opts, comm): (&SubmodelOptions, &dyn Comm),
    (grid, frame_dt): (ZoneGrid, f64),
    make: impl FnOnce(&ZoneTransfer, [f64; 4]) -> Result<F, DriverError>,
) -> Result<SubmodelSummary, DriverError> {
    let c = coupling(cfg)?;
    if comm.size() > 1 {
        return Err(err(format!(
            "the submodel runs on one rank (the zone is small); this run has {}",
            comm.size()
        )));
    }
    let reference = opts.reference.then_some(comm);
    let (mut run, outer_nodes, windows) = build_run(cfg, base, (grid, frame_dt), make, reference)?;
    let (stride, n_iface) = (run.stride, run.sub.interface_outer().len());
    let shape = [run.sub.submesh().mesh.num_nodes(), stride, windows];
    let mut ck =
        super::subcheck::Checkpoints::new(cfg, (opts.stop_after_windows, opts.signals), shape)?;
    let outputs = if opts.restart {
        ck.restore(&mut run)?
    } else {
        None
    };
    let resumed = outputs.map(|_| run.done.indicator.len());
    run.writer = match outputs {
        Some(n) if run.every > 0 && !cfg.output.path.as_os_str().is_empty() => Some(
            VtkHdfWriter::reopen(&cfg.output.path, n, 0, cfg.output.xdmf)
                .map_err(|e| err(e.to_string()))?,
        ),
        _ => writer(cfg, &run.sub, opts.reference)?,
    };
    let complete = drive(&mut run, windows, opts.progress, &mut ck)?;
    let mut s = finish(run, c.tolerance, (outer_nodes, n_iface), complete)?;
    s.resumed_after_window = resumed;
    s.checkpoints_written = ck.written;
    Ok(s)
}

/// The output file of the submodel (the job's `output.path`; none when empty): `u` on the
/// submesh, `u_ref` and `u_diff` with `--reference`, the latest window's indicator.
pub(super) fn writer(
    cfg: &Config,
    sub: &Submodel,
    reference: bool,
) -> Result<Option<VtkHdfWriter>, DriverError> {
    if cfg.output.path.as_os_str().is_empty() || cfg.output.every == 0 {
        return Ok(None);
    }
    let fields = if reference {
        vec!["u_ref".to_string(), "u_diff".to_string()]
    } else {
        vec![]
    };
    let extras = StepExtras::new(fields, vec!["indicator".into()]);
    let w = VtkHdfWriter::create(
        &cfg.output.path,
        &sub.submesh().mesh,
        &[],
        cfg.output.xdmf,
        None,
        &extras,
    )
    .map_err(|e| err(e.to_string()))?;
    Ok(Some(w))
}

/// Per window: the indicator and (with a reference) the zone error.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Windows {
    pub(super) indicator: Vec<f64>,
    pub(super) errors: Vec<f64>,
}

/// The warm-up: the first `t_in` frames with the interface at rest.
fn warm_up<F: Forecaster>(run: &mut Run<'_, F>) -> Result<(), DriverError> {
    let (t_in, stride) = (run.net.t_in(), run.stride);
    rest_trace(run)?;
    run.output()?;
    run.frame().map_err(from_coupling)?;
    for _ in 1..t_in {
        run.steps(stride)?;
        run.frame().map_err(from_coupling)?;
    }
    Ok(())
}

/// The interface at rest for the warm-up's `t_in` frames.
pub(super) fn rest_trace<F: Forecaster>(run: &mut Run<'_, F>) -> Result<(), DriverError> {
    let n_iface = run.sub.interface_outer().len();
    for k in 0..run.net.t_in() {
        run.trace
            .push(k as f64 * run.frame_dt, vec![0.0; n_iface])
            .map_err(from_coupling)?;
    }
    Ok(())
}

/// Window `w`: forecast, the interface trace, the FE through it, the indicator.
fn window<F: Forecaster>(run: &mut Run<'_, F>, w: usize) -> Result<(), DriverError> {
    let stride = run.stride;
    let fc = forecast(run, w)?;
    let (mut ind, mut werr) = (0.0f64, 0.0f64);
    for f in &fc {
        werr = werr.max(run.steps(stride)?);
        let g = run.frame().map_err(from_coupling)?;
        ind = ind.max(l2_diff(&g, f));
    }
    run.indicator_now = ind;
    run.done.indicator.push(ind);
    run.done.errors.push(werr);
    Ok(())
}

/// Window `w`'s forecast from the last `t_in` frames, its interface values appended to the
/// trace; returns the forecast frames (the indicator's other side).
pub(super) fn forecast<F: Forecaster>(
    run: &mut Run<'_, F>,
    w: usize,
) -> Result<Vec<Vec<f64>>, DriverError> {
    let (t_in, t_out, frame_dt) = (run.net.t_in(), run.net.t_out(), run.frame_dt);
    let k0 = t_in + w * t_out;
    run.net.set_input_time((k0 - t_in) as f64 * frame_dt);
    let t = Instant::now();
    let fc = {
        let past: Vec<&[f64]> = run.frames.iter().map(|f| f.as_slice()).collect();
        run.net.forecast(&past).map_err(from_coupling)?
    };
    run.inference += t.elapsed();
    let t = Instant::now();
    let mut vals = vec![0.0; run.sub.interface_outer().len()];
    for (j, f) in fc.iter().enumerate() {
        run.sampler.sample(f, &mut vals).map_err(err)?;
        run.trace
            .push((k0 + j) as f64 * frame_dt, vals.clone())
            .map_err(from_coupling)?;
    }
    run.trace.keep_last(t_out + 4);
    run.transfer += t.elapsed();
    Ok(fc)
}

/// The warm-up (unless resumed), then the forecast windows to `windows`, checkpoints between
/// them; `Ok(false)` when stopped after a checkpoint.
fn drive<F: Forecaster>(
    run: &mut Run<'_, F>,
    windows: usize,
    progress: bool,
    ck: &mut super::subcheck::Checkpoints,
) -> Result<bool, DriverError> {
    let (t_in, t_out, stride) = (run.net.t_in(), run.net.t_out(), run.stride);
    let total = ((t_in - 1 + windows * t_out) * stride) as u64;
    let mut bar =
        crate::progress::Progress::new("submodel", total, progress, Duration::from_secs(10));
    if run.sub.sim().steps_done() == 0 {
        warm_up(run)?;
    }
    for w in run.done.indicator.len()..windows {
        window(run, w)?;
        bar.set(run.sub.sim().steps_done() as u64);
        if !ck.after_window(run, w + 1 == windows)? {
            return Ok(false);
        }
    }
    bar.finish();
    if let Some(r) = &mut run.reference {
        r.catch_up(run.stride).map_err(from_coupling)?;
    }
    Ok(true)
}

/// The summary, the output file closed.
fn finish<F: Forecaster>(
    mut run: Run<'_, F>,
    tolerance: f64,
    (outer_nodes, interface_nodes): (usize, usize),
    complete: bool,
) -> Result<SubmodelSummary, DriverError> {
    let w = std::mem::take(&mut run.done);
    let output = match run.writer.take() {
        Some(wr) if complete => Some(wr.finish().map_err(|e| err(e.to_string()))?),
        Some(mut wr) => {
            wr.flush().map_err(|e| err(e.to_string()))?;
            None
        }
        None => None,
    };
    let wall = run.fe + run.inference + run.transfer;
    let scale = run.scale.max(f64::MIN_POSITIVE);
    let indicator: Vec<f64> = w.indicator.iter().map(|v| v / scale).collect();
    let r = run.reference.as_ref();
    let rel = |d: f64, m: f64| if m > 0.0 { d / m } else { d };
    let reference_wall_s = r.map(|r| r.wall.as_secs_f64());
    let summary = SubmodelSummary {
        windows: indicator.len(),
        t_in: run.net.t_in(),
        t_out: run.net.t_out(),
        stride: run.stride,
        dt: run.sub.sim().dt(),
        steps: run.sub.sim().steps_done(),
        outer_nodes,
        submodel_nodes: run.sub.submesh().mesh.num_nodes(),
        interface_nodes,
        time_interpolation: run.sub.interp(),
        wall_s: wall.as_secs_f64(),
        fe_s: run.fe.as_secs_f64(),
        inference_s: run.inference.as_secs_f64(),
        transfer_s: run.transfer.as_secs_f64(),
        indicator_max: indicator.iter().copied().fold(0.0, f64::max),
        windows_above_tolerance: indicator.iter().filter(|v| **v > tolerance).count(),
        indicator,
        reference_wall_s,
        cost_ratio: reference_wall_s.map(|rw| rw / wall.as_secs_f64().max(1e-12)),
        max_rel_l2_error: r.map(|r| rel(r.max_diff, r.max_ref)),
        window_errors: r.map(|r| w.errors.iter().map(|d| rel(*d, r.max_ref)).collect()),
        oracle_max_rel_l2_error: r.map(|r| rel(r.max_oracle, r.max_ref)),
        output,
        interrupted: !complete,
        resumed_after_window: None,
        checkpoints_written: 0,
        out_of_range: vec![],
    };
    tracing::info!(
        "submodel: {} windows, wall {:.2} s = FE {:.2} + inference {:.2} + transfers {:.2}",
        summary.windows,
        summary.wall_s,
        summary.fe_s,
        summary.inference_s,
        summary.transfer_s
    );
    Ok(summary)
}
