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
//! within the f32 rounding of sums of the same terms (tests/cuda.rs states the bounds).

use super::ops::ConvOperand;
use super::ops::CHAIN_KMAX;
use super::{Chain, CudaError, DevBuf, GemmDesc, Gpu};
use crate::nn::conv::{DwShape, Geom};
use crate::nn::layers::{
    axis_conv, axis_geom, transposed_out_dims, ConvTranspose, CpConv, DenseConv, PairConv,
};
use crate::nn::ops::ActKind;

enum Kind {
    Dense {
        w: DevBuf,
        dw: DevBuf,
    },
    Pair {
        rank: usize,
        axes: Vec<usize>,
        /// Factor values, one `[Co·Ci, R, k_axis]` array per axis slot, and their gradients.
        f: Vec<DevBuf>,
        df: Vec<DevBuf>,
        /// The rebuilt kernel and its gradient (of the last backward pass only).
        w: DevBuf,
        dw: DevBuf,
    },
    Cp {
        rank: usize,
        axes: Vec<usize>,
        v: DevBuf,
        dv: DevBuf,
        /// `(value, gradient)` per axis slot.
        a: Vec<(DevBuf, DevBuf)>,
        u: DevBuf,
        du: DevBuf,
    },
}

/// A convolution layer on the GPU.
pub struct GpuConv {
    pub ci: usize,
    pub co: usize,
    pub g: Geom,
    kind: Kind,
    /// `(value, gradient)`.
    bias: Option<(DevBuf, DevBuf)>,
    /// Forward state: the input and its dims, then (dense, pair) the im2col matrix or (CP) the
    /// input of each depthwise pass and the last output, with their dims.
    x: Option<(DevBuf, [usize; 5])>,
    saved: Vec<(DevBuf, [usize; 5])>,
    /// CP: run the depthwise passes as one fused kernel where it applies (kernels/cpchain.cu).
    fuse: bool,
    /// CP: the fused chain of the last forward pass (its backward pass is fused too).
    chain: Option<Chain>,
    /// CP, 2-D: the identity t filter of the fused chain and a scratch for its gradient.
    ident: Option<(DevBuf, DevBuf)>,
}

/// The fused chain for a CP layer's depthwise passes over `[batch, r, ind]`, where
/// kernels/cpchain.cu applies: one pass per axis, stride and dilation 1, filters of at most
/// [`CHAIN_KMAX`] taps, padding shorter than the filter (so the adjoint is a chain too).
fn fused_chain(g: &Geom, axes: &[usize], batch: usize, r: usize, ind: [usize; 3]) -> Option<Chain> {
    let mut seen = [false; 3];
    for &a in axes {
        *seen.get_mut(a)? = true;
    }
    // Three passes, or the two of a 2-D layer (y and x; its t filter is the identity:
    // length 1, no padding, weight 1, which the kernel multiplies by exactly).
    let two_d = axes.len() == 2 && seen == [false, true, true] && g.k[0] == 1 && g.pad[0] == 0;
    let ok = (axes.len() == 3 && seen.iter().all(|&s| s) || two_d)
        && (0..3).all(|a| {
            g.stride[a] == 1 && g.dil[a] == 1 && g.k[a] <= CHAIN_KMAX && g.pad[a] < g.k[a]
        });
    let ch = Chain {
        batch,
        c: r,
        ind,
        k: g.k,
        pad: g.pad,
    };
    (ok && ch.out_dims().is_ok()).then_some(ch)
}

