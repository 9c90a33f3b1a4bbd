//! NVRTC: the kernel sources, their compilation for a device's architecture (PTX or machine
//! code), and the per-process and on-disk caches of the result.

use super::*;

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
pub(crate) fn intern(s: String) -> &'static str {
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
pub(crate) fn is_machine_code(target: &str) -> bool {
    target.starts_with("sm_")
}

/// The text NVRTC compiles for kernel file `file`: [`COMMON`], then the file, whose line
/// numbers stay its own in NVRTC's messages.
pub(crate) fn program_text(file: &str, src: &str) -> String {
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
pub(crate) fn device_kernel_target(cc: (i32, i32)) -> Result<&'static str, CudaError> {
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
pub(crate) fn compiled(target: &'static str, fresh: bool) -> Result<Vec<Ptx>, CudaError> {
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
