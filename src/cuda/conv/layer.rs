//! A convolution layer on the GPU: dense, pair or CP, copied from its CPU layer.

use super::cp::CpParts;
use super::dense::{dense_backward, dense_forward};
use super::{add_bias_grad, bias_from, shape_err, Pass};
use crate::cuda::{CudaError, DevBuf, GemmOut, Gpu};
use crate::nn::conv::Geom;
use crate::nn::layers::{CpConv, DenseConv, PairConv};
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
    Cp(Box<CpParts>),
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
}

impl GpuConv {
    fn with_kind(
        l: &crate::nn::layers::ConvCore,
        kind: Kind,
        bias: Option<(DevBuf, DevBuf)>,
    ) -> Self {
        GpuConv {
            ci: l.ci,
            co: l.co,
            g: l.g,
            kind,
            bias,
            x: None,
            saved: vec![],
        }
    }

    /// A copy of a CPU `dense` layer.
    pub fn from_dense(gpu: &Gpu, l: &DenseConv) -> Result<Self, CudaError> {
        let kind = Kind::Dense {
            w: gpu.to_device(&l.w.value)?,
            dw: gpu.device_zeros(l.w.value.len())?,
        };
        Ok(Self::with_kind(
            &l.core,
            kind,
            bias_from(gpu, l.b.as_ref())?,
        ))
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
        let kind = Kind::Pair {
            rank: l.rank,
            axes: l.axes.clone(),
            f,
            df,
            w: gpu.device_zeros(n)?,
            dw: gpu.device_zeros(n)?,
        };
        Ok(Self::with_kind(
            &l.core,
            kind,
            bias_from(gpu, l.b.as_ref())?,
        ))
    }

    /// A copy of a CPU `cp` layer.
    pub fn from_cp(gpu: &Gpu, l: &CpConv) -> Result<Self, CudaError> {
        let a =
            l.a.iter()
                .map(|p| Ok((gpu.to_device(&p.value)?, gpu.device_zeros(p.value.len())?)))
                .collect::<Result<Vec<_>, CudaError>>()?;
        let kind = Kind::Cp(Box::new(CpParts {
            rank: l.rank,
            axes: l.axes.clone(),
            v: gpu.to_device(&l.v.value)?,
            dv: gpu.device_zeros(l.v.value.len())?,
            a,
            u: gpu.to_device(&l.u.value)?,
            du: gpu.device_zeros(l.u.value.len())?,
            fuse: std::env::var("WAVECP_CP_FUSED").map_or(true, |v| v != "0"),
            chain: None,
            ident: None,
        }));
        Ok(GpuConv {
            ci: l.ci,
            co: l.co,
            g: l.g,
            kind,
            bias: bias_from(gpu, l.b.as_ref())?,
            x: None,
            saved: vec![],
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
        let n = d[0] * self.co * od[2] * od[3] * od[4];
        self.saved.clear();
        let mut y = gpu.device_uninit(n)?;
        let mut pre = match act {
            Some(_) => Some(gpu.device_uninit(n)?),
            None => None,
        };
        let out = GemmOut {
            c: &mut y,
            bias: self.bias.as_ref().map(|(bv, _)| bv),
            act: act.zip(pre.as_mut()),
        };
        let (ci, co, g) = (self.ci, self.co, self.g);
        let p = Pass {
            ci,
            co,
            g: &g,
            d,
            od,
        };
        match &mut self.kind {
            Kind::Dense { w, .. } => dense_forward(gpu, &p, w, &x, out, &mut self.saved)?,
            Kind::Pair {
                rank, axes, f, w, ..
            } => {
                gpu.pair_rebuild_dev(f, axes, (co * ci, *rank, g.k), w)?;
                dense_forward(gpu, &p, w, &x, out, &mut self.saved)?;
            }
            Kind::Cp(cp) => cp.forward(gpu, &p, &x, out, &mut self.saved)?,
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
        let p = Pass {
            ci: self.ci,
            co: self.co,
            g: &self.g,
            d: *d,
            od,
        };
        let (b, nin, nout) = (p.batch(), p.nin(), p.nout());
        if dy.len() < b * self.co * nout {
            return Err(shape_err(
                "gpu conv output gradient",
                b * self.co * nout,
                dy.len(),
            ));
        }
        add_bias_grad(gpu, &mut self.bias, dy, b, self.co, nout)?;
        let mut dx = gpu.device_uninit(b * self.ci * nin)?;
        let col = self.saved.first().map(|c| &c.0);
        match &mut self.kind {
            Kind::Dense { w, dw } => {
                dense_backward(gpu, &p, (x, col), dy, w, (dw, 1.0), &mut dx)?;
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
                dense_backward(gpu, &p, (x, col), dy, w, (dw, 0.0), &mut dx)?;
                let shape = (p.co * p.ci, *rank, p.g.k);
                gpu.pair_factor_grads_dev(f, axes, shape, dw, df)?;
            }
            Kind::Cp(cp) => cp.backward(gpu, &p, x, dy, &self.saved, &mut dx)?,
        }
        Ok(dx)
    }

    /// CP layers: whether the depthwise passes run as one fused kernel where the geometry
    /// allows (default: yes, unless `WAVECP_CP_FUSED=0`); the unfused path runs one kernel per
    /// pass. Takes effect at the next forward pass.
    pub fn set_fused(&mut self, on: bool) {
        if let Kind::Cp(cp) = &mut self.kind {
            cp.fuse = on;
        }
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
            Kind::Cp(cp) => {
                let mut out = vec![&mut cp.dv];
                out.extend(cp.a.iter_mut().map(|(_, g)| g));
                out.push(&mut cp.du);
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
            Kind::Cp(cp) => {
                let mut v = vec![dl(&cp.dv)?];
                for (_, g) in &cp.a {
                    v.push(dl(g)?);
                }
                v.push(dl(&cp.du)?);
                v
            }
        };
        if let Some((_, db)) = &self.bias {
            out.push(dl(db)?);
        }
        Ok(out)
    }

    /// `(value, gradient)` of each parameter, in the CPU layer's `params()` order.
    pub fn params_mut(&mut self) -> Vec<(&mut DevBuf, &DevBuf)> {
        let mut v: Vec<(&mut DevBuf, &DevBuf)> = match &mut self.kind {
            Kind::Dense { w, dw } => vec![(w, &*dw)],
            Kind::Pair { f, df, .. } => f.iter_mut().zip(df.iter()).collect(),
            Kind::Cp(cp) => {
                let mut out = vec![(&mut cp.v, &cp.dv)];
                out.extend(cp.a.iter_mut().map(|(val, g)| (val, &*g)));
                out.push((&mut cp.u, &cp.du));
                out
            }
        };
        if let Some((b, db)) = &mut self.bias {
            v.push((b, &*db));
        }
        v
    }

    /// Dims of the input of the last forward pass.
    pub fn input_dims(&self) -> Option<[usize; 5]> {
        self.x.as_ref().map(|(_, d)| *d)
    }
}
