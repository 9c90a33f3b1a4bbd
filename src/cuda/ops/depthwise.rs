//! Depthwise passes along one axis (kernels/depthwise.cu): the unfused CP chain.

use super::super::{driver_err, CudaError, Gpu};
use super::{need, DevBuf};
use crate::cuda::Kernel;
use crate::nn::conv::{AxisConv, DwShape};
use cudarc::driver::{LaunchConfig, PushKernelArg};

impl Gpu {
    /// Depthwise pass along `a.axis` of `batch` samples on device buffers.
    pub fn dw_forward_dev(
        &self,
        x: &DevBuf,
        batch: usize,
        sh: DwShape,
        a: &AxisConv,
        w: &DevBuf,
        y: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let p = Self::dw_params(batch, sh, a);
        let (nin, nout) = (
            sh.ind.iter().product::<usize>(),
            sh.outd.iter().product::<usize>(),
        );
        need("depthwise input", x.len(), batch * sh.c * nin)?;
        need("depthwise weights", w.len(), sh.c * a.k)?;
        need("depthwise output", y.len(), batch * sh.c * nout)?;
        let f = self.function(Kernel::DwForward)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(w).arg(y).arg(&p);
        // SAFETY: arguments match dw_axis_forward_f32(const float*, const float*, float*,
        // DwParams); x holds n·nin, w c·k and y n·nout floats (checked).
        unsafe { l.launch(Self::launch_config(batch * sh.c * nout)) }.map_err(driver_err)?;
        Ok(())
    }

    /// Input gradient of [`Gpu::dw_forward_dev`] (`dx` written).
    pub fn dw_dinput_dev(
        &self,
        dy: &DevBuf,
        batch: usize,
        sh: DwShape,
        a: &AxisConv,
        w: &DevBuf,
        dx: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let p = Self::dw_params(batch, sh, a);
        let (nin, nout) = (
            sh.ind.iter().product::<usize>(),
            sh.outd.iter().product::<usize>(),
        );
        need("depthwise output gradient", dy.len(), batch * sh.c * nout)?;
        need("depthwise weights", w.len(), sh.c * a.k)?;
        need("depthwise input gradient", dx.len(), batch * sh.c * nin)?;
        let f = self.function(Kernel::DwDinput)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(dy).arg(w).arg(dx).arg(&p);
        // SAFETY: arguments match dw_axis_dinput_f32(const float*, const float*, float*,
        // DwParams); dy holds n·nout, w c·k and dx n·nin floats (checked).
        unsafe { l.launch(Self::launch_config(batch * sh.c * nin)) }.map_err(driver_err)?;
        Ok(())
    }

    /// Weight gradient of [`Gpu::dw_forward_dev`], summed over the batch and added to `dw`.
    pub fn dw_dweight_dev(
        &self,
        x: &DevBuf,
        dy: &DevBuf,
        batch: usize,
        sh: DwShape,
        a: &AxisConv,
        dw: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let p = Self::dw_params(batch, sh, a);
        let (nin, nout) = (
            sh.ind.iter().product::<usize>(),
            sh.outd.iter().product::<usize>(),
        );
        need("depthwise input", x.len(), batch * sh.c * nin)?;
        need("depthwise output gradient", dy.len(), batch * sh.c * nout)?;
        need("depthwise weight gradient", dw.len(), sh.c * a.k)?;
        let f = self.function(Kernel::DwDweight)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(dy).arg(dw).arg(&p);
        let cfg = LaunchConfig {
            grid_dim: ((sh.c * a.k) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match dw_axis_dweight_f32(const float*, const float*, float*,
        // DwParams); one 256-thread block per (channel, tap), as its shared array assumes.
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        Ok(())
    }
}
