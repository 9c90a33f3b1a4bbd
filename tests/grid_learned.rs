//! The learned grid indicator (`grid_learned`): its ridge error model (the linear algebra, a
//! known law recovered, bad input refused), its inputs (the seam differences of orders 2–7,
//! blind to the field's scale), and that fitted on windows of known error it ranks new ones.

use crate::coupling::hybrid::{problem, sim};
use crate::coupling::unit;
use crate::grid_seam::{frames, score_at};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wavecp::coupling::error_model::spearman;
use wavecp::coupling::error_model::{cholesky_solve, ErrorModel};
use wavecp::coupling::grid_indicators::{learned_inputs, GridLearned, LEARNED_INPUTS};
use wavecp::coupling::hybrid::{rel_l2, Indicator, WindowView};
use wavecp::coupling::transfer::ZoneTransfer;
use wavecp::coupling::CouplingError;

#[test]
fn cholesky_solves_a_symmetric_positive_definite_system_and_refuses_an_indefinite_one() {
    let n = 12;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let b: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    // A = BᵀB + I.
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| b[k * n + i] * b[k * n + j]).sum::<f64>()
                + if i == j { 1.0 } else { 0.0 };
        }
    }
    let x: Vec<f64> = (0..n).map(|i| (i as f64 - 5.5) / 3.0).collect();
    let rhs: Vec<f64> = (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum())
        .collect();
    let got = cholesky_solve(&a, &rhs).unwrap();
    for (g, e) in got.iter().zip(&x) {
        assert!((g - e).abs() < 1e-10, "{g} {e}");
    }
    let mut indefinite = a.clone();
    indefinite[5 * n + 5] = -1.0;
    assert!(cholesky_solve(&indefinite, &rhs).is_none());
}

/// `n` random input rows of width 3 and the errors of the law
/// `ln e = 0.3 + x0 − 0.5 x1 x2 + 0.2 x0²`.
fn law(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<Vec<f64>> = (0..n)
        .map(|_| (0..3).map(|_| rng.random_range(-2.0..2.0)).collect())
        .collect();
    let e = x
        .iter()
        .map(|r| (0.3 + r[0] - 0.5 * r[1] * r[2] + 0.2 * r[0] * r[0]).exp())
        .collect();
    (x, e)
}

#[test]
fn ridge_on_the_quadratic_basis_recovers_a_quadratic_law() {
    let (x, e) = law(200, 1);
    let (xt, et) = law(50, 2);
    let m = ErrorModel::fit("law", &x, &e, true, 1e-9).unwrap();
    for (r, want) in xt.iter().zip(&et) {
        let got = m.predict_ln(r).unwrap();
        assert!((got - want.ln()).abs() < 1e-6, "{got} {}", want.ln());
    }
    // The inputs alone cannot represent the product: the linear fit misses by far more.
    let lin = ErrorModel::fit("law", &x, &e, false, 1e-9).unwrap();
    let miss = xt
        .iter()
        .zip(&et)
        .map(|(r, want)| (lin.predict_ln(r).unwrap() - want.ln()).abs())
        .fold(0.0, f64::max);
    assert!(miss > 0.5, "{miss}");
    // A huge penalty leaves the mean of ln e.
    let flat = ErrorModel::fit("law", &x, &e, true, 1e12).unwrap();
    let mean = e.iter().map(|v| v.ln()).sum::<f64>() / e.len() as f64;
    assert!((flat.predict_ln(&xt[0]).unwrap() - mean).abs() < 1e-6);
    // Stored and read back, it predicts the same bits.
    let back: ErrorModel = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}

