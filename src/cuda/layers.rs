//! The GPU's layers: one variant per CPU layer kind, built from it by an exhaustive match (no
//! down-casts), and the GPU backend of the graph walker ([`crate::nn::graph`]). The
//! convolutions live in `conv/`; the parameter-free layers are small enough to live here.

use super::{CudaError, DevBuf, Gpu, GpuConv, GpuConvT, PoolShape};
use crate::nn::graph::{Exec, Node};
use crate::nn::layers::AnyLayer;
use crate::nn::ops::{ActKind, PoolKind};
use cudarc::driver::CudaSlice;

/// A tensor on the device and its dims `[B, C, T, Y, X]`.
pub type DevTensor = (DevBuf, [usize; 5]);

pub enum GpuLayer {
    Conv(Box<GpuConv>),
    ConvT(Box<GpuConvT>),
    Act {
        kind: ActKind,
        /// The input of the last forward pass (the pre-activation values).
        x: Option<DevBuf>,
        n: usize,
    },
    Pool {
        kind: PoolKind,
        k: [usize; 3],
        argmax: Option<CudaSlice<u32>>,
        d: [usize; 5],
    },
    Up {
        scale: [usize; 3],
        d: [usize; 5],
    },
}

fn vol(d: &[usize; 5]) -> usize {
    d.iter().product()
}

impl GpuLayer {
    /// The device copy of a CPU layer (architecture and current weights).
    pub fn from_cpu(gpu: &Gpu, l: &AnyLayer) -> Result<Self, CudaError> {
        Ok(match l {
            AnyLayer::Dense(c) => GpuLayer::Conv(Box::new(GpuConv::from_dense(gpu, c)?)),
            AnyLayer::Pair(c) => GpuLayer::Conv(Box::new(GpuConv::from_pair(gpu, c)?)),
            AnyLayer::Cp(c) => GpuLayer::Conv(Box::new(GpuConv::from_cp(gpu, c)?)),
            AnyLayer::ConvTranspose(c) => GpuLayer::ConvT(Box::new(GpuConvT::from_cpu(gpu, c)?)),
            AnyLayer::Activation(a) => GpuLayer::Act {
                kind: a.kind,
                x: None,
                n: 0,
            },
            AnyLayer::Pool(p) => GpuLayer::Pool {
                kind: p.kind,
                k: p.k,
                argmax: None,
                d: [0; 5],
            },
            AnyLayer::Upsample(u) => GpuLayer::Up {
                scale: u.scale,
                d: [0; 5],
            },
        })
    }

    /// `(value, gradient)` of every parameter array, in the CPU layer's order.
    pub fn params_mut(&mut self) -> Vec<(&mut DevBuf, &DevBuf)> {
        match self {
            GpuLayer::Conv(c) => c.params_mut(),
            GpuLayer::ConvT(c) => c.params_mut(),
            _ => vec![],
        }
    }

    pub fn grads_mut(&mut self) -> Vec<&mut DevBuf> {
        match self {
            GpuLayer::Conv(c) => c.grads_mut(),
            GpuLayer::ConvT(c) => c.grads_mut(),
            _ => vec![],
        }
    }
}

/// The GPU backend of the walker for one pass.
pub struct GpuExec<'g> {
    pub gpu: &'g Gpu,
    /// A convolution followed by an activation runs the activation in its GEMM epilogue; the
    /// pre-activation values wait here for the activation node, which keeps them.
    fused_pre: Option<DevBuf>,
}

impl<'g> GpuExec<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        GpuExec {
            gpu,
            fused_pre: None,
        }
    }
}

fn call_order(what: &str) -> CudaError {
    CudaError::CallOrder(format!("{what}: backward before forward"))
}

