//! `wavecp bench kernels --device cuda`: each kernel family alone at the paper models' sizes,
//! with the FLOPs and bytes it moves set against the device's roofline.

use super::{
    dense_level_gemms, k3_same, kernel_result, paper_levels, time_ms, values, ChainBench,
    KernelResult,
};
use crate::cuda::ops::ConvOperand;
use crate::cuda::{AdamStep, ConvDims, CudaError, DevBuf, GemmDesc, GemmOut, Gpu, PoolShape};
use crate::nn::conv::{AxisConv, DwShape, Geom};
use crate::nn::ops::{ActKind, PoolKind};

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
    let mut gpu = Gpu::new(ordinal)?;
    let mut out = gemm_kernels(&mut gpu, samples, scale.max(1))?;
    out.extend(layer_kernels(&gpu, samples, scale.max(1))?);
    out.extend(training_kernels(&gpu, samples, scale)?);
    Ok(out)
}

/// The paper model's sizes with the spatial extents divided by `sc`: `(b, c, t, y, x)`.
fn paper_sizes(sc: usize) -> (usize, usize, usize, usize, usize) {
    (4, 32, 8, 64 / sc, 64 / sc)
}

/// The tiled GEMM (with the plan the rules pick) and the 64 × 64 baseline at a forward, a
/// weight-gradient (split-K) and a square shape.
fn gemm_kernels(gpu: &mut Gpu, samples: usize, sc: usize) -> Result<Vec<KernelResult>, CudaError> {
    let (b, c, t, y, x) = paper_sizes(sc);
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
            let ms = time_ms(gpu, samples, || gpu.gemm_dev(&d, &a, &bm, &mut cm))?;
            out.push(kernel_result(
                gpu,
                (&name, format!("{what}: m {m}, n {n}, k {k}")),
                ms,
                flops,
                bytes,
                samples,
            ));
        }
        gpu.set_basic_gemm(false);
    }
    Ok(out)
}

