//! Explicit im2col / col2im (kernels/im2col.cu): the transposed convolution and the fallbacks.

use super::super::{driver_err, CudaError, Gpu};
use super::{need, DevBuf};
use crate::cuda::Kernel;
use crate::nn::conv::Geom;
use cudarc::driver::PushKernelArg;

impl Gpu {
    /// `col[b, (c, p, q, s), o]` of `batch` samples `x: [c, T, Y, X]` (the GPU twin of
    /// [`crate::nn::conv::im2col`], batched).
    #[allow(clippy::too_many_arguments)]
    pub fn im2col_dev(
        &self,
        x: &DevBuf,
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
        col: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let n = batch * c * g.kvol() * outd.iter().product::<usize>();
        need(
            "im2col input",
            x.len(),
            batch * c * ind.iter().product::<usize>(),
        )?;
        need("im2col output", col.len(), n)?;
        let f = self.function(Kernel::Im2col)?;
        let p = Self::conv_params(batch, c, ind, g, outd);
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(col).arg(&p);
        // SAFETY: arguments match im2col_f32(const float*, float*, ConvParams); x holds
        // batch·c·nin values and col batch·c·kvol·nout (checked), the ranges the kernel indexes.
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }

    /// The adjoint of [`Gpu::im2col_dev`]: `dx` from `col` (written, not accumulated).
    #[allow(clippy::too_many_arguments)]
    pub fn col2im_dev(
        &self,
        col: &DevBuf,
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
        dx: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let n = batch * c * ind.iter().product::<usize>();
        need(
            "col2im input",
            col.len(),
            batch * c * g.kvol() * outd.iter().product::<usize>(),
        )?;
        need("col2im output", dx.len(), n)?;
        let f = self.function(Kernel::Col2im)?;
        let p = Self::conv_params(batch, c, ind, g, outd);
        let nin = ind.iter().product::<usize>();
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
