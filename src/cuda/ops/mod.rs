//! Launchers on device buffers, one module per kernel family: what the GPU layers chain without
//! copies to the host (the parity tests' host wrappers, tests/cuda/host.rs, go through them).
//! Here: device memory, and the helpers every family uses.

use super::{driver_err, ConvParams, CudaError, Gpu};
use crate::nn::conv::Geom;
use cudarc::driver::{CudaSlice, LaunchConfig};
mod conv_gemm;
use conv_gemm::ConvView;
mod cpchain;
mod data;
mod depthwise;
mod elementwise;
mod gemm;
mod im2col;
mod loss;
mod optim;
mod pair;
mod pool;

pub use conv_gemm::ConvOperand;
pub use cpchain::{Chain, ChainTile};
pub(crate) use cpchain::{CHAIN_KMAX, CHAIN_TILES};
pub use data::{DevFrames, DevWindows};
pub use gemm::{GemmOut, GemmPlan};
pub use loss::DeviceLoss;
pub use optim::adam_rows;
pub(in crate::cuda) use optim::TensorRef;
pub use pool::PoolShape;

/// One sample's convolution as the im2col kernels and the implicit GEMM read it: `c` input
/// channels over the extents `ind`, the geometry `g`, and the output extents `outd`.
#[derive(Debug, Clone, Copy)]
pub struct ConvDims<'a> {
    pub c: usize,
    pub ind: [usize; 3],
    pub g: &'a Geom,
    pub outd: [usize; 3],
}

impl ConvDims<'_> {
    /// Values of one sample's input.
    pub fn nin(&self) -> usize {
        self.c * self.ind.iter().product::<usize>()
    }

    /// Rows of one sample's im2col matrix times its columns (`c·kvol·nout`).
    pub fn ncol(&self) -> usize {
        self.c * self.g.kvol() * self.outd.iter().product::<usize>()
    }
}

/// A buffer of `f32` on the device.
pub type DevBuf = CudaSlice<f32>;

fn need(what: &str, len: usize, at_least: usize) -> Result<(), CudaError> {
    if len < at_least {
        return Err(CudaError::Buffer {
            what: what.to_string(),
            len,
            need: at_least,
        });
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

    pub(super) fn conv_params(batch: usize, dims: &ConvDims<'_>) -> ConvParams {
        let u = |v: [usize; 3]| v.map(|x| x as u32);
        let g = dims.g;
        ConvParams {
            c: dims.c as u32,
            batch: batch as u32,
            in_d: u(dims.ind),
            out_d: u(dims.outd),
            k: u(g.k),
            stride: u(g.stride),
            pad: u(g.pad),
            dil: u(g.dil),
        }
    }

    /// Sets a device buffer to zero.
    pub fn zero_dev(&self, b: &mut DevBuf) -> Result<(), CudaError> {
        self.stream.memset_zeros(b).map_err(driver_err)
    }

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
            return Err(CudaError::TooLarge(format!("{what}: {n} blocks of {d:?}")));
        }
        Ok((planes, per))
    }

    /// The batch and the per-sample sizes of a channel join, as the kernels' 32-bit values.
    fn join_sizes(batch: usize, la: usize, ls: usize) -> Result<(u32, u32, u32), CudaError> {
        if batch > u32::MAX as usize || la + ls > u32::MAX as usize {
            return Err(CudaError::TooLarge(format!(
                "concat: {batch} samples of {la} + {ls} values"
            )));
        }
        Ok((batch as u32, la as u32, ls as u32))
    }
}
