//! CUDA through cudarc with run-time loading: what the machine has (`wavecp device`), NVRTC
//! compilation of `kernels/*.cu` for the device's architecture (once per process), and the
//! launchers of the kernels written so far. Builds and runs where no CUDA is installed: a
//! missing driver, NVRTC or device is a [`CudaError`], never a panic.

pub mod bench;
mod cache;
mod conv;
mod kernels;
pub mod layers;
pub mod model;
mod ops;
pub use cache::KernelCache;
pub use conv::{GpuConv, GpuConvT};
pub use kernels::{ChainVariant, Kernel, KernelFile, TileRows};
pub use ops::{adam_rows, Chain, ChainTile, DevBuf, DevFrames, DevWindows, DeviceLoss, GemmPlan};

use crate::nn::conv::{AxisConv, DwShape, Geom};
use crate::nn::ops::{ActKind, PoolKind};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig};
use cudarc::nvrtc::{CompileOptions, Ptx};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Every kernel source, compiled together at start-up (name, source).
pub const KERNELS: &[(&str, &str)] = &[
    ("elementwise", include_str!("../../kernels/elementwise.cu")),
    ("depthwise", include_str!("../../kernels/depthwise.cu")),
    ("gemm", include_str!("../../kernels/gemm.cu")),
    ("im2col", include_str!("../../kernels/im2col.cu")),
    ("pool", include_str!("../../kernels/pool.cu")),
    ("optim", include_str!("../../kernels/optim.cu")),
    ("pair", include_str!("../../kernels/pair.cu")),
    ("data", include_str!("../../kernels/data.cu")),
    ("cpchain", include_str!("../../kernels/cpchain.cu")),
];

/// Geometry of a depthwise pass, laid out as `struct DwParams` in kernels/depthwise.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DwParams {
    n: u32,
    c: u32,
    in_d: [u32; 3],
    out_d: [u32; 3],
    axis: u32,
    k: u32,
    stride: u32,
    pad: u32,
    dil: u32,
}

// SAFETY: `DwParams` is `repr(C)`, made of `u32`s only (no padding, no pointers), and matches
// the field order and types of `struct DwParams` in kernels/depthwise.cu.
unsafe impl cudarc::driver::DeviceRepr for DwParams {}

/// One (batched, strided) GEMM `C = alpha·A·B + beta·C`, laid out as `struct GemmParams` in
/// kernels/gemm.cu. Strides are in elements: `[row, column, batch]` per operand; a transpose is
/// a swap of the first two.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GemmDesc {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub a: [i64; 3],
    pub b: [i64; 3],
    pub c: [i64; 3],
    pub alpha: f32,
    pub beta: f32,
}

// SAFETY: `GemmDesc` is `repr(C)` with four u32, nine i64 and two f32 (16 + 72 + 8 bytes, no
// padding, no pointers), matching `struct GemmParams` in kernels/gemm.cu field for field.
unsafe impl cudarc::driver::DeviceRepr for GemmDesc {}

/// Geometry of im2col/col2im and of the implicit GEMM, laid out as `struct ConvParams` in
/// kernels/common.cuh.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConvParams {
    c: u32,
    batch: u32,
    in_d: [u32; 3],
    out_d: [u32; 3],
    k: [u32; 3],
    stride: [u32; 3],
    pad: [u32; 3],
    dil: [u32; 3],
}

// SAFETY: `repr(C)`, u32 fields only (no padding, no pointers), the order of `struct ConvParams`.
unsafe impl cudarc::driver::DeviceRepr for ConvParams {}

/// Pooling geometry, laid out as `struct PoolParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolParams {
    n: u32,
    kind: u32,
    in_d: [u32; 3],
    out_d: [u32; 3],
    k: [u32; 3],
}

// SAFETY: `repr(C)`, u32 fields only, the order of `struct PoolParams` in kernels/pool.cu.
unsafe impl cudarc::driver::DeviceRepr for PoolParams {}

/// Up-sampling geometry, laid out as `struct UpParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpParams {
    n: u32,
    in_d: [u32; 3],
    scale: [u32; 3],
}

// SAFETY: `repr(C)`, u32 fields only, the order of `struct UpParams` in kernels/pool.cu.
unsafe impl cudarc::driver::DeviceRepr for UpParams {}

