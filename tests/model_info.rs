//! `wavecp model info` on a trained model file, `wavecp model sampling`, and what the sampling
//! ranges a model records change: where a source counts as out of the trained ranges.

use crate::common::{repo, wavecp_bin};
use std::path::Path;
use wavecp::dataset::DatasetJob;
use wavecp::surrogate::condition::Conditioning;
use wavecp::surrogate::modelfile;
use wavecp::surrogate::summary::TOLERANCES;

fn cli(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(wavecp_bin())
        .args(["--log", "error"])
        .args(args)
        .output()
        .unwrap()
}

fn info(file: &Path, json: bool) -> std::process::Output {
    let mut args = vec!["model".as_ref(), "info".as_ref(), file.as_os_str()];
    if json {
        args.push("--json".as_ref());
    }
    cli(&args)
}

fn sampling(model: &Path, job: &Path) -> std::process::Output {
    cli(&[
        "model".as_ref(),
        "sampling".as_ref(),
        model.as_os_str(),
        "--job".as_ref(),
        job.as_os_str(),
    ])
}

fn fine_job_ranges() -> Vec<[f64; 2]> {
    let job = DatasetJob::load(&repo("examples/fine_square/dataset_full.toml"), &[]).unwrap();
    job.sampling.ranges()
}

/// A copy of the shipped fine model without its sampling ranges (as trained before datasets
/// recorded them).
fn unrecorded(dir: &Path) -> std::path::PathBuf {
    let mut l = modelfile::load(&repo("models/fine_prior_cp.safetensors")).unwrap();
    l.meta.conditioning.as_mut().unwrap().sampled = None;
    let p = dir.join("unrecorded.safetensors");
    modelfile::save(&p, &l.model, &l.meta, None).unwrap();
    p
}

/// The JSON summary holds what the file holds: the layers' parameters, the windows and grid,
/// each parameter's trained and sampled range, and every calibration's thresholds as the run
/// computes them, pooled and by regime out of range.
#[test]
fn model_info_reports_what_the_model_file_holds() {
    let file = repo("models/fine_prior_cp.safetensors");
    let o = info(&file, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let l = modelfile::load(&file).unwrap();
    assert_eq!(v["trainable_params"], l.model.num_params());
    assert_eq!(
        v["layers"].as_array().unwrap().len(),
        l.model.summary().len()
    );
    assert_eq!(
        (v["t_in"].clone(), v["t_out"].clone()),
        (8.into(), 8.into())
    );
    assert_eq!(v["grid"], serde_json::json!([l.meta.ny, l.meta.nx]));
    assert_eq!(v["training"]["checkpoint"], false);
    let c = l.meta.conditioning.as_ref().unwrap();
    let params = v["conditioning"]["params"].as_array().unwrap();
    let sampled = fine_job_ranges();
    assert_eq!(params.len(), 5);
    for (k, p) in params.iter().enumerate() {
        let t = c.trained_range(k);
        assert_eq!(p["trained"], serde_json::json!(t), "{p}");
        assert_eq!(p["sampled"], serde_json::json!(sampled[k]), "{p}");
        // The shipped dataset's 51 training runs stop short of the ranges drawn from.
        assert!(t[0] > sampled[k][0] && t[1] < sampled[k][1], "{p}");
    }
    let cals = v["calibrations"].as_array().unwrap();
    assert_eq!(cals.len(), l.meta.calibrations.indicators().len());
    let at = |j: &serde_json::Value, f: &dyn Fn(f64) -> f64| {
        let got: Vec<[f64; 2]> = serde_json::from_value(j.clone()).unwrap();
        let want: Vec<[f64; 2]> = TOLERANCES.iter().map(|&t| [t, f(t)]).collect();
        assert_eq!(got, want);
    };
    for j in cals {
        let cal = (l.meta.calibrations)
            .get(j["indicator"].as_str().unwrap())
            .unwrap();
        at(&j["thresholds"], &|t| cal.threshold(t));
        assert_eq!(j["windows"], cal.scores.len());
        assert_eq!(j["learned"], cal.estimator.is_some());
        let Some(o) = cal.out_of_range.as_deref() else {
            assert!(j["out_of_range"].is_null());
            continue;
        };
        at(&j["out_of_range"]["thresholds"], &|t| o.threshold(t));
        let regimes = j["out_of_range"]["regimes"].as_array().unwrap();
        assert_eq!(regimes.len(), o.regimes.len());
        for (r, jr) in o.regimes.iter().zip(regimes) {
            assert_eq!(jr["name"], r.name());
            assert_eq!(jr["windows"], r.scores.len());
            at(&jr["thresholds"], &|t| o.threshold_outside(&r.outside, t).0);
        }
    }
    // The text names the same.
    let o = info(&file, false);
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "8 frames in, 8 out, on a 16 × 16 grid",
        "frequency  trained over [1.017, 1.992], drawn from [1, 2]",
        "grid_learned (learned): 1500 windows of 10 scenarios",
        "outside in frequency+source_x",
    ] {
        assert!(text.contains(want), "`{want}` not in\n{text}");
    }
    // An architecture still reads as before; a file that is neither is refused, named.
    let o = info(&repo("models/small_cp.toml"), false);
    assert!(o.status.success());
    let o = info(&repo("Cargo.lock"), false);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(e.contains("Cargo.lock: not a wavecp model file"), "{e}");
}

