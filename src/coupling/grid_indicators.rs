//! Error indicators that read only the frames on the zone grid — the recorded ones and the
//! forecast — and no FE operator: their cost is fixed by the grid, as the network's is, so
//! on a fine mesh they cost a small share of the inference where every FE-based indicator
//! costs more than it.
//!
//! What they see is how smoothly the forecast continues the recorded trajectory in time. The
//! frames are many per period of the wave (the fine job: 25–50), so high differences in time
//! of the exact trajectory are small (`(ω Δt)^q` of the field), while a forecast's error
//! enters them with binomial weights of order one: a jump at the seam between the recorded
//! and the forecast frames, or frame-to-frame jitter inside the forecast. An error that
//! continues the recorded frames smoothly passes unseen.

use super::error_model::ErrorModel;
use super::hybrid::{Indicator, WindowView};
use super::indicators::lagrange;
use super::CouplingError;

/// Which grid signal a [`GridSmoothness`] scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GridSignal {
    /// The forecast's first frame against the Lagrange extrapolation of degree `d` through
    /// the last `d + 1` recorded frames.
    Extrapolate(usize),
    /// The largest `q`-th difference in time over the frame sequences that hold both
    /// recorded and forecast frames.
    Seam(usize),
    /// The largest `q`-th difference in time inside the forecast.
    Rough(usize),
    /// The largest `q`-th difference in time inside the recorded frames: the trajectory's
    /// own level, the floor of the others.
    Past(usize),
}

/// A grid-only indicator (see the module doc): the score is the signal's L2 norm over the
/// grid points inside the mesh, relative to the forecast's RMS frame there.
#[derive(Debug, Clone, Copy)]
pub struct GridSmoothness {
    pub signal: GridSignal,
}

/// The `q`-th forward difference weights: `(−1)^(q−k) C(q, k)`, `k = 0..=q`.
fn difference(q: usize) -> Vec<f64> {
    let mut c = vec![1.0f64];
    for _ in 0..q {
        let mut next = vec![0.0; c.len() + 1];
        for (k, &v) in c.iter().enumerate() {
            next[k] -= v;
            next[k + 1] += v;
        }
        c = next;
    }
    c
}

/// Lagrange extrapolation weights through the points `0..=d` at `d + 1`.
fn extrapolation(d: usize) -> Vec<f64> {
    let xs: Vec<f64> = (0..=d).map(|j| j as f64).collect();
    lagrange(&xs, (d + 1) as f64)
}

impl GridSmoothness {
    /// The order of [`GridSmoothness::seam`]: on 1 800 held-out windows of the fine
    /// conditioned model the third difference ranked the true error best (Spearman 0.86;
    /// orders 2, 4, 5, 6: 0.73, 0.84, 0.85, 0.83; docs/coupling.md). Lower orders leave more
    /// of the trajectory in the floor; higher ones more of the frames' sub-frame jitter.
    pub const SEAM_ORDER: usize = 3;

    /// The shipped grid indicator, `grid_seam`: the seam's third difference.
    pub fn seam() -> Self {
        Self {
            signal: GridSignal::Seam(Self::SEAM_ORDER),
        }
    }

    /// The frames the signal combines (`first..first + weights.len()` of the sequence
    /// `past ++ forecast`) and their weights, for a window of `n_past` recorded frames.
    fn stencils(&self, n_past: usize, n_out: usize) -> Result<Vec<(usize, Vec<f64>)>, String> {
        if n_out == 0 {
            return Err("a grid indicator needs a forecast; the window has none".into());
        }
        let total = n_past + n_out;
        Ok(match self.signal {
            GridSignal::Extrapolate(d) => {
                if d + 1 > n_past {
                    return Err(format!(
                        "extrapolating with degree {d} needs {} recorded frames, the window \
                         has {n_past}",
                        d + 1
                    ));
                }
                let mut w: Vec<f64> = extrapolation(d).iter().map(|c| -c).collect();
                w.push(1.0);
                vec![(n_past - d - 1, w)]
            }
            GridSignal::Seam(q) => {
                if q + 1 > total {
                    return Err(format!(
                        "a difference of order {q} needs {} frames, the window has {total}",
                        q + 1
                    ));
                }
                let w = difference(q);
                // Sequences [s, s + q] with s < n_past <= s + q.
                (n_past.saturating_sub(q)..n_past)
                    .filter(|&s| s + q < total)
                    .map(|s| (s, w.clone()))
                    .collect()
            }
            GridSignal::Rough(q) => {
                if q + 1 > n_out {
                    return Err(format!(
                        "a difference of order {q} inside the forecast needs {} forecast \
                         frames, the model forecasts {n_out}",
                        q + 1
                    ));
                }
                let w = difference(q);
                (n_past..total - q).map(|s| (s, w.clone())).collect()
            }
            GridSignal::Past(q) => {
                if q + 1 > n_past {
                    return Err(format!("order {q} needs {} recorded frames", q + 1));
                }
                let w = difference(q);
                (0..n_past - q).map(|s| (s, w.clone())).collect()
            }
        })
    }
}

/// The forecast's RMS frame over the grid points `inside` the mesh: the unit of every grid
/// signal.
fn forecast_rms(w: &WindowView<'_, '_>, inside: &[bool]) -> f64 {
    let mut sum = 0.0;
    for f in w.forecast {
        sum += f
            .iter()
            .zip(inside)
            .filter(|(_, &i)| i)
            .map(|(v, _)| v * v)
            .sum::<f64>();
    }
    (sum / w.forecast.len() as f64)
        .sqrt()
        .max(f64::MIN_POSITIVE)
}