impl Exec for GpuExec<'_> {
    type Layer = GpuLayer;
    type Value = DevTensor;
    type Error = CudaError;
    type Hint = Option<ActKind>;

    fn hint(next: Option<&Node<GpuLayer>>) -> Option<ActKind> {
        match next {
            Some(Node::Layer(GpuLayer::Act { kind, .. })) => Some(*kind),
            _ => None,
        }
    }

    fn forward(
        &mut self,
        layer: &mut GpuLayer,
        (x, i): DevTensor,
        next: Option<ActKind>,
    ) -> Result<DevTensor, CudaError> {
        let gpu = self.gpu;
        Ok(match layer {
            GpuLayer::Conv(c) => {
                let (y, pre, od) = c.forward_act(gpu, x, i, next)?;
                self.fused_pre = pre;
                (y, od)
            }
            GpuLayer::ConvT(c) => c.forward(gpu, x, i)?,
            GpuLayer::Act { kind, x: kept, n } => {
                let len = vol(&i);
                *n = len;
                if let Some(pre) = self.fused_pre.take() {
                    *kept = Some(pre);
                    (x, i)
                } else {
                    let mut y = gpu.device_uninit(len)?;
                    gpu.act_forward_dev(*kind, &x, &mut y, len)?;
                    *kept = Some(x);
                    (y, i)
                }
            }
            GpuLayer::Pool { kind, k, argmax, d } => {
                let o = [i[0], i[1], i[2] / k[0], i[3] / k[1], i[4] / k[2]];
                if o[2..].contains(&0) {
                    return Err(CudaError::Invalid(format!(
                        "pooling window {k:?} larger than {:?}",
                        &i[2..]
                    )));
                }
                let mut y = gpu.device_uninit(vol(&o))?;
                // Every output's argmax is written by the pooling kernel.
                let mut am = gpu.uninit::<u32>(vol(&o))?;
                let extent = [i[2], i[3], i[4]];
                let shape = PoolShape {
                    kind: *kind,
                    n: i[0] * i[1],
                    ind: extent,
                    k: *k,
                };
                gpu.pool_forward_dev(&x, &shape, &mut y, &mut am)?;
                *argmax = Some(am);
                *d = i;
                (y, o)
            }
            GpuLayer::Up { scale, d } => {
                let o = [
                    i[0],
                    i[1],
                    i[2] * scale[0],
                    i[3] * scale[1],
                    i[4] * scale[2],
                ];
                let mut y = gpu.device_uninit(vol(&o))?;
                gpu.upsample_dev(true, &x, i[0] * i[1], [i[2], i[3], i[4]], *scale, &mut y)?;
                *d = i;
                (y, o)
            }
        })
    }

    fn backward(
        &mut self,
        layer: &mut GpuLayer,
        (dy, o): DevTensor,
    ) -> Result<DevTensor, CudaError> {
        let gpu = self.gpu;
        Ok(match layer {
            GpuLayer::Conv(c) => {
                let dx = c.backward(gpu, &dy)?;
                (dx, c.input_dims().ok_or_else(|| call_order("conv"))?)
            }
            GpuLayer::ConvT(c) => {
                let dx = c.backward(gpu, &dy)?;
                (
                    dx,
                    c.input_dims().ok_or_else(|| call_order("conv_transpose"))?,
                )
            }
            GpuLayer::Act { kind, x, n } => {
                let x = x.as_ref().ok_or_else(|| call_order("activation"))?;
                let mut dx = gpu.device_uninit(*n)?;
                gpu.act_backward_dev(*kind, x, &dy, &mut dx, *n)?;
                (dx, o)
            }
            GpuLayer::Pool { kind, k, argmax, d } => {
                let am = argmax.as_ref().ok_or_else(|| call_order("pool"))?;
                let mut dx = gpu.device_uninit(vol(d))?;
                let extent = [d[2], d[3], d[4]];
                let shape = PoolShape {
                    kind: *kind,
                    n: d[0] * d[1],
                    ind: extent,
                    k: *k,
                };
                gpu.pool_backward_dev(&dy, am, &shape, &mut dx)?;
                (dx, *d)
            }
            GpuLayer::Up { scale, d } => {
                let mut dx = gpu.device_uninit(vol(d))?;
                gpu.upsample_dev(false, &dy, d[0] * d[1], [d[2], d[3], d[4]], *scale, &mut dx)?;
                (dx, *d)
            }
        })
    }

    fn channels(v: &DevTensor) -> usize {
        v.1[1]
    }

    fn duplicate(&mut self, v: &DevTensor) -> Result<DevTensor, CudaError> {
        let copy = self
            .gpu
            .stream
            .clone_dtod(&v.0)
            .map_err(super::driver_err)?;
        Ok((copy, v.1))
    }

    fn concat(
        &mut self,
        (x, c): DevTensor,
        (s, sd): &DevTensor,
        name: &str,
    ) -> Result<DevTensor, CudaError> {
        if sd[0] != c[0] || sd[2..] != c[2..] {
            return Err(CudaError::Invalid(format!(
                "concat of `{name}`: {sd:?} onto {c:?}"
            )));
        }
        let v = c[2] * c[3] * c[4];
        let o = [c[0], c[1] + sd[1], c[2], c[3], c[4]];
        let mut y = self.gpu.device_uninit(vol(&o))?;
        self.gpu
            .concat_dev(&x, s, c[0], c[1] * v, sd[1] * v, &mut y)?;
        Ok((y, o))
    }

    fn split(&mut self, (x, c): DevTensor, c1: usize) -> Result<(DevTensor, DevTensor), CudaError> {
        if c1 > c[1] {
            return Err(CudaError::Invalid(format!(
                "split of {c:?} after channel {c1}"
            )));
        }
        let v = c[2] * c[3] * c[4];
        let (mut main, mut skip) = (
            self.gpu.device_uninit(c[0] * c1 * v)?,
            self.gpu.device_uninit(c[0] * (c[1] - c1) * v)?,
        );
        self.gpu
            .split_dev(&x, c[0], c1 * v, (c[1] - c1) * v, &mut main, &mut skip)?;
        Ok((
            (main, [c[0], c1, c[2], c[3], c[4]]),
            (skip, [c[0], c[1] - c1, c[2], c[3], c[4]]),
        ))
    }

    fn add(
        &mut self,
        (mut y, d): DevTensor,
        (s, sd): &DevTensor,
        what: &str,
    ) -> Result<DevTensor, CudaError> {
        if *sd != d {
            return Err(CudaError::Invalid(format!("{what}: {sd:?} to {d:?}")));
        }
        self.gpu.axpy_dev(&mut y, s, 1.0, vol(&d))?;
        Ok((y, d))
    }
}
