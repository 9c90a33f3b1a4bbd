//! Surrogate workflow end to end on a small dataset: training lowers the loss, the best model
//! evaluates and predicts, a resumed run ends bit-identical to an uninterrupted one, and
//! mismatched or corrupt inputs are clear errors.

use crate::common::repo;
use std::path::{Path, PathBuf};
use wavecp::dataset::{generate, DatasetJob, DatasetOptions};
use wavecp::surrogate::data::{FrameSet, WindowSpec};
use wavecp::surrogate::eval::{evaluate, predict};
use wavecp::surrogate::modelfile;
use wavecp::surrogate::train::{run, TrainJob, TrainOptions};
use wavecp::surrogate::SurrogateError;

pub fn dataset(dir: &Path, name: &str, n: usize, samples: usize, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[mesh.generate]\nshape = \"quad\"\nnx = 30\nny = 30\n[[boundary]]\ntags = [\"left\", \"right\", \"top\", \"bottom\"]\nkind = \"absorbing\"\n\
         [zone]\nx = [0.2, 0.8]\ny = [0.2, 0.8]\nnx = {n}\nny = {n}\n[frames]\nstride = 1\ncount = 20\nstart = 8\n\
         [sampling]\nsource_x = [0.3, 0.7]\nsource_y = [0.3, 0.7]\nfrequency = [3.0, 5.0]\ndelay = [0.1, 0.2]\n\
         [train]\nsamples = {samples}\nseed = {seed}\npath = \"{}\"\n",
        path.display()
    );
    let job: DatasetJob = toml::from_str(&text).unwrap();
    generate(&job, Path::new("."), &job.train, &DatasetOptions::default()).unwrap();
    path
}

/// The untrained small CP model (8 frames in, 8 out, 16 × 16) and metadata fitting `data`
/// (made by [`dataset`] with n = 16): a model file without the training.
pub fn untrained_small_cp(data: &Path) -> (wavecp::nn::model::ModelSpec, modelfile::ModelMeta) {
    let fs = FrameSet::load(data).unwrap();
    let spec = std::fs::read_to_string(repo("models/small_cp.toml")).unwrap();
    let spec = wavecp::nn::model::ModelSpec::from_toml(&spec).unwrap();
    let meta = modelfile::ModelMeta {
        t_in: 8,
        t_out: 8,
        ny: 16,
        nx: 16,
        mean: fs.mean,
        std: fs.std,
        frame_dt: fs.frame_dt,
        dataset: data.display().to_string(),
        epoch: 0,
        train_loss: 1.0,
        val_loss: 1.0,
        trainable_params: 0,
        peak_rss_mb: 0.0,
        epoch_s: 0.0,
        zone: fs.zone,
        calibrations: Default::default(),
        conditioning: None,
    };
    (spec, meta)
}

fn job(data: &Path, out: &Path, model: &str, epochs: usize) -> TrainJob {
    let text = format!(
        "[data]\ntrain = \"{}\"\nt_in = 8\nt_out = 8\nwindow_stride = 2\nvalidation = 0.25\n[model]\nfile = \"{}\"\n\
         [train]\nepochs = {epochs}\nbatch = 4\nseed = 3\n[optimizer]\nlr = 3e-3\nclip_norm = 1.0\n[output]\ndir = \"{}\"\n",
        data.display(),
        repo(&format!("models/{model}.toml")).display(),
        out.display()
    );
    let j: TrainJob = toml::from_str(&text).unwrap();
    j.validate().unwrap();
    j
}

