//! Host-in, host-out launchers of the kernels, for the tests only: each uploads its inputs,
//! runs the device launcher the library uses (`Gpu::*_dev`) and downloads the result, so a
//! kernel can be compared with its CPU twin on plain slices. They live here, not in the
//! library, which only ever keeps tensors on the device.

#[cfg(feature = "hdf5")]
use std::ops::Range;
use wavecp::cuda::{AdamState, AdamStep, ConvDims, CudaError, GemmDesc, GemmOut, Gpu, PoolShape};
use wavecp::nn::conv::{AxisConv, DwShape, Geom};
use wavecp::nn::ops::{ActKind, PoolKind};

fn check_len(expected: usize, found: usize) -> Result<(), CudaError> {
    if expected == found {
        Ok(())
    } else {
        Err(CudaError::Shape { expected, found })
    }
}

pub trait HostOps {
    #[cfg(feature = "hdf5")]
    /// `gather_windows_dev` from and to the host: `values` (frames of `n` values) and window
    /// starts `first` (each spanning `span` frames) uploaded, frames `frames` of windows
    /// `windows` gathered.
    fn gather_windows(
        &self,
        values: &[f32],
        n: usize,
        starts: (&[u32], usize),
        windows: Range<usize>,
        frames: Range<usize>,
    ) -> Result<Vec<f32>, CudaError>;
    /// `f(x)` element-wise on the device (host in, host out: for tests and small uses).
    fn act_forward(&self, kind: ActKind, x: &[f32]) -> Result<Vec<f32>, CudaError>;
    /// `dy · f'(x)` element-wise on the device.
    fn act_backward(&self, kind: ActKind, x: &[f32], dy: &[f32]) -> Result<Vec<f32>, CudaError>;
    /// Depthwise 1-D convolution along `a.axis` of `batch` samples of `[C, T, Y, X]` with
    /// `w: [C, k]` (the GPU twin of [`crate::nn::conv::depthwise_axis`], batched).
    fn dw_axis_forward(
        &self,
        x: &[f32],
        batch: usize,
        sh: DwShape,
        a: &AxisConv,
        w: &[f32],
    ) -> Result<Vec<f32>, CudaError>;
    /// Input and weight gradients of `dw_axis_forward`: `(dx, dw)`, summed over the
    /// batch (the CPU twin accumulates per sample into the same buffers).
    fn dw_axis_backward(
        &self,
        x: &[f32],
        dy: &[f32],
        batch: usize,
        sh: DwShape,
        a: &AxisConv,
        w: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError>;
    /// `C = alpha·A·B + beta·C` (batched, strided; host in, host out). `c` is the initial `C`.
    fn gemm(&self, d: &GemmDesc, a: &[f32], b: &[f32], c: &[f32]) -> Result<Vec<f32>, CudaError>;
    /// `gemm` with the convolution epilogue (host in, host out): returns
    /// `C = act(alpha·A·B + beta·C + bias[row])` and the values before the activation.
    fn gemm_bias_act(
        &self,
        d: &GemmDesc,
        a: &[f32],
        b: &[f32],
        c: &[f32],
        bias: &[f32],
        kind: ActKind,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError>;
    /// `gemm_sum_batch_dev` from and to the host: `C = alpha·Σ_z A[z]·B[z] + beta·C`.
    fn gemm_sum_batch(
        &self,
        d: &GemmDesc,
        a: &[f32],
        b: &[f32],
        c: &[f32],
    ) -> Result<Vec<f32>, CudaError>;
    /// `col[b, (c, p, q, s), o]` of `batch` samples `x: [c, T, Y, X]` (the GPU twin of
    /// [`crate::nn::conv::im2col`], batched).
    fn im2col(
        &self,
        x: &[f32],
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
    ) -> Result<Vec<f32>, CudaError>;
    /// The adjoint of `im2col`: `dx` from `col` (written, not accumulated).
    fn col2im(
        &self,
        col: &[f32],
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
    ) -> Result<Vec<f32>, CudaError>;
    /// Pooling of `n` blocks `[T, Y, X]` with window = stride = `k`: `(y, argmax)`, the argmax
    /// an index inside each block (the GPU twin of [`crate::nn::ops::Pool`]'s forward pass).
    fn pool_forward(
        &self,
        kind: PoolKind,
        x: &[f32],
        n: usize,
        ind: [usize; 3],
        k: [usize; 3],
    ) -> Result<(Vec<f32>, Vec<u32>), CudaError>;
    /// `dx` of `pool_forward` from `dy` and its argmax (gather form, no atomics).
    fn pool_backward(
        &self,
        kind: PoolKind,
        dy: &[f32],
        argmax: &[u32],
        n: usize,
        ind: [usize; 3],
        k: [usize; 3],
    ) -> Result<Vec<f32>, CudaError>;
    /// Nearest up-sampling of `n` blocks `[T, Y, X]` by `scale` (forward = true) or its adjoint.
    fn upsample(
        &self,
        forward: bool,
        v: &[f32],
        n: usize,
        ind: [usize; 3],
        scale: [usize; 3],
    ) -> Result<Vec<f32>, CudaError>;
    /// Channel concatenation of per-sample blocks of `la` and `ls` values.
    fn concat(
        &self,
        a: &[f32],
        s: &[f32],
        batch: usize,
        la: usize,
        ls: usize,
    ) -> Result<Vec<f32>, CudaError>;
    /// The adjoint of `concat`.
    fn split(
        &self,
        dy: &[f32],
        batch: usize,
        la: usize,
        ls: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError>;
    /// `(mean((p − t)²), ∂/∂p)`, the partial sums added on the host in block order.
    fn mse(&self, pred: &[f32], target: &[f32]) -> Result<(f64, Vec<f32>), CudaError>;
    /// The relative-L2 loss of `batch` samples and its gradient (host in, host out).
    fn rel_l2(
        &self,
        pred: &[f32],
        target: &[f32],
        batch: usize,
    ) -> Result<(f64, Vec<f32>), CudaError>;
    /// `Σ g²` in f64 (for global-norm clipping).
    fn sumsq(&self, g: &[f32]) -> Result<f64, CudaError>;
    /// One AdamW step on one parameter array: returns the new `(w, m, v)`.
    fn adamw(
        &self,
        w: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
        step: &AdamStep,
    ) -> Result<AdamState, CudaError>;
}

impl HostOps for Gpu {
    #[cfg(feature = "hdf5")]
    fn gather_windows(
        &self,
        values: &[f32],
        n: usize,
        (first, span): (&[u32], usize),
        windows: Range<usize>,
        frames: Range<usize>,
    ) -> Result<Vec<f32>, CudaError> {
        let len = windows.len() * frames.len() * n;
        let fr = self.frames_to_device(values, n)?;
        let w = self.windows_to_device(first, span, &fr)?;
        let mut out = self.device_zeros(len)?;
        self.gather_windows_dev(&fr, &w, windows, frames, &mut out)?;
        self.to_host(&out, len)
    }

    /// `f(x)` element-wise on the device (host in, host out: for tests and small uses).
    fn act_forward(&self, kind: ActKind, x: &[f32]) -> Result<Vec<f32>, CudaError> {
        let xd = self.upload(x)?;
        let mut yd = self.zeros::<f32>(x.len())?;
        self.act_forward_dev(kind, &xd, &mut yd, x.len())?;
        self.download(&yd, x.len())
    }

    /// `dy · f'(x)` element-wise on the device.
    fn act_backward(&self, kind: ActKind, x: &[f32], dy: &[f32]) -> Result<Vec<f32>, CudaError> {
        check_len(x.len(), dy.len())?;
        let (xd, gd) = (self.upload(x)?, self.upload(dy)?);
        let mut dxd = self.zeros::<f32>(x.len())?;
        self.act_backward_dev(kind, &xd, &gd, &mut dxd, x.len())?;
        self.download(&dxd, x.len())
    }

    /// Depthwise 1-D convolution along `a.axis` of `batch` samples of `[C, T, Y, X]` with
    /// `w: [C, k]` (the GPU twin of [`crate::nn::conv::depthwise_axis`], batched).
    fn dw_axis_forward(
        &self,
        x: &[f32],
        batch: usize,
        sh: DwShape,
        a: &AxisConv,
        w: &[f32],
    ) -> Result<Vec<f32>, CudaError> {
        let (nin, nout) = (
            sh.ind.iter().product::<usize>(),
            sh.outd.iter().product::<usize>(),
        );
        check_len(batch * sh.c * nin, x.len())?;
        check_len(sh.c * a.k, w.len())?;
        let (xd, wd) = (self.to_device(x)?, self.to_device(w)?);
        let mut yd = self.device_zeros(batch * sh.c * nout)?;
        self.dw_forward_dev(&xd, batch, sh, a, &wd, &mut yd)?;
        self.to_host(&yd, batch * sh.c * nout)
    }

    /// Input and weight gradients of `dw_axis_forward`: `(dx, dw)`, summed over the
    /// batch (the CPU twin accumulates per sample into the same buffers).
    fn dw_axis_backward(
        &self,
        x: &[f32],
        dy: &[f32],
        batch: usize,
        sh: DwShape,
        a: &AxisConv,
        w: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
        let (nin, nout) = (
            sh.ind.iter().product::<usize>(),
            sh.outd.iter().product::<usize>(),
        );
        check_len(batch * sh.c * nin, x.len())?;
        check_len(batch * sh.c * nout, dy.len())?;
        check_len(sh.c * a.k, w.len())?;
        let (xd, gd, wd) = (self.to_device(x)?, self.to_device(dy)?, self.to_device(w)?);
        let mut dxd = self.device_zeros(x.len())?;
        let mut dwd = self.device_zeros(w.len())?;
        self.dw_dinput_dev(&gd, batch, sh, a, &wd, &mut dxd)?;
        self.dw_dweight_dev(&xd, &gd, batch, sh, a, &mut dwd)?;
        Ok((self.to_host(&dxd, x.len())?, self.to_host(&dwd, w.len())?))
    }

    /// `C = alpha·A·B + beta·C` (batched, strided; host in, host out). `c` is the initial `C`.
    fn gemm(&self, d: &GemmDesc, a: &[f32], b: &[f32], c: &[f32]) -> Result<Vec<f32>, CudaError> {
        let (ad, bd) = (self.to_device(a)?, self.to_device(b)?);
        let mut cd = self.to_device(c)?;
        self.gemm_dev(d, &ad, &bd, &mut cd)?;
        self.to_host(&cd, c.len())
    }

    /// `gemm` with the convolution epilogue (host in, host out): returns
    /// `C = act(alpha·A·B + beta·C + bias[row])` and the values before the activation.
    fn gemm_bias_act(
        &self,
        d: &GemmDesc,
        a: &[f32],
        b: &[f32],
        c: &[f32],
        bias: &[f32],
        kind: ActKind,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
        let (ad, bd, bv) = (
            self.to_device(a)?,
            self.to_device(b)?,
            self.to_device(bias)?,
        );
        let mut cd = self.to_device(c)?;
        let mut pre = self.device_zeros(c.len())?;
        let out = GemmOut {
            c: &mut cd,
            bias: Some(&bv),
            act: Some((kind, &mut pre)),
        };
        self.gemm_bias_act_dev(d, &ad, &bd, out)?;
        Ok((self.to_host(&cd, c.len())?, self.to_host(&pre, c.len())?))
    }

    /// `gemm_sum_batch_dev` from and to the host: `C = alpha·Σ_z A[z]·B[z] + beta·C`.
    fn gemm_sum_batch(
        &self,
        d: &GemmDesc,
        a: &[f32],
        b: &[f32],
        c: &[f32],
    ) -> Result<Vec<f32>, CudaError> {
        let (ad, bd) = (self.to_device(a)?, self.to_device(b)?);
        let mut cd = self.to_device(c)?;
        self.gemm_sum_batch_dev(d, &ad.as_view(), &bd.as_view(), &mut cd)?;
        self.to_host(&cd, c.len())
    }

    /// `col[b, (c, p, q, s), o]` of `batch` samples `x: [c, T, Y, X]` (the GPU twin of
    /// [`crate::nn::conv::im2col`], batched).
    fn im2col(
        &self,
        x: &[f32],
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
    ) -> Result<Vec<f32>, CudaError> {
        let n = batch * c * g.kvol() * outd.iter().product::<usize>();
        check_len(batch * c * ind.iter().product::<usize>(), x.len())?;
        let xd = self.to_device(x)?;
        let mut cd = self.device_zeros(n)?;
        self.im2col_dev(&xd, batch, &ConvDims { c, ind, g, outd }, &mut cd)?;
        self.to_host(&cd, n)
    }

    /// The adjoint of `im2col`: `dx` from `col` (written, not accumulated).
    fn col2im(
        &self,
        col: &[f32],
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
    ) -> Result<Vec<f32>, CudaError> {
        let n = batch * c * ind.iter().product::<usize>();
        check_len(
            batch * c * g.kvol() * outd.iter().product::<usize>(),
            col.len(),
        )?;
        let cd = self.to_device(col)?;
        let mut xd = self.device_zeros(n)?;
        self.col2im_dev(&cd, batch, &ConvDims { c, ind, g, outd }, &mut xd)?;
        self.to_host(&xd, n)
    }

    /// Pooling of `n` blocks `[T, Y, X]` with window = stride = `k`: `(y, argmax)`, the argmax
    /// an index inside each block (the GPU twin of [`crate::nn::ops::Pool`]'s forward pass).
    fn pool_forward(
        &self,
        kind: PoolKind,
        x: &[f32],
        n: usize,
        ind: [usize; 3],
        k: [usize; 3],
    ) -> Result<(Vec<f32>, Vec<u32>), CudaError> {
        let nout = n * (0..3).map(|a| ind[a] / k[a].max(1)).product::<usize>();
        check_len(n * ind.iter().product::<usize>(), x.len())?;
        let xd = self.upload(x)?;
        let mut yd = self.zeros::<f32>(nout)?;
        let mut ad = self.zeros::<u32>(nout)?;
        self.pool_forward_dev(&xd, &PoolShape { kind, n, ind, k }, &mut yd, &mut ad)?;
        Ok((self.download(&yd, nout)?, self.download(&ad, nout)?))
    }

    /// `dx` of `pool_forward` from `dy` and its argmax (gather form, no atomics).
    fn pool_backward(
        &self,
        kind: PoolKind,
        dy: &[f32],
        argmax: &[u32],
        n: usize,
        ind: [usize; 3],
        k: [usize; 3],
    ) -> Result<Vec<f32>, CudaError> {
        let nout = n * (0..3).map(|a| ind[a] / k[a].max(1)).product::<usize>();
        let nx = n * ind.iter().product::<usize>();
        check_len(nout, dy.len())?;
        check_len(nout, argmax.len())?;
        let (gd, ad) = (self.upload(dy)?, self.upload(argmax)?);
        let mut xd = self.zeros::<f32>(nx)?;
        self.pool_backward_dev(&gd, &ad, &PoolShape { kind, n, ind, k }, &mut xd)?;
        self.download(&xd, nx)
    }

    /// Nearest up-sampling of `n` blocks `[T, Y, X]` by `scale` (forward = true) or its adjoint.
    fn upsample(
        &self,
        forward: bool,
        v: &[f32],
        n: usize,
        ind: [usize; 3],
        scale: [usize; 3],
    ) -> Result<Vec<f32>, CudaError> {
        let nin = n * ind.iter().product::<usize>();
        let nout = nin * scale.iter().product::<usize>();
        let (len_in, len_out) = if forward { (nin, nout) } else { (nout, nin) };
        check_len(len_in, v.len())?;
        let vd = self.upload(v)?;
        let mut od = self.zeros::<f32>(len_out)?;
        self.upsample_dev(forward, &vd, n, ind, scale, &mut od)?;
        self.download(&od, len_out)
    }

    /// Channel concatenation of per-sample blocks of `la` and `ls` values.
    fn concat(
        &self,
        a: &[f32],
        s: &[f32],
        batch: usize,
        la: usize,
        ls: usize,
    ) -> Result<Vec<f32>, CudaError> {
        check_len(batch * la, a.len())?;
        check_len(batch * ls, s.len())?;
        let (ad, sd) = (self.upload(a)?, self.upload(s)?);
        let mut yd = self.zeros::<f32>(batch * (la + ls))?;
        self.concat_dev(&ad, &sd, batch, la, ls, &mut yd)?;
        self.download(&yd, batch * (la + ls))
    }

    /// The adjoint of `concat`.
    fn split(
        &self,
        dy: &[f32],
        batch: usize,
        la: usize,
        ls: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
        check_len(batch * (la + ls), dy.len())?;
        let gd = self.upload(dy)?;
        let mut ad = self.zeros::<f32>(batch * la)?;
        let mut sd = self.zeros::<f32>(batch * ls)?;
        self.split_dev(&gd, batch, la, ls, &mut ad, &mut sd)?;
        Ok((
            self.download(&ad, batch * la)?,
            self.download(&sd, batch * ls)?,
        ))
    }

    /// `(mean((p − t)²), ∂/∂p)`, the partial sums added on the host in block order.
    fn mse(&self, pred: &[f32], target: &[f32]) -> Result<(f64, Vec<f32>), CudaError> {
        check_len(pred.len(), target.len())?;
        let n = pred.len();
        let (pd, td) = (self.upload(pred)?, self.upload(target)?);
        let mut gd = self.zeros::<f32>(n)?;
        let l = self.mse_dev(&pd, &td, n, &mut gd)?;
        Ok((l, self.download(&gd, n)?))
    }

    /// The relative-L2 loss of `batch` samples and its gradient (host in, host out).
    fn rel_l2(
        &self,
        pred: &[f32],
        target: &[f32],
        batch: usize,
    ) -> Result<(f64, Vec<f32>), CudaError> {
        check_len(pred.len(), target.len())?;
        let n = pred.len();
        let per = n / batch.max(1);
        check_len(n, per * batch)?;
        let (pd, td) = (self.upload(pred)?, self.upload(target)?);
        let mut gd = self.zeros::<f32>(n)?;
        let l = self.rel_l2_dev(&pd, &td, batch, per, &mut gd)?;
        Ok((l, self.download(&gd, n)?))
    }

    /// `Σ g²` in f64 (for global-norm clipping).
    fn sumsq(&self, g: &[f32]) -> Result<f64, CudaError> {
        let gd = self.upload(g)?;
        self.sumsq_dev(&gd, g.len())
    }

    /// One AdamW step on one parameter array: returns the new `(w, m, v)`.
    fn adamw(
        &self,
        w: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
        step: &AdamStep,
    ) -> Result<AdamState, CudaError> {
        let n = w.len();
        for len in [g.len(), m.len(), v.len()] {
            check_len(n, len)?;
        }
        let mut wd = self.upload(w)?;
        let gd = self.upload(g)?;
        let mut md = self.upload(m)?;
        let mut vd = self.upload(v)?;
        self.adamw_dev(&mut wd, &gd, &mut md, &mut vd, n, step)?;
        Ok((
            self.download(&wd, n)?,
            self.download(&md, n)?,
            self.download(&vd, n)?,
        ))
    }
}
