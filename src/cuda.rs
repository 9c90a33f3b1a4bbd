//! CUDA through cudarc with run-time loading: what the machine has (`wavecp device`), NVRTC
//! compilation of `kernels/*.cu` for the device's architecture (once per process), and the
//! launchers of the kernels written so far. Builds and runs where no CUDA is installed: a
//! missing driver, NVRTC or device is a [`CudaError`], never a panic.

use crate::nn::conv::{AxisConv, DwShape};
use crate::nn::ops::ActKind;
use cudarc::driver::{CudaContext, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, Ptx};
use serde::Serialize;
use std::sync::Arc;

/// Every kernel source, compiled together at start-up (name, source).
pub const KERNELS: &[(&str, &str)] = &[
    ("elementwise", include_str!("../kernels/elementwise.cu")),
    ("depthwise", include_str!("../kernels/depthwise.cu")),
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

/// Why CUDA cannot be used, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("NVRTC (libnvrtc.so.13) not found: install the CUDA 13 toolkit, or `pip install nvidia-cuda-nvrtc==13.0.88` and put its nvidia/cu13/lib on LD_LIBRARY_PATH")]
    NoNvrtc,
    #[error("no CUDA driver (libcuda.so.1 not found): this machine has no NVIDIA driver")]
    NoDriver,
    #[error("the CUDA driver reports no device")]
    NoDevice,
    #[error("CUDA driver error: {0}")]
    Driver(String),
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
        _ => Box::leak(format!("compute_{major}{minor}").into_boxed_str()),
    }
}

/// Compiles one kernel source to PTX for `arch` (e.g. `compute_90`).
pub fn compile(file: &str, src: &str, arch: &'static str) -> Result<Ptx, CudaError> {
    if !nvrtc_present() {
        return Err(CudaError::NoNvrtc);
    }
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(format!("{file}.cu")),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| {
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

/// One GPU as `wavecp device` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub memory_mib: usize,
}

/// What this machine offers for CUDA.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub driver_library: bool,
    pub nvrtc_library: bool,
    pub driver_version: Option<i32>,
    pub devices: Vec<DeviceInfo>,
    /// Why CUDA is unusable, when it is.
    pub problem: Option<String>,
}

fn driver_err(e: impl std::fmt::Debug) -> CudaError {
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
    if count <= ordinal as i32 {
        return Err(CudaError::NoDevice);
    }
    std::panic::catch_unwind(|| CudaContext::new(ordinal))
        .map_err(|_| CudaError::NoDriver)?
        .map_err(driver_err)
}

