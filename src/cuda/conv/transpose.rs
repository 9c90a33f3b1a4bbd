//! The transposed convolution on the GPU.

use super::{
    add_bias_grad, batched, bias_from, gemm, sample_cols_t, sample_rows, shape_err, shared,
    shared_t,
};
use crate::cuda::ops::ConvOperand;
use crate::cuda::{ConvDims, CudaError, DevBuf, GemmOut, Gpu};
use crate::nn::conv::Geom;
use crate::nn::layers::{transposed_out_dims, ConvTranspose};

/// The transposed convolution (up-sampling) on the GPU, `W: [Ci, Co, kt, ky, kx]`:
/// `col = Wᵀ · x`, `y = col2im(col)` + bias; backward `dx = W · im2col(dy)` and
/// `dW += Σ_s x_s · im2col(dy_s)ᵀ`, as implicit GEMMs gathering from dy (the im2col matrix is
/// stored only on the baseline GEMM, `WAVECP_GEMM=basic`).
pub struct GpuConvT {
    ci: usize,
    co: usize,
    g: Geom,
    output_padding: [usize; 3],
    w: DevBuf,
    dw: DevBuf,
    bias: Option<(DevBuf, DevBuf)>,
    x: Option<(DevBuf, [usize; 5])>,
}

impl GpuConvT {
    /// A copy of a CPU transposed convolution.
    pub fn from_cpu(gpu: &Gpu, l: &ConvTranspose) -> Result<Self, CudaError> {
        Ok(GpuConvT {
            ci: l.ci,
            co: l.co,
            g: l.g,
            output_padding: l.output_padding,
            w: gpu.to_device(&l.w.value)?,
            dw: gpu.device_zeros(l.w.value.len())?,
            bias: bias_from(gpu, l.b.as_ref())?,
            x: None,
        })
    }

    fn dims(&self, d: [usize; 5]) -> Result<[usize; 5], CudaError> {
        let o = transposed_out_dims(&self.g, self.output_padding, [d[2], d[3], d[4]])?;
        Ok([d[0], self.co, o[0], o[1], o[2]])
    }

    /// `x: [B, Ci, T, Y, X]` (kept) → `(y, dims of y)`.
    pub fn forward(
        &mut self,
        gpu: &Gpu,
        x: DevBuf,
        d: [usize; 5],
    ) -> Result<(DevBuf, [usize; 5]), CudaError> {
        let (ci, co, g) = (self.ci, self.co, self.g);
        if d[1] != ci || x.len() < d.iter().product::<usize>() {
            return Err(shape_err(
                "gpu transposed conv input",
                d[0] * ci * d[2] * d[3] * d[4],
                x.len(),
            ));
        }
        let od = self.dims(d)?;
        let (b, nin, nout, kk) = (
            d[0],
            d[2] * d[3] * d[4],
            od[2] * od[3] * od[4],
            co * g.kvol(),
        );
        let mut col = gpu.device_uninit(b * kk * nin)?;
        let desc = gemm(
            [kk, nin, ci, b],
            shared_t(kk),
            batched(ci, nin),
            batched(kk, nin),
            0.0,
        );
        gpu.gemm_dev(&desc, &self.w, &x, &mut col)?;
        let mut y = gpu.device_uninit(b * co * nout)?;
        let dims = ConvDims {
            c: co,
            ind: [od[2], od[3], od[4]],
            g: &g,
            outd: [d[2], d[3], d[4]],
        };
        gpu.col2im_dev(&col, b, &dims, &mut y)?;
        if let Some((bv, _)) = &self.bias {
            gpu.bias_add_dev(&mut y, bv, b, co, nout)?;
        }
        self.x = Some((x, d));
        Ok((y, od))
    }

    /// Adds the weight gradients of `dy` and returns `dx`.
    pub fn backward(&mut self, gpu: &Gpu, dy: &DevBuf) -> Result<DevBuf, CudaError> {
        let (ci, co, g) = (self.ci, self.co, self.g);
        let (x, d) = self
            .x
            .as_ref()
            .ok_or_else(|| CudaError::CallOrder("gpu transposed conv".into()))?;
        let od = self.dims(*d)?;
        let (b, nin, nout, kk) = (
            d[0],
            d[2] * d[3] * d[4],
            od[2] * od[3] * od[4],
            co * g.kvol(),
        );
        if dy.len() < b * co * nout {
            return Err(shape_err(
                "gpu transposed conv output gradient",
                b * co * nout,
                dy.len(),
            ));
        }
        add_bias_grad(gpu, &mut self.bias, dy, b, co, nout)?;
        // The backward pass of a transposed convolution is the ordinary convolution of dy
        // (co channels over the output extents) with geometry g, whose output has x's
        // extents: dx = W·col(dy), dW += Σ_s x_s·col(dy_s)ᵀ.
        let dims = ConvDims {
            c: co,
            ind: [od[2], od[3], od[4]],
            g: &g,
            outd: [d[2], d[3], d[4]],
        };
        let dx_desc = gemm(
            [ci, nin, kk, b],
            shared(kk),
            batched(kk, nin),
            batched(ci, nin),
            0.0,
        );
        let dw_desc = gemm(
            [ci, kk, nin, b],
            sample_rows(nin, ci * nin),
            sample_cols_t(nin, kk * nin),
            shared(kk),
            1.0,
        );
        if gpu.implicit_conv() {
            // Implicit GEMMs gathering from dy: no b·kk·nin im2col matrix is written and read.
            let mut dx = gpu.device_uninit(b * ci * nin)?;
            let (wv, dyv, xv) = (self.w.as_view(), dy.as_view(), x.as_view());
            let dx_out = GemmOut::plain(&mut dx);
            gpu.gemm_conv_dev(&dx_desc, &wv, &dyv, ConvOperand::Col, &dims, dx_out)?;
            let dw_out = GemmOut::plain(&mut self.dw);
            gpu.gemm_conv_dev(&dw_desc, &xv, &dyv, ConvOperand::ColT, &dims, dw_out)?;
            return Ok(dx);
        }
        let mut col = gpu.device_uninit(b * kk * nin)?;
        gpu.im2col_dev(dy, b, &dims, &mut col)?;
        let mut dx = gpu.device_uninit(b * ci * nin)?;
        gpu.gemm_dev(&dx_desc, &self.w, &col, &mut dx)?;
        gpu.gemm_sum_batch_dev(&dw_desc, &x.as_view(), &col.as_view(), &mut self.dw)?;
        Ok(dx)
    }

    pub fn zero_grad(&mut self, gpu: &Gpu) -> Result<(), CudaError> {
        gpu.zero_all_dev(&mut self.grads_mut())
    }

    /// The gradient buffers, in the CPU layer's `params()` order.
    pub fn grads_mut(&mut self) -> Vec<&mut DevBuf> {
        let mut v = vec![&mut self.dw];
        if let Some((_, db)) = &mut self.bias {
            v.push(db);
        }
        v
    }

    /// `(value, gradient)` of each parameter, in the CPU layer's `params()` order.
    pub fn params_mut(&mut self) -> Vec<(&mut DevBuf, &DevBuf)> {
        let mut v = vec![(&mut self.w, &self.dw)];
        if let Some((b, db)) = &mut self.bias {
            v.push((b, &*db));
        }
        v
    }
}

impl GpuConvT {
    /// Dims of the input of the last forward pass.
    pub fn input_dims(&self) -> Option<[usize; 5]> {
        self.x.as_ref().map(|(_, d)| *d)
    }
}
