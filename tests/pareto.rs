//! The speed-up–error curve of a hybrid job over the tolerance (`bench couple --job`).

use wavecp::coupling::pareto::{mark_front, pareto, ParetoPoint};

fn point(speedup: f64, max_rel_l2_error: f64) -> ParetoPoint {
    ParetoPoint {
        tolerance: 0.0,
        indicator_threshold: None,
        indicator_calibration: None,
        windows_accepted: 0,
        windows_rejected: 0,
        handback_refused: 0,
        steps_surrogate: 0,
        wall_s: 1.0,
        reference_wall_s: speedup,
        speedup,
        max_rel_l2_error,
        fe_s: 0.0,
        inference_s: 0.0,
        transfer_s: 0.0,
        indicator_s: 0.0,
        on_front: false,
    }
}

#[test]
fn the_front_keeps_exactly_the_points_nothing_dominates() {
    let mut p = vec![
        point(1.0, 0.0),
        point(2.0, 0.1),
        point(1.5, 0.2), // slower and worse than (2, 0.1)
        point(2.0, 0.1), // a tie dominates nothing
        point(3.0, 0.5),
        point(0.9, 0.0), // as accurate as (1, 0), slower
    ];
    mark_front(&mut p);
    let on: Vec<bool> = p.iter().map(|q| q.on_front).collect();
    assert_eq!(on, [true, true, false, true, true, false]);
}

#[test]
fn the_curve_starts_at_the_fe_run_and_accepts_more_as_the_tolerance_grows() {
    let model = crate::common::repo("models/demo_cp.safetensors");
    let cfg = wavecp::coupling::solve::demo_config(&model, &[]).unwrap();
    let tolerances = [0.0, 0.05, 0.3, 10.0];
    let r = pareto(&cfg, std::path::Path::new("."), "demo", &tolerances).unwrap();
    assert_eq!((r.points.len(), r.steps, r.windows), (4, 100, 5));
    // Tolerance 0: every window to the FE, the reference's bits.
    let p0 = &r.points[0];
    assert_eq!((p0.windows_accepted, p0.steps_surrogate), (0, 0));
    assert_eq!(p0.max_rel_l2_error, 0.0);
    for (p, t) in r.points.iter().zip(tolerances) {
        assert_eq!(p.tolerance, t);
        assert_eq!(p.windows_accepted + p.windows_rejected, 5);
        assert!((p.speedup - p.reference_wall_s / p.wall_s).abs() <= 1e-9 * p.speedup);
        assert_eq!(p.steps_surrogate > 0, p.windows_accepted > 0);
        assert_eq!(p.max_rel_l2_error > 0.0, p.windows_accepted > 0, "{p:?}");
    }
    // The calibrated threshold grows with the tolerance, and so do the windows accepted.
    for w in r.points.windows(2) {
        assert!(w[1].windows_accepted >= w[0].windows_accepted);
        assert!(w[1].indicator_threshold >= w[0].indicator_threshold);
    }
    assert!(r.points[3].windows_accepted > 0, "{:?}", r.points[3]);
    // The error-free point is on the front unless an error-free point is faster.
    assert!(p0.on_front || r.points[1..].iter().any(|p| p.max_rel_l2_error == 0.0));
}

