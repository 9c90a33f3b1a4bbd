//! Kernel parameter blocks: `repr(C)` twins of the structs the kernels take by value.

/// Geometry of a depthwise pass, laid out as `struct DwParams` in kernels/depthwise.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct DwParams {
    pub(crate) n: u32,
    pub(crate) c: u32,
    pub(crate) in_d: [u32; 3],
    pub(crate) out_d: [u32; 3],
    pub(crate) axis: u32,
    pub(crate) k: u32,
    pub(crate) stride: u32,
    pub(crate) pad: u32,
    pub(crate) dil: u32,
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
    pub(crate) c: u32,
    pub(crate) batch: u32,
    pub(crate) in_d: [u32; 3],
    pub(crate) out_d: [u32; 3],
    pub(crate) k: [u32; 3],
    pub(crate) stride: [u32; 3],
    pub(crate) pad: [u32; 3],
    pub(crate) dil: [u32; 3],
}

// SAFETY: `repr(C)`, u32 fields only (no padding, no pointers), the order of `struct ConvParams`.
unsafe impl cudarc::driver::DeviceRepr for ConvParams {}

/// Pooling geometry, laid out as `struct PoolParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolParams {
    pub(crate) n: u32,
    pub(crate) kind: u32,
    pub(crate) in_d: [u32; 3],
    pub(crate) out_d: [u32; 3],
    pub(crate) k: [u32; 3],
}

// SAFETY: `repr(C)`, u32 fields only, the order of `struct PoolParams` in kernels/pool.cu.
unsafe impl cudarc::driver::DeviceRepr for PoolParams {}

/// Up-sampling geometry, laid out as `struct UpParams` in kernels/pool.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpParams {
    pub(crate) n: u32,
    pub(crate) in_d: [u32; 3],
    pub(crate) scale: [u32; 3],
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
