//! A calibration out of the trained ranges (`wavecp calibrate --out-of-range`): sampled with
//! the model's own error model, stored beside the calibration in range (which it leaves as it
//! was), accumulated over regimes, and used by a run whose source lies outside the ranges
//! with `coupling.out_of_range = "trust"` — only by such a run. On the shipped conditioned
//! fine model over a 50 × 50 mesh of its square, so that each scenario takes a second.

use std::path::{Path, PathBuf};
use wavecp::coupling::calibrate::{calibrate_out_of_range, Check, Sampling};
use wavecp::surrogate::calibration::Calibration;
use wavecp::surrogate::modelfile;

/// The fine model's dataset job on a 50 × 50 mesh, 40 frames a run.
fn coarse_dataset(dir: &Path) -> PathBuf {
    let src = std::fs::read_to_string(crate::common::repo(
        "examples/fine_square/dataset_full.toml",
    ))
    .unwrap();
    let job = src
        .replace("nx = 999", "nx = 49")
        .replace("ny = 999", "ny = 49")
        .replace("count = 165", "count = 40");
    assert_ne!(job, src);
    let p = dir.join("dataset.toml");
    std::fs::write(&p, job).unwrap();
    p
}

pub fn sampling(dir: &Path, model: &Path, factor: f64, source_box: Option<[f64; 4]>) -> Sampling {
    Sampling {
        model: model.to_path_buf(),
        job: coarse_dataset(dir),
        indicators: vec!["grid_learned".into()],
        scenarios: 2,
        seed: 11,
        frequency_factor: factor,
        source_box,
        rollout: 0,
    }
}

pub fn check(factor: f64, source_box: Option<[f64; 4]>) -> Check {
    Check {
        frequency_factor: factor,
        source_box,
    }
}

/// The shipped fine model and its calibration of `grid_learned`, with the windows out of
/// range pooled only (as sampled before regimes were kept), so that the regimes are the
/// test's own, and without scenarios: the windows' rule, which a regime of the one scenario
/// a call here calibrates with has (tests/scenario_rule.rs has the rule by scenario).
pub fn shipped() -> (PathBuf, Calibration) {
    let model = crate::common::repo("models/fine_prior_cp.safetensors");
    let mut cal = modelfile::load(&model)
        .unwrap()
        .meta
        .calibrations
        .get("grid_learned")
        .cloned()
        .expect("the shipped fine model carries a grid_learned calibration");
    let o = cal.out_of_range.as_mut().expect("and one out of range");
    o.regimes.clear();
    (model, cal.windows_rule_only())
}

