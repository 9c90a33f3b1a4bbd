//! The pair factorisation's kernels (kernels/pair.cu): dense kernel rebuild, factor gradients.

use super::super::{driver_err, CudaError, Gpu};
use super::{need, DevBuf};
use crate::cuda::Kernel;
use cudarc::driver::PushKernelArg;

/// Pair-factor geometry, laid out as `struct PairParams` in kernels/pair.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct PairParams {
    oi: u32,
    rank: u32,
    k: [u32; 3],
    has_t: u32,
}

// SAFETY: `repr(C)`, u32 fields only (no padding, no pointers), the order of `struct PairParams`.
unsafe impl cudarc::driver::DeviceRepr for PairParams {}

impl Gpu {
    fn pair_params(oi: usize, rank: usize, k: [usize; 3], axes: &[usize]) -> PairParams {
        PairParams {
            oi: oi as u32,
            rank: rank as u32,
            k: k.map(|v| v as u32),
            has_t: u32::from(axes.first() == Some(&0)),
        }
    }

    /// The factor buffers as (t, y, x); a 2-D layer has no t factor and passes its y factor in
    /// that place (never read: `has_t` = 0).
    fn pair_slots<'a>(
        fs: &'a [DevBuf],
        axes: &[usize],
        oi: usize,
        rank: usize,
        k: [usize; 3],
    ) -> Result<[&'a DevBuf; 3], CudaError> {
        if fs.len() != axes.len() || !(axes == [0, 1, 2] || axes == [1, 2]) {
            return Err(CudaError::Invalid(format!(
                "pair factors: {} arrays for axes {axes:?}",
                fs.len()
            )));
        }
        for (f, &ax) in fs.iter().zip(axes) {
            need("pair factor", f.len(), oi * rank * k[ax])?;
        }
        Ok(if axes.len() == 3 {
            [&fs[0], &fs[1], &fs[2]]
        } else {
            [&fs[0], &fs[0], &fs[1]]
        })
    }

    /// `W[o, i] = Σ_r ⊗ factors` into `w: [Co·Ci, kvol]`.
    pub fn pair_rebuild_dev(
        &self,
        fs: &[DevBuf],
        axes: &[usize],
        (oi, rank, k): (usize, usize, [usize; 3]),
        w: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let [ft, fy, fx] = Self::pair_slots(fs, axes, oi, rank, k)?;
        let n = oi * k.iter().product::<usize>();
        need("pair kernel", w.len(), n)?;
        let p = Self::pair_params(oi, rank, k, axes);
        let f = self.function(Kernel::PairRebuild)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(ft).arg(fy).arg(fx).arg(w).arg(&p);
        // SAFETY: arguments match pair_rebuild_f32(const float*×3, float*, PairParams); every
        // factor holds oi·R·k_axis values and w oi·kvol (checked).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }

    /// The gradients of every factor from the dense kernel gradient `dw`, added to `outs` (one
    /// array per factor, in the order of `fs`), in one launch.
    pub fn pair_factor_grads_dev(
        &self,
        fs: &[DevBuf],
        axes: &[usize],
        (oi, rank, k): (usize, usize, [usize; 3]),
        dw: &DevBuf,
        outs: &mut [DevBuf],
    ) -> Result<(), CudaError> {
        let [ft, fy, fx] = Self::pair_slots(fs, axes, oi, rank, k)?;
        need(
            "pair kernel gradient",
            dw.len(),
            oi * k.iter().product::<usize>(),
        )?;
        if outs.len() != axes.len() {
            return Err(CudaError::Invalid(format!(
                "pair factor gradients: {} arrays for {} factors",
                outs.len(),
                axes.len()
            )));
        }
        let mut total = 0;
        for (o, &ax) in outs.iter().zip(axes) {
            need("pair factor gradient", o.len(), oi * rank * k[ax])?;
            total += oi * rank * k[ax];
        }
        let p = Self::pair_params(oi, rank, k, axes);
        let f = self.function(Kernel::PairFactorGrad)?;
        let (first, rest) = outs
            .split_first_mut()
            .ok_or_else(|| CudaError::Invalid("pair factor gradients: no factor".into()))?;
        let (second, rest) = rest
            .split_first_mut()
            .ok_or_else(|| CudaError::Invalid("pair factor gradients: one factor".into()))?;
        // 2-D layers have two factors; the kernel never touches the third slot then.
        let null = 0u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(ft).arg(fy).arg(fx).arg(dw).arg(first).arg(second);
        match rest.first_mut() {
            Some(third) => l.arg(third),
            None => l.arg(&null),
        };
        l.arg(&p);
        // SAFETY: arguments match pair_factor_grad_f32(const float*×4, float*×3, PairParams);
        // the factors and dw were checked above, and each slot's gradient holds its factor's
        // oi·rank·k_axis entries (the third pointer is null, and unread, for 2-D layers).
        unsafe { l.launch(Self::launch_config(total)) }.map_err(driver_err)?;
        Ok(())
    }
}
