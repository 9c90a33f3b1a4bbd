//! The network on the GPU: the graph of a CPU [`Model`] with every layer copied to the device,
//! forward and backward passes with the tensors kept there (walked by the same
//! [`Graph`] as the CPU model), and the clipped AdamW step.

use super::layers::{DevTensor, GpuExec, GpuLayer};
use super::{AdamStep, CudaError, DevBuf, Gpu};
use crate::nn::graph::{Graph, Node};
use crate::nn::model::Model;
use crate::nn::train::AdamConfig;
use cudarc::driver::CudaSlice;

/// A model on the GPU.
pub struct GpuModel {
    graph: Graph<GpuLayer, DevTensor>,
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

impl GpuModel {
    /// Copies `m` (architecture and current weights) to the device.
    pub fn from_model(gpu: &Gpu, m: &Model) -> Result<Self, CudaError> {
        let nodes = m
            .nodes()
            .iter()
            .map(|node| {
                Ok(match node {
                    Node::Layer(l) => Node::Layer(GpuLayer::from_cpu(gpu, l)?),
                    Node::Save(n) => Node::Save(n.clone()),
                    Node::Concat(n) => Node::Concat(n.clone()),
                    Node::Add(n) => Node::Add(n.clone()),
                })
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        Ok(GpuModel {
            graph: Graph::new(nodes),
            moments: vec![],
            step: 0,
            clip: None,
        })
    }

    /// `x: [B, C, T, Y, X]` on the device → the output and its dims.
    pub fn forward(&mut self, gpu: &Gpu, x: DevBuf, d: [usize; 5]) -> Result<DevTensor, CudaError> {
        self.graph.forward(&mut GpuExec::new(gpu), (x, d))
    }

    /// Backpropagates `dy` (dims `d`) of the last forward pass: adds every weight gradient and
    /// returns `dx`.
    pub fn backward(&mut self, gpu: &Gpu, dy: DevBuf, d: [usize; 5]) -> Result<DevBuf, CudaError> {
        Ok(self.graph.backward(&mut GpuExec::new(gpu), (dy, d))?.0)
    }

    /// `(value, gradient)` of every parameter array, in the order of `Model::params()`.
    pub fn params_mut(&mut self) -> Vec<(&mut DevBuf, &DevBuf)> {
        self.graph
            .layers_mut()
            .flat_map(|l| l.params_mut())
            .collect()
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
        let mut grads: Vec<_> = self
            .graph
            .layers_mut()
            .flat_map(|l| l.grads_mut())
            .collect();
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
