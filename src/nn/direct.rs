//! Direct convolution with AVX-512 for stride 1 and dilation 1 (the U-Net's 3×3×3 layers and,
//! through the flipped-kernel adjoint, their input gradients): no im2col matrix, no GEMM packing.
//!
//! Layout. One sample is copied once into zero-padded planes `xp[ci][t][y·W + x]` of padded
//! width `W = X + 2px`. An output position `(y, x)` is the flat index `q = y·W + x` of a plane of
//! the same width, and the input of tap `(a, b, c)` for it is `xp[ci][t + a][q + b·W + c]`: for
//! every tap, a run of consecutive outputs reads a run of consecutive inputs, so one unaligned
//! vector load feeds 16 outputs. The columns `x ≥ X'` of the flat output plane are junk (they
//! wrap into the next row) and are dropped when the plane is copied out; they cost `(W − X')/W`
//! of the arithmetic (6 % at 32 × 32, 20 % at 8 × 8).
//!
//! Register tile: 8 output channels × 48 flat positions (3 vectors) = 24 accumulators; per tap
//! and input channel, 3 vector loads and 8 weight broadcasts feed 24 FMAs, so the loop is bound
//! by FMA issue, not by loads. Output channels that do not fill a block of 8 run in blocks of
//! 4, 2 and 1. Weights are packed per block as `[ci][kt][ky][kx][8]`, so the broadcasts walk
//! memory in order. The weight gradient reads the same padded planes and the output gradient
//! laid out as flat planes of the same width (junk columns zero); its tile is described at
//! [`Direct::weight_grad_sample`].
//!
//! Summation order: each output sums over `(ci, a, b, c)` in that order in one f32 accumulator,
//! a different order from the im2col GEMM's (which blocks the reduction), so the two paths agree
//! to f32 rounding (tested), not bit for bit. The result does not depend on the thread count.

use super::conv::Geom;

/// Outputs per register tile along the flat plane (3 AVX-512 vectors).
const QT: usize = 48;

/// Bytes of output gradient one weight-gradient pass keeps hot (half of a 1 MiB L2).
const L2_BUDGET: usize = 384 << 10;

/// `WAVECP_CONV=gemm` turns the direct path off (to time or check the im2col + GEMM path).
fn enabled_by_env() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("WAVECP_CONV").map_or(true, |v| v != "gemm"))
}

/// Whether this CPU runs the direct kernel (AVX-512F).
pub fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Sizes of one direct convolution (one input shape).
#[derive(Debug, Clone)]
pub struct Direct {
    ci: usize,
    co: usize,
    g: Geom,
    ind: [usize; 3],
    outd: [usize; 3],
    /// Padded width `X + 2px` (row stride of every plane).
    w: usize,
    /// Padded time extent `T + 2pt`.
    tp: usize,
    /// Plane stride `(Y + 2py)·W`.
    ps: usize,
    /// Flat output positions per plane, rounded up to whole tiles.
    lq: usize,
    /// Length of the padded input buffer, with a tail guard for the junk positions of the last
    /// tile.
    len: usize,
    /// `(first output channel, block size, offset in the packed weights)`.
    blocks: Vec<(usize, usize, usize)>,
}

impl Direct {
    /// The plan for `ci → co` channels on input `ind`, or `None` when the direct path does not
    /// apply (stride or dilation ≠ 1, no AVX-512, or `WAVECP_CONV=gemm`) or would waste more
    /// than a quarter of its arithmetic on junk columns and partial tiles (small planes: at
    /// 8 × 8 it computes 96 positions for 64 and ran 1.2–1.5× slower than the GEMMs).
    pub fn plan(ci: usize, co: usize, g: &Geom, ind: [usize; 3]) -> Option<Direct> {
        if !enabled_by_env() {
            return None;
        }
        let plan = Self::plan_always(ci, co, g, ind)?;
        let useful = (plan.outd[1] * plan.outd[2]) as f64 / plan.lq as f64;
        (useful >= 0.75).then_some(plan)
    }

