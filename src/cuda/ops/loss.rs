//! Losses on the device (kernels/optim.cu): MSE and relative L2, read back once per step.

use super::super::{driver_err, CudaError, Gpu};
use super::{need, DevBuf};
use crate::cuda::Kernel;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

impl Gpu {
    /// MSE of the first `n` values and its gradient (written to `grad`); the loss is summed on
    /// the host from per-block partials in block order.
    pub fn mse_dev(
        &self,
        pred: &DevBuf,
        target: &DevBuf,
        n: usize,
        grad: &mut DevBuf,
    ) -> Result<f64, CudaError> {
        let l = self.mse_dev_deferred(pred, target, n, grad)?;
        self.loss_value(&l)
    }

    /// [`Gpu::mse_dev`] with the loss left on the device until [`Gpu::loss_value`]: the
    /// backward pass and the update can be queued before the host waits for it.
    pub fn mse_dev_deferred(
        &self,
        pred: &DevBuf,
        target: &DevBuf,
        n: usize,
        grad: &mut DevBuf,
    ) -> Result<DeviceLoss, CudaError> {
        need("mse prediction", pred.len(), n)?;
        need("mse target", target.len(), n)?;
        need("mse gradient", grad.len(), n)?;
        let (blocks, cfg) = Self::reduction_cfg(n);
        let f = self.function(Kernel::Mse)?;
        let mut part = self.uninit::<f64>(blocks)?;
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(pred).arg(target).arg(grad).arg(&n64).arg(&mut part);
        // SAFETY: arguments match mse_f32(const float*, const float*, float*, unsigned long
        // long, double*); 256-thread blocks as its shared array assumes, one partial per block
        // (each written by its block).
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        Ok(DeviceLoss {
            sums: part,
            form: LossForm::Mean {
                partials: blocks,
                n,
            },
        })
    }

    /// The value of a loss left on the device (waits for the work queued before it).
    pub fn loss_value(&self, l: &DeviceLoss) -> Result<f64, CudaError> {
        match l.form {
            LossForm::Mean { partials, n } => {
                let sum: f64 = self.download(&l.sums, partials)?.iter().sum();
                Ok(sum / n.max(1) as f64)
            }
            LossForm::RelL2 { batch } => {
                if batch == 0 {
                    return Ok(0.0);
                }
                let den = self.download(&l.sums, batch + 1)?;
                Ok(den[batch] / batch as f64)
            }
        }
    }

    /// Relative-L2 loss of `batch` samples of `per` values each (the CPU's `LossKind::RelL2`):
    /// the loss, with its gradient written to `grad`.
    pub fn rel_l2_dev(
        &self,
        pred: &DevBuf,
        target: &DevBuf,
        batch: usize,
        per: usize,
        grad: &mut DevBuf,
    ) -> Result<f64, CudaError> {
        let l = self.rel_l2_dev_deferred(pred, target, batch, per, grad)?;
        self.loss_value(&l)
    }

    /// [`Gpu::rel_l2_dev`] with the loss left on the device until [`Gpu::loss_value`]. The
    /// per-sample norms, the gradient's denominators and the loss's sum are formed on the
    /// device by one thread in the order and f64 operations the host would use.
    pub fn rel_l2_dev_deferred(
        &self,
        pred: &DevBuf,
        target: &DevBuf,
        batch: usize,
        per: usize,
        grad: &mut DevBuf,
    ) -> Result<DeviceLoss, CudaError> {
        let n = batch * per;
        need("rel_l2 prediction", pred.len(), n)?;
        need("rel_l2 target", target.len(), n)?;
        need("rel_l2 gradient", grad.len(), n)?;
        let mut den = self.uninit::<f64>(batch + 1)?;
        if batch == 0 {
            return Ok(DeviceLoss {
                sums: den,
                form: LossForm::RelL2 { batch },
            });
        }
        let b32 = u32::try_from(batch)
            .map_err(|_| CudaError::TooLarge(format!("rel_l2 over {batch} samples")))?;
        let f = self.function(Kernel::RelL2Sums)?;
        let mut sums = self.uninit::<f64>(2 * batch)?;
        let per64 = per as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(pred).arg(target).arg(&per64).arg(&mut sums);
        let cfg = LaunchConfig {
            grid_dim: (b32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match rel_l2_sums_f32(const float*, const float*, unsigned long
        // long, double*); one 256-thread block per sample, each writing its two sums of the
        // 2·batch.
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        let f = self.function(Kernel::RelL2Den)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&sums).arg(&b32).arg(&mut den);
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match rel_l2_den_f64(const double*, unsigned, double*); one thread
        // reads the 2·batch sums and writes batch + 1 values into den (that long).
        unsafe { l.launch(one) }.map_err(driver_err)?;
        let f = self.function(Kernel::RelL2Grad)?;
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(pred)
            .arg(target)
            .arg(grad)
            .arg(&per64)
            .arg(&n64)
            .arg(&den);
        // SAFETY: arguments match rel_l2_grad_f32(const float*, const float*, float*,
        // unsigned long long, unsigned long long, const double*); the buffers hold n values
        // (checked) and den one per sample (and the loss after them).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(DeviceLoss {
            sums: den,
            form: LossForm::RelL2 { batch },
        })
    }
}

/// A loss still on the device ([`Gpu::mse_dev_deferred`], [`Gpu::rel_l2_dev_deferred`]):
/// [`Gpu::loss_value`] brings it back, so one wait per training step, at its end.
pub struct DeviceLoss {
    sums: CudaSlice<f64>,
    form: LossForm,
}

enum LossForm {
    /// Σ of `partials` per-block sums, over `n` values.
    Mean { partials: usize, n: usize },
    /// The sum of `batch` relative errors after `batch` denominators.
    RelL2 { batch: usize },
}
