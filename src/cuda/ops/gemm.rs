//! The tiled GEMM (kernels/gemm.cu): its plan (tile height, k split), the bias/activation
//! epilogue, the batch-summed form of the weight gradients.

use super::super::{driver_err, CudaError, GemmDesc, Gpu};
use super::{need, ConvView, DevBuf};
use crate::cuda::{Kernel, TileRows};
use crate::nn::ops::ActKind;
use cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};

/// The convolution epilogue of a GEMM: bias, activation, and where the pre-activation goes.
pub(in crate::cuda) struct Epilogue<'a> {
    bias: &'a DevBuf,
    has_bias: i32,
    pre: &'a mut DevBuf,
    kind: i32,
}

/// The output of a GEMM with the convolution epilogue: `C`, an optional bias per row of `C`,
/// and an optional activation with the buffer that keeps the value before it (laid out as `C`).
pub struct GemmOut<'a> {
    pub c: &'a mut DevBuf,
    pub bias: Option<&'a DevBuf>,
    pub act: Option<(ActKind, &'a mut DevBuf)>,
}

impl<'a> GemmOut<'a> {
    /// `C` alone: no bias, no activation.
    pub fn plain(c: &'a mut DevBuf) -> Self {
        GemmOut {
            c,
            bias: None,
            act: None,
        }
    }
}

/// How the tiled GEMM reads B (an ordinary strided matrix, or an im2col matrix gathered from a
/// convolution input) and whether the batch's products are summed into one `C`.
pub(in crate::cuda) struct BRead {
    pub conv: ConvView,
    pub sum_batch: bool,
}

impl BRead {
    fn strided(sum_batch: bool) -> Self {
        BRead {
            conv: ConvView::default(),
            sum_batch,
        }
    }
}

/// The tiled GEMM's parameters, laid out as `struct TiledParams` in kernels/gemm.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct TiledParams {
    g: GemmDesc,
    splits: u32,
    k_chunk: u32,
    a_m_contig: i32,
    b_n_contig: i32,
    partial: i32,
    unused: i32,
}

// SAFETY: `repr(C)`: a GemmDesc (96 bytes, 8-byte aligned, no padding: see its impl) and six
// 4-byte fields (24 bytes, so the size stays a multiple of 8 with no tail padding); matches
// `struct TiledParams` in kernels/gemm.cu field for field.
unsafe impl cudarc::driver::DeviceRepr for TiledParams {}

/// How [`Gpu::gemm_plan`] runs a GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmPlan {
    /// Tile height of the tiled kernel (32, 64 or 128 rows).
    pub bm: usize,
    /// Slices of k run as separate blocks (1: none).
    pub splits: usize,
    /// k values per slice.
    pub k_chunk: usize,
    /// The 64 × 64 baseline kernel instead (`WAVECP_GEMM=basic`).
    pub basic: bool,
}

impl Gpu {
    /// `C = alpha·A·B + beta·C` on device buffers (see [`GemmDesc`]).
    pub fn gemm_dev(
        &self,
        d: &GemmDesc,
        a: &DevBuf,
        b: &DevBuf,
        c: &mut DevBuf,
    ) -> Result<(), CudaError> {
        self.gemm_view_dev(d, &a.as_view(), &b.as_view(), c)
    }

    /// [`Gpu::gemm_dev`] with the operands as views (e.g. one sample of a batch).
    pub fn gemm_view_dev(
        &self,
        d: &GemmDesc,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut DevBuf,
    ) -> Result<(), CudaError> {
        Self::check_gemm(d, "A", a.len(), d.a, d.m, d.k)?;
        Self::check_gemm(d, "B", b.len(), d.b, d.k, d.n)?;
        Self::check_gemm(d, "C", c.len(), d.c, d.m, d.n)?;
        if d.m == 0 || d.n == 0 || d.batch == 0 {
            return Ok(());
        }
        self.run_gemm(d, a, b, c, None, &BRead::strided(false))
    }