    /// As [`Direct::plan`], ignoring `WAVECP_CONV` and the waste bound (tests compare both paths
    /// in one process, at odd shapes).
    pub fn plan_always(ci: usize, co: usize, g: &Geom, ind: [usize; 3]) -> Option<Direct> {
        if g.stride != [1; 3] || g.dil != [1; 3] || ci == 0 || co == 0 || !cpu_has_avx512() {
            return None;
        }
        let outd = g.out_dims(ind).ok()?;
        let w = ind[2] + 2 * g.pad[2];
        let tp = ind[0] + 2 * g.pad[0];
        let ps = (ind[1] + 2 * g.pad[1]) * w;
        let lq = (outd[1] * w).div_ceil(QT) * QT;
        // Furthest read: the last tile's last lane at the last tap of the last plane.
        let reach = (ci - 1) * tp * ps + (tp - 1) * ps + lq + (g.k[1] - 1) * w + g.k[2] - 1;
        let len = (ci * tp * ps).max(reach);
        let blocks = channel_blocks(co, 8)
            .into_iter()
            .map(|(o0, size)| (o0, size, o0 * ci * g.kvol()))
            .collect();
        Some(Direct {
            ci,
            co,
            g: *g,
            ind,
            outd,
            w,
            tp,
            ps,
            lq,
            len,
            blocks,
        })
    }

    /// Length of the padded input buffer [`Direct::pack_input`] fills.
    pub fn input_len(&self) -> usize {
        self.len
    }

    /// Length of the per-thread output plane buffer of [`Direct::forward_sample`].
    pub fn plane_len(&self) -> usize {
        8 * self.lq
    }

    /// `W[o, i, kt, ky, kx]` regrouped per output block as `[i][kt][ky][kx][block]`.
    pub fn pack_weights(&self, wt: &[f32]) -> Vec<f32> {
        let kv = self.g.kvol();
        let mut out = vec![0.0f32; self.co * self.ci * kv];
        for &(o0, ob, off) in &self.blocks {
            for i in 0..self.ci {
                for t in 0..kv {
                    for o in 0..ob {
                        out[off + (i * kv + t) * ob + o] = wt[((o0 + o) * self.ci + i) * kv + t];
                    }
                }
            }
        }
        out
    }

    /// Copies one sample `x: [ci, T, Y, X]` into the zero-padded planes.
    pub fn pack_input(&self, x: &[f32], xp: &mut [f32]) {
        let [t, y, xl] = self.ind;
        let xp = &mut xp[..self.len];
        xp.fill(0.0);
        for i in 0..self.ci {
            for tt in 0..t {
                for yy in 0..y {
                    let src = ((i * t + tt) * y + yy) * xl;
                    let dst = (i * self.tp + tt + self.g.pad[0]) * self.ps
                        + (yy + self.g.pad[1]) * self.w
                        + self.g.pad[2];
                    xp[dst..dst + xl].copy_from_slice(&x[src..src + xl]);
                }
            }
        }
    }

