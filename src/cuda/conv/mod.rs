//! The three convolution kinds on the GPU, built from a CPU layer (whose weights they copy) and
//! run on device buffers: forward, and a backward pass that returns `dx` and adds the weight
//! gradients, as [`crate::nn::layers::Layer::backward`] does on the CPU.
//!
//! - `dense`: batched GEMMs over the im2col matrix of the input, read in place by the GEMM's
//!   panel loads (implicit GEMM, kernels/gemm.cu): `y_b = W · col_b`,
//!   `dW += Σ_b dy_b · col_bᵀ` (one GEMM summed over the samples: split K, ordered reduction),
//!   and for stride 1 and
//!   dilation 1 `dx = conv(dy, W', pad k − 1 − p)` with W' the channel-swapped, tap-reversed
//!   weights (one more implicit GEMM); other geometries take `dcol_b = Wᵀ · dy_b`,
//!   `dx = col2im(dcol)`. Under `WAVECP_GEMM=basic` the im2col matrix is stored (and kept for
//!   the weight gradient) and dx goes through col2im: the baseline for comparisons.
//! - `pair`: the dense kernel rebuilt from the factors on the device (kernels/pair.cu,
//!   `Co·Ci·R·kvol` flops), then the dense path; the factor gradients follow from `dW`.
//! - `cp`: `1×1 (Ci → R)` GEMM, the three depthwise passes as one fused kernel
//!   (kernels/cpchain.cu; per-axis passes with their intermediates kept where the geometry
//!   does not allow it), `1×1 (R → Co)` GEMM + bias.
//!
//! Summation orders differ from the CPU's (GEMM blocking, block reductions), so results agree
//! within the f32 rounding of sums of the same terms (tests/cuda/conv.rs states the bounds).
//!
//! Here: one pass's dims ([`Pass`]) and the GEMM descriptors every kind builds; `layer.rs` the
//! layer, `dense.rs` and `cp.rs` its kinds' passes, `transpose.rs` the transposed convolution.

mod cp;
mod dense;
mod layer;
mod transpose;

pub use layer::GpuConv;
pub use transpose::GpuConvT;

use super::{ConvDims, CudaError, DevBuf, GemmDesc, Gpu};
use crate::nn::conv::Geom;

/// One pass of a convolution layer: `ci → co` channels, the geometry, and the dims
/// `[B, C, T, Y, X]` of its input (`d`) and output (`od`).
#[derive(Clone, Copy)]
struct Pass<'a> {
    ci: usize,
    co: usize,
    g: &'a Geom,
    d: [usize; 5],
    od: [usize; 5],
}

impl Pass<'_> {
    fn batch(&self) -> usize {
        self.d[0]
    }

    fn ind(&self) -> [usize; 3] {
        [self.d[2], self.d[3], self.d[4]]
    }

    fn outd(&self) -> [usize; 3] {
        [self.od[2], self.od[3], self.od[4]]
    }

    /// Voxels of one input channel.
    fn nin(&self) -> usize {
        self.ind().iter().product()
    }

    /// Voxels of one output channel.
    fn nout(&self) -> usize {
        self.outd().iter().product()
    }

    /// The forward convolution's im2col view of the input.
    fn conv_dims(&self) -> ConvDims<'_> {
        ConvDims {
            c: self.ci,
            ind: self.ind(),
            g: self.g,
            outd: self.outd(),
        }
    }
}

/// A layer's bias on the device, `(value, gradient)`.
fn bias_from(
    gpu: &Gpu,
    b: Option<&crate::nn::layers::Param>,
) -> Result<Option<(DevBuf, DevBuf)>, CudaError> {
    b.map(|p| Ok((gpu.to_device(&p.value)?, gpu.device_zeros(p.value.len())?)))
        .transpose()
}

fn shape_err(what: &str, expected: usize, found: usize) -> CudaError {
    CudaError::Invalid(format!(
        "{what}: {found} values where {expected} were expected"
    ))
}

/// A row-major matrix of `cols` columns repeated for every batch entry (batch stride 0).
fn shared(cols: usize) -> [i64; 3] {
    [cols as i64, 1, 0]
}

/// The transpose of a row-major matrix of `cols` columns, repeated for every batch entry.
fn shared_t(cols: usize) -> [i64; 3] {
    [1, cols as i64, 0]
}

/// Row-major blocks of `cols` columns, one per sample, `stride` apart.
fn sample_rows(cols: usize, stride: usize) -> [i64; 3] {
    [cols as i64, 1, stride as i64]
}

/// The transposes of row-major blocks of `cols` columns, one per sample, `stride` apart.
fn sample_cols_t(cols: usize, stride: usize) -> [i64; 3] {
    [1, cols as i64, stride as i64]
}

/// Row-major `[rows, cols]` blocks, one per batch entry.
fn batched(rows: usize, cols: usize) -> [i64; 3] {
    [cols as i64, 1, (rows * cols) as i64]
}

/// `[m, n, k, batch]` with strides for A, B, C, alpha 1.
fn gemm(mnkb: [usize; 4], a: [i64; 3], b: [i64; 3], c: [i64; 3], beta: f32) -> GemmDesc {
    let [m, n, k, batch] = mnkb;
    GemmDesc {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        batch: batch as u32,
        a,
        b,
        c,
        alpha: 1.0,
        beta,
    }
}

/// `db += Σ dy[b, c, :]` for a layer with a bias.
fn add_bias_grad(
    gpu: &Gpu,
    bias: &mut Option<(DevBuf, DevBuf)>,
    dy: &DevBuf,
    batch: usize,
    c: usize,
    inner: usize,
) -> Result<(), CudaError> {
    if let Some((_, db)) = bias {
        gpu.bias_grad_dev(dy, batch, c, inner, db)?;
    }
    Ok(())
}
