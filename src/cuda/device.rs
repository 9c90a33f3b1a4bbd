//! What the machine has (`wavecp device`): the driver, NVRTC, the devices and their peaks; a
//! context on a device and its memory pool.

use super::*;

/// One GPU as `wavecp device` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub memory_mib: usize,
    /// Nominal FP32 and DRAM peaks from the device's attributes ([`Peaks`]).
    pub peaks: Peaks,
    /// What the kernels are compiled to for it ([`kernel_target`]): `sm_90` (machine code)
    /// or `compute_90` (PTX, compiled by the driver); none without NVRTC.
    pub kernels: Option<String>,
}

/// The nominal peaks of the device behind `ctx` (its compute capability `cc`).
pub(crate) fn peaks_of(ctx: &CudaContext, cc: (i32, i32)) -> Peaks {
    use cudarc::driver::sys::CUdevice_attribute as At;
    let attr = |a| ctx.attribute(a).unwrap_or(0);
    Peaks::from_attributes(
        cc,
        attr(At::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        attr(At::CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
        attr(At::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE),
        attr(At::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH),
    )
}

/// What this machine offers for CUDA.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub driver_library: bool,
    pub nvrtc_library: bool,
    pub driver_version: Option<i32>,
    /// NVRTC's (major, minor).
    pub nvrtc_version: Option<(i32, i32)>,
    /// Where compiled kernels are kept between runs ([`KernelCache::from_env`]); none if off.
    pub kernel_cache: Option<String>,
    pub devices: Vec<DeviceInfo>,
    /// Why CUDA is unusable, when it is.
    pub problem: Option<String>,
}

/// A context on `ordinal`; the driver library and the device are checked first, and the
/// creation runs under `catch_unwind` (cudarc panics when the driver cannot be loaded).
pub(crate) fn context(ordinal: usize) -> Result<Arc<CudaContext>, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    let count = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| CudaError::NoDriver)?
        .map_err(driver_err)?;
    if count <= 0 {
        return Err(CudaError::NoDevice);
    }
    if count <= ordinal as i32 {
        return Err(CudaError::Invalid(format!(
            "device {ordinal} asked for, but the driver shows {count} (numbered from 0; \
             CUDA_VISIBLE_DEVICES may hide others)"
        )));
    }
    std::panic::catch_unwind(|| CudaContext::new(ordinal))
        .map_err(|_| CudaError::NoDriver)?
        .map_err(driver_err)
}

/// Makes the device's default memory pool keep what is freed instead of handing it back to
/// the driver at every synchronisation (its default release threshold is zero): a training
/// step frees and allocates the same activation buffers each time, and a synchronised step
/// would otherwise map them afresh, the cost PyTorch's caching allocator exists to avoid.
/// Best effort: a device without memory pools allocates synchronously anyway.
/// Returns the pool, whose attributes say how much memory the process uses ([`Gpu::memory`]).
pub(crate) fn keep_freed_memory(ctx: &Arc<CudaContext>) -> Option<MemPool> {
    use cudarc::driver::sys;
    let pools = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)
        .unwrap_or(0);
    if pools == 0 {
        return None;
    }
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `cu_device` is the context's valid device handle and `pool` is valid for the
    // write for the duration of the call.
    let r = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) };
    if r != sys::CUresult::CUDA_SUCCESS || pool.is_null() {
        tracing::debug!("no default memory pool: {r:?}");
        return None;
    }
    let pool = MemPool(pool);
    pool.set(
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
        u64::MAX,
    );
    Some(pool)
}

/// The device's default memory pool, from which every stream-ordered allocation comes.
pub(crate) struct MemPool(cudarc::driver::sys::CUmemoryPool);

// SAFETY: a pool handle is a driver object usable from any thread of the process; it is only
// passed to `cuMemPoolGetAttribute`/`cuMemPoolSetAttribute`, which the driver makes
// thread-safe, and the default pool lives as long as the device.
unsafe impl Send for MemPool {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for MemPool {}

impl MemPool {
    /// Hands every block the pool keeps but nobody uses back to the driver.
    pub(crate) fn trim(&self) {
        use cudarc::driver::sys;
        // SAFETY: the handle is the default pool of an open device; trimming only releases
        // memory no allocation holds.
        let r = unsafe { sys::cuMemPoolTrimTo(self.0, 0) };
        if r != sys::CUresult::CUDA_SUCCESS {
            tracing::debug!("could not trim the memory pool: {r:?}");
        }
    }