/// One AdamW step's scalars, laid out as `struct AdamParams` in kernels/optim.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Gradient clipping factor (1: none).
    pub scale: f64,
    pub lr: f64,
    pub b1: f64,
    pub b2: f64,
    /// Bias corrections `1 − β₁ᵗ`, `1 − β₂ᵗ`.
    pub c1: f64,
    pub c2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

// SAFETY: `repr(C)`, eight f64 (no padding, no pointers), the order of `struct AdamParams`.
unsafe impl cudarc::driver::DeviceRepr for AdamStep {}

/// Weights and first and second moments after an AdamW step.
pub type AdamState = (Vec<f32>, Vec<f32>, Vec<f32>);

/// Why CUDA cannot be used, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("NVRTC (libnvrtc.so.13) not found: install the CUDA 13 toolkit, or `pip install nvidia-cuda-nvrtc==13.0.88` and put its nvidia/cu13/lib on LD_LIBRARY_PATH")]
    NoNvrtc,
    #[error("no CUDA driver (libcuda.so.1 not found): this machine has no NVIDIA driver")]
    NoDriver,
    #[error("the CUDA driver reports no device")]
    NoDevice,
    /// What the driver refused (its own error code, in words).
    #[error("CUDA driver error: {0}")]
    Driver(String),
    /// A device buffer shorter than the launch reads or writes.
    #[error("{what}: device buffer of {len} values, {need} needed")]
    Buffer {
        what: String,
        len: usize,
        need: usize,
    },
    /// Sizes past what the kernels index (32-bit indices, grid limits).
    #[error("{0}: too large for the kernels' indices or grid")]
    TooLarge(String),
    /// A geometry or combination the kernels do not implement.
    #[error("not supported on the GPU: {0}")]
    Unsupported(String),
    /// Arguments that do not fit together (counts, ranges, forced variants, device numbers).
    #[error("{0}")]
    Invalid(String),
    /// A call out of order: a backward pass before its forward pass.
    #[error("{0}: backward before forward")]
    CallOrder(String),
    /// The model or layer description (the CPU side's error).
    #[error(transparent)]
    Model(#[from] crate::nn::NnError),
    #[error("GPU {ordinal} ({name}) is out of memory: asked for {} more with {} in use by this process and {} of {} free on the device; lower `train.batch` (or `--batch`), use a smaller model or a GPU with more memory", crate::progress::bytes(*requested), in_use.map_or("an unknown amount".into(), crate::progress::bytes), crate::progress::bytes(*free), crate::progress::bytes(*total))]
    OutOfMemory {
        ordinal: usize,
        name: String,
        /// Bytes, as are the other figures.
        requested: u64,
        /// Held by this process's allocations; unknown where the device has no memory pools.
        in_use: Option<u64>,
        free: u64,
        total: u64,
    },
    #[error("dy has {found} values, x has {expected}")]
    Shape { expected: usize, found: usize },
    #[error("NVRTC could not compile kernels/{file}.cu for {arch}:\n{log}")]
    Compile {
        file: String,
        arch: String,
        log: String,
    },
}

/// Whether `libnvrtc` can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library and reports whether it loaded.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the driver library `libcuda` can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library and reports whether it loaded.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// NVRTC's name for a compute capability (`compute_90` for 9.0). NVRTC wants a `'static` str.
pub fn arch_name(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        _ => intern(format!("compute_{major}{minor}")),
    }
}

/// `s` as a `'static` str (NVRTC's options and the per-process kernel map want one), kept once
/// per distinct value: a process that opens devices again and again leaks nothing more.
fn intern(s: String) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&t) = seen.get(s.as_str()) {
        return t;
    }
    let t: &'static str = Box::leak(s.into_boxed_str());
    seen.insert(t);
    t
}

/// Whether a kernel target is machine code (`sm_90`, a cubin) rather than PTX (`compute_90`).
fn is_machine_code(target: &str) -> bool {
    target.starts_with("sm_")
}

/// The text NVRTC compiles for kernel file `file`: [`COMMON`], then the file, whose line
/// numbers stay its own in NVRTC's messages.
fn program_text(file: &str, src: &str) -> String {
    format!("{COMMON}\n#line 1 \"{file}.cu\"\n{src}")
}

