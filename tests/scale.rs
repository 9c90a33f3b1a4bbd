//! The error scale of a hybrid run's tolerance: per window (the calibration's unit) or per run
//! (the largest field so far, the unit of `max_rel_l2_error`), on a pulse leaving a square
//! through absorbing sides.

use crate::coupling::hybrid::{self, problem, reference, sim, Persistence};
use crate::coupling::unit;
use wavecp::coupling::hybrid::{
    ErrorScale, FeProbe, Forecaster, Hybrid, HybridConfig, Indicator, WindowView,
};
use wavecp::coupling::transfer::ZoneTransfer;
use wavecp::coupling::CouplingError;

/// Scores every window the same.
struct Constant(f64);

impl Indicator for Constant {
    fn score(&mut self, _: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        Ok(self.0)
    }
}

fn cfg(tolerance: f64, error_scale: ErrorScale) -> HybridConfig {
    HybridConfig {
        error_scale,
        ..hybrid::cfg(tolerance, 0)
    }
}

fn l2(f: &[f64]) -> f64 {
    f.iter().map(|x| x * x).sum::<f64>().sqrt()
}

const LAST: usize = 240;

#[test]
fn the_run_scale_multiplies_the_score_by_the_window_inputs_over_the_largest_frame_so_far() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let (frames, _) = reference(&p, &t, LAST);
    let raw = 0.5;
    for scale in [ErrorScale::Window, ErrorScale::Run] {
        let mut s = sim(&p);
        // A tolerance nothing reaches: every window is the FE's, so its frames are the
        // reference's and the expected scores can be formed from them.
        let f = Persistence { callable: true };
        let mut h = Hybrid::new(&mut s, &t, f, Constant(raw), cfg(1e-300, scale)).unwrap();
        let sum = h.run(LAST).unwrap();
        assert_eq!(sum.windows_accepted, 0);
        let (t_in, t_out) = (3, 2);
        assert!(sum.windows.len() > 40, "{}", sum.windows.len());
        for (k, (score, _)) in sum.windows.iter().enumerate() {
            let now = t_in - 1 + k * t_out;
            let here = frames[now + 1 - t_in..=now]
                .iter()
                .map(|f| l2(f))
                .fold(0.0, f64::max);
            let most = frames[..=now].iter().map(|f| l2(f)).fold(0.0, f64::max);
            let want = match scale {
                ErrorScale::Window => raw,
                ErrorScale::Run => raw * here / most,
            };
            let got = score.expect("every window tried");
            assert!(
                (got - want).abs() <= 1e-12 * raw,
                "window {k}: {got} against {want}"
            );
        }
        if scale == ErrorScale::Run {
            // The pulse leaves: the last windows weigh a small share of the run's largest field.
            let last = sum.windows.last().unwrap().0.unwrap();
            assert!(last < 0.1 * raw, "{last}");
        }
    }
}

/// The FE run's own frames, window after window, each off by the same absolute error (a
/// share of the pulse's first frame) with its sign alternating from window to window, so
/// the FE probe sees twice of it (every window must be tried for the count to stay in step:
/// no cap, a tolerance above 0).
struct Offset {
    frames: Vec<Vec<f64>>,
    error: Vec<f64>,
    calls: usize,
}

impl Forecaster for Offset {
    fn t_in(&self) -> usize {
        3
    }
    fn t_out(&self) -> usize {
        4
    }
    fn forecast(&mut self, _: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
        let first = 3 + self.calls * 4;
        let sign = if self.calls.is_multiple_of(2) {
            1.0
        } else {
            -1.0
        };
        self.calls += 1;
        Ok(self.frames[first..first + 4]
            .iter()
            .map(|f| {
                f.iter()
                    .zip(&self.error)
                    .map(|(a, e)| a + sign * e)
                    .collect()
            })
            .collect())
    }
}

#[test]
fn the_run_scale_hands_quiet_windows_to_the_surrogate_and_the_run_error_stays_within_it() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let (frames, u_ref) = reference(&p, &t, LAST);
    let most = frames.iter().map(|f| l2(f)).fold(0.0, f64::max);
    // A forecast 1 % of the run's largest field off, the other way from the window before,
    // judged by the FE probe (≈ 2 %) at 3 %: the window scale refuses it once the window's
    // field is below two thirds of the largest.
    let error: Vec<f64> = frames[0].iter().map(|x| 0.01 * x).collect();
    let tolerance = 0.03;
    let mut accepted = vec![];
    let mut errors = vec![];
    for scale in [ErrorScale::Window, ErrorScale::Run] {
        let mut s = sim(&p);
        let f = Offset {
            frames: frames.clone(),
            error: error.clone(),
            calls: 0,
        };
        let mut h = Hybrid::new(&mut s, &t, f, FeProbe, cfg(tolerance, scale)).unwrap();
        let sum = h.run(LAST).unwrap();
        let d: Vec<f64> = s.u().iter().zip(&u_ref).map(|(a, b)| a - b).collect();
        let mut g = vec![0.0; 65 * 65];
        t.to_grid(&d, &mut g).unwrap();
        errors.push(l2(&g) / most);
        let first_rejected = sum.windows.iter().position(|w| !w.1);
        accepted.push((sum.windows_accepted, first_rejected, sum.windows.len()));
    }
    eprintln!(
        "accepted (count, first rejected, of): {accepted:?}; final error / run max: {errors:?}"
    );
    let (window, run) = (accepted[0], accepted[1]);
    // The window scale trusts the loud start, then refuses about every other window as the
    // field falls (measured: 16 of 29, the first refused the fifth); the run scale trusts
    // every window.
    assert!(window.1.unwrap() >= 2, "{accepted:?}");
    assert!(window.0 + 10 <= run.0, "{accepted:?}");
    assert_eq!((run.0, run.1), (run.2, None), "{accepted:?}");
    // What it costs: the run's error is the forecast's 1 %, not more.
    assert!(errors[1] > 0.0 && errors[1] < 0.015, "{errors:?}");
}
