//! Hybrid stepping with the network on the GPU (`coupling.device = "cuda"`) against the same job
//! with the network on the CPU: the shipped conditioned model of the fine job, its calibrated
//! learned indicator and hand-back check, on a coarse mesh of the same square so that the
//! emulator runs it in seconds.

use super::*;

/// `wavecp solve JOB --reference --json`'s report with the network on `device`.
fn hybrid_on(device: &str, dir: &std::path::Path) -> serde_json::Value {
    let job = crate::common::repo("examples/fine_square/hybrid_prior.toml");
    let out = dir.join(format!("{device}.vtkhdf"));
    let sets = [
        "mesh.generate.nx=99".to_string(),
        "mesh.generate.ny=99".to_string(),
        // 6 windows after the warm-up: the first refused (the source's near field), then both
        // kinds of decision.
        "time.end=1.2".to_string(),
        format!("coupling.device=\"{device}\""),
        format!("output.path=\"{}\"", out.display()),
    ];
    crate::common::solve_json(&job, &sets, &["--reference"])
}

/// The window scores and decisions, the calibrated threshold and the run's error are the CPU's
/// to within what f32 sums in another order change (the network runs in f32; the hand-back and
/// the FE in f64 from its frames).
#[test]
fn the_hybrid_run_with_the_network_on_the_gpu_decides_as_on_the_cpu() {
    if open_gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (gpu_run, cpu_run) = (hybrid_on("cuda", dir.path()), hybrid_on("cpu", dir.path()));
    let (gpu, cpu) = (&gpu_run["hybrid"], &cpu_run["hybrid"]);
    // The network ran where it was asked to.
    let name = Gpu::new(0).unwrap().info.name;
    assert_eq!(gpu["network_device"].as_str(), Some(name.as_str()));
    assert_eq!(cpu["network_device"].as_str(), Some("cpu"));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(b.abs()) + 1e-9;
    let threshold = cpu["indicator_threshold"].as_f64().unwrap();
    assert_eq!(gpu["indicator_threshold"].as_f64(), Some(threshold));
    let windows = |h: &serde_json::Value| -> Vec<(f64, bool)> {
        h["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w[0].as_f64().unwrap(), w[1].as_bool().unwrap()))
            .collect()
    };
    let (wg, wc) = (windows(gpu), windows(cpu));
    assert_eq!(wg.len(), 6, "{wg:?}");
    assert_eq!(wg.len(), wc.len());
    for (k, ((sg, ag), (sc, ac))) in wg.iter().zip(&wc).enumerate() {
        // A score this close to the threshold could go either way: the case would not decide.
        assert!(
            !close(*sc, threshold),
            "window {k} scores {sc} at the threshold {threshold}: choose another case"
        );
        assert!(
            close(*sg, *sc),
            "window {k}: score {sg} on the GPU, {sc} on the CPU"
        );
        assert_eq!(
            ag, ac,
            "window {k}: the GPU and the CPU decided differently"
        );
    }
    // Both kinds of decision are exercised, and what was accepted moved the field.
    assert!(wc.iter().any(|w| w.1) && wc.iter().any(|w| !w.1), "{wc:?}");
    for (g, c, key) in [
        (gpu, cpu, "max_rel_l2_error"),
        (gpu, cpu, "steps_surrogate"),
        (&gpu_run, &cpu_run, "final_energy"),
    ] {
        let (g, c) = (g[key].as_f64().unwrap(), c[key].as_f64().unwrap());
        assert!(
            close(g, c),
            "{key}: {g} with the network on the GPU, {c} on the CPU"
        );
    }
    assert!(cpu["max_rel_l2_error"].as_f64().unwrap() > 0.0);
}

/// Without a usable GPU, `coupling.device = "cuda"` refuses the job before its first step with
/// the key and the reason, and leaves nothing behind.
#[test]
fn a_hybrid_job_asking_for_a_missing_gpu_is_refused_clearly() {
    if Gpu::new(0).is_ok() {
        skipped("a CUDA device opens here: the refusal is not reachable");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(crate::common::wavecp_bin())
        .current_dir(dir.path())
        .args([
            "--log",
            "error",
            "demo",
            "--set",
            "coupling.device=\"cuda\"",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("coupling.device = cuda:0"), "{err}");
    assert!(
        err.contains("driver") || err.contains("device") || err.contains("feature"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
