//! Network layers with forward, input-gradient and weight-gradient passes.
//!
//! # Shapes
//! Every layer maps `x: [B, Ci, T, Y, X]` to `y: [B, Co, T', Y', X']` (2-D layers: `T = T' = 1`).
//! `backward_input(dy)` returns `dx` with the shape of the last `x`; `backward_weights(dy)` adds
//! the weight gradients of the last forward pass into each [`Param::grad`].

use super::conv::{
    col2im, depthwise_axis, depthwise_axis_backward, gemm, gemm_view, im2col, sum8, view, view_at,
    view_at_mut, AxisConv, DwShape, Geom, Scratch,
};
use super::direct::Direct;
use super::tensor::{zeroed, NnError, Tensor};
use rayon::prelude::*;

/// A trainable array and its gradient.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
}

impl Param {
    pub fn new(name: impl Into<String>, shape: &[usize], value: Vec<f32>) -> Self {
        let n = value.len();
        Param {
            name: name.into(),
            shape: shape.to_vec(),
            value,
            grad: vec![0.0; n],
        }
    }
}

/// A layer of the network. See the module docs for shapes.
pub trait Layer: Send + Sync {
    /// `x: [B, Ci, T, Y, X] → y: [B, Co, T', Y', X']`; keeps what the backward passes need.
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError>;
    /// [`Layer::forward`] on an input the caller gives up: layers that keep `x` for the backward
    /// passes keep it without a copy.
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        self.forward(&x)
    }
    /// `dy: [B, Co, T', Y', X'] → dx: [B, Ci, T, Y, X]`.
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError>;
    /// Adds `∂L/∂θ` for `dy = ∂L/∂y` into the parameters' gradients.
    fn backward_weights(&mut self, _dy: &Tensor) -> Result<(), NnError> {
        Ok(())
    }
    /// Both passes of training: adds the weight gradients and returns `dx`. Layers whose two
    /// passes share work (CP's chain) do it once here.
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor, NnError> {
        let dx = self.backward_input(dy)?;
        self.backward_weights(dy)?;
        Ok(dx)
    }
    fn params(&self) -> Vec<&Param> {
        vec![]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![]
    }
    fn describe(&self) -> String;
    /// The concrete layer, for building its GPU counterpart.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// `g` reduced to axis `ax` (kernel 1, stride 1, no padding elsewhere): the geometry of CP's
/// depthwise pass along that axis (the CPU and GPU layers share it).
pub fn axis_geom(g: &Geom, ax: usize) -> Geom {
    let mut a = Geom {
        k: [1; 3],
        stride: [1; 3],
        pad: [0; 3],
        dil: [1; 3],
    };
    a.k[ax] = g.k[ax];
    a.stride[ax] = g.stride[ax];
    a.pad[ax] = g.pad[ax];
    a.dil[ax] = g.dil[ax];
    a
}

/// The 1-D pass of `g` along axis `ax` (for the depthwise passes of CP).
pub fn axis_conv(g: &Geom, ax: usize) -> AxisConv {
    AxisConv {
        axis: ax,
        k: g.k[ax],
        stride: g.stride[ax],
        pad: g.pad[ax],
        dil: g.dil[ax],
    }
}

fn saved<'a>(x: &'a Option<Tensor>, what: &str) -> Result<&'a Tensor, NnError> {
    x.as_ref()
        .ok_or_else(|| NnError::Model(format!("{what}: backward before forward")))
}

fn check_channels(x: &Tensor, c: usize, what: &str) -> Result<[usize; 5], NnError> {
    let d = x.dims5(what)?;
    if d[1] != c {
        return Err(NnError::Shape {
            what: format!("{what} input channels"),
            expected: vec![c],
            found: vec![d[1]],
        });
    }
    Ok(d)
}

fn check_same(a: &Tensor, shape: &[usize], what: &str) -> Result<(), NnError> {
    if a.shape != shape {
        return Err(NnError::Shape {
            what: what.into(),
            expected: shape.to_vec(),
            found: a.shape.clone(),
        });
    }
    Ok(())
}

/// Runs `f(b, out_slice)` for every sample in parallel and stacks the results.
fn per_sample(b: usize, each: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let mut out = zeroed(b * each);
    out.par_chunks_mut(each.max(1))
        .enumerate()
        .for_each(|(i, o)| f(i, o));
    out
}

