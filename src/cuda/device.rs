//! Launchers on device buffers: what the GPU layers chain without copies to the host. The host
//! launchers in `cuda/mod.rs` (and the parity tests) go through these.

use super::{driver_err, AdamStep, ConvParams, CudaError, GemmDesc, Gpu, UpParams};
use crate::nn::conv::{AxisConv, DwShape, Geom};
use crate::nn::ops::{ActKind, PoolKind};
use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

/// A buffer of `f32` on the device.
pub type DevBuf = CudaSlice<f32>;

/// The convolution epilogue of a GEMM: bias, activation, and where the pre-activation goes.
struct Epilogue<'a> {
    bias: &'a DevBuf,
    has_bias: i32,
    pre: &'a mut DevBuf,
    kind: i32,
}

/// The tiled GEMM's parameters, laid out as `struct TiledParams` in kernels/gemm.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct TiledParams {
    g: GemmDesc,
    splits: u32,
    k_chunk: u32,
    a_m_contig: i32,
    b_n_contig: i32,
    partial: i32,
    unused: i32,
}

// SAFETY: `repr(C)`: a GemmDesc (96 bytes, 8-byte aligned, no padding: see its impl) and six
// 4-byte fields (24 bytes, so the size stays a multiple of 8 with no tail padding); matches
// `struct TiledParams` in kernels/gemm.cu field for field.
unsafe impl cudarc::driver::DeviceRepr for TiledParams {}

/// B of the tiled GEMM as an im2col matrix of a convolution input, laid out as
/// `struct ConvView` in kernels/gemm.cu (mode 0: an ordinary strided B).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct ConvView {
    mode: u32,
    unused: u32,
    /// Values between samples of the input.
    x_bs: u64,
    g: ConvParams,
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

/// How [`Gpu::gemm_plan`] runs a GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmPlan {
    /// Tile height of the tiled kernel (32, 64 or 128 rows).
    pub bm: usize,
    /// Slices of k run as separate blocks (1: none).
    pub splits: usize,
    /// k values per slice.
    pub k_chunk: usize,
    /// The 64 × 64 baseline kernel instead (`WAVECP_GEMM=basic`).
    pub basic: bool,
}

fn need(what: &str, len: usize, at_least: usize) -> Result<(), CudaError> {
    if len < at_least {
        return Err(CudaError::Driver(format!(
            "{what}: device buffer of {len} values, {at_least} needed"
        )));
    }
    Ok(())
}

impl Gpu {
    /// Copies host values to a new device buffer.
    pub fn to_device(&self, v: &[f32]) -> Result<DevBuf, CudaError> {
        self.upload(v)
    }

    /// A zero-filled device buffer of `n` values (at least one: CUDA refuses empty ones).
    pub fn device_zeros(&self, n: usize) -> Result<DevBuf, CudaError> {
        self.zeros(n)
    }

    /// A device buffer of `n` values (at least one) with unspecified contents, for an output
    /// the next kernel writes in full: it skips the memset of [`Gpu::device_zeros`] (one write
    /// pass over the tensor). The CUDA emulator fills such memory with NaN, so a value read
    /// before it is written shows up in the parity tests.
    pub fn device_uninit(&self, n: usize) -> Result<DevBuf, CudaError> {
        self.uninit(n)
    }

    /// The first `n` values of a device buffer.
    pub fn to_host(&self, d: &DevBuf, n: usize) -> Result<Vec<f32>, CudaError> {
        self.download(d, n)
    }

    /// All of a device array of f64 (a norm and clipping factor, loss sums) on the host.
    pub fn to_host_f64(&self, d: &CudaSlice<f64>) -> Result<Vec<f64>, CudaError> {
        self.download(d, d.len())
    }