/// The implicit-GEMM convolution, the CP chain as three per-axis passes, GELU, and the batch
/// gather of the resident training data.
fn layer_kernels(gpu: &Gpu, samples: usize, sc: usize) -> Result<Vec<KernelResult>, CudaError> {
    let (b, c, t, y, x) = paper_sizes(sc);
    let nvox = t * y * x;
    let kk = c * 27;
    let mut out = vec![];
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
    let ms = time_ms(gpu, samples, || {
        gpu.gemm_conv_dev(
            &d,
            &w.as_view(),
            &xin.as_view(),
            ConvOperand::Col,
            &ConvDims {
                c,
                ind: [t, y, x],
                g: &g,
                outd: [t, y, x],
            },
            GemmOut::plain(&mut yc),
        )
    })?;
    out.push(kernel_result(
        gpu,
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
    let ms = time_ms(gpu, samples, || {
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
        gpu,
        ("dw_axis_forward_f32 x3 (unfused chain)", shape),
        ms,
        chain_flops,
        3.0 * 8.0 * plane,
        samples,
    ));
    // GELU over the activation tensor of a layer.
    let n = b * c * nvox;
    let ms = time_ms(gpu, samples, || {
        gpu.act_forward_dev(ActKind::Gelu, &xin, &mut yc, n)
    })?;
    out.push(kernel_result(
        gpu,
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
    let ms = time_ms(gpu, samples, || {
        gpu.gather_windows_dev(&fr, &wins, 8..8 + b, 0..16, &mut bt)
    })?;
    out.push(kernel_result(
        gpu,
        (
            "gather_windows_f32",
            format!("{b} windows x 16 frames of {y}x{x}"),
        ),
        ms,
        0.0,
        8.0 * (b * 16 * y * x) as f64,
        samples,
    ));
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
    let mut out = vec![];
    for (c, ext) in paper_levels(scale) {
        out.extend(level_kernels(gpu, samples, c, ext)?);
    }
    let (c, ext) = paper_levels(scale)[0];
    let first = FirstLevel::new(gpu, samples, c, ext)?;
    out.extend(first.activation_kernels()?);
    out.extend(first.resampling_kernels()?);
    out.extend(pair_kernels(gpu, samples, c)?);
    out.extend(optimiser_kernels(gpu, samples)?);
    Ok(out)
}

/// At one U-Net level (`c` channels over `ext`, batch 4): the dense layer's three implicit
/// GEMMs as training runs them and the fused CP chain with the tile the rules pick.
fn level_kernels(
    gpu: &Gpu,
    samples: usize,
    c: usize,
    ext: [usize; 3],
) -> Result<Vec<KernelResult>, CudaError> {
    let b = 4usize;
    let g = k3_same();
    let mut out = vec![];
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
    let dims = ConvDims {
        c,
        ind: ext,
        g: &g,
        outd: ext,
    };
    let flops = 2.0 * (c * kk * nvox * b) as f64;
    let io = 4.0 * (2 * n + c * kk) as f64;
    let plan = gpu.gemm_plan(&conv);
    let ms = time_ms(gpu, samples, || {
        gpu.gemm_conv_dev(
            &conv,
            &w.as_view(),
            &x.as_view(),
            ConvOperand::Col,
            &dims,
            GemmOut {
                c: &mut y,
                bias: Some(&bias),
                act: Some((ActKind::Gelu, &mut pre)),
            },
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
            &dims,
            GemmOut::plain(&mut dw),
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
            &dims,
            GemmOut::plain(&mut y),
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
    out.extend(chain_kernels(gpu, samples, (c, ext), (&x, &dy), &mut y)?);
    Ok(out)
}

/// The fused CP chain (3 + 3 + 3 taps) with the tile the rules pick: forward and filter
/// gradient, over `x` and `dy` of `c` channels over `ext`, batch 4.
fn chain_kernels(
    gpu: &Gpu,
    samples: usize,
    (c, ext): (usize, [usize; 3]),
    (x, dy): (&DevBuf, &DevBuf),
    y: &mut DevBuf,
) -> Result<Vec<KernelResult>, CudaError> {
    let b = 4usize;
    let n = b * c * ext.iter().product::<usize>();
    let level = format!("{c} ch, {}x{}x{}, batch {b}", ext[0], ext[1], ext[2]);
    let mut out = vec![];
    let mut cb = ChainBench::new(gpu, c, ext, 35)?;
    let tile = cb.ch.tile()?;
    let (ms, dweight_ms) = cb.time(gpu, samples, (x, dy), y)?;
    let shape = format!("CP chain 3+3+3 taps: {level}");
    out.push(kernel_result(
        gpu,
        (tile.forward.entry(), shape.clone()),
        ms,
        2.0 * 9.0 * n as f64,
        8.0 * n as f64,
        samples,
    ));
    out.push(kernel_result(
        gpu,
        (
            &format!("{} + cp_chain_dweight_reduce_f32", tile.dweight.entry()),
            shape,
        ),
        dweight_ms,
        2.0 * 2.0 * 9.0 * n as f64,
        8.0 * n as f64,
        samples,
    ));
    Ok(out)
}

/// The first level's activations and what the kernels that only move data are timed on.
struct FirstLevel<'a> {
    gpu: &'a Gpu,
    samples: usize,
    b: usize,
    c: usize,
    ext: [usize; 3],
    x: DevBuf,
    dy: DevBuf,
}

impl<'a> FirstLevel<'a> {
    fn new(gpu: &'a Gpu, samples: usize, c: usize, ext: [usize; 3]) -> Result<Self, CudaError> {
        let n = 4 * c * ext.iter().product::<usize>();
        Ok(FirstLevel {
            gpu,
            samples,
            b: 4,
            c,
            ext,
            x: gpu.to_device(&values(n, 41))?,
            dy: gpu.to_device(&values(n, 42))?,
        })
    }

    /// Values of the activation tensor.
    fn n(&self) -> usize {
        self.b * self.c * self.ext.iter().product::<usize>()
    }

    /// A kernel that only moves data: set against the bandwidth alone.
    fn bw(&self, kernel: &str, what: &str, bytes: f64, ms: f64) -> KernelResult {
        let (b, c, e) = (self.b, self.c, self.ext);
        let level = format!("{c} ch, {}x{}x{}, batch {b}", e[0], e[1], e[2]);
        kernel_result(
            self.gpu,
            (kernel, format!("{what}: {level}")),
            ms,
            0.0,
            bytes,
            self.samples,
        )
    }

    /// Activation, bias, skip, concat/split and loss kernels.
    fn activation_kernels(&self) -> Result<Vec<KernelResult>, CudaError> {
        let (gpu, samples, b, c) = (self.gpu, self.samples, self.b, self.c);
        let (x, dy) = (&self.x, &self.dy);
        let nvox: usize = self.ext.iter().product();
        let n = self.n();
        let bias = gpu.to_device(&values(c, 43))?;
        let mut y = gpu.device_zeros(n)?;
        let mut y2 = gpu.device_zeros(2 * n)?;
        let mut db = gpu.device_zeros(c)?;
        let nb = n as f64;
        let mut rows = vec![];
        let ms = time_ms(gpu, samples, || {
            gpu.act_backward_dev(ActKind::Gelu, x, dy, &mut y, n)
        })?;
        rows.push(self.bw(
            "act_backward_f32 (GELU)",
            "activation gradient",
            12.0 * nb,
            ms,
        ));
        let ms = time_ms(gpu, samples, || gpu.bias_add_dev(&mut y, &bias, b, c, nvox))?;
        rows.push(self.bw("bias_add_f32", "bias", 8.0 * nb, ms));
        let ms = time_ms(gpu, samples, || gpu.bias_grad_dev(dy, b, c, nvox, &mut db))?;
        rows.push(self.bw("bias_grad_f32", "bias gradient", 4.0 * nb, ms));
        let ms = time_ms(gpu, samples, || gpu.axpy_dev(&mut y, x, 1.0, n))?;
        rows.push(self.bw("axpy_f32", "skip gradient sum", 12.0 * nb, ms));
        let ms = time_ms(gpu, samples, || {
            gpu.concat_dev(x, dy, b, c * nvox, c * nvox, &mut y2)
        })?;
        rows.push(self.bw("concat_f32", "concat of two", 16.0 * nb, ms));
        let mut ya = gpu.device_zeros(n)?;
        let ms = time_ms(gpu, samples, || {
            gpu.split_dev(&y2, b, c * nvox, c * nvox, &mut ya, &mut y)
        })?;
        rows.push(self.bw("split_f32", "split into two", 16.0 * nb, ms));
        Ok(rows)
    }

    /// Pooling, up-sampling, the losses and the transposed convolution's scatter.
    fn resampling_kernels(&self) -> Result<Vec<KernelResult>, CudaError> {
        let (gpu, samples, b, c, ext) = (self.gpu, self.samples, self.b, self.c, self.ext);
        let (x, dy) = (&self.x, &self.dy);
        let n = self.n();
        let nb = n as f64;
        let mut y = gpu.device_zeros(n)?;
        let mut rows = vec![];
        let k = [1, 2, 2];
        let mut pooled = gpu.device_zeros(n / 4)?;
        let mut argmax = gpu.uninit::<u32>(n / 4)?;
        let shape = PoolShape {
            kind: PoolKind::Max,
            n: b * c,
            ind: ext,
            k,
        };
        let ms = time_ms(gpu, samples, || {
            gpu.pool_forward_dev(x, &shape, &mut pooled, &mut argmax)
        })?;
        rows.push(self.bw(
            "pool_forward_f32 (max 1x2x2)",
            "pooling",
            4.0 * nb + 2.0 * nb,
            ms,
        ));
        let ms = time_ms(gpu, samples, || {
            gpu.pool_backward_dev(&pooled, &argmax, &shape, &mut y)
        })?;
        rows.push(self.bw(
            "pool_backward_f32 (max 1x2x2)",
            "pooling gradient",
            4.0 * nb + 2.0 * nb,
            ms,
        ));
        let coarse = [ext[0], ext[1] / 2, ext[2] / 2];
        let ms = time_ms(gpu, samples, || {
            gpu.upsample_dev(true, &pooled, b * c, coarse, k, &mut y)
        })?;
        rows.push(self.bw("upsample_forward_f32 (1x2x2)", "up-sampling", 5.0 * nb, ms));
        let ms = time_ms(gpu, samples, || {
            gpu.upsample_dev(false, dy, b * c, coarse, k, &mut pooled)
        })?;
        rows.push(self.bw(
            "upsample_backward_f32 (1x2x2)",
            "up-sampling gradient",
            5.0 * nb,
            ms,
        ));
        let ms = time_ms(gpu, samples, || {
            gpu.mse_dev_deferred(x, dy, n, &mut y).map(|_| ())
        })?;
        rows.push(self.bw("mse_f32", "MSE loss and gradient", 12.0 * nb, ms));
        let ms = time_ms(gpu, samples, || {
            gpu.rel_l2_dev_deferred(x, dy, b, n / b, &mut y).map(|_| ())
        })?;
        rows.push(self.bw(
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
        let dims = ConvDims {
            c,
            ind: ext,
            g: &gt,
            outd: coarse,
        };
        let ms = time_ms(gpu, samples, || gpu.col2im_dev(&col, b, &dims, &mut y))?;
        rows.push(self.bw(
            "col2im_f32 (transposed conv 1x2x2, stride 2)",
            "transposed convolution",
            8.0 * nb,
            ms,
        ));
        Ok(rows)
    }
}

/// The pair layer's kernel rebuilt from rank-1 factors and the factor gradients, `c → c`.
fn pair_kernels(gpu: &Gpu, samples: usize, c: usize) -> Result<Vec<KernelResult>, CudaError> {
    let mut out = vec![];
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
    Ok(out)
}

/// The optimiser over a parameter set of the paper CP model's size.
fn optimiser_kernels(gpu: &Gpu, samples: usize) -> Result<Vec<KernelResult>, CudaError> {
    let mut out = vec![];
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
            &mut crate::cuda::adam_rows(&mut wv, &gv, &mut mv, &mut vv),
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
