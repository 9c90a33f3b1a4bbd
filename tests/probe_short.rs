//! The short FE probe (`fe_probe_short`): a quarter of the full probe's steps, read against the
//! time interpolant of the recorded frames and the forecast. Its floor on the true frames, its
//! growth with the forecast's error (in the full probe's units), and that it leaves the state
//! as it found it.

use crate::coupling::hybrid::{problem, sim};
use crate::coupling::unit;
use wavecp::coupling::hybrid::{FeProbe, FeProbeShort, Indicator, WindowView};
use wavecp::coupling::transfer::ZoneTransfer;

const STRIDE: usize = 4;

#[test]
fn the_short_probe_runs_a_quarter_of_a_frame() {
    assert_eq!(FeProbeShort::steps(23), 6);
    assert_eq!(FeProbeShort::steps(8), 2);
    assert_eq!(FeProbeShort::steps(2), 1);
    assert_eq!(FeProbeShort::steps(1), 1);
}

#[test]
fn the_short_probe_reads_the_first_frames_error_like_the_full_one() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    // Frames every STRIDE steps; the window starts at frame 4 (step 32).
    let mut s = sim(&p);
    let mut frames = vec![];
    for _ in 0..7 {
        let mut g = vec![0.0; t.points()];
        t.to_grid(s.u(), &mut g).unwrap();
        frames.push(g);
        s.advance(STRIDE);
    }
    let mut s = sim(&p);
    s.advance(4 * STRIDE);
    let past: Vec<&[f64]> = frames[..=4].iter().map(|f| &f[..]).collect();
    let (mut short, mut full) = (vec![], vec![]);
    for eps in [0.0, 1e-3, 1e-2, 1e-1] {
        let forecast: Vec<Vec<f64>> = frames[5..=6]
            .iter()
            .map(|f| f.iter().map(|a| a * (1.0 + eps)).collect())
            .collect();
        for (ind, out) in [
            (&mut FeProbeShort as &mut dyn Indicator, &mut short),
            (&mut FeProbe, &mut full),
        ] {
            out.push(
                ind.score(WindowView {
                    sim: &mut s,
                    transfer: &t,
                    past: &past,
                    forecast: &forecast,
                    stride: STRIDE,
                    reads_forecast: false,
                })
                .unwrap(),
            );
        }
    }
    eprintln!(
        "forecast scaled by 1 + 0, 1e-3, 1e-2, 1e-1: short probe {short:?}, FE probe {full:?}"
    );
    assert!(short.windows(2).all(|w| w[0] < w[1]), "{short:?}");
    // The truth scores the time interpolation's own error: small, not 0.
    assert!(short[0] > 0.0 && short[0] < 5e-3, "{short:?}");
    // Above the floor it reads the first frame's error as the full probe does, within the
    // share the second forecast frame adds to the interpolant.
    for (s, f) in short[2..].iter().zip(&full[2..]) {
        assert!((s / f - 1.0).abs() < 0.35, "short {short:?} full {full:?}");
    }
    // It leaves the state as it found it.
    assert_eq!(s.steps_done(), 4 * STRIDE);
    let mut g = vec![0.0; t.points()];
    t.to_grid(s.u(), &mut g).unwrap();
    assert_eq!(g, frames[4]);
}

#[test]
fn the_short_probe_needs_three_recorded_frames() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let mut s = sim(&p);
    let g = vec![0.0; t.points()];
    let past: Vec<&[f64]> = vec![&g, &g];
    let e = FeProbeShort
        .score(WindowView {
            sim: &mut s,
            transfer: &t,
            past: &past,
            forecast: std::slice::from_ref(&g),
            stride: STRIDE,
            reads_forecast: false,
        })
        .unwrap_err();
    assert!(e.to_string().contains("3 recorded frames"), "{e}");
}

#[cfg(feature = "hdf5")]
#[test]
fn a_model_keeps_one_calibration_per_indicator() {
    use wavecp::surrogate::calibration::{Calibration, Calibrations};
    let full = Calibration::new("fe_probe", 0.1, &[(0.01, 0.02), (0.02, 0.03)]).unwrap();
    let short = Calibration::new("fe_probe_short", 0.1, &[(0.02, 0.02)]).unwrap();
    let mut c = Calibrations::default();
    c.set(full.clone());
    c.set(short.clone());
    let again = Calibration::new("fe_probe", 0.2, &[(0.5, 0.5)]).unwrap();
    c.set(again.clone());
    assert_eq!(c.indicators(), ["fe_probe", "fe_probe_short"]);
    assert_eq!(c.get("fe_probe"), Some(&again));
    assert_eq!(c.get("fe_probe_short"), Some(&short));
    assert_eq!(c.get("residual"), None);
    // Stored as a list; a file of the single-calibration days (one object, or null) reads.
    let text = serde_json::to_string(&c).unwrap();
    assert!(text.starts_with('['), "{text}");
    assert_eq!(serde_json::from_str::<Calibrations>(&text).unwrap(), c);
    let one = serde_json::to_string(&full).unwrap();
    let old: Calibrations = serde_json::from_str(&one).unwrap();
    assert_eq!(old.get("fe_probe"), Some(&full));
    let none: Calibrations = serde_json::from_str("null").unwrap();
    assert!(none.indicators().is_empty());
}