    /// `y[o, t, y, x] = bias[o] + Σ W ⋆ x` for one sample, from the padded input `xp` and the
    /// packed weights `wp`. `plane` is scratch of [`Direct::plane_len`] values.
    pub fn forward_sample(
        &self,
        xp: &[f32],
        wp: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        plane: &mut [f32],
    ) {
        let kv = self.g.kvol();
        let [ot, oy, ox] = self.outd;
        // The kernel reads through raw pointers; these bounds make every read and write inside
        // the slices (see `reach` in `plan_always`).
        assert!(xp.len() >= self.len && wp.len() >= self.co * self.ci * kv);
        assert!(plane.len() >= self.plane_len() && y.len() >= self.co * ot * oy * ox);
        for &(o0, ob, off) in &self.blocks {
            for t in 0..ot {
                for q0 in (0..self.lq).step_by(QT) {
                    let args = TileArgs {
                        x: xp[t * self.ps + q0..].as_ptr(),
                        cs: self.tp * self.ps,
                        ps: self.ps,
                        w: self.w,
                        ci: self.ci,
                        k: self.g.k,
                        wp: wp[off..].as_ptr(),
                        out: plane[q0..].as_mut_ptr(),
                        os: self.lq,
                    };
                    // SAFETY: `plan_always` only builds a plan where AVX-512F is present; the
                    // asserts above keep the reads within `xp`/`wp` (the furthest read is
                    // `reach`) and the writes within `plane` (`ob ≤ 8` rows of `lq`).
                    unsafe {
                        match ob {
                            8 => tile::<8>(&args),
                            4 => tile::<4>(&args),
                            2 => tile::<2>(&args),
                            _ => tile::<1>(&args),
                        }
                    }
                }
                for o in 0..ob {
                    let b = bias.map_or(0.0, |b| b[o0 + o]);
                    let src = &plane[o * self.lq..];
                    let dst = &mut y[((o0 + o) * ot + t) * oy * ox..][..oy * ox];
                    for (r, row) in dst.chunks_exact_mut(ox).enumerate() {
                        for (d, s) in row.iter_mut().zip(&src[r * self.w..r * self.w + ox]) {
                            *d = s + b;
                        }
                    }
                }
            }
        }
    }

    /// Length of the buffer [`Direct::pack_dy`] fills.
    pub fn dy_len(&self) -> usize {
        self.co * self.outd[0] * self.lq
    }

    /// Length of the per-thread partial sums of [`Direct::weight_grad_sample`].
    pub fn partial_len(&self) -> usize {
        4 * self.ci * self.g.kvol() * 16
    }

    /// Copies one sample's output gradient `dy: [co, T', Y', X']` into flat planes of the padded
    /// width, with zeros in the junk columns (so that they add nothing to the weight gradient).
    pub fn pack_dy(&self, dy: &[f32], dyp: &mut [f32]) {
        let [ot, oy, ox] = self.outd;
        let dyp = &mut dyp[..self.dy_len()];
        dyp.fill(0.0);
        for (p, plane) in dy.chunks_exact(oy * ox).take(self.co * ot).enumerate() {
            for (r, row) in plane.chunks_exact(ox).enumerate() {
                let dst = p * self.lq + r * self.w;
                dyp[dst..dst + ox].copy_from_slice(row);
            }
        }
    }

