//! Convolution kernels on the CPU (the reference path): im2col + GEMM for dense and transposed
//! convolutions, and direct loops for depthwise 1-D convolutions along one axis.
//!
//! Everything is 3-D (`[C, T, Y, X]` per sample); a 2-D layer is the 3-D one with `T = 1` and a
//! kernel of length 1 along time, so one code path serves both.

use super::tensor::NnError;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

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

thread_local! {
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A per-thread work buffer of `len` values with unspecified contents (callers overwrite what they
/// read). Reusing it saves zeroing and page-faulting a fresh im2col matrix for every sample; it
/// goes back to the thread when dropped.
pub struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

impl Scratch {
    pub fn new(len: usize) -> Self {
        let mut buf = SCRATCH.with(|c| c.take());
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Scratch { buf, len }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        SCRATCH.with(|c| {
            // Keep the larger of the two buffers if scratches were nested.
            let other = c.take();
            c.set(if other.len() > buf.len() { other } else { buf });
        });
    }
}

/// `C = alpha · A · B + beta · C` with `A: [m, k]`, `B: [k, n]` given as (possibly transposed)
/// views and `C` row-major `[m, n]`.
pub fn gemm(alpha: f32, a: ArrayView2<f32>, b: ArrayView2<f32>, beta: f32, c: &mut [f32]) {
    let (m, n) = (a.nrows(), b.ncols());
    let c = ArrayViewMut2::from_shape((m, n), &mut c[..m * n])
        .expect("a contiguous slice of m·n elements is a valid [m, n] view");
    gemm_view(alpha, a, b, beta, c);
}

/// `C = alpha · A · B + beta · C` on arbitrary strided views (`C` may be a window of a larger
/// matrix, e.g. one time tap's columns of a 2-D im2col matrix).
///
/// Runs on the `gemm` crate's kernels, which dispatch at run time to AVX-512 where the CPU has it
/// (matrixmultiply, behind ndarray, stops at AVX2). Single-threaded: callers parallelise over
/// samples, which keeps results independent of the thread count.
pub fn gemm_view(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    mut c: ArrayViewMut2<f32>,
) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(
        b.nrows() == k && c.nrows() == m && c.ncols() == n,
        "gemm: [{m}, {k}] · [{}, {n}] into [{}, {}]",
        b.nrows(),
        c.nrows(),
        c.ncols()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.map_inplace(|v| *v *= beta);
        return;
    }
    let (ars, acs) = (a.strides()[0], a.strides()[1]);
    let (brs, bcs) = (b.strides()[0], b.strides()[1]);
    let (crs, ccs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: the pointers and strides come from live ndarray views of m×k, k×n and m×n
    // elements; `c` is a mutable view, so it aliases neither input.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            ccs,
            crs,
            beta != 0.0,
            a.as_ptr(),
            acs,
            ars,
            b.as_ptr(),
            bcs,
            brs,
            beta,
            alpha,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

/// A `[r, c]` view of `s` starting at `off` with row stride `rs` and unit column stride.
pub fn view_at(s: &[f32], off: usize, r: usize, c: usize, rs: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((r, c).strides((rs, 1)), &s[off..])
        .expect("the caller sized the slice for r rows of stride rs")
}

/// The mutable twin of [`view_at`].
pub fn view_at_mut(
    s: &mut [f32],
    off: usize,
    r: usize,
    c: usize,
    rs: usize,
) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((r, c).strides((rs, 1)), &mut s[off..])
        .expect("the caller sized the slice for r rows of stride rs")
}

/// A row-major `[r, c]` view of a slice whose length the caller has sized.
pub fn view(s: &[f32], r: usize, c: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((r, c), &s[..r * c])
        .expect("a contiguous slice of r·c elements is a valid [r, c] view")
}

/// For kernel tap `c` along x: the output range `[lo, hi)` whose input `ox·s + c·d − p` is inside
/// `[0, n)`, and the input index of `lo`.
#[inline]
fn x_range(out: usize, n: usize, s: usize, c: usize, d: usize, p: usize) -> (usize, usize, usize) {
    let off = (c * d) as isize - p as isize;
    // smallest ox with ox·s + off ≥ 0
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(s)
    };
    // largest ox with ox·s + off ≤ n − 1, plus one
    let hi = if (n as isize) - 1 - off < 0 {
        0
    } else {
        (((n as isize - 1 - off) as usize) / s + 1).min(out)
    };
    let lo = lo.min(hi);
    (lo, hi, (lo as isize * s as isize + off).max(0) as usize)
}

/// A contiguous stretch of one im2col row: `len` columns from `out`, either copied from the
/// input (`Some((first input index, input step))`) or in the zero padding (`None`).
#[derive(Clone, Copy)]
struct Run {
    out: usize,
    len: usize,
    src: Option<(usize, usize)>,
}

/// Calls `f` for every run of every im2col row, in order.
#[inline]
fn for_each_run(c: usize, ind: [usize; 3], g: &Geom, outd: [usize; 3], mut f: impl FnMut(Run)) {
    let n = outd[0] * outd[1] * outd[2];
    let [kt, ky, kx] = g.k;
    let zero = |out, len| Run {
        out,
        len,
        src: None,
    };
    for ci in 0..c {
        for a in 0..kt {
            for b in 0..ky {
                for cc in 0..kx {
                    let row = ((ci * kt + a) * ky + b) * kx + cc;
                    let (lo, hi, ix0) =
                        x_range(outd[2], ind[2], g.stride[2], cc, g.dil[2], g.pad[2]);
                    for ot in 0..outd[0] {
                        let it = (ot * g.stride[0] + a * g.dil[0]) as isize - g.pad[0] as isize;
                        for oy in 0..outd[1] {
                            let iy = (oy * g.stride[1] + b * g.dil[1]) as isize - g.pad[1] as isize;
                            let o = row * n + (ot * outd[1] + oy) * outd[2];
                            let inside = it >= 0
                                && iy >= 0
                                && (it as usize) < ind[0]
                                && (iy as usize) < ind[1];
                            if !inside || lo >= hi {
                                f(zero(o, outd[2]));
                                continue;
                            }
                            if lo > 0 {
                                f(zero(o, lo));
                            }
                            let src =
                                ((ci * ind[0] + it as usize) * ind[1] + iy as usize) * ind[2] + ix0;
                            f(Run {
                                out: o + lo,
                                len: hi - lo,
                                src: Some((src, g.stride[2])),
                            });
                            if hi < outd[2] {
                                f(zero(o + hi, outd[2] - hi));
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
    for_each_run(c, ind, g, outd, |r| {
        let dst = &mut col[r.out..r.out + r.len];
        match r.src {
            None => dst.fill(0.0),
            Some((src, 1)) => dst.copy_from_slice(&x[src..src + r.len]),
            Some((src, s)) => dst
                .iter_mut()
                .enumerate()
                .for_each(|(k, d)| *d = x[src + k * s]),
        }
    });
}

/// Adds `col` back into `dx: [c, T, Y, X]` (the adjoint of [`im2col`]).
pub fn col2im(col: &[f32], c: usize, ind: [usize; 3], g: &Geom, outd: [usize; 3], dx: &mut [f32]) {
    for_each_run(c, ind, g, outd, |r| {
        let from = &col[r.out..r.out + r.len];
        match r.src {
            None => {}
            Some((src, 1)) => dx[src..src + r.len]
                .iter_mut()
                .zip(from)
                .for_each(|(d, v)| *d += v),
            Some((src, s)) => from
                .iter()
                .enumerate()
                .for_each(|(k, v)| dx[src + k * s] += v),
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

/// Calls `f(out_offset, in_offset, len, in_step)` for every contiguous run of `(output, input)`
/// pairs of tap `j` of a depthwise 1-D convolution along `a.axis`, within one channel.
/// Along x the run covers the valid outputs of a row (input step = stride); along t or y it covers
/// a whole x-row (identical in input and output, step 1), so the inner loops vectorise.
#[inline]
fn for_each_axis_run(
    sh: &DwShape,
    a: &AxisConv,
    j: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let (ind, outd) = (sh.ind, sh.outd);
    let (lo, hi, i0) = x_range(outd[a.axis], ind[a.axis], a.stride, j, a.dil, a.pad);
    if lo >= hi {
        return;
    }
    let (ist, ost) = (strides(ind), strides(outd));
    match a.axis {
        2 => {
            for o0 in 0..outd[0] {
                for o1 in 0..outd[1] {
                    f(
                        o0 * ost[0] + o1 * ost[1] + lo,
                        o0 * ist[0] + o1 * ist[1] + i0,
                        hi - lo,
                        a.stride,
                    );
                }
            }
        }
        1 => {
            for o0 in 0..outd[0] {
                for (k, o1) in (lo..hi).enumerate() {
                    let i1 = i0 + k * a.stride;
                    f(
                        o0 * ost[0] + o1 * ost[1],
                        o0 * ist[0] + i1 * ist[1],
                        outd[2],
                        1,
                    );
                }
            }
        }
        _ => {
            for (k, o0) in (lo..hi).enumerate() {
                let i0k = i0 + k * a.stride;
                for o1 in 0..outd[1] {
                    f(
                        o0 * ost[0] + o1 * ost[1],
                        i0k * ist[0] + o1 * ist[1],
                        outd[2],
                        1,
                    );
                }
            }
        }
    }
}

/// Depthwise 1-D convolution along `a.axis` of `x: [C, T, Y, X]` with one filter `w[c, k]` per
/// channel: `y[c, .., o, ..] = Σ_j w[c, j] x[c, .., o·s + j·d − p, ..]`.
pub fn depthwise_axis(x: &[f32], sh: DwShape, a: &AxisConv, w: &[f32], y: &mut [f32]) {
    let (nin, nout) = (
        sh.ind.iter().product::<usize>(),
        sh.outd.iter().product::<usize>(),
    );
    for ch in 0..sh.c {
        let (xc, yc) = (
            &x[ch * nin..(ch + 1) * nin],
            &mut y[ch * nout..(ch + 1) * nout],
        );
        yc.fill(0.0);
        for j in 0..a.k {
            let wj = w[ch * a.k + j];
            for_each_axis_run(&sh, a, j, |o, i, len, step| {
                let out = &mut yc[o..o + len];
                if step == 1 {
                    axpy(out, &xc[i..i + len], wj);
                } else {
                    for (k, v) in out.iter_mut().enumerate() {
                        *v += wj * xc[i + k * step];
                    }
                }
            });
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
    let (nin, nout) = (
        sh.ind.iter().product::<usize>(),
        sh.outd.iter().product::<usize>(),
    );
    for ch in 0..sh.c {
        let (xc, gc) = (
            &x[ch * nin..(ch + 1) * nin],
            &dy[ch * nout..(ch + 1) * nout],
        );
        let dxc = &mut dx[ch * nin..(ch + 1) * nin];
        for j in 0..a.k {
            let wj = w[ch * a.k + j];
            let mut acc = 0.0f32;
            for_each_axis_run(&sh, a, j, |o, i, len, step| {
                let g = &gc[o..o + len];
                let part = if step == 1 {
                    axpy_dot(&mut dxc[i..i + len], &xc[i..i + len], g, wj)
                } else {
                    let mut part = 0.0f32;
                    for (k, gv) in g.iter().enumerate() {
                        dxc[i + k * step] += wj * gv;
                        part += xc[i + k * step] * gv;
                    }
                    part
                };
                acc += part;
            });
            dw[ch * a.k + j] += acc;
        }
    }
}

/// `Σ v` with 8 partial sums in a fixed order: vectorised (a plain `iter().sum()` of `f32` must
/// add in sequence and stays scalar; it was 14 % of the CP layer's time in bias gradients) and
/// deterministic.
pub fn sum8(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut c = v.chunks_exact(8);
    for v8 in &mut c {
        for l in 0..8 {
            lanes[l] += v8[l];
        }
    }
    lanes.iter().sum::<f32>() + c.remainder().iter().sum::<f32>()
}

/// `d += w·x` over equal-length slices; a function of its own for the same reason as
/// [`axpy_dot`].
#[inline(never)]
fn axpy(d: &mut [f32], x: &[f32], w: f32) {
    for (dv, xv) in d.iter_mut().zip(x) {
        *dv += w * xv;
    }
}

/// `d += w·g` and returns `Σ x·g`, over equal-length slices.
///
/// A function of its own so that the slices arrive as `noalias` arguments: inside the run closure
/// LLVM re-read `w` after every store to `d` and kept the loop scalar. Eight partial sums in a
/// fixed order let the reduction vectorise and keep it deterministic.
#[inline(never)]
fn axpy_dot(d: &mut [f32], x: &[f32], g: &[f32], w: f32) -> f32 {
    let n = d.len().min(x.len()).min(g.len());
    let (d, x, g) = (&mut d[..n], &x[..n], &g[..n]);
    let mut lanes = [0.0f32; 8];
    let mut dc = d.chunks_exact_mut(8);
    let mut xc = x.chunks_exact(8);
    let mut gc = g.chunks_exact(8);
    for ((d8, x8), g8) in (&mut dc).zip(&mut xc).zip(&mut gc) {
        for l in 0..8 {
            d8[l] += w * g8[l];
            lanes[l] += x8[l] * g8[l];
        }
    }
    let mut tail = 0.0f32;
    for ((dv, xv), gv) in dc
        .into_remainder()
        .iter_mut()
        .zip(xc.remainder())
        .zip(gc.remainder())
    {
        *dv += w * gv;
        tail += xv * gv;
    }
    lanes.iter().sum::<f32>() + tail
}

fn strides(d: [usize; 3]) -> [usize; 2] {
    [d[1] * d[2], d[2]]
}
