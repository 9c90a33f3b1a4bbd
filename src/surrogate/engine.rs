//! Where a training run computes: the CPU path is `Model` itself; with `--device cuda` (or
//! `auto` finding a GPU) the batches go through [`GpuTrainer`], which keeps the network and its
//! optimiser state on the device and hands weights and moments back for the model files.

use super::SurrogateError;
use crate::nn::train::Adam;
use crate::nn::{Device, Model, Tensor};

/// The GPU that `device` asks for, if any.
#[cfg(feature = "cuda")]
pub(crate) fn open_device(device: Device) -> Result<Option<crate::cuda::Gpu>, SurrogateError> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda => crate::cuda::Gpu::new(0)
            .map(Some)
            .map_err(|e| SurrogateError::Cuda(format!("--device cuda: {e}"))),
        Device::Auto => match crate::cuda::Gpu::new(0) {
            Ok(g) => Ok(Some(g)),
            Err(e) => {
                tracing::info!("--device auto: CUDA unavailable ({e}); running on the CPU");
                Ok(None)
            }
        },
    }
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn open_device(
    device: Device,
) -> Result<Option<std::convert::Infallible>, SurrogateError> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda => Err(SurrogateError::Cuda(
            "--device cuda: this wavecp was built without the `cuda` feature".into(),
        )),
        Device::Auto => {
            tracing::info!("--device auto: built without the `cuda` feature; running on the CPU");
            Ok(None)
        }
    }
}

#[cfg(feature = "cuda")]
pub use gpu::GpuTrainer;

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::cuda::model::GpuModel;
    use crate::cuda::{DevBuf, Gpu};
    use crate::nn::train::LossKind;

    fn dims5(t: &Tensor) -> Result<[usize; 5], SurrogateError> {
        t.shape.as_slice().try_into().map_err(|_| {
            SurrogateError::Mismatch(format!("expected a 5-D batch, got {:?}", t.shape))
        })
    }

    /// Training on the GPU (the job's loss, AdamW as in the job).
    pub struct GpuTrainer {
        gpu: Gpu,
        model: GpuModel,
        kind: LossKind,
        /// The loss gradient of the last batch and the output dims, for the backward pass.
        grad: Option<(DevBuf, [usize; 5])>,
    }

    impl GpuTrainer {
        /// Copies `model` to `gpu`; `kind` is the training loss.
        pub fn new(gpu: Gpu, model: &Model, kind: LossKind) -> Result<Self, SurrogateError> {
            let m = GpuModel::from_model(&gpu, model)?;
            Ok(GpuTrainer {
                gpu,
                model: m,
                kind,
                grad: None,
            })
        }

        /// Continues from `adam`'s step count and moments (empty: a fresh run).
        pub fn set_adam(&mut self, adam: &Adam) -> Result<(), SurrogateError> {
            self.model
                .set_adam_state(&self.gpu, adam.step, &adam.m, &adam.v)?;
            Ok(())
        }

        pub fn name(&self) -> String {
            self.gpu.info.name.clone()
        }

        fn loss(
            &mut self,
            x: Tensor,
            y: &Tensor,
        ) -> Result<(f64, DevBuf, [usize; 5]), SurrogateError> {
            let d = dims5(&x)?;
            let (pred, od) = self
                .model
                .forward(&self.gpu, self.gpu.to_device(&x.data)?, d)?;
            if od.to_vec() != y.shape {
                return Err(SurrogateError::Mismatch(format!(
                    "the model maps a batch to {od:?}, the targets are {:?}",
                    y.shape
                )));
            }
            let yt = self.gpu.to_device(&y.data)?;
            let mut g = self.gpu.device_zeros(y.len())?;
            let l = match self.kind {
                LossKind::Mse => self.gpu.mse_dev(&pred, &yt, y.len(), &mut g)?,
                LossKind::RelL2 => {
                    let b = od[0].max(1);
                    self.gpu.rel_l2_dev(&pred, &yt, b, y.len() / b, &mut g)?
                }
            };
            Ok((l, g, od))
        }

        /// Forward pass and MSE of one batch; keeps the gradient for [`GpuTrainer::update`].
        pub fn batch_loss(&mut self, x: Tensor, y: &Tensor) -> Result<f64, SurrogateError> {
            let (l, g, od) = self.loss(x, y)?;
            self.grad = Some((g, od));
            Ok(l)
        }

        /// Backward pass of the last batch and one AdamW step (`adam.step` follows).
        pub fn update(&mut self, adam: &mut Adam) -> Result<(), SurrogateError> {
            let (g, od) = self
                .grad
                .take()
                .ok_or_else(|| SurrogateError::Mismatch("update before a batch".into()))?;
            self.model.zero_grad(&self.gpu)?;
            self.model.backward(&self.gpu, g, od)?;
            self.model.adam_step(&self.gpu, &adam.cfg)?;
            adam.step += 1;
            Ok(())
        }

        /// The model's output for one batch, brought back to the host.
        pub fn predict(&mut self, x: Tensor) -> Result<Tensor, SurrogateError> {
            let d = dims5(&x)?;
            let (y, od) = self
                .model
                .forward(&self.gpu, self.gpu.to_device(&x.data)?, d)?;
            let data = self.gpu.to_host(&y, od.iter().product())?;
            Ok(Tensor::from_vec(&od, data)?)
        }

        /// The loss of one batch, without gradients.
        pub fn eval_loss(&mut self, x: Tensor, y: &Tensor) -> Result<f64, SurrogateError> {
            Ok(self.loss(x, y)?.0)
        }

        /// Weights into `model`, moments into `adam` (before writing model files).
        pub fn sync(&mut self, model: &mut Model, adam: &mut Adam) -> Result<(), SurrogateError> {
            self.model.copy_params_to(&self.gpu, model)?;
            let (step, m, v) = self.model.adam_state(&self.gpu)?;
            adam.step = step;
            adam.m = m;
            adam.v = v;
            Ok(())
        }
    }
}

