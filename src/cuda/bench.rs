//! `wavecp bench conv --device cuda`: one convolution layer on the GPU, timed with stream
//! synchronisation, with the FLOPs it performs and the rate it reached.

use super::{driver_err, CudaError, Gpu, GpuConv};
use crate::bench::ConvShape;
use crate::nn::conv::Geom;
use crate::nn::layers::{ConvCore, CpConv, CpFactors, DenseConv, PairConv};
use crate::nn::model::ConvKind;
use serde::Serialize;
use std::time::Instant;

/// Timings of one GPU convolution benchmark (medians over samples, milliseconds).
#[derive(Debug, Clone, Serialize)]
pub struct GpuConvResult {
    pub shape: ConvShape,
    pub device: String,
    pub trainable_params: usize,
    pub forward_ms: f64,
    pub forward_backward_ms: f64,
    /// Floating-point operations of one forward+backward pass as this implementation runs it
    /// (multiply-adds count 2; pair counts the dense convolution it runs).
    pub flops_forward_backward: f64,
    /// `flops_forward_backward / forward_backward_ms`, in TFLOP/s.
    pub achieved_tflops: f64,
    /// TF32 is not used: the kernels multiply in FP32 FMAs.
    pub tf32: bool,
    pub samples: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seeded values in [-0.5, 0.5) (timing does not depend on them).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Runs one layer of `shape` on device 0: a warm-up pass, then `samples` timed ones.
pub fn run_conv(
    shape: &ConvShape,
    samples: usize,
    ordinal: usize,
) -> Result<GpuConvResult, CudaError> {
    let gpu = Gpu::new(ordinal)?;
    let (ci, co, r, k) = (shape.cin, shape.cout, shape.rank, shape.kernel);
    let (kk, axes, t) = if shape.dims == 2 {
        ([1, k, k], vec![1, 2], 1)
    } else {
        ([k, k, k], vec![0, 1, 2], shape.size[0])
    };
    let g = Geom {
        k: kk,
        stride: [1; 3],
        pad: kk.map(|v| v / 2),
        dil: [1; 3],
    };
    let core = ConvCore { ci, co, g };
    let kv = g.kvol();
    let (mut layer, params) = match shape.kind {
        ConvKind::Dense => {
            let l = DenseConv::new(core, values(co * ci * kv, 1), true);
            (GpuConv::from_dense(&gpu, &l)?, co * ci * kv + co)
        }
        ConvKind::Pair => {
            let f = axes
                .iter()
                .map(|&a| values(co * ci * r * kk[a], 2 + a as u64))
                .collect();
            let n = co * ci * r * axes.iter().map(|&a| kk[a]).sum::<usize>() + co;
            (
                GpuConv::from_pair(&gpu, &PairConv::new(core, r, axes.clone(), f, true))?,
                n,
            )
        }
        ConvKind::Cp => {
            let a = axes
                .iter()
                .map(|&a| values(r * kk[a], 5 + a as u64))
                .collect();
            let n = r * ci + r * axes.iter().map(|&a| kk[a]).sum::<usize>() + co * r + co;
            let l = CpConv::new(
                ConvCore { ci, co, g },
                axes.clone(),
                CpFactors {
                    rank: r,
                    v: values(r * ci, 3),
                    a,
                    u: values(co * r, 4),
                },
                true,
            );
            (GpuConv::from_cp(&gpu, &l)?, n)
        }
    };
    let d = [shape.batch, ci, t, shape.size[1], shape.size[2]];
    let nvox = t * shape.size[1] * shape.size[2];
    let x = values(d.iter().product(), 6);
    let xd = gpu.to_device(&x)?;
    let (y, _) = layer.forward(&gpu, xd.clone(), d)?;
    let dy = gpu.to_device(&values(y.len(), 7))?;
    layer.backward(&gpu, &dy)?;
    let (mut f, mut fb) = (vec![], vec![]);
    for _ in 0..samples.max(1) {
        let xi = xd.clone();
        gpu.synchronize()?;
        let t0 = Instant::now();
        layer.forward(&gpu, xi, d)?;
        gpu.synchronize()?;
        let t1 = Instant::now();
        layer.backward(&gpu, &dy)?;
        gpu.synchronize()?;
        let t2 = Instant::now();
        f.push((t1 - t0).as_secs_f64() * 1e3);
        fb.push((t2 - t0).as_secs_f64() * 1e3);
    }
    // Forward, input gradient and weight gradient: three passes of the same multiply-adds.
    let per_pass = match shape.kind {
        ConvKind::Dense | ConvKind::Pair => 2.0 * (co * ci * kv) as f64,
        ConvKind::Cp => {
            2.0 * (r * ci + r * axes.iter().map(|&a| kk[a]).sum::<usize>() + co * r) as f64
        }
    };
    let flops = 3.0 * per_pass * (shape.batch * nvox) as f64;
    let fbm = median(fb);
    Ok(GpuConvResult {
        shape: shape.clone(),
        device: gpu.info.name.clone(),
        trainable_params: params,
        forward_ms: median(f),
        forward_backward_ms: fbm,
        flops_forward_backward: flops,
        achieved_tflops: flops / (fbm * 1e-3) / 1e12,
        tf32: false,
        samples: samples.max(1),
    })
}

/// One `wavecp bench train --device cuda` measurement: a whole training step of a model file on
/// the GPU (milliseconds, medians over `steps` after `warmup`).
#[derive(Debug, Clone, Serialize)]
pub struct GpuTrainStepResult {
    pub model: String,
    pub device: String,
    pub input_shape: Vec<usize>,
    pub trainable_params: usize,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub update_ms: f64,
    pub step_ms: f64,
    /// The step as a training loop runs it: everything queued, one wait at the end (for the
    /// loss). `step_ms` sums the phases, each waited for, so it adds three drains of the queue.
    pub step_one_wait_ms: f64,
    /// The most device memory the model, its optimiser state and a step held at once (MiB,
    /// from the memory pool; PyTorch's `max_memory_allocated`), where the device reports it.
    pub peak_memory_mib: Option<f64>,
    pub steps: usize,
    pub tf32: bool,
}

/// Times `forward → MSE → backward → AdamW (clipped at 1)` of the model in `file` on a random
/// `[batch, in_channels, t, y, x]` batch, as `wavecp bench train` does on the CPU.
pub fn run_train(
    file: &std::path::Path,
    batch: usize,
    size: [usize; 3],
    steps: usize,
    warmup: usize,
    ordinal: usize,
) -> Result<GpuTrainStepResult, CudaError> {
    use super::model::GpuModel;
    use crate::nn::train::AdamConfig;
    use crate::nn::{Model, ModelSpec};
    let text = std::fs::read_to_string(file)
        .map_err(|e| CudaError::Invalid(format!("{}: {e}", file.display())))?;
    let spec = ModelSpec::from_toml(&text).map_err(|e| CudaError::Invalid(e.to_string()))?;
    let (dims, cin) = (spec.model.dims, spec.model.in_channels);
    let cpu = Model::new(spec).map_err(|e| CudaError::Invalid(e.to_string()))?;
    let params = cpu.num_params();
    let gpu = Gpu::new(ordinal)?;
    gpu.reset_peak_memory();
    let mut m = GpuModel::from_model(&gpu, &cpu)?;
    let t = if dims == 2 { 1 } else { size[0] };
    let d = [batch, cin, t, size[1], size[2]];
    let xd = gpu.to_device(&values(d.iter().product(), 11))?;
    let cfg = AdamConfig {
        clip_norm: 1.0,
        ..AdamConfig::new(1e-4)
    };
    let (y, od) = m.forward(&gpu, xd.clone(), d)?;
    let target = gpu.to_device(&values(y.len(), 12))?;
    let (mut f, mut b, mut u, mut s) = (vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps.max(1) {
        let xi = xd.clone();
        gpu.synchronize()?;
        let t0 = Instant::now();
        let (y, _) = m.forward(&gpu, xi, d)?;
        let mut g = gpu.device_uninit(y.len())?;
        gpu.mse_dev(&y, &target, y.len(), &mut g)?;
        gpu.synchronize()?;
        let t1 = Instant::now();
        m.zero_grad(&gpu)?;
        m.backward(&gpu, g, od)?;
        gpu.synchronize()?;
        let t2 = Instant::now();
        m.adam_step(&gpu, &cfg)?;
        gpu.synchronize()?;
        let t3 = Instant::now();
        if i >= warmup {
            f.push((t1 - t0).as_secs_f64() * 1e3);
            b.push((t2 - t1).as_secs_f64() * 1e3);
            u.push((t3 - t2).as_secs_f64() * 1e3);
            s.push((t3 - t0).as_secs_f64() * 1e3);
        }
    }
    let mut whole = vec![];
    for _ in 0..steps.max(1) {
        let xi = xd.clone();
        gpu.synchronize()?;
        let t0 = Instant::now();
        let (y, _) = m.forward(&gpu, xi, d)?;
        let mut g = gpu.device_uninit(y.len())?;
        let loss = gpu.mse_dev_deferred(&y, &target, y.len(), &mut g)?;
        m.zero_grad(&gpu)?;
        m.backward(&gpu, g, od)?;
        m.adam_step(&gpu, &cfg)?;
        gpu.loss_value(&loss)?;
        whole.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(GpuTrainStepResult {
        model: file.display().to_string(),
        device: gpu.info.name.clone(),
        input_shape: d.to_vec(),
        trainable_params: params,
        forward_ms: median(f),
        backward_ms: median(b),
        update_ms: median(u),
        step_ms: median(s),
        step_one_wait_ms: median(whole),
        peak_memory_mib: gpu.memory().peak.map(super::mib),
        steps: steps.max(1),
        tf32: false,
    })
}

/// One kernel timed alone by `wavecp bench kernels --device cuda`, with its nominal traffic
/// (each operand read once, each result written once) and its place on the roofline.
#[derive(Debug, Clone, Serialize)]
pub struct KernelResult {
    pub kernel: String,
    pub shape: String,
    pub device: String,
    pub ms: f64,
    pub flops: f64,
    pub bytes: f64,
    pub achieved_tflops: f64,
    pub achieved_gbs: f64,
    /// The device's nominal peaks ([`super::Peaks`], `wavecp device` prints them).
    pub peak_fp32_tflops: Option<f64>,
    pub peak_dram_gbs: Option<f64>,
    /// Achieved rate over the roofline at this arithmetic intensity,
    /// `min(peak FLOP/s, intensity × peak bandwidth)` (bandwidth alone for copies).
    pub fraction_of_roofline: Option<f64>,
    pub samples: usize,
}

/// Times `f` with device events: one warm-up, then `samples` samples, each of enough
/// back-to-back repetitions to last about a millisecond (a kernel of a few microseconds would
/// otherwise be timed as launch latency), reported per repetition; the median sample.
fn time_ms(
    gpu: &Gpu,
    samples: usize,
    mut f: impl FnMut() -> Result<(), CudaError>,
) -> Result<f64, CudaError> {
    use cudarc::driver::sys::CUevent_flags;
    gpu.synchronize()?;
    let t0 = Instant::now();
    f()?;
    gpu.synchronize()?;
    let once = t0.elapsed().as_secs_f64() * 1e3;
    let reps = (1.0 / once.max(1e-3)).ceil().clamp(1.0, 200.0) as usize;
    let event = || {
        gpu.stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver_err)
    };
    let mut v = vec![];
    for _ in 0..samples.max(1) {
        let start = event()?;
        for _ in 0..reps {
            f()?;
        }
        let end = event()?;
        v.push(start.elapsed_ms(&end).map_err(driver_err)? as f64 / reps as f64);
    }
    Ok(median(v))
}

fn kernel_result(
    gpu: &Gpu,
    (kernel, shape): (&str, String),
    ms: f64,
    flops: f64,
    bytes: f64,
    samples: usize,
) -> KernelResult {
    let s = ms * 1e-3;
    let (tf, gbs) = (flops / s / 1e12, bytes / s / 1e9);
    let p = gpu.info.peaks;
    let fraction = match (p.fp32_tflops, p.dram_gbs) {
        (_, Some(bw)) if flops == 0.0 => Some(gbs / bw),
        (Some(pf), Some(bw)) => {
            let roof = (pf * 1e12).min(flops / bytes * bw * 1e9);
            Some(flops / s / roof)
        }
        _ => None,
    };
    KernelResult {
        kernel: kernel.into(),
        shape,
        device: gpu.info.name.clone(),
        ms,
        flops,
        bytes,
        achieved_tflops: tf,
        achieved_gbs: gbs,
        peak_fp32_tflops: p.fp32_tflops,
        peak_dram_gbs: p.dram_gbs,
        fraction_of_roofline: fraction,
        samples: samples.max(1),
    }
}

/// Each kernel family alone at the paper model's sizes (32 channels, 8 × 64 × 64, batch 4;
/// `scale` divides the spatial extents, for a quick run on the emulator): the tiled GEMM at a
/// forward, a weight-gradient (split-K) and a square shape and the 64 × 64 baseline at the
/// same, the implicit-GEMM convolution, the CP chain as three per-axis passes, GELU, and the
/// batch gather of the resident training data; then every kernel a training step launches
/// ([`training_kernels`]), the fused CP chain among them.
pub fn run_kernels(
    samples: usize,
    scale: usize,
    ordinal: usize,
) -> Result<Vec<KernelResult>, CudaError> {
    use super::ops::ConvOperand;
    use super::GemmDesc;
    use crate::nn::conv::{AxisConv, DwShape};
    use crate::nn::ops::ActKind;
    let mut gpu = Gpu::new(ordinal)?;
    let sc = scale.max(1);
    let (b, c, t, y, x) = (4usize, 32usize, 8usize, 64 / sc, 64 / sc);
    let nvox = t * y * x;
    let mut out = vec![];
    // GEMMs: C[m, n] = A[m, k]·B[k, n], row-major, one batch entry.
    let kk = c * 27;
    for (what, m, n, k) in [
        ("forward-like", c, b * nvox, kk),
        ("weight-gradient-like (split K)", c, kk, b * nvox),
        ("square", 256, 4096 / sc, 1024),
    ] {
        let a = gpu.to_device(&values(m * k, 1))?;
        let bm = gpu.to_device(&values(k * n, 2))?;
        let mut cm = gpu.device_zeros(m * n)?;
        let d = GemmDesc {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            batch: 1,
            a: [k as i64, 1, 0],
            b: [n as i64, 1, 0],
            c: [n as i64, 1, 0],
            alpha: 1.0,
            beta: 0.0,
        };
        let flops = 2.0 * (m * n * k) as f64;
        let bytes = 4.0 * (m * k + k * n + m * n) as f64;
        for basic in [false, true] {
            gpu.set_basic_gemm(basic);
            let plan = gpu.gemm_plan(&d);
            let name = if basic {
                "sgemm_strided_f32 (64x64 baseline)".to_string()
            } else {
                format!("sgemm_t{}_f32 (splits {})", plan.bm, plan.splits)
            };
            let ms = time_ms(&gpu, samples, || gpu.gemm_dev(&d, &a, &bm, &mut cm))?;
            out.push(kernel_result(
                &gpu,
                (&name, format!("{what}: m {m}, n {n}, k {k}")),
                ms,
                flops,
                bytes,
                samples,
            ));
        }
        gpu.set_basic_gemm(false);
    }
    // The implicit-GEMM dense convolution forward (3 × 3 × 3, padding 1).
    let g = k3_same();
    let xin = gpu.to_device(&values(b * c * nvox, 3))?;
    let w = gpu.to_device(&values(c * kk, 4))?;
    let mut yc = gpu.device_zeros(b * c * nvox)?;
    let d = GemmDesc {
        m: c as u32,
        n: nvox as u32,
        k: kk as u32,
        batch: b as u32,
        a: [kk as i64, 1, 0],
        b: [nvox as i64, 1, (kk * nvox) as i64],
        c: [nvox as i64, 1, (c * nvox) as i64],
        alpha: 1.0,
        beta: 0.0,
    };
    let ms = time_ms(&gpu, samples, || {
        gpu.gemm_conv_dev(
            &d,
            &w.as_view(),
            &xin.as_view(),
            ConvOperand::Col,
            (c, [t, y, x], &g, [t, y, x]),
            &mut yc,
            None,
            None,
        )
    })?;
    out.push(kernel_result(
        &gpu,
        (
            "sgemm_t32_f32 implicit convolution",
            format!("dense 3x3x3 {c}->{c}, {t}x{y}x{x}, batch {b}"),
        ),
        ms,
        2.0 * (c * kk * nvox * b) as f64,
        4.0 * (2 * b * c * nvox + c * kk) as f64,
        samples,
    ));
    // The CP chain as three per-axis passes (the unfused path); the fused chain at this
    // shape is the first level's row of `training_kernels`.
    let ws: Vec<_> = (0..3)
        .map(|a| gpu.to_device(&values(c * 3, 5 + a)))
        .collect::<Result<_, _>>()?;
    let mut z = gpu.device_zeros(b * c * nvox)?;
    let plane = (b * c * nvox) as f64;
    let chain_flops = 2.0 * 9.0 * plane;
    let shape = format!("CP rank {c}, 3+3+3 taps, {t}x{y}x{x}, batch {b}");
    let mut z1 = gpu.device_zeros(b * c * nvox)?;
    let mut z2 = gpu.device_zeros(b * c * nvox)?;
    let ms = time_ms(&gpu, samples, || {
        let sh = DwShape {
            c,
            ind: [t, y, x],
            outd: [t, y, x],
        };
        let ax = |axis| AxisConv {
            axis,
            k: 3,
            stride: 1,
            pad: 1,
            dil: 1,
        };
        gpu.dw_forward_dev(&xin, b, sh, &ax(0), &ws[0], &mut z1)?;
        gpu.dw_forward_dev(&z1, b, sh, &ax(1), &ws[1], &mut z2)?;
        gpu.dw_forward_dev(&z2, b, sh, &ax(2), &ws[2], &mut z)
    })?;
    out.push(kernel_result(
        &gpu,
        ("dw_axis_forward_f32 x3 (unfused chain)", shape),
        ms,
        chain_flops,
        3.0 * 8.0 * plane,
        samples,
    ));
    // GELU over the activation tensor of a layer.
    let n = b * c * nvox;
    let ms = time_ms(&gpu, samples, || {
        gpu.act_forward_dev(ActKind::Gelu, &xin, &mut yc, n)
    })?;
    out.push(kernel_result(
        &gpu,
        ("act_forward_f32 (GELU)", format!("{n} values")),
        ms,
        0.0,
        8.0 * n as f64,
        samples,
    ));
    // Resident training data: a batch of 4 windows of 16 frames cut on the device.
    let frames = 40 * 16;
    let fr = gpu.frames_to_device(&values(frames * y * x, 8), y * x)?;
    let first: Vec<u32> = (0..40u32).map(|s| s * 16).collect();
    let wins = gpu.windows_to_device(&first, 16, &fr)?;
    let mut bt = gpu.device_zeros(b * 16 * y * x)?;
    let ms = time_ms(&gpu, samples, || {
        gpu.gather_windows_dev(&fr, &wins, 8, b, 0, 16, &mut bt)
    })?;
    out.push(kernel_result(
        &gpu,
        (
            "gather_windows_f32",
            format!("{b} windows x 16 frames of {y}x{x}"),
        ),
        ms,
        0.0,
        8.0 * (b * 16 * y * x) as f64,
        samples,
    ));
    out.extend(training_kernels(&gpu, samples, scale)?);
    Ok(out)
}

/// Every other kernel a training step of the paper models launches, alone, at the sizes it
/// runs at there: at each U-Net level the dense layer's three implicit GEMMs as training runs
/// them (the forward pass with bias + GELU in the epilogue, the weight gradient with its k
/// split, the input gradient with its adjoint weights) and the fused CP chain with the tile the
/// rules pick; at the first level the activation, bias, skip, pooling, up-sampling, loss and
/// transposed-convolution kernels; the pair kernel rebuild and its factor gradients; and the
/// optimiser's zeroing, norm and update over a paper-CP-sized parameter set. Kernels that only
/// move data are set against the bandwidth alone (FLOPs 0).
fn training_kernels(
    gpu: &Gpu,
    samples: usize,
    scale: usize,
) -> Result<Vec<KernelResult>, CudaError> {
    use super::ops::ConvOperand;
    use super::{AdamStep, Chain};
    use crate::nn::ops::{ActKind, PoolKind};
    let b = 4usize;
    let g = k3_same();
    let mut out = vec![];
    for (c, ext) in paper_levels(scale) {
        let nvox: usize = ext.iter().product();
        let (kk, n) = (c * 27, b * c * nvox);
        let level = format!("{c} ch, {}x{}x{}, batch {b}", ext[0], ext[1], ext[2]);
        let x = gpu.to_device(&values(n, 31))?;
        let w = gpu.to_device(&values(c * kk, 32))?;
        let dy = gpu.to_device(&values(n, 33))?;
        let bias = gpu.to_device(&values(c, 34))?;
        let mut y = gpu.device_zeros(n)?;
        let mut pre = gpu.device_zeros(n)?;
        let mut dw = gpu.device_zeros(c * kk)?;
        let mut wa = gpu.device_zeros(c * kk)?;
        let (conv, wgrad) = dense_level_gemms(c, nvox, b);
        let flops = 2.0 * (c * kk * nvox * b) as f64;
        let io = 4.0 * (2 * n + c * kk) as f64;
        let plan = gpu.gemm_plan(&conv);
        let ms = time_ms(gpu, samples, || {
            gpu.gemm_conv_dev(
                &conv,
                &w.as_view(),
                &x.as_view(),
                ConvOperand::Col,
                (c, ext, &g, ext),
                &mut y,
                Some(&bias),
                Some((ActKind::Gelu, &mut pre)),
            )
        })?;
        out.push(kernel_result(
            gpu,
            (
                &format!(
                    "sgemm_t{}_bias_act_f32 implicit, GELU (splits {})",
                    plan.bm, plan.splits
                ),
                format!("dense forward: {level}"),
            ),
            ms,
            flops,
            io + 4.0 * n as f64,
            samples,
        ));
        let plan = gpu.gemm_plan(&wgrad);
        let ms = time_ms(gpu, samples, || {
            gpu.gemm_conv_dev(
                &wgrad,
                &dy.as_view(),
                &x.as_view(),
                ConvOperand::ColT,
                (c, ext, &g, ext),
                &mut dw,
                None,
                None,
            )
        })?;
        out.push(kernel_result(
            gpu,
            (
                &format!(
                    "sgemm_t{}_f32 implicit col^T (splits {})",
                    plan.bm, plan.splits
                ),
                format!("dense weight gradient: {level}"),
            ),
            ms,
            flops,
            io,
            samples,
        ));
        let plan = gpu.gemm_plan(&conv);
        let ms = time_ms(gpu, samples, || {
            gpu.conv_weight_adjoint_dev(&w, (c, c, 27), &mut wa)?;
            gpu.gemm_conv_dev(
                &conv,
                &wa.as_view(),
                &dy.as_view(),
                ConvOperand::Col,
                (c, ext, &g, ext),
                &mut y,
                None,
                None,
            )
        })?;
        out.push(kernel_result(
            gpu,
            (
                &format!(
                    "conv_weight_adjoint_f32 + sgemm_t{}_f32 implicit (splits {})",
                    plan.bm, plan.splits
                ),
                format!("dense input gradient: {level}"),
            ),
            ms,
            flops,
            io + 8.0 * (c * kk) as f64,
            samples,
        ));
        let ch = Chain {
            batch: b,
            c,
            ind: ext,
            k: [3; 3],
            pad: [1; 3],
        };
        let tile = ch.tile()?;
        let ws: Vec<_> = (0..3)
            .map(|a| gpu.to_device(&values(c * 3, 35 + a)))
            .collect::<Result<_, _>>()?;
        let wr = [&ws[0], &ws[1], &ws[2]];
        let mut gs: Vec<_> = (0..3)
            .map(|_| gpu.device_zeros(c * 3))
            .collect::<Result<_, _>>()?;
        let ms = time_ms(gpu, samples, || {
            gpu.cp_chain_forward_dev(&ch, false, &x, wr, &mut y)
        })?;
        let shape = format!("CP chain 3+3+3 taps: {level}");
        out.push(kernel_result(
            gpu,
            (tile.forward.entry(), shape.clone()),
            ms,
            2.0 * 9.0 * n as f64,
            8.0 * n as f64,
            samples,
        ));
        let ms = time_ms(gpu, samples, || {
            let [g0, g1, g2] = &mut gs[..] else {
                unreachable!("three gradients")
            };
            gpu.cp_chain_dweight_dev(&ch, &x, &dy, wr, [g0, g1, g2])
        })?;
        out.push(kernel_result(
            gpu,
            (
                &format!("{} + cp_chain_dweight_reduce_f32", tile.dweight.entry()),
                shape,
            ),
            ms,
            2.0 * 2.0 * 9.0 * n as f64,
            8.0 * n as f64,
            samples,
        ));
    }

    // Element-wise, skip, pooling and loss kernels on the first level's activations.
    let (c, ext) = paper_levels(scale)[0];
    let nvox: usize = ext.iter().product();
    let n = b * c * nvox;
    let level = format!("{c} ch, {}x{}x{}, batch {b}", ext[0], ext[1], ext[2]);
    let x = gpu.to_device(&values(n, 41))?;
    let dy = gpu.to_device(&values(n, 42))?;
    let bias = gpu.to_device(&values(c, 43))?;
    let mut y = gpu.device_zeros(n)?;
    let mut y2 = gpu.device_zeros(2 * n)?;
    let mut db = gpu.device_zeros(c)?;
    let bw = |kernel: &str, what: &str, bytes: f64, ms: f64| {
        kernel_result(
            gpu,
            (kernel, format!("{what}: {level}")),
            ms,
            0.0,
            bytes,
            samples,
        )
    };
    let nb = n as f64;
    let mut rows = vec![];
    let ms = time_ms(gpu, samples, || {
        gpu.act_backward_dev(ActKind::Gelu, &x, &dy, &mut y, n)
    })?;
    rows.push(bw(
        "act_backward_f32 (GELU)",
        "activation gradient",
        12.0 * nb,
        ms,
    ));
    let ms = time_ms(gpu, samples, || gpu.bias_add_dev(&mut y, &bias, b, c, nvox))?;
    rows.push(bw("bias_add_f32", "bias", 8.0 * nb, ms));
    let ms = time_ms(gpu, samples, || gpu.bias_grad_dev(&dy, b, c, nvox, &mut db))?;
    rows.push(bw("bias_grad_f32", "bias gradient", 4.0 * nb, ms));
    let ms = time_ms(gpu, samples, || gpu.axpy_dev(&mut y, &x, 1.0, n))?;
    rows.push(bw("axpy_f32", "skip gradient sum", 12.0 * nb, ms));
    let ms = time_ms(gpu, samples, || {
        gpu.concat_dev(&x, &dy, b, c * nvox, c * nvox, &mut y2)
    })?;
    rows.push(bw("concat_f32", "concat of two", 16.0 * nb, ms));
    let mut ya = gpu.device_zeros(n)?;
    let ms = time_ms(gpu, samples, || {
        gpu.split_dev(&y2, b, c * nvox, c * nvox, &mut ya, &mut y)
    })?;
    rows.push(bw("split_f32", "split into two", 16.0 * nb, ms));
    let k = [1, 2, 2];
    let mut pooled = gpu.device_zeros(n / 4)?;
    let mut argmax = gpu.uninit::<u32>(n / 4)?;
    let ms = time_ms(gpu, samples, || {
        gpu.pool_forward_dev(PoolKind::Max, &x, b * c, ext, k, &mut pooled, &mut argmax)
    })?;
    rows.push(bw(
        "pool_forward_f32 (max 1x2x2)",
        "pooling",
        4.0 * nb + 2.0 * nb,
        ms,
    ));
    let ms = time_ms(gpu, samples, || {
        gpu.pool_backward_dev(PoolKind::Max, &pooled, &argmax, b * c, ext, k, &mut y)
    })?;
    rows.push(bw(
        "pool_backward_f32 (max 1x2x2)",
        "pooling gradient",
        4.0 * nb + 2.0 * nb,
        ms,
    ));
    let coarse = [ext[0], ext[1] / 2, ext[2] / 2];
    let ms = time_ms(gpu, samples, || {
        gpu.upsample_dev(true, &pooled, b * c, coarse, k, &mut y)
    })?;
    rows.push(bw(
        "upsample_forward_f32 (1x2x2)",
        "up-sampling",
        5.0 * nb,
        ms,
    ));
    let ms = time_ms(gpu, samples, || {
        gpu.upsample_dev(false, &dy, b * c, coarse, k, &mut pooled)
    })?;
    rows.push(bw(
        "upsample_backward_f32 (1x2x2)",
        "up-sampling gradient",
        5.0 * nb,
        ms,
    ));
    let ms = time_ms(gpu, samples, || {
        gpu.mse_dev_deferred(&x, &dy, n, &mut y).map(|_| ())
    })?;
    rows.push(bw("mse_f32", "MSE loss and gradient", 12.0 * nb, ms));
    let ms = time_ms(gpu, samples, || {
        gpu.rel_l2_dev_deferred(&x, &dy, b, n / b, &mut y)
            .map(|_| ())
    })?;
    rows.push(bw(
        "rel_l2_sums_f32 + rel_l2_den_f64 + rel_l2_grad_f32",
        "relative-L2 loss and gradient",
        20.0 * nb,
        ms,
    ));
    // The transposed convolution's scatter (2 × 2 in y and x, stride 2): col2im from the
    // GEMM's [c·4, coarse] columns to the fine grid.
    let gt = Geom {
        k: [1, 2, 2],
        stride: [1, 2, 2],
        pad: [0; 3],
        dil: [1; 3],
    };
    let col = gpu.to_device(&values(n, 44))?;
    let ms = time_ms(gpu, samples, || {
        gpu.col2im_dev(&col, b, c, ext, &gt, coarse, &mut y)
    })?;
    rows.push(bw(
        "col2im_f32 (transposed conv 1x2x2, stride 2)",
        "transposed convolution",
        8.0 * nb,
        ms,
    ));
    out.extend(rows);

    // The pair layer's kernel rebuilt from rank-1 factors and the factor gradients, 32 → 32.
    let (oi, rank, kd) = (c * c, 1usize, [3usize; 3]);
    let fs: Vec<_> = (0..3)
        .map(|a| gpu.to_device(&values(oi * rank * 3, 45 + a)))
        .collect::<Result<_, _>>()?;
    let mut wk = gpu.device_zeros(oi * 27)?;
    let ms = time_ms(gpu, samples, || {
        gpu.pair_rebuild_dev(&fs, &[0, 1, 2], (oi, rank, kd), &mut wk)
    })?;
    let pair_shape = format!("pair {c}->{c}, rank {rank}, 3x3x3");
    out.push(kernel_result(
        gpu,
        ("pair_rebuild_f32", pair_shape.clone()),
        ms,
        2.0 * (oi * rank * 27) as f64,
        4.0 * (oi * 27 + 9 * oi * rank) as f64,
        samples,
    ));
    let mut acc: Vec<_> = (0..3)
        .map(|_| gpu.device_zeros(oi * rank * 3))
        .collect::<Result<_, _>>()?;
    let ms = time_ms(gpu, samples, || {
        gpu.pair_factor_grads_dev(&fs, &[0, 1, 2], (oi, rank, kd), &wk, &mut acc)
    })?;
    out.push(kernel_result(
        gpu,
        ("pair_factor_grad_f32 (three factors)", pair_shape),
        ms,
        3.0 * 2.0 * (oi * rank * 27) as f64,
        4.0 * (oi * 27 + 9 * oi * rank) as f64,
        samples,
    ));

    // The optimiser over a parameter set of the paper CP model's size (≈ 1 M values in 60
    // arrays): zeroing, the norm and clipping factor, the AdamW update.
    let sizes: Vec<usize> = (0..60)
        .map(|i| if i % 2 == 0 { 32_768 } else { 32 })
        .collect();
    let total: usize = sizes.iter().sum();
    let mk = |seed: u64| -> Result<Vec<_>, CudaError> {
        sizes
            .iter()
            .map(|&m| gpu.to_device(&values(m, seed)))
            .collect()
    };
    let (mut wv, mut gv, mut mv, mut vv) = (mk(51)?, mk(52)?, mk(53)?, mk(54)?);
    let set = format!("{} arrays, {total} values", sizes.len());
    let tb = total as f64;
    let ms = time_ms(gpu, samples, || {
        let mut bufs: Vec<_> = gv.iter_mut().collect();
        gpu.zero_all_dev(&mut bufs)
    })?;
    out.push(kernel_result(
        gpu,
        ("zero_multi_f32", set.clone()),
        ms,
        0.0,
        4.0 * tb,
        samples,
    ));
    let ms = time_ms(gpu, samples, || {
        let refs: Vec<_> = gv.iter().collect();
        gpu.clip_dev(&refs, 1.0).map(|_| ())
    })?;
    out.push(kernel_result(
        gpu,
        ("sumsq_multi_f32 + clip_scale_f64", set.clone()),
        ms,
        0.0,
        4.0 * tb,
        samples,
    ));
    let clip = {
        let refs: Vec<_> = gv.iter().collect();
        gpu.clip_dev(&refs, 1.0)?
    };
    let step = AdamStep {
        scale: 1.0,
        lr: 1e-4,
        b1: 0.9,
        b2: 0.999,
        c1: 0.1,
        c2: 0.001,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let ms = time_ms(gpu, samples, || {
        gpu.adamw_all_dev(
            &mut super::adam_rows(&mut wv, &gv, &mut mv, &mut vv),
            &step,
            Some(&clip),
        )
    })?;
    out.push(kernel_result(
        gpu,
        ("adamw_multi_f32", set),
        ms,
        0.0,
        28.0 * tb,
        samples,
    ));
    Ok(out)
}

/// A 3 × 3 × 3 convolution that keeps the extents (stride 1, padding 1): the paper models'.
fn k3_same() -> Geom {
    Geom {
        k: [3; 3],
        stride: [1; 3],
        pad: [1; 3],
        dil: [1; 3],
    }
}

/// The implicit GEMMs of a 3 × 3 × 3 dense layer `c → c` (padding 1) over `nvox` voxels and
/// `b` samples, as `cuda::conv` runs them: the forward pass y = W·col(x) (also the input
/// gradient's shape, dx = W'·col(dy) with the adjoint weights, padding k − 1 − p = 1) and the
/// weight gradient dW += Σ_s dy_s·col(x_s)ᵀ.
fn dense_level_gemms(c: usize, nvox: usize, b: usize) -> (super::GemmDesc, super::GemmDesc) {
    let kk = c * 27;
    let (n64, kk64, c64) = (nvox as i64, kk as i64, c as i64);
    let desc = |m: usize, n: usize, k: usize, a, bb, cc, beta| super::GemmDesc {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        batch: b as u32,
        a,
        b: bb,
        c: cc,
        alpha: 1.0,
        beta,
    };
    (
        desc(
            c,
            nvox,
            kk,
            [kk64, 1, 0],
            [n64, 1, kk64 * n64],
            [n64, 1, c64 * n64],
            0.0,
        ),
        desc(
            c,
            kk,
            nvox,
            [n64, 1, c64 * n64],
            [1, n64, kk64 * n64],
            [kk64, 1, 0],
            1.0,
        ),
    )
}

/// The U-Net levels of the paper models (channels, t × y × x; batch 4), `scale` dividing y
/// and x, for [`run_sweep`].
fn paper_levels(scale: usize) -> Vec<(usize, [usize; 3])> {
    [(32, 64), (64, 32), (128, 16), (336, 8)]
        .into_iter()
        .map(|(c, s)| (c, [8, (s / scale).max(2), (s / scale).max(2)]))
        .collect()
}

/// `wavecp bench kernels --sweep`: every tile height and k split of the tiled GEMM on the three
/// implicit-GEMM convolutions of a dense 3 × 3 × 3 layer (forward, weight gradient summed over
/// the batch, input gradient) and every tile variant of the fused CP chain (forward, filter
/// gradient), at each U-Net level of the paper models, each result named with its variant and
/// marked `(chosen)` where it is what [`Gpu::gemm_plan`] or [`Chain::tile`] would pick. One GPU
/// run of this is what the choice rules need to be set from measurements.
pub fn run_sweep(
    samples: usize,
    scale: usize,
    ordinal: usize,
) -> Result<Vec<KernelResult>, CudaError> {
    use super::ops::ConvOperand;
    use super::Chain;
    let mut gpu = Gpu::new(ordinal)?;
    let quick = scale > 1;
    let heights: &[usize] = if quick { &[32, 128] } else { &[32, 64, 128] };
    let splits: &[usize] = if quick { &[1, 4] } else { &[1, 2, 4, 8, 16] };
    let b = 4usize;
    let g = k3_same();
    let mut out = vec![];
    for (c, ext) in paper_levels(scale) {
        let nvox: usize = ext.iter().product();
        let kk = c * 27;
        let level = format!("{c} ch, {}x{}x{}, batch {b}", ext[0], ext[1], ext[2]);
        let x = gpu.to_device(&values(b * c * nvox, 21))?;
        let w = gpu.to_device(&values(c * kk, 22))?;
        let dy = gpu.to_device(&values(b * c * nvox, 23))?;
        let mut y = gpu.device_zeros(b * c * nvox)?;
        let mut dw = gpu.device_zeros(c * kk)?;
        // With ci = co and padding 1 the input gradient's GEMM has the forward one's shape.
        let (conv, wgrad) = dense_level_gemms(c, nvox, b);
        let passes = [
            ("forward", conv, ConvOperand::Col),
            ("weight gradient", wgrad, ConvOperand::ColT),
            ("input gradient", conv, ConvOperand::Col),
        ];
        for (what, d, operand) in passes {
            gpu.force_gemm_plan(None)?;
            let chosen = gpu.gemm_plan(&d);
            let flops = 2.0 * (d.m as usize * d.n as usize * d.k as usize * b) as f64;
            let bytes = 4.0 * (2 * b * c * nvox + c * kk) as f64;
            let mut variants: Vec<(usize, usize)> = heights
                .iter()
                .flat_map(|&bm| splits.iter().map(move |&s| (bm, s)))
                .collect();
            if !variants.contains(&(chosen.bm, chosen.splits)) {
                variants.push((chosen.bm, chosen.splits));
            }
            for (bm, s) in variants {
                gpu.force_gemm_plan(Some((bm, s)))?;
                let plan = gpu.gemm_plan(&d);
                if plan.splits != s {
                    continue; // k too short for this many slices
                }
                // A is the weights (dy for the weight gradient); the gathered operand is x
                // (dy for the input gradient).
                let (src, input, dst) = match what {
                    "forward" => (&w, &x, &mut y),
                    "weight gradient" => (&dy, &x, &mut dw),
                    _ => (&w, &dy, &mut y),
                };
                let ms = time_ms(&gpu, samples, || {
                    gpu.gemm_conv_dev(
                        &d,
                        &src.as_view(),
                        &input.as_view(),
                        operand,
                        (c, ext, &g, ext),
                        dst,
                        None,
                        None,
                    )
                })?;
                let mark = if (plan.bm, plan.splits) == (chosen.bm, chosen.splits) {
                    " (chosen)"
                } else {
                    ""
                };
                out.push(kernel_result(
                    &gpu,
                    (
                        &format!("sgemm_t{bm}_f32 splits {s}{mark}"),
                        format!("sweep dense {what}: {level}"),
                    ),
                    ms,
                    flops,
                    bytes,
                    samples,
                ));
            }
        }
        gpu.force_gemm_plan(None)?;
        // The fused CP chain at this level, every tile variant.
        let ch = Chain {
            batch: b,
            c,
            ind: ext,
            k: [3; 3],
            pad: [1; 3],
        };
        let chosen = ch.tile()?.forward;
        let ws: Vec<_> = (0..3)
            .map(|a| gpu.to_device(&values(c * 3, 24 + a)))
            .collect::<Result<_, _>>()?;
        let wr = [&ws[0], &ws[1], &ws[2]];
        let mut gs: Vec<_> = (0..3)
            .map(|_| gpu.device_zeros(c * 3))
            .collect::<Result<_, _>>()?;
        let plane = (b * c * nvox) as f64;
        for (i, tile) in Gpu::chain_tiles().iter().enumerate() {
            gpu.force_chain_tile(Some(i))?;
            let mark = if tile.forward == chosen {
                " (chosen)"
            } else {
                ""
            };
            let t = tile.tile;
            let ms = time_ms(&gpu, samples, || {
                gpu.cp_chain_forward_dev(&ch, false, &x, wr, &mut y)
            })?;
            out.push(kernel_result(
                &gpu,
                (
                    &format!("cp_chain_forward tile {}x{}x{}{mark}", t[0], t[1], t[2]),
                    format!("sweep CP chain forward: {level}"),
                ),
                ms,
                2.0 * 9.0 * plane,
                8.0 * plane,
                samples,
            ));
            let ms = time_ms(&gpu, samples, || {
                let [g0, g1, g2] = &mut gs[..] else {
                    unreachable!("three gradients")
                };
                gpu.cp_chain_dweight_dev(&ch, &x, &dy, wr, [g0, g1, g2])
            })?;
            out.push(kernel_result(
                &gpu,
                (
                    &format!("cp_chain_dweight tile {}x{}x{}{mark}", t[0], t[1], t[2]),
                    format!("sweep CP chain filter gradient: {level}"),
                ),
                ms,
                2.0 * 2.0 * 9.0 * plane,
                8.0 * plane,
                samples,
            ));
        }
        gpu.force_chain_tile(None)?;
    }
    Ok(out)
}