#[test]
fn train_evaluate_predict() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.h5", 16, 8, 1);
    for model in ["small_pair", "small_cp", "small_dense"] {
        let out = dir.path().join(model);
        let s = run(
            &job(&data, &out, model, 40),
            Path::new("."),
            &TrainOptions::default(),
        )
        .unwrap();
        let h = &s.history;
        let last = h.len() - 1;
        eprintln!(
            "{model}: {} params, train loss {:.4} -> {:.4}, val {:.4} -> {:.4}",
            s.trainable_params, h[0].1, h[last].1, h[0].2, h[last].2
        );
        assert!(
            h[last].1 < h[0].1,
            "{model}: training loss did not fall: {h:?}"
        );
        // Baseline: predicting zeros (the normalised mean) on the validation windows.
        let fs = FrameSet::load(&data).unwrap();
        let ws = WindowSpec {
            t_in: 8,
            t_out: 8,
            dims: 3,
        };
        let (_, y) = ws.batch(&fs, &ws.windows(&fs, &[6, 7], 2), fs.mean, fs.std);
        let zero = y.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / y.len() as f64;
        eprintln!("{model}: zero-prediction validation loss {zero:.4}");
        assert!(
            s.best_val_loss < 0.6 * zero,
            "{model}: validation loss {} is not well below the zero predictor's {zero}",
            s.best_val_loss
        );
        assert!(s.best_val_loss.is_finite() && s.best_model.exists());
        let r = evaluate(&s.best_model, &data, 4).unwrap();
        assert_eq!(r.rel_l2_per_frame.len(), 8);
        assert!(r.rel_l2_per_frame.iter().all(|e| e.is_finite() && *e > 0.0));
        assert_eq!(r.rollout_windows, 1, "(20 − 8) / 8 rollout windows");
        assert_eq!(r.trainable_params, s.trainable_params);
        // Windows and rollouts in groups of 4 samples or one at a time: each sample's
        // prediction is its own, so the errors agree (to summation order in the averages).
        let one = evaluate(&s.best_model, &data, 1).unwrap();
        for (a, b) in r
            .rel_l2_per_frame
            .iter()
            .chain(&r.rollout_rel_l2)
            .zip(one.rel_l2_per_frame.iter().chain(&one.rollout_rel_l2))
        {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs(),
                "{model}: batch 4 {a} vs batch 1 {b}"
            );
        }
        let pred = dir.path().join(format!("{model}_pred.h5"));
        assert_eq!(predict(&s.best_model, &data, &pred).unwrap(), 8);
        let f = hdf5::File::open(&pred).unwrap();
        assert_eq!(f.dataset("prediction").unwrap().shape(), vec![8, 8, 16, 16]);
    }
    // The pair model is smaller than the dense one with the same architecture.
    let p = modelfile::load(&dir.path().join("small_pair/best.safetensors"))
        .unwrap()
        .model
        .num_params();
    let d = modelfile::load(&dir.path().join("small_dense/best.safetensors"))
        .unwrap()
        .model
        .num_params();
    assert!(p < d, "pair {p} vs dense {d}");
}