/// Device functions every kernel file may use (activations), prepended when compiling.
pub const COMMON: &str = include_str!("../../kernels/common.cuh");

/// Compiles one kernel source to PTX for `arch` (e.g. `compute_90`), with [`COMMON`] before
/// it; NVRTC's line numbers stay those of the file.
pub fn compile(file: &str, src: &str, arch: &'static str) -> Result<Ptx, CudaError> {
    if !nvrtc_present() {
        return Err(CudaError::NoNvrtc);
    }
    let src = program_text(file, src);
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(format!("{file}.cu")),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(&src, opts).map_err(|e| {
        let log = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other:?}"),
        };
        CudaError::Compile {
            file: file.to_string(),
            arch: arch.to_string(),
            log,
        }
    })
}

/// Compiles one kernel source to machine code (a cubin) for `sm` (e.g. `sm_90`), with
/// [`COMMON`] before it: what [`Gpu::new`] loads when NVRTC knows the device's architecture,
/// so the driver has no PTX to compile (no JIT at start-up, no PTX-version check against the
/// driver: a cubin made by a newer CUDA 13 NVRTC runs on any CUDA 13 driver).
pub fn compile_cubin(file: &str, src: &str, sm: &str) -> Result<Vec<u8>, CudaError> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_present() {
        return Err(CudaError::NoNvrtc);
    }
    let fail = |log: String| CudaError::Compile {
        file: file.to_string(),
        arch: sm.to_string(),
        log,
    };
    let text = std::ffi::CString::new(program_text(file, src)).map_err(|e| fail(e.to_string()))?;
    let name = std::ffi::CString::new(format!("{file}.cu")).map_err(|e| fail(e.to_string()))?;
    let prog = result::create_program(&text, Some(&name)).map_err(|e| fail(format!("{e:?}")))?;
    let opts = [format!("--gpu-architecture={sm}")];
    // SAFETY: `prog` is a live program made above and destroyed once, at the end; the size
    // query and the copy use a buffer of exactly the size NVRTC reported.
    unsafe {
        let r = match result::compile_program(prog, &opts) {
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| {
                        std::ffi::CStr::from_ptr(l.as_ptr())
                            .to_string_lossy()
                            .into_owned()
                    })
                    .unwrap_or_else(|_| format!("{e:?}"));
                Err(fail(log))
            }
            Ok(()) => {
                let mut n = 0usize;
                let mut r = sys::nvrtcGetCUBINSize(prog, &mut n);
                let mut bin = vec![0u8; n];
                if r == sys::nvrtcResult::NVRTC_SUCCESS {
                    r = sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr().cast());
                }
                if r == sys::nvrtcResult::NVRTC_SUCCESS && n > 0 {
                    Ok(bin)
                } else {
                    Err(fail(format!("no machine code from NVRTC ({r:?})")))
                }
            }
        };
        let _ = result::destroy_program(prog);
        r
    }
}

/// The architectures NVRTC can compile for (`[75, 80, ..., 90, 100, ...]`), empty without it.
pub fn nvrtc_archs() -> Vec<i32> {
    use cudarc::nvrtc::sys;
    if !nvrtc_present() {
        return vec![];
    }
    let mut n = 0;
    // SAFETY: NVRTC is loaded; the array has the length NVRTC reported.
    unsafe {
        if sys::nvrtcGetNumSupportedArchs(&mut n) != sys::nvrtcResult::NVRTC_SUCCESS || n <= 0 {
            return vec![];
        }
        let mut v = vec![0; n as usize];
        if sys::nvrtcGetSupportedArchs(v.as_mut_ptr()) != sys::nvrtcResult::NVRTC_SUCCESS {
            return vec![];
        }
        v
    }
}