#[test]
fn the_fit_refuses_what_it_cannot_fit() {
    let (x, e) = law(10, 1);
    let fit = |x: &[Vec<f64>], e: &[f64], lambda: f64| {
        ErrorModel::fit("law", x, e, true, lambda).unwrap_err()
    };
    assert!(fit(&x[..1], &e[..1], 1.0).contains("two or more"));
    assert!(fit(&x, &e[..9], 1.0).contains("10 windows, 9 errors"));
    let mut bad = e.clone();
    bad[3] = 0.0;
    assert!(fit(&x, &bad, 1.0).contains("logarithm"));
    let mut nan = x.clone();
    nan[2][1] = f64::NAN;
    assert!(fit(&nan, &e, 1.0).contains("not finite"));
    let mut short = x.clone();
    short[4].pop();
    assert!(fit(&short, &e, 1.0).contains("different"));
    assert!(fit(&x, &e, 0.0).contains("penalty"));
    let m = ErrorModel::fit("law", &x, &e, true, 1.0).unwrap();
    let msg = m.predict_ln(&[1.0, 2.0]).unwrap_err();
    assert!(
        msg.contains("2 inputs") && msg.contains("fitted on 3"),
        "{msg}"
    );
}

/// Records each window's `learned_inputs`.
struct Inputs(Vec<Vec<f64>>);

impl Indicator for Inputs {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        self.0.push(learned_inputs(&w)?);
        Ok(0.0)
    }
}

/// Windows of the test pulse on a 17 × 17 grid with forecasts of known error: the truth
/// scaled by `1 + a` plus a drift `b (k + 1) g` from the seam on (`a`, `b` log-uniform, `g` a
/// fixed random field). Returns per window its inputs, its forecast and its true error.
#[allow(clippy::type_complexity)]
fn windows(
    n: usize,
    seed: u64,
) -> (
    ZoneTransfer,
    Vec<Vec<f64>>,
    Vec<Vec<Vec<f64>>>,
    Vec<Vec<f64>>,
    Vec<f64>,
) {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(17)).unwrap();
    let all = frames(&t, 16);
    let (past, truth) = all.split_at(8);
    let rms = (truth.iter().flatten().map(|v| v * v).sum::<f64>()
        / (truth.len() * t.points()) as f64)
        .sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g: Vec<f64> = (0..t.points())
        .map(|_| rms * rng.random_range(-1.0..1.0))
        .collect();
    let mut rec = Inputs(vec![]);
    let mut s = sim(&p);
    let view: Vec<&[f64]> = past.iter().map(|f| &f[..]).collect();
    let (mut forecasts, mut errors) = (vec![], vec![]);
    for _ in 0..n {
        let a = 10f64.powf(rng.random_range(-3.0..-1.0));
        let b = 10f64.powf(rng.random_range(-4.0..-2.0));
        let f: Vec<Vec<f64>> = truth
            .iter()
            .enumerate()
            .map(|(k, fr)| {
                fr.iter()
                    .zip(&g)
                    .map(|(v, gi)| v * (1.0 + a) + b * (k + 1) as f64 * gi)
                    .collect()
            })
            .collect();
        rec.score(WindowView {
            sim: &mut s,
            transfer: &t,
            past: &view,
            forecast: &f,
            stride: 1,
            reads_forecast: false,
        })
        .unwrap();
        errors.push(rel_l2(&f, truth));
        forecasts.push(f);
    }
    (t, past.to_vec(), forecasts, rec.0, errors)
}

#[test]
fn fitted_on_windows_of_known_error_it_ranks_new_ones() {
    // More windows than the 405 basis functions of 27 inputs, as the fit on a model has.
    let (t, past, forecasts, inputs, errors) = windows(800, 9);
    // Orders 2..=7 straddle the seam 2 + 3 + … + 7 times.
    assert_eq!(inputs[0].len(), 27);
    let m = ErrorModel::fit(LEARNED_INPUTS, &inputs[..600], &errors[..600], true, 3.0).unwrap();
    let mut ind = GridLearned { model: m };
    let scores: Vec<f64> = forecasts[600..]
        .iter()
        .map(|f| score_at(&mut ind, &t, 0, &past, f).unwrap())
        .collect();
    let rho = spearman(&scores, &errors[600..]);
    let off: Vec<f64> = scores
        .iter()
        .zip(&errors[600..])
        .map(|(s, e)| (s / e).ln().abs())
        .collect();
    let mut sorted = off.clone();
    sorted.sort_by(f64::total_cmp);
    let (median, p90) = (sorted[100], sorted[180]);
    eprintln!(
        "200 new windows: Spearman {rho:.4}, |ln(predicted / true)| median {median:.3}, 90 % {p90:.3}"
    );
    assert!(rho > 0.97, "{rho}");
    // The score is the predicted error itself, in error units.
    assert!(median < 0.2 && p90 < 0.5, "{median} {p90}");
    // One seam order alone ranks these worse: which order sees the error depends on the mix.
    let single: Vec<f64> = inputs[600..].iter().map(|r| r[1]).collect();
    assert!(spearman(&single, &errors[600..]) < rho);
}

