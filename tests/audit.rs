//! Audits (`coupling.audit_every`): every k-th accepted window the FE re-runs the window to
//! measure the forecast's true error. They measure and change nothing: the same decisions and
//! the same bits as the run without them; a perfect forecast audits at 0, a forecast off by
//! a factor 1 + ε at ε on the first window (later ones start from its
//! scaled state); the demo reports them in `--json`.

use crate::coupling::hybrid::{cfg, problem, reference, sim, Oracle, Trusting};
use crate::coupling::unit;
use wavecp::coupling::hybrid::{Forecaster, Hybrid, HybridConfig, HybridSummary};
use wavecp::coupling::transfer::ZoneTransfer;
use wavecp::coupling::CouplingError;

/// The FE-only run's frames times `1 + eps`, window after window.
struct Scaled {
    oracle: Oracle,
    eps: f64,
}

impl Forecaster for Scaled {
    fn t_in(&self) -> usize {
        self.oracle.t_in
    }
    fn t_out(&self) -> usize {
        self.oracle.t_out
    }
    fn forecast(&mut self, past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
        let f = self.oracle.forecast(past)?;
        Ok(f.into_iter()
            .map(|g| g.iter().map(|x| x * (1.0 + self.eps)).collect())
            .collect())
    }
}

/// A hybrid run of 10 windows with every window trusted; the summary and the final field.
fn run(eps: f64, audit_every: usize) -> (HybridSummary, Vec<f64>) {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let last = 4 + 10 * 4;
    let (frames, _) = reference(&p, &t, last);
    let mut s = sim(&p);
    let f = Scaled {
        oracle: Oracle {
            frames,
            t_in: 3,
            t_out: 2,
            calls: 0,
        },
        eps,
    };
    let c = HybridConfig {
        audit_every,
        ..cfg(f64::INFINITY, 0)
    };
    let sum = Hybrid::new(&mut s, &t, f, Trusting, c)
        .unwrap()
        .run(last)
        .unwrap();
    (sum, s.u().to_vec())
}

#[test]
fn audits_measure_the_forecasts_true_error_and_change_nothing() {
    let (plain, u) = run(0.01, 0);
    assert!(plain.audits.is_empty());
    assert_eq!(plain.audit_s, 0.0);
    let (audited, ua) = run(0.01, 1);
    assert_eq!(audited.windows, plain.windows);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&ua), bits(&u), "an audit changed the run");
    assert_eq!(audited.audits.len(), 10);
    assert!(audited.audit_s > 0.0);
    // The first window starts from the FE's own state: its truth is the reference's frames,
    // so the forecast is off by exactly ε. The second starts from a hand-back whose BDF2
    // velocity spans the jump from the last recorded frame to the scaled ones: off by about
    // ε too. From the third on every frame involved is 1 + ε times too large, which the
    // (linear) FE carries on: the audit measures the window's own error, not the run's
    // accumulated one, so those read far below ε.
    let a0 = audited.audits[0];
    assert_eq!((a0.window, a0.score), (0, 0.0));
    assert!((a0.error / 0.01 - 1.0).abs() < 1e-9, "{a0:?}");
    assert_eq!(a0.scaled_error, a0.error, "window scale: factor 1");
    let a1 = audited.audits[1].error;
    assert!(a1 > 0.005 && a1 < 0.015, "{a1}");
    for a in &audited.audits[2..] {
        assert!(a.error > 0.0 && a.error < 0.002, "{a:?}");
    }
    eprintln!(
        "audits of a forecast 1 % off: {:?}",
        audited.audits.iter().map(|a| a.error).collect::<Vec<_>>()
    );
}

#[test]
fn a_perfect_forecast_audits_at_zero_and_every_kth_window_is_audited() {
    let (sum, _) = run(0.0, 3);
    let which: Vec<usize> = sum.audits.iter().map(|a| a.window).collect();
    assert_eq!(which, [2, 5, 8]);
    // Those windows start from handed-back states, so the FE's truth is the hybrid's own
    // continuation, not the reference the oracle forecasts: small, not 0.
    for a in &sum.audits {
        assert!(a.error > 0.0 && a.error < 0.02, "{a:?}");
    }
    // The first window's truth is the reference itself.
    let (first, _) = run(0.0, 1);
    assert_eq!(first.audits[0].error, 0.0);
}