/// What the kernels are compiled to for a device of compute capability `cc`, given the
/// architectures NVRTC supports: machine code for the device itself (`sm_90`) when NVRTC knows
/// it, else PTX for the newest architecture NVRTC knows below it (`compute_89`), which the
/// driver compiles on loading; `prefer_ptx` (`WAVECP_KERNEL_FORMAT=ptx`) asks for PTX for the
/// device's own architecture instead of machine code. An error when the device is older
/// than anything NVRTC supports.
pub fn kernel_target(
    cc: (i32, i32),
    archs: &[i32],
    prefer_ptx: bool,
) -> Result<&'static str, CudaError> {
    let want = cc.0 * 10 + cc.1;
    if archs.contains(&want) {
        return Ok(if prefer_ptx {
            arch_name(cc.0, cc.1)
        } else {
            intern(format!("sm_{want}"))
        });
    }
    match archs.iter().filter(|&&a| a < want).max() {
        Some(&a) => Ok(arch_name(a / 10, a % 10)),
        None => Err(CudaError::Unsupported(format!(
            "the device (compute capability {}.{}) is older than every architecture this NVRTC \
             compiles for ({archs:?}); use an NVRTC of an older CUDA",
            cc.0, cc.1
        ))),
    }
}

/// [`kernel_target`] for a device here: NVRTC's architectures, `WAVECP_KERNEL_FORMAT=ptx`.
fn device_kernel_target(cc: (i32, i32)) -> Result<&'static str, CudaError> {
    let prefer_ptx = std::env::var("WAVECP_KERNEL_FORMAT").is_ok_and(|v| v == "ptx");
    kernel_target(cc, &nvrtc_archs(), prefer_ptx)
}

/// NVRTC's version (major, minor), when the library loads.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded (checked above) and both out pointers are valid for the call.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// The compiled kernel file `file` for `target` (`sm_XX`: machine code; `compute_XX`: PTX
/// text), from `cache` when an entry made from the same source, target and NVRTC is there,
/// else compiled and stored. The flag says whether it came from the cache.
pub fn cached_image(
    cache: &KernelCache,
    file: &str,
    src: &str,
    target: &'static str,
) -> Result<(Vec<u8>, bool), CudaError> {
    let version = nvrtc_version().ok_or(CudaError::NoNvrtc)?;
    let entry = cache.entry(file, &format!("{COMMON}\n{src}"), target, version);
    if let Some(image) = entry.as_deref().and_then(KernelCache::load) {
        return Ok((image, true));
    }
    let image = if is_machine_code(target) {
        compile_cubin(file, src, target)?
    } else {
        compile(file, src, target)?.to_src().into_bytes()
    };
    if let Some(e) = &entry {
        KernelCache::store(e, &image);
    }
    Ok((image, false))
}

