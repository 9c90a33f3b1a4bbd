//! Where a training run computes: the CPU path is `Model` itself; with `--device cuda` (or
//! `auto` finding a GPU) the batches go through [`GpuTrainer`], which keeps the network and its
//! optimiser state on the device and hands weights and moments back for the model files.

use super::data::{FrameSet, WindowSpec};
use super::SurrogateError;
use crate::nn::train::Adam;
use crate::nn::{Device, Model, Tensor};

/// Which window set of a run a resident batch is cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Train = 0,
    Validation = 1,
}

/// The GPU that `device` asks for, if any; `flag` names the option it came from in errors
/// and logs (`--device`, `coupling.device`).
#[cfg(feature = "cuda")]
pub(crate) fn open_device(
    device: Device,
    flag: &str,
) -> Result<Option<crate::cuda::Gpu>, SurrogateError> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda(n) => crate::cuda::Gpu::new(n)
            .map(Some)
            .map_err(|e| SurrogateError::Cuda(format!("{flag} cuda:{n}: {e}"))),
        Device::Auto => match crate::cuda::Gpu::new(0) {
            Ok(g) => Ok(Some(g)),
            Err(e) => {
                tracing::info!("{flag} auto: CUDA unavailable ({e}); running on the CPU");
                Ok(None)
            }
        },
    }
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn open_device(
    device: Device,
    flag: &str,
) -> Result<Option<std::convert::Infallible>, SurrogateError> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda(_) => Err(SurrogateError::Cuda(format!(
            "{flag} cuda: this wavecp was built without the `cuda` feature"
        ))),
        Device::Auto => {
            tracing::info!("{flag} auto: built without the `cuda` feature; running on the CPU");
            Ok(None)
        }
    }
}

