//! Explicit im2col / col2im (kernels/im2col.cu): the transposed convolution and the fallbacks.

use super::super::{driver_err, CudaError, Gpu};
use super::{need, ConvDims, DevBuf};
use crate::cuda::Kernel;
use cudarc::driver::PushKernelArg;

impl Gpu {
    /// `col[b, (c, p, q, s), o]` of `batch` samples `x: [c, T, Y, X]` (the GPU twin of
    /// [`crate::nn::conv::im2col`], batched).
    pub fn im2col_dev(
        &self,
        x: &DevBuf,
        batch: usize,
        dims: &ConvDims<'_>,
        col: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let n = batch * dims.ncol();
        need("im2col input", x.len(), batch * dims.nin())?;
        need("im2col output", col.len(), n)?;
        let f = self.function(Kernel::Im2col)?;
        let p = Self::conv_params(batch, dims);
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(col).arg(&p);
        // SAFETY: arguments match im2col_f32(const float*, float*, ConvParams); x holds
        // batch·c·nin values and col batch·c·kvol·nout (checked), the ranges the kernel indexes.
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }

    /// The adjoint of [`Gpu::im2col_dev`]: `dx` from `col` (written, not accumulated).
    pub fn col2im_dev(
        &self,
        col: &DevBuf,
        batch: usize,
        dims: &ConvDims<'_>,
        dx: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let c = dims.c;
        need("col2im input", col.len(), batch * dims.ncol())?;
        need("col2im output", dx.len(), batch * dims.nin())?;
        let f = self.function(Kernel::Col2im)?;
        let p = Self::conv_params(batch, dims);
        let nin = dims.ind.iter().product::<usize>();
        if nin > u32::MAX as usize || batch * c > u32::MAX as usize {
            return Err(CudaError::TooLarge(format!(
                "col2im: {batch} x {c} planes of {nin} values"
            )));
        }
        let mut l = self.stream.launch_builder(&f);
        l.arg(col).arg(dx).arg(&p);
        // SAFETY: arguments match col2im_f32(const float*, float*, ConvParams); sizes checked.
        unsafe { l.launch(Self::plane_config(batch * c, nin)) }.map_err(driver_err)?;
        Ok(())
    }
}
