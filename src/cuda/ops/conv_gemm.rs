//! Dense convolutions as implicit GEMMs: the tiled GEMM gathering its im2col operand from the
//! input in its panel loads; the adjoint weights of the stride-1 input gradient.

use super::super::{driver_err, ConvParams, CudaError, GemmDesc, Gpu};
use super::gemm::BRead;
use super::{need, ConvDims, DevBuf, GemmOut};
use crate::cuda::Kernel;
use cudarc::driver::{CudaView, PushKernelArg};

/// B of the tiled GEMM as an im2col matrix of a convolution input, laid out as
/// `struct ConvView` in kernels/gemm.cu (mode 0: an ordinary strided B).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::cuda) struct ConvView {
    pub mode: u32,
    pub unused: u32,
    /// Values between samples of the input.
    pub x_bs: u64,
    pub g: ConvParams,
}

// SAFETY: `repr(C)`: two u32 and a u64 (16 bytes, the u64 8-aligned) then a ConvParams (twenty
// u32, 80 bytes): 96 bytes, no padding, no pointers; the fields of `struct ConvView` in
// kernels/gemm.cu in order (ConvParams: kernels/common.cuh).
unsafe impl cudarc::driver::DeviceRepr for ConvView {}

/// Which im2col matrix of a convolution input an implicit GEMM reads as B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvOperand {
    /// `col [c·kvol, nout]` of each sample (the forward pass; batched over samples).
    Col,
    /// `colᵀ [nout, c·kvol]` of one sample (the weight gradient).
    ColT,
}

impl Gpu {
    /// Whether dense convolutions run as implicit GEMMs (the default) rather than through a
    /// stored im2col matrix (`WAVECP_GEMM=basic`, the baseline for comparisons).
    pub fn implicit_conv(&self) -> bool {
        !self.basic_gemm
    }

    /// `C = alpha·A·B + beta·C` (+ the convolution epilogue) where B is an im2col matrix of
    /// the convolution input `x` (`d.batch` samples, each as `dims` says), read in place: the GEMM's panel loads gather from `x`, so the
    /// matrix (c·kvol times the input's size) is never stored. `d.b` is ignored. With
    /// [`ConvOperand::Col`], `d` is `[m, nout, c·kvol, batch]` (one output per sample); with
    /// [`ConvOperand::ColT`], `[m, c·kvol, nout, batch]` and the samples' products are summed
    /// into one `C` (a weight gradient: `C = alpha·Σ_s A_s·col_sᵀ + beta·C`).
    pub fn gemm_conv_dev(
        &self,
        d: &GemmDesc,
        a: &CudaView<'_, f32>,
        x: &CudaView<'_, f32>,
        operand: ConvOperand,
        dims: &ConvDims<'_>,
        out: GemmOut<'_>,
    ) -> Result<(), CudaError> {
        let GemmOut { c: out, bias, act } = out;
        let (c, ind, g, outd) = (dims.c, dims.ind, dims.g, dims.outd);
        let (kk, nin, nout) = (
            c * g.kvol(),
            ind.iter().product::<usize>(),
            outd.iter().product::<usize>(),
        );
        let (rows, cols, mode) = match operand {
            ConvOperand::Col => (kk, nout, 1),
            ConvOperand::ColT => (nout, kk, 2),
        };
        let samples = d.batch as usize;
        if d.k as usize != rows || d.n as usize != cols {
            return Err(CudaError::Invalid(format!(
                "implicit-GEMM convolution: a {}x{}x{} GEMM (batch {}) does not read a {rows}x{cols} im2col matrix",
                d.m, d.n, d.k, d.batch
            )));
        }
        need(
            "implicit-GEMM convolution input",
            x.len(),
            samples * c * nin,
        )?;
        Self::check_gemm(d, "A", a.len(), d.a, d.m, d.k)?;
        Self::check_gemm(d, "C", out.len(), d.c, d.m, d.n)?;
        if let Some(bv) = bias {
            need("gemm bias", bv.len(), d.m as usize)?;
        }
        if d.m == 0 || d.n == 0 || d.batch == 0 {
            return Ok(());
        }
        // The kernel's gather offsets within one sample are 32-bit.
        if c * nin > i32::MAX as usize {
            return Err(CudaError::TooLarge(format!(
                "implicit-GEMM convolution: one sample of {c} x {nin} values"
            )));
        }
        let cv = ConvView {
            mode,
            unused: 0,
            x_bs: (c * nin) as u64,
            g: Self::conv_params(samples, dims),
        };
        let read = BRead {
            conv: cv,
            sum_batch: mode == 2,
        };
        self.with_epilogue(d, bias, act, |epi| self.run_gemm(d, a, x, out, epi, &read))
    }

    /// `wa [ci, co, kvol]` = `w [co, ci, kvol]` with the channels swapped and the taps reversed:
    /// the weights of the input gradient as a convolution (stride 1, dilation 1).
    pub fn conv_weight_adjoint_dev(
        &self,
        w: &DevBuf,
        (co, ci, kvol): (usize, usize, usize),
        wa: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let n = co * ci * kvol;
        need("convolution weights", w.len(), n)?;
        need("adjoint convolution weights", wa.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(Kernel::ConvWeightAdjoint)?;
        let (cu, iu, ku) = (co as u32, ci as u32, kvol as u32);
        let mut l = self.stream.launch_builder(&f);
        l.arg(w).arg(wa).arg(&cu).arg(&iu).arg(&ku);
        // SAFETY: arguments match conv_weight_adjoint_f32(const float*, float*, unsigned ×3);
        // both buffers hold co·ci·kvol values (checked), the only indices the kernel forms.
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }
}
