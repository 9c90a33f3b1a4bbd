//! What a conditioned network reads besides its frames (issue 19): the channels' values, the
//! free-space prior against the Green's-function integral `tests/source.rs` holds the FE to,
//! sources kept outside the zone, and a conditioned, noise-trained model end to end (channel
//! layout, model file, determinism, the refusal of a model with the wrong channel count).

use crate::common::repo;
use crate::source::analytic;
use std::path::Path;
use wavecp::config::SourceConfig;
use wavecp::mesh::{rectangle, CellShape};
use wavecp::sim::point_source;
use wavecp::solver::{BoundaryKind, WaveSolver};
use wavecp::sources::TimeFunction;
use wavecp::surrogate::condition::{free_space, prior_response, Conditioning, WindowCond};

#[test]
fn channels_hold_the_grid_the_times_and_the_parameters_scaled_to_their_ranges() {
    // Two scenarios of 5 parameters; the amplitude (4th) never varies.
    let params = [0.1, 0.2, 2.0, 1.0, 0.5, 0.3, 0.6, 3.0, 1.0, 0.4];
    let c = Conditioning::fit([0.0, 1.0, 0.0, 2.0], [0.0, 1.0], &params, 5);
    assert_eq!(c.len(), 8);
    assert_eq!(c.nparams(), 5);
    let w = WindowCond {
        zone: [0.0, 1.0, 0.0, 2.0],
        ny: 3,
        nx: 2,
        t0: 0.25,
        frame_dt: 0.5,
        t_in: 2,
        params: &params[..5],
        prior: None,
    };
    let mut out = Vec::new();
    c.append(&w, &mut out);
    let n = 6;
    assert_eq!(out.len(), 8 * 2 * n);
    let at = |k: usize, f: usize, j: usize, i: usize| out[(k * 2 + f) * n + j * 2 + i];
    // x and y run from −1 to 1 over the zone, the same in every frame.
    assert_eq!((at(0, 1, 2, 0), at(0, 1, 2, 1)), (-1.0, 1.0));
    assert_eq!(
        (at(1, 0, 0, 1), at(1, 0, 1, 1), at(1, 0, 2, 1)),
        (-1.0, 0.0, 1.0)
    );
    // t: 0.25 and 0.75 over [0, 1].
    assert_eq!((at(2, 0, 1, 1), at(2, 1, 1, 1)), (-0.5, 0.5));
    // source_x 0.1 of [0.1, 0.3] → −1; frequency 2 of [2, 3] → −1; the constant amplitude → 0.
    assert_eq!(
        (at(3, 0, 0, 0), at(5, 1, 2, 1), at(6, 0, 1, 0)),
        (-1.0, -1.0, 0.0)
    );
    // A prior channel comes last and is not a parameter.
    let p = c.clone().with_prior(1.0, None, 0.0, 0.5);
    assert_eq!((p.len(), p.nparams()), (9, 5));
    let mut out = Vec::new();
    p.append(&w, &mut out);
    assert_eq!(out.len(), 9 * 2 * n);
    // Its values: the free-space response at the forecast frames (t0 + (t_in + f) · dt), over
    // the std.
    let u = free_space(&params[..5], 1.0, [1.0, 2.0], 0.25 + 3.0 * 0.5);
    assert!((out[(8 * 2 + 1) * n + 5] as f64 - u / 0.5).abs() < 1e-5 * (1.0 + u.abs()));
}

#[test]
fn the_prior_is_the_greens_function_integral_the_fe_is_held_to() {
    let params = [0.2, 0.3, 2.5, 1.5, 0.5];
    let w = TimeFunction::Ricker {
        amplitude: 1.5,
        frequency: 2.5,
        delay: 0.5,
    };
    let mut worst: f64 = 0.0;
    let mut peak: f64 = 0.0;
    for r in [0.1, 0.3, 0.7] {
        for k in 0..40 {
            let t = 0.05 * k as f64;
            let exact = analytic(&w, r, 1.3, t);
            let p = free_space(&params, 1.3, [0.2 + r * 0.6, 0.3 + r * 0.8], t);
            worst = worst.max((p - exact).abs());
            peak = peak.max(exact.abs());
        }
    }
    assert!(peak > 0.05 && worst < 1e-4 * peak, "{worst:e} of {peak:e}");
}

