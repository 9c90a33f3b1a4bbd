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
                GpuConv::from_pair(&gpu, PairConv::new(core, r, axes.clone(), f, true))?,
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
            (GpuConv::from_cp(&gpu, l)?, n)
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