#[test]
fn a_calibration_out_of_range_keeps_the_one_in_range_and_adds_up_over_regimes() {
    let dir = tempfile::tempdir().unwrap();
    let (model, base) = shipped();
    let (freq, r1) = calibrate_out_of_range(
        &sampling(dir.path(), &model, 1.6, None),
        &base,
        (0.1, 0.5, check(1.6, None)),
        &[0.05],
    )
    .unwrap();
    assert_eq!(r1.regime, "out_of_range");
    // The calibration in range and its error model are untouched.
    let in_range = |c: &Calibration| (c.scores.clone(), c.errors.clone(), c.estimator.clone());
    assert_eq!(in_range(&freq), in_range(&base));
    let o1 = freq.out_of_range.as_ref().expect("stored out of range");
    assert!(o1.estimator.is_none() && o1.out_of_range.is_none());
    assert_eq!(o1.scores.len(), r1.calibration_windows);
    assert!(
        r1.calibration_windows > 10 && r1.held_out_windows > 10,
        "{r1:?}"
    );
    // Its scores are the model's error model's: the held-out ranking is not noise.
    assert!(r1.spearman_calibration > 0.3, "{r1:?}");
    // A second regime adds its windows to the first's.
    let b = [0.05, 0.2, 0.25, 0.75];
    let (both, r2) = calibrate_out_of_range(
        &sampling(dir.path(), &model, 1.0, Some(b)),
        &freq,
        (0.1, 0.5, check(1.0, Some(b))),
        &[0.05],
    )
    .unwrap();
    let o2 = both.out_of_range.as_ref().unwrap();
    assert_eq!(r2.source_box, Some(b));
    assert!(r2.calibration_windows > o1.scores.len());
    assert_eq!(o2.scores.len(), r2.calibration_windows);
    let pairs = |c: &Calibration| {
        let mut p: Vec<(u64, u64)> = (c.scores.iter().zip(&c.errors))
            .map(|(s, e)| (s.to_bits(), e.to_bits()))
            .collect();
        p.sort_unstable();
        p
    };
    let (p1, p2) = (pairs(o1), pairs(o2));
    assert!(p1.iter().all(|p| p2.binary_search(p).is_ok()));
    assert_eq!(in_range(&both), in_range(&base));
    // Each window is filed under its scenario's regime too: the higher frequency's under
    // `frequency` (those of a scenario drawn just above the trained range under none), the
    // box's, whose x is well left of the trained sources, under `source_x`.
    let regime = |c: &Calibration, name: &str| {
        (c.regimes.iter())
            .find(|r| r.name() == name)
            .map_or(0, |r| r.scores.len())
    };
    let tagged = |r: &wavecp::coupling::calibrate::CalibrationReport, name: &str| {
        (r.windows.iter())
            .filter(|w| !w.held_out && w.outside.join("+") == name)
            .count()
    };
    assert!(
        o1.regimes.iter().all(|r| r.name() == "frequency"),
        "{:?}",
        o1.regimes
    );
    assert_eq!(regime(o1, "frequency"), tagged(&r1, "frequency"));
    assert_eq!(regime(o2, "frequency"), regime(o1, "frequency"));
    assert!(tagged(&r2, "source_x") > 10, "{:?}", r2.regimes);
    assert_eq!(regime(o2, "source_x"), tagged(&r2, "source_x"));
    assert_eq!(r2.regimes.len(), o2.regimes.len());
    // Scenarios in range, or a calibration of another indicator, are refused.
    let e = calibrate_out_of_range(
        &sampling(dir.path(), &model, 1.0, None),
        &base,
        (0.1, 0.5, check(1.0, None)),
        &[0.05],
    )
    .unwrap_err();
    assert!(e.to_string().contains("frequency factor"), "{e}");
    let mut other = sampling(dir.path(), &model, 1.6, None);
    other.indicators = vec!["grid_seam".into()];
    let e =
        calibrate_out_of_range(&other, &base, (0.1, 0.5, check(1.6, None)), &[0.05]).unwrap_err();
    assert!(e.to_string().contains("grid_seam"), "{e}");
}