    pub(crate) fn get(&self, attr: cudarc::driver::sys::CUmemPool_attribute) -> Option<u64> {
        use cudarc::driver::sys;
        let mut v = 0u64;
        // SAFETY: the handle is the default pool of an open device, and the byte-count
        // attributes asked for here are `u64`s written to `v`, valid for the call.
        let r = unsafe { sys::cuMemPoolGetAttribute(self.0, attr, (&mut v as *mut u64).cast()) };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(v)
    }

    /// Best effort: a refusal is logged, not an error (the pool works without it).
    pub(crate) fn set(&self, attr: cudarc::driver::sys::CUmemPool_attribute, mut v: u64) {
        use cudarc::driver::sys;
        // SAFETY: the handle is the default pool of an open device, and the attributes set
        // here (the release threshold, the high watermark) take a `u64` read from `v`.
        let r = unsafe { sys::cuMemPoolSetAttribute(self.0, attr, (&mut v as *mut u64).cast()) };
        if r != sys::CUresult::CUDA_SUCCESS {
            tracing::debug!("could not set the memory pool's {attr:?}: {r:?}");
        }
    }
}

/// How much device memory a process's allocations use, in bytes, as the memory pool and the
/// driver report it (PyTorch's `memory_allocated`, `max_memory_allocated`, `memory_reserved`,
/// and `mem_get_info`). The pool figures are `None` where the device has no memory pools.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GpuMemory {
    /// Held by live allocations now.
    pub in_use: Option<u64>,
    /// The most held at once since the device was opened or [`Gpu::reset_peak_memory`].
    pub peak: Option<u64>,
    /// Taken from the driver by the pool (in use + freed and kept for reuse).
    pub reserved: Option<u64>,
    pub free: u64,
    pub total: u64,
}

/// Bytes in MiB, as the JSON reports give memory.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Looks for the driver, NVRTC and devices; never fails.
pub fn probe() -> DeviceReport {
    let mut r = DeviceReport {
        driver_library: driver_present(),
        nvrtc_library: nvrtc_present(),
        driver_version: None,
        nvrtc_version: nvrtc_version(),
        kernel_cache: KernelCache::from_env()
            .dir()
            .map(|d| d.display().to_string()),
        devices: Vec::new(),
        problem: None,
    };
    let found = (|| -> Result<(), CudaError> {
        let ctx = context(0)?;
        let mut v = 0;
        // SAFETY: the driver is loaded (context creation succeeded) and `v` is a valid out pointer.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
        r.driver_version = Some(v);
        let count = CudaContext::device_count().map_err(driver_err)? as usize;
        for ordinal in 0..count {
            let c = if ordinal == 0 {
                ctx.clone()
            } else {
                context(ordinal)?
            };
            let cc = c.compute_capability().map_err(driver_err)?;
            r.devices.push(DeviceInfo {
                ordinal,
                name: c.name().map_err(driver_err)?,
                compute_capability: cc,
                memory_mib: c.total_mem().map_err(driver_err)? / (1 << 20),
                peaks: peaks_of(&c, cc),
                kernels: device_kernel_target(cc)
                    .ok()
                    .filter(|_| r.nvrtc_library)
                    .map(str::to_string),
            });
        }
        if !r.nvrtc_library {
            return Err(CudaError::NoNvrtc);
        }
        Ok(())
    })();
    r.problem = found.err().map(|e| e.to_string());
    r
}

/// Nominal peaks of a device from its attributes: FP32 FMA throughput (SMs × FP32 lanes per
/// SM × 2 × boost clock; 64 lanes on compute 7.x and 8.0, 128 otherwise) and DRAM bandwidth
/// (2 transfers per memory clock × bus width). `None` where the driver does not report the
/// clocks. The achieved fractions in `wavecp bench kernels` are against these.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Peaks {
    pub fp32_tflops: Option<f64>,
    pub dram_gbs: Option<f64>,
}

impl Peaks {
    pub(crate) fn from_attributes(
        cc: (i32, i32),
        sms: i32,
        clock_khz: i32,
        mem_clock_khz: i32,
        bus_bits: i32,
    ) -> Peaks {
        let lanes = if cc.0 == 7 || cc == (8, 0) {
            64.0
        } else {
            128.0
        };
        let fp32 = (clock_khz > 0 && sms > 0)
            .then(|| sms as f64 * lanes * 2.0 * clock_khz as f64 * 1e3 / 1e12);
        let dram = (mem_clock_khz > 0 && bus_bits > 0)
            .then(|| 2.0 * mem_clock_khz as f64 * 1e3 * bus_bits as f64 / 8.0 / 1e9);
        Peaks {
            fp32_tflops: fp32,
            dram_gbs: dram,
        }
    }
}
