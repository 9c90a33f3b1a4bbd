//! CUDA through cudarc with run-time loading: what the machine has (`wavecp device`), NVRTC
//! compilation of `kernels/*.cu` for the device's architecture (once per process), and the
//! launchers of the kernels written so far. Builds and runs where no CUDA is installed: a
//! missing driver, NVRTC or device is a [`CudaError`], never a panic.

pub mod bench;
mod cache;
mod compile;
mod conv;
mod device;
mod error;
mod kernels;
pub mod layers;
pub mod model;
mod ops;
mod params;
pub use cache::KernelCache;
pub use compile::*;
pub use conv::{GpuConv, GpuConvT};
pub use device::*;
pub use error::{driver_err, CudaError};
pub use kernels::{ChainVariant, Kernel, KernelFile, TileRows};
pub use ops::{
    adam_rows, Chain, ChainTile, ConvDims, DevBuf, DevFrames, DevWindows, DeviceLoss, GemmOut,
    GemmPlan, PoolShape,
};
pub use params::*;

use crate::nn::conv::{AxisConv, DwShape};
use crate::nn::ops::ActKind;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig};
use cudarc::nvrtc::{CompileOptions, Ptx};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// A device with every kernel compiled and loaded.
pub struct Gpu {
    pub info: DeviceInfo,
    stream: Arc<CudaStream>,
    /// One module per entry of [`KERNELS`], in that order.
    modules: Vec<Arc<CudaModule>>,
    /// Streaming multiprocessors: how many blocks a GEMM needs to fill the device.
    sms: usize,
    /// `WAVECP_GEMM=basic`: every GEMM on the 64 × 64 baseline kernel (for comparisons).
    basic_gemm: bool,
    /// A GEMM tile height and k split imposed on every tiled GEMM ([`Gpu::force_gemm_plan`]).
    forced_plan: Option<(usize, usize)>,
    /// A fused-chain tile variant imposed on every chain ([`Gpu::force_chain_tile`]).
    forced_chain: Option<usize>,
    /// Kernel handles already looked up, by (file, kernel): a training step launches ≈ 70
    /// kernels, and `cuModuleGetFunction` on every launch is host time the GPU waits for.
    functions: std::sync::Mutex<HashMap<Kernel, CudaFunction>>,
    /// The last table of tensors uploaded for each multi-tensor kernel (host copy, device
    /// copy), reused while a model's buffers stay the same.
    #[allow(clippy::type_complexity)]
    tables:
        std::sync::Mutex<HashMap<&'static str, (Vec<ops::TensorRef>, CudaSlice<ops::TensorRef>)>>,
    /// The default memory pool (memory use, and the figures of an out-of-memory error).
    pool: Option<MemPool>,
}