#[test]
fn its_score_ignores_the_fields_scale_and_refuses_another_window_shape() {
    let (t, past, forecasts, inputs, errors) = windows(60, 4);
    let m = ErrorModel::fit(LEARNED_INPUTS, &inputs, &errors, true, 3.0).unwrap();
    let mut ind = GridLearned { model: m };
    let scaled = |v: &[Vec<f64>]| -> Vec<Vec<f64>> {
        v.iter()
            .map(|f| f.iter().map(|x| 7.3 * x).collect())
            .collect()
    };
    let a = score_at(&mut ind, &t, 0, &past, &forecasts[0]).unwrap();
    let b = score_at(&mut ind, &t, 0, &scaled(&past), &scaled(&forecasts[0])).unwrap();
    assert!((a / b - 1.0).abs() < 1e-9, "{a} {b}");
    // It reads the grid only: the simulation's state does not enter.
    let c = score_at(&mut ind, &t, 9, &past, &forecasts[0]).unwrap();
    assert_eq!(a.to_bits(), c.to_bits());
    // Five forecast frames: orders 6 and 7 no longer straddle the seam every way.
    let e = score_at(&mut ind, &t, 0, &past, &forecasts[0][..5])
        .unwrap_err()
        .to_string();
    assert!(e.contains("fitted on 27"), "{e}");
    // A NaN in the frames is an error, not the floor of a difference (which would trust it).
    let mut bad = forecasts[0].clone();
    bad[2][7] = f64::NAN;
    let e = score_at(&mut ind, &t, 0, &past, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not finite"), "{e}");
}

#[cfg(feature = "hdf5")]
#[test]
fn calibrate_fits_the_error_model_stores_it_and_a_hybrid_run_predicts_with_it() {
    use crate::coupling::hybrid::hybrid_job;
    use wavecp::coupling::calibrate::{calibrate, Sampling};
    use wavecp::coupling::solve::run_hybrid;
    use wavecp::sim::RunOptions;
    use wavecp::surrogate::modelfile;
    let dir = tempfile::tempdir().unwrap();
    let s = learned_sampling(dir.path());
    let model = s.model.clone();
    let plan = |fit_scenarios| learned_plan(fit_scenarios, 0);
    let e = calibrate(&s, plan(0), &[1.0]).unwrap_err().to_string();
    assert!(e.contains("fit scenarios"), "{e}");
    let seam = Sampling {
        indicators: vec!["grid_seam".into()],
        ..s.clone()
    };
    let e = calibrate(&seam, plan(2), &[1.0]).unwrap_err().to_string();
    assert!(e.contains("not fitted"), "{e}");
    let (c, r) = calibrate(&s, plan(2), &[0.5, 1.0]).unwrap();
    // 25 windows a scenario: 2 fit, 2 calibrate, 2 check.
    let fit = r.fit.as_ref().unwrap();
    assert_eq!(
        (fit.windows, r.calibration_windows, r.held_out_windows),
        (50, 50, 50)
    );
    assert!(fit.spearman_fit.abs() <= 1.0);
    let m = c.estimator.clone().unwrap();
    assert_eq!(m.input_mean.len(), 27);
    // Its scores are predicted errors: positive, of the errors' order on the windows it saw.
    assert!(c.scores.iter().all(|v| *v > 0.0 && v.is_finite()));
    // Stored with the model, read back whole.
    let calibrated = with_calibration(&model, &c, &dir.path().join("calibrated.safetensors"));
    let back = modelfile::load(&calibrated).unwrap().meta;
    assert_eq!(back.calibrations.get("grid_learned"), Some(&c));
    // A hybrid job with it: the tolerance becomes the calibrated threshold.
    let (h, t) = decides_by_threshold(dir.path(), &calibrated, &c);
    assert!(t > 0.0);
    assert_eq!(h.indicator_threshold, Some(t));
    let base = std::path::Path::new(".");
    // The model without it: refused by name, with the command that makes one.
    let mut cfg = hybrid_job(dir.path(), &model, 1.0);
    cfg.coupling.as_mut().unwrap().indicator = "grid_learned".into();
    let e = run_hybrid(&cfg, base, &RunOptions::default(), &wavecp::comm::Serial)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("grid_learned") && e.contains("wavecp calibrate"),
        "{e}"
    );
    // Refused before the first step: no running output left to read as a run to continue.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".running"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[cfg(feature = "hdf5")]
#[test]
fn the_calibrate_command_refuses_an_unknown_indicator_and_misplaced_fit_scenarios() {
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wavecp"))
            .args(["--log", "warn", "calibrate"])
            .arg(crate::common::repo("models/demo_cp.safetensors"))
            .arg(crate::common::repo("examples/indicator_study/dataset.toml"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--indicator", "bad"]);
    assert!(
        e.contains("`bad` is none of") && e.contains("grid_learned"),
        "{e}"
    );
    let e = run(&[
        "--indicator",
        "grid_seam",
        "--fit-scenarios",
        "3",
        "--dry-run",
    ]);
    assert!(e.contains("not fitted"), "{e}");
    let e = run(&[
        "--indicator",
        "grid_learned",
        "--fit-scenarios",
        "1",
        "--dry-run",
    ]);
    assert!(e.contains("two or more"), "{e}");
    let e = run(&[
        "--indicator",
        "grid_seam",
        "--fit-rollout",
        "2",
        "--dry-run",
    ]);
    assert!(
        e.contains("--fit-rollout") && e.contains("fits nothing"),
        "{e}"
    );
}

/// An error model fitted with the run's input (`LEARNED_INPUTS_RUN`) scores the same window
/// by whether it follows an accepted one: fitted on windows whose error is 3× larger when
/// they do, it predicts ≈ 3× more for the same frames read as a forecast's continuation.
#[test]
fn a_run_aware_error_model_reads_whether_the_window_follows_an_accepted_one() {
    use wavecp::coupling::grid_indicators::LEARNED_INPUTS_RUN;
    let (t, past, forecasts, inputs, errors) = windows(600, 13);
    let (mut rows, mut errs) = (vec![], vec![]);
    for (k, (x, e)) in inputs.iter().zip(&errors).enumerate() {
        let flag = (k % 2) as f64;
        rows.push([x.clone(), vec![flag]].concat());
        errs.push(e * (1.0 + 2.0 * flag));
    }
    let m = ErrorModel::fit(LEARNED_INPUTS_RUN, &rows, &errs, true, 3.0).unwrap();
    assert_eq!(m.input_mean.len(), 28);
    let mut ind = GridLearned { model: m };
    let p = problem();
    let mut s = sim(&p);
    let view: Vec<&[f64]> = past.iter().map(|f| &f[..]).collect();
    let mut score = |f: &[Vec<f64>], reads_forecast: bool| {
        ind.score(WindowView {
            sim: &mut s,
            transfer: &t,
            past: &view,
            forecast: f,
            stride: 1,
            reads_forecast,
        })
        .unwrap()
    };
    let ratios: Vec<f64> = forecasts[..20]
        .iter()
        .map(|f| score(f, true) / score(f, false))
        .collect();
    eprintln!("score ratios, after an accepted window / not: {ratios:.3?}");
    for r in &ratios {
        assert!((2.5..3.6).contains(r), "{ratios:?}");
    }
}

/// `--fit-rollout`: the error model is fitted on the windows of hybrid runs of the fit
/// scenarios too, reads the run's input, and a hybrid run predicts with it.
#[cfg(feature = "hdf5")]
#[test]
fn calibrate_fits_on_the_windows_of_hybrid_runs_too() {
    use wavecp::coupling::calibrate::calibrate;
    use wavecp::coupling::grid_indicators::LEARNED_INPUTS_RUN;
    let dir = tempfile::tempdir().unwrap();
    let s = learned_sampling(dir.path());
    let (c, r) = calibrate(&s, learned_plan(2, 2), &[1.0]).unwrap();
    let fit = r.fit.as_ref().unwrap();
    // 25 exact-start windows a scenario, and the windows of a run of each: of the 4 windows
    // after the warm-up, 2 accepted, one left to the FE, one accepted.
    assert_eq!((fit.windows, fit.run_windows), (56, 6), "{fit:?}");
    let m = c.estimator.clone().unwrap();
    assert_eq!(
        (m.inputs.as_str(), m.input_mean.len()),
        (LEARNED_INPUTS_RUN, 28)
    );
    let calibrated = with_calibration(&s.model, &c, &dir.path().join("run-aware.safetensors"));
    decides_by_threshold(dir.path(), &calibrated, &c);
}

/// The calibration set-up of the tests above: an untrained model (frames 0.02 apart) in
/// `dir`, 4 scenarios of the indicator study's dataset job sampled for `grid_learned`.
#[cfg(feature = "hdf5")]
fn learned_sampling(dir: &std::path::Path) -> wavecp::coupling::calibrate::Sampling {
    wavecp::coupling::calibrate::Sampling {
        model: crate::coupling::hybrid::untrained(dir, 2.0 * 0.01),
        job: crate::common::repo("examples/indicator_study/dataset.toml"),
        indicators: vec!["grid_learned".into()],
        scenarios: 4,
        seed: 5,
        frequency_factor: 1.0,
        source_box: None,
        rollout: 0,
    }
}

/// Half the scenarios held out, in the trained ranges; the error model fitted on
/// `fit_scenarios` more (and the windows of their runs with `fit_rollout`). Two calibration
/// scenarios: a risk of 0.5 is the smallest the rule by scenario meets with them
/// (⌊0.5 · 3⌋ = 1; at 0.1 it accepts nothing).
#[cfg(feature = "hdf5")]
fn learned_plan(fit_scenarios: usize, fit_rollout: usize) -> wavecp::coupling::calibrate::Plan {
    wavecp::coupling::calibrate::Plan {
        risk: 0.5,
        holdout: 0.5,
        check: wavecp::coupling::calibrate::Check {
            frequency_factor: 1.0,
            source_box: None,
        },
        fit_scenarios,
        fit_rollout,
    }
}

/// `model` with the calibration `c` added, saved as `out`.
#[cfg(feature = "hdf5")]
fn with_calibration(
    model: &std::path::Path,
    c: &wavecp::surrogate::calibration::Calibration,
    out: &std::path::Path,
) -> std::path::PathBuf {
    use wavecp::surrogate::modelfile;
    let mut l = modelfile::load(model).unwrap();
    l.meta.calibrations.set(c.clone());
    modelfile::save(out, &l.model, &l.meta, None).unwrap();
    out.to_path_buf()
}

/// The coupling tests' hybrid job with `model` calibrated by `c` for `grid_learned`: each
/// window is tried and accepted exactly when its prediction is below the calibrated
/// threshold. (The untrained network's errors are large: a tolerance above all of them
/// leaves a threshold to compare with.) Returns the run's summary and the threshold.
#[cfg(feature = "hdf5")]
fn decides_by_threshold(
    dir: &std::path::Path,
    model: &std::path::Path,
    c: &wavecp::surrogate::calibration::Calibration,
) -> (wavecp::coupling::hybrid::HybridSummary, f64) {
    let tol = 1.01 * c.errors.iter().copied().fold(0.0, f64::max);
    let mut cfg = crate::coupling::hybrid::hybrid_job(dir, model, tol);
    cfg.coupling.as_mut().unwrap().indicator = "grid_learned".into();
    let (_, h) = wavecp::coupling::solve::run_hybrid(
        &cfg,
        std::path::Path::new("."),
        &wavecp::sim::RunOptions::default(),
        &wavecp::comm::Serial,
    )
    .unwrap();
    let t = c.threshold(tol);
    let scored: Vec<(f64, bool)> = h
        .windows
        .iter()
        .filter_map(|(s, a)| s.map(|v| (v, *a)))
        .collect();
    assert!(!scored.is_empty(), "{:?}", h.windows);
    for (v, accepted) in scored {
        assert!(v > 0.0 && v.is_finite());
        assert_eq!(accepted, v < t, "{v} against {t}");
    }
    (h, t)
}