/// Looks for the driver, NVRTC and devices; never fails.
pub fn probe() -> DeviceReport {
    let mut r = DeviceReport {
        driver_library: driver_present(),
        nvrtc_library: nvrtc_present(),
        driver_version: None,
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
            r.devices.push(DeviceInfo {
                ordinal,
                name: c.name().map_err(driver_err)?,
                compute_capability: c.compute_capability().map_err(driver_err)?,
                memory_mib: c.total_mem().map_err(driver_err)? / (1 << 20),
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

/// A device with every kernel compiled and loaded.
pub struct Gpu {
    pub info: DeviceInfo,
    stream: Arc<CudaStream>,
    /// One module per entry of [`KERNELS`], in that order.
    modules: Vec<Arc<CudaModule>>,
}

impl Gpu {
    /// Opens device `ordinal` and compiles the kernels for its architecture.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        let ctx = context(ordinal)?;
        let cc = ctx.compute_capability().map_err(driver_err)?;
        let arch = arch_name(cc.0, cc.1);
        let mut modules = Vec::with_capacity(KERNELS.len());
        for (name, src) in KERNELS {
            let ptx = compile(name, src, arch)?;
            modules.push(ctx.load_module(ptx).map_err(driver_err)?);
        }
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().map_err(driver_err)?,
            compute_capability: cc,
            memory_mib: ctx.total_mem().map_err(driver_err)? / (1 << 20),
        };
        Ok(Gpu {
            info,
            stream: ctx.default_stream(),
            modules,
        })
    }

    fn function(
        &self,
        module: &str,
        name: &str,
    ) -> Result<cudarc::driver::CudaFunction, CudaError> {
        let m = KERNELS
            .iter()
            .position(|(n, _)| *n == module)
            .ok_or_else(|| CudaError::Driver(format!("no kernel file {module}.cu")))?;
        self.modules[m].load_function(name).map_err(driver_err)
    }

    fn kind_code(kind: ActKind) -> i32 {
        match kind {
            ActKind::Relu => 0,
            ActKind::Gelu => 1,
            ActKind::Tanh => 2,
        }
    }

    fn launch_config(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(256).clamp(1, 65_535) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `f(x)` element-wise on the device (host in, host out: for tests and small uses).
    pub fn act_forward(&self, kind: ActKind, x: &[f32]) -> Result<Vec<f32>, CudaError> {
        let f = self.function("elementwise", "act_forward_f32")?;
        let xd = self.stream.clone_htod(x).map_err(driver_err)?;
        let mut yd = self
            .stream
            .alloc_zeros::<f32>(x.len())
            .map_err(driver_err)?;
        let (n, k) = (x.len() as u32, Self::kind_code(kind));
        let mut b = self.stream.launch_builder(&f);
        b.arg(&xd).arg(&mut yd).arg(&n).arg(&k);
        // SAFETY: the argument list matches act_forward_f32(const float*, float*, unsigned, int),
        // both buffers hold n floats, and the kernel's grid-stride loop stays below n.
        unsafe { b.launch(Self::launch_config(x.len())) }.map_err(driver_err)?;
        self.stream.clone_dtoh(&yd).map_err(driver_err)
    }

    /// `dy · f'(x)` element-wise on the device.
    pub fn act_backward(
        &self,
        kind: ActKind,
        x: &[f32],
        dy: &[f32],
    ) -> Result<Vec<f32>, CudaError> {
        if x.len() != dy.len() {
            return Err(CudaError::Shape {
                expected: x.len(),
                found: dy.len(),
            });
        }
        let f = self.function("elementwise", "act_backward_f32")?;
        let xd = self.stream.clone_htod(x).map_err(driver_err)?;
        let dyd = self.stream.clone_htod(dy).map_err(driver_err)?;
        let mut dxd = self
            .stream
            .alloc_zeros::<f32>(x.len())
            .map_err(driver_err)?;
        let (n, k) = (x.len() as u32, Self::kind_code(kind));
        let mut b = self.stream.launch_builder(&f);
        b.arg(&xd).arg(&dyd).arg(&mut dxd).arg(&n).arg(&k);
        // SAFETY: the argument list matches act_backward_f32(const float*, const float*,
        // float*, unsigned, int); all three buffers hold n floats.
        unsafe { b.launch(Self::launch_config(x.len())) }.map_err(driver_err)?;
        self.stream.clone_dtoh(&dxd).map_err(driver_err)
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
        let p = Self::dw_params(batch, sh, a);
        let (nin, nout) = (
            sh.ind.iter().product::<usize>(),
            sh.outd.iter().product::<usize>(),
        );
        Self::check_len(batch * sh.c * nin, x.len())?;
        Self::check_len(sh.c * a.k, w.len())?;
        let f = self.function("depthwise", "dw_axis_forward_f32")?;
        let xd = self.stream.clone_htod(x).map_err(driver_err)?;
        let wd = self.stream.clone_htod(w).map_err(driver_err)?;
        let mut yd = self
            .stream
            .alloc_zeros::<f32>(batch * sh.c * nout)
            .map_err(driver_err)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&xd).arg(&wd).arg(&mut yd).arg(&p);
        // SAFETY: arguments match dw_axis_forward_f32(const float*, const float*, float*,
        // DwParams); x holds n·nin, w c·k and y n·nout floats, the bounds the kernel uses.
        unsafe { b.launch(Self::launch_config(batch * sh.c * nout)) }.map_err(driver_err)?;
        self.stream.clone_dtoh(&yd).map_err(driver_err)
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
        let p = Self::dw_params(batch, sh, a);
        let (nin, nout) = (
            sh.ind.iter().product::<usize>(),
            sh.outd.iter().product::<usize>(),
        );
        Self::check_len(batch * sh.c * nin, x.len())?;
        Self::check_len(batch * sh.c * nout, dy.len())?;
        Self::check_len(sh.c * a.k, w.len())?;
        let fi = self.function("depthwise", "dw_axis_dinput_f32")?;
        let fw = self.function("depthwise", "dw_axis_dweight_f32")?;
        let xd = self.stream.clone_htod(x).map_err(driver_err)?;
        let gd = self.stream.clone_htod(dy).map_err(driver_err)?;
        let wd = self.stream.clone_htod(w).map_err(driver_err)?;
        let mut dxd = self
            .stream
            .alloc_zeros::<f32>(x.len())
            .map_err(driver_err)?;
        let mut dwd = self
            .stream
            .alloc_zeros::<f32>(w.len())
            .map_err(driver_err)?;
        let mut b = self.stream.launch_builder(&fi);
        b.arg(&gd).arg(&wd).arg(&mut dxd).arg(&p);
        // SAFETY: arguments match dw_axis_dinput_f32(const float*, const float*, float*,
        // DwParams); dy holds n·nout, w c·k and dx n·nin floats.
        unsafe { b.launch(Self::launch_config(x.len())) }.map_err(driver_err)?;
        let mut b = self.stream.launch_builder(&fw);
        b.arg(&xd).arg(&gd).arg(&mut dwd).arg(&p);
        let cfg = LaunchConfig {
            grid_dim: ((sh.c * a.k) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match dw_axis_dweight_f32(const float*, const float*, float*,
        // DwParams); one 256-thread block per (channel, tap), as its shared array assumes.
        unsafe { b.launch(cfg) }.map_err(driver_err)?;
        Ok((
            self.stream.clone_dtoh(&dxd).map_err(driver_err)?,
            self.stream.clone_dtoh(&dwd).map_err(driver_err)?,
        ))
    }
}
