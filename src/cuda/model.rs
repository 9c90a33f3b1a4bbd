//! The network on the GPU: the graph of a CPU [`Model`] with every layer copied to the device,
//! forward and backward passes with the tensors kept there, and the clipped AdamW step. The
//! graph walk mirrors `Model::forward`/`Model::backward` node for node (skips, concat splits,
//! pending skip gradients), so both backends train the same network.

use super::{AdamStep, CudaError, DevBuf, Gpu, GpuConv, GpuConvT};
use crate::nn::layers::{ConvTranspose, CpConv, DenseConv, PairConv};
use crate::nn::model::{Model, Node};
use crate::nn::ops::{ActKind, Activation, Pool, PoolKind, Upsample};
use crate::nn::train::AdamConfig;
use cudarc::driver::CudaSlice;
use std::collections::HashMap;

enum GNode {
    Conv(Box<GpuConv>),
    ConvT(Box<GpuConvT>),
    Act {
        kind: ActKind,
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
    Save(String),
    Concat(String),
    Add(String),
}

/// A model on the GPU.
pub struct GpuModel {
    nodes: Vec<GNode>,
    saved: HashMap<String, (DevBuf, [usize; 5])>,
    /// Channels of the main part at each concat of the last forward pass.
    splits: Vec<usize>,
    /// AdamW moments per parameter array, made at the first step.
    moments: Vec<(DevBuf, DevBuf)>,
    step: usize,
    /// `[norm, clipping factor]` of the last step, on the device (`None`: no clipping).
    clip: Option<CudaSlice<f64>>,
}

/// AdamW step count, first moments and second moments, one array per parameter.
pub type AdamMoments = (usize, Vec<Vec<f32>>, Vec<Vec<f32>>);

fn err(what: String) -> CudaError {
    CudaError::Invalid(what)
}

fn vol(d: &[usize; 5]) -> usize {
    d.iter().product()
}

impl GpuModel {
    /// Copies `m` (architecture and current weights) to the device.
    pub fn from_model(gpu: &Gpu, m: &Model) -> Result<Self, CudaError> {
        let mut nodes = vec![];
        for node in m.nodes() {
            nodes.push(match node {
                Node::Layer(l) => {
                    let a = l.as_any();
                    if let Some(c) = a.downcast_ref::<DenseConv>() {
                        GNode::Conv(Box::new(GpuConv::from_dense(gpu, c)?))
                    } else if let Some(c) = a.downcast_ref::<PairConv>() {
                        GNode::Conv(Box::new(GpuConv::from_pair(gpu, c)?))
                    } else if let Some(c) = a.downcast_ref::<CpConv>() {
                        GNode::Conv(Box::new(GpuConv::from_cp(gpu, c)?))
                    } else if let Some(c) = a.downcast_ref::<ConvTranspose>() {
                        GNode::ConvT(Box::new(GpuConvT::from_cpu(gpu, c)?))
                    } else if let Some(c) = a.downcast_ref::<Activation>() {
                        GNode::Act {
                            kind: c.kind,
                            x: None,
                            n: 0,
                        }
                    } else if let Some(c) = a.downcast_ref::<Pool>() {
                        GNode::Pool {
                            kind: c.kind,
                            k: c.k,
                            argmax: None,
                            d: [0; 5],
                        }
                    } else if let Some(c) = a.downcast_ref::<Upsample>() {
                        GNode::Up {
                            scale: c.scale,
                            d: [0; 5],
                        }
                    } else {
                        return Err(CudaError::Unsupported(format!("layer `{}`", l.describe())));
                    }
                }
                Node::Save(n) => GNode::Save(n.clone()),
                Node::Concat(n) => GNode::Concat(n.clone()),
                Node::Add(n) => GNode::Add(n.clone()),
            });
        }
        Ok(GpuModel {
            nodes,
            saved: HashMap::new(),
            splits: vec![],
            moments: vec![],
            step: 0,
            clip: None,
        })
    }

