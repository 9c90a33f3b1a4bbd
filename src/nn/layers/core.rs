//! The dense convolution kernel math shared by `dense` and `pair` (and the transposed layer):
//! im2col + GEMM per time tap, the direct small-channel path, and both gradients.

use super::*;

/// The dense kernel math shared by `dense` and `pair`: `W: [Co, Ci·kt·ky·kx]`.
///
/// A 3-D convolution runs as `kt` GEMMs over one 2-D im2col matrix: the columns
/// `col2[(ci, ky, kx), (t, oy, ox)]` are built once for every zero-padded input time slice `t`,
/// and time tap `a` multiplies `W[:, :, a]` (`[Co, Ci·ky·kx]`) by the window of columns that
/// starts at slice `a·dt` (stride 1 in time: one GEMM over all output slices; otherwise one GEMM
/// per output slice). Against a full 3-D im2col this builds a matrix `kt` times smaller and keeps
/// the GEMM depth at `Ci·ky·kx`, where the kernels run near peak (see docs/benchmarks.md). A 2-D
/// layer (`kt = 1`) is the plain im2col + one GEMM.
#[derive(Debug, Clone)]
pub struct ConvCore {
    pub ci: usize,
    pub co: usize,
    pub g: Geom,
}

/// How a dense convolution runs: see [`ConvCore::forward_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgo {
    /// Direct where it applies, else GEMM.
    Auto,
    /// The direct AVX-512 kernel (ignoring `WAVECP_CONV`), GEMM where it does not apply.
    Direct,
    /// im2col + GEMM.
    Gemm,
}

/// Sizes of the time-split im2col for one input shape.
struct Split {
    /// Geometry of the 2-D im2col (kernel 1 and stride 1 in time, the time padding kept).
    g2: Geom,
    /// Its output extent `[T + 2pt, Y', X']`.
    o2: [usize; 3],
    /// Rows `Ci·ky·kx`.
    k2: usize,
    /// Output extent of the convolution.
    o: [usize; 3],
    /// `Y'·X'`.
    nyx: usize,
    /// `(T + 2pt)·Y'·X'`: the row stride of the im2col matrix.
    ld: usize,
}

impl Split {
    fn col_len(&self) -> usize {
        self.k2 * self.ld
    }
}

impl ConvCore {
    fn dims(&self, x: &Tensor, what: &str) -> Result<([usize; 5], [usize; 3]), NnError> {
        let d = check_channels(x, self.ci, what)?;
        let o = self.g.out_dims([d[2], d[3], d[4]])?;
        Ok((d, o))
    }

    fn split(&self, ind: [usize; 3], o: [usize; 3]) -> Split {
        let g = &self.g;
        let g2 = Geom {
            k: [1, g.k[1], g.k[2]],
            stride: [1, g.stride[1], g.stride[2]],
            pad: g.pad,
            dil: [1, g.dil[1], g.dil[2]],
        };
        let o2 = [ind[0] + 2 * g.pad[0], o[1], o[2]];
        let nyx = o[1] * o[2];
        Split {
            g2,
            o2,
            k2: self.ci * g.k[1] * g.k[2],
            o,
            nyx,
            ld: o2[0] * nyx,
        }
    }

    /// Offset of `W[o, i, a, 0, 0]` in the time-tap layout `[a][o][(i, ky, kx)]`.
    fn tap_offset(&self, o: usize, i: usize, a: usize) -> usize {
        let kyx = self.g.k[1] * self.g.k[2];
        (a * self.co + o) * self.ci * kyx + i * kyx
    }

