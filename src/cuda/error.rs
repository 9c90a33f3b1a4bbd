//! Why CUDA cannot be used or a launch was refused, in words a user can act on.

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

pub fn driver_err(e: impl std::fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}