impl GridSmoothness {
    /// The signal's L2 norm over the grid points inside the mesh for each frame sequence it
    /// combines, relative to the forecast's RMS frame there.
    pub(super) fn sequence_norms(&self, w: &WindowView<'_, '_>) -> Result<Vec<f64>, CouplingError> {
        let inside = w.transfer.mask();
        self.norms(w, &inside, forecast_rms(w, &inside))
    }

    /// [`GridSmoothness::sequence_norms`] with the mask and the forecast's RMS frame given, so
    /// that several signals of one window compute them once.
    fn norms(
        &self,
        w: &WindowView<'_, '_>,
        inside: &[bool],
        scale: f64,
    ) -> Result<Vec<f64>, CouplingError> {
        let (n_past, n_out) = (w.past.len(), w.forecast.len());
        let stencils = self.stencils(n_past, n_out).map_err(CouplingError::Setup)?;
        let frame = |k: usize| -> &[f64] {
            if k < n_past {
                w.past[k]
            } else {
                &w.forecast[k - n_past]
            }
        };
        let mut norms = Vec::with_capacity(stencils.len());
        for (first, weights) in &stencils {
            let mut s = 0.0;
            for (p, &i) in inside.iter().enumerate() {
                if i {
                    let v: f64 = weights
                        .iter()
                        .enumerate()
                        .map(|(j, c)| c * frame(first + j)[p])
                        .sum();
                    s += v * v;
                }
            }
            norms.push(s.sqrt() / scale);
        }
        Ok(norms)
    }
}

impl Indicator for GridSmoothness {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        Ok(self.sequence_norms(&w)?.into_iter().fold(0.0, f64::max))
    }
}

/// The seam orders the learned grid indicator reads: every sequence straddling the seam for
/// each (2 + 3 + … + 7 = 27 inputs when the model forecasts ≥ 7 frames). Chosen offline on
/// the fine model: one order alone ranks at most 0.86, all of them fitted together 0.95
/// (docs/coupling.md).
pub const LEARNED_ORDERS: std::ops::RangeInclusive<usize> = 2..=7;

/// What [`learned_inputs`] are, for the error model's messages.
pub const LEARNED_INPUTS: &str = "ln of the seam differences of orders 2-7, each sequence";

/// The inputs of an error model fitted on the windows of hybrid runs as well
/// (`wavecp calibrate --fit-rollout`): [`learned_inputs`], then 1 when the window reads the
/// previous window's forecast ([`WindowView::reads_forecast`]), else 0.
pub const LEARNED_INPUTS_RUN: &str =
    "ln of the seam differences of orders 2-7, each sequence; 1 after an accepted window";

/// [`learned_inputs`] with the run's input of [`LEARNED_INPUTS_RUN`].
pub fn learned_inputs_run(w: &WindowView<'_, '_>) -> Result<Vec<f64>, CouplingError> {
    let mut x = learned_inputs(w)?;
    x.push(if w.reads_forecast { 1.0 } else { 0.0 });
    Ok(x)
}

/// The inputs of `grid_learned`: the logarithm of each seam sequence's difference norm
/// ([`GridSignal::Seam`]) for the orders of [`LEARNED_ORDERS`], floored at 1e-12.
pub fn learned_inputs(w: &WindowView<'_, '_>) -> Result<Vec<f64>, CouplingError> {
    let inside = w.transfer.mask();
    let scale = forecast_rms(w, &inside);
    let mut x = vec![];
    for q in LEARNED_ORDERS {
        let s = GridSmoothness {
            signal: GridSignal::Seam(q),
        };
        for v in s.norms(w, &inside, scale)? {
            // `max` would turn a NaN into the floor: a small error, an accepted window.
            if !v.is_finite() {
                return Err(CouplingError::Setup(
                    "a seam difference is not finite: the window's frames hold NaN or Inf".into(),
                ));
            }
            x.push(v.max(1e-12).ln());
        }
    }
    Ok(x)
}

/// `grid_learned`: the window error its fitted [`ErrorModel`] predicts from
/// [`learned_inputs`], in error units (relative L2 of the window). Fitted by
/// `wavecp calibrate --indicator grid_learned` and stored with the calibration.
#[derive(Debug, Clone)]
pub struct GridLearned {
    pub model: ErrorModel,
}

impl Indicator for GridLearned {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        let x = if self.model.inputs == LEARNED_INPUTS_RUN {
            learned_inputs_run(&w)?
        } else {
            learned_inputs(&w)?
        };
        let ln = self.model.predict_ln(&x).map_err(CouplingError::Setup)?;
        Ok(ln.exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_annihilate_polynomials_of_lower_degree() {
        for q in 1..7 {
            let w = difference(q);
            for deg in 0..q {
                let v: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(k, c)| c * (k as f64).powi(deg as i32))
                    .sum();
                assert!(v.abs() < 1e-9, "order {q}, degree {deg}: {v}");
            }
        }
        for d in 0..7 {
            let w = extrapolation(d);
            for deg in 0..=d {
                let v: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(k, c)| c * (k as f64).powi(deg as i32))
                    .sum();
                let exact = ((d + 1) as f64).powi(deg as i32);
                assert!((v - exact).abs() < 1e-8 * exact.max(1.0), "{d} {deg}");
            }
        }
    }
}
