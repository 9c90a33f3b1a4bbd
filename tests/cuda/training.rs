//! Whole training steps on the GPU: the CPU loss curve, one wait per step, resident batches.

use super::*;

/// A small U-Net with every layer kind the GPU executor supports: pair, CP and dense
/// convolutions, GELU and tanh, average and max pooling, a transposed convolution, an add
/// skip, nearest up-sampling and a concat skip.
const GPU_UNET: &str = r#"
[model]
dims = 3
in_channels = 2
kind = "pair"
rank = 2
seed = 5

[[layer]]
type = "conv"
out = 4
kernel = 3
padding = 1
[[layer]]
type = "gelu"
[[layer]]
type = "save"
name = "e1"
[[layer]]
type = "pool"
mode = "avg"
kernel = [1, 2, 2]
[[layer]]
type = "conv"
kind = "cp"
rank = 3
out = 6
kernel = 3
padding = 1
[[layer]]
type = "tanh"
[[layer]]
type = "conv_transpose"
out = 4
kernel = [1, 2, 2]
stride = [1, 2, 2]
[[layer]]
type = "add"
name = "e1"
[[layer]]
type = "pool"
mode = "max"
kernel = [1, 2, 2]
[[layer]]
type = "upsample"
scale = [1, 2, 2]
[[layer]]
type = "concat"
name = "e1"
[[layer]]
type = "conv"
kind = "dense"
out = 1
kernel = 1
"#;

#[test]
fn gpu_training_steps_follow_the_cpu_loss_curve() {
    use wavecp::cuda::model::GpuModel;
    use wavecp::nn::train::{loss, Adam, AdamConfig, LossKind};
    use wavecp::nn::{Model, ModelSpec, Tensor};
    let Some(gpu) = open_gpu() else {
        return;
    };
    let spec = ModelSpec::from_toml(GPU_UNET).unwrap();
    let mut cpu = Model::new(spec.clone()).unwrap();
    let mut gm = GpuModel::from_model(&gpu, &Model::new(spec).unwrap()).unwrap();
    let d = [2usize, 2, 3, 8, 8];
    let x = Tensor::from_vec(
        &d,
        inputs(d.iter().product(), 71)
            .iter()
            .map(|v| v / 9.0)
            .collect(),
    )
    .unwrap();
    let cfg = AdamConfig {
        clip_norm: 1.0,
        weight_decay: 0.01,
        ..AdamConfig::new(3e-3)
    };
    let mut adam = Adam::new(cfg.clone());
    let mut target = None;
    for step in 0..4 {
        let y = cpu.forward(&x).unwrap();
        let t = target
            .get_or_insert_with(|| {
                Tensor::from_vec(
                    &y.shape,
                    inputs(y.len(), 72).iter().map(|v| v / 9.0).collect(),
                )
                .unwrap()
            })
            .clone();
        let (l, dy) = loss(LossKind::Mse, &y, &t).unwrap();
        cpu.zero_grad();
        cpu.backward(&dy).unwrap();
        let norm = adam.update(&mut cpu.params_mut());

        let (yd, od) = gm
            .forward(&gpu, gpu.to_device(&x.data).unwrap(), d)
            .unwrap();
        assert_eq!(od.to_vec(), y.shape);
        let td = gpu.to_device(&t.data).unwrap();
        let mut gd = gpu.device_zeros(y.len()).unwrap();
        let lg = gpu.mse_dev(&yd, &td, y.len(), &mut gd).unwrap();
        gm.zero_grad(&gpu).unwrap();
        gm.backward(&gpu, gd, od).unwrap();
        gm.adam_step(&gpu, &cfg).unwrap();
        let ng = gm
            .grad_norm(&gpu)
            .unwrap()
            .expect("clipping on: the norm is kept");
        // Before the first update both run the same network on the same data: the losses differ
        // by f32 summation order only. Each AdamW step then moves every weight by at most
        // about lr, and a gradient near zero can change sign between the backends, so later
        // losses may drift by O(lr·|∂L/∂θ|): 1e-3 relative covers four steps at lr 3e-3.
        let tol = if step == 0 { 1e-5 } else { 1e-3 };
        assert!(
            (lg - l).abs() <= tol * l.abs(),
            "step {step}: loss gpu {lg} cpu {l}"
        );
        assert!(
            (ng - norm).abs() <= 1e-3 * norm,
            "step {step}: gradient norm gpu {ng} cpu {norm}"
        );
    }
    // The weights after four steps: an AdamW step is at most about lr per weight, so no weight
    // may differ by more than 2 · 4 · lr (opposite moves every step), and all but a few (near-
    // zero gradients) must agree to float rounding.
    let gv = gm.param_values(&gpu).unwrap();
    let cp = cpu.params();
    assert_eq!(gv.len(), cp.len());
    let (mut off, mut total) = (0usize, 0usize);
    for (g, c) in gv.iter().zip(&cp) {
        assert_eq!(g.len(), c.value.len(), "{}", c.name);
        for (a, b) in g.iter().zip(&c.value) {
            assert!((a - b).abs() <= 2.0 * 4.0 * 3e-3, "{}: {a} vs {b}", c.name);
            off += usize::from((a - b).abs() > 1e-4 * b.abs() + 1e-6);
            total += 1;
        }
    }
    assert!(
        off * 100 <= total,
        "{off} of {total} weights differ beyond rounding"
    );
}