impl Gpu {
    /// Opens device `ordinal` and compiles the kernels for its architecture.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        let ctx = context(ordinal)?;
        // SAFETY: all of wavecp's device work is queued on the context's default stream (no
        // second stream is ever made), so there is no cross-stream use for cudarc's per-buffer
        // events to order; without them an allocation costs no event creation and destruction.
        unsafe { ctx.disable_event_tracking() };
        let pool = keep_freed_memory(&ctx);
        let cc = ctx.compute_capability().map_err(driver_err)?;
        let target = device_kernel_target(cc)?;
        let load = |target, fresh| -> Result<Vec<Arc<CudaModule>>, CudaError> {
            compiled(target, fresh)?
                .into_iter()
                .map(|image| ctx.load_module(image).map_err(driver_err))
                .collect()
        };
        // A cached entry the driver refuses (damaged, yet still looking like NVRTC's output)
        // costs one compile, not the run; machine code the driver refuses (a driver of an
        // older major CUDA than NVRTC) is replaced by PTX for the same architecture, which
        // the driver compiles itself if its PTX version allows.
        let modules = load(target, false).or_else(|e| {
            tracing::debug!("loading the kernels ({target}) failed ({e}); compiling them afresh");
            load(target, true)
        });
        let (modules, target) = match modules {
            Ok(m) => (m, target),
            Err(e) if is_machine_code(target) => {
                let ptx = arch_name(cc.0, cc.1);
                tracing::warn!(
                    "the driver refused NVRTC's machine code for {target} ({e}); trying PTX"
                );
                let m = load(ptx, false).map_err(|e2| {
                    CudaError::Driver(format!(
                        "the driver loads neither NVRTC's machine code for {target} ({e}) nor its \
                         PTX ({e2}): is the driver (`wavecp device`) older than NVRTC?"
                    ))
                })?;
                (m, ptx)
            }
            Err(e) => return Err(e),
        };
        let peaks = peaks_of(&ctx, cc);
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().map_err(driver_err)?,
            compute_capability: cc,
            memory_mib: ctx.total_mem().map_err(driver_err)? / (1 << 20),
            peaks,
            kernels: Some(target.to_string()),
        };
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(driver_err)?;
        Ok(Gpu {
            info,
            stream: ctx.default_stream(),
            modules,
            sms: (sms.max(1)) as usize,
            basic_gemm: std::env::var("WAVECP_GEMM").is_ok_and(|v| v == "basic"),
            forced_plan: None,
            forced_chain: None,
            functions: Default::default(),
            tables: Default::default(),
            pool,
        })
    }

    fn function(&self, k: Kernel) -> Result<CudaFunction, CudaError> {
        // A poisoned lock only means a thread panicked mid-insert; the map is still valid.
        let mut map = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(&k) {
            return Ok(f.clone());
        }
        let f = self.modules[k.file().index()]
            .load_function(k.entry())
            .map_err(driver_err)?;
        map.insert(k, f.clone());
        Ok(f)
    }

    fn kind_code(kind: ActKind) -> i32 {
        match kind {
            ActKind::Relu => 0,
            ActKind::Gelu => 1,
            ActKind::Tanh => 2,
        }
    }

    /// `planes` planes of `per` values: grid y over the planes, x over a plane's values (both
    /// grid-strided in the kernel), so a kernel decomposes only the index within a plane.
    fn plane_config(planes: usize, per: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (Self::grid_blocks(per), planes.clamp(1, 65_535) as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// 256-thread blocks for `n` values in a grid-stride loop (at most 65 535).
    fn grid_blocks(n: usize) -> u32 {
        n.div_ceil(256).clamp(1, 65_535) as u32
    }

    fn launch_config(n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (Self::grid_blocks(n), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn dw_params(batch: usize, sh: DwShape, a: &AxisConv) -> DwParams {
        let u = |v: [usize; 3]| v.map(|x| x as u32);
        DwParams {
            n: (batch * sh.c) as u32,
            c: sh.c as u32,
            in_d: u(sh.ind),
            out_d: u(sh.outd),
            axis: a.axis as u32,
            k: a.k as u32,
            stride: a.stride as u32,
            pad: a.pad as u32,
            dil: a.dil as u32,
        }
    }

    /// `v` copied to a new device buffer (retrying once when the device is full).
    pub fn upload<T: cudarc::driver::DeviceRepr>(
        &self,
        v: &[T],
    ) -> Result<cudarc::driver::CudaSlice<T>, CudaError> {
        self.retry_full(std::mem::size_of_val(v), || self.stream.clone_htod(v))
    }

    /// `n` zeroed device values (at least one).
    pub fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<cudarc::driver::CudaSlice<T>, CudaError> {
        self.retry_full(n.max(1) * std::mem::size_of::<T>(), || {
            self.stream.alloc_zeros::<T>(n.max(1))
        })
    }

    /// `n` values of device memory (at least one) that the next kernel writes in full.
    fn uninit<T: cudarc::driver::DeviceRepr>(
        &self,
        n: usize,
    ) -> Result<cudarc::driver::CudaSlice<T>, CudaError> {
        // SAFETY: device memory that only kernels and copies touch, each caller launching the
        // kernel that fills it next on the same stream; the element types used (f32, f64, u32)
        // take every bit pattern, so unwritten contents are unspecified numbers, never
        // undefined behaviour on the host.
        self.retry_full(n.max(1) * std::mem::size_of::<T>(), || unsafe {
            self.stream.alloc::<T>(n.max(1))
        })
    }

    /// Runs the allocation `f` of `bytes`; when the device is full, waits for the queued work
    /// (whose frees then complete), hands the pool's unused blocks back to the driver (they
    /// may be too small or too scattered for this request) and tries once more, as PyTorch's
    /// caching allocator does before it reports running out.
    fn retry_full<T>(
        &self,
        bytes: usize,
        f: impl Fn() -> Result<T, cudarc::driver::DriverError>,
    ) -> Result<T, CudaError> {
        use cudarc::driver::sys::CUresult;
        let r = match (f(), &self.pool) {
            (Err(e), Some(pool)) if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                tracing::debug!(
                    "the device is full at a {} allocation: releasing the pool's unused memory and retrying",
                    crate::progress::bytes(bytes as u64)
                );
                let _ = self.stream.synchronize();
                pool.trim();
                f()
            }
            (r, _) => r,
        };
        r.map_err(|e| self.alloc_err(e, bytes))
    }

    /// A failed allocation of `bytes` as an error: out of memory says how much was asked for,
    /// held and free, and what to change; anything else is the driver's error.
    fn alloc_err(&self, e: cudarc::driver::DriverError, bytes: usize) -> CudaError {
        if e.0 != cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            return driver_err(e);
        }
        let m = self.memory();
        CudaError::OutOfMemory {
            ordinal: self.info.ordinal,
            name: self.info.name.clone(),
            requested: bytes as u64,
            in_use: m.in_use,
            free: m.free,
            total: m.total,
        }
    }

    /// Device memory now: what this process's allocations hold (and held at most), what the
    /// pool keeps, and what the driver says is free.
    pub fn memory(&self) -> GpuMemory {
        use cudarc::driver::sys::CUmemPool_attribute as A;
        let (free, total) = self.stream.context().mem_get_info().unwrap_or((0, 0));
        let pool = |a| self.pool.as_ref().and_then(|p| p.get(a));
        GpuMemory {
            in_use: pool(A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT),
            peak: pool(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH),
            reserved: pool(A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT),
            free: free as u64,
            total: total as u64,
        }
    }

    /// Starts [`GpuMemory::peak`] afresh (PyTorch's `reset_peak_memory_stats`; zero is the one
    /// value the high watermark may be set to).
    pub fn reset_peak_memory(&self) {
        if let Some(p) = &self.pool {
            p.set(
                cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                0,
            );
        }
    }

    /// The first `n` values of `d`, copied to the host (waits for the device).
    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        d: &cudarc::driver::CudaSlice<T>,
        n: usize,
    ) -> Result<Vec<T>, CudaError> {
        let mut v = self.stream.clone_dtoh(d).map_err(driver_err)?;
        v.truncate(n);
        Ok(v)
    }

    /// Blocks for the deterministic reductions: a function of `n` only, so the partial sums
    /// and their order do not depend on anything else.
    fn reduction_blocks(n: usize) -> usize {
        n.div_ceil(256).clamp(1, 1024)
    }

    fn check_gemm(
        d: &GemmDesc,
        name: &str,
        len: usize,
        s: [i64; 3],
        rows: u32,
        cols: u32,
    ) -> Result<(), CudaError> {
        // The largest element the kernel touches must lie inside the buffer.
        let last = (d.batch.max(1) as i64 - 1) * s[2]
            + (rows.max(1) as i64 - 1) * s[0]
            + (cols.max(1) as i64 - 1) * s[1];
        if s.iter().any(|&v| v < 0) || last >= len as i64 {
            return Err(CudaError::Invalid(format!(
                "gemm: operand {name} of {len} values is too small for its strides {s:?}"
            )));
        }
        Ok(())
    }

    /// Runs every GEMM on the 64 × 64 baseline kernel (`true`, as `WAVECP_GEMM=basic` does) or
    /// on the tiled, split-K one (`false`, the default).
    pub fn set_basic_gemm(&mut self, on: bool) {
        self.basic_gemm = on;
    }

    /// Imposes the tiled GEMM's tile height (32, 64 or 128 rows) and number of k slices on
    /// every GEMM instead of [`Gpu::gemm_plan`]'s choice (the slices are clamped to what k
    /// allows); `None` restores the choice. For `wavecp bench kernels --sweep`, which times
    /// every variant so that the choice can be set from measurements, and for tests.
    pub fn force_gemm_plan(&mut self, plan: Option<(usize, usize)>) -> Result<(), CudaError> {
        if let Some((bm, splits)) = plan {
            if ![32, 64, 128].contains(&bm) || splits == 0 {
                return Err(CudaError::Invalid(format!(
                    "GEMM plan: tile height {bm} (32, 64 or 128) with {splits} k slices (at least 1)"
                )));
            }
        }
        self.forced_plan = plan;
        Ok(())
    }

    /// Imposes fused-chain tile variant `i` (an index of [`Gpu::chain_tiles`]) on every CP
    /// chain instead of the choice by x extent; `None` restores the choice.
    pub fn force_chain_tile(&mut self, i: Option<usize>) -> Result<(), CudaError> {
        if let Some(i) = i {
            if i >= ops::CHAIN_TILES.len() {
                return Err(CudaError::Invalid(format!(
                    "chain tile {i}: there are {}",
                    ops::CHAIN_TILES.len()
                )));
            }
        }
        self.forced_chain = i;
        Ok(())
    }

    /// The fused chain's tile variants.
    pub fn chain_tiles() -> &'static [ChainTile] {
        &ops::CHAIN_TILES
    }
}
