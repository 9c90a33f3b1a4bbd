//! The rule by scenario of a calibration (`surrogate::calibration`'s module doc) through
//! `wavecp calibrate --out-of-range`: each window keeps its scenario, calls number theirs
//! apart, the threshold is at most the windows' rule's, and the report sets the two side by
//! side on the held-out windows. On the shipped fine model over a 50 × 50 mesh.

use crate::out_of_range_cal::{check, sampling, shipped};
use wavecp::coupling::calibrate::calibrate_out_of_range;
use wavecp::surrogate::calibration::{scenarios_needed, Basis};

#[test]
fn windows_keep_their_scenarios_across_calls_and_the_rule_by_scenario_bounds_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mut base) = shipped();
    base.out_of_range = None;
    // Two calls of the higher frequency, each calibrating with 2 scenarios (half of 4).
    let mut s = sampling(dir.path(), &model, 1.6, None);
    s.scenarios = 4;
    let tols = [0.05, 0.1, 0.3];
    let (one, r1) = calibrate_out_of_range(&s, &base, (0.2, 0.5, check(1.6, None)), &tols).unwrap();
    s.seed += 10;
    let (two, r2) = calibrate_out_of_range(&s, &one, (0.2, 0.5, check(1.6, None)), &tols).unwrap();
    let (o1, o2) = (one.out_of_range.unwrap(), two.out_of_range.unwrap());
    assert_eq!(o1.scenarios.len(), o1.scores.len());
    assert_eq!(o2.scenarios.len(), o2.scores.len());
    // The second call's scenarios are new ones, not the first call's again.
    let cal_scenarios = |r: &wavecp::coupling::calibrate::CalibrationReport| {
        let mut v: Vec<usize> = (r.windows.iter())
            .filter(|w| !w.held_out && !w.outside.is_empty())
            .map(|w| w.scenario)
            .collect();
        v.dedup();
        v.len()
    };
    assert_eq!(r1.calibration_scenarios, cal_scenarios(&r1));
    assert_eq!(
        r2.calibration_scenarios,
        r1.calibration_scenarios + cal_scenarios(&r2)
    );
    assert_eq!(o2.scenario_count(), r2.calibration_scenarios);
    assert_eq!(r2.scenarios_needed, scenarios_needed(0.2));
    for g in &r2.regimes {
        let b = Basis::Regime(g.outside.join("+"));
        assert_eq!(g.scenarios, o2.scenarios_behind(&b));
    }
    // At most the windows' rule, on each regime and pooled; the report's side-by-side check
    // is the windows' rule's own.
    let plain = o2.windows_rule_only();
    assert!(plain.scenarios.is_empty() && plain.regimes.iter().all(|r| r.scenarios.is_empty()));
    let names = vec!["frequency".to_string()];
    for (h, &tol) in r2.held_out.iter().zip(&tols) {
        assert!(o2.threshold(tol) <= plain.threshold(tol));
        let (a, b) = (
            o2.threshold_outside(&names, tol).0,
            plain.threshold_outside(&names, tol).0,
        );
        assert!(a <= b, "{a} > {b}");
        assert_eq!(h.windows_rule.threshold, b);
        assert_eq!(h.threshold, a);
        assert!(h.accepted <= h.windows_rule.accepted);
    }
    // A calibration of too few scenarios for its risk accepts nothing: 4 scenarios at 0.2
    // meet it (⌊0.2 · 5⌋ = 1), none at 0.1 (⌊0.1 · 5⌋ = 0).
    let n = o2.scenario_count();
    let mut strict = (*o2).clone();
    strict.risk = 0.1;
    if n < scenarios_needed(0.1) {
        assert_eq!(strict.threshold(0.3), 0.0);
    }
    assert!(n >= scenarios_needed(0.2) || o2.threshold(0.3) == 0.0);
}

/// `wavecp calibrate` says when its calibration has too few scenarios for the rule by
/// scenario to accept anything at its risk, and not when it has enough.
#[test]
fn calibrate_warns_of_too_few_scenarios_for_the_risk() {
    let dir = tempfile::tempdir().unwrap();
    let run = |risk: &str| {
        let o = std::process::Command::new(crate::common::wavecp_bin())
            .args(["--log", "warn", "calibrate"])
            .arg(crate::common::repo("models/demo_cp.safetensors"))
            .arg(crate::common::repo("examples/indicator_study/dataset.toml"))
            .args([
                "--indicator",
                "fe_probe",
                "--scenarios",
                "4",
                "--risk",
                risk,
            ])
            .args(["--tolerances", "0.5", "--dry-run", "--out"])
            .arg(dir.path().join("m.safetensors"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (String::from_utf8_lossy(&o.stderr).into_owned(), rep)
    };
    let (e, rep) = run("0.1");
    assert_eq!(rep["calibration_scenarios"], 2);
    assert!(
        e.contains("the calibration has 2 scenarios") && e.contains("needs 9"),
        "{e}"
    );
    // Nothing accepted under both rules, what the windows' rule alone would accept beside it.
    assert_eq!(rep["held_out"][0]["threshold"], 0.0);
    let (e, rep) = run("0.5");
    assert!(!e.contains("scenarios: at a risk"), "{e}");
    assert_eq!(rep["scenarios_needed"], 1);
}