/// Every entry of [`KERNELS`] compiled for `target`, once per process (and, through
/// [`KernelCache::from_env`], once per machine): NVRTC takes seconds for all files, and a
/// process may open the device several times (one benchmark per layer kind). `fresh` skips the
/// disk cache (after the driver refused a cached entry).
fn compiled(target: &'static str, fresh: bool) -> Result<Vec<Ptx>, CudaError> {
    use std::sync::{Mutex, OnceLock};
    type Images = HashMap<&'static str, Vec<Vec<u8>>>;
    static CACHE: OnceLock<Mutex<Images>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if fresh || !map.contains_key(target) {
        let disk = if fresh {
            KernelCache::off()
        } else {
            KernelCache::from_env()
        };
        let t0 = std::time::Instant::now();
        let mut hits = 0;
        let mut images = Vec::with_capacity(KERNELS.len());
        for (name, src) in KERNELS {
            let (image, hit) = cached_image(&disk, name, src, target)?;
            hits += hit as usize;
            images.push(image);
        }
        tracing::debug!(
            "kernels for {target}: {hits} of {} from the cache ({}), {:.2} s",
            KERNELS.len(),
            disk.dir().map_or("off".into(), |d| d.display().to_string()),
            t0.elapsed().as_secs_f64()
        );
        map.insert(target, images);
    }
    Ok(map[target]
        .iter()
        .map(|b| {
            if is_machine_code(target) {
                Ptx::from_binary(b.clone())
            } else {
                Ptx::from_src(String::from_utf8_lossy(b).into_owned())
            }
        })
        .collect())
}

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
fn peaks_of(ctx: &CudaContext, cc: (i32, i32)) -> Peaks {
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

pub(crate) fn driver_err(e: impl std::fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}

/// A context on `ordinal`; the driver library and the device are checked first, and the
/// creation runs under `catch_unwind` (cudarc panics when the driver cannot be loaded).
fn context(ordinal: usize) -> Result<Arc<CudaContext>, CudaError> {
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
fn keep_freed_memory(ctx: &Arc<CudaContext>) -> Option<MemPool> {
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
struct MemPool(cudarc::driver::sys::CUmemoryPool);

// SAFETY: a pool handle is a driver object usable from any thread of the process; it is only
// passed to `cuMemPoolGetAttribute`/`cuMemPoolSetAttribute`, which the driver makes
// thread-safe, and the default pool lives as long as the device.
unsafe impl Send for MemPool {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for MemPool {}

impl MemPool {
    /// Hands every block the pool keeps but nobody uses back to the driver.
    fn trim(&self) {
        use cudarc::driver::sys;
        // SAFETY: the handle is the default pool of an open device; trimming only releases
        // memory no allocation holds.
        let r = unsafe { sys::cuMemPoolTrimTo(self.0, 0) };
        if r != sys::CUresult::CUDA_SUCCESS {
            tracing::debug!("could not trim the memory pool: {r:?}");
        }
    }

    fn get(&self, attr: cudarc::driver::sys::CUmemPool_attribute) -> Option<u64> {
        use cudarc::driver::sys;
        let mut v = 0u64;
        // SAFETY: the handle is the default pool of an open device, and the byte-count
        // attributes asked for here are `u64`s written to `v`, valid for the call.
        let r = unsafe { sys::cuMemPoolGetAttribute(self.0, attr, (&mut v as *mut u64).cast()) };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(v)
    }

    /// Best effort: a refusal is logged, not an error (the pool works without it).
    fn set(&self, attr: cudarc::driver::sys::CUmemPool_attribute, mut v: u64) {
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
    fn from_attributes(
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

    /// `f(x)` element-wise on the device (host in, host out: for tests and small uses).
    pub fn act_forward(&self, kind: ActKind, x: &[f32]) -> Result<Vec<f32>, CudaError> {
        let xd = self.upload(x)?;
        let mut yd = self.zeros::<f32>(x.len())?;
        self.act_forward_dev(kind, &xd, &mut yd, x.len())?;
        self.download(&yd, x.len())
    }

    /// `dy · f'(x)` element-wise on the device.
    pub fn act_backward(
        &self,
        kind: ActKind,
        x: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>, CudaError> {
        Self::check_len(x.len(), dy.len())?;
        let (xd, gd) = (self.upload(x)?, self.upload(dy)?);
        let mut dxd = self.zeros::<f32>(x.len())?;
        self.act_backward_dev(kind, &xd, &gd, &mut dxd, x.len())?;
        self.download(&dxd, x.len())
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

    fn check_len(expected: usize, found: usize) -> Result<(), CudaError> {
        if expected == found {
            Ok(())
        } else {
            Err(CudaError::Shape { expected, found })
        }
    }

    /// Depthwise 1-D convolution along `a.axis` of `batch` samples of `[C, T, Y, X]` with
    /// `w: [C, k]` (the GPU twin of [`crate::nn::conv::depthwise_axis`], batched).
    pub fn dw_axis_forward(
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
        Self::check_len(batch * sh.c * nin, x.len())?;
        Self::check_len(sh.c * a.k, w.len())?;
        let (xd, wd) = (self.to_device(x)?, self.to_device(w)?);
        let mut yd = self.device_zeros(batch * sh.c * nout)?;
        self.dw_forward_dev(&xd, batch, sh, a, &wd, &mut yd)?;
        self.to_host(&yd, batch * sh.c * nout)
    }

    /// Input and weight gradients of [`Gpu::dw_axis_forward`]: `(dx, dw)`, summed over the
    /// batch (the CPU twin accumulates per sample into the same buffers).
    pub fn dw_axis_backward(
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
        Self::check_len(batch * sh.c * nin, x.len())?;
        Self::check_len(batch * sh.c * nout, dy.len())?;
        Self::check_len(sh.c * a.k, w.len())?;
        let (xd, gd, wd) = (self.to_device(x)?, self.to_device(dy)?, self.to_device(w)?);
        let mut dxd = self.device_zeros(x.len())?;
        let mut dwd = self.device_zeros(w.len())?;
        self.dw_dinput_dev(&gd, batch, sh, a, &wd, &mut dxd)?;
        self.dw_dweight_dev(&xd, &gd, batch, sh, a, &mut dwd)?;
        Ok((self.to_host(&dxd, x.len())?, self.to_host(&dwd, w.len())?))
    }

    fn upload<T: cudarc::driver::DeviceRepr>(
        &self,
        v: &[T],
    ) -> Result<cudarc::driver::CudaSlice<T>, CudaError> {
        self.retry_full(std::mem::size_of_val(v), || self.stream.clone_htod(v))
    }

    fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
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

    fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
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

    /// `C = alpha·A·B + beta·C` (batched, strided; host in, host out). `c` is the initial `C`.
    pub fn gemm(
        &self,
        d: &GemmDesc,
        a: &[f32],
        b: &[f32],
        c: &[f32],
    ) -> Result<Vec<f32>, CudaError> {
        let (ad, bd) = (self.to_device(a)?, self.to_device(b)?);
        let mut cd = self.to_device(c)?;
        self.gemm_dev(d, &ad, &bd, &mut cd)?;
        self.to_host(&cd, c.len())
    }

    /// [`Gpu::gemm`] with the convolution epilogue (host in, host out): returns
    /// `C = act(alpha·A·B + beta·C + bias[row])` and the values before the activation.
    pub fn gemm_bias_act(
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
        self.gemm_bias_act_dev(d, &ad, &bd, &mut cd, Some(&bv), Some((kind, &mut pre)))?;
        Ok((self.to_host(&cd, c.len())?, self.to_host(&pre, c.len())?))
    }

    /// [`Gpu::gemm_sum_batch_dev`] from and to the host: `C = alpha·Σ_z A[z]·B[z] + beta·C`.
    pub fn gemm_sum_batch(
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

    /// `col[b, (c, p, q, s), o]` of `batch` samples `x: [c, T, Y, X]` (the GPU twin of
    /// [`crate::nn::conv::im2col`], batched).
    pub fn im2col(
        &self,
        x: &[f32],
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
    ) -> Result<Vec<f32>, CudaError> {
        let n = batch * c * g.kvol() * outd.iter().product::<usize>();
        Self::check_len(batch * c * ind.iter().product::<usize>(), x.len())?;
        let xd = self.to_device(x)?;
        let mut cd = self.device_zeros(n)?;
        self.im2col_dev(&xd, batch, c, ind, g, outd, &mut cd)?;
        self.to_host(&cd, n)
    }

    /// The adjoint of [`Gpu::im2col`]: `dx` from `col` (written, not accumulated).
    pub fn col2im(
        &self,
        col: &[f32],
        batch: usize,
        c: usize,
        ind: [usize; 3],
        g: &Geom,
        outd: [usize; 3],
    ) -> Result<Vec<f32>, CudaError> {
        let n = batch * c * ind.iter().product::<usize>();
        Self::check_len(
            batch * c * g.kvol() * outd.iter().product::<usize>(),
            col.len(),
        )?;
        let cd = self.to_device(col)?;
        let mut xd = self.device_zeros(n)?;
        self.col2im_dev(&cd, batch, c, ind, g, outd, &mut xd)?;
        self.to_host(&xd, n)
    }

    fn pool_params(kind: PoolKind, n: usize, ind: [usize; 3], k: [usize; 3]) -> PoolParams {
        let u = |v: [usize; 3]| v.map(|x| x as u32);
        PoolParams {
            n: n as u32,
            kind: match kind {
                PoolKind::Max => 0,
                PoolKind::Avg => 1,
            },
            in_d: u(ind),
            out_d: u([ind[0] / k[0], ind[1] / k[1], ind[2] / k[2]]),
            k: u(k),
        }
    }

    /// Pooling of `n` blocks `[T, Y, X]` with window = stride = `k`: `(y, argmax)`, the argmax
    /// an index inside each block (the GPU twin of [`crate::nn::ops::Pool`]'s forward pass).
    pub fn pool_forward(
        &self,
        kind: PoolKind,
        x: &[f32],
        n: usize,
        ind: [usize; 3],
        k: [usize; 3],
    ) -> Result<(Vec<f32>, Vec<u32>), CudaError> {
        let nout = n * (0..3).map(|a| ind[a] / k[a].max(1)).product::<usize>();
        Self::check_len(n * ind.iter().product::<usize>(), x.len())?;
        let xd = self.upload(x)?;
        let mut yd = self.zeros::<f32>(nout)?;
        let mut ad = self.zeros::<u32>(nout)?;
        self.pool_forward_dev(kind, &xd, n, ind, k, &mut yd, &mut ad)?;
        Ok((self.download(&yd, nout)?, self.download(&ad, nout)?))
    }

    /// `dx` of [`Gpu::pool_forward`] from `dy` and its argmax (gather form, no atomics).
    pub fn pool_backward(
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
        Self::check_len(nout, dy.len())?;
        Self::check_len(nout, argmax.len())?;
        let (gd, ad) = (self.upload(dy)?, self.upload(argmax)?);
        let mut xd = self.zeros::<f32>(nx)?;
        self.pool_backward_dev(kind, &gd, &ad, n, ind, k, &mut xd)?;
        self.download(&xd, nx)
    }

    /// Nearest up-sampling of `n` blocks `[T, Y, X]` by `scale` (forward = true) or its adjoint.
    pub fn upsample(
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
        Self::check_len(len_in, v.len())?;
        let vd = self.upload(v)?;
        let mut od = self.zeros::<f32>(len_out)?;
        self.upsample_dev(forward, &vd, n, ind, scale, &mut od)?;
        self.download(&od, len_out)
    }

    /// Channel concatenation of per-sample blocks of `la` and `ls` values.
    pub fn concat(
        &self,
        a: &[f32],
        s: &[f32],
        batch: usize,
        la: usize,
        ls: usize,
    ) -> Result<Vec<f32>, CudaError> {
        Self::check_len(batch * la, a.len())?;
        Self::check_len(batch * ls, s.len())?;
        let (ad, sd) = (self.upload(a)?, self.upload(s)?);
        let mut yd = self.zeros::<f32>(batch * (la + ls))?;
        self.concat_dev(&ad, &sd, batch, la, ls, &mut yd)?;
        self.download(&yd, batch * (la + ls))
    }

    /// The adjoint of [`Gpu::concat`].
    pub fn split(
        &self,
        dy: &[f32],
        batch: usize,
        la: usize,
        ls: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
        Self::check_len(batch * (la + ls), dy.len())?;
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
    pub fn mse(&self, pred: &[f32], target: &[f32]) -> Result<(f64, Vec<f32>), CudaError> {
        Self::check_len(pred.len(), target.len())?;
        let n = pred.len();
        let (pd, td) = (self.upload(pred)?, self.upload(target)?);
        let mut gd = self.zeros::<f32>(n)?;
        let l = self.mse_dev(&pd, &td, n, &mut gd)?;
        Ok((l, self.download(&gd, n)?))
    }

    /// The relative-L2 loss of `batch` samples and its gradient (host in, host out).
    pub fn rel_l2(
        &self,
        pred: &[f32],
        target: &[f32],
        batch: usize,
    ) -> Result<(f64, Vec<f32>), CudaError> {
        Self::check_len(pred.len(), target.len())?;
        let n = pred.len();
        let per = n / batch.max(1);
        Self::check_len(n, per * batch)?;
        let (pd, td) = (self.upload(pred)?, self.upload(target)?);
        let mut gd = self.zeros::<f32>(n)?;
        let l = self.rel_l2_dev(&pd, &td, batch, per, &mut gd)?;
        Ok((l, self.download(&gd, n)?))
    }

    /// `Σ g²` in f64 (for global-norm clipping).
    pub fn sumsq(&self, g: &[f32]) -> Result<f64, CudaError> {
        let gd = self.upload(g)?;
        self.sumsq_dev(&gd, g.len())
    }

    /// One AdamW step on one parameter array: returns the new `(w, m, v)`.
    pub fn adamw(
        &self,
        w: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
        step: &AdamStep,
    ) -> Result<AdamState, CudaError> {
        let n = w.len();
        for len in [g.len(), m.len(), v.len()] {
            Self::check_len(n, len)?;
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