    /// `dw[o, i, a, b, c] += Σ_{t, q} dy[o, t, q] · xp[i, t + a, q + b·W + c]` for one sample,
    /// from the padded input and the packed output gradient.
    ///
    /// Register tile: 4 output channels × 6 taps (consecutive in `(i, a, b, c)` order) = 24
    /// vector accumulators of 16 positions; per 16 positions, 4 gradient loads and 6 input loads
    /// feed 24 FMAs (8 × 3 needed 8 gradient loads, mostly from L2, and ran 5–7 % slower). Each
    /// tile runs over as many planes as keep the block's gradient rows in L2 (all 8 at 32 × 32,
    /// 5 at 64 × 64); the accumulators go to `partial` between such passes and are summed across
    /// lanes once at the end.
    pub fn weight_grad_sample(&self, xp: &[f32], dyp: &[f32], dw: &mut [f32], partial: &mut [f32]) {
        let kv = self.g.kvol();
        let ntap = self.ci * kv;
        let ot = self.outd[0];
        assert!(xp.len() >= self.len && dyp.len() >= self.dy_len());
        assert!(partial.len() >= self.partial_len() && dw.len() >= self.co * ntap);
        let offs: Vec<usize> = (0..ntap)
            .map(|j| {
                let (i, r) = (j / kv, j % kv);
                let k = self.g.k;
                let (a, b, c) = (r / (k[1] * k[2]), (r / k[2]) % k[1], r % k[2]);
                i * self.tp * self.ps + a * self.ps + b * self.w + c
            })
            .collect();
        // Valid positions only: the plane's rows up to the last output row, in whole vectors.
        let nq = (self.outd[1] * self.w).div_ceil(16) * 16;
        for (o0, ob) in channel_blocks(self.co, 4) {
            let part = &mut partial[..ntap * ob * 16];
            part.fill(0.0);
            // Planes per pass: as many as keep the block's gradient rows in L2 while all tap
            // tiles run over them (at 64 × 64 one plane is 68 KB for 4 channels; over all 8
            // planes the rows streamed from L3 and the pass ran at half the forward's rate).
            let tc = (L2_BUDGET / (ob * self.lq * 4)).clamp(1, ot);
            for t0 in (0..ot).step_by(tc) {
                let mut j0 = 0;
                while j0 < ntap {
                    let nt = (ntap - j0).min(6);
                    let args = WTileArgs {
                        x: xp[t0 * self.ps..].as_ptr(),
                        xps: self.ps,
                        nt: tc.min(ot - t0),
                        dyt: self.lq,
                        offs: std::array::from_fn(|n| offs[(j0 + n).min(ntap - 1)]),
                        dy: dyp[(o0 * ot + t0) * self.lq..].as_ptr(),
                        dys: ot * self.lq,
                        nv: nq / 16,
                        acc: part[j0 * ob * 16..].as_mut_ptr(),
                    };
                    // SAFETY: as in `forward_sample`: AVX-512F is present (a plan exists); input
                    // reads stay below `reach` (`nq ≤ lq`), gradient reads within the block's
                    // `ob` rows of `dyp`, and the `nt·ob·16` partial sums within `part`.
                    unsafe {
                        match ob {
                            4 => wtile_n::<4>(nt, &args),
                            2 => wtile_n::<2>(nt, &args),
                            _ => wtile_n::<1>(nt, &args),
                        }
                    }
                    j0 += nt;
                }
            }
            for j in 0..ntap {
                for o in 0..ob {
                    let lanes = &part[(j * ob + o) * 16..][..16];
                    dw[(o0 + o) * ntap + j] += super::conv::sum8(lanes);
                }
            }
        }
    }
}

/// Output channels `0..co` cut into blocks of `largest` (a power of two), then one block each of
/// the smaller powers of two that the remainder needs: `(first channel, size)`.
fn channel_blocks(co: usize, largest: usize) -> Vec<(usize, usize)> {
    let mut blocks = vec![];
    let (mut o0, mut size) = (0, largest);
    while size > 0 {
        while co - o0 >= size {
            blocks.push((o0, size));
            o0 += size;
        }
        size /= 2;
    }
    blocks
}

