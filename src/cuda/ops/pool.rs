//! Pooling, up-sampling, concat and split (kernels/pool.cu).

use super::super::{driver_err, CudaError, Gpu, PoolParams, UpParams};
use super::{need, DevBuf};
use crate::cuda::Kernel;
use crate::nn::ops::PoolKind;
use cudarc::driver::{CudaSlice, PushKernelArg};

/// A pooling: `n` blocks `[T, Y, X]` of extents `ind`, window = stride = `k`.
#[derive(Debug, Clone, Copy)]
pub struct PoolShape {
    pub kind: PoolKind,
    pub n: usize,
    pub ind: [usize; 3],
    pub k: [usize; 3],
}

impl PoolShape {
    fn params(&self) -> PoolParams {
        let u = |v: [usize; 3]| v.map(|x| x as u32);
        let (ind, k) = (self.ind, self.k);
        PoolParams {
            n: self.n as u32,
            kind: match self.kind {
                PoolKind::Max => 0,
                PoolKind::Avg => 1,
            },
            in_d: u(ind),
            out_d: u([ind[0] / k[0], ind[1] / k[1], ind[2] / k[2]]),
            k: u(k),
        }
    }
}

impl Gpu {
    /// Pooling (see [`PoolShape`]): `y` and the argmax, an
    /// index inside each block (the GPU twin of [`crate::nn::ops::Pool`]'s forward pass).
    pub fn pool_forward_dev(
        &self,
        x: &DevBuf,
        shape: &PoolShape,
        y: &mut DevBuf,
        argmax: &mut CudaSlice<u32>,
    ) -> Result<(), CudaError> {
        let (n, ind) = (shape.n, shape.ind);
        let p = shape.params();
        let nout = n * p.out_d.iter().map(|&v| v as usize).product::<usize>();
        need("pool input", x.len(), n * ind.iter().product::<usize>())?;
        need("pool output", y.len(), nout)?;
        need("pool argmax", argmax.len(), nout)?;
        let f = self.function(Kernel::PoolForward)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(y).arg(argmax).arg(&p);
        let (planes, per) = Self::planes(n, p.out_d, "pool output")?;
        // SAFETY: arguments match pool_forward_f32(const float*, float*, unsigned*, PoolParams);
        // x holds n·nin values, y and argmax n·nout (checked).
        unsafe { l.launch(Self::plane_config(planes, per)) }.map_err(driver_err)?;
        Ok(())
    }

    /// `dx` of [`Gpu::pool_forward_dev`] from `dy` and its argmax (gather form, no atomics;
    /// `dx` written).
    pub fn pool_backward_dev(
        &self,
        dy: &DevBuf,
        argmax: &CudaSlice<u32>,
        shape: &PoolShape,
        dx: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let (n, ind) = (shape.n, shape.ind);
        let p = shape.params();
        let nout = n * p.out_d.iter().map(|&v| v as usize).product::<usize>();
        let nx = n * ind.iter().product::<usize>();
        need("pool output gradient", dy.len(), nout)?;
        need("pool argmax", argmax.len(), nout)?;
        need("pool input gradient", dx.len(), nx)?;
        let f = self.function(Kernel::PoolBackward)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(dy).arg(argmax).arg(dx).arg(&p);
        let (planes, per) = Self::planes(n, p.in_d, "pool input")?;
        // SAFETY: arguments match pool_backward_f32(const float*, const unsigned*, float*,
        // PoolParams); dy and argmax hold n·nout values, dx n·nin (checked).
        unsafe { l.launch(Self::plane_config(planes, per)) }.map_err(driver_err)?;
        Ok(())
    }

    /// Nearest up-sampling of `n` blocks `[T, Y, X]` by `scale` (`forward`) or its adjoint
    /// (`out` written).
    pub fn upsample_dev(
        &self,
        forward: bool,
        v: &DevBuf,
        n: usize,
        ind: [usize; 3],
        scale: [usize; 3],
        out: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let nin = n * ind.iter().product::<usize>();
        let nout = nin * scale.iter().product::<usize>();
        let (len_in, len_out) = if forward { (nin, nout) } else { (nout, nin) };
        need("upsample input", v.len(), len_in)?;
        need("upsample output", out.len(), len_out)?;
        let f = self.function(if forward {
            Kernel::UpsampleForward
        } else {
            Kernel::UpsampleBackward
        })?;
        let p = UpParams {
            n: n as u32,
            in_d: ind.map(|x| x as u32),
            scale: scale.map(|x| x as u32),
        };
        let mut l = self.stream.launch_builder(&f);
        l.arg(v).arg(out).arg(&p);
        let outd = [0, 1, 2].map(|a| (ind[a] * scale[a]) as u32);
        let written = if forward { outd } else { p.in_d };
        let (planes, per) = Self::planes(n, written, "upsample output")?;
        // SAFETY: arguments match upsample_{forward,backward}_f32(const float*, float*,
        // UpParams); the input holds len_in values and the output len_out (checked).
        unsafe { l.launch(Self::plane_config(planes, per)) }.map_err(driver_err)?;
        Ok(())
    }

    /// Channel concatenation of per-sample blocks of `la` and `ls` values.
    pub fn concat_dev(
        &self,
        a: &DevBuf,
        s: &DevBuf,
        batch: usize,
        la: usize,
        ls: usize,
        y: &mut DevBuf,
    ) -> Result<(), CudaError> {
        need("concat first part", a.len(), batch * la)?;
        need("concat second part", s.len(), batch * ls)?;
        need("concat output", y.len(), batch * (la + ls))?;
        let f = self.function(Kernel::Concat)?;
        let (b, la32, ls32) = Self::join_sizes(batch, la, ls)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(a).arg(s).arg(y).arg(&b).arg(&la32).arg(&ls32);
        // SAFETY: arguments match concat_f32(const float*, const float*, float*, unsigned,
        // unsigned, unsigned); sizes checked above.
        unsafe { l.launch(Self::plane_config(batch, la + ls)) }.map_err(driver_err)?;
        Ok(())
    }

    /// The adjoint of [`Gpu::concat_dev`].
    pub fn split_dev(
        &self,
        dy: &DevBuf,
        batch: usize,
        la: usize,
        ls: usize,
        da: &mut DevBuf,
        ds: &mut DevBuf,
    ) -> Result<(), CudaError> {
        need("split input", dy.len(), batch * (la + ls))?;
        need("split first part", da.len(), batch * la)?;
        need("split second part", ds.len(), batch * ls)?;
        let f = self.function(Kernel::Split)?;
        let (b, la32, ls32) = Self::join_sizes(batch, la, ls)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(dy).arg(da).arg(ds).arg(&b).arg(&la32).arg(&ls32);
        // SAFETY: arguments match split_f32(const float*, float*, float*, unsigned, unsigned,
        // unsigned); sizes checked above.
        unsafe { l.launch(Self::plane_config(batch, la + ls)) }.map_err(driver_err)?;
        Ok(())
    }
}