    /// `W[o, i, a, ky, kx]` regrouped as `[a][o][(i, ky, kx)]`, one GEMM operand per time tap
    /// (borrowed as it is when there is one tap).
    fn taps<'w>(&self, w: &'w [f32]) -> std::borrow::Cow<'w, [f32]> {
        let (kt, kyx) = (self.g.k[0], self.g.k[1] * self.g.k[2]);
        if kt == 1 {
            return std::borrow::Cow::Borrowed(w);
        }
        let mut out = vec![0.0f32; w.len()];
        for (oi, blk) in w.chunks(kt * kyx).enumerate() {
            let (o, i) = (oi / self.ci, oi % self.ci);
            for a in 0..kt {
                let dst = self.tap_offset(o, i, a);
                out[dst..dst + kyx].copy_from_slice(&blk[a * kyx..(a + 1) * kyx]);
            }
        }
        std::borrow::Cow::Owned(out)
    }

    /// Calls `f(a, out_offset, col_offset, n)` for every GEMM of the time split: time tap `a`
    /// maps output columns `[out_offset, out_offset + n)` to im2col columns starting at
    /// `col_offset`.
    fn for_each_gemm(&self, sp: &Split, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (st, dt) = (self.g.stride[0], self.g.dil[0]);
        for a in 0..self.g.k[0] {
            if st == 1 {
                f(a, 0, a * dt * sp.nyx, sp.o[0] * sp.nyx);
            } else {
                for t in 0..sp.o[0] {
                    f(a, t * sp.nyx, (t * st + a * dt) * sp.nyx, sp.nyx);
                }
            }
        }
    }

    /// `y = W ⋆ x + b`: the direct AVX-512 kernel where it applies (stride 1, dilation 1, a CPU
    /// with AVX-512F, `WAVECP_CONV` not `gemm`), else im2col + GEMM.
    pub fn forward(&self, x: &Tensor, w: &[f32], bias: Option<&[f32]>) -> Result<Tensor, NnError> {
        self.forward_with(ConvAlgo::Auto, x, w, bias)
    }

    /// [`ConvCore::forward`] with the algorithm chosen by the caller (tests and benchmarks
    /// compare the two in one process). `Direct` falls back to GEMM where it does not apply.
    pub fn forward_with(
        &self,
        algo: ConvAlgo,
        x: &Tensor,
        w: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Tensor, NnError> {
        let (d, o) = self.dims(x, "convolution")?;
        let ind = [d[2], d[3], d[4]];
        let plan = self.direct_plan(algo, ind);
        if let Some(dp) = plan {
            let nin = self.ci * ind.iter().product::<usize>();
            let n = o.iter().product::<usize>();
            let wp = dp.pack_weights(w);
            let data = per_sample(d[0], self.co * n, |b, y| {
                let mut buf = Scratch::new(dp.input_len() + dp.plane_len());
                let (xp, plane) = buf.split_at_mut(dp.input_len());
                dp.pack_input(&x.data[b * nin..(b + 1) * nin], xp);
                dp.forward_sample(xp, &wp, bias, y, plane);
            });
            return Tensor::from_vec(&[d[0], self.co, o[0], o[1], o[2]], data);
        }
        self.forward_gemm(x, w, bias)
    }

    /// The direct kernel's plan for input `ind` under `algo`, `None` for the GEMM path.
    fn direct_plan(&self, algo: ConvAlgo, ind: [usize; 3]) -> Option<Direct> {
        match algo {
            ConvAlgo::Auto => Direct::plan(self.ci, self.co, &self.g, ind),
            ConvAlgo::Direct => Direct::plan_always(self.ci, self.co, &self.g, ind),
            ConvAlgo::Gemm => None,
        }
    }

    /// `y = W ⋆ x + b` through the time-split im2col and GEMMs.
    fn forward_gemm(&self, x: &Tensor, w: &[f32], bias: Option<&[f32]>) -> Result<Tensor, NnError> {
        let (d, o) = self.dims(x, "convolution")?;
        let ind = [d[2], d[3], d[4]];
        let sp = self.split(ind, o);
        let (nin, n) = (
            self.ci * ind.iter().product::<usize>(),
            o.iter().product::<usize>(),
        );
        let wt = self.taps(w);
        let data = per_sample(d[0], self.co * n, |b, y| {
            let mut col = Scratch::new(sp.col_len());
            im2col(
                &x.data[b * nin..(b + 1) * nin],
                self.ci,
                ind,
                &sp.g2,
                sp.o2,
                &mut col,
            );
            // Bias first, so that every tap's GEMM accumulates (beta = 1).
            for (c, row) in y.chunks_mut(n).enumerate() {
                row.fill(bias.map_or(0.0, |b| b[c]));
            }
            self.for_each_gemm(&sp, |a, yo, co, len| {
                gemm_view(
                    1.0,
                    view(&wt[a * self.co * sp.k2..], self.co, sp.k2),
                    view_at(&col, co, sp.k2, len, sp.ld),
                    1.0,
                    view_at_mut(y, yo, self.co, len, n),
                );
            });
        });
        Tensor::from_vec(&[d[0], self.co, o[0], o[1], o[2]], data)
    }

    /// The convolution whose forward pass is this one's input gradient, when there is one: at
    /// stride 1, `dx = W̃ ⋆ dy` with `W̃[i, o] = W[o, i]` flipped along every axis and padding
    /// `d(k − 1) − p` (valid while `p ≤ d(k − 1)`). Returns the core and `W̃`.
    fn adjoint(&self, w: &[f32]) -> Option<(ConvCore, Vec<f32>)> {
        let g = &self.g;
        if g.stride != [1; 3] || (0..3).any(|a| g.pad[a] > g.dil[a] * (g.k[a] - 1)) {
            return None;
        }
        let pad = std::array::from_fn(|a| g.dil[a] * (g.k[a] - 1) - g.pad[a]);
        let core = ConvCore {
            ci: self.co,
            co: self.ci,
            g: Geom { pad, ..*g },
        };
        let kv = g.kvol();
        let mut wf = vec![0.0f32; w.len()];
        for o in 0..self.co {
            for i in 0..self.ci {
                let src = &w[(o * self.ci + i) * kv..][..kv];
                let dst = &mut wf[(i * self.co + o) * kv..][..kv];
                // Reversing the flattened [kt, ky, kx] block flips all three axes at once.
                dst.iter_mut()
                    .zip(src.iter().rev())
                    .for_each(|(d, s)| *d = *s);
            }
        }
        Some((core, wf))
    }

    /// `dx = Wᵀ ⋆ dy`: at stride 1 the forward pass of [`ConvCore::adjoint`] (GEMMs that write
    /// `dx` once); otherwise the im2col adjoint (GEMMs that accumulate into the column matrix,
    /// then `col2im`), which moves about 3× the bytes.
    pub fn backward_input(&self, x: &Tensor, dy: &Tensor, w: &[f32]) -> Result<Tensor, NnError> {
        let (d, o) = self.dims(x, "convolution")?;
        check_same(
            dy,
            &[d[0], self.co, o[0], o[1], o[2]],
            "convolution output gradient",
        )?;
        if let Some((core, wf)) = self.adjoint(w) {
            let dx = core.forward(dy, &wf, None)?;
            if dx.shape == x.shape {
                return Ok(dx);
            }
            return Err(NnError::Shape {
                what: "convolution input gradient (adjoint)".into(),
                expected: x.shape.clone(),
                found: dx.shape,
            });
        }
        let ind = [d[2], d[3], d[4]];
        let sp = self.split(ind, o);
        let (nin, n) = (
            self.ci * ind.iter().product::<usize>(),
            o.iter().product::<usize>(),
        );
        let wt = self.taps(w);
        let data = per_sample(d[0], nin, |b, dx| {
            let mut col = Scratch::new(sp.col_len());
            // Time taps overlap in the im2col columns, so they accumulate into a zeroed matrix.
            col.fill(0.0);
            let dyb = &dy.data[b * self.co * n..(b + 1) * self.co * n];
            self.for_each_gemm(&sp, |a, yo, co, len| {
                gemm_view(
                    1.0,
                    view(&wt[a * self.co * sp.k2..], self.co, sp.k2).t(),
                    view_at(dyb, yo, self.co, len, n),
                    1.0,
                    view_at_mut(&mut col, co, sp.k2, len, sp.ld),
                );
            });
            col2im(&col, self.ci, ind, &sp.g2, sp.o2, dx);
        });
        Tensor::from_vec(&x.shape, data)
    }

    /// `(dW, db)`: the direct AVX-512 kernel where [`ConvCore::forward`] uses it, else GEMMs.
    pub fn backward_weights(
        &self,
        x: &Tensor,
        dy: &Tensor,
    ) -> Result<(Vec<f32>, Vec<f32>), NnError> {
        self.backward_weights_with(ConvAlgo::Auto, x, dy)
    }

    /// [`ConvCore::backward_weights`] with the algorithm chosen by the caller. The GEMM path
    /// computes `dW[:, :, a] = Σ_b dy_b · col_{b,a}ᵀ`.
    pub fn backward_weights_with(
        &self,
        algo: ConvAlgo,
        x: &Tensor,
        dy: &Tensor,
    ) -> Result<(Vec<f32>, Vec<f32>), NnError> {
        let (d, o) = self.dims(x, "convolution")?;
        check_same(
            dy,
            &[d[0], self.co, o[0], o[1], o[2]],
            "convolution output gradient",
        )?;
        let ind = [d[2], d[3], d[4]];
        let (nin, n) = (
            self.ci * ind.iter().product::<usize>(),
            o.iter().product::<usize>(),
        );
        let db = || {
            let mut db = vec![0.0f32; self.co];
            for b in 0..d[0] {
                for (c, row) in dy.data[b * self.co * n..(b + 1) * self.co * n]
                    .chunks(n)
                    .enumerate()
                {
                    db[c] += sum8(row);
                }
            }
            db
        };
        let plan = self.direct_plan(algo, ind);
        if let Some(dp) = plan {
            let dw = sum_per_sample(d[0], self.co * self.ci * self.g.kvol(), |b, dw| {
                let mut buf = Scratch::new(dp.input_len() + dp.dy_len() + dp.partial_len());
                let (xp, rest) = buf.split_at_mut(dp.input_len());
                let (dyp, part) = rest.split_at_mut(dp.dy_len());
                dp.pack_input(&x.data[b * nin..(b + 1) * nin], xp);
                dp.pack_dy(&dy.data[b * self.co * n..(b + 1) * self.co * n], dyp);
                dp.weight_grad_sample(xp, dyp, dw, part);
            });
            return Ok((dw, db()));
        }
        let sp = self.split(ind, o);
        let per_tap = self.co * sp.k2;
        let dwt = sum_per_sample(d[0], per_tap * self.g.k[0], |b, dw| {
            let mut col = Scratch::new(sp.col_len());
            im2col(
                &x.data[b * nin..(b + 1) * nin],
                self.ci,
                ind,
                &sp.g2,
                sp.o2,
                &mut col,
            );
            let dyb = &dy.data[b * self.co * n..(b + 1) * self.co * n];
            self.for_each_gemm(&sp, |a, yo, co, len| {
                // As dWᵀ = col · dyᵀ into a row-major [k2, Co] block: with the long reduction
                // along contiguous rows of both operands, the other layouts ran 5× slower.
                gemm_view(
                    1.0,
                    view_at(&col, co, sp.k2, len, sp.ld),
                    view_at(dyb, yo, self.co, len, n).t(),
                    1.0,
                    view_at_mut(&mut dw[a * per_tap..], 0, sp.k2, self.co, self.co),
                );
            });
        });
        // The GEMMs left `[a][(i, ky, kx)][Co]`; scatter once into `W[o, i, a, ky, kx]`.
        let (kt, kyx) = (self.g.k[0], self.g.k[1] * self.g.k[2]);
        let mut dw = vec![0.0f32; dwt.len()];
        for (oi, blk) in dw.chunks_mut(kt * kyx).enumerate() {
            let (o, i) = (oi / self.ci, oi % self.ci);
            for a in 0..kt {
                let rows = a * per_tap + i * kyx * self.co;
                for (j, v) in blk[a * kyx..(a + 1) * kyx].iter_mut().enumerate() {
                    *v = dwt[rows + j * self.co + o];
                }
            }
        }
        Ok((dw, db()))
    }
}
