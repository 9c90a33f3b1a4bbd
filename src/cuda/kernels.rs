//! The typed kernel registry (candle's `kernels::Id`): every kernel the host launches, as an
//! enum that knows its file and entry point, so a launcher cannot name a kernel that does not
//! exist or look in the wrong file. A test compiles every file and checks each entry of
//! [`Kernel::ALL`] against the PTX of its own file.

/// A kernel file of `kernels/` (compiled into one module each), in the order of [`KERNELS`].
///
/// [`KERNELS`]: super::KERNELS
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelFile {
    Elementwise,
    Depthwise,
    Gemm,
    Im2col,
    Pool,
    Optim,
    Pair,
    Data,
    Cpchain,
}

impl KernelFile {
    /// Its index in [`super::KERNELS`] (and in the `Gpu`'s loaded modules).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The file's stem: `kernels/<name>.cu`.
    pub fn name(self) -> &'static str {
        super::KERNELS[self.index()].0
    }
}

/// Rows of a tiled-GEMM block tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileRows {
    R32,
    R64,
    R128,
}

/// A fused CP chain variant by output tile (t × y × x): 4 × 8 × 32, 4 × 16 × 16, 16 × 8 × 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainVariant {
    T32,
    T16,
    T8,
}

/// Every kernel the host launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    ActForward,
    ActBackward,
    Axpy,
    BiasAdd,
    BiasGrad,
    DwForward,
    DwDinput,
    DwDweight,
    /// The 64 × 64 baseline GEMM (`WAVECP_GEMM=basic`), without and with the epilogue.
    SgemmBasic,
    SgemmBasicBiasAct,
    /// The tiled GEMM, its convolution epilogue, and the ordered sum of its k slices.
    SgemmTiled {
        rows: TileRows,
        epilogue: bool,
    },
    SgemmSplitkReduce,
    Im2col,
    Col2im,
    ConvWeightAdjoint,
    PoolForward,
    PoolBackward,
    UpsampleForward,
    UpsampleBackward,
    Concat,
    Split,
    Mse,
    RelL2Sums,
    RelL2Den,
    RelL2Grad,
    SumsqMulti,
    ClipScale,
    ZeroMulti,
    Adamw,
    AdamwMulti,
    PairRebuild,
    PairFactorGrad,
    GatherWindows,
    CpChainForward(ChainVariant),
    CpChainDweight(ChainVariant),
    CpChainDweightReduce,
}

impl Kernel {
    /// Every kernel, each tile and chain variant spelled out.
    pub const ALL: [Kernel; 45] = {
        use ChainVariant::*;
        use Kernel::*;
        use TileRows::*;
        [
            ActForward,
            ActBackward,
            Axpy,
            BiasAdd,
            BiasGrad,
            DwForward,
            DwDinput,
            DwDweight,
            SgemmBasic,
            SgemmBasicBiasAct,
            SgemmTiled {
                rows: R32,
                epilogue: false,
            },
            SgemmTiled {
                rows: R64,
                epilogue: false,
            },
            SgemmTiled {
                rows: R128,
                epilogue: false,
            },
            SgemmTiled {
                rows: R32,
                epilogue: true,
            },
            SgemmTiled {
                rows: R64,
                epilogue: true,
            },
            SgemmTiled {
                rows: R128,
                epilogue: true,
            },
            SgemmSplitkReduce,
            Im2col,
            Col2im,
            ConvWeightAdjoint,
            PoolForward,
            PoolBackward,
            UpsampleForward,
            UpsampleBackward,
            Concat,
            Split,
            Mse,
            RelL2Sums,
            RelL2Den,
            RelL2Grad,
            SumsqMulti,
            ClipScale,
            ZeroMulti,
            Adamw,
            AdamwMulti,
            PairRebuild,
            PairFactorGrad,
            GatherWindows,
            CpChainForward(T32),
            CpChainForward(T16),
            CpChainForward(T8),
            CpChainDweight(T32),
            CpChainDweight(T16),
            CpChainDweight(T8),
            CpChainDweightReduce,
        ]
    };

