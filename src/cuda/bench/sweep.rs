//! `wavecp bench kernels --sweep`: every tiling variant of the dense GEMMs and the fused CP
//! chain at each U-Net level, the measurements the choice rules are set from.

use super::{
    dense_level_gemms, k3_same, kernel_result, paper_levels, time_ms, values, ChainBench,
    KernelResult,
};
use crate::cuda::ops::ConvOperand;
use crate::cuda::{ConvDims, CudaError, DevBuf, GemmOut, Gpu};

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
    let mut gpu = Gpu::new(ordinal)?;
    let quick = scale > 1;
    let heights: &[usize] = if quick { &[32, 128] } else { &[32, 64, 128] };
    let splits: &[usize] = if quick { &[1, 4] } else { &[1, 2, 4, 8, 16] };
    let mut out = vec![];
    for (c, ext) in paper_levels(scale) {
        let n = 4 * c * ext.iter().product::<usize>();
        let x = gpu.to_device(&values(n, 21))?;
        let dy = gpu.to_device(&values(n, 23))?;
        let mut y = gpu.device_zeros(n)?;
        let lv = Level { c, ext, samples };
        out.extend(sweep_dense(
            &mut gpu,
            &lv,
            (heights, splits),
            (&x, &dy),
            &mut y,
        )?);
        out.extend(sweep_chain(&mut gpu, &lv, (&x, &dy), &mut y)?);
    }
    Ok(out)
}

/// One U-Net level of the sweep: `c` channels over `ext`, batch 4.
struct Level {
    c: usize,
    ext: [usize; 3],
    samples: usize,
}

impl Level {
    fn name(&self) -> String {
        let (c, e) = (self.c, self.ext);
        format!("{c} ch, {}x{}x{}, batch 4", e[0], e[1], e[2])
    }
}

/// The dense layer's three implicit GEMMs at every tile height and k split.
fn sweep_dense(
    gpu: &mut Gpu,
    lv: &Level,
    (heights, splits): (&[usize], &[usize]),
    (x, dy): (&DevBuf, &DevBuf),
    y: &mut DevBuf,
) -> Result<Vec<KernelResult>, CudaError> {
    let (b, c, ext, samples) = (4usize, lv.c, lv.ext, lv.samples);
    let g = k3_same();
    let level = lv.name();
    let mut out = vec![];
    let nvox: usize = ext.iter().product();
    let kk = c * 27;
    let w = gpu.to_device(&values(c * kk, 22))?;
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
                "forward" => (&w, x, &mut *y),
                "weight gradient" => (dy, x, &mut dw),
                _ => (&w, dy, &mut *y),
            };
            let ms = time_ms(gpu, samples, || {
                gpu.gemm_conv_dev(
                    &d,
                    &src.as_view(),
                    &input.as_view(),
                    operand,
                    &ConvDims {
                        c,
                        ind: ext,
                        g: &g,
                        outd: ext,
                    },
                    GemmOut::plain(dst),
                )
            })?;
            let mark = if (plan.bm, plan.splits) == (chosen.bm, chosen.splits) {
                " (chosen)"
            } else {
                ""
            };
            out.push(kernel_result(
                gpu,
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
    Ok(out)
}

/// The fused CP chain (forward, filter gradient) in every tile variant.
fn sweep_chain(
    gpu: &mut Gpu,
    lv: &Level,
    (x, dy): (&DevBuf, &DevBuf),
    y: &mut DevBuf,
) -> Result<Vec<KernelResult>, CudaError> {
    let (b, c, ext, samples) = (4usize, lv.c, lv.ext, lv.samples);
    let nvox: usize = ext.iter().product();
    let level = lv.name();
    let mut out = vec![];
    // The fused CP chain at this level, every tile variant.
    let mut cb = ChainBench::new(gpu, c, ext, 24)?;
    let chosen = cb.ch.tile()?.forward;
    let plane = (b * c * nvox) as f64;
    for (i, tile) in Gpu::chain_tiles().iter().enumerate() {
        gpu.force_chain_tile(Some(i))?;
        let mark = if tile.forward == chosen {
            " (chosen)"
        } else {
            ""
        };
        let t = tile.tile;
        let (ms, dweight_ms) = cb.time(gpu, samples, (x, dy), y)?;
        out.push(kernel_result(
            gpu,
            (
                &format!("cp_chain_forward tile {}x{}x{}{mark}", t[0], t[1], t[2]),
                format!("sweep CP chain forward: {level}"),
            ),
            ms,
            2.0 * 9.0 * plane,
            8.0 * plane,
            samples,
        ));
        out.push(kernel_result(
            gpu,
            (
                &format!("cp_chain_dweight tile {}x{}x{}{mark}", t[0], t[1], t[2]),
                format!("sweep CP chain filter gradient: {level}"),
            ),
            dweight_ms,
            2.0 * 2.0 * 9.0 * plane,
            8.0 * plane,
            samples,
        ));
    }
    gpu.force_chain_tile(None)?;
    Ok(out)
}