/// Sums per-sample gradient contributions in sample order (deterministic for any thread count).
fn sum_per_sample(b: usize, len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let parts = per_sample(b, len, f);
    let mut acc = zeroed(len);
    for p in parts.chunks(len.max(1)) {
        for (a, v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Dense convolution

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

/// `dense`: the usual kernel `W[o, i, kt, ky, kx]`, every entry trainable.
pub struct DenseConv {
    pub core: ConvCore,
    pub w: Param,
    pub b: Option<Param>,
    x: Option<Tensor>,
}

impl DenseConv {
    pub fn new(core: ConvCore, w: Vec<f32>, bias: bool) -> Self {
        let k = core.g.k;
        let w = Param::new("weight", &[core.co, core.ci, k[0], k[1], k[2]], w);
        let b = bias.then(|| Param::new("bias", &[core.co], vec![0.0; core.co]));
        DenseConv {
            core,
            w,
            b,
            x: None,
        }
    }
}

impl Layer for DenseConv {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        let y = self
            .core
            .forward(&x, &self.w.value, self.b.as_ref().map(|b| &b.value[..]))?;
        self.x = Some(x);
        Ok(y)
    }
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        self.core
            .backward_input(saved(&self.x, "dense conv")?, dy, &self.w.value)
    }
    fn backward_weights(&mut self, dy: &Tensor) -> Result<(), NnError> {
        let (dw, db) = self
            .core
            .backward_weights(saved(&self.x, "dense conv")?, dy)?;
        self.w.grad.iter_mut().zip(dw).for_each(|(g, d)| *g += d);
        if let Some(b) = &mut self.b {
            b.grad.iter_mut().zip(db).for_each(|(g, d)| *g += d);
        }
        Ok(())
    }
    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.w).chain(self.b.as_ref()).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.w)
            .chain(self.b.as_mut())
            .collect()
    }
    fn describe(&self) -> String {
        format!(
            "dense conv {}→{} k{:?} s{:?} p{:?} d{:?}",
            self.core.ci,
            self.core.co,
            self.core.g.k,
            self.core.g.stride,
            self.core.g.pad,
            self.core.g.dil
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Pair-wise factorised convolution (the paper's form)

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
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
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

// ---------------------------------------------------------------------------------------------
// Whole-kernel CP convolution (Lebedev et al. 2015)

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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ci: usize,
        co: usize,
        rank: usize,
        g: Geom,
        axes: Vec<usize>,
        v: Vec<f32>,
        a: Vec<Vec<f32>>,
        u: Vec<f32>,
        bias: bool,
    ) -> Self {
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
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
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
            let zin = &zs[slot];
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
            if want_weights {
                let mut dw = vec![0.0f32; r * k];
                for part in dw_parts.chunks(r * k) {
                    dw.iter_mut().zip(part).for_each(|(a, v)| *a += v);
                }
                grads_a.push(dw);
            }
            dz = Tensor::from_vec(&zin.shape, dx)?;
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

// ---------------------------------------------------------------------------------------------
// Transposed convolution (up-sampling)

/// Transposed dense convolution, `W: [Ci, Co, kt, ky, kx]` (PyTorch's layout). Its forward pass
/// is the input-gradient of a convolution from the (larger) output to the input:
/// `out = (in − 1)·s − 2p + d(k − 1) + 1 + output_padding` per axis.
pub struct ConvTranspose {
    pub ci: usize,
    pub co: usize,
    pub g: Geom,
    pub output_padding: [usize; 3],
    pub w: Param,
    pub b: Option<Param>,
    x: Option<Tensor>,
}

impl ConvTranspose {
    pub fn new(
        ci: usize,
        co: usize,
        g: Geom,
        output_padding: [usize; 3],
        w: Vec<f32>,
        bias: bool,
    ) -> Self {
        let k = g.k;
        ConvTranspose {
            ci,
            co,
            g,
            output_padding,
            w: Param::new("weight", &[ci, co, k[0], k[1], k[2]], w),
            b: bias.then(|| Param::new("bias", &[co], vec![0.0; co])),
            x: None,
        }
    }

    /// The saved input, its dims, input and output extents and sizes, and `Co·kvol`, after
    /// checking `dy`'s shape.
    #[allow(clippy::type_complexity)]
    fn grad_dims(
        &self,
        dy: &Tensor,
    ) -> Result<
        (
            &Tensor,
            [usize; 5],
            [usize; 3],
            [usize; 3],
            usize,
            usize,
            usize,
        ),
        NnError,
    > {
        let x = saved(&self.x, "transposed conv")?;
        let d = x.dims5("transposed conv")?;
        let ind = [d[2], d[3], d[4]];
        let o = self.out_dims(ind)?;
        check_same(
            dy,
            &[d[0], self.co, o[0], o[1], o[2]],
            "transposed conv output gradient",
        )?;
        Ok((
            x,
            d,
            ind,
            o,
            ind.iter().product(),
            o.iter().product(),
            self.co * self.g.kvol(),
        ))
    }

    /// Output extent for an input extent `ind` (checked: the adjoint convolution maps it back).
    pub fn out_dims(&self, ind: [usize; 3]) -> Result<[usize; 3], NnError> {
        transposed_out_dims(&self.g, self.output_padding, ind)
    }
}

/// Output extent of a transposed convolution of geometry `g` and `output_padding` over an input
/// extent `ind`, `(in − 1)·s − 2p + d(k − 1) + 1 + output_padding` per axis, checked so that the
/// adjoint convolution maps it back onto `ind` (the CPU and GPU layers share it).
pub fn transposed_out_dims(
    g: &Geom,
    output_padding: [usize; 3],
    ind: [usize; 3],
) -> Result<[usize; 3], NnError> {
    let mut o = [0; 3];
    for a in 0..3 {
        let full = ind[a].saturating_sub(1) * g.stride[a]
            + g.dil[a] * (g.k[a] - 1)
            + 1
            + output_padding[a];
        if full <= 2 * g.pad[a] || ind[a] == 0 {
            return Err(NnError::Shape {
                what: format!("transposed convolution along axis {a}"),
                expected: vec![2 * g.pad[a] + 1],
                found: vec![full],
            });
        }
        o[a] = full - 2 * g.pad[a];
    }
    if g.out_dims(o)? != ind {
        return Err(NnError::Model(format!(
            "transposed convolution: output_padding {output_padding:?} is not smaller than the stride {:?}",
            g.stride
        )));
    }
    Ok(o)
}

impl Layer for ConvTranspose {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        let d = check_channels(&x, self.ci, "transposed conv")?;
        let ind = [d[2], d[3], d[4]];
        let o = self.out_dims(ind)?;
        let (nin, nout, k) = (
            ind.iter().product::<usize>(),
            o.iter().product::<usize>(),
            self.co * self.g.kvol(),
        );
        let data = per_sample(d[0], self.co * nout, |b, y| {
            let mut col = Scratch::new(k * nin);
            gemm(
                1.0,
                view(&self.w.value, self.ci, k).t(),
                view(&x.data[b * self.ci * nin..], self.ci, nin),
                0.0,
                &mut col,
            );
            col2im(&col, self.co, o, &self.g, ind, y);
            if let Some(bias) = &self.b {
                for (c, row) in y.chunks_mut(nout).enumerate() {
                    row.iter_mut().for_each(|v| *v += bias.value[c]);
                }
            }
        });
        self.x = Some(x);
        Tensor::from_vec(&[d[0], self.co, o[0], o[1], o[2]], data)
    }
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        let (x, d, ind, o, nin, nout, k) = self.grad_dims(dy)?;
        let data = per_sample(d[0], self.ci * nin, |b, dx| {
            let mut col = Scratch::new(k * nin);
            im2col(
                &dy.data[b * self.co * nout..(b + 1) * self.co * nout],
                self.co,
                o,
                &self.g,
                ind,
                &mut col,
            );
            gemm(
                1.0,
                view(&self.w.value, self.ci, k),
                view(&col, k, nin),
                0.0,
                dx,
            );
        });
        Tensor::from_vec(&x.shape, data)
    }
    fn backward_weights(&mut self, dy: &Tensor) -> Result<(), NnError> {
        let (x, d, ind, o, nin, nout, k) = self.grad_dims(dy)?;
        let dw = sum_per_sample(d[0], self.ci * k, |b, dw| {
            let mut col = Scratch::new(k * nin);
            im2col(
                &dy.data[b * self.co * nout..(b + 1) * self.co * nout],
                self.co,
                o,
                &self.g,
                ind,
                &mut col,
            );
            gemm(
                1.0,
                view(&x.data[b * self.ci * nin..], self.ci, nin),
                view(&col, k, nin).t(),
                0.0,
                dw,
            );
        });
        self.w.grad.iter_mut().zip(dw).for_each(|(g, v)| *g += v);
        if let Some(bias) = &mut self.b {
            for b in 0..d[0] {
                for (c, row) in dy.data[b * self.co * nout..(b + 1) * self.co * nout]
                    .chunks(nout)
                    .enumerate()
                {
                    bias.grad[c] += sum8(row);
                }
            }
        }
        Ok(())
    }
    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.w).chain(self.b.as_ref()).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.w)
            .chain(self.b.as_mut())
            .collect()
    }
    fn describe(&self) -> String {
        format!(
            "transposed conv {}→{} k{:?} s{:?} p{:?}",
            self.ci, self.co, self.g.k, self.g.stride, self.g.pad
        )
    }
}
