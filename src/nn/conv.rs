//! Convolution kernels on the CPU (the reference path): im2col + GEMM for dense and transposed
//! convolutions, and direct loops for depthwise 1-D convolutions along one axis.
//!
//! Everything is 3-D (`[C, T, Y, X]` per sample); a 2-D layer is the 3-D one with `T = 1` and a
//! kernel of length 1 along time, so one code path serves both.

use super::tensor::NnError;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

/// Kernel size, stride, zero padding and dilation along `(t, y, x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geom {
    pub k: [usize; 3],
    pub stride: [usize; 3],
    pub pad: [usize; 3],
    pub dil: [usize; 3],
}

impl Geom {
    /// Output extent of a convolution over `inp`: `(i + 2p − d(k−1) − 1)/s + 1`.
    pub fn out_dims(&self, inp: [usize; 3]) -> Result<[usize; 3], NnError> {
        let mut o = [0; 3];
        for a in 0..3 {
            let span = self.dil[a] * (self.k[a] - 1) + 1;
            if inp[a] + 2 * self.pad[a] < span || self.stride[a] == 0 {
                return Err(NnError::Shape {
                    what: format!(
                        "convolution input along axis {a} (kernel span {span}, padding {})",
                        self.pad[a]
                    ),
                    expected: vec![span],
                    found: vec![inp[a]],
                });
            }
            o[a] = (inp[a] + 2 * self.pad[a] - span) / self.stride[a] + 1;
        }
        Ok(o)
    }

    pub fn kvol(&self) -> usize {
        self.k.iter().product()
    }
}

/// `C = alpha · A · B + beta · C` with `A: [m, k]`, `B: [k, n]` given as (possibly transposed) views.
pub fn gemm(alpha: f32, a: ArrayView2<f32>, b: ArrayView2<f32>, beta: f32, c: &mut [f32]) {
    let (m, n) = (a.nrows(), b.ncols());
    if let Ok(mut cv) = ArrayViewMut2::from_shape((m, n), c) {
        general_mat_mul(alpha, &a, &b, beta, &mut cv);
    }
}

/// A row-major `[r, c]` view of a slice whose length the caller has sized.
pub fn view(s: &[f32], r: usize, c: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((r, c), &s[..r * c])
        .expect("a contiguous slice of r·c elements is a valid [r, c] view")
}

