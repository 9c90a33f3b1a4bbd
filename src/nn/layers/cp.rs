//! `cp`: whole-kernel CP convolution, a 1×1, one depthwise pass per axis, and a 1×1.

use super::*;

/// Initial values of a CP layer's factors.
pub struct CpFactors {
    pub rank: usize,
    /// `V: [R, Ci]`
    pub v: Vec<f32>,
    /// One `[R, k_axis]` per factor axis.
    pub a: Vec<Vec<f32>>,
    /// `U: [Co, R]`
    pub u: Vec<f32>,
}

/// `cp`: `W[o,i,p,q,s] = Σ_r U[o,r] · A_t[r,p] · A_y[r,q] · A_x[r,s] · V[r,i]`, run as a 1×1
/// convolution `Ci → R`, one depthwise 1-D convolution per axis (carrying that axis's stride,
/// padding and dilation), and a 1×1 convolution `R → Co` plus bias. Exact: zero padding and
/// strides separate along axes for a separable kernel.
pub struct CpConv {
    pub ci: usize,
    pub co: usize,
    pub rank: usize,
    pub g: Geom,
    /// Axes with a depthwise factor (3-D: t, y, x; 2-D: y, x).
    pub axes: Vec<usize>,
    /// `V: [R, Ci]`
    pub v: Param,
    /// One `[R, k_axis]` per axis in `axes`.
    pub a: Vec<Param>,
    /// `U: [Co, R]`
    pub u: Param,
    pub b: Option<Param>,
    /// Keep only `x` and recompute the intermediates in the backward pass.
    pub recompute: bool,
    /// Forward intermediates: x, then the input of each depthwise pass, then its output (only
    /// x when `recompute`).
    cache: Vec<Tensor>,
}

impl CpConv {
    /// A CP layer of `core`'s shape (`ci → co`, geometry `g`) with factors along `axes`.
    pub fn new(core: ConvCore, axes: Vec<usize>, f: CpFactors, bias: bool) -> Self {
        let ConvCore { ci, co, g } = core;
        let CpFactors { rank, v, a, u } = f;
        let names = ["factor_t", "factor_y", "factor_x"];
        let a = axes
            .iter()
            .zip(a)
            .map(|(&ax, val)| Param::new(names[ax], &[rank, g.k[ax]], val))
            .collect();
        CpConv {
            ci,
            co,
            rank,
            g,
            axes,
            v: Param::new("factor_in", &[rank, ci], v),
            a,
            u: Param::new("factor_out", &[co, rank], u),
            b: bias.then(|| Param::new("bias", &[co], vec![0.0; co])),
            recompute: false,
            cache: vec![],
        }
    }

    /// The chain up to the last 1×1 convolution: the output of the input 1×1 convolution, then
    /// of each depthwise pass.
    fn chain(&self, x: &Tensor) -> Result<Vec<Tensor>, NnError> {
        let mut z = Self::pointwise(x, &self.v.value, self.rank, None)?;
        let mut zs = Vec::with_capacity(self.axes.len() + 1);
        for (slot, &ax) in self.axes.iter().enumerate() {
            let d = z.dims5("cp conv")?;
            let ind = [d[2], d[3], d[4]];
            let g = self.axis_geom(ax);
            let o = g.out_dims(ind)?;
            let (nin, nout) = (ind.iter().product::<usize>(), o.iter().product::<usize>());
            let w = &self.a[slot].value;
            let data = per_sample(d[0], self.rank * nout, |b, y| {
                let sh = DwShape {
                    c: self.rank,
                    ind,
                    outd: o,
                };
                depthwise_axis(
                    &z.data[b * self.rank * nin..(b + 1) * self.rank * nin],
                    sh,
                    &axis_conv(&g, ax),
                    w,
                    y,
                );
            });
            let next = Tensor::from_vec(&[d[0], self.rank, o[0], o[1], o[2]], data)?;
            zs.push(std::mem::replace(&mut z, next));
        }
        zs.push(z);
        Ok(zs)
    }

