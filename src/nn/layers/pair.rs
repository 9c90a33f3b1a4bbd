//! `pair`: the paper's pair-wise factorised kernels, rebuilt dense and run through the core.

use super::*;

/// `pair`: every kernel `W[o, i]` is `Σ_r f_t[o,i,r] ⊗ f_y[o,i,r] ⊗ f_x[o,i,r]` (2-D: `f_y ⊗ f_x`).
///
/// Implementation: the dense kernel is rebuilt from the factors (`Co·Ci·R·kvol` flops, negligible
/// beside the convolution) and run through the dense path; the factor gradients follow from the
/// dense kernel gradient by the chain rule. This is exact and faster than per-pair separable passes,
/// which would need a `Co·Ci`-channel intermediate.
pub struct PairConv {
    pub core: ConvCore,
    pub rank: usize,
    /// Axes that carry a factor (3-D: t, y, x; 2-D: y, x).
    pub axes: Vec<usize>,
    /// One factor per axis in `axes`: `[Co, Ci, R, k_axis]`.
    pub factors: Vec<Param>,
    pub b: Option<Param>,
    x: Option<Tensor>,
    w: Vec<f32>,
}

impl PairConv {
    pub fn new(
        core: ConvCore,
        rank: usize,
        axes: Vec<usize>,
        factors: Vec<Vec<f32>>,
        bias: bool,
    ) -> Self {
        let names = ["factor_t", "factor_y", "factor_x"];
        let factors = axes
            .iter()
            .zip(factors)
            .map(|(&a, v)| Param::new(names[a], &[core.co, core.ci, rank, core.g.k[a]], v))
            .collect();
        let b = bias.then(|| Param::new("bias", &[core.co], vec![0.0; core.co]));
        let mut p = PairConv {
            core,
            rank,
            axes,
            factors,
            b,
            x: None,
            w: vec![],
        };
        p.rebuild();
        p
    }

    /// The factor slices `f_slot[oi, r, :]` of one kernel and rank, per axis slot.
    fn factor_rows(&self, oi: usize, r: usize) -> Vec<&[f32]> {
        self.axes
            .iter()
            .zip(&self.factors)
            .map(|(&ax, f)| {
                let k = self.core.g.k[ax];
                &f.value[(oi * self.rank + r) * k..][..k]
            })
            .collect()
    }

    /// Kernel taps `(p, q, s)` in the row-major order of `[kt, ky, kx]`.
    fn taps(&self) -> impl Iterator<Item = [usize; 3]> {
        let k = self.core.g.k;
        (0..k[0]).flat_map(move |p| (0..k[1]).flat_map(move |q| (0..k[2]).map(move |s| [p, q, s])))
    }

    /// Dense kernel from the factors, one `(o, i)` kernel per task.
    pub fn rebuild(&mut self) {
        let kv = self.core.g.kvol();
        let mut w = vec![0.0f32; self.core.co * self.core.ci * kv];
        let this = &*self;
        w.par_chunks_mut(kv).enumerate().for_each(|(oi, wk)| {
            for r in 0..this.rank {
                let rows = this.factor_rows(oi, r);
                for (wv, pqs) in wk.iter_mut().zip(this.taps()) {
                    let mut prod = 1.0;
                    for (row, &ax) in rows.iter().zip(&this.axes) {
                        prod *= row[pqs[ax]];
                    }
                    *wv += prod;
                }
            }
        });
        self.w = w;
    }

    /// Factor gradients from the dense kernel gradient `dw`: `∂W/∂f_slot` is the product of
    /// the other factors. Returns one `[Co·Ci, R, k_axis]` gradient per axis slot.
    fn factor_grads(&self, dw: &[f32]) -> Vec<Vec<f32>> {
        let kv = self.core.g.kvol();
        let na = self.axes.len();
        let ks: Vec<usize> = self.axes.iter().map(|&a| self.core.g.k[a]).collect();
        let per_oi: usize = ks.iter().sum::<usize>() * self.rank;
        // One contiguous block per (o, i): slot 0's [R, k0], then slot 1's [R, k1], ...
        let mut blocks = vec![0.0f32; self.core.co * self.core.ci * per_oi];
        blocks
            .par_chunks_mut(per_oi)
            .enumerate()
            .for_each(|(oi, blk)| {
                let g = &dw[oi * kv..(oi + 1) * kv];
                for r in 0..self.rank {
                    let rows = self.factor_rows(oi, r);
                    for (gv, pqs) in g.iter().zip(self.taps()) {
                        let mut off = 0;
                        for slot in 0..na {
                            let mut prod = *gv;
                            for other in (0..na).filter(|&o| o != slot) {
                                prod *= rows[other][pqs[self.axes[other]]];
                            }
                            blk[off + r * ks[slot] + pqs[self.axes[slot]]] += prod;
                            off += self.rank * ks[slot];
                        }
                    }
                }
            });
        (0..na)
            .map(|slot| {
                let off: usize = ks[..slot].iter().sum::<usize>() * self.rank;
                let len = self.rank * ks[slot];
                blocks
                    .chunks(per_oi)
                    .flat_map(|b| b[off..off + len].iter().copied())
                    .collect()
            })
            .collect()
    }

    pub fn dense_kernel(&self) -> &[f32] {
        &self.w
    }
}

impl Layer for PairConv {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        self.rebuild();
        let y = self
            .core
            .forward(&x, &self.w, self.b.as_ref().map(|b| &b.value[..]))?;
        self.x = Some(x);
        Ok(y)
    }
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        self.core
            .backward_input(saved(&self.x, "pair conv")?, dy, &self.w)
    }
    fn backward_weights(&mut self, dy: &Tensor) -> Result<(), NnError> {
        let (dw, db) = self
            .core
            .backward_weights(saved(&self.x, "pair conv")?, dy)?;
        let grads = self.factor_grads(&dw);
        for (f, g) in self.factors.iter_mut().zip(grads) {
            f.grad.iter_mut().zip(g).for_each(|(a, d)| *a += d);
        }
        if let Some(b) = &mut self.b {
            b.grad.iter_mut().zip(db).for_each(|(g, d)| *g += d);
        }
        Ok(())
    }
    fn params(&self) -> Vec<&Param> {
        self.factors.iter().chain(self.b.as_ref()).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.factors.iter_mut().chain(self.b.as_mut()).collect()
    }
    fn describe(&self) -> String {
        format!(
            "pair conv {}→{} rank {} k{:?} s{:?} p{:?}",
            self.core.ci,
            self.core.co,
            self.rank,
            self.core.g.k,
            self.core.g.stride,
            self.core.g.pad
        )
    }
}
