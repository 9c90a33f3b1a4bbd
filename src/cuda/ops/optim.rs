//! The optimiser's kernels (kernels/optim.cu): Σg², clipping, multi-tensor zeroing and AdamW.

use super::super::{driver_err, AdamStep, CudaError, Gpu};
use super::{need, DevBuf};
use crate::cuda::Kernel;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

impl Gpu {
    /// `Σ g²` over the first `n` values, in f64.
    pub fn sumsq_dev(&self, g: &DevBuf, n: usize) -> Result<f64, CudaError> {
        need("sum of squares input", g.len(), n)?;
        self.sumsq_all_dev(&[g])
    }

    /// The per-block partials of `Σ g²` over the buffers `gs` (one launch) and their count;
    /// `None` when there is nothing to sum.
    fn sumsq_partials(&self, gs: &[&DevBuf]) -> Result<Option<(CudaSlice<f64>, usize)>, CudaError> {
        // Each array gets the blocks a launch over it alone would have, so the partials, and
        // the host's sum of them in order, are those of one launch per array.
        let refs: Vec<TensorRef> = gs
            .iter()
            .map(|g| TensorRef {
                w: 0,
                g: g.device_ptr(&self.stream).0,
                m: 0,
                v: 0,
                n: g.len() as u64,
                first_block: 0,
                blocks: Self::reduction_blocks(g.len()) as u32,
            })
            .collect();
        let Some((table, count, total, cfg)) = self.multi_launch("sumsq_multi_f32", refs)? else {
            return Ok(None);
        };
        let mut part = self.uninit::<f64>(total)?;
        let f = self.function(Kernel::SumsqMulti)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&table).arg(&count).arg(&mut part);
        // SAFETY: arguments match sumsq_multi_f32(const TensorRef*, unsigned, double*); the
        // table holds `count` entries whose pointers are the live buffers of `gs` (borrowed
        // for this call; the kernel is ordered before any later free on this stream), each
        // read below its length; `total` blocks write one partial each into `part`.
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        Ok(Some((part, total)))
    }

    /// `Σ g²` over every value of several buffers (all of a model's gradients): one partial
    /// per block of every buffer into one array, so one copy back and one wait per call.
    pub fn sumsq_all_dev(&self, gs: &[&DevBuf]) -> Result<f64, CudaError> {
        Ok(match self.sumsq_partials(gs)? {
            Some((part, total)) => self.download(&part, total)?.iter().sum(),
            None => 0.0,
        })
    }

    /// The global norm of the gradients `gs` and the clipping factor for `clip_norm` (as
    /// `AdamConfig::step_scalars` forms them), left on the device as `[norm, factor]` for
    /// [`Gpu::adamw_all_dev`]: two launches and no wait. (The norm's last additions are a
    /// fixed tree on the device, not the host's sum in block order: the same to a few ulp.)
    pub fn clip_dev(&self, gs: &[&DevBuf], clip_norm: f64) -> Result<CudaSlice<f64>, CudaError> {
        let mut out = self.uninit::<f64>(2)?;
        let (part, total) = match self.sumsq_partials(gs)? {
            Some(p) => p,
            None => (self.zeros::<f64>(1)?, 0),
        };
        let n = u32::try_from(total)
            .map_err(|_| CudaError::TooLarge(format!("{total} partial sums for one norm")))?;
        let f = self.function(Kernel::ClipScale)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&part).arg(&n).arg(&clip_norm).arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match clip_scale_f64(const double*, unsigned, double, double*);
        // one 256-thread block as its shared tree assumes; part holds n values (at least one
        // allocated), out two.
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        Ok(out)
    }

    /// The table of a multi-tensor launch of `kernel` on the device (each entry's blocks
    /// numbered in turn) as a device address, its entry count, its total of blocks, and the
    /// launch: one 256-thread block each. `None` when there is nothing to launch. A model's
    /// buffers stay put from step to step, so the table uploaded last for `kernel` is reused
    /// when the new one is the same, entry for entry: a training step then copies nothing to
    /// the device for its zeroing, norm and update.
    fn multi_launch(
        &self,
        kernel: &'static str,
        mut refs: Vec<TensorRef>,
    ) -> Result<Option<(u64, u32, usize, LaunchConfig)>, CudaError> {
        let mut total = 0usize;
        for r in &mut refs {
            r.first_block = total as u32;
            total += r.blocks as usize;
        }
        if total == 0 {
            return Ok(None);
        }
        if total > i32::MAX as usize {
            return Err(CudaError::TooLarge(format!(
                "multi-tensor launch of {total} blocks"
            )));
        }
        let count = refs.len() as u32;
        // A poisoned lock only means a thread panicked mid-insert; the map is still valid.
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let table = match tables.get(kernel) {
            Some((cached, dev)) if *cached == refs => dev.device_ptr(&self.stream).0,
            _ => {
                let dev = self.upload(&refs)?;
                let ptr = dev.device_ptr(&self.stream).0;
                // The table it replaces is freed in stream order, after the launches that
                // read it.
                tables.insert(kernel, (refs, dev));
                ptr
            }
        };
        let cfg = LaunchConfig {
            grid_dim: (total as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        Ok(Some((table, count, total, cfg)))
    }

    /// Zeroes every buffer of `bufs` (a model's gradients) in one launch.
    pub fn zero_all_dev(&self, bufs: &mut [&mut DevBuf]) -> Result<(), CudaError> {
        let refs: Vec<TensorRef> = bufs
            .iter_mut()
            .map(|b| {
                let n = b.len();
                TensorRef {
                    w: b.device_ptr_mut(&self.stream).0,
                    g: 0,
                    m: 0,
                    v: 0,
                    n: n as u64,
                    first_block: 0,
                    blocks: Self::grid_blocks(n),
                }
            })
            .collect();
        let Some((table, count, _, cfg)) = self.multi_launch("zero_multi_f32", refs)? else {
            return Ok(());
        };
        let f = self.function(Kernel::ZeroMulti)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&table).arg(&count);
        // SAFETY: arguments match zero_multi_f32(const TensorRef*, unsigned); the table's
        // `w` pointers are the live, mutably borrowed buffers of `bufs` (distinct &mut
        // borrows), each written below its length only.
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        Ok(())
    }

    /// One AdamW step on every parameter array of a model (value, gradient, first and second
    /// moment, all the value's length) in one launch. With `clip` ([`Gpu::clip_dev`]'s output)
    /// the clipping factor is read on the device and `step.scale` is ignored.
    pub fn adamw_all_dev(
        &self,
        params: &mut [(&mut DevBuf, &DevBuf, &mut DevBuf, &mut DevBuf)],
        step: &AdamStep,
        clip: Option<&CudaSlice<f64>>,
    ) -> Result<(), CudaError> {
        need("clipping factor", clip.map_or(2, |c| c.len()), 2)?;
        let mut refs = Vec::with_capacity(params.len());
        for (w, g, m, v) in params.iter_mut() {
            let n = w.len();
            for (what, len) in [
                ("adamw g", g.len()),
                ("adamw m", m.len()),
                ("adamw v", v.len()),
            ] {
                need(what, len, n)?;
            }
            refs.push(TensorRef {
                w: w.device_ptr_mut(&self.stream).0,
                g: g.device_ptr(&self.stream).0,
                m: m.device_ptr_mut(&self.stream).0,
                v: v.device_ptr_mut(&self.stream).0,
                n: n as u64,
                first_block: 0,
                blocks: Self::grid_blocks(n),
            });
        }
        let Some((table, count, _, cfg)) = self.multi_launch("adamw_multi_f32", refs)? else {
            return Ok(());
        };
        let f = self.function(Kernel::AdamwMulti)?;
        let null = 0u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&table).arg(&count).arg(step);
        match clip {
            Some(c) => l.arg(c),
            None => l.arg(&null),
        };
        // SAFETY: arguments match adamw_multi_f32(const TensorRef*, unsigned, AdamParams,
        // const double*): the last a null pointer or a buffer of at least 2 values; the
        // table's pointers are the live, mutably borrowed buffers of `params` (g, m and v at
        // least as long as w, checked), each touched below its length only, and no two
        // entries share a buffer (distinct &mut borrows).
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        Ok(())
    }

    /// One AdamW step on the first `n` values of a parameter array, in place.
    pub fn adamw_dev(
        &self,
        w: &mut DevBuf,
        g: &DevBuf,
        m: &mut DevBuf,
        v: &mut DevBuf,
        n: usize,
        step: &AdamStep,
    ) -> Result<(), CudaError> {
        for (what, len) in [
            ("w", w.len()),
            ("g", g.len()),
            ("m", m.len()),
            ("v", v.len()),
        ] {
            need(&format!("adamw {what}"), len, n)?;
        }
        let f = self.function(Kernel::Adamw)?;
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(w).arg(g).arg(m).arg(v).arg(&n64).arg(step);
        // SAFETY: arguments match adamw_f32(float*, const float*, float*, float*, unsigned long
        // long, AdamParams); all four buffers hold at least n values (checked).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }
}