/// The calling thread's count of emulated driver call `what`, when the driver is the CUDA
/// emulator (`None` on a real driver, which has no such counter).
#[cfg(feature = "hdf5")]
fn emu_count(what: &str) -> Option<u64> {
    // SAFETY: loads the driver library already loaded by cudarc (dlopen of the same name
    // returns the same handle) and, if it is the emulator, calls its counter, whose signature
    // is `unsigned long long wavecp_emu_count(const char*)` (tests/cuda-emu/driver.cpp).
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let f: libloading::Symbol<unsafe extern "C" fn(*const std::ffi::c_char) -> u64> =
            lib.get(b"wavecp_emu_count\0").ok()?;
        let name = std::ffi::CString::new(what).ok()?;
        Some(f(name.as_ptr()))
    }
}

/// A steady-state GPU training step (resident data, a U-Net with every node kind) through the
/// emulator, counting its driver calls: one copy back (the loss) and no other wait, nothing
/// uploaded, no memset, no kernel lookup, as many frees as allocations.
#[cfg(feature = "hdf5")]
#[test]
fn a_gpu_training_step_waits_once_and_uploads_nothing() {
    use wavecp::nn::train::{Adam, AdamConfig, LossKind};
    use wavecp::nn::{Model, ModelSpec};
    use wavecp::surrogate::data::{FrameSet, WindowSpec};
    use wavecp::surrogate::engine::{GpuTrainer, Slot};
    let Some(gpu) = open_gpu() else { return };
    if emu_count("cuLaunchKernel").is_none() {
        skipped("counting driver calls needs the CUDA emulator");
        return;
    }
    let (samples, nframes, ny, nx) = (2, 9, 8, 8);
    let fs = FrameSet {
        path: "mem".into(),
        frames: inputs(samples * nframes * ny * nx, 43),
        samples,
        nframes,
        ny,
        nx,
        mean: 0.0,
        std: 1.0,
        frame_dt: 0.1,
        zone: None,
        scenarios: Default::default(),
    };
    let ws = WindowSpec {
        t_in: 3,
        t_out: 3,
        dims: 3,
    };
    // Dense, pair and CP layers, a transposed convolution, both poolings, up-sampling, add
    // and concat skips: every kind of node a step runs.
    let spec =
        ModelSpec::from_toml(&GPU_UNET.replace("in_channels = 2", "in_channels = 1")).unwrap();
    let mut e = GpuTrainer::new(gpu, &Model::new(spec).unwrap(), LossKind::Mse).unwrap();
    assert!(e.keep_frames(&fs, ws).unwrap());
    let wins = ws.windows(&fs, &[0, 1], 1);
    e.set_windows(Slot::Train, &wins).unwrap();
    let mut adam = Adam::new(AdamConfig {
        clip_norm: 1e-3,
        ..AdamConfig::new(1e-3)
    });
    let names = [
        "cuLaunchKernel",
        "cuMemcpyDtoH",
        "bytes DtoH",
        "cuMemcpyHtoD",
        "cuMemset",
        "cuModuleGetFunction",
        "cuStreamSynchronize",
        "cuCtxSynchronize",
        "cuMemAlloc",
        "cuMemFree",
    ];
    let counts = || -> Vec<u64> { names.iter().map(|n| emu_count(n).unwrap()).collect() };
    // The first step looks the kernels up, makes the AdamW moments and uploads the tensor
    // tables; the next ones reuse all of it.
    let mut per_step = vec![];
    for step in 0..3 {
        let before = counts();
        let p = e
            .queue_step_at(Slot::Train, 2 * step % wins.len(), 2, &mut adam)
            .unwrap();
        let l = e.loss(&p).unwrap();
        drop(p);
        assert!(l.is_finite() && l > 0.0);
        let after = counts();
        per_step.push(
            names
                .iter()
                .zip(after.iter().zip(&before))
                .map(|(n, (a, b))| (*n, a - b))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    for (i, c) in per_step.iter().enumerate().skip(1) {
        // One wait per step, the copy of the loss (a handful of f64 partial sums) back; no
        // other synchronisation.
        assert_eq!(c["cuMemcpyDtoH"], 1, "step {i}: {c:?}");
        assert!(c["bytes DtoH"] <= 8 * 1024, "step {i}: {c:?}");
        assert_eq!(
            c["cuStreamSynchronize"] + c["cuCtxSynchronize"],
            0,
            "step {i}: {c:?}"
        );
        // Nothing goes to the device (batches are cut there, tables are reused), nothing is
        // set by memset (gradients are zeroed by one kernel), no kernel is looked up again,
        // and what a step allocates it frees.
        assert_eq!(c["cuMemcpyHtoD"], 0, "step {i}: {c:?}");
        assert_eq!(c["cuMemset"], 0, "step {i}: {c:?}");
        assert_eq!(c["cuModuleGetFunction"], 0, "step {i}: {c:?}");
        assert_eq!(c["cuMemAlloc"], c["cuMemFree"], "step {i}: {c:?}");
        assert_eq!(
            c["cuLaunchKernel"], per_step[1]["cuLaunchKernel"],
            "step {i}"
        );
    }
    assert!(per_step[0]["cuModuleGetFunction"] > 0);
    eprintln!(
        "driver calls per training step after the first: {:?}",
        per_step[2]
    );
}

/// Batches cut on the device from the resident frame set are the same bits as the CPU's
/// `WindowSpec::stack` (a copy: exact), for 2-D and 3-D layouts, inputs and targets, windows in
/// a shuffled order and a last partial batch; windows that would run past the frames are refused.
#[cfg(feature = "hdf5")]
#[test]
fn resident_window_batches_match_the_cpu_stack() {
    use wavecp::surrogate::data::{FrameSet, WindowSpec};
    let Some(gpu) = open_gpu() else { return };
    let (samples, nframes, ny, nx) = (3, 11, 5, 7);
    let frames = inputs(samples * nframes * ny * nx, 41);
    let fs = FrameSet {
        path: "mem".into(),
        frames,
        samples,
        nframes,
        ny,
        nx,
        mean: 0.013,
        std: 0.37,
        frame_dt: 0.1,
        zone: None,
        scenarios: Default::default(),
    };
    let norm: Vec<f32> = fs
        .frames
        .iter()
        .map(|v| ((*v as f64 - fs.mean) / fs.std) as f32)
        .collect();
    for dims in [2, 3] {
        let ws = WindowSpec {
            t_in: 3,
            t_out: 4,
            dims,
        };
        let mut wins = ws.windows(&fs, &[0, 1, 2], 2);
        wins.reverse();
        wins.swap(1, 4);
        let first: Vec<u32> = wins
            .iter()
            .map(|&(s, t0)| (s * nframes + t0) as u32)
            .collect();
        let span = ws.t_in + ws.t_out;
        let batch = 4;
        for b0 in (0..wins.len()).step_by(batch) {
            let count = batch.min(wins.len() - b0);
            let (x, y) = ws.batch(&fs, &wins[b0..b0 + count], fs.mean, fs.std);
            for (off, t, want) in [(0, ws.t_in, &x), (ws.t_in, ws.t_out, &y)] {
                let got = gpu
                    .gather_windows(&norm, ny * nx, (&first, span), b0..b0 + count, off..off + t)
                    .unwrap();
                assert_eq!(got.len(), want.data.len());
                for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "dims {dims} b0 {b0} off {off} i {i}"
                    );
                }
            }
        }
    }
    let past = ((samples * nframes) - 2) as u32;
    assert!(gpu
        .gather_windows(&norm, ny * nx, (&[0, past], 7), 0..2, 0..3)
        .is_err());
}