/// A source near a corner of the absorbing unit square: the FE's trace at two points against
/// the free-space response and against the prior with the sides' reflections.
#[test]
fn the_prior_with_the_sides_reflections_follows_the_fe_in_an_absorbing_square() {
    let mesh = rectangle(CellShape::Quad, 100, 100, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let mut p = crate::common::problem(mesh, 1.0, Some(BoundaryKind::Absorbing));
    let cfg = SourceConfig {
        position: [0.12, 0.88],
        frequency: 3.0,
        amplitude: 1.0,
        delay: Some(0.45),
    };
    p.sources = vec![point_source(&p.mesh, &cfg).unwrap()];
    let points = [[0.4, 0.6], [0.5, 0.5]];
    let rec: Vec<_> = points.iter().map(|x| p.mesh.locate(*x).unwrap()).collect();
    let mut s = WaveSolver::new(&p).unwrap();
    let steps = (1.6 / (0.5 * s.dt_limit())).ceil() as usize;
    s.set_dt(1.6 / steps as f64).unwrap();
    let z = vec![0.0; p.mesh.num_nodes()];
    s.set_initial(&z, &z).unwrap();
    let params = [0.12, 0.88, 3.0, 1.0, 0.45];
    let walls = Some([0.0, 1.0, 0.0, 1.0]);
    let (mut free, mut img, mut den) = (0.0, 0.0, 0.0);
    for _ in 0..steps {
        s.step();
        for (r, x) in rec.iter().zip(&points) {
            let u = r.interpolate(s.u());
            free += (u - free_space(&params, 1.0, *x, s.time())).powi(2);
            img += (u - prior_response(&params, 1.0, walls, *x, s.time())).powi(2);
            den += u * u;
        }
    }
    let (free, img) = ((free / den).sqrt(), (img / den).sqrt());
    println!("traces against the FE: free space {free:.4}, with the sides' reflections {img:.4}");
    assert!(img < 0.5 * free && img < 0.08, "free {free}, images {img}");
}

mod trained {
    use super::*;
    use wavecp::dataset::{generate, DatasetJob, DatasetOptions};
    use wavecp::surrogate::data::{FrameSet, WindowSpec};
    use wavecp::surrogate::modelfile;
    use wavecp::surrogate::train::{run, TrainJob, TrainOptions};

    fn dataset(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("zone.h5");
        let text = format!(
            "[mesh.generate]\nshape = \"quad\"\nnx = 40\nny = 40\n[[boundary]]\ntags = [\"left\", \"right\", \"top\", \"bottom\"]\nkind = \"absorbing\"\n\
             [time]\ndt = 0.01\n[zone]\nx = [0.375, 0.625]\ny = [0.375, 0.625]\nnx = 8\nny = 8\n[frames]\nstride = 2\ncount = 24\nstart = 0\n\
             [sampling]\nsource_x = [0.05, 0.95]\nsource_y = [0.05, 0.95]\noutside_zone = 0.15\nfrequency = [2.0, 3.0]\ndelay = [0.4, 0.5]\n\
             [train]\nsamples = 10\nseed = 4\npath = \"{}\"\n",
            path.display()
        );
        let job: DatasetJob = toml::from_str(&text).unwrap();
        job.validate().unwrap();
        generate(&job, Path::new("."), &job.train, &DatasetOptions::default()).unwrap();
        path
    }

    fn train_job(data: &Path, model: &Path, out: &Path, noise: f64) -> TrainJob {
        let text = format!(
            "[data]\ntrain = \"{}\"\nt_in = 4\nt_out = 4\nwindow_stride = 3\nvalidation = 0.2\nconditioning = \"prior\"\ninput_noise = {noise}\n\
             [model]\nfile = \"{}\"\n[train]\nepochs = 2\nbatch = 4\nseed = 3\n[optimizer]\nlr = 3e-3\n[output]\ndir = \"{}\"\n",
            data.display(),
            model.display(),
            out.display()
        );
        let j: TrainJob = toml::from_str(&text).unwrap();
        j.validate().unwrap();
        j
    }

    fn small_model(dir: &Path, in_channels: usize) -> std::path::PathBuf {
        let text = std::fs::read_to_string(repo("models/small_cp.toml")).unwrap();
        let p = dir.join(format!("m{in_channels}.toml"));
        let text = text.replace("in_channels = 1", &format!("in_channels = {in_channels}"));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_conditioned_model_trains_on_sources_outside_its_zone() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path());
        let fs = FrameSet::load(&data).unwrap();
        // Every source is at least 0.15 outside the zone.
        for p in fs.scenarios.params.chunks(fs.scenarios.nparams) {
            let dx = (0.375 - p[0]).max(p[0] - 0.625);
            let dy = (0.375 - p[1]).max(p[1] - 0.625);
            assert!(dx.max(dy) >= 0.15, "source at {:?}", &p[..2]);
        }
        let opts = TrainOptions {
            progress: false,
            resume: false,
            device: Default::default(),
            stop_after_epochs: None,
        };
        // 1 frame channel + x, y, t + 5 parameters + the prior.
        let wrong = train_job(
            &data,
            &small_model(dir.path(), 9),
            &dir.path().join("w"),
            0.0,
        );
        let e = run(&wrong, Path::new("."), &opts).unwrap_err().to_string();
        assert!(
            e.contains("in_channels = 9") && e.contains("needs 10"),
            "{e}"
        );
        let model = small_model(dir.path(), 10);
        let mut losses = Vec::new();
        for (k, noise) in [0.0, 0.2, 0.2].into_iter().enumerate() {
            let out = dir.path().join(format!("out{k}"));
            let s = run(
                &train_job(&data, &model, &out, noise),
                Path::new("."),
                &opts,
            )
            .unwrap();
            losses.push(s.final_train_loss);
            let l = modelfile::load(&out.join("best.safetensors")).unwrap();
            let c = l.meta.conditioning.unwrap();
            let names: Vec<&str> = c.channels.iter().map(|s| s.as_str()).collect();
            assert_eq!(
                names,
                [
                    "x",
                    "y",
                    "t",
                    "source_x",
                    "source_y",
                    "frequency",
                    "amplitude",
                    "delay",
                    "prior"
                ]
            );
            assert_eq!(c.prior_speed, Some(1.0));
            assert_eq!(c.prior_walls, Some([0.0, 1.0, 0.0, 1.0]));
            // The ranges the dataset job drew from (the amplitude's default, 1 only).
            let drawn = [
                [0.05, 0.95],
                [0.05, 0.95],
                [2.0, 3.0],
                [1.0, 1.0],
                [0.4, 0.5],
            ];
            assert_eq!(c.sampled.as_deref(), Some(&drawn[..]));
        }
        // The noise changes training and is the same on every run.
        assert_ne!(losses[0], losses[1]);
        assert_eq!(losses[1], losses[2]);
        // The batch: the frames first, then the channels; the prior is the free-space field.
        let mut fs = fs;
        let l = modelfile::load(&dir.path().join("out0/best.safetensors")).unwrap();
        let cond = l.meta.conditioning.unwrap();
        fs.scenarios.cond = Some(cond.clone());
        fs.fill_prior();
        let ws = WindowSpec {
            t_in: 4,
            t_out: 4,
            dims: 3,
        };
        let x = ws.input(&fs, &[(2, 5)], fs.mean, fs.std);
        assert_eq!(x.shape, vec![1, 10, 4, 8, 8]);
        let p = &fs.scenarios.params[2 * 5..3 * 5];
        let t = 5.0 * fs.frame_dt + 4.0 * fs.frame_dt; // the first forecast frame
        let u = prior_response(p, 1.0, Some([0.0, 1.0, 0.0, 1.0]), [0.625, 0.375], t);
        let got = x.data[(9 * 4) * 64 + 7] as f64 * fs.std + fs.mean;
        assert!((got - u).abs() < 1e-4 * (1.0 + u.abs()), "{got} vs {u}");
    }
}