#[test]
fn a_resumed_run_ends_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.h5", 16, 6, 2);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run(
        &job(&data, &a, "small_pair", 4),
        Path::new("."),
        &TrainOptions::default(),
    )
    .unwrap();
    let half = run(
        &job(&data, &b, "small_pair", 4),
        Path::new("."),
        &TrainOptions {
            stop_after_epochs: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(half.epochs, 2);
    let rest = run(
        &job(&data, &b, "small_pair", 4),
        Path::new("."),
        &TrainOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rest.resumed_from, Some(2));
    let la = modelfile::load(&a.join("checkpoint.safetensors")).unwrap();
    let lb = modelfile::load(&b.join("checkpoint.safetensors")).unwrap();
    for (pa, pb) in la.model.params().iter().zip(lb.model.params()) {
        assert_eq!(
            pa.value, pb.value,
            "parameter {} differs after resume",
            pa.name
        );
    }
    assert_eq!(
        la.train
            .unwrap()
            .state
            .history
            .iter()
            .map(|h| h.1)
            .collect::<Vec<_>>(),
        lb.train
            .unwrap()
            .state
            .history
            .iter()
            .map(|h| h.1)
            .collect::<Vec<_>>()
    );
}

#[test]
fn mismatched_corrupt_and_diverging_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.h5", 16, 4, 3);
    let other = dataset(dir.path(), "e.h5", 12, 2, 4);
    let out = dir.path().join("m");
    let s = run(
        &job(&data, &out, "small_pair", 1),
        Path::new("."),
        &TrainOptions::default(),
    )
    .unwrap();
    let e = evaluate(&s.best_model, &other, 4).unwrap_err().to_string();
    assert!(e.contains("16×16") && e.contains("12×12"), "{e}");
    // Corrupt model file.
    let bytes = std::fs::read(&s.best_model).unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let e = evaluate(&bad, &data, 4).err().unwrap().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("not a wavecp model file"),
        "{e}"
    );
    // A model whose input channels do not fit the windows.
    let mut j = job(&data, &out, "small_pair", 1);
    j.data.t_in = 4;
    j.data.t_out = 4;
    let two_d = dir.path().join("m2.toml");
    std::fs::write(
        &two_d,
        std::fs::read_to_string(repo("models/small_pair.toml"))
            .unwrap()
            .replace("dims = 3", "dims = 2")
            .replace("kernel = [1, 2, 2]", "kernel = [2, 2]")
            .replace("stride = [1, 2, 2]", "stride = [2, 2]"),
    )
    .unwrap();
    j.model.file = two_d;
    let e = run(&j, Path::new("."), &TrainOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("in_channels"), "{e}");
    // A training checkpoint whose stored optimizer settings are damaged (a negative learning
    // rate) is refused on --resume instead of training uphill.
    let ck = out.join("checkpoint.safetensors");
    let l = modelfile::load(&ck).unwrap();
    let t = l.train.unwrap();
    let mut cfg = t.optimizer.clone();
    cfg.lr = -1e-3;
    let mut adam = wavecp::nn::train::Adam::new(cfg);
    adam.m = t.m;
    adam.v = t.v;
    modelfile::save(&ck, &l.model, &l.meta, Some((&adam, &t.state))).unwrap();
    let mut j = job(&data, &out, "small_pair", 2);
    j.train.epochs = 2;
    let opts = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    let e = run(&j, Path::new("."), &opts).err().unwrap().to_string();
    assert!(
        e.contains("cannot resume") && e.contains("lr = -0.001"),
        "{e}"
    );
    // A learning rate that makes the loss overflow stops with the epoch and the last checkpoint.
    let mut j = job(&data, &dir.path().join("nan"), "small_pair", 3);
    j.optimizer.lr = 1e30;
    j.optimizer.clip_norm = 0.0;
    match run(&j, Path::new("."), &TrainOptions::default()) {
        Err(SurrogateError::NonFinite { epoch, .. }) => assert!(epoch >= 1),
        other => panic!(
            "expected a non-finite loss error, got {:?}",
            other.map(|s| s.history)
        ),
    }
}

#[test]
fn the_shipped_training_job_runs_shortened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.h5", 16, 4, 5);
    let path = repo("jobs/train_small.toml");
    let sets = vec![
        format!("data.train=\"{}\"", data.display()),
        "train.epochs=1".into(),
        format!("output.dir=\"{}\"", dir.path().join("o").display()),
    ];
    let j = TrainJob::load(&path, &sets).unwrap();
    let s = run(&j, path.parent().unwrap(), &TrainOptions::default()).unwrap();
    assert_eq!(s.epochs, 1);
    let e = TrainJob::load(&path, &["train.epoch=3".into()])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("epoch"), "{e}");
}

/// The paper's comparison files at both scales: the dense encoder-decoder has the paper's ~7 M
/// parameters (half width: ~1.8 M), the CP one at least 7× fewer, `cp7x` between 7× and 7.1×
/// fewer, the pair one (rank 1, 3×3×3) about 3× fewer; each training job runs one epoch on a small 64 × 64 dataset, and `compare`
/// puts them side by side.
#[test]
fn the_paper_comparison_files_have_the_stated_sizes_and_run() {
    for (scale, dense_range) in [
        ("paper", 6_500_000..7_500_000),
        ("half", 1_500_000..2_000_000),
    ] {
        paper_scale_runs(scale, dense_range);
    }
}

