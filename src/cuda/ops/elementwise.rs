//! Element-wise kernels (kernels/elementwise.cu): bias, activations, axpy.

use super::super::{driver_err, CudaError, Gpu};
use super::{need, DevBuf};
use crate::cuda::Kernel;
use crate::nn::ops::ActKind;
use cudarc::driver::{LaunchConfig, PushKernelArg};

impl Gpu {
    /// `y[b, c, :] += bias[c]` for `y: [batch, c, inner]`.
    pub fn bias_add_dev(
        &self,
        y: &mut DevBuf,
        bias: &DevBuf,
        batch: usize,
        c: usize,
        inner: usize,
    ) -> Result<(), CudaError> {
        let total = batch * c * inner;
        need("bias", bias.len(), c)?;
        need("biased tensor", y.len(), total)?;
        let f = self.function(Kernel::BiasAdd)?;
        if inner > u32::MAX as usize || batch * c > u32::MAX as usize {
            return Err(CudaError::TooLarge(format!(
                "bias: {batch} x {c} planes of {inner} values"
            )));
        }
        let (c32, inner32, planes) = (c as u32, inner as u32, (batch * c) as u32);
        let mut l = self.stream.launch_builder(&f);
        l.arg(y).arg(bias).arg(&c32).arg(&inner32).arg(&planes);
        // SAFETY: arguments match bias_add_f32(float*, const float*, unsigned, unsigned,
        // unsigned); y holds batch·c·inner values and bias c (checked).
        unsafe { l.launch(Self::plane_config(batch * c, inner)) }.map_err(driver_err)?;
        Ok(())
    }

    /// `db[c] += Σ_b Σ_i dy[b, c, i]`.
    pub fn bias_grad_dev(
        &self,
        dy: &DevBuf,
        batch: usize,
        c: usize,
        inner: usize,
        db: &mut DevBuf,
    ) -> Result<(), CudaError> {
        need("bias output gradient", dy.len(), batch * c * inner)?;
        need("bias gradient", db.len(), c)?;
        let f = self.function(Kernel::BiasGrad)?;
        let (b32, c32, inner64) = (batch as u32, c as u32, inner as u64);
        let mut l = self.stream.launch_builder(&f);
        l.arg(dy).arg(db).arg(&b32).arg(&c32).arg(&inner64);
        let cfg = LaunchConfig {
            grid_dim: (c as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match bias_grad_f32(const float*, float*, unsigned, unsigned,
        // unsigned long long); one 256-thread block per channel, as its shared array assumes.
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        Ok(())
    }

    /// `y += alpha·x` over the first `n` values.
    pub fn axpy_dev(
        &self,
        y: &mut DevBuf,
        x: &DevBuf,
        alpha: f32,
        n: usize,
    ) -> Result<(), CudaError> {
        need("axpy x", x.len(), n)?;
        need("axpy y", y.len(), n)?;
        let f = self.function(Kernel::Axpy)?;
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(y).arg(x).arg(&alpha).arg(&n64);
        // SAFETY: arguments match axpy_f32(float*, const float*, float, unsigned long long);
        // both buffers hold at least n values (checked).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }

    /// `y = f(x)` over the first `n` values.
    pub fn act_forward_dev(
        &self,
        kind: ActKind,
        x: &DevBuf,
        y: &mut DevBuf,
        n: usize,
    ) -> Result<(), CudaError> {
        need("activation input", x.len(), n)?;
        need("activation output", y.len(), n)?;
        let f = self.function(Kernel::ActForward)?;
        let (n32, k) = (n as u32, Self::kind_code(kind));
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(y).arg(&n32).arg(&k);
        // SAFETY: arguments match act_forward_f32(const float*, float*, unsigned, int); both
        // buffers hold at least n floats (checked).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }

    /// `dx = dy · f'(x)` over the first `n` values.
    pub fn act_backward_dev(
        &self,
        kind: ActKind,
        x: &DevBuf,
        dy: &DevBuf,
        dx: &mut DevBuf,
        n: usize,
    ) -> Result<(), CudaError> {
        need("activation input", x.len(), n)?;
        need("activation output gradient", dy.len(), n)?;
        need("activation input gradient", dx.len(), n)?;
        let f = self.function(Kernel::ActBackward)?;
        let (n32, k) = (n as u32, Self::kind_code(kind));
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(dy).arg(dx).arg(&n32).arg(&k);
        // SAFETY: arguments match act_backward_f32(const float*, const float*, float*,
        // unsigned, int); all three buffers hold at least n floats (checked).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }
}