/// The CP filters (and gradients) in axis order t, y, x from their axis slots; `t` stands in
/// for a 2-D layer's absent t filter (the identity and a scratch gradient).
fn by_axis<T>(axes: &[usize], per_slot: Vec<T>, t: Option<T>) -> Result<[T; 3], CudaError> {
    let mut out: [Option<T>; 3] = [None, None, None];
    for (slot, v) in per_slot.into_iter().enumerate() {
        out[axes[slot]] = Some(v);
    }
    if out[0].is_none() {
        out[0] = t;
    }
    match out {
        [Some(t), Some(y), Some(x)] => Ok([t, y, x]),
        _ => Err(CudaError::Unsupported(
            "fused CP chain: the axes are not t, y and x once each".into(),
        )),
    }
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

/// The dense path's backward pass: `dW += Σ_s dy_s · col_sᵀ` (sample order; `col` when the
/// forward pass stored it, else an implicit GEMM over the input `x`), then
/// `dx = col2im(Wᵀ · dy)`.
#[allow(clippy::too_many_arguments)]
fn dense_backward(
    gpu: &Gpu,
    (ci, co, g): (usize, usize, &Geom),
    d: [usize; 5],
    od: [usize; 5],
    (x, col): (&DevBuf, Option<&DevBuf>),
    dy: &DevBuf,
    w: &DevBuf,
    (dw, beta_w): (&mut DevBuf, f32),
    dx: &mut DevBuf,
) -> Result<(), CudaError> {
    let (b, nin, nout, kk) = (
        d[0],
        d[2] * d[3] * d[4],
        od[2] * od[3] * od[4],
        ci * g.kvol(),
    );
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
            let geo = (ci, [d[2], d[3], d[4]], g, [od[2], od[3], od[4]]);
            let (dyv, xv) = (dy.as_view(), x.as_view());
            gpu.gemm_conv_dev(&desc, &dyv, &xv, ConvOperand::ColT, geo, dw, None, None)?;
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
        let geo = (co, [od[2], od[3], od[4]], &ga, [d[2], d[3], d[4]]);
        return gpu.gemm_conv_dev(
            &desc,
            &wa.as_view(),
            &dy.as_view(),
            ConvOperand::Col,
            geo,
            dx,
            None,
            None,
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
    gpu.col2im_dev(
        &dcol,
        b,
        ci,
        [d[2], d[3], d[4]],
        g,
        [od[2], od[3], od[4]],
        dx,
    )
}

impl GpuConv {
    fn bias_from(
        gpu: &Gpu,
        b: Option<&crate::nn::layers::Param>,
    ) -> Result<Option<(DevBuf, DevBuf)>, CudaError> {
        b.map(|p| Ok((gpu.to_device(&p.value)?, gpu.device_zeros(p.value.len())?)))
            .transpose()
    }

    /// A copy of a CPU `dense` layer.
    pub fn from_dense(gpu: &Gpu, l: &DenseConv) -> Result<Self, CudaError> {
        Ok(GpuConv {
            ci: l.core.ci,
            co: l.core.co,
            g: l.core.g,
            kind: Kind::Dense {
                w: gpu.to_device(&l.w.value)?,
                dw: gpu.device_zeros(l.w.value.len())?,
            },
            bias: Self::bias_from(gpu, l.b.as_ref())?,
            x: None,
            saved: vec![],
            fuse: std::env::var("WAVECP_CP_FUSED").map_or(true, |v| v != "0"),
            chain: None,
            ident: None,
        })
    }

    /// A copy of a CPU `pair` layer.
    pub fn from_pair(gpu: &Gpu, l: &PairConv) -> Result<Self, CudaError> {
        let n = l.core.co * l.core.ci * l.core.g.kvol();
        let f = l
            .factors
            .iter()
            .map(|p| gpu.to_device(&p.value))
            .collect::<Result<Vec<_>, _>>()?;
        let df = l
            .factors
            .iter()
            .map(|p| gpu.device_zeros(p.value.len()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GpuConv {
            ci: l.core.ci,
            co: l.core.co,
            g: l.core.g,
            bias: Self::bias_from(gpu, l.b.as_ref())?,
            kind: Kind::Pair {
                rank: l.rank,
                axes: l.axes.clone(),
                f,
                df,
                w: gpu.device_zeros(n)?,
                dw: gpu.device_zeros(n)?,
            },
            x: None,
            saved: vec![],
            fuse: std::env::var("WAVECP_CP_FUSED").map_or(true, |v| v != "0"),
            chain: None,
            ident: None,
        })
    }

    /// A copy of a CPU `cp` layer.
    pub fn from_cp(gpu: &Gpu, l: &CpConv) -> Result<Self, CudaError> {
        let a =
            l.a.iter()
                .map(|p| Ok((gpu.to_device(&p.value)?, gpu.device_zeros(p.value.len())?)))
                .collect::<Result<Vec<_>, CudaError>>()?;
        Ok(GpuConv {
            ci: l.ci,
            co: l.co,
            g: l.g,
            bias: Self::bias_from(gpu, l.b.as_ref())?,
            kind: Kind::Cp {
                rank: l.rank,
                axes: l.axes.clone(),
                v: gpu.to_device(&l.v.value)?,
                dv: gpu.device_zeros(l.v.value.len())?,
                a,
                u: gpu.to_device(&l.u.value)?,
                du: gpu.device_zeros(l.u.value.len())?,
            },
            x: None,
            saved: vec![],
            fuse: std::env::var("WAVECP_CP_FUSED").map_or(true, |v| v != "0"),
            chain: None,
            ident: None,
        })
    }

    fn out_dims(&self, d: [usize; 5]) -> Result<[usize; 5], CudaError> {
        let o = self.g.out_dims([d[2], d[3], d[4]])?;
        Ok([d[0], self.co, o[0], o[1], o[2]])
    }

    /// `x: [B, Ci, T, Y, X]` (owned: kept for the backward pass) → `(y, dims of y)`.
    pub fn forward(
        &mut self,
        gpu: &Gpu,
        x: DevBuf,
        d: [usize; 5],
    ) -> Result<(DevBuf, [usize; 5]), CudaError> {
        let (y, _, od) = self.forward_act(gpu, x, d, None)?;
        Ok((y, od))
    }

    /// [`GpuConv::forward`] with an activation fused into the last GEMM's epilogue (with the
    /// bias): `(act(y), y before the activation, dims)`; without one, `(y, None, dims)`.
    pub fn forward_act(
        &mut self,
        gpu: &Gpu,
        x: DevBuf,
        d: [usize; 5],
        act: Option<ActKind>,
    ) -> Result<(DevBuf, Option<DevBuf>, [usize; 5]), CudaError> {
        if d[1] != self.ci || x.len() < d.iter().product::<usize>() {
            return Err(shape_err(
                "gpu conv input",
                d[0] * self.ci * d[2] * d[3] * d[4],
                x.len(),
            ));
        }
        let od = self.out_dims(d)?;
        let (b, nout) = (d[0], od[2] * od[3] * od[4]);
        self.saved.clear();
        let mut y = gpu.device_uninit(b * self.co * nout)?;
        let mut pre = match act {
            Some(_) => Some(gpu.device_uninit(b * self.co * nout)?),
            None => None,
        };
        let epilogue = act.zip(pre.as_mut());
        let bias = self.bias.as_ref().map(|(bv, _)| bv);
        let (ci, co, g) = (self.ci, self.co, self.g);
        if let Kind::Pair {
            rank, axes, f, w, ..
        } = &mut self.kind
        {
            gpu.pair_rebuild_dev(f, axes, (co * ci, *rank, g.k), w)?;
        }
        match &self.kind {
            Kind::Dense { w, .. } | Kind::Pair { w, .. } => {
                let kk = self.ci * self.g.kvol();
                let (ind, o) = ([d[2], d[3], d[4]], [od[2], od[3], od[4]]);
                let desc = gemm(
                    [self.co, nout, kk, b],
                    shared(kk),
                    batched(kk, nout),
                    batched(self.co, nout),
                    0.0,
                );
                if gpu.implicit_conv() {
                    // Implicit GEMM: the panels gather from x; no im2col matrix is stored.
                    let geo = (self.ci, ind, &self.g, o);
                    gpu.gemm_conv_dev(
                        &desc,
                        &w.as_view(),
                        &x.as_view(),
                        ConvOperand::Col,
                        geo,
                        &mut y,
                        bias,
                        epilogue,
                    )?;
                } else {
                    let mut col = gpu.device_uninit(b * kk * nout)?;
                    gpu.im2col_dev(&x, b, self.ci, ind, &self.g, o, &mut col)?;
                    gpu.gemm_bias_act_dev(&desc, w, &col, &mut y, bias, epilogue)?;
                    self.saved.push((col, [b, kk, 1, 1, nout]));
                }
            }
            Kind::Cp {
                rank,
                axes,
                v,
                a,
                u,
                ..
            } => {
                let r = *rank;
                let n = d[2] * d[3] * d[4];
                let mut z = gpu.device_uninit(b * r * n)?;
                let desc = gemm(
                    [r, n, self.ci, b],
                    shared(self.ci),
                    batched(self.ci, n),
                    batched(r, n),
                    0.0,
                );
                gpu.gemm_dev(&desc, v, &x, &mut z)?;
                let mut zd = [b, r, d[2], d[3], d[4]];
                let chain = if self.fuse {
                    fused_chain(&self.g, axes, b, r, [d[2], d[3], d[4]])
                } else {
                    None
                };
                if let Some(ch) = &chain {
                    let o = ch.out_dims()?;
                    let mut z3 = gpu.device_uninit(b * r * o.iter().product::<usize>())?;
                    if axes.len() == 2 && self.ident.is_none() {
                        self.ident = Some((gpu.to_device(&vec![1.0; r])?, gpu.device_zeros(r)?));
                    }
                    let t = self.ident.as_ref().map(|i| &i.0);
                    let w = by_axis(axes, a.iter().map(|p| &p.0).collect(), t)?;
                    gpu.cp_chain_forward_dev(ch, false, &z, w, &mut z3)?;
                    self.saved.push((z, zd));
                    z = z3;
                    zd = [b, r, o[0], o[1], o[2]];
                }
                self.chain = chain;
                // Without a fused chain, one depthwise pass per axis, each input kept.
                let per_axis: &[usize] = if chain.is_none() { axes } else { &[] };
                for (slot, &ax) in per_axis.iter().enumerate() {
                    let g = axis_geom(&self.g, ax);
                    let ind = [zd[2], zd[3], zd[4]];
                    let o = g.out_dims(ind)?;
                    let mut z2 = gpu.device_uninit(b * r * o.iter().product::<usize>())?;
                    let sh = DwShape { c: r, ind, outd: o };
                    gpu.dw_forward_dev(&z, b, sh, &axis_conv(&g, ax), &a[slot].0, &mut z2)?;
                    self.saved.push((z, zd));
                    z = z2;
                    zd = [b, r, o[0], o[1], o[2]];
                }
                let desc = gemm(
                    [self.co, nout, r, b],
                    shared(r),
                    batched(r, nout),
                    batched(self.co, nout),
                    0.0,
                );
                gpu.gemm_bias_act_dev(&desc, u, &z, &mut y, bias, epilogue)?;
                self.saved.push((z, zd));
            }
        }
        self.x = Some((x, d));
        Ok((y, pre, od))
    }

    /// Backpropagates `dy` of the last forward pass: adds the weight gradients, returns `dx`.
    pub fn backward(&mut self, gpu: &Gpu, dy: &DevBuf) -> Result<DevBuf, CudaError> {
        let (x, d) = self
            .x
            .as_ref()
            .ok_or_else(|| CudaError::CallOrder("gpu conv".into()))?;
        let od = self.out_dims(*d)?;
        let (b, nin, nout) = (d[0], d[2] * d[3] * d[4], od[2] * od[3] * od[4]);
        if dy.len() < b * self.co * nout {
            return Err(shape_err(
                "gpu conv output gradient",
                b * self.co * nout,
                dy.len(),
            ));
        }
        add_bias_grad(gpu, &mut self.bias, dy, b, self.co, nout)?;
        let mut dx = gpu.device_uninit(b * self.ci * nin)?;
        match &mut self.kind {
            Kind::Dense { w, dw } => {
                let col = self.saved.first().map(|c| &c.0);
                dense_backward(
                    gpu,
                    (self.ci, self.co, &self.g),
                    *d,
                    od,
                    (x, col),
                    dy,
                    w,
                    (dw, 1.0),
                    &mut dx,
                )?;
            }
            Kind::Pair {
                rank,
                axes,
                f,
                df,
                w,
                dw,
            } => {
                // This pass's dW alone (overwritten: beta 0): it becomes the factor gradients.
                let col = self.saved.first().map(|c| &c.0);
                let geo = (self.ci, self.co, &self.g);
                dense_backward(gpu, geo, *d, od, (x, col), dy, w, (dw, 0.0), &mut dx)?;
                let shape = (self.co * self.ci, *rank, self.g.k);
                gpu.pair_factor_grads_dev(f, axes, shape, dw, df)?;
            }
            Kind::Cp {
                rank,
                axes,
                v,
                dv,
                a,
                u,
                du,
            } => {
                let r = *rank;
                let (zl, _) = self
                    .saved
                    .last()
                    .ok_or_else(|| CudaError::CallOrder("gpu cp".into()))?;
                // dU += Σ_s dy_s · zl_sᵀ
                let desc = gemm(
                    [self.co, r, nout, b],
                    sample_rows(nout, self.co * nout),
                    sample_cols_t(nout, r * nout),
                    shared(r),
                    1.0,
                );
                gpu.gemm_sum_batch_dev(&desc, &dy.as_view(), &zl.as_view(), du)?;
                // dz = Uᵀ dy
                let mut dz = gpu.device_uninit(b * r * nout)?;
                let desc = gemm(
                    [r, nout, self.co, b],
                    shared_t(r),
                    batched(self.co, nout),
                    batched(r, nout),
                    0.0,
                );
                gpu.gemm_dev(&desc, u, dy, &mut dz)?;
                if let Some(ch) = &self.chain {
                    let z0 = &self.saved[0].0;
                    let (w, dw): (Vec<_>, Vec<_>) = a.iter_mut().map(|(v, g)| (&*v, g)).unzip();
                    let (tw, tg) = match &mut self.ident {
                        Some((iw, ig)) => (Some(&*iw), Some(ig)),
                        None => (None, None),
                    };
                    let (w, dw) = (by_axis(axes, w, tw)?, by_axis(axes, dw, tg)?);
                    gpu.cp_chain_dweight_dev(ch, z0, &dz, w, dw)?;
                    let mut dz0 = gpu.device_uninit(b * r * nin)?;
                    gpu.cp_chain_forward_dev(&ch.adjoint()?, true, &dz, w, &mut dz0)?;
                    dz = dz0;
                }
                let per_axis: &[usize] = if self.chain.is_none() { axes } else { &[] };
                for (slot, &ax) in per_axis.iter().enumerate().rev() {
                    let (zin, zd) = &self.saved[slot];
                    let g = axis_geom(&self.g, ax);
                    let ind = [zd[2], zd[3], zd[4]];
                    let o = g.out_dims(ind)?;
                    let sh = DwShape { c: r, ind, outd: o };
                    let ac = axis_conv(&g, ax);
                    gpu.dw_dweight_dev(zin, &dz, b, sh, &ac, &mut a[slot].1)?;
                    let mut dzin = gpu.device_uninit(b * r * ind.iter().product::<usize>())?;
                    gpu.dw_dinput_dev(&dz, b, sh, &ac, &a[slot].0, &mut dzin)?;
                    dz = dzin;
                }
                // dV += Σ_s dz0_s · x_sᵀ
                let desc = gemm(
                    [r, self.ci, nin, b],
                    sample_rows(nin, r * nin),
                    sample_cols_t(nin, self.ci * nin),
                    shared(self.ci),
                    1.0,
                );
                gpu.gemm_sum_batch_dev(&desc, &dz.as_view(), &x.as_view(), dv)?;
                // dx = Vᵀ dz0
                let desc = gemm(
                    [self.ci, nin, r, b],
                    shared_t(self.ci),
                    batched(r, nin),
                    batched(self.ci, nin),
                    0.0,
                );
                gpu.gemm_dev(&desc, v, &dz, &mut dx)?;
            }
        }
        Ok(dx)
    }

    /// CP layers: whether the depthwise passes run as one fused kernel where the geometry
    /// allows (default: yes, unless `WAVECP_CP_FUSED=0`); the unfused path runs one kernel per
    /// pass. Takes effect at the next forward pass.
    pub fn set_fused(&mut self, on: bool) {
        self.fuse = on;
    }

    /// Sets the weight gradients to zero.
    pub fn zero_grad(&mut self, gpu: &Gpu) -> Result<(), CudaError> {
        gpu.zero_all_dev(&mut self.grads_mut())
    }

    /// The gradient buffers, in the CPU layer's `params()` order.
    pub fn grads_mut(&mut self) -> Vec<&mut DevBuf> {
        let mut v: Vec<&mut DevBuf> = match &mut self.kind {
            Kind::Dense { dw, .. } => vec![dw],
            Kind::Pair { df, .. } => df.iter_mut().collect(),
            Kind::Cp { dv, a, du, .. } => {
                let mut out = vec![dv];
                out.extend(a.iter_mut().map(|(_, g)| g));
                out.push(du);
                out
            }
        };
        if let Some((_, db)) = &mut self.bias {
            v.push(db);
        }
        v
    }

    /// The weight gradients, in the order of the CPU layer's `params()`.
    pub fn grads(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, CudaError> {
        let dl = |b: &DevBuf| gpu.to_host(b, b.len());
        let mut out = match &self.kind {
            Kind::Dense { dw, .. } => vec![dl(dw)?],
            Kind::Pair { df, .. } => df.iter().map(dl).collect::<Result<Vec<_>, _>>()?,
            Kind::Cp { dv, a, du, .. } => {
                let mut v = vec![dl(dv)?];
                for (_, g) in a {
                    v.push(dl(g)?);
                }
                v.push(dl(du)?);
                v
            }
        };
        if let Some((_, db)) = &self.bias {
            out.push(dl(db)?);
        }
        Ok(out)
    }
}

/// The transposed convolution (up-sampling) on the GPU, `W: [Ci, Co, kt, ky, kx]`:
/// `col = Wᵀ · x`, `y = col2im(col)` + bias; backward `dx = W · im2col(dy)` and
/// `dW += Σ_s x_s · im2col(dy_s)ᵀ`, as implicit GEMMs gathering from dy (the im2col matrix is
/// stored only on the baseline GEMM, `WAVECP_GEMM=basic`).
pub struct GpuConvT {
    ci: usize,
    co: usize,
    g: Geom,
    output_padding: [usize; 3],
    w: DevBuf,
    dw: DevBuf,
    bias: Option<(DevBuf, DevBuf)>,
    x: Option<(DevBuf, [usize; 5])>,
}

impl GpuConvT {
    /// A copy of a CPU transposed convolution.
    pub fn from_cpu(gpu: &Gpu, l: &ConvTranspose) -> Result<Self, CudaError> {
        Ok(GpuConvT {
            ci: l.ci,
            co: l.co,
            g: l.g,
            output_padding: l.output_padding,
            w: gpu.to_device(&l.w.value)?,
            dw: gpu.device_zeros(l.w.value.len())?,
            bias: GpuConv::bias_from(gpu, l.b.as_ref())?,
            x: None,
        })
    }

    fn dims(&self, d: [usize; 5]) -> Result<[usize; 5], CudaError> {
        let o = transposed_out_dims(&self.g, self.output_padding, [d[2], d[3], d[4]])?;
        Ok([d[0], self.co, o[0], o[1], o[2]])
    }

    /// `x: [B, Ci, T, Y, X]` (kept) → `(y, dims of y)`.
    pub fn forward(
        &mut self,
        gpu: &Gpu,
        x: DevBuf,
        d: [usize; 5],
    ) -> Result<(DevBuf, [usize; 5]), CudaError> {
        let (ci, co, g) = (self.ci, self.co, self.g);
        if d[1] != ci || x.len() < d.iter().product::<usize>() {
            return Err(shape_err(
                "gpu transposed conv input",
                d[0] * ci * d[2] * d[3] * d[4],
                x.len(),
            ));
        }
        let od = self.dims(d)?;
        let (b, nin, nout, kk) = (
            d[0],
            d[2] * d[3] * d[4],
            od[2] * od[3] * od[4],
            co * g.kvol(),
        );
        let mut col = gpu.device_uninit(b * kk * nin)?;
        let desc = gemm(
            [kk, nin, ci, b],
            shared_t(kk),
            batched(ci, nin),
            batched(kk, nin),
            0.0,
        );
        gpu.gemm_dev(&desc, &self.w, &x, &mut col)?;
        let mut y = gpu.device_uninit(b * co * nout)?;
        gpu.col2im_dev(
            &col,
            b,
            co,
            [od[2], od[3], od[4]],
            &g,
            [d[2], d[3], d[4]],
            &mut y,
        )?;
        if let Some((bv, _)) = &self.bias {
            gpu.bias_add_dev(&mut y, bv, b, co, nout)?;
        }
        self.x = Some((x, d));
        Ok((y, od))
    }

    /// Adds the weight gradients of `dy` and returns `dx`.
    pub fn backward(&mut self, gpu: &Gpu, dy: &DevBuf) -> Result<DevBuf, CudaError> {
        let (ci, co, g) = (self.ci, self.co, self.g);
        let (x, d) = self
            .x
            .as_ref()
            .ok_or_else(|| CudaError::CallOrder("gpu transposed conv".into()))?;
        let od = self.dims(*d)?;
        let (b, nin, nout, kk) = (
            d[0],
            d[2] * d[3] * d[4],
            od[2] * od[3] * od[4],
            co * g.kvol(),
        );
        if dy.len() < b * co * nout {
            return Err(shape_err(
                "gpu transposed conv output gradient",
                b * co * nout,
                dy.len(),
            ));
        }
        add_bias_grad(gpu, &mut self.bias, dy, b, co, nout)?;
        // The backward pass of a transposed convolution is the ordinary convolution of dy
        // (co channels over the output extents) with geometry g, whose output has x's
        // extents: dx = W·col(dy), dW += Σ_s x_s·col(dy_s)ᵀ.
        let (dy_ext, x_ext) = ([od[2], od[3], od[4]], [d[2], d[3], d[4]]);
        let dx_desc = gemm(
            [ci, nin, kk, b],
            shared(kk),
            batched(kk, nin),
            batched(ci, nin),
            0.0,
        );
        let dw_desc = gemm(
            [ci, kk, nin, b],
            sample_rows(nin, ci * nin),
            sample_cols_t(nin, kk * nin),
            shared(kk),
            1.0,
        );
        if gpu.implicit_conv() {
            // Implicit GEMMs gathering from dy: no b·kk·nin im2col matrix is written and read.
            let mut dx = gpu.device_uninit(b * ci * nin)?;
            let geo = (co, dy_ext, &g, x_ext);
            let (wv, dyv) = (self.w.as_view(), dy.as_view());
            gpu.gemm_conv_dev(
                &dx_desc,
                &wv,
                &dyv,
                ConvOperand::Col,
                geo,
                &mut dx,
                None,
                None,
            )?;
            let xv = x.as_view();
            gpu.gemm_conv_dev(
                &dw_desc,
                &xv,
                &dyv,
                ConvOperand::ColT,
                geo,
                &mut self.dw,
                None,
                None,
            )?;
            return Ok(dx);
        }
        let mut col = gpu.device_uninit(b * kk * nin)?;
        gpu.im2col_dev(
            dy,
            b,
            co,
            [od[2], od[3], od[4]],
            &g,
            [d[2], d[3], d[4]],
            &mut col,
        )?;
        let mut dx = gpu.device_uninit(b * ci * nin)?;
        gpu.gemm_dev(&dx_desc, &self.w, &col, &mut dx)?;
        gpu.gemm_sum_batch_dev(&dw_desc, &x.as_view(), &col.as_view(), &mut self.dw)?;
        Ok(dx)
    }

    pub fn zero_grad(&mut self, gpu: &Gpu) -> Result<(), CudaError> {
        gpu.zero_all_dev(&mut self.grads_mut())
    }

    /// The gradient buffers, in the CPU layer's `params()` order.
    pub fn grads_mut(&mut self) -> Vec<&mut DevBuf> {
        let mut v = vec![&mut self.dw];
        if let Some((_, db)) = &mut self.bias {
            v.push(db);
        }
        v
    }

    /// `(value, gradient)` of each parameter, in the CPU layer's `params()` order.
    pub fn params_mut(&mut self) -> Vec<(&mut DevBuf, &DevBuf)> {
        let mut v = vec![(&mut self.w, &self.dw)];
        if let Some((b, db)) = &mut self.bias {
            v.push((b, &*db));
        }
        v
    }
}

impl GpuConv {
    /// `(value, gradient)` of each parameter, in the CPU layer's `params()` order.
    pub fn params_mut(&mut self) -> Vec<(&mut DevBuf, &DevBuf)> {
        let mut v: Vec<(&mut DevBuf, &DevBuf)> = match &mut self.kind {
            Kind::Dense { w, dw } => vec![(w, &*dw)],
            Kind::Pair { f, df, .. } => f.iter_mut().zip(df.iter()).collect(),
            Kind::Cp {
                v, dv, a, u, du, ..
            } => {
                let mut out = vec![(v, &*dv)];
                out.extend(a.iter_mut().map(|(val, g)| (val, &*g)));
                out.push((u, &*du));
                out
            }
        };
        if let Some((b, db)) = &mut self.bias {
            v.push((b, &*db));
        }
        v
    }
}

impl GpuConv {
    /// Dims of the input of the last forward pass.
    pub fn input_dims(&self) -> Option<[usize; 5]> {
        self.x.as_ref().map(|(_, d)| *d)
    }
}

impl GpuConvT {
    /// Dims of the input of the last forward pass.
    pub fn input_dims(&self) -> Option<[usize; 5]> {
        self.x.as_ref().map(|(_, d)| *d)
    }
}