    /// The equivalent dense kernel `[Co, Ci, kt, ky, kx]` (for tests and export).
    pub fn dense_kernel(&self) -> Vec<f32> {
        let k = self.g.k;
        let kv = self.g.kvol();
        let mut w = vec![0.0f32; self.co * self.ci * kv];
        for o in 0..self.co {
            for i in 0..self.ci {
                for p in 0..k[0] {
                    for q in 0..k[1] {
                        for s in 0..k[2] {
                            let mut acc = 0.0;
                            for r in 0..self.rank {
                                let mut prod =
                                    self.u.value[o * self.rank + r] * self.v.value[r * self.ci + i];
                                for (slot, &ax) in self.axes.iter().enumerate() {
                                    prod *= self.a[slot].value[r * k[ax] + [p, q, s][ax]];
                                }
                                acc += prod;
                            }
                            w[(o * self.ci + i) * kv + (p * k[1] + q) * k[2] + s] = acc;
                        }
                    }
                }
            }
        }
        w
    }

    fn pointwise(
        x: &Tensor,
        w: &[f32],
        co: usize,
        bias: Option<&[f32]>,
    ) -> Result<Tensor, NnError> {
        let d = x.dims5("1×1 convolution")?;
        let (ci, n) = (d[1], d[2] * d[3] * d[4]);
        let data = per_sample(d[0], co * n, |b, y| {
            gemm(
                1.0,
                view(w, co, ci),
                view(&x.data[b * ci * n..], ci, n),
                0.0,
                y,
            );
            if let Some(bias) = bias {
                for (c, row) in y.chunks_mut(n).enumerate() {
                    row.iter_mut().for_each(|v| *v += bias[c]);
                }
            }
        });
        Tensor::from_vec(&[d[0], co, d[2], d[3], d[4]], data)
    }

    /// This layer's geometry reduced to axis `ax` (kernel 1 elsewhere).
    pub fn axis_geom(&self, ax: usize) -> Geom {
        axis_geom(&self.g, ax)
    }
}

impl Layer for CpConv {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        check_channels(&x, self.ci, "cp conv")?;
        // Strides on axes without a factor (2-D: t) would be lost; the model builder rejects them.
        let mut zs = self.chain(&x)?;
        let y = Self::pointwise(
            &zs[self.axes.len()],
            &self.u.value,
            self.co,
            self.b.as_ref().map(|b| &b.value[..]),
        )?;
        self.cache = vec![x];
        if !self.recompute {
            self.cache.append(&mut zs);
        }
        Ok(y)
    }

    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        Ok(self.chain_backward(dy, false)?.0)
    }

    fn backward_weights(&mut self, dy: &Tensor) -> Result<(), NnError> {
        Layer::backward(self, dy).map(|_| ())
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor, NnError> {
        let (dx, grads) = self.chain_backward(dy, true)?;
        let mut it = grads.into_iter();
        for p in self.params_mut() {
            if let Some(g) = it.next() {
                p.grad.iter_mut().zip(g).for_each(|(a, d)| *a += d);
            }
        }
        Ok(dx)
    }

    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.v];
        v.extend(self.a.iter());
        v.push(&self.u);
        v.extend(self.b.as_ref());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.v];
        v.extend(self.a.iter_mut());
        v.push(&mut self.u);
        v.extend(self.b.as_mut());
        v
    }
    fn describe(&self) -> String {
        format!(
            "cp conv {}→{} rank {} k{:?} s{:?} p{:?}",
            self.ci, self.co, self.rank, self.g.k, self.g.stride, self.g.pad
        )
    }
}

impl CpConv {
    /// The depthwise pass of axis slot `slot` (axis `ax`) backwards: the gradient of its input
    /// `zin` from that of its output `dz`, and, when asked, its filter's gradient (summed over
    /// the samples in order).
    fn axis_backward(
        &self,
        (slot, ax): (usize, usize),
        zin: &Tensor,
        dz: &Tensor,
        want_weights: bool,
    ) -> Result<(Tensor, Option<Vec<f32>>), NnError> {
        let r = self.rank;
        let di = zin.dims5("cp conv")?;
        let ind = [di[2], di[3], di[4]];
        let g = self.axis_geom(ax);
        let o = g.out_dims(ind)?;
        let (nin, nout) = (ind.iter().product::<usize>(), o.iter().product::<usize>());
        let k = g.k[ax];
        let w = &self.a[slot].value;
        let mut dx = zeroed(di[0] * r * nin);
        let mut dw_parts = zeroed(di[0] * r * k);
        dx.par_chunks_mut(r * nin)
            .zip(dw_parts.par_chunks_mut(r * k))
            .enumerate()
            .for_each(|(b, (dxb, dwb))| {
                let sh = DwShape { c: r, ind, outd: o };
                depthwise_axis_backward(
                    &zin.data[b * r * nin..(b + 1) * r * nin],
                    &dz.data[b * r * nout..(b + 1) * r * nout],
                    sh,
                    &axis_conv(&g, ax),
                    w,
                    dxb,
                    dwb,
                );
            });
        let dw = want_weights.then(|| {
            let mut dw = vec![0.0f32; r * k];
            for part in dw_parts.chunks(r * k) {
                dw.iter_mut().zip(part).for_each(|(a, v)| *a += v);
            }
            dw
        });
        Ok((Tensor::from_vec(&zin.shape, dx)?, dw))
    }

