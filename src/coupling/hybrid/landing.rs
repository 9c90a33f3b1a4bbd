//! Forecasts and where they land: the forecast of a window, its hand-back onto the mesh, and
//! the FE's retake of a hand-back when the window after it is refused.

use super::{Forecaster, Hybrid, Indicator};
use crate::coupling::handback::VelocityEstimate;
use crate::coupling::transfer::ZoneTransfer;
use crate::coupling::CouplingError;
use crate::sim::Simulation;
use std::time::Instant;

impl<F: Forecaster, I: Indicator> Hybrid<'_, '_, F, I> {
    /// The time between frames.
    pub(super) fn frame_dt(&self) -> f64 {
        self.cfg.stride as f64 * self.sim.dt()
    }

    /// The step the first window starts at: the `t_in`-th frame's.
    pub(super) fn first_window(&self, t_in: usize) -> usize {
        self.st.origin + (t_in - 1) * self.cfg.stride
    }

    /// The forecast of the `t_out` frames after the last recorded one, from the last `t_in`.
    pub(super) fn forecast(&mut self, t_in: usize) -> Result<Vec<Vec<f64>>, CouplingError> {
        let kept: Vec<&[f64]> = self.frames.iter().map(|f| &f[..]).collect();
        let past = &kept[kept.len() - t_in..];
        let t = Instant::now();
        // The oldest input frame's time, for a model conditioned on time and scenario.
        let t0 = self.sim.time() - (t_in - 1) as f64 * self.frame_dt();
        self.forecaster.set_input_time(t0);
        let forecast = self.forecaster.forecast(past)?;
        self.times.inference += t.elapsed();
        if forecast.len() != self.forecaster.t_out()
            || forecast.iter().any(|f| f.len() != past[0].len())
        {
            return Err(CouplingError::Setup(format!(
                "the forecaster gave {} frames of {} values; {} of {} were expected",
                forecast.len(),
                forecast.first().map_or(0, Vec::len),
                self.forecaster.t_out(),
                past[0].len()
            )));
        }
        Ok(forecast)
    }

    /// The FE continues from the forecast's frame `lag` before its last, `window` steps on.
    pub(super) fn hand_back(
        &mut self,
        mut forecast: Vec<Vec<f64>>,
        window: usize,
    ) -> Result<(), CouplingError> {
        let t = Instant::now();
        let est = self.cfg.velocity;
        let mut seq: Vec<&[f64]> = self.frames.iter().map(|f| &f[..]).collect();
        seq.extend(forecast.iter().map(|f| &f[..]));
        let v = velocity(est, &seq, self.frame_dt())?;
        let step = self.sim.steps_done() + window;
        let frame = seq[seq.len() - 1 - est.lag()];
        land(
            (&mut *self.sim, self.transfer, &mut self.scratch),
            frame,
            &v,
            step,
        )?;
        forecast.truncate(forecast.len() - est.lag());
        for f in forecast {
            self.push(f);
        }
        self.st.newest = step;
        self.times.transfer += t.elapsed();
        Ok(())
    }

    /// Before the FE runs from here: when the state is a hand-back whose velocity was read
    /// from the frames up to it alone (a velocity without lag), and the run has a
    /// [`super::HybridConfig::retake_velocity`], the velocity is formed again, centred on the
    /// frame handed back, from the frames before it and the first frames of `forecast` (the
    /// refused window's, or one made here when there is none), unless that forecast jumps
    /// away from the frames before it ([`seam`]). A one-sided velocity carries the truncation
    /// and the forecast frames' errors with larger weights (BDF2's sum to 4 in magnitude, the
    /// central ones to 1.5), and in 2-D the FE turns a velocity error into a displacement
    /// that grows with time (measured on the fine job: docs/coupling.md, "The FE's retake of
    /// a hand-back"); the hybrid's windows do not carry it, each reading the grid's frames.
    pub(super) fn retake(
        &mut self,
        t_in: usize,
        window: usize,
        forecast: Option<&[Vec<f64>]>,
    ) -> Result<(), CouplingError> {
        let Some(est) = self.cfg.retake_velocity else {
            return Ok(());
        };
        let landed_here = self.st.windows.last().is_some_and(|w| w.1)
            && self.sim.steps_done() == self.first_window(t_in) + self.st.windows.len() * window;
        if self.cfg.velocity.lag() > 0 || !landed_here {
            return Ok(());
        }
        let made;
        let forecast = match forecast {
            Some(f) => f,
            None => {
                made = self.forecast(t_in)?;
                &made
            }
        };
        let t = Instant::now();
        let frame_dt = self.frame_dt();
        let before = est.frames() - est.lag();
        let mut seq: Vec<&[f64]> = (self.frames.iter().skip(self.frames.len() - before))
            .map(|f| &f[..])
            .collect();
        seq.extend(forecast.iter().take(est.lag()).map(|f| &f[..]));
        let step = self.sim.steps_done();
        let central = velocity(est, &seq, frame_dt)?;
        let (jump, scale) = seam(&self.frames, &central, frame_dt)?;
        if jump > SEAM_LIMIT * scale {
            self.st.retakes_declined += 1;
            self.times.transfer += t.elapsed();
            tracing::debug!(
                "step {step}: the FE takes over from a hand-back; the refused forecast's start is off the frames before it ({est:?} - BDF2 velocity {jump:.3e} > {SEAM_LIMIT} times BDF2's error estimate {scale:.3e}): velocity kept"
            );
            return Ok(());
        }
        let frame = seq[before - 1];
        land(
            (&mut *self.sim, self.transfer, &mut self.scratch),
            frame,
            &central,
            step,
        )?;
        self.st.retakes += 1;
        self.times.transfer += t.elapsed();
        tracing::debug!(
            "step {step}: the FE takes over from a hand-back, its velocity formed again by {est:?} ({est:?} - BDF2 velocity {:.2} times BDF2's error estimate)",
            jump / scale
        );
        Ok(())
    }
}

