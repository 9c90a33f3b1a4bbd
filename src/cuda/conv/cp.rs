//! The CP path: `1×1 (Ci → R)` GEMM, the depthwise passes along t, y and x (one fused kernel
//! where the geometry allows, else one pass per axis with its input kept), `1×1 (R → Co)` GEMM.

use super::{batched, gemm, sample_cols_t, sample_rows, shared, shared_t, Pass};
use crate::cuda::ops::CHAIN_KMAX;
use crate::cuda::{Chain, CudaError, DevBuf, GemmOut, Gpu};
use crate::nn::conv::{DwShape, Geom};
use crate::nn::layers::{axis_conv, axis_geom};

/// A CP layer's factors on the device, `(value, gradient)` pairs, and how its depthwise
/// passes run.
pub(super) struct CpParts {
    pub rank: usize,
    pub axes: Vec<usize>,
    pub v: DevBuf,
    pub dv: DevBuf,
    /// `(value, gradient)` per axis slot.
    pub a: Vec<(DevBuf, DevBuf)>,
    pub u: DevBuf,
    pub du: DevBuf,
    /// Run the depthwise passes as one fused kernel where it applies (kernels/cpchain.cu).
    pub fuse: bool,
    /// The fused chain of the last forward pass (its backward pass is fused too).
    pub chain: Option<Chain>,
    /// 2-D: the identity t filter of the fused chain and a scratch for its gradient.
    pub ident: Option<(DevBuf, DevBuf)>,
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

impl CpParts {
    /// The forward pass of `x`; the intermediates go to `saved` (the input of each depthwise
    /// pass or of the fused chain, then the last one's output), the bias and activation of
    /// `out` to the last GEMM's epilogue.
    pub fn forward(
        &mut self,
        gpu: &Gpu,
        p: &Pass<'_>,
        x: &DevBuf,
        out: GemmOut<'_>,
        saved: &mut Vec<(DevBuf, [usize; 5])>,
    ) -> Result<(), CudaError> {
        let (r, axes, d) = (self.rank, &self.axes, p.d);
        let (b, n, nout) = (p.batch(), p.nin(), p.nout());
        let mut z = gpu.device_uninit(b * r * n)?;
        let desc = gemm(
            [r, n, p.ci, b],
            shared(p.ci),
            batched(p.ci, n),
            batched(r, n),
            0.0,
        );
        gpu.gemm_dev(&desc, &self.v, x, &mut z)?;
        let mut zd = [b, r, d[2], d[3], d[4]];
        let chain = if self.fuse {
            fused_chain(p.g, axes, b, r, p.ind())
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
            let w = by_axis(axes, self.a.iter().map(|p| &p.0).collect(), t)?;
            gpu.cp_chain_forward_dev(ch, false, &z, w, &mut z3)?;
            saved.push((z, zd));
            z = z3;
            zd = [b, r, o[0], o[1], o[2]];
        }
        self.chain = chain;
        // Without a fused chain, one depthwise pass per axis, each input kept.
        let per_axis: &[usize] = if chain.is_none() { axes } else { &[] };
        for (slot, &ax) in per_axis.iter().enumerate() {
            let g = axis_geom(p.g, ax);
            let ind = [zd[2], zd[3], zd[4]];
            let o = g.out_dims(ind)?;
            let mut z2 = gpu.device_uninit(b * r * o.iter().product::<usize>())?;
            let sh = DwShape { c: r, ind, outd: o };
            gpu.dw_forward_dev(&z, b, sh, &axis_conv(&g, ax), &self.a[slot].0, &mut z2)?;
            saved.push((z, zd));
            z = z2;
            zd = [b, r, o[0], o[1], o[2]];
        }
        let desc = gemm(
            [p.co, nout, r, b],
            shared(r),
            batched(r, nout),
            batched(p.co, nout),
            0.0,
        );
        gpu.gemm_bias_act_dev(&desc, &self.u, &z, out)?;
        saved.push((z, zd));
        Ok(())
    }

    /// The backward pass of `dy` after [`CpParts::forward`] of `x` left `saved`: adds the
    /// factor gradients and writes `dx`.
    pub fn backward(
        &mut self,
        gpu: &Gpu,
        p: &Pass<'_>,
        x: &DevBuf,
        dy: &DevBuf,
        saved: &[(DevBuf, [usize; 5])],
        dx: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let (r, axes) = (self.rank, &self.axes);
        let (b, nin, nout, co, ci) = (p.batch(), p.nin(), p.nout(), p.co, p.ci);
        let (zl, _) = saved
            .last()
            .ok_or_else(|| CudaError::CallOrder("gpu cp".into()))?;
        // dU += Σ_s dy_s · zl_sᵀ
        let desc = gemm(
            [co, r, nout, b],
            sample_rows(nout, co * nout),
            sample_cols_t(nout, r * nout),
            shared(r),
            1.0,
        );
        gpu.gemm_sum_batch_dev(&desc, &dy.as_view(), &zl.as_view(), &mut self.du)?;
        // dz = Uᵀ dy
        let mut dz = gpu.device_uninit(b * r * nout)?;
        let desc = gemm(
            [r, nout, co, b],
            shared_t(r),
            batched(co, nout),
            batched(r, nout),
            0.0,
        );
        gpu.gemm_dev(&desc, &self.u, dy, &mut dz)?;
        if let Some(ch) = &self.chain {
            let z0 = &saved[0].0;
            let (w, dw): (Vec<_>, Vec<_>) = self.a.iter_mut().map(|(v, g)| (&*v, g)).unzip();
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
            let (zin, zd) = &saved[slot];
            let g = axis_geom(p.g, ax);
            let ind = [zd[2], zd[3], zd[4]];
            let o = g.out_dims(ind)?;
            let sh = DwShape { c: r, ind, outd: o };
            let ac = axis_conv(&g, ax);
            gpu.dw_dweight_dev(zin, &dz, b, sh, &ac, &mut self.a[slot].1)?;
            let mut dzin = gpu.device_uninit(b * r * ind.iter().product::<usize>())?;
            gpu.dw_dinput_dev(&dz, b, sh, &ac, &self.a[slot].0, &mut dzin)?;
            dz = dzin;
        }
        // dV += Σ_s dz0_s · x_sᵀ
        let desc = gemm(
            [r, ci, nin, b],
            sample_rows(nin, r * nin),
            sample_cols_t(nin, ci * nin),
            shared(ci),
            1.0,
        );
        gpu.gemm_sum_batch_dev(&desc, &dz.as_view(), &x.as_view(), &mut self.dv)?;
        // dx = Vᵀ dz0
        let desc = gemm(
            [ci, nin, r, b],
            shared_t(ci),
            batched(r, nin),
            batched(ci, nin),
            0.0,
        );
        gpu.gemm_dev(&desc, &self.v, &dz, dx)
    }
}