/// `wavecp model sampling` records the job's ranges and nothing else; a job whose ranges do
/// not hold what training saw, or a model that reads no parameters, is refused and the file
/// left as it was.
#[test]
fn model_sampling_records_the_job_ranges_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let file = unrecorded(dir.path());
    let before = std::fs::read(&file).unwrap();
    let wrong = repo("examples/submodel/dataset.toml");
    let o = sampling(&file, &wrong);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("frequency was drawn from [2, 3]") && e.contains("not the dataset job"),
        "{e}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // A solve job is no dataset job: refused, saying what --job is.
    let o = sampling(&file, &repo("jobs/inclusion.toml"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("--job is the dataset job"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let job = repo("examples/fine_square/dataset_full.toml");
    let o = sampling(&file, &job);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        modelfile::load(&file).unwrap(),
        modelfile::load(&repo("models/fine_prior_cp.safetensors")).unwrap(),
    );
    assert_eq!(a.meta, b.meta);
    assert_eq!(
        a.meta.conditioning.unwrap().sampled,
        Some(fine_job_ranges())
    );
    for (p, q) in a.model.params().iter().zip(b.model.params()) {
        assert_eq!(p.value, q.value);
    }
    // A model of frames only has no parameters to range.
    let plain = dir.path().join("plain.safetensors");
    std::fs::copy(repo("models/demo_cp.safetensors"), &plain).unwrap();
    let o = sampling(&plain, &job);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not conditioned"));
}

/// With the ranges drawn from, a source is reported outside exactly when it leaves them;
/// without, when it leaves the training runs' extremes. Either way its regime is the
/// parameters reported and more than 0.25 half-widths past those extremes.
#[test]
fn the_sampling_ranges_decide_what_is_out_of_range() {
    let l = modelfile::load(&repo("models/fine_prior_cp.safetensors")).unwrap();
    let with: Conditioning = l.meta.conditioning.unwrap();
    let without = Conditioning {
        sampled: None,
        ..with.clone()
    };
    // x, y, frequency, amplitude, delay.
    let at = |x: f64, f: f64| vec![x, 0.5, f, 1.0, 0.2];
    let both = |c: &Conditioning, p: &[f64]| (c.outside_training(p).len(), c.regime(p));
    let none: Vec<String> = vec![];
    let x = vec!["source_x".to_string()];
    // Drawn from, past the trained extreme (0.279, half-width 0.227).
    assert_eq!(both(&with, &at(0.26, 1.5)), (0, none.clone()));
    assert_eq!(both(&without, &at(0.26, 1.5)), (1, none.clone()));
    // The range's own ends are inside.
    assert_eq!(both(&with, &at(0.25, 2.0)), (0, none.clone()));
    // Just past the range drawn from: reported, no regime (0.17 half-widths past the runs).
    assert_eq!(both(&with, &at(0.24, 1.5)), (1, none.clone()));
    assert_eq!(
        with.outside_training(&at(0.24, 1.5)),
        ["source_x = 0.24 outside [0.25, 0.75]"]
    );
    // Past the margin: its regime, on both.
    assert_eq!(both(&with, &at(0.2, 1.5)), (1, x.clone()));
    assert_eq!(both(&without, &at(0.2, 1.5)), (1, x.clone()));
    assert_eq!(both(&with, &at(0.1, 2.6)).1, ["frequency", "source_x"]);
    // A parameter the model records as drawn from one value only is outside anywhere else.
    let mut one = with.clone();
    one.sampled.as_mut().unwrap()[3] = [1.0, 1.0];
    one.half_width[3 + 3] = 1.0;
    one.center[3 + 3] = 1.0;
    let mut p = at(0.5, 1.5);
    assert_eq!(both(&one, &p), (0, none.clone()));
    p[3] = 1.5;
    assert_eq!(both(&one, &p), (1, none.clone()));
    p[3] = 2.5;
    assert_eq!(both(&one, &p), (1, vec!["amplitude".to_string()]));
    // Ranges that do not hold the training runs are refused.
    let mut r = fine_job_ranges();
    r[2] = [1.1, 2.0];
    let e = without.clone().with_sampled(&r).unwrap_err();
    assert!(e.contains("frequency was drawn from [1.1, 2]"), "{e}");
    let e = without.with_sampled(&r[..4]).unwrap_err();
    assert!(e.contains("4 sampling ranges for a model reading 5"), "{e}");
}