    /// [`Gpu::gemm_dev`] with the convolution epilogue (see [`GemmOut`]):
    /// `C = act(alpha·A·B + beta·C + bias[row])` and, with an activation, `pre` = the value
    /// before it.
    pub fn gemm_bias_act_dev(
        &self,
        d: &GemmDesc,
        a: &DevBuf,
        b: &DevBuf,
        out: GemmOut<'_>,
    ) -> Result<(), CudaError> {
        let GemmOut { c, bias, act } = out;
        Self::check_gemm(d, "A", a.len(), d.a, d.m, d.k)?;
        Self::check_gemm(d, "B", b.len(), d.b, d.k, d.n)?;
        Self::check_gemm(d, "C", c.len(), d.c, d.m, d.n)?;
        if let Some(bv) = bias {
            need("gemm bias", bv.len(), d.m as usize)?;
        }
        if d.m == 0 || d.n == 0 || d.batch == 0 {
            return Ok(());
        }
        let (av, bv) = (a.as_view(), b.as_view());
        self.with_epilogue(d, bias, act, |epi| {
            self.run_gemm(d, &av, &bv, c, epi, &BRead::strided(false))
        })
    }

    /// Calls `f` with the convolution epilogue of `bias` and `act` (none when both are
    /// absent); an absent operand of a present epilogue gets a one-value stand-in that the
    /// kernels never touch (has_bias = 0, act < 0). `pre` is checked against C's strides.
    pub(in crate::cuda) fn with_epilogue(
        &self,
        d: &GemmDesc,
        bias: Option<&DevBuf>,
        act: Option<(ActKind, &mut DevBuf)>,
        f: impl FnOnce(Option<Epilogue<'_>>) -> Result<(), CudaError>,
    ) -> Result<(), CudaError> {
        if bias.is_none() && act.is_none() {
            return f(None);
        }
        let dummy_bias;
        let bias_buf = match bias {
            Some(bv) => bv,
            None => {
                dummy_bias = self.uninit::<f32>(1)?;
                &dummy_bias
            }
        };
        let mut dummy_pre;
        let (kind, pre) = match act {
            Some((k, pre)) => {
                Self::check_gemm(d, "pre", pre.len(), d.c, d.m, d.n)?;
                (Self::kind_code(k), pre)
            }
            None => {
                dummy_pre = self.uninit::<f32>(1)?;
                (-1, &mut dummy_pre)
            }
        };
        f(Some(Epilogue {
            bias: bias_buf,
            has_bias: i32::from(bias.is_some()),
            pre,
            kind,
        }))
    }

    /// How a GEMM is run: the tiled kernel's tile height (32, 64 or 128 rows, from m) and the
    /// split of k, so that a GEMM with few tiles and a long k still occupies every SM.
    pub fn gemm_plan(&self, d: &GemmDesc) -> GemmPlan {
        let (m, n, k, batch) = (d.m as usize, d.n as usize, d.k as usize, d.batch as usize);
        let bm = if let Some((bm, _)) = self.forced_plan {
            bm
        } else if m <= 32 {
            32
        } else if m <= 64 {
            64
        } else {
            128
        };
        let tiles = m.div_ceil(bm) * n.div_ceil(128) * batch.max(1);
        let wanted = if let Some((_, splits)) = self.forced_plan {
            splits.min(k.div_ceil(8))
        } else {
            Self::k_splits(tiles, k, 2 * self.sms)
        };
        // Grid z holds batch × splits; slices are whole panel steps (multiples of 8).
        let wanted = wanted.clamp(1, (65_535 / batch.max(1)).max(1));
        let k_chunk = (k.div_ceil(wanted).div_ceil(8) * 8).max(8);
        GemmPlan {
            bm,
            splits: k.div_ceil(k_chunk).max(1),
            k_chunk,
            basic: self.basic_gemm,
        }
    }

    /// The k split of a GEMM of `tiles` output tiles over `slots` resident blocks (two per
    /// SM): the power of two up to 16 (or, for fewer than 17 tiles, the most slices that fit
    /// in one wave), with slices of at least 128 k values, that minimises
    /// waves × (slice + 64), i.e. the last partial wave costs a whole one and each block pays
    /// a fixed prologue and epilogue worth ≈ 64 k values. Fitted to the H200 sweep of
    /// 2026-12-04 (docs/gpu-runs.md): across the paper models' twelve dense GEMMs it is within
    /// 1.008× of the fastest measured split on average (1.07× at worst); the rule it replaced,
    /// enough splits to fill one wave rounded up, averaged 1.16× (1.38× at worst), since
    /// rounding up spilled a few blocks into a second wave.
    pub fn k_splits(tiles: usize, k: usize, slots: usize) -> usize {
        let slots = slots.max(1);
        if tiles >= slots {
            // Already a full wave: slices would only add the partial sums' traffic.
            return 1;
        }
        let cost = |s: usize| {
            let chunk = k.div_ceil(s).div_ceil(8) * 8;
            (tiles * s).div_ceil(slots) * (chunk + 64)
        };
        // A GEMM of very few tiles (a 1 × 1 convolution's weight gradient: a handful of tiles
        // and k = voxels × batch) needs more than 16 slices to fill one wave: then the most
        // that fit in one wave is a candidate too.
        let fill = (slots / tiles.max(1)).max(16);
        [1, 2, 4, 8, 16, fill]
            .into_iter()
            .filter(|&s| s == 1 || k / s >= 128)
            .min_by_key(|&s| (cost(s), s))
            .unwrap_or(1)
    }

    /// Launches the GEMM `d` (operands checked by the caller) with the plan of
    /// [`Gpu::gemm_plan`], or the 64 × 64 baseline kernel under `WAVECP_GEMM=basic`.
    pub(in crate::cuda) fn run_gemm(
        &self,
        d: &GemmDesc,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut DevBuf,
        epi: Option<Epilogue<'_>>,
        read: &BRead,
    ) -> Result<(), CudaError> {
        let (cv, sum_batch) = (&read.conv, read.sum_batch);
        let plan = self.gemm_plan(d);
        if plan.basic && (cv.mode != 0 || sum_batch) {
            return Err(CudaError::Unsupported(
                "implicit-GEMM convolution or batch sum with the basic GEMM kernel".into(),
            ));
        }
        if plan.basic {
            let cfg = LaunchConfig {
                grid_dim: (d.n.div_ceil(64), d.m.div_ceil(64), d.batch),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            return match epi {
                None => {
                    let f = self.function(Kernel::SgemmBasic)?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(a).arg(b).arg(c).arg(d);
                    // SAFETY: arguments match sgemm_strided_f32(const float*, const float*,
                    // float*, GemmParams); the caller's check_gemm bounded every index the
                    // kernel forms by the buffer lengths.
                    unsafe { l.launch(cfg) }.map_err(driver_err).map(|_| ())
                }
                Some(e) => {
                    let f = self.function(Kernel::SgemmBasicBiasAct)?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(a)
                        .arg(b)
                        .arg(c)
                        .arg(d)
                        .arg(e.bias)
                        .arg(&e.has_bias)
                        .arg(e.pre)
                        .arg(&e.kind);
                    // SAFETY: arguments match sgemm_bias_act_f32(const float*, const float*,
                    // float*, GemmParams, const float*, int, float*, int); check_gemm bounded
                    // A, B, C and pre, the bias holds m values, and stand-ins are only touched
                    // when has_bias = 1 or act >= 0, which they are not.
                    unsafe { l.launch(cfg) }.map_err(driver_err).map(|_| ())
                }
            };
        }
        let (m, n) = (d.m as usize, d.n as usize);
        let tp = TiledParams {
            g: *d,
            splits: plan.splits as u32,
            k_chunk: plan.k_chunk as u32,
            a_m_contig: i32::from(d.a[0] == 1),
            b_n_contig: i32::from(d.b[1] == 1),
            partial: i32::from(plan.splits > 1 || sum_batch),
            unused: 0,
        };
        let cfg = LaunchConfig {
            grid_dim: (
                n.div_ceil(128) as u32,
                m.div_ceil(plan.bm) as u32,
                d.batch * plan.splits as u32,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let name = |epilogue: bool| Kernel::SgemmTiled {
            rows: TileRows::of(plan.bm),
            epilogue,
        };
        if plan.splits > 1 || sum_batch {
            // Partials of every slice to a workspace, then the ordered sum and the epilogue
            // (with `sum_batch`, over every sample's slices into one C).
            let batch = d.batch as usize;
            // Every (slice, row, column) partial is written by its tile: no memset needed.
            let mut work = self.device_uninit(batch * plan.splits * m * n)?;
            let f = self.function(name(false))?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(a).arg(b).arg(&mut work).arg(&tp).arg(cv);
            // SAFETY: arguments match sgemm_tNN_f32(const float*, const float*, float*,
            // TiledParams, ConvView). A and B were bounded by check_gemm; with splits > 1 the kernel
            // writes only work[z·m·n + i·n + j], z < batch·splits, i < m, j < n: inside `work`.
            unsafe { l.launch(cfg) }.map_err(driver_err)?;
            let dummy_bias;
            let mut dummy_pre;
            let e = match epi {
                Some(e) => e,
                None => {
                    dummy_bias = self.uninit::<f32>(1)?;
                    dummy_pre = self.uninit::<f32>(1)?;
                    Epilogue {
                        bias: &dummy_bias,
                        has_bias: 0,
                        pre: &mut dummy_pre,
                        kind: -1,
                    }
                }
            };
            let r = self.function(Kernel::SgemmSplitkReduce)?;
            let (rd, splits) = if sum_batch {
                (
                    GemmDesc {
                        batch: 1,
                        c: [d.c[0], d.c[1], 0],
                        ..*d
                    },
                    (batch * plan.splits) as u32,
                )
            } else {
                (*d, plan.splits as u32)
            };
            let mut l = self.stream.launch_builder(&r);
            l.arg(&work)
                .arg(c)
                .arg(&rd)
                .arg(&splits)
                .arg(e.bias)
                .arg(&e.has_bias)
                .arg(e.pre)
                .arg(&e.kind);
            let outputs = rd.batch as usize * m * n;
            // SAFETY: arguments match sgemm_splitk_reduce_f32(const float*, float*, GemmParams,
            // unsigned, const float*, int, float*, int); it reads work[(b·splits + s)·m·n + r]
            // (inside `work`), and C and pre at the offsets check_gemm bounded; stand-ins are
            // only touched when has_bias = 1 or act >= 0.
            unsafe { l.launch(Self::launch_config(outputs)) }.map_err(driver_err)?;
            return Ok(());
        }
        match epi {
            None => {
                let f = self.function(name(false))?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(a).arg(b).arg(c).arg(&tp).arg(cv);
                // SAFETY: arguments match sgemm_tNN_f32(const float*, const float*, float*,
                // TiledParams, ConvView); with splits = 1 the kernel indexes A, B and C only through the
                // strides check_gemm bounded.
                unsafe { l.launch(cfg) }.map_err(driver_err)?;
            }
            Some(e) => {
                let f = self.function(name(true))?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(a)
                    .arg(b)
                    .arg(c)
                    .arg(&tp)
                    .arg(cv)
                    .arg(e.bias)
                    .arg(&e.has_bias)
                    .arg(e.pre)
                    .arg(&e.kind);
                // SAFETY: arguments match sgemm_tNN_bias_act_f32(const float*, const float*,
                // float*, TiledParams, ConvView, const float*, int, float*, int); as above, plus the bias
                // (m values) and pre (bounded like C); stand-ins are never touched.
                unsafe { l.launch(cfg) }.map_err(driver_err)?;
            }
        }
        Ok(())
    }

    /// `C = alpha·Σ_z A[z]·B[z] + beta·C`: the products of a batched GEMM summed into one `C`
    /// (a weight gradient over the samples of a batch) in one launch, split K and an ordered
    /// reduction over (sample, slice); `d.c[2]` is ignored. The baseline kernel
    /// (`WAVECP_GEMM=basic`) runs one GEMM per sample, in sample order.
    pub fn gemm_sum_batch_dev(
        &self,
        d: &GemmDesc,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let one = GemmDesc {
            c: [d.c[0], d.c[1], 0],
            ..*d
        };
        Self::check_gemm(&one, "A", a.len(), d.a, d.m, d.k)?;
        Self::check_gemm(&one, "B", b.len(), d.b, d.k, d.n)?;
        Self::check_gemm(&one, "C", c.len(), one.c, d.m, d.n)?;
        if d.m == 0 || d.n == 0 || d.batch == 0 {
            return Ok(());
        }
        if self.basic_gemm {
            let (sa, sb) = (d.a[2] as usize, d.b[2] as usize);
            // Each sample's view: from its offset to where the last sample's span ends.
            let (la, lb) = (
                a.len() - sa * (d.batch as usize - 1),
                b.len() - sb * (d.batch as usize - 1),
            );
            for z in 0..d.batch as usize {
                let dz = GemmDesc {
                    batch: 1,
                    beta: if z == 0 { d.beta } else { 1.0 },
                    ..one
                };
                let az = a.slice(z * sa..z * sa + la);
                let bz = b.slice(z * sb..z * sb + lb);
                self.run_gemm(&dz, &az, &bz, c, None, &BRead::strided(false))?;
            }
            return Ok(());
        }
        self.run_gemm(&one, a, b, c, None, &BRead::strided(true))
    }
}