#[test]
fn the_fine_square_models_fit_their_dataset_and_hybrid_jobs() {
    // The shipped 10^6-node models are the ones their jobs describe: the dataset's zone, grid
    // and frame spacing, the hybrid job's time step dividing that spacing, a stored
    // calibration for the job's indicator whose threshold grows with the tolerance.
    for (model, dataset, hybrid) in [
        (
            "models/fine_square_cp.safetensors",
            "examples/fine_square/dataset.toml",
            "examples/fine_square/hybrid.toml",
        ),
        (
            "models/fine_full_cp.safetensors",
            "examples/fine_square/dataset_full.toml",
            "examples/fine_square/hybrid_full.toml",
        ),
        (
            "models/fine_prior_cp.safetensors",
            "examples/fine_square/dataset_full.toml",
            "examples/fine_square/hybrid_prior.toml",
        ),
    ] {
        let l = wavecp::surrogate::modelfile::load(&crate::common::repo(model)).unwrap();
        let job = wavecp::dataset::DatasetJob::load(&crate::common::repo(dataset), &[]).unwrap();
        let m = &l.meta;
        let z = &job.zone;
        assert_eq!((m.nx, m.ny), (z.nx, z.ny), "{model}");
        assert_eq!(m.zone, Some([z.x[0], z.x[1], z.y[0], z.y[1]]), "{model}");
        let dt = job.time.dt.unwrap();
        assert!((m.frame_dt - job.frames.stride as f64 * dt).abs() < 1e-12 * m.frame_dt);
        let job = wavecp::config::Config::load(&crate::common::repo(hybrid), &[]).unwrap();
        assert_eq!(job.time.dt, Some(dt), "{hybrid}");
        let c = job.coupling.as_ref().unwrap();
        assert!(
            c.model.ends_with(model),
            "{} against {model}",
            c.model.display()
        );
        let cal = m
            .calibrations
            .get(&c.indicator)
            .expect("the model is calibrated");
        assert_eq!(cal.indicator, c.indicator);
        // A learned indicator carries its error model, fitted on the model's grid windows.
        if wavecp::coupling::calibrate::is_learned(&c.indicator) {
            let e = cal.estimator.as_ref().expect("a fitted error model");
            assert_eq!(e.input_mean.len(), 27, "{model}");
        }
        assert!(
            cal.scores.len() >= 500,
            "{model}: {} calibration windows",
            cal.scores.len()
        );
        assert!(cal.threshold(0.05) > 0.0 && cal.threshold(0.1) >= cal.threshold(0.05));
        // A conditioned model: the job's source inside its trained ranges (else the run would
        // leave every window to the FE), its prior's walls the job's square.
        if let Some(cond) = &m.conditioning {
            let s = &job.source[0];
            let params = [s.position[0], s.position[1], s.frequency, s.amplitude];
            let params = [&params[..], &[s.delay.unwrap()]].concat();
            assert_eq!(
                cond.outside_training(&params),
                Vec::<String>::new(),
                "{hybrid}"
            );
            assert_eq!(cond.prior_walls, Some([0.0, 1.0, 0.0, 1.0]), "{model}");
        }
    }
}

/// `bench couple --job` writes no file, yet its error is the one `wavecp solve --reference`
/// writes: the output steps that fall on forecast frames inside accepted windows count too.
#[cfg(feature = "hdf5")]
#[test]
fn the_curves_error_is_the_written_runs() {
    use wavecp::sim::RunOptions;
    let dir = tempfile::tempdir().unwrap();
    let model = crate::common::repo("models/demo_cp.safetensors");
    let mut cfg = wavecp::coupling::solve::demo_config(&model, &[]).unwrap();
    let r = pareto(&cfg, std::path::Path::new("."), "demo", &[10.0]).unwrap();
    let p = &r.points[0];
    assert!(p.windows_accepted > 0, "{p:?}");
    cfg.output.path = dir.path().join("demo.vtkhdf");
    cfg.coupling.as_mut().unwrap().tolerance = 10.0;
    let opts = RunOptions {
        reference: true,
        ..RunOptions::default()
    };
    let (_, h) = wavecp::coupling::solve::run_hybrid(
        &cfg,
        std::path::Path::new("."),
        &opts,
        &wavecp::comm::Serial,
    )
    .unwrap();
    assert_eq!(h.windows_accepted, p.windows_accepted);
    assert_eq!(
        h.max_rel_l2_error.unwrap().to_bits(),
        p.max_rel_l2_error.to_bits(),
        "written {:?}, bench {}",
        h.max_rel_l2_error,
        p.max_rel_l2_error
    );
}

/// A point reports the windows the hand-back check refused, as the run it stands for does.
#[cfg(feature = "hdf5")]
#[test]
fn a_points_hand_back_refusals_are_its_runs() {
    use wavecp::sim::RunOptions;
    // The demo's square on 31 × 31 nodes: the hand-back loses 7-10 % of the field
    // (tests/handback_budget.rs), which refuses windows the indicator trusts.
    let sets: Vec<String> = [
        "mesh.generate.nx=30",
        "mesh.generate.ny=30",
        "coupling.handback_check=true",
        "output.path=\"\"",
    ]
    .map(String::from)
    .to_vec();
    let model = crate::common::repo("models/demo_cp.safetensors");
    let cfg = wavecp::coupling::solve::demo_config(&model, &sets).unwrap();
    let r = pareto(&cfg, std::path::Path::new("."), "demo", &[0.1, 10.0]).unwrap();
    for p in &r.points {
        let mut c = cfg.clone();
        c.coupling.as_mut().unwrap().tolerance = p.tolerance;
        let opts = RunOptions {
            reference: true,
            ..RunOptions::default()
        };
        let base = std::path::Path::new(".");
        let (_, h) =
            wavecp::coupling::solve::run_hybrid(&c, base, &opts, &wavecp::comm::Serial).unwrap();
        assert_eq!(
            (p.handback_refused, p.windows_accepted),
            (h.handback_refused, h.windows_accepted)
        );
    }
    // At 0.1 the loss refuses some of what the indicator trusts; at 10 it refuses nothing.
    assert!(r.points[0].handback_refused > 0, "{:?}", r.points[0]);
    assert_eq!(r.points[1].handback_refused, 0);
}
