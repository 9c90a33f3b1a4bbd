//! Error indicators of hybrid stepping: how far a window's forecast can be trusted, scored
//! from what the FE knows (its operators, its energy, a short probe of its own), lower being
//! more trustworthy. Each is collective on a decomposed simulation and gives the same bits on
//! any rank count (sums through `repro_sum`, grids through the rank-0 transfer).

use super::transfer::ZoneTransfer;
use super::CouplingError;
use crate::sim::Simulation;

/// What an indicator is shown of a window.
pub struct WindowView<'a, 'c> {
    /// The simulation at the window's start (an indicator may use its operators, not change
    /// its state).
    pub sim: &'a mut Simulation<'c>,
    pub transfer: &'a ZoneTransfer,
    /// Recorded frames before the window, oldest first (as many as the run keeps: at least
    /// the forecaster's `t_in` and three).
    pub past: &'a [&'a [f64]],
    pub forecast: &'a [Vec<f64>],
    /// FE steps between frames.
    pub stride: usize,
    /// The frames before the window are the previous window's forecast (accepted), not the
    /// FE's: a hybrid run's window after an accepted one.
    pub reads_forecast: bool,
}

impl WindowView<'_, '_> {
    /// Time between frames.
    pub fn frame_dt(&self) -> f64 {
        self.stride as f64 * self.sim.dt()
    }

    /// The last `recorded` recorded frames and the forecast, on the mesh (nodes the grid
    /// does not cover keep the current field), oldest first.
    fn on_mesh(&self, recorded: usize) -> Result<Vec<Vec<f64>>, CouplingError> {
        let n = self.past.len();
        if n < recorded {
            return Err(CouplingError::Setup(format!(
                "this indicator needs {recorded} recorded frames, the window has {n}"
            )));
        }
        let base = self.sim.u();
        let one = |g: &[f64]| -> Result<Vec<f64>, CouplingError> {
            let mut u = base.to_vec();
            self.transfer.to_mesh(g, &mut u)?;
            Ok(u)
        };
        self.past[n - recorded..]
            .iter()
            .map(|f| one(f))
            .chain(self.forecast.iter().map(|f| one(f)))
            .collect()
    }
}

/// Scores a window's forecast: lower is more trustworthy; the window is accepted below the
/// tolerance.
pub trait Indicator {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError>;
}

impl<I: Indicator + ?Sized> Indicator for Box<I> {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        (**self).score(w)
    }
}

/// The residual of the discrete wave equation on the forecast frames, with the FE operators:
/// for each frame triple that holds a forecast frame, `‖r‖ / (‖M ü‖ + ‖K u‖)`
/// ([`crate::solver::WaveSolver::frame_residual_on`]) on the frames brought to the mesh; the
/// score is the largest. Cost: one stiffness product and one transfer a frame. An error
/// that is itself a solution of the equation and joins the recorded frames smoothly passes
/// unseen.
#[derive(Debug, Default, Clone, Copy)]
pub struct Residual;

impl Indicator for Residual {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        let seq = w.on_mesh(2)?;
        let (t0, frame_dt) = (w.sim.time(), w.frame_dt());
        let mut worst = 0.0f64;
        for k in 1..seq.len() - 1 {
            let t = t0 + (k - 1) as f64 * frame_dt;
            let frames = [&seq[k - 1][..], &seq[k][..], &seq[k + 1][..]];
            let comm = w.sim.comm();
            let (r, scale) = w
                .sim
                .solver_mut()
                .frame_residual_on(frames, frame_dt, t, comm)
                .map_err(crate::sim::DriverError::from)?;
            worst = worst.max(if scale > 0.0 { r / scale } else { r });
        }
        Ok(worst)
    }
}

/// Energy change: the frame energy ([`crate::solver::WaveSolver::frame_energy_on`]) of each
/// frame triple that holds a forecast frame against that of the last triple of recorded
/// frames; the score is the largest relative change, either way. The FE's own frames change
/// only by what the absorbing boundary lets out and the sources put in (the floor: on the
/// test pulse ≈ 1.3 % a frame); a forecast's error shows as more change. An error in
/// amplitude against the recorded frames also changes the velocity the triples see, so the
/// energy can fall as well as grow: hence the absolute value. The boundary flux and the
/// sources' work are not subtracted ([`EnergyBalance`] does). Cost: one stiffness product
/// and three transfers a frame.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnergyChange;

impl Indicator for EnergyChange {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        let seq = w.on_mesh(3)?;
        let (comm, frame_dt) = (w.sim.comm(), w.frame_dt());
        let mut energies = vec![];
        for k in 1..seq.len() - 1 {
            let frames = [&seq[k - 1][..], &seq[k][..], &seq[k + 1][..]];
            let e = w
                .sim
                .solver_mut()
                .frame_energy_on(frames, frame_dt, comm)
                .map_err(crate::sim::DriverError::from)?;
            energies.push(e);
        }
        let e0 = energies[0];
        let change = energies[1..]
            .iter()
            .map(|e| (e - e0).abs() / e0.abs().max(f64::MIN_POSITIVE))
            .fold(0.0f64, f64::max);
        Ok(change)
    }
}

/// Energy balance: like [`EnergyChange`], but each frame's energy is set against what the
/// equation says it becomes — the previous frame's plus the sources' work less what the
/// absorbing boundary took, integrated over the frame spacing by the trapezoidal rule
/// ([`crate::solver::WaveSolver::frame_power_on`]). The score is the largest imbalance so far
/// in the window, relative to the energy at its start. The FE's own frames leave only the
/// difference quotients' error. Cost: one stiffness product and one transfer a frame.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnergyBalance;