    /// `x: [B, C, T, Y, X]` on the device → the output and its dims.
    pub fn forward(
        &mut self,
        gpu: &Gpu,
        x: DevBuf,
        d: [usize; 5],
    ) -> Result<(DevBuf, [usize; 5]), CudaError> {
        self.saved.clear();
        self.splits.clear();
        let mut cur = (x, d);
        // A convolution followed by an activation runs the activation in its GEMM epilogue;
        // the pre-activation values wait here for the activation node, which keeps them.
        let mut fused_pre: Option<DevBuf> = None;
        for i in 0..self.nodes.len() {
            let next_act = match self.nodes.get(i + 1) {
                Some(GNode::Act { kind, .. }) => Some(*kind),
                _ => None,
            };
            cur = match &mut self.nodes[i] {
                GNode::Conv(c) => {
                    let (y, pre, od) = c.forward_act(gpu, cur.0, cur.1, next_act)?;
                    fused_pre = pre;
                    (y, od)
                }
                GNode::ConvT(c) => c.forward(gpu, cur.0, cur.1)?,
                GNode::Act { kind, x, n } => {
                    let len = vol(&cur.1);
                    if let Some(pre) = fused_pre.take() {
                        *x = Some(pre);
                        *n = len;
                        cur
                    } else {
                        let mut y = gpu.device_uninit(len)?;
                        gpu.act_forward_dev(*kind, &cur.0, &mut y, len)?;
                        *x = Some(cur.0);
                        *n = len;
                        (y, cur.1)
                    }
                }
                GNode::Pool { kind, k, argmax, d } => {
                    let i = cur.1;
                    let o = [i[0], i[1], i[2] / k[0], i[3] / k[1], i[4] / k[2]];
                    if o[2..].contains(&0) {
                        return Err(err(format!(
                            "pooling window {k:?} larger than {:?}",
                            &i[2..]
                        )));
                    }
                    let mut y = gpu.device_uninit(vol(&o))?;
                    // Every output's argmax is written by the pooling kernel.
                    let mut am = gpu.uninit::<u32>(vol(&o))?;
                    gpu.pool_forward_dev(
                        *kind,
                        &cur.0,
                        i[0] * i[1],
                        [i[2], i[3], i[4]],
                        *k,
                        &mut y,
                        &mut am,
                    )?;
                    *argmax = Some(am);
                    *d = i;
                    (y, o)
                }
                GNode::Up { scale, d } => {
                    let i = cur.1;
                    let o = [
                        i[0],
                        i[1],
                        i[2] * scale[0],
                        i[3] * scale[1],
                        i[4] * scale[2],
                    ];
                    let mut y = gpu.device_uninit(vol(&o))?;
                    gpu.upsample_dev(
                        true,
                        &cur.0,
                        i[0] * i[1],
                        [i[2], i[3], i[4]],
                        *scale,
                        &mut y,
                    )?;
                    *d = i;
                    (y, o)
                }
                GNode::Save(name) => {
                    let copy = gpu.stream.clone_dtod(&cur.0).map_err(super::driver_err)?;
                    self.saved.insert(name.clone(), (copy, cur.1));
                    cur
                }
                GNode::Concat(name) => {
                    let (s, sd) = self
                        .saved
                        .get(name)
                        .ok_or_else(|| err(format!("`{name}` not saved")))?;
                    let c = cur.1;
                    if sd[0] != c[0] || sd[2..] != c[2..] {
                        return Err(err(format!("concat of `{name}`: {sd:?} onto {c:?}")));
                    }
                    let v = c[2] * c[3] * c[4];
                    let o = [c[0], c[1] + sd[1], c[2], c[3], c[4]];
                    let mut y = gpu.device_uninit(vol(&o))?;
                    gpu.concat_dev(&cur.0, s, c[0], c[1] * v, sd[1] * v, &mut y)?;
                    self.splits.push(c[1]);
                    (y, o)
                }
                GNode::Add(name) => {
                    let (s, sd) = self
                        .saved
                        .get(name)
                        .ok_or_else(|| err(format!("`{name}` not saved")))?;
                    if *sd != cur.1 {
                        return Err(err(format!("add of `{name}`: {sd:?} to {:?}", cur.1)));
                    }
                    let mut y = cur.0;
                    gpu.axpy_dev(&mut y, s, 1.0, vol(&cur.1))?;
                    (y, cur.1)
                }
            };
        }
        Ok(cur)
    }