/// The threshold a run reports: the calibration out of range's for a source clearly outside
/// the trained ranges with `trust` — its own regime's, where it has one — the one in range
/// otherwise (in range, only just outside, or no calibration out of range, which the run
/// warns about).
#[test]
fn only_a_trusted_run_out_of_range_thresholds_with_the_calibration_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let (model, base) = shipped();
    let b = [0.05, 0.2, 0.25, 0.75];
    // The shipped windows out of range, pooled only, and the box's, which the call files
    // under a regime.
    let (c, _) = calibrate_out_of_range(
        &sampling(dir.path(), &model, 1.0, Some(b)),
        &base,
        (0.1, 0.5, check(1.0, Some(b))),
        &[0.05],
    )
    .unwrap();
    let mut l = modelfile::load(&model).unwrap();
    l.meta.calibrations.set(c.clone());
    let with = dir.path().join("ood.safetensors");
    modelfile::save(&with, &l.model, &l.meta, None).unwrap();
    l.meta.calibrations.set(Calibration {
        out_of_range: None,
        ..base.clone()
    });
    let without = dir.path().join("in_range_only.safetensors");
    modelfile::save(&without, &l.model, &l.meta, None).unwrap();
    let tol = 0.05;
    let o = c.out_of_range.as_ref().unwrap();
    let outside = |p: &[&str]| {
        let names: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        o.threshold_outside(&names, tol).0
    };
    let (t_in, t_x, t_pooled) = (
        base.threshold(tol),
        outside(&["source_x"]),
        o.threshold(tol),
    );
    assert_eq!(o.regimes.len(), 1, "{:?}", o.regimes);
    assert!(
        t_in != t_x && t_x != t_pooled,
        "the case does not tell them apart: {t_in} {t_x} {t_pooled}"
    );
    let job = crate::common::repo("examples/fine_square/hybrid_prior.toml");
    let run = |model: &Path, (frequency, x): (&str, &str), trust: bool| {
        let out = dir.path().join("run.vtkhdf");
        let sets = [
            "mesh.generate.nx=49".to_string(),
            "mesh.generate.ny=49".to_string(),
            "time.end=0.6".to_string(),
            format!("source.0.frequency={frequency}"),
            format!("source.0.position=[{x}, 0.5]"),
            format!("coupling.model=\"{}\"", model.display()),
            format!("coupling.tolerance={tol}"),
            format!(
                "coupling.out_of_range=\"{}\"",
                if trust { "trust" } else { "fe" }
            ),
            format!("output.path=\"{}\"", out.display()),
        ];
        crate::common::solve_json(&job, &sets, &[])["hybrid"].clone()
    };
    let threshold = |model: &Path, source: (&str, &str), trust: bool| {
        let h = run(model, source, trust);
        let from = h["indicator_calibration"].as_str().unwrap().to_string();
        (h["indicator_threshold"].as_f64().unwrap(), from)
    };
    // x = 0.1 is left of the trained sources (0.28-0.73): the box's regime. 2.6 Hz is above
    // the trained 1-2 Hz, where the calibration has no regime: the pooled windows.
    let mid = "0.5";
    let x = |t: f64, from: &str| (t, from.to_string());
    assert_eq!(
        threshold(&with, ("1.5", "0.1"), true),
        x(t_x, "out_of_range:source_x")
    );
    assert_eq!(
        threshold(&with, ("2.6", mid), true),
        x(t_pooled, "out_of_range:pooled")
    );
    // Outside in both: the smaller of the pooled and the box regime's.
    assert_eq!(
        threshold(&with, ("2.6", "0.1"), true),
        x(t_x.min(t_pooled), "out_of_range:smallest:pooled,source_x")
    );
    assert_eq!(threshold(&with, ("1.5", mid), true), x(t_in, "in_range"));
    // The model records the ranges its dataset drew from (x from 0.25): x = 0.27, left of
    // the trained sources (from 0.28), is inside them, not reported; x = 0.24 is only just
    // outside (0.17 half-widths past the training runs), reported, and decided by the
    // calibration in range, with `trust` or without — the same windows scored, the same
    // decisions — where a source clearly outside leaves every window to the FE untried.
    let windows = |model: &Path, x: &str, trust: bool, reported: usize| {
        let h = run(model, ("1.5", x), trust);
        let n = h["out_of_range"].as_array().map_or(0, Vec::len);
        assert_eq!(n, reported, "{h}");
        h["windows"].as_array().unwrap().clone()
    };
    assert_eq!(threshold(&with, ("1.5", "0.27"), true), x(t_in, "in_range"));
    windows(&with, "0.27", false, 0);
    assert_eq!(threshold(&with, ("1.5", "0.24"), true), x(t_in, "in_range"));
    let just = windows(&with, "0.24", false, 1);
    assert!(just.iter().all(|w| w[0].is_f64()), "{just:?}");
    assert_eq!(just, windows(&with, "0.24", true, 1));
    assert!(windows(&with, "0.1", false, 1)
        .iter()
        .all(|w| w[0].is_null() && w[1] == false));
    // A model without them (trained before datasets recorded them) reports x = 0.27, past its
    // training runs, and decides it as the source just outside above.
    let mut old = modelfile::load(&with).unwrap();
    old.meta.conditioning.as_mut().unwrap().sampled = None;
    let unrecorded = dir.path().join("unrecorded.safetensors");
    modelfile::save(&unrecorded, &old.model, &old.meta, None).unwrap();
    assert_eq!(
        threshold(&unrecorded, ("1.5", "0.27"), true),
        x(t_in, "in_range")
    );
    windows(&unrecorded, "0.27", false, 1);
    assert_eq!(
        threshold(&without, ("1.5", "0.1"), true),
        x(t_in, "in_range")
    );
}