    /// Waits for everything queued on the stream (for timing).
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver_err)
    }

    /// `C = alpha·A·B + beta·C` on device buffers (see [`GemmDesc`]).
    pub fn gemm_dev(
        &self,
        d: &GemmDesc,
        a: &DevBuf,
        b: &DevBuf,
        c: &mut DevBuf,
    ) -> Result<(), CudaError> {
        self.gemm_view_dev(d, &a.as_view(), &b.as_view(), c)
    }

    /// [`Gpu::gemm_dev`] with the operands as views (e.g. one sample of a batch).
    pub fn gemm_view_dev(
        &self,
        d: &GemmDesc,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut DevBuf,
    ) -> Result<(), CudaError> {
        Self::check_gemm(d, "A", a.len(), d.a, d.m, d.k)?;
        Self::check_gemm(d, "B", b.len(), d.b, d.k, d.n)?;
        Self::check_gemm(d, "C", c.len(), d.c, d.m, d.n)?;
        if d.m == 0 || d.n == 0 || d.batch == 0 {
            return Ok(());
        }
        self.run_gemm(d, a, b, c, None, &ConvView::default(), false)
    }

    /// [`Gpu::im2col`] on device buffers.
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
        let f = self.function("im2col", "im2col_f32")?;
        let p = Self::conv_params(batch, c, ind, g, outd);
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(col).arg(&p);
        // SAFETY: arguments match im2col_f32(const float*, float*, ConvParams); x holds
        // batch·c·nin values and col batch·c·kvol·nout (checked), the ranges the kernel indexes.
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }

    /// [`Gpu::col2im`] on device buffers (`dx` written, not accumulated).
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
        let f = self.function("im2col", "col2im_f32")?;
        let p = Self::conv_params(batch, c, ind, g, outd);
        let nin = ind.iter().product::<usize>();
        if nin > u32::MAX as usize || batch * c > u32::MAX as usize {
            return Err(CudaError::Driver(format!(
                "col2im: {batch} x {c} planes of {nin} values exceed the kernel's 32-bit indices"
            )));
        }
        let mut l = self.stream.launch_builder(&f);
        l.arg(col).arg(dx).arg(&p);
        // SAFETY: arguments match col2im_f32(const float*, float*, ConvParams); sizes checked.
        unsafe { l.launch(Self::plane_config(batch * c, nin)) }.map_err(driver_err)?;
        Ok(())
    }

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
        let f = self.function("depthwise", "dw_axis_forward_f32")?;
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
        let f = self.function("depthwise", "dw_axis_dinput_f32")?;
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
        let f = self.function("depthwise", "dw_axis_dweight_f32")?;
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
        let f = self.function("elementwise", "bias_add_f32")?;
        if inner > u32::MAX as usize || batch * c > u32::MAX as usize {
            return Err(CudaError::Driver(format!(
                "bias: {batch} x {c} planes of {inner} values exceed the kernel's 32-bit indices"
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
        let f = self.function("elementwise", "bias_grad_f32")?;
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
        let f = self.function("elementwise", "axpy_f32")?;
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
        let f = self.function("elementwise", "act_forward_f32")?;
        let (n32, k) = (n as u32, Self::kind_code(kind));
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(y).arg(&n32).arg(&k);
        // SAFETY: arguments match act_forward_f32(const float*, float*, unsigned, int); both
        // buffers hold at least n floats (checked).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }
}

impl Gpu {
    pub(super) fn conv_params(
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
    ) -> ConvParams {
        let u = |v: [usize; 3]| v.map(|x| x as u32);
        ConvParams {
            c: c as u32,
            batch: batch as u32,
            in_d: u(ind),
            out_d: u(outd),
            k: u(g.k),
            stride: u(g.stride),
            pad: u(g.pad),
            dil: u(g.dil),
        }
    }
}

impl Gpu {
    /// Sets a device buffer to zero.
    pub fn zero_dev(&self, b: &mut DevBuf) -> Result<(), CudaError> {
        self.stream.memset_zeros(b).map_err(driver_err)
    }
}

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
            return Err(CudaError::Driver(format!(
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
        let f = self.function("pair", "pair_rebuild_f32")?;
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
            return Err(CudaError::Driver(format!(
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
        let f = self.function("pair", "pair_factor_grad_f32")?;
        let (first, rest) = outs
            .split_first_mut()
            .ok_or_else(|| CudaError::Driver("pair factor gradients: no factor".into()))?;
        let (second, rest) = rest
            .split_first_mut()
            .ok_or_else(|| CudaError::Driver("pair factor gradients: one factor".into()))?;
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

impl Gpu {
    fn reduction_cfg(n: usize) -> (usize, LaunchConfig) {
        let blocks = Self::reduction_blocks(n);
        (
            blocks,
            LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            },
        )
    }

    /// `n` blocks of extents `d` as planes of `d[1]·d[2]` values, one per (block, t): the
    /// launch of the pooling and up-sampling kernels, whose indices within a plane are 32-bit.
    fn planes(n: usize, d: [u32; 3], what: &str) -> Result<(usize, usize), CudaError> {
        let (planes, per) = (n * d[0] as usize, d[1] as usize * d[2] as usize);
        if planes > u32::MAX as usize || per.saturating_mul(d[0] as usize) > u32::MAX as usize {
            return Err(CudaError::Driver(format!(
                "{what}: {n} blocks of {d:?} exceed the kernel's 32-bit indices"
            )));
        }
        Ok((planes, per))
    }

    /// The batch and the per-sample sizes of a channel join, as the kernels' 32-bit values.
    fn join_sizes(batch: usize, la: usize, ls: usize) -> Result<(u32, u32, u32), CudaError> {
        if batch > u32::MAX as usize || la + ls > u32::MAX as usize {
            return Err(CudaError::Driver(format!(
                "concat: {batch} samples of {la} + {ls} values exceed the kernel's 32-bit indices"
            )));
        }
        Ok((batch as u32, la as u32, ls as u32))
    }

    /// [`Gpu::pool_forward`] on device buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn pool_forward_dev(
        &self,
        kind: PoolKind,
        x: &DevBuf,
        n: usize,
        ind: [usize; 3],
        k: [usize; 3],
        y: &mut DevBuf,
        argmax: &mut CudaSlice<u32>,
    ) -> Result<(), CudaError> {
        let p = Self::pool_params(kind, n, ind, k);
        let nout = n * p.out_d.iter().map(|&v| v as usize).product::<usize>();
        need("pool input", x.len(), n * ind.iter().product::<usize>())?;
        need("pool output", y.len(), nout)?;
        need("pool argmax", argmax.len(), nout)?;
        let f = self.function("pool", "pool_forward_f32")?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(y).arg(argmax).arg(&p);
        let (planes, per) = Self::planes(n, p.out_d, "pool output")?;
        // SAFETY: arguments match pool_forward_f32(const float*, float*, unsigned*, PoolParams);
        // x holds n·nin values, y and argmax n·nout (checked).
        unsafe { l.launch(Self::plane_config(planes, per)) }.map_err(driver_err)?;
        Ok(())
    }

    /// [`Gpu::pool_backward`] on device buffers (`dx` written).
    #[allow(clippy::too_many_arguments)]
    pub fn pool_backward_dev(
        &self,
        kind: PoolKind,
        dy: &DevBuf,
        argmax: &CudaSlice<u32>,
        n: usize,
        ind: [usize; 3],
        k: [usize; 3],
        dx: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let p = Self::pool_params(kind, n, ind, k);
        let nout = n * p.out_d.iter().map(|&v| v as usize).product::<usize>();
        let nx = n * ind.iter().product::<usize>();
        need("pool output gradient", dy.len(), nout)?;
        need("pool argmax", argmax.len(), nout)?;
        need("pool input gradient", dx.len(), nx)?;
        let f = self.function("pool", "pool_backward_f32")?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(dy).arg(argmax).arg(dx).arg(&p);
        let (planes, per) = Self::planes(n, p.in_d, "pool input")?;
        // SAFETY: arguments match pool_backward_f32(const float*, const unsigned*, float*,
        // PoolParams); dy and argmax hold n·nout values, dx n·nin (checked).
        unsafe { l.launch(Self::plane_config(planes, per)) }.map_err(driver_err)?;
        Ok(())
    }

    /// [`Gpu::upsample`] on device buffers (`out` written).
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
        let name = if forward {
            "upsample_forward_f32"
        } else {
            "upsample_backward_f32"
        };
        let f = self.function("pool", name)?;
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

    /// [`Gpu::concat`] on device buffers.
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
        let f = self.function("pool", "concat_f32")?;
        let (b, la32, ls32) = Self::join_sizes(batch, la, ls)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(a).arg(s).arg(y).arg(&b).arg(&la32).arg(&ls32);
        // SAFETY: arguments match concat_f32(const float*, const float*, float*, unsigned,
        // unsigned, unsigned); sizes checked above.
        unsafe { l.launch(Self::plane_config(batch, la + ls)) }.map_err(driver_err)?;
        Ok(())
    }

    /// [`Gpu::split`] on device buffers.
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
        let f = self.function("pool", "split_f32")?;
        let (b, la32, ls32) = Self::join_sizes(batch, la, ls)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(dy).arg(da).arg(ds).arg(&b).arg(&la32).arg(&ls32);
        // SAFETY: arguments match split_f32(const float*, float*, float*, unsigned, unsigned,
        // unsigned); sizes checked above.
        unsafe { l.launch(Self::plane_config(batch, la + ls)) }.map_err(driver_err)?;
        Ok(())
    }

    /// MSE of the first `n` values and its gradient (written to `grad`); the loss is summed on
    /// the host from per-block partials in block order.
    pub fn mse_dev(
        &self,
        pred: &DevBuf,
        target: &DevBuf,
        n: usize,
        grad: &mut DevBuf,
    ) -> Result<f64, CudaError> {
        let l = self.mse_dev_deferred(pred, target, n, grad)?;
        self.loss_value(&l)
    }

    /// [`Gpu::mse_dev`] with the loss left on the device until [`Gpu::loss_value`]: the
    /// backward pass and the update can be queued before the host waits for it.
    pub fn mse_dev_deferred(
        &self,
        pred: &DevBuf,
        target: &DevBuf,
        n: usize,
        grad: &mut DevBuf,
    ) -> Result<DeviceLoss, CudaError> {
        need("mse prediction", pred.len(), n)?;
        need("mse target", target.len(), n)?;
        need("mse gradient", grad.len(), n)?;
        let (blocks, cfg) = Self::reduction_cfg(n);
        let f = self.function("optim", "mse_f32")?;
        let mut part = self.uninit::<f64>(blocks)?;
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(pred).arg(target).arg(grad).arg(&n64).arg(&mut part);
        // SAFETY: arguments match mse_f32(const float*, const float*, float*, unsigned long
        // long, double*); 256-thread blocks as its shared array assumes, one partial per block
        // (each written by its block).
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        Ok(DeviceLoss {
            sums: part,
            form: LossForm::Mean {
                partials: blocks,
                n,
            },
        })
    }

    /// The value of a loss left on the device (waits for the work queued before it).
    pub fn loss_value(&self, l: &DeviceLoss) -> Result<f64, CudaError> {
        match l.form {
            LossForm::Mean { partials, n } => {
                let sum: f64 = self.download(&l.sums, partials)?.iter().sum();
                Ok(sum / n.max(1) as f64)
            }
            LossForm::RelL2 { batch } => {
                if batch == 0 {
                    return Ok(0.0);
                }
                let den = self.download(&l.sums, batch + 1)?;
                Ok(den[batch] / batch as f64)
            }
        }
    }

    /// `Σ g²` over the first `n` values, in f64.
    pub fn sumsq_dev(&self, g: &DevBuf, n: usize) -> Result<f64, CudaError> {
        need("sum of squares input", g.len(), n)?;
        self.sumsq_all_dev(&[g])
    }

    /// The per-block partials of `Σ g²` over the buffers `gs` (one launch) and their count;
    /// `None` when there is nothing to sum.
    fn sumsq_partials(&self, gs: &[&DevBuf]) -> Result<Option<(CudaSlice<f64>, usize)>, CudaError> {
        // Each array gets the blocks its own sumsq_f32 launch would have, so the partials, and
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
        let f = self.function("optim", "sumsq_multi_f32")?;
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
            .map_err(|_| CudaError::Driver(format!("{total} partial sums for one norm")))?;
        let f = self.function("optim", "clip_scale_f64")?;
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
            return Err(CudaError::Driver(format!(
                "multi-tensor launch of {total} blocks is over the grid limit"
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
        let f = self.function("optim", "zero_multi_f32")?;
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
        let f = self.function("optim", "adamw_multi_f32")?;
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
        let f = self.function("optim", "adamw_f32")?;
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(w).arg(g).arg(m).arg(v).arg(&n64).arg(step);
        // SAFETY: arguments match adamw_f32(float*, const float*, float*, float*, unsigned long
        // long, AdamParams); all four buffers hold at least n values (checked).
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
        let f = self.function("elementwise", "act_backward_f32")?;
        let (n32, k) = (n as u32, Self::kind_code(kind));
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(dy).arg(dx).arg(&n32).arg(&k);
        // SAFETY: arguments match act_backward_f32(const float*, const float*, float*,
        // unsigned, int); all three buffers hold at least n floats (checked).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }
}

impl Gpu {
    /// Relative-L2 loss of `batch` samples of `per` values each (the CPU's `LossKind::RelL2`):
    /// the loss, with its gradient written to `grad`.
    pub fn rel_l2_dev(
        &self,
        pred: &DevBuf,
        target: &DevBuf,
        batch: usize,
        per: usize,
        grad: &mut DevBuf,
    ) -> Result<f64, CudaError> {
        let l = self.rel_l2_dev_deferred(pred, target, batch, per, grad)?;
        self.loss_value(&l)
    }

    /// [`Gpu::rel_l2_dev`] with the loss left on the device until [`Gpu::loss_value`]. The
    /// per-sample norms, the gradient's denominators and the loss's sum are formed on the
    /// device by one thread in the order and f64 operations the host would use.
    pub fn rel_l2_dev_deferred(
        &self,
        pred: &DevBuf,
        target: &DevBuf,
        batch: usize,
        per: usize,
        grad: &mut DevBuf,
    ) -> Result<DeviceLoss, CudaError> {
        let n = batch * per;
        need("rel_l2 prediction", pred.len(), n)?;
        need("rel_l2 target", target.len(), n)?;
        need("rel_l2 gradient", grad.len(), n)?;
        let mut den = self.uninit::<f64>(batch + 1)?;
        if batch == 0 {
            return Ok(DeviceLoss {
                sums: den,
                form: LossForm::RelL2 { batch },
            });
        }
        let b32 = u32::try_from(batch)
            .map_err(|_| CudaError::Driver(format!("rel_l2 over {batch} samples")))?;
        let f = self.function("optim", "rel_l2_sums_f32")?;
        let mut sums = self.uninit::<f64>(2 * batch)?;
        let per64 = per as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(pred).arg(target).arg(&per64).arg(&mut sums);
        let cfg = LaunchConfig {
            grid_dim: (b32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match rel_l2_sums_f32(const float*, const float*, unsigned long
        // long, double*); one 256-thread block per sample, each writing its two sums of the
        // 2·batch.
        unsafe { l.launch(cfg) }.map_err(driver_err)?;
        let f = self.function("optim", "rel_l2_den_f64")?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&sums).arg(&b32).arg(&mut den);
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match rel_l2_den_f64(const double*, unsigned, double*); one thread
        // reads the 2·batch sums and writes batch + 1 values into den (that long).
        unsafe { l.launch(one) }.map_err(driver_err)?;
        let f = self.function("optim", "rel_l2_grad_f32")?;
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&f);
        l.arg(pred)
            .arg(target)
            .arg(grad)
            .arg(&per64)
            .arg(&n64)
            .arg(&den);
        // SAFETY: arguments match rel_l2_grad_f32(const float*, const float*, float*,
        // unsigned long long, unsigned long long, const double*); the buffers hold n values
        // (checked) and den one per sample (and the loss after them).
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(DeviceLoss {
            sums: den,
            form: LossForm::RelL2 { batch },
        })
    }
}

/// A loss still on the device ([`Gpu::mse_dev_deferred`], [`Gpu::rel_l2_dev_deferred`]):
/// [`Gpu::loss_value`] brings it back, so one wait per training step, at its end.
pub struct DeviceLoss {
    sums: CudaSlice<f64>,
    form: LossForm,
}

enum LossForm {
    /// Σ of `partials` per-block sums, over `n` values.
    Mean { partials: usize, n: usize },
    /// The sum of `batch` relative errors after `batch` denominators.
    RelL2 { batch: usize },
}

impl Gpu {
    /// [`Gpu::gemm_dev`] with the convolution epilogue: `C = act(alpha·A·B + beta·C + bias[row])`
    /// and, with an activation, `pre` = the value before it (same layout as `C`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bias_act_dev(
        &self,
        d: &GemmDesc,
        a: &DevBuf,
        b: &DevBuf,
        c: &mut DevBuf,
        bias: Option<&DevBuf>,
        act: Option<(ActKind, &mut DevBuf)>,
    ) -> Result<(), CudaError> {
        Self::check_gemm(d, "A", a.len(), d.a, d.m, d.k)?;
        Self::check_gemm(d, "B", b.len(), d.b, d.k, d.n)?;
        Self::check_gemm(d, "C", c.len(), d.c, d.m, d.n)?;
        if let Some(bv) = bias {
            need("gemm bias", bv.len(), d.m as usize)?;
        }
        if d.m == 0 || d.n == 0 || d.batch == 0 {
            return Ok(());
        }
        let (av, bv) = (a.as_view(), b.as_view());
        self.with_epilogue(d, bias, act, |epi| {
            self.run_gemm(d, &av, &bv, c, epi, &ConvView::default(), false)
        })
    }

    /// Calls `f` with the convolution epilogue of `bias` and `act` (none when both are
    /// absent); an absent operand of a present epilogue gets a one-value stand-in that the
    /// kernels never touch (has_bias = 0, act < 0). `pre` is checked against C's strides.
    fn with_epilogue(
        &self,
        d: &GemmDesc,
        bias: Option<&DevBuf>,
        act: Option<(ActKind, &mut DevBuf)>,
        f: impl FnOnce(Option<Epilogue<'_>>) -> Result<(), CudaError>,
    ) -> Result<(), CudaError> {
        if bias.is_none() && act.is_none() {
            return f(None);
        }
        let dummy_bias;
        let bias_buf = match bias {
            Some(bv) => bv,
            None => {
                dummy_bias = self.uninit::<f32>(1)?;
                &dummy_bias
            }
        };
        let mut dummy_pre;
        let (kind, pre) = match act {
            Some((k, pre)) => {
                Self::check_gemm(d, "pre", pre.len(), d.c, d.m, d.n)?;
                (Self::kind_code(k), pre)
            }
            None => {
                dummy_pre = self.uninit::<f32>(1)?;
                (-1, &mut dummy_pre)
            }
        };
        f(Some(Epilogue {
            bias: bias_buf,
            has_bias: i32::from(bias.is_some()),
            pre,
            kind,
        }))
    }

    /// How a GEMM is run: the tiled kernel's tile height (32, 64 or 128 rows, from m) and the
    /// split of k, so that a GEMM with few tiles and a long k still occupies every SM.
    pub fn gemm_plan(&self, d: &GemmDesc) -> GemmPlan {
        let (m, n, k, batch) = (d.m as usize, d.n as usize, d.k as usize, d.batch as usize);
        let bm = if let Some((bm, _)) = self.forced_plan {
            bm
        } else if m <= 32 {
            32
        } else if m <= 64 {
            64
        } else {
            128
        };
        let tiles = m.div_ceil(bm) * n.div_ceil(128) * batch.max(1);
        let wanted = if let Some((_, splits)) = self.forced_plan {
            splits.min(k.div_ceil(8))
        } else {
            Self::k_splits(tiles, k, 2 * self.sms)
        };
        // Grid z holds batch × splits; slices are whole panel steps (multiples of 8).
        let wanted = wanted.clamp(1, (65_535 / batch.max(1)).max(1));
        let k_chunk = (k.div_ceil(wanted).div_ceil(8) * 8).max(8);
        GemmPlan {
            bm,
            splits: k.div_ceil(k_chunk).max(1),
            k_chunk,
            basic: self.basic_gemm,
        }
    }

    /// The k split of a GEMM of `tiles` output tiles over `slots` resident blocks (two per
    /// SM): the power of two up to 16 (or, for fewer than 17 tiles, the most slices that fit
    /// in one wave), with slices of at least 128 k values, that minimises
    /// waves × (slice + 64), i.e. the last partial wave costs a whole one and each block pays
    /// a fixed prologue and epilogue worth ≈ 64 k values. Fitted to the H200 sweep of
    /// 2026-12-04 (docs/gpu-runs.md): across the paper models' twelve dense GEMMs it is within
    /// 1.008× of the fastest measured split on average (1.07× at worst); the rule it replaced,
    /// enough splits to fill one wave rounded up, averaged 1.16× (1.38× at worst), since
    /// rounding up spilled a few blocks into a second wave.
    pub fn k_splits(tiles: usize, k: usize, slots: usize) -> usize {
        let slots = slots.max(1);
        if tiles >= slots {
            // Already a full wave: slices would only add the partial sums' traffic.
            return 1;
        }
        let cost = |s: usize| {
            let chunk = k.div_ceil(s).div_ceil(8) * 8;
            (tiles * s).div_ceil(slots) * (chunk + 64)
        };
        // A GEMM of very few tiles (a 1 × 1 convolution's weight gradient: a handful of tiles
        // and k = voxels × batch) needs more than 16 slices to fill one wave: then the most
        // that fit in one wave is a candidate too.
        let fill = (slots / tiles.max(1)).max(16);
        [1, 2, 4, 8, 16, fill]
            .into_iter()
            .filter(|&s| s == 1 || k / s >= 128)
            .min_by_key(|&s| (cost(s), s))
            .unwrap_or(1)
    }

    /// Launches the GEMM `d` (operands checked by the caller) with the plan of
    /// [`Gpu::gemm_plan`], or the 64 × 64 baseline kernel under `WAVECP_GEMM=basic`.
    #[allow(clippy::too_many_arguments)]
    fn run_gemm(
        &self,
        d: &GemmDesc,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut DevBuf,
        epi: Option<Epilogue<'_>>,
        cv: &ConvView,
        sum_batch: bool,
    ) -> Result<(), CudaError> {
        let plan = self.gemm_plan(d);
        if plan.basic && (cv.mode != 0 || sum_batch) {
            return Err(CudaError::Driver(
                "implicit-GEMM convolution or batch sum asked of the basic GEMM kernel".into(),
            ));
        }
        if plan.basic {
            let cfg = LaunchConfig {
                grid_dim: (d.n.div_ceil(64), d.m.div_ceil(64), d.batch),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            return match epi {
                None => {
                    let f = self.function("gemm", "sgemm_strided_f32")?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(a).arg(b).arg(c).arg(d);
                    // SAFETY: arguments match sgemm_strided_f32(const float*, const float*,
                    // float*, GemmParams); the caller's check_gemm bounded every index the
                    // kernel forms by the buffer lengths.
                    unsafe { l.launch(cfg) }.map_err(driver_err).map(|_| ())
                }
                Some(e) => {
                    let f = self.function("gemm", "sgemm_bias_act_f32")?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(a)
                        .arg(b)
                        .arg(c)
                        .arg(d)
                        .arg(e.bias)
                        .arg(&e.has_bias)
                        .arg(e.pre)
                        .arg(&e.kind);
                    // SAFETY: arguments match sgemm_bias_act_f32(const float*, const float*,
                    // float*, GemmParams, const float*, int, float*, int); check_gemm bounded
                    // A, B, C and pre, the bias holds m values, and stand-ins are only touched
                    // when has_bias = 1 or act >= 0, which they are not.
                    unsafe { l.launch(cfg) }.map_err(driver_err).map(|_| ())
                }
            };
        }
        let (m, n) = (d.m as usize, d.n as usize);
        let tp = TiledParams {
            g: *d,
            splits: plan.splits as u32,
            k_chunk: plan.k_chunk as u32,
            a_m_contig: i32::from(d.a[0] == 1),
            b_n_contig: i32::from(d.b[1] == 1),
            partial: i32::from(plan.splits > 1 || sum_batch),
            unused: 0,
        };
        let cfg = LaunchConfig {
            grid_dim: (
                n.div_ceil(128) as u32,
                m.div_ceil(plan.bm) as u32,
                d.batch * plan.splits as u32,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let name = |epi: bool| match (plan.bm, epi) {
            (32, false) => "sgemm_t32_f32",
            (64, false) => "sgemm_t64_f32",
            (_, false) => "sgemm_t128_f32",
            (32, true) => "sgemm_t32_bias_act_f32",
            (64, true) => "sgemm_t64_bias_act_f32",
            (_, true) => "sgemm_t128_bias_act_f32",
        };
        if plan.splits > 1 || sum_batch {
            // Partials of every slice to a workspace, then the ordered sum and the epilogue
            // (with `sum_batch`, over every sample's slices into one C).
            let batch = d.batch as usize;
            // Every (slice, row, column) partial is written by its tile: no memset needed.
            let mut work = self.device_uninit(batch * plan.splits * m * n)?;
            let f = self.function("gemm", name(false))?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(a).arg(b).arg(&mut work).arg(&tp).arg(cv);
            // SAFETY: arguments match sgemm_tNN_f32(const float*, const float*, float*,
            // TiledParams, ConvView). A and B were bounded by check_gemm; with splits > 1 the kernel
            // writes only work[z·m·n + i·n + j], z < batch·splits, i < m, j < n: inside `work`.
            unsafe { l.launch(cfg) }.map_err(driver_err)?;
            let dummy_bias;
            let mut dummy_pre;
            let e = match epi {
                Some(e) => e,
                None => {
                    dummy_bias = self.uninit::<f32>(1)?;
                    dummy_pre = self.uninit::<f32>(1)?;
                    Epilogue {
                        bias: &dummy_bias,
                        has_bias: 0,
                        pre: &mut dummy_pre,
                        kind: -1,
                    }
                }
            };
            let r = self.function("gemm", "sgemm_splitk_reduce_f32")?;
            let (rd, splits) = if sum_batch {
                (
                    GemmDesc {
                        batch: 1,
                        c: [d.c[0], d.c[1], 0],
                        ..*d
                    },
                    (batch * plan.splits) as u32,
                )
            } else {
                (*d, plan.splits as u32)
            };
            let mut l = self.stream.launch_builder(&r);
            l.arg(&work)
                .arg(c)
                .arg(&rd)
                .arg(&splits)
                .arg(e.bias)
                .arg(&e.has_bias)
                .arg(e.pre)
                .arg(&e.kind);
            let outputs = rd.batch as usize * m * n;
            // SAFETY: arguments match sgemm_splitk_reduce_f32(const float*, float*, GemmParams,
            // unsigned, const float*, int, float*, int); it reads work[(b·splits + s)·m·n + r]
            // (inside `work`), and C and pre at the offsets check_gemm bounded; stand-ins are
            // only touched when has_bias = 1 or act >= 0.
            unsafe { l.launch(Self::launch_config(outputs)) }.map_err(driver_err)?;
            return Ok(());
        }
        match epi {
            None => {
                let f = self.function("gemm", name(false))?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(a).arg(b).arg(c).arg(&tp).arg(cv);
                // SAFETY: arguments match sgemm_tNN_f32(const float*, const float*, float*,
                // TiledParams, ConvView); with splits = 1 the kernel indexes A, B and C only through the
                // strides check_gemm bounded.
                unsafe { l.launch(cfg) }.map_err(driver_err)?;
            }
            Some(e) => {
                let f = self.function("gemm", name(true))?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(a)
                    .arg(b)
                    .arg(c)
                    .arg(&tp)
                    .arg(cv)
                    .arg(e.bias)
                    .arg(&e.has_bias)
                    .arg(e.pre)
                    .arg(&e.kind);
                // SAFETY: arguments match sgemm_tNN_bias_act_f32(const float*, const float*,
                // float*, TiledParams, ConvView, const float*, int, float*, int); as above, plus the bias
                // (m values) and pre (bounded like C); stand-ins are never touched.
                unsafe { l.launch(cfg) }.map_err(driver_err)?;
            }
        }
        Ok(())
    }
}

/// A frame set resident on the device: `frames` frames of `n` values each, normalised.
pub struct DevFrames {
    buf: DevBuf,
    frames: usize,
    n: usize,
}

/// Windows on the device: each one's first frame as an index into a [`DevFrames`], checked when
/// made so that every frame a window spans (`span` of them) lies inside the frame set.
pub struct DevWindows {
    first: cudarc::driver::CudaSlice<u32>,
    len: usize,
    span: usize,
    frames: usize,
}

impl DevWindows {
    /// How many windows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Gpu {
    /// Copies `values` (`values.len() / n` frames of `n` values) to the device.
    pub fn frames_to_device(&self, values: &[f32], n: usize) -> Result<DevFrames, CudaError> {
        if n == 0 || !values.len().is_multiple_of(n) {
            return Err(CudaError::Driver(format!(
                "frame set of {} values is not a whole number of {n}-value frames",
                values.len()
            )));
        }
        Ok(DevFrames {
            buf: self.upload(values)?,
            frames: values.len() / n,
            n,
        })
    }

    /// Copies window starts to the device; each window spans `span` frames from its start, and
    /// all of them must lie in `frames`.
    pub fn windows_to_device(
        &self,
        first: &[u32],
        span: usize,
        frames: &DevFrames,
    ) -> Result<DevWindows, CudaError> {
        if let Some(f) = first.iter().find(|&&f| f as usize + span > frames.frames) {
            return Err(CudaError::Driver(format!(
                "a window starting at frame {f} and spanning {span} frames runs past the {} frames on the device",
                frames.frames
            )));
        }
        let len = first.len();
        let first = if first.is_empty() {
            self.zeros(1)?
        } else {
            self.upload(first)?
        };
        Ok(DevWindows {
            first,
            len,
            span,
            frames: frames.frames,
        })
    }

    /// Frames `off .. off + t` of windows `b0 .. b0 + count` of `w`, stacked into `out` as one
    /// batch `[count, t, n]` (the memory of a 2-D `[B, t, 1, ny, nx]` or 3-D `[B, 1, t, ny, nx]`
    /// batch).
    #[allow(clippy::too_many_arguments)]
    pub fn gather_windows_dev(
        &self,
        frames: &DevFrames,
        w: &DevWindows,
        b0: usize,
        count: usize,
        off: usize,
        t: usize,
        out: &mut DevBuf,
    ) -> Result<(), CudaError> {
        if w.frames != frames.frames || b0 + count > w.len || off + t > w.span {
            return Err(CudaError::Driver(format!(
                "gather of windows {b0}..{} frames {off}..{} from {} windows of {} frames (made for {} frames, given {})",
                b0 + count,
                off + t,
                w.len,
                w.span,
                w.frames,
                frames.frames
            )));
        }
        let total = count * t * frames.n;
        need("window batch", out.len(), total)?;
        if total == 0 {
            return Ok(());
        }
        let f = self.function("data", "gather_windows_f32")?;
        let (b0u, cu, offu, tu, n64) = (
            b0 as u32,
            count as u32,
            off as u32,
            t as u32,
            frames.n as u64,
        );
        let mut l = self.stream.launch_builder(&f);
        l.arg(&frames.buf)
            .arg(&w.first)
            .arg(out)
            .arg(&b0u)
            .arg(&cu)
            .arg(&offu)
            .arg(&tu)
            .arg(&n64);
        // SAFETY: arguments match gather_windows_f32(const float*, const unsigned*, float*,
        // unsigned, unsigned, unsigned, unsigned, unsigned long long). Windows b0..b0+count
        // exist (checked); each starts at a frame f with f + span <= frames (checked when `w`
        // was made, against this frame count), and off + t <= span, so every frame read lies
        // in `frames`; out holds count·t·n values (checked).
        unsafe { l.launch(Self::launch_config(total)) }.map_err(driver_err)?;
        Ok(())
    }

    /// [`Gpu::gather_windows_dev`] from and to the host (for the parity test).
    #[allow(clippy::too_many_arguments)]
    pub fn gather_windows(
        &self,
        values: &[f32],
        n: usize,
        first: &[u32],
        span: usize,
        b0: usize,
        count: usize,
        off: usize,
        t: usize,
    ) -> Result<Vec<f32>, CudaError> {
        let fr = self.frames_to_device(values, n)?;
        let w = self.windows_to_device(first, span, &fr)?;
        let mut out = self.zeros(count * t * n)?;
        self.gather_windows_dev(&fr, &w, b0, count, off, t, &mut out)?;
        self.download(&out, count * t * n)
    }
}

/// Geometry of the fused CP chain, laid out as `struct ChainParams` in kernels/cpchain.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ChainParams {
    n: u32,
    c: u32,
    in_d: [u32; 3],
    out_d: [u32; 3],
    k: [u32; 3],
    pad: [i32; 3],
    flip: u32,
    tiles: [u32; 3],
}

// SAFETY: `repr(C)`, 4-byte fields only (no padding, no pointers), the order of
// `struct ChainParams` in kernels/cpchain.cu.
unsafe impl cudarc::driver::DeviceRepr for ChainParams {}

/// Output tiles of the fused chain kernels (t, y, x), by kernel suffix, and their longest filter
/// (kernels/cpchain.cu).
pub(crate) const CHAIN_TILES: [ChainTile; 3] = [
    ChainTile {
        forward: "cp_chain_forward_t32_f32",
        dweight: "cp_chain_dweight_t32_f32",
        tile: [4, 8, 32],
    },
    ChainTile {
        forward: "cp_chain_forward_t16_f32",
        dweight: "cp_chain_dweight_t16_f32",
        tile: [4, 16, 16],
    },
    ChainTile {
        forward: "cp_chain_forward_t8_f32",
        dweight: "cp_chain_dweight_t8_f32",
        tile: [16, 8, 8],
    },
];

/// One tile variant of the fused chain: its two kernels and its output tile (t, y, x).
#[derive(Debug, Clone, Copy)]
pub struct ChainTile {
    pub forward: &'static str,
    pub dweight: &'static str,
    pub tile: [usize; 3],
}
pub const CHAIN_KMAX: usize = 5;

/// One fused CP chain: `batch × c` planes of extents `ind`, filters of lengths `k` with zero
/// padding `pad` along t, y, x (stride 1, dilation 1).
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    pub batch: usize,
    pub c: usize,
    pub ind: [usize; 3],
    pub k: [usize; 3],
    pub pad: [usize; 3],
}

impl Chain {
    /// Output extents `in + 2·pad − k + 1`.
    pub fn out_dims(&self) -> Result<[usize; 3], CudaError> {
        let mut o = [0; 3];
        for (a, oa) in o.iter_mut().enumerate() {
            let (k, p, n) = (self.k[a], self.pad[a], self.ind[a]);
            if k == 0 || k > CHAIN_KMAX || n + 2 * p < k {
                return Err(CudaError::Driver(format!(
                    "fused CP chain: filter {k} with padding {p} on extent {n} along axis {a}"
                )));
            }
            *oa = n + 2 * p + 1 - k;
        }
        Ok(o)
    }

    /// The chain whose forward pass is this one's input gradient: filters reversed, padding
    /// `k − 1 − pad`, input extents this one's output extents.
    pub fn adjoint(&self) -> Result<Chain, CudaError> {
        let o = self.out_dims()?;
        let mut pad = [0; 3];
        for (a, pa) in pad.iter_mut().enumerate() {
            *pa = (self.k[a] - 1).checked_sub(self.pad[a]).ok_or_else(|| {
                CudaError::Driver(format!(
                    "fused CP chain: padding {} beyond filter length {} has no fused adjoint",
                    self.pad[a], self.k[a]
                ))
            })?;
        }
        Ok(Chain {
            ind: o,
            pad,
            ..*self
        })
    }

    /// The kernel variant for these extents: the widest tile the output's x extent fills.
    pub fn tile(&self) -> Result<ChainTile, CudaError> {
        let ox = self.out_dims()?[2];
        Ok(CHAIN_TILES[if ox >= 32 {
            0
        } else if ox >= 16 {
            1
        } else {
            2
        }])
    }

    fn params(&self, flip: bool, tile: &ChainTile) -> Result<(ChainParams, usize), CudaError> {
        let o = self.out_dims()?;
        let tile = tile.tile;
        let tiles = [0, 1, 2].map(|a| o[a].div_ceil(tile[a]));
        let u = |v: usize| v as u32;
        Ok((
            ChainParams {
                n: u(self.batch * self.c),
                c: u(self.c),
                in_d: self.ind.map(u),
                out_d: o.map(u),
                k: self.k.map(u),
                pad: self.pad.map(|p| p as i32),
                flip: flip as u32,
                tiles: tiles.map(u),
            },
            tiles.iter().product(),
        ))
    }

    fn config(&self, ntiles: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (
                ntiles as u32,
                (self.batch * self.c).clamp(1, 65_535) as u32,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn check(&self, x: &DevBuf, w: [&DevBuf; 3], what: &str) -> Result<(), CudaError> {
        need(
            &format!("{what} input"),
            x.len(),
            self.batch * self.c * self.ind.iter().product::<usize>(),
        )?;
        for (a, wa) in w.iter().enumerate() {
            need(&format!("{what} filter {a}"), wa.len(), self.c * self.k[a])?;
        }
        if self.batch * self.c > u32::MAX as usize {
            return Err(CudaError::Driver(format!("{what}: more than 2^32 planes")));
        }
        Ok(())
    }
}

impl Gpu {
    /// The three depthwise passes of a CP layer in one kernel (`flip`: filters reversed, for
    /// the input gradient through [`Chain::adjoint`]); `y` gets `batch·c·out` values.
    pub fn cp_chain_forward_dev(
        &self,
        ch: &Chain,
        flip: bool,
        x: &DevBuf,
        w: [&DevBuf; 3],
        y: &mut DevBuf,
    ) -> Result<(), CudaError> {
        ch.check(x, w, "fused CP chain")?;
        let tile = self.chain_tile(ch)?;
        let (p, ntiles) = ch.params(flip, &tile)?;
        let nout = ch.out_dims()?.iter().product::<usize>();
        need("fused CP chain output", y.len(), ch.batch * ch.c * nout)?;
        if ch.batch * ch.c == 0 || nout == 0 {
            return Ok(());
        }
        let f = self.function("cpchain", tile.forward)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(w[0]).arg(w[1]).arg(w[2]).arg(y).arg(&p);
        // SAFETY: arguments match cp_chain_forward_tNN_f32(const float*, const float* ×3, float*,
        // ChainParams). x holds n·nin values, each filter c·k[a], y n·nout (checked); the kernel
        // reads x only at in-range coordinates and writes y only at in-range outputs; k ≤ KMAX
        // (checked by out_dims), so the shared tiles are large enough.
        unsafe { l.launch(ch.config(ntiles)) }.map_err(driver_err)?;
        Ok(())
    }

    /// The tile variant for `ch`: the forced one ([`Gpu::force_chain_tile`]) or its own.
    fn chain_tile(&self, ch: &Chain) -> Result<ChainTile, CudaError> {
        match self.forced_chain {
            Some(i) => Ok(CHAIN_TILES[i]),
            None => ch.tile(),
        }
    }

    /// Adds the filter gradients of the fused chain (input `x`, output gradient `g`) to
    /// `dw[axis]` (t, y, x), summed over the batch in a fixed order.
    pub fn cp_chain_dweight_dev(
        &self,
        ch: &Chain,
        x: &DevBuf,
        g: &DevBuf,
        w: [&DevBuf; 3],
        dw: [&mut DevBuf; 3],
    ) -> Result<(), CudaError> {
        ch.check(x, w, "fused CP chain gradient")?;
        let tile = self.chain_tile(ch)?;
        let (p, ntiles) = ch.params(false, &tile)?;
        let nout = ch.out_dims()?.iter().product::<usize>();
        let n = ch.batch * ch.c;
        need("fused CP chain output gradient", g.len(), n * nout)?;
        for (a, d) in dw.iter().enumerate() {
            need(
                &format!("fused CP chain filter {a} gradient"),
                d.len(),
                ch.c * ch.k[a],
            )?;
        }
        if n == 0 || nout == 0 {
            return Ok(());
        }
        let taps: usize = ch.k.iter().sum();
        // One partial per (plane, tile, tap), each written by its block: no memset needed.
        let mut part = self.device_uninit(n * ntiles * taps)?;
        let f = self.function("cpchain", tile.dweight)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x)
            .arg(g)
            .arg(w[0])
            .arg(w[1])
            .arg(w[2])
            .arg(&mut part)
            .arg(&p);
        // SAFETY: arguments match cp_chain_dweight_tNN_f32(const float* ×5, float*, ChainParams);
        // sizes checked as for the forward pass, and `part` holds n·ntiles·taps values, one per
        // (plane, tile, tap) the kernel writes.
        unsafe { l.launch(ch.config(ntiles)) }.map_err(driver_err)?;
        let r = self.function("cpchain", "cp_chain_dweight_reduce_f32")?;
        let [d0, d1, d2] = dw;
        let (nu, cu, tu) = (n as u32, ch.c as u32, ntiles as u32);
        let k = ch.k.map(|v| v as u32);
        let mut l = self.stream.launch_builder(&r);
        l.arg(&part)
            .arg(d0)
            .arg(d1)
            .arg(d2)
            .arg(&nu)
            .arg(&cu)
            .arg(&tu)
            .arg(&k[0])
            .arg(&k[1])
            .arg(&k[2]);
        // SAFETY: arguments match cp_chain_dweight_reduce_f32(const float*, float* ×3, unsigned
        // ×6); the kernel reads part[(plane·ntiles + tile)·taps + j] for planes < n, tiles <
        // ntiles, j < taps (within part's n·ntiles·taps) and writes filter a's gradient at
        // channel·k[a] + tap < c·k[a] (each checked above; three distinct &mut buffers).
        unsafe { l.launch(Self::launch_config(ch.c * taps)) }.map_err(driver_err)?;
        Ok(())
    }
}

impl Gpu {
    /// Whether dense convolutions run as implicit GEMMs (the default) rather than through a
    /// stored im2col matrix (`WAVECP_GEMM=basic`, the baseline for comparisons).
    pub fn implicit_conv(&self) -> bool {
        !self.basic_gemm
    }

    /// `C = alpha·A·B + beta·C` (+ the convolution epilogue) where B is an im2col matrix of
    /// the convolution input `x` (`batch` samples of `c` channels over `ind`, geometry `g`,
    /// output extents `outd`), read in place: the GEMM's panel loads gather from `x`, so the
    /// matrix (c·kvol times the input's size) is never stored. `d.b` is ignored. With
    /// [`ConvOperand::Col`], `d` is `[m, nout, c·kvol, batch]` (one output per sample); with
    /// [`ConvOperand::ColT`], `[m, c·kvol, nout, batch]` and the samples' products are summed
    /// into one `C` (a weight gradient: `C = alpha·Σ_s A_s·col_sᵀ + beta·C`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_conv_dev(
        &self,
        d: &GemmDesc,
        a: &CudaView<'_, f32>,
        x: &CudaView<'_, f32>,
        operand: ConvOperand,
        (c, ind, g, outd): (usize, [usize; 3], &Geom, [usize; 3]),
        out: &mut DevBuf,
        bias: Option<&DevBuf>,
        act: Option<(ActKind, &mut DevBuf)>,
    ) -> Result<(), CudaError> {
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
            return Err(CudaError::Driver(format!(
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
            return Err(CudaError::Driver(format!(
                "implicit-GEMM convolution: one sample of {c} x {nin} values is over 2^31"
            )));
        }
        let cv = ConvView {
            mode,
            unused: 0,
            x_bs: (c * nin) as u64,
            g: Self::conv_params(samples, c, ind, g, outd),
        };
        self.with_epilogue(d, bias, act, |epi| {
            self.run_gemm(d, a, x, out, epi, &cv, mode == 2)
        })
    }
}

impl Gpu {
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
        let f = self.function("im2col", "conv_weight_adjoint_f32")?;
        let (cu, iu, ku) = (co as u32, ci as u32, kvol as u32);
        let mut l = self.stream.launch_builder(&f);
        l.arg(w).arg(wa).arg(&cu).arg(&iu).arg(&ku);
        // SAFETY: arguments match conv_weight_adjoint_f32(const float*, float*, unsigned ×3);
        // both buffers hold co·ci·kvol values (checked), the only indices the kernel forms.
        unsafe { l.launch(Self::launch_config(n)) }.map_err(driver_err)?;
        Ok(())
    }
}

impl Gpu {
    /// `C = alpha·Σ_z A[z]·B[z] + beta·C`: the products of a batched GEMM summed into one `C`
    /// (a weight gradient over the samples of a batch) in one launch, split K and an ordered
    /// reduction over (sample, slice); `d.c[2]` is ignored. The baseline kernel
    /// (`WAVECP_GEMM=basic`) runs one GEMM per sample, in sample order.
    pub fn gemm_sum_batch_dev(
        &self,
        d: &GemmDesc,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let one = GemmDesc {
            c: [d.c[0], d.c[1], 0],
            ..*d
        };
        Self::check_gemm(&one, "A", a.len(), d.a, d.m, d.k)?;
        Self::check_gemm(&one, "B", b.len(), d.b, d.k, d.n)?;
        Self::check_gemm(&one, "C", c.len(), one.c, d.m, d.n)?;
        if d.m == 0 || d.n == 0 || d.batch == 0 {
            return Ok(());
        }
        if self.basic_gemm {
            let (sa, sb) = (d.a[2] as usize, d.b[2] as usize);
            // Each sample's view: from its offset to where the last sample's span ends.
            let (la, lb) = (
                a.len() - sa * (d.batch as usize - 1),
                b.len() - sb * (d.batch as usize - 1),
            );
            for z in 0..d.batch as usize {
                let dz = GemmDesc {
                    batch: 1,
                    beta: if z == 0 { d.beta } else { 1.0 },
                    ..one
                };
                let az = a.slice(z * sa..z * sa + la);
                let bz = b.slice(z * sb..z * sb + lb);
                self.run_gemm(&dz, &az, &bz, c, None, &ConvView::default(), false)?;
            }
            return Ok(());
        }
        self.run_gemm(&one, a, b, c, None, &ConvView::default(), true)
    }
}

/// One tensor of a multi-tensor launch, laid out as `struct TensorRef` in kernels/optim.cu:
/// device addresses of its arrays (0 where the kernel does not read one), its length, and the
/// launch's blocks that serve it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TensorRef {
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