    /// Backpropagates `dy` (dims `d`) of the last forward pass: adds every weight gradient and
    /// returns `dx`.
    pub fn backward(&mut self, gpu: &Gpu, dy: DevBuf, d: [usize; 5]) -> Result<DevBuf, CudaError> {
        let mut cur = (dy, d);
        let mut pending: HashMap<String, DevBuf> = HashMap::new();
        let mut splits = self.splits.clone();
        for node in self.nodes.iter_mut().rev() {
            cur = match node {
                GNode::Conv(c) => {
                    let dx = c.backward(gpu, &cur.0)?;
                    let di = c
                        .input_dims()
                        .ok_or_else(|| CudaError::CallOrder("conv".into()))?;
                    (dx, di)
                }
                GNode::ConvT(c) => {
                    let dx = c.backward(gpu, &cur.0)?;
                    let di = c
                        .input_dims()
                        .ok_or_else(|| CudaError::CallOrder("conv_transpose".into()))?;
                    (dx, di)
                }
                GNode::Act { kind, x, n } => {
                    let x = x
                        .as_ref()
                        .ok_or_else(|| CudaError::CallOrder("activation".into()))?;
                    let mut dx = gpu.device_uninit(*n)?;
                    gpu.act_backward_dev(*kind, x, &cur.0, &mut dx, *n)?;
                    (dx, cur.1)
                }
                GNode::Pool { kind, k, argmax, d } => {
                    let am = argmax
                        .as_ref()
                        .ok_or_else(|| CudaError::CallOrder("pool".into()))?;
                    let mut dx = gpu.device_uninit(vol(d))?;
                    gpu.pool_backward_dev(
                        *kind,
                        &cur.0,
                        am,
                        d[0] * d[1],
                        [d[2], d[3], d[4]],
                        *k,
                        &mut dx,
                    )?;
                    (dx, *d)
                }
                GNode::Up { scale, d } => {
                    let mut dx = gpu.device_uninit(vol(d))?;
                    gpu.upsample_dev(
                        false,
                        &cur.0,
                        d[0] * d[1],
                        [d[2], d[3], d[4]],
                        *scale,
                        &mut dx,
                    )?;
                    (dx, *d)
                }
                GNode::Concat(name) => {
                    let c1 = splits
                        .pop()
                        .ok_or_else(|| CudaError::CallOrder("concat split missing".into()))?;
                    let c = cur.1;
                    let v = c[2] * c[3] * c[4];
                    let (mut main, mut skip) = (
                        gpu.device_uninit(c[0] * c1 * v)?,
                        gpu.device_uninit(c[0] * (c[1] - c1) * v)?,
                    );
                    gpu.split_dev(&cur.0, c[0], c1 * v, (c[1] - c1) * v, &mut main, &mut skip)?;
                    accumulate(gpu, &mut pending, name, skip, c[0] * (c[1] - c1) * v)?;
                    (main, [c[0], c1, c[2], c[3], c[4]])
                }
                GNode::Add(name) => {
                    let copy = gpu.stream.clone_dtod(&cur.0).map_err(super::driver_err)?;
                    accumulate(gpu, &mut pending, name, copy, vol(&cur.1))?;
                    cur
                }
                GNode::Save(name) => {
                    let mut g = cur.0;
                    if let Some(p) = pending.remove(name.as_str()) {
                        gpu.axpy_dev(&mut g, &p, 1.0, vol(&cur.1))?;
                    }
                    (g, cur.1)
                }
            };
        }
        Ok(cur.0)
    }

    /// `(value, gradient)` of every parameter array, in the order of `Model::params()`.
    pub fn params_mut(&mut self) -> Vec<(&mut DevBuf, &DevBuf)> {
        let mut v = vec![];
        for node in &mut self.nodes {
            match node {
                GNode::Conv(c) => v.extend(c.params_mut()),
                GNode::ConvT(c) => v.extend(c.params_mut()),
                _ => {}
            }
        }
        v
    }