/// Visits every (column row, output position, input position) of the im2col matrix.
#[inline]
fn for_each_tap(
    c: usize,
    ind: [usize; 3],
    g: &Geom,
    outd: [usize; 3],
    mut f: impl FnMut(usize, usize, Option<usize>),
) {
    let n = outd[0] * outd[1] * outd[2];
    let [kt, ky, kx] = g.k;
    for ci in 0..c {
        for a in 0..kt {
            for b in 0..ky {
                for cc in 0..kx {
                    let row = ((ci * kt + a) * ky + b) * kx + cc;
                    let mut col = 0;
                    for ot in 0..outd[0] {
                        let it = (ot * g.stride[0] + a * g.dil[0]) as isize - g.pad[0] as isize;
                        for oy in 0..outd[1] {
                            let iy = (oy * g.stride[1] + b * g.dil[1]) as isize - g.pad[1] as isize;
                            for ox in 0..outd[2] {
                                let ix =
                                    (ox * g.stride[2] + cc * g.dil[2]) as isize - g.pad[2] as isize;
                                let inside = it >= 0
                                    && iy >= 0
                                    && ix >= 0
                                    && (it as usize) < ind[0]
                                    && (iy as usize) < ind[1]
                                    && (ix as usize) < ind[2];
                                let src = inside.then(|| {
                                    ((ci * ind[0] + it as usize) * ind[1] + iy as usize) * ind[2]
                                        + ix as usize
                                });
                                f(row * n + col, col, src);
                                col += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `col[(c, kt, ky, kx), (ot, oy, ox)]` from one sample `x: [c, T, Y, X]`.
pub fn im2col(x: &[f32], c: usize, ind: [usize; 3], g: &Geom, outd: [usize; 3], col: &mut [f32]) {
    for_each_tap(c, ind, g, outd, |k, _, src| {
        col[k] = src.map_or(0.0, |s| x[s])
    });
}

/// Adds `col` back into `dx: [c, T, Y, X]` (the adjoint of [`im2col`]).
pub fn col2im(col: &[f32], c: usize, ind: [usize; 3], g: &Geom, outd: [usize; 3], dx: &mut [f32]) {
    for_each_tap(c, ind, g, outd, |k, _, src| {
        if let Some(s) = src {
            dx[s] += col[k];
        }
    });
}

/// A 1-D convolution along one axis: kernel length, stride, padding, dilation.
#[derive(Debug, Clone, Copy)]
pub struct AxisConv {
    pub axis: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
}

/// Channels and extents of one sample on both sides of an [`AxisConv`].
#[derive(Debug, Clone, Copy)]
pub struct DwShape {
    pub c: usize,
    pub ind: [usize; 3],
    pub outd: [usize; 3],
}

/// Depthwise 1-D convolution along `a.axis` of `x: [C, T, Y, X]` with one filter `w[c, k]` per
/// channel: `y[c, .., o, ..] = Σ_j w[c, j] x[c, .., o·s + j·d − p, ..]`.
pub fn depthwise_axis(x: &[f32], sh: DwShape, a: &AxisConv, w: &[f32], y: &mut [f32]) {
    let DwShape { c, ind, outd } = sh;
    let AxisConv {
        axis,
        k,
        stride: s,
        pad: p,
        dil: d,
    } = *a;
    let (ist, ost) = (strides(ind), strides(outd));
    for ch in 0..c {
        let (xo, yo) = (
            ch * ind.iter().product::<usize>(),
            ch * outd.iter().product::<usize>(),
        );
        for o0 in 0..outd[0] {
            for o1 in 0..outd[1] {
                for o2 in 0..outd[2] {
                    let o = [o0, o1, o2];
                    let mut acc = 0.0f32;
                    for j in 0..k {
                        let i = (o[axis] * s + j * d) as isize - p as isize;
                        if i < 0 || i as usize >= ind[axis] {
                            continue;
                        }
                        let mut ii = o;
                        ii[axis] = i as usize;
                        acc += w[ch * k + j] * x[xo + ii[0] * ist[0] + ii[1] * ist[1] + ii[2]];
                    }
                    y[yo + o0 * ost[0] + o1 * ost[1] + o2] = acc;
                }
            }
        }
    }
}

/// Input and weight gradients of [`depthwise_axis`]: `dx += Wᵀ dy`, `dw += dy ⊗ x`.
pub fn depthwise_axis_backward(
    x: &[f32],
    dy: &[f32],
    sh: DwShape,
    a: &AxisConv,
    w: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let DwShape { c, ind, outd } = sh;
    let AxisConv {
        axis,
        k,
        stride: s,
        pad: p,
        dil: d,
    } = *a;
    let (ist, ost) = (strides(ind), strides(outd));
    for ch in 0..c {
        let (xo, yo) = (
            ch * ind.iter().product::<usize>(),
            ch * outd.iter().product::<usize>(),
        );
        for o0 in 0..outd[0] {
            for o1 in 0..outd[1] {
                for o2 in 0..outd[2] {
                    let o = [o0, o1, o2];
                    let g = dy[yo + o0 * ost[0] + o1 * ost[1] + o2];
                    for j in 0..k {
                        let i = (o[axis] * s + j * d) as isize - p as isize;
                        if i < 0 || i as usize >= ind[axis] {
                            continue;
                        }
                        let mut ii = o;
                        ii[axis] = i as usize;
                        let xi = xo + ii[0] * ist[0] + ii[1] * ist[1] + ii[2];
                        dx[xi] += w[ch * k + j] * g;
                        dw[ch * k + j] += x[xi] * g;
                    }
                }
            }
        }
    }
}

fn strides(d: [usize; 3]) -> [usize; 2] {
    [d[1] * d[2], d[2]]
}
