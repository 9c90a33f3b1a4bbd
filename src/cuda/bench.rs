//! `wavecp bench conv --device cuda`: one convolution layer on the GPU, timed with stream
//! synchronisation, with the FLOPs it performs and the rate it reached.

use super::{CudaError, Gpu, GpuConv};
use crate::bench::ConvShape;
use crate::nn::conv::Geom;
use crate::nn::layers::{ConvCore, CpConv, DenseConv, PairConv};
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
pub fn run_conv(shape: &ConvShape, samples: usize) -> Result<GpuConvResult, CudaError> {
    let gpu = Gpu::new(0)?;
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
                ci,
                co,
                r,
                g,
                axes.clone(),
                values(r * ci, 3),
                a,
                values(co * r, 4),
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
) -> Result<GpuTrainStepResult, CudaError> {
    use super::model::GpuModel;
    use crate::nn::train::AdamConfig;
    use crate::nn::{Model, ModelSpec};
    let text = std::fs::read_to_string(file)
        .map_err(|e| CudaError::Driver(format!("{}: {e}", file.display())))?;
    let spec = ModelSpec::from_toml(&text).map_err(|e| CudaError::Driver(e.to_string()))?;
    let (dims, cin) = (spec.model.dims, spec.model.in_channels);
    let cpu = Model::new(spec).map_err(|e| CudaError::Driver(e.to_string()))?;
    let params = cpu.num_params();
    let gpu = Gpu::new(0)?;
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
        let mut g = gpu.device_zeros(y.len())?;
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
    Ok(GpuTrainStepResult {
        model: file.display().to_string(),
        device: gpu.info.name.clone(),
        input_shape: d.to_vec(),
        trainable_params: params,
        forward_ms: median(f),
        backward_ms: median(b),
        update_ms: median(u),
        step_ms: median(s),
        steps: steps.max(1),
        tf32: false,
    })
}
