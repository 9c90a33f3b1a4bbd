//! The fused CP depthwise chain (kernels/cpchain.cu): forward, filter gradients, tiles.

use super::super::{driver_err, CudaError, Gpu};
use super::{need, DevBuf};
use crate::cuda::{ChainVariant, Kernel};
use cudarc::driver::{LaunchConfig, PushKernelArg};

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
        forward: Kernel::CpChainForward(ChainVariant::T32),
        dweight: Kernel::CpChainDweight(ChainVariant::T32),
        tile: [4, 8, 32],
    },
    ChainTile {
        forward: Kernel::CpChainForward(ChainVariant::T16),
        dweight: Kernel::CpChainDweight(ChainVariant::T16),
        tile: [4, 16, 16],
    },
    ChainTile {
        forward: Kernel::CpChainForward(ChainVariant::T8),
        dweight: Kernel::CpChainDweight(ChainVariant::T8),
        tile: [16, 8, 8],
    },
];

/// One tile variant of the fused chain: its two kernels and its output tile (t, y, x).
#[derive(Debug, Clone, Copy)]
pub struct ChainTile {
    pub forward: Kernel,
    pub dweight: Kernel,
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
                return Err(CudaError::Unsupported(format!(
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
                CudaError::Unsupported(format!(
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
            return Err(CudaError::TooLarge(format!(
                "{what}: more than 2^32 planes"
            )));
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
        let f = self.function(tile.forward)?;
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
        let f = self.function(tile.dweight)?;
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
        let r = self.function(Kernel::CpChainDweightReduce)?;
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