fn paper_scale_runs(scale: &str, dense_range: std::ops::Range<usize>) {
    let count = |k: &str| {
        let text = std::fs::read_to_string(repo(&format!("models/{scale}_{k}.toml"))).unwrap();
        wavecp::nn::Model::new(wavecp::nn::ModelSpec::from_toml(&text).unwrap())
            .unwrap()
            .num_params()
    };
    let (d, p, c, c7) = (count("dense"), count("pair"), count("cp"), count("cp7x"));
    eprintln!("{scale} models: dense {d}, pair {p}, cp {c}, cp7x {c7}");
    // The CP rank chosen for the paper's ratio: at least 7× fewer parameters, and not more.
    let r7 = d as f64 / c7 as f64;
    assert!((7.0..7.1).contains(&r7), "cp7x reduction {r7}");
    assert!(dense_range.contains(&d), "dense {d}");
    assert!(
        d as f64 / c as f64 >= 7.0,
        "cp reduction {}",
        d as f64 / c as f64
    );
    assert!(
        (2.5..3.0).contains(&(d as f64 / p as f64)),
        "pair reduction {}",
        d as f64 / p as f64
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.h5", 64, 2, 6);
    let mut bests = vec![];
    for k in ["dense", "pair", "cp", "cp7x"] {
        let path = repo(&format!("jobs/train_{scale}_{k}.toml"));
        let out = dir.path().join(k);
        let sets = vec![
            format!("data.train=\"{}\"", data.display()),
            "data.validation=0.5".into(),
            "data.window_stride=8".into(),
            "train.epochs=1".into(),
            "train.batch=1".into(),
            format!("output.dir=\"{}\"", out.display()),
        ];
        let j = TrainJob::load(&path, &sets).unwrap();
        let s = run(&j, path.parent().unwrap(), &TrainOptions::default()).unwrap();
        assert_eq!(s.trainable_params, [d, p, c, c7][bests.len()]);
        bests.push(s.best_model);
    }
    let rows = wavecp::surrogate::eval::compare(&bests, &data, 2).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].param_reduction, 1.0);
    assert!((rows[2].param_reduction - d as f64 / c as f64).abs() < 1e-9);
    assert!(rows
        .iter()
        .all(|r| r.epoch_s > 0.0 && r.peak_train_mb > 0.0 && r.test_rel_l2.is_finite()));
    assert!(
        wavecp::surrogate::eval::compare_markdown(&rows)
            .lines()
            .count()
            == 6
    );
}

/// The 2-D form (frames as channels, `[B, t_in, 1, ny, nx] → [B, t_out, 1, ny, nx]`) trains too.
#[test]
fn a_two_dimensional_model_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.h5", 16, 8, 7);
    let s = run(
        &job(&data, &dir.path().join("o"), "small_pair2d", 30),
        Path::new("."),
        &TrainOptions::default(),
    )
    .unwrap();
    let fs = FrameSet::load(&data).unwrap();
    let ws = WindowSpec {
        t_in: 8,
        t_out: 8,
        dims: 2,
    };
    let (_, y) = ws.batch(&fs, &ws.windows(&fs, &[6, 7], 2), fs.mean, fs.std);
    assert_eq!(y.shape[1..3], [8, 1]);
    let zero = y.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / y.len() as f64;
    eprintln!(
        "2-D pair: best validation {:.4} vs zero predictor {zero:.4}",
        s.best_val_loss
    );
    assert!(
        s.best_val_loss < 0.6 * zero,
        "{} vs {zero}",
        s.best_val_loss
    );
    let r = evaluate(&s.best_model, &data, 4).unwrap();
    assert_eq!(r.rel_l2_per_frame.len(), 8);
}

/// The name of CUDA device 0 when one opens (the emulator's included).
fn gpu_name() -> Option<String> {
    #[cfg(feature = "cuda")]
    return wavecp::cuda::Gpu::new(0).ok().map(|g| g.info.name);
    #[cfg(not(feature = "cuda"))]
    None
}