/// One tensor of a multi-tensor launch, laid out as `struct TensorRef` in kernels/optim.cu:
/// device addresses of its arrays (0 where the kernel does not read one), its length, and the
/// launch's blocks that serve it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::cuda) struct TensorRef {
    w: u64,
    g: u64,
    m: u64,
    v: u64,
    n: u64,
    first_block: u32,
    blocks: u32,
}

// SAFETY: `repr(C)`, five u64 then two u32 (48 bytes, no padding), the order and types of
// `struct TensorRef` in kernels/optim.cu (its pointers are 64-bit).
unsafe impl cudarc::driver::DeviceRepr for TensorRef {}

/// The `(w, g, m, v)` rows [`Gpu::adamw_all_dev`] takes, from parallel arrays of weights,
/// gradients and the two moments.
pub fn adam_rows<'a>(
    w: &'a mut [DevBuf],
    g: &'a [DevBuf],
    m: &'a mut [DevBuf],
    v: &'a mut [DevBuf],
) -> Vec<(&'a mut DevBuf, &'a DevBuf, &'a mut DevBuf, &'a mut DevBuf)> {
    w.iter_mut()
        .zip(g)
        .zip(m.iter_mut().zip(v))
        .map(|((w, g), (m, v))| (w, g, m, v))
        .collect()
}