    /// The file it is compiled from.
    pub fn file(self) -> KernelFile {
        use Kernel::*;
        match self {
            ActForward | ActBackward | Axpy | BiasAdd | BiasGrad => KernelFile::Elementwise,
            DwForward | DwDinput | DwDweight => KernelFile::Depthwise,
            SgemmBasic | SgemmBasicBiasAct | SgemmTiled { .. } | SgemmSplitkReduce => {
                KernelFile::Gemm
            }
            Im2col | Col2im | ConvWeightAdjoint => KernelFile::Im2col,
            PoolForward | PoolBackward | UpsampleForward | UpsampleBackward | Concat | Split => {
                KernelFile::Pool
            }
            Mse | RelL2Sums | RelL2Den | RelL2Grad | SumsqMulti | ClipScale | ZeroMulti | Adamw
            | AdamwMulti => KernelFile::Optim,
            PairRebuild | PairFactorGrad => KernelFile::Pair,
            GatherWindows => KernelFile::Data,
            CpChainForward(_) | CpChainDweight(_) | CpChainDweightReduce => KernelFile::Cpchain,
        }
    }

    /// Its entry point (`extern "C" __global__` name).
    pub fn entry(self) -> &'static str {
        use ChainVariant::*;
        use Kernel::*;
        use TileRows::*;
        match self {
            ActForward => "act_forward_f32",
            ActBackward => "act_backward_f32",
            Axpy => "axpy_f32",
            BiasAdd => "bias_add_f32",
            BiasGrad => "bias_grad_f32",
            DwForward => "dw_axis_forward_f32",
            DwDinput => "dw_axis_dinput_f32",
            DwDweight => "dw_axis_dweight_f32",
            SgemmBasic => "sgemm_strided_f32",
            SgemmBasicBiasAct => "sgemm_bias_act_f32",
            SgemmTiled { rows, epilogue } => match (rows, epilogue) {
                (R32, false) => "sgemm_t32_f32",
                (R64, false) => "sgemm_t64_f32",
                (R128, false) => "sgemm_t128_f32",
                (R32, true) => "sgemm_t32_bias_act_f32",
                (R64, true) => "sgemm_t64_bias_act_f32",
                (R128, true) => "sgemm_t128_bias_act_f32",
            },
            SgemmSplitkReduce => "sgemm_splitk_reduce_f32",
            Im2col => "im2col_f32",
            Col2im => "col2im_f32",
            ConvWeightAdjoint => "conv_weight_adjoint_f32",
            PoolForward => "pool_forward_f32",
            PoolBackward => "pool_backward_f32",
            UpsampleForward => "upsample_forward_f32",
            UpsampleBackward => "upsample_backward_f32",
            Concat => "concat_f32",
            Split => "split_f32",
            Mse => "mse_f32",
            RelL2Sums => "rel_l2_sums_f32",
            RelL2Den => "rel_l2_den_f64",
            RelL2Grad => "rel_l2_grad_f32",
            SumsqMulti => "sumsq_multi_f32",
            ClipScale => "clip_scale_f64",
            ZeroMulti => "zero_multi_f32",
            Adamw => "adamw_f32",
            AdamwMulti => "adamw_multi_f32",
            PairRebuild => "pair_rebuild_f32",
            PairFactorGrad => "pair_factor_grad_f32",
            GatherWindows => "gather_windows_f32",
            CpChainForward(T32) => "cp_chain_forward_t32_f32",
            CpChainForward(T16) => "cp_chain_forward_t16_f32",
            CpChainForward(T8) => "cp_chain_forward_t8_f32",
            CpChainDweight(T32) => "cp_chain_dweight_t32_f32",
            CpChainDweight(T16) => "cp_chain_dweight_t16_f32",
            CpChainDweight(T8) => "cp_chain_dweight_t8_f32",
            CpChainDweightReduce => "cp_chain_dweight_reduce_f32",
        }
    }
}

impl TileRows {
    /// The tile height for a GEMM plan's `bm` (32, 64, else 128).
    pub fn of(bm: usize) -> TileRows {
        match bm {
            32 => TileRows::R32,
            64 => TileRows::R64,
            _ => TileRows::R128,
        }
    }
}