impl Indicator for EnergyBalance {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        let seq = w.on_mesh(3)?;
        let (comm, frame_dt) = (w.sim.comm(), w.frame_dt());
        // Triple k is centred on frame k of `seq`, at t0 + (k − 2)·Δ (frame 2 is the last
        // recorded one, at the simulation's time).
        let t0 = w.sim.time();
        let (mut energy, mut power) = (vec![], vec![]);
        for k in 1..seq.len() - 1 {
            let frames = [&seq[k - 1][..], &seq[k][..], &seq[k + 1][..]];
            let t = t0 + (k as f64 - 2.0) * frame_dt;
            let solver = w.sim.solver_mut();
            let e = solver.frame_energy_on(frames, frame_dt, comm);
            let p = solver.frame_power_on(frames, frame_dt, t, comm);
            energy.push(e.map_err(crate::sim::DriverError::from)?);
            power.push(p.map_err(crate::sim::DriverError::from)?);
        }
        let scale = energy[0].abs().max(f64::MIN_POSITIVE);
        let (mut drift, mut worst) = (0.0f64, 0.0f64);
        for k in 1..energy.len() {
            let expected = 0.5 * frame_dt * (power[k - 1] + power[k]);
            drift += energy[k] - energy[k - 1] - expected;
            worst = worst.max(drift.abs() / scale);
        }
        Ok(worst)
    }
}

/// The FE's field `steps` steps past the window's start, on the grid; the state is put back.
fn fe_ahead(w: &mut WindowView<'_, '_>, steps: usize) -> Result<Vec<f64>, CouplingError> {
    let saved = w.sim.state();
    w.sim.advance(steps);
    let mut g = vec![0.0; w.transfer.points()];
    let done = w.transfer.to_grid_on(w.sim.u(), &mut g, w.sim.comm());
    w.sim.restore(&saved)?;
    done?;
    Ok(g)
}

/// Self-consistency against a short FE probe: the FE runs one frame (`stride` steps) from the
/// window's start, and the score is the relative L2 difference, over the grid points inside
/// the mesh, between that frame and the forecast's first one; the state is restored after.
/// It measures the first frame's error exactly (the truth scores 0), not how the error grows
/// over the window. Cost: `stride` FE steps a window — on a fine mesh far more than the
/// other indicators, and a `1 / t_out` share of what the window saves.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeProbe;

impl Indicator for FeProbe {
    fn score(&mut self, mut w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        let stride = w.stride;
        let g = fe_ahead(&mut w, stride)?;
        let (mut d, mut r) = (0.0, 0.0);
        for ((a, b), inside) in w.forecast[0].iter().zip(&g).zip(w.transfer.inside()) {
            if inside {
                d += (a - b) * (a - b);
                r += b * b;
            }
        }
        Ok((d / r.max(f64::MIN_POSITIVE)).sqrt())
    }
}

/// [`FeProbe`] on a quarter of a frame: the FE runs `⌈stride / 4⌉` steps from the window's
/// start, and that field on the grid is compared with the quartic Lagrange interpolant in time
/// through the last three recorded frames and the forecast's first two (the cubic through the
/// first, for a forecast of one frame) at the same instant; the difference, relative to the
/// field and divided by the interpolant's weight on the first forecast frame, is the score —
/// so it reads as an estimate of the first frame's error, as [`FeProbe`]'s does. Cost: a
/// quarter of [`FeProbe`]'s steps. Its floor is the interpolation's own error on the exact
/// trajectory (fifth order in the frame spacing); calibrate it on its own.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeProbeShort;

impl FeProbeShort {
    /// The steps it runs for frames `stride` steps apart.
    pub fn steps(stride: usize) -> usize {
        stride.div_ceil(4).max(1)
    }
}

/// The Lagrange basis through the nodes `xs` at `x`.
pub(super) fn lagrange(xs: &[f64], x: f64) -> Vec<f64> {
    xs.iter()
        .enumerate()
        .map(|(j, &xj)| {
            xs.iter()
                .enumerate()
                .filter(|&(m, _)| m != j)
                .map(|(_, &xm)| (x - xm) / (xj - xm))
                .product()
        })
        .collect()
}

impl Indicator for FeProbeShort {
    fn score(&mut self, mut w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        let n = w.past.len();
        if n < 3 || w.forecast.is_empty() {
            return Err(CouplingError::Setup(format!(
                "fe_probe_short needs 3 recorded frames and a forecast; the window has {n} and {}",
                w.forecast.len()
            )));
        }
        let k = Self::steps(w.stride);
        let g = fe_ahead(&mut w, k)?;
        let ahead = w.forecast.len().min(2);
        let frames: Vec<&[f64]> = w.past[n - 3..]
            .iter()
            .copied()
            .chain(w.forecast[..ahead].iter().map(|f| &f[..]))
            .collect();
        let xs: Vec<f64> = (0..frames.len()).map(|j| j as f64 - 2.0).collect();
        let weights = lagrange(&xs, k as f64 / w.stride as f64);
        let (mut d, mut r) = (0.0, 0.0);
        for (p, inside) in w.transfer.inside().enumerate() {
            if inside {
                let at: f64 = frames.iter().zip(&weights).map(|(f, c)| c * f[p]).sum();
                d += (at - g[p]) * (at - g[p]);
                r += g[p] * g[p];
            }
        }
        Ok((d / r.max(f64::MIN_POSITIVE)).sqrt() / weights[3].abs().max(f64::MIN_POSITIVE))
    }
}