/// Without the `cuda` feature there is no GPU trainer: this type has no values, so the code
/// that would use one is never reached.
#[cfg(not(feature = "cuda"))]
pub enum GpuTrainer {}

#[cfg(not(feature = "cuda"))]
impl GpuTrainer {
    pub fn name(&self) -> String {
        match *self {}
    }
    pub fn batch_loss(&mut self, _: Tensor, _: &Tensor) -> Result<f64, SurrogateError> {
        match *self {}
    }
    pub fn update(&mut self, _: &mut Adam) -> Result<(), SurrogateError> {
        match *self {}
    }
    pub fn eval_loss(&mut self, _: Tensor, _: &Tensor) -> Result<f64, SurrogateError> {
        match *self {}
    }
    pub fn predict(&mut self, _: Tensor) -> Result<Tensor, SurrogateError> {
        match *self {}
    }
    pub fn sync(&mut self, _: &mut Model, _: &mut Adam) -> Result<(), SurrogateError> {
        match *self {}
    }
}

/// Inference on the CPU model or its GPU copy.
pub struct Runner {
    pub model: Model,
    gpu: Option<GpuTrainer>,
}

impl Runner {
    /// `model` on `device` (`auto`: the GPU if one opens).
    pub fn new(model: Model, device: Device) -> Result<Self, SurrogateError> {
        let gpu = match open_device(device)? {
            #[cfg(feature = "cuda")]
            Some(g) => Some(GpuTrainer::new(g, &model, crate::nn::train::LossKind::Mse)?),
            #[cfg(not(feature = "cuda"))]
            Some(never) => match never {},
            None => None,
        };
        Ok(Runner { model, gpu })
    }

    pub fn forward(&mut self, x: Tensor) -> Result<Tensor, SurrogateError> {
        match &mut self.gpu {
            Some(g) => g.predict(x),
            None => Ok(self.model.forward_owned(x)?),
        }
    }
}
