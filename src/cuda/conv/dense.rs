//! The dense path (and the pair path once its kernel is rebuilt): GEMMs over the im2col matrix
//! of the input, read in place by the GEMM's panel loads (implicit GEMM) or, under
//! `WAVECP_GEMM=basic`, stored.

use super::{batched, gemm, sample_cols_t, sample_rows, shared, shared_t, Pass};
use crate::cuda::ops::ConvOperand;
use crate::cuda::{ConvDims, CudaError, DevBuf, GemmOut, Gpu};
use crate::nn::conv::Geom;

/// `y = W · col(x)` with the bias and activation of `out` in the GEMM's epilogue; a stored
/// im2col matrix is kept in `saved` for the weight gradient.
pub(super) fn dense_forward(
    gpu: &Gpu,
    p: &Pass<'_>,
    w: &DevBuf,
    x: &DevBuf,
    out: GemmOut<'_>,
    saved: &mut Vec<(DevBuf, [usize; 5])>,
) -> Result<(), CudaError> {
    let (b, nout, kk) = (p.batch(), p.nout(), p.ci * p.g.kvol());
    let desc = gemm(
        [p.co, nout, kk, b],
        shared(kk),
        batched(kk, nout),
        batched(p.co, nout),
        0.0,
    );
    let dims = p.conv_dims();
    if gpu.implicit_conv() {
        // Implicit GEMM: the panels gather from x; no im2col matrix is stored.
        return gpu.gemm_conv_dev(
            &desc,
            &w.as_view(),
            &x.as_view(),
            ConvOperand::Col,
            &dims,
            out,
        );
    }
    let mut col = gpu.device_uninit(b * kk * nout)?;
    gpu.im2col_dev(x, b, &dims, &mut col)?;
    gpu.gemm_bias_act_dev(&desc, w, &col, out)?;
    saved.push((col, [b, kk, 1, 1, nout]));
    Ok(())
}

/// The dense path's backward pass: `dW = Σ_s dy_s · col_sᵀ + beta_w · dW` (sample order; `col`
/// when the forward pass stored it, else an implicit GEMM over the input `x`), then
/// `dx = col2im(Wᵀ · dy)`, or for stride 1 and dilation 1 the convolution of `dy` with the
/// adjoint weights.
pub(super) fn dense_backward(
    gpu: &Gpu,
    p: &Pass<'_>,
    (x, col): (&DevBuf, Option<&DevBuf>),
    dy: &DevBuf,
    w: &DevBuf,
    (dw, beta_w): (&mut DevBuf, f32),
    dx: &mut DevBuf,
) -> Result<(), CudaError> {
    let (ci, co, g) = (p.ci, p.co, p.g);
    let (b, nin, nout, kk) = (p.batch(), p.nin(), p.nout(), ci * g.kvol());
    // dW = Σ_s dy_s · col_sᵀ + beta_w · dW: one GEMM summed over the samples (split K, ordered
    // reduction); beta_w = 0 overwrites dW without reading it.
    let desc = gemm(
        [co, kk, nout, b],
        sample_rows(nout, co * nout),
        sample_cols_t(nout, kk * nout),
        shared(kk),
        beta_w,
    );
    match col {
        Some(col) => gpu.gemm_sum_batch_dev(&desc, &dy.as_view(), &col.as_view(), dw)?,
        None => {
            let (dyv, xv) = (dy.as_view(), x.as_view());
            let dims = p.conv_dims();
            gpu.gemm_conv_dev(
                &desc,
                &dyv,
                &xv,
                ConvOperand::ColT,
                &dims,
                GemmOut::plain(dw),
            )?;
        }
    }
    let implicit_dx =
        col.is_none() && (0..3).all(|a| g.stride[a] == 1 && g.dil[a] == 1 && g.pad[a] < g.k[a]);
    if implicit_dx {
        // dx = conv(dy, W', pad k − 1 − p): an implicit GEMM over dy, no Wᵀ·dy matrix.
        let kvol = g.kvol();
        let mut wa = gpu.device_uninit(co * ci * kvol)?;
        gpu.conv_weight_adjoint_dev(w, (co, ci, kvol), &mut wa)?;
        let ga = Geom {
            k: g.k,
            stride: [1; 3],
            pad: [0, 1, 2].map(|a| g.k[a] - 1 - g.pad[a]),
            dil: [1; 3],
        };
        let kka = co * kvol;
        let desc = gemm(
            [ci, nin, kka, b],
            shared(kka),
            batched(kka, nin),
            batched(ci, nin),
            0.0,
        );
        let dims = ConvDims {
            c: co,
            ind: p.outd(),
            g: &ga,
            outd: p.ind(),
        };
        let (wav, dyv) = (wa.as_view(), dy.as_view());
        return gpu.gemm_conv_dev(
            &desc,
            &wav,
            &dyv,
            ConvOperand::Col,
            &dims,
            GemmOut::plain(dx),
        );
    }
    let mut dcol = gpu.device_uninit(b * kk * nout)?;
    let desc = gemm(
        [kk, nout, co, b],
        shared_t(kk),
        batched(co, nout),
        batched(kk, nout),
        0.0,
    );
    gpu.gemm_dev(&desc, w, dy, &mut dcol)?;
    gpu.col2im_dev(&dcol, b, &p.conv_dims(), dx)
}