    /// Parameter values, in the order of `Model::params()` (to save or compare the model).
    pub fn param_values(&mut self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, CudaError> {
        self.params_mut()
            .into_iter()
            .map(|(w, _)| gpu.to_host(w, w.len()))
            .collect()
    }

    /// Zeroes every gradient of the model (one launch).
    pub fn zero_grad(&mut self, gpu: &Gpu) -> Result<(), CudaError> {
        let mut grads = vec![];
        for node in &mut self.nodes {
            match node {
                GNode::Conv(c) => grads.extend(c.grads_mut()),
                GNode::ConvT(c) => grads.extend(c.grads_mut()),
                _ => {}
            }
        }
        gpu.zero_all_dev(&mut grads)
    }

    /// One AdamW step with `cfg` (warm-up, schedule, global-norm clipping) as
    /// `Adam::update` does it. Nothing waits for the device: the gradient norm and the
    /// clipping factor are formed there ([`Gpu::clip_dev`]); [`GpuModel::grad_norm`] reads the
    /// norm when it is wanted.
    pub fn adam_step(&mut self, gpu: &Gpu, cfg: &AdamConfig) -> Result<(), CudaError> {
        let mut moments = std::mem::take(&mut self.moments);
        self.step += 1;
        let t = self.step;
        let params = self.params_mut();
        if moments.len() != params.len() {
            moments = params
                .iter()
                .map(|(w, _)| Ok((gpu.device_zeros(w.len())?, gpu.device_zeros(w.len())?)))
                .collect::<Result<Vec<_>, CudaError>>()?;
        }
        let grads: Vec<&DevBuf> = params.iter().map(|(_, g)| *g).collect();
        // The norm is needed for clipping only; without clipping the factor is 1.
        let clip = if cfg.clip_norm > 0.0 {
            Some(gpu.clip_dev(&grads, cfg.clip_norm)?)
        } else {
            None
        };
        // A norm of 0 never clips: the factor comes from `clip` on the device.
        let sc = cfg.step_scalars(t, 0.0);
        let step = AdamStep {
            scale: sc.scale,
            lr: sc.lr,
            b1: cfg.beta1,
            b2: cfg.beta2,
            c1: sc.c1,
            c2: sc.c2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        };
        let mut all: Vec<_> = params
            .into_iter()
            .zip(moments.iter_mut())
            .map(|((w, g), (m, v))| (w, g, m, v))
            .collect();
        gpu.adamw_all_dev(&mut all, &step, clip.as_ref())?;
        self.moments = moments;
        self.clip = clip;
        Ok(())
    }

    /// The global gradient norm (before clipping) of the last [`GpuModel::adam_step`], when it
    /// clipped (waits for the device).
    pub fn grad_norm(&self, gpu: &Gpu) -> Result<Option<f64>, CudaError> {
        match &self.clip {
            Some(c) => Ok(Some(gpu.to_host_f64(c)?[0])),
            None => Ok(None),
        }
    }
}

fn accumulate(
    gpu: &Gpu,
    pending: &mut HashMap<String, DevBuf>,
    name: &str,
    g: DevBuf,
    n: usize,
) -> Result<(), CudaError> {
    match pending.get_mut(name) {
        Some(acc) => gpu.axpy_dev(acc, &g, 1.0, n),
        None => {
            pending.insert(name.to_string(), g);
            Ok(())
        }
    }
}

impl GpuModel {
    /// Writes the device weights into `model` (same architecture, same parameter order).
    pub fn copy_params_to(&mut self, gpu: &Gpu, model: &mut Model) -> Result<(), CudaError> {
        let values = self.param_values(gpu)?;
        let mut ps = model.params_mut();
        if ps.len() != values.len() {
            return Err(err(format!(
                "model has {} parameter arrays, the GPU copy {}",
                ps.len(),
                values.len()
            )));
        }
        for (p, v) in ps.iter_mut().zip(values) {
            if p.value.len() != v.len() {
                return Err(err(format!("parameter `{}`: length differs", p.name)));
            }
            p.value = v;
        }
        Ok(())
    }

    /// The AdamW state: step count and first and second moments (empty before the first step).
    pub fn adam_state(&self, gpu: &Gpu) -> Result<AdamMoments, CudaError> {
        let (mut m, mut v) = (vec![], vec![]);
        for (a, b) in &self.moments {
            m.push(gpu.to_host(a, a.len())?);
            v.push(gpu.to_host(b, b.len())?);
        }
        Ok((self.step, m, v))
    }

    /// Sets the AdamW state (to resume a run); empty moments start from zero.
    pub fn set_adam_state(
        &mut self,
        gpu: &Gpu,
        step: usize,
        m: &[Vec<f32>],
        v: &[Vec<f32>],
    ) -> Result<(), CudaError> {
        self.step = step;
        self.moments = m
            .iter()
            .zip(v)
            .map(|(a, b)| Ok((gpu.to_device(a)?, gpu.to_device(b)?)))
            .collect::<Result<Vec<_>, CudaError>>()?;
        Ok(())
    }
}