/// How far the central velocity may lie from the one-sided one, in BDF2's error estimates,
/// for a retake ([`seam`]): measured, 1.2 for a perfect forecast on the test case
/// (tests/retake.rs) and 1.6–2.2 on the fine job's retakes, 6.1 for a forecast offset by 1 %
/// of the frame, which the retake would have turned into a field 0.41 off.
const SEAM_LIMIT: f64 = 4.0;

/// Whether the refused forecast starts where the frames before it lead: the L2 difference
/// (on the grid) of the `central` velocity and the BDF2 velocity of the frames before it alone, and BDF2's own error estimate, its leading term `Δ²/3 · ∂³u/∂t³`
/// from the third difference of the last four frames. A smooth field differs by about the
/// estimate; a forecast offset from the frames before by `e` adds `7e / 12Δ` (the central
/// weights across the seam), which the FE would turn into a growing error.
fn seam(
    frames: &std::collections::VecDeque<Vec<f64>>,
    central: &[f64],
    frame_dt: f64,
) -> Result<(f64, f64), CouplingError> {
    let n = frames.len();
    if n < 4 {
        return Err(CouplingError::Setup(format!(
            "{n} frames kept: 4 are needed to retake"
        )));
    }
    let back = |j: usize| &frames[n - 1 - j][..];
    let one_sided = velocity(
        VelocityEstimate::Bdf2,
        &[back(2), back(1), back(0)],
        frame_dt,
    )?;
    let jump = (central.iter().zip(&one_sided))
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let third = (0..back(0).len())
        .map(|i| {
            let d = back(0)[i] - 3.0 * back(1)[i] + 3.0 * back(2)[i] - back(3)[i];
            d * d
        })
        .sum::<f64>()
        .sqrt();
    Ok((jump, third / (3.0 * frame_dt)))
}

/// The velocity `est` reads from `seq` (frames `frame_dt` apart).
fn velocity(
    est: VelocityEstimate,
    seq: &[&[f64]],
    frame_dt: f64,
) -> Result<Vec<f64>, CouplingError> {
    est.velocity(seq, frame_dt).ok_or_else(|| {
        CouplingError::Setup(format!(
            "{} frames are needed for the velocity",
            est.frames()
        ))
    })
}

/// The FE restarted at `step` from the grid frame `frame` and the grid velocity `v_grid`.
/// Nodes outside the grid keep the current field.
fn land(
    (sim, transfer, scratch): (
        &mut Simulation<'_>,
        &ZoneTransfer,
        &mut (Vec<f64>, Vec<f64>),
    ),
    frame: &[f64],
    v_grid: &[f64],
    step: usize,
) -> Result<(), CouplingError> {
    // Into buffers kept from the last hand-back: two fresh mesh fields a window would be
    // page faults on every hand-back.
    let (mut u, mut v) = std::mem::take(scratch);
    u.clear();
    u.extend_from_slice(sim.u());
    v.clear();
    v.resize(u.len(), 0.0);
    transfer.to_mesh_pair([frame, v_grid], [&mut u, &mut v])?;
    sim.start_from(&u, &v, step)?;
    *scratch = (u, v);
    Ok(())
}