/// `wavecp calibrate --out-of-range` needs a calibration in range of the indicator, keeps its
/// error model (no refit, no rollout) and scenarios out of range; each refusal names why,
/// before any scenario is run, and writes nothing.
#[test]
fn calibrate_out_of_range_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let job = coarse_dataset(dir.path());
    let out = dir.path().join("out.safetensors");
    let run = |model: &str, extra: &[&str]| {
        let mut c = std::process::Command::new(crate::common::wavecp_bin());
        c.args(["--log", "error", "calibrate"])
            .arg(crate::common::repo(model))
            .arg(&job)
            .args(["--indicator", "grid_learned", "--out-of-range", "--out"])
            .arg(&out)
            .args(extra);
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = run("models/demo_cp.safetensors", &["--frequency-factor", "1.6"]);
    assert!(e.contains("no calibration of `grid_learned`"), "{e}");
    // A model not conditioned on its scenario has no ranges to leave.
    let o = std::process::Command::new(crate::common::wavecp_bin())
        .args(["--log", "error", "calibrate"])
        .arg(crate::common::repo("models/fine_full_cp.safetensors"))
        .arg(&job)
        .args([
            "--indicator",
            "fe_probe",
            "--out-of-range",
            "--frequency-factor",
            "1.6",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("not conditioned"), "{e}");
    let shipped = "models/fine_prior_cp.safetensors";
    let e = run(
        shipped,
        &["--frequency-factor", "1.6", "--fit-scenarios", "4"],
    );
    assert!(e.contains("--fit-scenarios"), "{e}");
    let e = run(shipped, &[]);
    assert!(e.contains("frequency factor"), "{e}");
    let e = run(shipped, &["--source-box", "0.2,0.1,0,1"]);
    assert!(e.contains("--source-box"), "{e}");
    // A windows file that cannot be written is refused before the scenarios run: no model
    // is written (checked below), where after them the calibrated model would be.
    let bad = dir.path().join("no-such-dir").join("w.jsonl");
    let e = run(
        shipped,
        &[
            "--frequency-factor",
            "1.6",
            "--windows",
            bad.to_str().unwrap(),
        ],
    );
    assert!(e.contains("--windows: cannot write"), "{e}");
    assert!(!out.exists());
}

/// `--windows` writes every window the call sampled, one JSON object a line, on both sides of
/// the split (not the earlier regimes' windows the calibration keeps); `--dry-run` writes it
/// and no model. The report counts the held-out windows scenario by scenario.
#[test]
fn calibrate_writes_its_windows_and_counts_the_held_out_ones_by_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let job = coarse_dataset(dir.path());
    let (out, lines) = (
        dir.path().join("out.safetensors"),
        dir.path().join("w.jsonl"),
    );
    let o = std::process::Command::new(crate::common::wavecp_bin())
        .args(["--log", "error", "calibrate"])
        .arg(crate::common::repo("models/fine_prior_cp.safetensors"))
        .arg(&job)
        .args(["--indicator", "grid_learned", "--out-of-range"])
        .args([
            "--frequency-factor",
            "1.6",
            "--scenarios",
            "4",
            "--seed",
            "12",
        ])
        .args(["--tolerances", "0.05,1e9", "--dry-run", "--out"])
        .arg(&out)
        .arg("--windows")
        .arg(&lines)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists(), "--dry-run wrote the model");
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Windows of a scenario with no regime (a frequency 1.6 times one drawn in range can be
    // inside the trained range, or just above it) are written, and left out of the
    // calibration out of range and its checks.
    let regime = |r: &serde_json::Value| -> Vec<String> {
        serde_json::from_value(r["outside"].clone()).unwrap()
    };
    let none = rows.iter().filter(|r| regime(r).is_empty()).count();
    assert!(none > 0, "the case has no scenario without a regime");
    assert_eq!(rep["windows_without_regime"].as_u64(), Some(none as u64));
    let held: Vec<&serde_json::Value> = (rows.iter())
        .filter(|r| r["held_out"] == true && !regime(r).is_empty())
        .collect();
    let n_held = rep["held_out_windows"].as_u64().unwrap() as usize;
    assert_eq!(held.len(), n_held);
    // The calibration also holds the shipped regimes' windows, which the file leaves out.
    let own = rows.len() - held.len() - none;
    assert!(own > 10 && (own as u64) < rep["calibration_windows"].as_u64().unwrap());
    for r in &rows {
        assert!(r["score"].as_f64().unwrap() >= 0.0 && r["error"].as_f64().unwrap() >= 0.0);
        assert!(r["scenario"].as_u64().unwrap() < 2, "{r}");
        let o = regime(r);
        assert!(o.is_empty() || o == ["frequency"], "{r}");
    }
    // A tolerance above every error: each scenario's accepted windows, none above it.
    let all = &rep["held_out"][1];
    let per: Vec<[u64; 2]> = serde_json::from_value(all["per_scenario"].clone()).unwrap();
    let last = held.iter().map(|r| r["scenario"].as_u64().unwrap()).max();
    assert_eq!(per.len() as u64, last.unwrap() + 1);
    let t = all["threshold"].as_f64().unwrap();
    for (k, p) in per.iter().enumerate() {
        let acc = held
            .iter()
            .filter(|r| r["scenario"] == k as u64 && r["score"].as_f64().unwrap() < t)
            .count();
        assert_eq!(*p, [acc as u64, 0]);
    }
    let sum: u64 = per.iter().map(|p| p[0]).sum();
    assert_eq!(sum, all["accepted"].as_u64().unwrap());
}