/// Says "skipped: `why`" where the log shows it (the harness captures `eprintln!`); under
/// `WAVECP_REQUIRE_CUDA=1` a skip is a failure.
fn skip_gpu_test(why: &str) {
    assert!(
        std::env::var("WAVECP_REQUIRE_CUDA").map_or(true, |v| v != "1"),
        "WAVECP_REQUIRE_CUDA=1 but {why}"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// `--device`: `cuda` without a usable GPU is an error that names the reason, before any data
/// is read; `auto` falls back to the CPU and trains exactly as `cpu` does (or, where a GPU
/// opens, follows the CPU's loss curve).
#[test]
fn device_selection_is_explicit() {
    use wavecp::nn::Device;
    let have_gpu = gpu_name().is_some();
    let dir = tempfile::tempdir().unwrap();
    let opts = |device| TrainOptions {
        device,
        ..TrainOptions::default()
    };
    if !have_gpu {
        let missing = job(
            &dir.path().join("no-such.h5"),
            &dir.path().join("x"),
            "small_cp",
            1,
        );
        match run(&missing, Path::new("."), &opts(Device::Cuda(0))) {
            Err(SurrogateError::Cuda(m)) => {
                assert!(m.contains("--device cuda:0"), "{m}");
                assert!(
                    m.contains("driver") || m.contains("device") || m.contains("feature"),
                    "{m}"
                );
            }
            other => panic!(
                "expected a CUDA error before the missing dataset, got {:?}",
                other.map(|s| s.epochs)
            ),
        }
    }
    // `cuda` is device 0, `cuda:N` device N; anything else names the accepted forms.
    assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
    assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
    for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1"] {
        let e = bad.parse::<Device>().unwrap_err();
        assert!(e.contains("cuda:N") && e.contains(bad), "{e}");
    }
    // A device number past what the driver shows is an error naming both (the emulator shows
    // one device; without a driver the missing driver is the reason).
    let far = job(
        &dir.path().join("no-such.h5"),
        &dir.path().join("y"),
        "small_cp",
        1,
    );
    match run(&far, Path::new("."), &opts(Device::Cuda(7))) {
        Err(SurrogateError::Cuda(m)) => {
            assert!(m.contains("--device cuda:7"), "{m}");
            if have_gpu {
                assert!(m.contains("device 7") && m.contains("shows"), "{m}");
            }
        }
        other => panic!("expected a CUDA error, got {:?}", other.map(|s| s.epochs)),
    }
    let data = dataset(dir.path(), "d.h5", 16, 4, 9);
    let cpu = run(
        &job(&data, &dir.path().join("c"), "small_cp", 2),
        Path::new("."),
        &opts(Device::Cpu),
    )
    .unwrap();
    let auto = run(
        &job(&data, &dir.path().join("a"), "small_cp", 2),
        Path::new("."),
        &opts(Device::Auto),
    )
    .unwrap();
    for (c, a) in cpu.history.iter().zip(&auto.history) {
        if have_gpu {
            assert!(
                (c.1 - a.1).abs() <= 1e-3 * c.1,
                "train loss: cpu {} gpu {}",
                c.1,
                a.1
            );
            assert!(
                (c.2 - a.2).abs() <= 1e-3 * c.2,
                "validation loss: cpu {} gpu {}",
                c.2,
                a.2
            );
        } else {
            assert_eq!(
                (c.1, c.2),
                (a.1, a.2),
                "auto without a GPU must be the CPU run"
            );
        }
    }
    // Evaluation takes the same choice.
    let e_cpu = evaluate(&cpu.best_model, &data, 4).unwrap();
    let e_auto =
        wavecp::surrogate::eval::evaluate_on(&cpu.best_model, &data, 4, Device::Auto).unwrap();
    let tol = if have_gpu { 1e-4 } else { 0.0 };
    for (c, a) in e_cpu.rel_l2_per_frame.iter().zip(&e_auto.rel_l2_per_frame) {
        assert!(
            (c - a).abs() <= tol * c,
            "per-frame error: cpu {c} auto {a}"
        );
    }
}

/// A GPU run is deterministic (no atomics, fixed reduction orders) and its checkpoints carry
/// the device's weights and AdamW moments: an interrupted GPU run resumed on the GPU ends
/// bit-identical to an uninterrupted one, and its checkpoint resumed on the CPU (or a CPU
/// checkpoint on the GPU) continues the same loss curve within the f32 summation-order
/// tolerance of the CPU-vs-GPU comparison above.
#[test]
fn gpu_runs_resume_bit_identical_and_across_devices() {
    use wavecp::nn::Device;
    if gpu_name().is_none() {
        return skip_gpu_test("no CUDA device");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.h5", 16, 6, 4);
    let train = |out: &str, device, stop: Option<usize>, resume| {
        run(
            &job(&data, &dir.path().join(out), "small_pair", 4),
            Path::new("."),
            &TrainOptions {
                device,
                stop_after_epochs: stop,
                resume,
                ..TrainOptions::default()
            },
        )
        .unwrap()
    };
    let params = |out: &str| {
        modelfile::load(&dir.path().join(out).join("checkpoint.safetensors"))
            .unwrap()
            .model
            .params()
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect::<Vec<_>>()
    };
    let whole = train("gpu", Device::Cuda(0), None, false);
    assert_eq!(train("gpu2", Device::Cuda(0), Some(2), false).epochs, 2);
    let rest = train("gpu2", Device::Cuda(0), None, true);
    assert_eq!(rest.resumed_from, Some(2));
    for ((name, a), (_, b)) in params("gpu").iter().zip(params("gpu2")) {
        assert!(a == &b, "GPU parameter {name} differs after a GPU resume");
    }
    let losses = |s: &wavecp::surrogate::train::TrainSummary| {
        s.history.iter().map(|h| (h.1, h.2)).collect::<Vec<_>>()
    };
    assert_eq!(
        losses(&whole),
        losses(&rest),
        "GPU loss history after resume"
    );
    // Across devices: the GPU's first two epochs continued on the CPU, and the CPU's continued
    // on the GPU, follow the uninterrupted runs' curves.
    let cpu = train("cpu", Device::Cpu, None, false);
    train("g2c", Device::Cuda(0), Some(2), false);
    let g2c = train("g2c", Device::Cpu, None, true);
    train("c2g", Device::Cpu, Some(2), false);
    let c2g = train("c2g", Device::Cuda(0), None, true);
    for (label, reference, resumed) in
        [("GPU then CPU", &whole, &g2c), ("CPU then GPU", &cpu, &c2g)]
    {
        assert_eq!(resumed.resumed_from, Some(2), "{label}");
        for (r, s) in losses(reference).iter().zip(losses(resumed)) {
            assert!(
                (r.0 - s.0).abs() <= 1e-3 * r.0 && (r.1 - s.1).abs() <= 1e-3 * r.1,
                "{label}: losses {r:?} uninterrupted vs {s:?} resumed"
            );
        }
    }
}

/// Device memory on the emulated GPU, whose size `WAVECP_EMU_MEMORY_MIB` sets: a run reports
/// its peak, which holds at least the weights, gradients and AdamW moments (16 bytes a
/// parameter) and the resident frames, and grows with the batch; with less memory than a batch
/// of 4 needs, `wavecp train` stops with an out-of-memory error that names the figures and the
/// remedy (no panic, exit status 1), and the remedy (batch 1) then trains in the same memory.
/// Frames that would not leave room for the steps are not kept on the device: the batches are
/// copied from the host instead, with the same losses.
#[test]
fn gpu_memory_is_reported_and_running_out_is_a_clear_error() {
    use std::process::Command;
    // Only the emulator's memory can be made small on demand.
    if !gpu_name().is_some_and(|n| n.contains("cuda-emu")) {
        return skip_gpu_test("no CUDA device (this test needs the CUDA emulator)");
    }
    let dir = tempfile::tempdir().unwrap();
    // `stride`: frames between windows (the big frame set's run is kept short by taking one
    // window per sample).
    let job_file = |name: &str, samples: usize, stride: usize| {
        let data = dataset(dir.path(), &format!("{name}.h5"), 16, samples, 5);
        let file = dir.path().join(format!("{name}.toml"));
        let mut j = job(&data, &dir.path().join(name), "small_pair", 1);
        j.data.window_stride = stride;
        std::fs::write(&file, toml::to_string(&j).unwrap()).unwrap();
        (file, data)
    };
    // `memory_mib`: the device's size and how much of it other processes hold.
    let command = |job: &Path, batch: usize, memory_mib: Option<(f64, f64)>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wavecp"));
        c.args(["train", job.to_str().unwrap(), "--device", "cuda", "--json"])
            .args(["--set", &format!("train.batch={batch}")]);
        if let Some((total, taken)) = memory_mib {
            c.env("WAVECP_EMU_MEMORY_MIB", total.to_string())
                .env("WAVECP_EMU_MEMORY_TAKEN_MIB", taken.to_string());
        }
        c
    };
    let train = |job: &Path, batch: usize, memory_mib: Option<(f64, f64)>| {
        command(job, batch, memory_mib).output().unwrap()
    };
    let json = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let peak = |v: &serde_json::Value| {
        v["gpu_peak_mib"]
            .as_f64()
            .expect("gpu_peak_mib on a GPU run")
    };
    let (small, data) = job_file("small", 6, 2);
    let r1 = json(&train(&small, 1, None));
    let (p1, nparams) = (peak(&r1), r1["trainable_params"].as_u64().unwrap() as f64);
    let p4 = peak(&json(&train(&small, 4, None)));
    let fs = FrameSet::load(&data).unwrap();
    let floor = (16.0 * nparams + 4.0 * fs.frames.len() as f64) / f64::from(1 << 20);
    eprintln!("GPU peak: batch 1 {p1:.2} MiB, batch 4 {p4:.2} MiB, weights+grads+moments+frames {floor:.2} MiB");
    assert!(
        p1 >= floor,
        "peak {p1} MiB below the {floor} MiB that must be resident"
    );
    assert!(
        p4 > p1 + 0.5 * (p1 - floor),
        "batch 4 {p4} MiB vs batch 1 {p1} MiB"
    );
    let cap = 0.5 * (p1 + p4);
    let stats = dir.path().join("emu-stats.json");
    let out = command(&small, 4, Some((cap, 0.0)))
        .env("WAVECP_EMU_STATS", &stats)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The pool's unused memory was handed back and the allocation retried before the error.
    let calls: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(calls["cuMemPoolTrimTo"], 1, "{calls}");
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("in {cap:.2} MiB, batch 4: {}", err.trim());
    for want in [
        "out of memory",
        "asked for",
        "in use by this process",
        "free on the device",
        "lower `train.batch`",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
    let out = train(&small, 1, Some((cap, 0.0)));
    assert!(
        out.status.success(),
        "batch 1 in {cap} MiB: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // On a GPU shared with another process: frames that would fit half the device but not
    // beside the other process's memory and the steps are copied per batch instead, with the
    // same losses as when they are resident.
    let (big, big_data) = job_file("big", 48, 8);
    let frames = 4.0 * FrameSet::load(&big_data).unwrap().frames.len() as f64 / f64::from(1 << 20);
    let resident = train(&big, 1, None);
    let log = String::from_utf8_lossy(&resident.stderr).to_string();
    assert!(log.contains("frames resident on the device"), "{log}");
    let resident = json(&resident);
    let (total, taken) = (peak(&resident) + 0.3, 0.6 * frames);
    assert!(frames < 0.5 * total && peak(&resident) + taken > total);
    let streamed = train(&big, 1, Some((total, taken)));
    let log = String::from_utf8_lossy(&streamed.stderr).to_string();
    eprintln!(
        "frames {frames:.2} MiB, resident peak {:.2} MiB; device {total:.2} MiB with {taken:.2} MiB taken: {log}",
        peak(&resident)
    );
    assert!(log.contains("batches are copied from the host"), "{log}");
    let streamed = json(&streamed);
    assert!(
        peak(&streamed) + taken <= total,
        "{} MiB beside {taken} MiB in {total} MiB",
        peak(&streamed)
    );
    assert_eq!(
        resident["history"][0][1], streamed["history"][0][1],
        "train loss"
    );
    assert_eq!(
        resident["history"][0][2], streamed["history"][0][2],
        "validation loss"
    );
}