#[cfg(feature = "cuda")]
pub use gpu::{GpuTrainer, PendingLoss};

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::cuda::model::GpuModel;
    use crate::cuda::{DevBuf, DevFrames, DevWindows, DeviceLoss, Gpu};
    use crate::nn::train::LossKind;

    /// A loss queued on the device and not yet read ([`GpuTrainer::loss`]).
    pub struct PendingLoss(DeviceLoss);

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
        /// The training frames, when they live on the device ([`GpuTrainer::keep_frames`]).
        data: Option<Resident>,
    }

    /// The frame set on the device and the window orders cut from it.
    struct Resident {
        frames: DevFrames,
        nframes: usize,
        ws: WindowSpec,
        ny: usize,
        nx: usize,
        /// Per [`Slot`]: the windows in the order of the current epoch.
        sets: [Option<DevWindows>; 2],
    }

    impl GpuTrainer {
        /// Copies `model` to `gpu`; `kind` is the training loss.
        pub fn new(gpu: Gpu, model: &Model, kind: LossKind) -> Result<Self, SurrogateError> {
            // The peak is the process's pool's: a run reports its own, not an earlier one's.
            gpu.reset_peak_memory();
            let m = GpuModel::from_model(&gpu, model)?;
            Ok(GpuTrainer {
                gpu,
                model: m,
                kind,
                data: None,
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

        /// The most device memory held at once since the trainer was made (MiB), where the
        /// device's memory pool reports it; logged with the device's size.
        pub fn report_memory(&self) -> Option<f64> {
            use crate::progress::bytes;
            let m = self.gpu.memory();
            let peak = m.peak?;
            tracing::info!(
                "GPU memory: peak {} of {} ({} kept by the pool)",
                bytes(peak),
                bytes(m.total),
                m.reserved.map_or("?".into(), bytes)
            );
            Some(crate::cuda::mib(peak))
        }

        /// The forward pass and loss of the batch `xd` (dims `d`) against targets `yt` of
        /// shape `yshape`: the loss stays on the device; the gradient of the loss and the
        /// output dims come back for the backward pass.
        fn loss_on(
            &mut self,
            xd: DevBuf,
            d: [usize; 5],
            yt: &DevBuf,
            yshape: &[usize],
        ) -> Result<(DeviceLoss, DevBuf, [usize; 5]), SurrogateError> {
            let (pred, od) = self.model.forward(&self.gpu, xd, d)?;
            if od.as_slice() != yshape {
                return Err(SurrogateError::Mismatch(format!(
                    "the model maps a batch to {od:?}, the targets are {yshape:?}"
                )));
            }
            let n: usize = yshape.iter().product();
            let mut g = self.gpu.device_uninit(n)?;
            let l = match self.kind {
                LossKind::Mse => self.gpu.mse_dev_deferred(&pred, yt, n, &mut g)?,
                LossKind::RelL2 => {
                    let b = od[0].max(1);
                    self.gpu.rel_l2_dev_deferred(&pred, yt, b, n / b, &mut g)?
                }
            };
            Ok((l, g, od))
        }

        /// One training step on the batch `xd` → `yt`: forward, loss, backward and the AdamW
        /// update (`adam.step` follows) are queued, nothing waits: the loss (before the
        /// update) is read with [`GpuTrainer::loss`], best after the next step is queued so
        /// that the device never idles between steps. A non-finite loss has by then updated
        /// the device weights with non-finite values; the caller stops the run (the model
        /// files are written from the host's copy, which it does not touch).
        fn step_on(
            &mut self,
            xd: DevBuf,
            d: [usize; 5],
            yt: &DevBuf,
            yshape: &[usize],
            adam: &mut Adam,
        ) -> Result<PendingLoss, SurrogateError> {
            let (l, g, od) = self.loss_on(xd, d, yt, yshape)?;
            self.model.zero_grad(&self.gpu)?;
            self.model.backward(&self.gpu, g, od)?;
            self.model.adam_step(&self.gpu, &adam.cfg)?;
            adam.step += 1;
            Ok(PendingLoss(l))
        }

        /// A training step on a batch from the host ([`GpuTrainer::step_on`]).
        pub fn queue_step(
            &mut self,
            x: Tensor,
            y: &Tensor,
            adam: &mut Adam,
        ) -> Result<PendingLoss, SurrogateError> {
            let (xd, d, yt) = self.upload(&x, y)?;
            self.step_on(xd, d, &yt, &y.shape, adam)
        }

        /// A batch from the host on the device: inputs, their dims, targets.
        fn upload(
            &self,
            x: &Tensor,
            y: &Tensor,
        ) -> Result<(DevBuf, [usize; 5], DevBuf), SurrogateError> {
            let d = dims5(x)?;
            Ok((
                self.gpu.to_device(&x.data)?,
                d,
                self.gpu.to_device(&y.data)?,
            ))
        }

        /// The loss of a batch from the host, without gradients (queued, not waited for).
        pub fn queue_eval(&mut self, x: Tensor, y: &Tensor) -> Result<PendingLoss, SurrogateError> {
            let (xd, d, yt) = self.upload(&x, y)?;
            Ok(PendingLoss(self.loss_on(xd, d, &yt, &y.shape)?.0))
        }

        /// The value of a queued loss (waits for the work queued before it).
        pub fn loss(&self, l: &PendingLoss) -> Result<f64, SurrogateError> {
            Ok(self.gpu.loss_value(&l.0)?)
        }

        /// Keeps the whole frame set on the device, normalised as [`WindowSpec::stack`] does
        /// (the same [`normalise`](super::super::data::normalise), so the batches are the same
        /// bits), so that batches are cut
        /// there. Declines (returns false, nothing copied) when the frames would take more than
        /// half the device's memory; batches are then copied from the host one at a time.
        pub fn keep_frames(
            &mut self,
            fs: &FrameSet,
            ws: WindowSpec,
        ) -> Result<bool, SurrogateError> {
            use crate::progress::bytes;
            let size = (fs.frames.len() * std::mem::size_of::<f32>()) as u64;
            // Half of what is free now (the model and its optimiser state are already on
            // the device, and another process may share the GPU): the rest is for the steps.
            let m = self.gpu.memory();
            if size > m.free / 2 {
                tracing::info!(
                    "training frames ({}) exceed half the GPU's free memory ({} of {}): batches are copied from the host",
                    bytes(size),
                    bytes(m.free),
                    bytes(m.total)
                );
                return Ok(false);
            }
            let norm: Vec<f32> = fs
                .frames
                .iter()
                .map(|&v| super::super::data::normalise(v, fs.mean, fs.std))
                .collect();
            let frames = match self.gpu.frames_to_device(&norm, fs.ny * fs.nx) {
                Ok(f) => f,
                Err(e @ crate::cuda::CudaError::OutOfMemory { .. }) => {
                    tracing::info!("training frames ({}) not kept on the device ({e}): batches are copied from the host", bytes(size));
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
            self.data = Some(Resident {
                frames,
                nframes: fs.nframes,
                ws,
                ny: fs.ny,
                nx: fs.nx,
                sets: [None, None],
            });
            Ok(true)
        }

        /// Uploads `wins` (sample, first frame) in this order as the windows of `slot`, for
        /// [`GpuTrainer::queue_step_at`] and [`GpuTrainer::queue_eval_at`]: one copy per epoch.
        pub fn set_windows(
            &mut self,
            slot: Slot,
            wins: &[(usize, usize)],
        ) -> Result<(), SurrogateError> {
            let r = self
                .data
                .as_mut()
                .ok_or_else(|| SurrogateError::Mismatch("set_windows before keep_frames".into()))?;
            let first: Vec<u32> = wins
                .iter()
                .map(|&(s, t0)| u32::try_from(s * r.nframes + t0))
                .collect::<Result<_, _>>()
                .map_err(|_| SurrogateError::Mismatch("more than 2^32 frames".into()))?;
            let span = r.ws.t_in + r.ws.t_out;
            r.sets[slot as usize] = Some(self.gpu.windows_to_device(&first, span, &r.frames)?);
            Ok(())
        }

        /// Input and target batches of windows `b0 .. b0 + count` of `slot`, cut on the device.
        fn batch_at(
            &mut self,
            slot: Slot,
            b0: usize,
            count: usize,
        ) -> Result<(DevBuf, [usize; 5], DevBuf, Vec<usize>), SurrogateError> {
            let r = self.data.as_ref().ok_or_else(|| {
                SurrogateError::Mismatch("a resident batch before keep_frames".into())
            })?;
            let w = r.sets[slot as usize].as_ref().ok_or_else(|| {
                SurrogateError::Mismatch("a resident batch before set_windows".into())
            })?;
            let (ws, n) = (r.ws, r.ny * r.nx);
            let mut x = self.gpu.device_uninit(count * ws.t_in * n)?;
            let mut y = self.gpu.device_uninit(count * ws.t_out * n)?;
            self.gpu
                .gather_windows_dev(&r.frames, w, b0..b0 + count, 0..ws.t_in, &mut x)?;
            self.gpu.gather_windows_dev(
                &r.frames,
                w,
                b0..b0 + count,
                ws.t_in..ws.t_in + ws.t_out,
                &mut y,
            )?;
            let xs = ws.shape(count, ws.t_in, r.ny, r.nx);
            let d = [xs[0], xs[1], xs[2], xs[3], xs[4]];
            Ok((x, d, y, ws.shape(count, ws.t_out, r.ny, r.nx)))
        }

        /// [`GpuTrainer::queue_step`] on windows `b0 .. b0 + count` of `slot` (resident data).
        pub fn queue_step_at(
            &mut self,
            slot: Slot,
            b0: usize,
            count: usize,
            adam: &mut Adam,
        ) -> Result<PendingLoss, SurrogateError> {
            let (x, d, y, ys) = self.batch_at(slot, b0, count)?;
            self.step_on(x, d, &y, &ys, adam)
        }

        /// [`GpuTrainer::queue_eval`] of windows `b0 .. b0 + count` of `slot` (resident data).
        pub fn queue_eval_at(
            &mut self,
            slot: Slot,
            b0: usize,
            count: usize,
        ) -> Result<PendingLoss, SurrogateError> {
            let (x, d, y, ys) = self.batch_at(slot, b0, count)?;
            Ok(PendingLoss(self.loss_on(x, d, &y, &ys)?.0))
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

/// Without the `cuda` feature no loss is ever queued.
#[cfg(not(feature = "cuda"))]
pub enum PendingLoss {}

#[cfg(not(feature = "cuda"))]
impl GpuTrainer {
    pub fn name(&self) -> String {
        match *self {}
    }
    pub fn queue_step(
        &mut self,
        _: Tensor,
        _: &Tensor,
        _: &mut Adam,
    ) -> Result<PendingLoss, SurrogateError> {
        match *self {}
    }
    pub fn queue_eval(&mut self, _: Tensor, _: &Tensor) -> Result<PendingLoss, SurrogateError> {
        match *self {}
    }
    pub fn loss(&self, _: &PendingLoss) -> Result<f64, SurrogateError> {
        match *self {}
    }
    pub fn predict(&mut self, _: Tensor) -> Result<Tensor, SurrogateError> {
        match *self {}
    }
    pub fn sync(&mut self, _: &mut Model, _: &mut Adam) -> Result<(), SurrogateError> {
        match *self {}
    }
    pub fn keep_frames(&mut self, _: &FrameSet, _: WindowSpec) -> Result<bool, SurrogateError> {
        match *self {}
    }
    pub fn report_memory(&self) -> Option<f64> {
        match *self {}
    }
    pub fn set_windows(&mut self, _: Slot, _: &[(usize, usize)]) -> Result<(), SurrogateError> {
        match *self {}
    }
    pub fn queue_step_at(
        &mut self,
        _: Slot,
        _: usize,
        _: usize,
        _: &mut Adam,
    ) -> Result<PendingLoss, SurrogateError> {
        match *self {}
    }
    pub fn queue_eval_at(
        &mut self,
        _: Slot,
        _: usize,
        _: usize,
    ) -> Result<PendingLoss, SurrogateError> {
        match *self {}
    }
}

/// Inference on the CPU model or its GPU copy.
pub struct Runner {
    pub model: Model,
    gpu: Option<GpuTrainer>,
}

impl Runner {
    /// `model` on `device` (`auto`: the GPU if one opens), as `--device` asked.
    pub fn new(model: Model, device: Device) -> Result<Self, SurrogateError> {
        Self::asked_by(model, device, "--device")
    }

    /// [`Runner::new`], `flag` naming the option that asked for `device` in its errors.
    pub fn asked_by(model: Model, device: Device, flag: &str) -> Result<Self, SurrogateError> {
        let gpu = match open_device(device, flag)? {
            #[cfg(feature = "cuda")]
            Some(g) => Some(GpuTrainer::new(g, &model, crate::nn::train::LossKind::Mse)?),
            #[cfg(not(feature = "cuda"))]
            Some(never) => match never {},
            None => None,
        };
        Ok(Runner { model, gpu })
    }

    /// Where it runs: `cpu`, or the GPU's name.
    pub fn device(&self) -> String {
        self.gpu
            .as_ref()
            .map_or_else(|| "cpu".into(), GpuTrainer::name)
    }

    pub fn forward(&mut self, x: Tensor) -> Result<Tensor, SurrogateError> {
        match &mut self.gpu {
            Some(g) => g.predict(x),
            None => Ok(self.model.forward_owned(x)?),
        }
    }
}
