//! `wavecp bench conv --device cuda`: one convolution layer on the GPU, timed with stream
//! synchronisation, with the FLOPs it performs and the rate it reached; `wavecp bench train
//! --device cuda`; and (`kernels.rs`, `sweep.rs`) each kernel alone and the tiling sweep.

mod kernels;
mod sweep;

pub use kernels::run_kernels;
pub use sweep::run_sweep;

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

/// The fused CP chain of a U-Net level (3 + 3 + 3 taps, padding 1, batch 4) with its filters
/// and their gradients on the device, for timing.
struct ChainBench {
    ch: super::Chain,
    ws: Vec<super::DevBuf>,
    gs: Vec<super::DevBuf>,
}

impl ChainBench {
    /// `c` channels over `ext`; the filters are seeded values from `seed`.
    fn new(gpu: &Gpu, c: usize, ext: [usize; 3], seed: u64) -> Result<Self, CudaError> {
        let ch = super::Chain {
            batch: 4,
            c,
            ind: ext,
            k: [3; 3],
            pad: [1; 3],
        };
        let ws = (0..3)
            .map(|a| gpu.to_device(&values(c * 3, seed + a)))
            .collect::<Result<_, _>>()?;
        let gs = (0..3)
            .map(|_| gpu.device_zeros(c * 3))
            .collect::<Result<_, _>>()?;
        Ok(ChainBench { ch, ws, gs })
    }

    /// The forward pass over `x` into `y` and the filter gradient from `x` and `dy`, timed:
    /// `(forward ms, filter-gradient ms)`.
    fn time(
        &mut self,
        gpu: &Gpu,
        samples: usize,
        (x, dy): (&super::DevBuf, &super::DevBuf),
        y: &mut super::DevBuf,
    ) -> Result<(f64, f64), CudaError> {
        let ch = &self.ch;
        let wr = [&self.ws[0], &self.ws[1], &self.ws[2]];
        let forward = time_ms(gpu, samples, || {
            gpu.cp_chain_forward_dev(ch, false, x, wr, &mut *y)
        })?;
        let gs = &mut self.gs;
        let dweight = time_ms(gpu, samples, || {
            let [g0, g1, g2] = &mut gs[..] else {
                unreachable!("three gradients")
            };
            gpu.cp_chain_dweight_dev(ch, x, dy, wr, [g0, g1, g2])
        })?;
        Ok((forward, dweight))
    }
}