#[cfg(feature = "hdf5")]
#[test]
fn the_demo_reports_its_audits() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wavecp"))
        .current_dir(dir.path())
        .args([
            "--log",
            "warn",
            "demo",
            "--json",
            "--set",
            "coupling.audit_every=1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = &v["hybrid"];
    let audits = h["audits"].as_array().expect("an audits list");
    assert_eq!(
        audits.len() as u64,
        h["windows_accepted"].as_u64().unwrap(),
        "{h}"
    );
    let above = h["audits_above_tolerance"]
        .as_u64()
        .expect("calibrated: a count");
    assert!(above as usize <= audits.len());
    for a in audits {
        let e = a["error"].as_f64().unwrap();
        assert!(e > 0.0 && e < 1.0, "{a}");
    }
}

#[cfg(feature = "hdf5")]
#[test]
fn a_rollout_calibration_samples_the_windows_a_hybrid_run_sees() {
    use wavecp::coupling::calibrate::{calibrate, sample, Check, Plan, Sampling};
    let dir = tempfile::tempdir().unwrap();
    let model = crate::coupling::hybrid::untrained(dir.path(), 2.0 * 0.01);
    let s = Sampling {
        model,
        job: crate::common::repo("examples/indicator_study/dataset.toml"),
        indicators: vec!["fe_probe".into()],
        scenarios: 3,
        seed: 5,
        frequency_factor: 1.0,
        source_box: None,
        rollout: 1000,
    };
    let r = sample(&s).unwrap();
    let slide = sample(&Sampling {
        rollout: 0,
        ..s.clone()
    })
    .unwrap();
    // 40 frames a scenario, 8 in and 8 out: after the 8-frame warm-up, 4 windows of 8 frames
    // (every 8th frame), against the 25 sliding windows (every frame).
    assert_eq!(r.errors.len(), 3 * 4);
    assert_eq!(slide.errors.len(), 3 * 25);
    // A scenario's first window starts from the FE's own state in both: the same forecast,
    // indicator and truth. The later ones start from hand-backs and differ.
    for k in 0..3 {
        let (a, b) = (4 * k, 25 * k);
        assert_eq!(r.scenario[a], k);
        assert!((r.errors[a] / slide.errors[b] - 1.0).abs() < 1e-9, "{k}");
        assert!(
            (r.scores[0][a] / slide.scores[0][b] - 1.0).abs() < 1e-9,
            "{k}"
        );
    }
    assert!(r
        .errors
        .iter()
        .zip(r.scenario.iter())
        .any(|(e, _)| *e > 0.0));
    let check = Check {
        frequency_factor: 1.0,
        source_box: None,
    };
    let (c, rep) = calibrate(
        &Sampling {
            scenarios: 4,
            ..s.clone()
        },
        // Each left-out fold has one calibration scenario: a risk of 0.5 is the smallest the
        // rule by scenario meets with it (⌊0.5 · 2⌋ = 1).
        Plan {
            risk: 0.5,
            holdout: 0.5,
            check,
            fit_scenarios: 0,
            fit_rollout: 0,
        },
        &[1.0, 1e9],
    )
    .unwrap();
    assert_eq!((rep.calibration_windows, rep.held_out_windows), (8, 8));
    assert_eq!(c.scores.len(), 8);
    // Each window's scenario kept with it: the rule by scenario holds besides the windows'.
    assert_eq!((c.scenarios.len(), c.scenario_count()), (8, 2));
    assert_eq!(rep.calibration_scenarios, 2);
    // The windows `--windows` writes: the calibration side is what the calibration holds,
    // the held-out side what the check counts, scenario by scenario (2 a side, 4 windows each).
    let side = |h: bool| -> Vec<_> { rep.windows.iter().filter(|w| w.held_out == h).collect() };
    let mut cal: Vec<f64> = side(false).iter().map(|w| w.score).collect();
    cal.sort_by(f64::total_cmp);
    assert_eq!(cal, c.scores);
    let held = side(true);
    assert_eq!(held.len(), 8);
    let h = &rep.held_out[0];
    assert_eq!(h.per_scenario.len(), 2);
    for (k, &[acc, over]) in h.per_scenario.iter().enumerate() {
        let mine: Vec<_> = held.iter().filter(|w| w.scenario == k).collect();
        assert_eq!(mine.len(), 4);
        let taken: Vec<_> = mine.iter().filter(|w| w.score < h.threshold).collect();
        assert_eq!(acc, taken.len());
        assert_eq!(over, taken.iter().filter(|w| w.error > 1.0).count());
    }
    assert_eq!(
        h.per_scenario.iter().map(|p| p[0]).sum::<usize>(),
        h.accepted
    );
    // Each calibration scenario checked by the rule fitted on the other one alone (at a
    // tolerance above every error: the other's largest score is the threshold).
    let mut acc = 0;
    for k in 0..2 {
        let of = |in_k: bool| -> Vec<(f64, f64, u32)> {
            side(false)
                .iter()
                .filter(|w| (w.scenario == k) == in_k)
                .map(|w| (w.score, w.error, w.scenario as u32))
                .collect()
        };
        let t =
            wavecp::surrogate::calibration::Calibration::by_scenario("fe_probe", 0.5, &of(false))
                .unwrap()
                .threshold(1e9);
        acc += of(true).iter().filter(|p| p.0 < t).count();
    }
    let l = &rep.leave_one_scenario_out[1];
    assert!(acc > 0, "no window accepted: the check checks nothing");
    assert_eq!((l.tolerance, l.accepted), (1e9, acc));
    assert_eq!(l.exceeded_fraction, 0.0);
    assert!(
        l.scenarios_accepting <= 2 && l.exceeded_fraction <= l.worst_scenario_exceeded_fraction
    );
    // Two in a row, then the FE takes one: windows 0, 1 and 3 of each scenario's 4 tried and
    // audited (the first two as with every window accepted).
    let two = sample(&Sampling {
        rollout: 2,
        ..s.clone()
    })
    .unwrap();
    assert_eq!(two.errors.len(), 3 * 3);
    for k in 0..3 {
        assert_eq!(two.errors[3 * k].to_bits(), r.errors[4 * k].to_bits());
        assert_eq!(
            two.errors[3 * k + 1].to_bits(),
            r.errors[4 * k + 1].to_bits()
        );
    }
}