    /// Backpropagates through the chain; returns `dx` and, when asked, the parameter gradients
    /// in `params()` order.
    fn chain_backward(
        &self,
        dy: &Tensor,
        want_weights: bool,
    ) -> Result<(Tensor, Vec<Vec<f32>>), NnError> {
        // The chain's intermediates: kept by the forward pass, or recomputed from x.
        let rebuilt;
        let zs: &[Tensor] = match self.cache.len() {
            1 => {
                rebuilt = self.chain(&self.cache[0])?;
                &rebuilt
            }
            n if n == self.axes.len() + 2 => &self.cache[1..],
            _ => return Err(NnError::Model("cp conv: backward before forward".into())),
        };
        let zl = &zs[self.axes.len()];
        let d = zl.dims5("cp conv")?;
        let n = d[2] * d[3] * d[4];
        check_same(
            dy,
            &[d[0], self.co, d[2], d[3], d[4]],
            "cp conv output gradient",
        )?;
        let r = self.rank;
        let mut grads_a: Vec<Vec<f32>> = vec![];
        let (mut du, mut db) = (vec![], vec![]);
        if want_weights {
            du = sum_per_sample(d[0], self.co * r, |b, g| {
                gemm(
                    1.0,
                    view(&dy.data[b * self.co * n..], self.co, n),
                    view(&zl.data[b * r * n..], r, n).t(),
                    0.0,
                    g,
                )
            });
            db = vec![0.0f32; self.co];
            for b in 0..d[0] {
                for (c, row) in dy.data[b * self.co * n..(b + 1) * self.co * n]
                    .chunks(n)
                    .enumerate()
                {
                    db[c] += sum8(row);
                }
            }
        }
        // dz = Uᵀ dy
        let mut dz = Tensor::from_vec(
            &zl.shape,
            per_sample(d[0], r * n, |b, g| {
                gemm(
                    1.0,
                    view(&self.u.value, self.co, r).t(),
                    view(&dy.data[b * self.co * n..], self.co, n),
                    0.0,
                    g,
                )
            }),
        )?;
        for (slot, &ax) in self.axes.iter().enumerate().rev() {
            let (dzin, dw) = self.axis_backward((slot, ax), &zs[slot], &dz, want_weights)?;
            grads_a.extend(dw);
            dz = dzin;
        }
        grads_a.reverse();
        // dx = Vᵀ dz0; dV = Σ dz0 xᵀ
        let x = &self.cache[0];
        let dx0 = x.dims5("cp conv")?;
        let nx = dx0[2] * dx0[3] * dx0[4];
        let dv = if want_weights {
            sum_per_sample(dx0[0], r * self.ci, |b, g| {
                gemm(
                    1.0,
                    view(&dz.data[b * r * nx..], r, nx),
                    view(&x.data[b * self.ci * nx..], self.ci, nx).t(),
                    0.0,
                    g,
                )
            })
        } else {
            vec![]
        };
        let dxd = per_sample(dx0[0], self.ci * nx, |b, g| {
            gemm(
                1.0,
                view(&self.v.value, r, self.ci).t(),
                view(&dz.data[b * r * nx..], r, nx),
                0.0,
                g,
            )
        });
        let mut grads = vec![];
        if want_weights {
            grads.push(dv);
            grads.extend(grads_a);
            grads.push(du);
            if self.b.is_some() {
                grads.push(db);
            }
        }
        Ok((Tensor::from_vec(&x.shape, dxd)?, grads))
    }
}