/// [`wtile`] for `nt` taps (at most 6; `OB` at most 4).
///
/// # Safety
/// As [`wtile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn wtile_n<const OB: usize>(nt: usize, a: &WTileArgs) {
    match nt {
        6 => wtile::<OB, 6>(a),
        5 => wtile::<OB, 5>(a),
        4 => wtile::<OB, 4>(a),
        3 => wtile::<OB, 3>(a),
        2 => wtile::<OB, 2>(a),
        _ => wtile::<OB, 1>(a),
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn wtile_n<const OB: usize>(_nt: usize, _a: &WTileArgs) {
    unreachable!("plans exist only on x86-64 with AVX-512F")
}

/// Pointers of one weight-gradient tile.
struct WTileArgs {
    /// Input at channel 0, plane `t`, position 0; tap `n` reads from `offs[n]` on.
    x: *const f32,
    offs: [usize; 6],
    /// Gradient rows of the block at plane `t`, `dys` apart.
    dy: *const f32,
    dys: usize,
    /// Vectors of 16 positions per plane.
    nv: usize,
    /// Planes, and their strides in the input and in the gradient.
    nt: usize,
    xps: usize,
    dyt: usize,
    /// Partial sums `[NT][OB][16]`.
    acc: *mut f32,
}

/// One weight-gradient tile: `OB` output channels × `NT` taps, over `nv` vectors of positions.
///
/// # Safety
/// The CPU has AVX-512F; `a.x` is readable at `offs[n] + 16·nv`, `a.dy` for `OB` rows of
/// `16·nv` at stride `dys`, `a.acc` readable and writable for `NT·OB·16` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn wtile<const OB: usize, const NT: usize>(a: &WTileArgs) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NT]; OB];
    for (o, acc) in acc.iter_mut().enumerate() {
        for (n, v) in acc.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(a.acc.add((n * OB + o) * 16));
        }
    }
    for t in 0..a.nt {
        let xs: [*const f32; NT] = std::array::from_fn(|n| a.x.add(a.offs[n] + t * a.xps));
        let dy = a.dy.add(t * a.dyt);
        for v in 0..a.nv {
            let mut xv = [_mm512_setzero_ps(); NT];
            for n in 0..NT {
                xv[n] = _mm512_loadu_ps(xs[n].add(16 * v));
            }
            for (o, acc) in acc.iter_mut().enumerate() {
                let d = _mm512_loadu_ps(dy.add(o * a.dys + 16 * v));
                for n in 0..NT {
                    acc[n] = _mm512_fmadd_ps(d, xv[n], acc[n]);
                }
            }
        }
    }
    for (o, acc) in acc.iter().enumerate() {
        for (n, v) in acc.iter().enumerate() {
            _mm512_storeu_ps(a.acc.add((n * OB + o) * 16), *v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn wtile<const OB: usize, const NT: usize>(_a: &WTileArgs) {
    unreachable!("plans exist only on x86-64 with AVX-512F")
}

/// Pointers and strides of one register tile.
struct TileArgs {
    /// Input at channel 0, plane `t`, flat position `q0`.
    x: *const f32,
    /// Channel and plane strides, padded width.
    cs: usize,
    ps: usize,
    w: usize,
    ci: usize,
    k: [usize; 3],
    /// Packed weights of the block.
    wp: *const f32,
    /// Output plane at `q0`, with row stride `os` per output channel.
    out: *mut f32,
    os: usize,
}

/// One register tile: `OB` output channels × 48 flat positions, summed over every input channel
/// and tap.
///
/// # Safety
/// The CPU has AVX-512F; `a.x` is readable for every `i·cs + t·ps + b·w + c + 48` the loops
/// reach, `a.wp` for `ci·kvol·OB` values, `a.out` writable for `OB` rows of 48 at stride `os`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const OB: usize>(a: &TileArgs) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 3]; OB];
    let mut wp = a.wp;
    for i in 0..a.ci {
        for ta in 0..a.k[0] {
            // SAFETY (all pointer arithmetic below): within the bounds the caller guarantees.
            let plane = a.x.add(i * a.cs + ta * a.ps);
            for b in 0..a.k[1] {
                let row = plane.add(b * a.w);
                for c in 0..a.k[2] {
                    let p = row.add(c);
                    let v0 = _mm512_loadu_ps(p);
                    let v1 = _mm512_loadu_ps(p.add(16));
                    let v2 = _mm512_loadu_ps(p.add(32));
                    for (o, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm512_set1_ps(*wp.add(o));
                        acc[0] = _mm512_fmadd_ps(wv, v0, acc[0]);
                        acc[1] = _mm512_fmadd_ps(wv, v1, acc[1]);
                        acc[2] = _mm512_fmadd_ps(wv, v2, acc[2]);
                    }
                    wp = wp.add(OB);
                }
            }
        }
    }
    for (o, acc) in acc.iter().enumerate() {
        let out = a.out.add(o * a.os);
        _mm512_storeu_ps(out, acc[0]);
        _mm512_storeu_ps(out.add(16), acc[1]);
        _mm512_storeu_ps(out.add(32), acc[2]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const OB: usize>(_a: &TileArgs) {
    unreachable!("plans exist only on x86-64 with AVX-512F")
}
