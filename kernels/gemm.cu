// Batched SGEMM on strided operands (and a variant with the convolution epilogue fused): C[z] = alpha · A[z] · B[z] + beta · C[z] for z < batch,
// with A [m × k], B [k × n], C [m × n] each given by a row stride, a column stride and a batch
// stride (in elements). Transposes are stride swaps, so one kernel serves every GEMM of the
// network: the 1×1 passes of the CP convolution (forward, input and weight gradients), the
// im2col-based dense convolution and its gradients, and the transposed convolution.
// CPU twin: `wavecp::nn::conv::gemm_view` (src/nn/conv.rs, the `gemm` crate); parity test:
// tests/cuda.rs.
//
// Thread mapping: one 256-thread block per 64 × 64 tile of C (grid x over n, y over m, z over
// the batch); each thread owns a 4 × 4 register micro-tile of outputs strided by 16 rows and
// columns, so that the shared-memory reads of a warp fall in distinct banks. The k loop stages a
// 64 × 16 panel of A and a 16 × 64 panel of B in shared memory per step. Loads are coalesced
// when A is column-major-contiguous along m (a_rs = 1) and B row-major along n (b_cs = 1); other
// layouts are correct but read with a stride.
//
// Cost per output element: 2k FLOPs; from global memory (k/64)·(4 + 4) B of A and B panels (each
// panel value is reused by 64 outputs) plus 4 B written (8 B when beta ≠ 0). Arithmetic
// intensity ≈ 16 FLOP/B for large k: compute-bound on the H100/H200 (peak ≈ 60 TFLOP/s FP32
// without tensor cores, ≈ 4.8 TB/s) only above ≈ 13 FLOP/B, so this tile size is near the ridge;
// larger tiles and cp.async double buffering are the next steps once the GPU runs are measured.
// Summation order: k ascending, one fmaf chain per output (deterministic for a given shape).

struct GemmParams {
    unsigned int m, n, k, batch;
    long long a_rs, a_cs, a_bs;
    long long b_rs, b_cs, b_bs;
    long long c_rs, c_cs, c_bs;
    float alpha, beta;
};

#define BM 64
#define BN 64
#define BK 16

// EPI = 1 adds the epilogue: + bias[row] (when has_bias), the value before the activation to
// `pre` (same layout as C), then C = act(value) (act < 0: none).
template <int EPI>
__device__ __forceinline__ void sgemm_body(const float* __restrict__ A,
                                           const float* __restrict__ B, float* __restrict__ C,
                                           const GemmParams& p, const float* __restrict__ bias,
                                           int has_bias, float* __restrict__ pre, int act_kind) {
    __shared__ float As[BK][BM + 4];
    __shared__ float Bs[BK][BN + 4];
    const long long z = blockIdx.z;
    A += z * p.a_bs;
    B += z * p.b_bs;
    C += z * p.c_bs;
    if (EPI && act_kind >= 0) pre += z * p.c_bs;
    const unsigned int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const unsigned int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;
    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;

    for (unsigned int k0 = 0; k0 < p.k; k0 += BK) {
        for (unsigned int e = tid; e < BM * BK; e += 256) {
            const unsigned int i = e % BM, kk = e / BM;
            const unsigned int gi = row0 + i, gk = k0 + kk;
            As[kk][i] = (gi < p.m && gk < p.k) ? A[gi * p.a_rs + gk * p.a_cs] : 0.0f;
        }
        for (unsigned int e = tid; e < BK * BN; e += 256) {
            const unsigned int j = e % BN, kk = e / BN;
            const unsigned int gj = col0 + j, gk = k0 + kk;
            Bs[kk][j] = (gj < p.n && gk < p.k) ? B[gk * p.b_rs + gj * p.b_cs] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) a[r] = As[kk][tr + 16 * r];
#pragma unroll
            for (int c = 0; c < 4; ++c) b[c] = Bs[kk][tc + 16 * c];
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const unsigned int gi = row0 + tr + 16 * r;
        if (gi >= p.m) continue;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const unsigned int gj = col0 + tc + 16 * c;
            if (gj >= p.n) continue;
            const long long off = gi * p.c_rs + gj * p.c_cs;
            float* out = C + off;
            // beta = 0 must not read C: it may hold uninitialised memory (NaN · 0 = NaN).
            float v = p.beta == 0.0f ? p.alpha * acc[r][c] : p.alpha * acc[r][c] + p.beta * *out;
            if (EPI) {
                if (has_bias) v += bias[gi];
                if (act_kind >= 0) {
                    pre[off] = v;
                    v = act(act_kind, v);
                }
            }
            *out = v;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    sgemm_strided_f32(const float* __restrict__ A, const float* __restrict__ B,
                      float* __restrict__ C, GemmParams p) {
    sgemm_body<0>(A, B, C, p, nullptr, 0, nullptr, -1);
}

// The convolution epilogue fused into the GEMM: C = act(alpha·A·B + beta·C + bias[row]), and
// `pre` = the value before the activation (kept for the activation's backward pass). Saves the
// separate bias and activation passes: per output 4 B written to `pre` instead of 8 B read and
// 8 B written.
extern "C" __global__ void __launch_bounds__(256)
    sgemm_bias_act_f32(const float* __restrict__ A, const float* __restrict__ B,
                       float* __restrict__ C, GemmParams p, const float* __restrict__ bias,
                       int has_bias, float* __restrict__ pre, int act_kind) {
    sgemm_body<1>(A, B, C, p, bias, has_bias, pre, act_kind);
}

// ---------------------------------------------------------------------------------------------
// Tiled SGEMM, the default for every GEMM (the 64 × 64 kernel above is kept as a baseline for
// the benchmarks: WAVECP_GEMM=basic). Same operands, strides and epilogue.
//
// Thread mapping: 256 threads per BM × 128 tile of C, BM ∈ {128, 64, 32} chosen by the host
// from m (the network's GEMMs have m = 4 … 336 output channels or ranks: a fixed 128-row tile
// would leave most of it idle at m = 32). Thread (tr, tc), tr, tc < 16, owns rows
// tr·(BM/16) + r, r < BM/16, and columns 4·(tc + 16·h) + v, h < 2, v < 4: a (BM/16) × 8
// register tile read from shared memory as float4s (float2 for A at BM = 32), conflict-free
// (a warp's 16 distinct B vectors are 256 contiguous bytes, read twice; its 2 A vectors are
// broadcast): per k step 2 + BM/64 vector reads feed BM/2 FMAs (was BM/16 + 8 scalar reads). The k loop steps by 8 through double-buffered shared memory:
// the next panel is fetched into registers while the current one is multiplied, one barrier
// per step. Panel loads are coalesced whichever operand stride is 1 (the host passes which).
//
// Split K: a GEMM with few tiles and a long k (the weight gradients, e.g. dW = dy·colᵀ with
// k = B·T·Y·X ≈ 10⁵ and m·n ≈ 32 × 864: 7 tiles for 132 SMs) runs `splits` slices of k as
// separate blocks (grid z = batch × splits), each writing its partial tile to a workspace;
// sgemm_splitk_reduce_f32 then adds the partials in slice order (deterministic) and applies
// alpha, beta and the epilogue.
//
// Implicit GEMM (ConvView below): for the dense and pair convolutions B is the im2col matrix
// of the layer input, gathered by the panel loads instead of read from a stored matrix: the
// forward pass (B = col, coalesced along output positions) and the weight gradient (B = colᵀ)
// no longer write and re-read c·kvol times the input (27× for 3 × 3 × 3 filters; at the
// paper's 32 channels, 8 × 64 × 64, batch 4: 453 MB per layer and pass), and training keeps no
// im2col matrix. The input gradient is a third implicit GEMM for stride 1 and dilation 1 (a
// convolution of dy with the channel-swapped, tap-reversed weights: kernels/im2col.cu
// conv_weight_adjoint_f32); other geometries go through a stored Wᵀ·dy and col2im. The gather
// does no integer division inside the k loop: each thread keeps the panel index that is fixed
// for it (mode 1: its column, an output position, as the corner of its receptive field; mode 2:
// its columns' (channel, tap) in a per-block table) and walks the other with a carry cursor
// (tap_step); the generic im2col_at decomposition (ten divisions and remainders per value,
// 121 div/rem instructions in each kernel's PTX, now 16, all before the loop) would cost more
// issue slots than the FMAs the value feeds at the 32-row tile. The 128-row variants are
// bounded to 128 registers (__launch_bounds__(256, 2)) so that two blocks share an SM.
//
// Cost per output element: 2k FLOPs; from global memory (k/BM + k/128)·4 B of A and B panels;
// arithmetic intensity for BM = 128: 2k / (k·(1/128 + 1/128)·4) = 32 FLOP/B, for BM = 32:
// 12.8 FLOP/B, against a machine balance of ≈ 14 FLOP/B (67 TFLOP/s FP32, 4.8 TB/s) on the
// H200: the 128-row tile is compute-bound, the 32-row one near the ridge. Split K adds
// splits·m·n·8 B of workspace traffic. Summation order: k ascending per slice, slices in order.

#define TBN 128
#define TBK 8

struct TiledParams {
    GemmParams g;
    unsigned int splits;   // k slices (1: none)
    unsigned int k_chunk;  // k values per slice (a multiple of TBK)
    int a_m_contig;        // 1: A's row stride is 1 (consecutive m adjacent in memory)
    int b_n_contig;        // 1: B's column stride is 1
    int partial;           // 1: raw partial tiles to the workspace C[z] (split K, batch sums)
    int unused;            // keeps the size a multiple of 8 with no hidden padding
};

// B as an im2col matrix of a convolution input x, never stored (implicit GEMM): mode 1 is the
// forward pass's B = col [c·kvol, nout] (rows: channel and tap, columns: output position), mode
// 2 the weight gradient's B = colᵀ [nout, c·kvol]; mode 0 is an ordinary strided B. x holds the
// batch's samples `x_bs` values apart. The gather is im2col_at (kernels/common.cuh), the same
// as kernels/im2col.cu's im2col_f32 (its CPU twin: nn::conv::im2col).
struct ConvView {
    unsigned int mode;
    unsigned int unused;  // keeps x_bs 8-byte aligned with no hidden padding
    unsigned long long x_bs;
    ConvParams g;  // kernels/common.cuh
};

// The implicit GEMM's cursors, moved `by` steps on (last index fastest) without a division:
// (channel, ta, tb, tc) over filter taps, ext = k, the channel counting whole filters; and
// (oa, ob, oc) over output positions, ext = out_d, oa counting whole planes.
__device__ __forceinline__ void tap_step(unsigned int& ch, unsigned int& a, unsigned int& b,
                                         unsigned int& c, unsigned int by,
                                         const unsigned int (&ext)[3]) {
    c += by;
    while (c >= ext[2]) {
        c -= ext[2];
        if (++b == ext[1]) {
            b = 0;
            if (++a == ext[0]) {
                a = 0;
                ++ch;
            }
        }
    }
}
__device__ __forceinline__ void tap_step(unsigned int& a, unsigned int& b, unsigned int& c,
                                         unsigned int by, const unsigned int (&ext)[3]) {
    c += by;
    while (c >= ext[2]) {
        c -= ext[2];
        if (++b == ext[1]) {
            b = 0;
            ++a;
        }
    }
}

template <int TBM, int EPI>
__device__ __forceinline__ void sgemm_tiled_body(const float* __restrict__ A,
                                                 const float* __restrict__ B,
                                                 float* __restrict__ C, const TiledParams& tp,
                                                 const ConvView& cv,
                                                 const float* __restrict__ bias, int has_bias,
                                                 float* __restrict__ pre, int act_kind) {
    constexpr int TM = TBM / 16, TN = TBN / 16;
    constexpr int A_PER = TBM * TBK / 256, B_PER = TBN * TBK / 256;
    constexpr int KK_UNROLL = TBM == 128 ? 2 : TBK;
    (void)KK_UNROLL;  // used by a pragma only (which host compilers ignore)
    // Rows padded by 4 floats: every row starts 16-byte aligned for the vector reads below.
    __shared__ __align__(16) float As[2][TBK][TBM + 4];
    __shared__ __align__(16) float Bs[2][TBK][TBN + 4];
    const GemmParams& p = tp.g;
    const unsigned int z = blockIdx.z, bz = z / tp.splits, sz = z % tp.splits;
    A += (long long)bz * p.a_bs;
    B += cv.mode == 0 ? (long long)bz * p.b_bs : (long long)(bz * cv.x_bs);
    const unsigned int kb = sz * tp.k_chunk;
    const unsigned int ke = min(p.k, kb + tp.k_chunk);
    const unsigned int row0 = blockIdx.y * TBM, col0 = blockIdx.x * TBN;
    const unsigned int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;

    // Which index of the B panel a thread keeps across the k loop. Mode 1 (B = col: rows are
    // (channel, tap), columns output positions) keeps its column, tid % TBN, so its receptive
    // field's corner is computed once and its rows advance by a cursor; mode 2 (B = colᵀ: rows
    // are output positions, columns (channel, tap)) keeps its row offset tid % TBK and reads
    // its columns' (channel, tap) from a table the block fills once. Either way the k loop
    // does no integer division (the generic im2col_at does ten per value).
    const bool bn = cv.mode == 1 ? true : (cv.mode == 2 ? false : tp.b_n_contig != 0);
    const ConvParams& g = cv.g;
    const int in_y = (int)g.in_d[1], in_x = (int)g.in_d[2];
    // The cursor: mode 1, (channel, ta, tb, tc) of the first row of this thread's panel
    // slots; mode 2, (unused, oa, ob, oc), the output position of its row.
    unsigned int cu_ch = 0, cu_a = 0, cu_b = 0, cu_c = 0;
    // Per column of the block's B panel: mode 1, (0 or −1 past n, the receptive field's corner
    // (t, y, x)); mode 2, (channel offset or −1, tap offsets − padding). In shared memory
    // rather than registers, which the 128-row tile has none to spare of.
    __shared__ int4 colinfo[TBN];
    if (cv.mode == 1) {
        if (tid < TBN) {
            const unsigned int gj = col0 + tid;
            const unsigned int oa = gj / (g.out_d[1] * g.out_d[2]);
            const unsigned int ob = (gj / g.out_d[2]) % g.out_d[1], oc = gj % g.out_d[2];
            colinfo[tid] = make_int4(gj < p.n ? 0 : -1,
                                     (int)(oa * g.stride[0]) - (int)g.pad[0],
                                     (int)(ob * g.stride[1]) - (int)g.pad[1],
                                     (int)(oc * g.stride[2]) - (int)g.pad[2]);
        }
        const unsigned int row = kb + tid / TBN, kv = g.k[0] * g.k[1] * g.k[2];
        const unsigned int tap = row % kv;
        cu_ch = row / kv;
        cu_a = tap / (g.k[1] * g.k[2]);
        cu_b = (tap / g.k[2]) % g.k[1];
        cu_c = tap % g.k[2];
    } else if (cv.mode == 2) {
        if (tid < TBN) {
            const unsigned int gj = col0 + tid, kv = g.k[0] * g.k[1] * g.k[2];
            const unsigned int tap = gj % kv;
            const unsigned int nin = g.in_d[0] * g.in_d[1] * g.in_d[2];
            colinfo[tid] = make_int4(gj < p.n ? (int)((gj / kv) * nin) : -1,
                                     (int)(tap / (g.k[1] * g.k[2]) * g.dil[0]) - (int)g.pad[0],
                                     (int)((tap / g.k[2]) % g.k[1] * g.dil[1]) - (int)g.pad[1],
                                     (int)(tap % g.k[2] * g.dil[2]) - (int)g.pad[2]);
        }
        const unsigned int pos = kb + tid % TBK;
        cu_a = pos / (g.out_d[1] * g.out_d[2]);
        cu_b = (pos / g.out_d[2]) % g.out_d[1];
        cu_c = pos % g.out_d[2];
    }
    __syncthreads();  // colinfo is read by the first fetch

    float ra[A_PER], rb[B_PER];
    // Panel of A (TBM × TBK) and B (TBK × TBN) at k0 into registers; zero outside the matrix
    // and the slice. Called for k0 = kb, kb + TBK, ... in turn: the gather cursors advance by
    // one panel per call.
    auto fetch = [&](unsigned int k0) {
#pragma unroll
        for (int q = 0; q < A_PER; ++q) {
            const unsigned int e = tid + 256 * q;
            const unsigned int i = tp.a_m_contig ? e % TBM : e / TBK;
            const unsigned int kk = tp.a_m_contig ? e / TBM : e % TBK;
            const unsigned int gi = row0 + i, gk = k0 + kk;
            ra[q] = (gi < p.m && gk < ke) ? A[gi * p.a_rs + gk * p.a_cs] : 0.0f;
        }
        if (cv.mode == 1) {
            // Rows k0 + tid / TBN + (256 / TBN)·q of this thread's column.
            unsigned int ch = cu_ch, ta = cu_a, tb = cu_b, tc = cu_c;
            const int4 cn = colinfo[tid % TBN];
#pragma unroll
            for (int q = 0; q < B_PER; ++q) {
                if (q > 0) tap_step(ch, ta, tb, tc, 256 / TBN, g.k);
                const unsigned int gk = k0 + tid / TBN + (256 / TBN) * q;
                const int ia = cn.y + (int)(ta * g.dil[0]), ib = cn.z + (int)(tb * g.dil[1]),
                          ic = cn.w + (int)(tc * g.dil[2]);
                const bool in = cn.x == 0 && gk < ke && ia >= 0 && ia < (int)g.in_d[0] &&
                                ib >= 0 && ib < in_y && ic >= 0 && ic < in_x;
                rb[q] = in ? B[(unsigned long long)ch * g.in_d[0] * in_y * in_x +
                               (unsigned int)((ia * in_y + ib) * in_x + ic)]
                           : 0.0f;
            }
            tap_step(cu_ch, cu_a, cu_b, cu_c, TBK, g.k);
        } else if (cv.mode == 2) {
            // Row k0 + tid % TBK (output position cu_a, cu_b, cu_c) of columns
            // tid / TBK + (256 / TBK)·q.
            const unsigned int gk = k0 + tid % TBK;
            const int oa = (int)(cu_a * g.stride[0]), ob = (int)(cu_b * g.stride[1]),
                      oc = (int)(cu_c * g.stride[2]);
#pragma unroll
            for (int q = 0; q < B_PER; ++q) {
                const int4 t = colinfo[tid / TBK + (256 / TBK) * q];
                const int ia = oa + t.y, ib = ob + t.z, ic = oc + t.w;
                const bool in = t.x >= 0 && gk < ke && ia >= 0 && ia < (int)g.in_d[0] &&
                                ib >= 0 && ib < in_y && ic >= 0 && ic < in_x;
                rb[q] = in ? B[(unsigned int)t.x + (unsigned int)((ia * in_y + ib) * in_x + ic)]
                           : 0.0f;
            }
            tap_step(cu_a, cu_b, cu_c, TBK, g.out_d);
        } else {
#pragma unroll
            for (int q = 0; q < B_PER; ++q) {
                const unsigned int e = tid + 256 * q;
                const unsigned int j = bn ? e % TBN : e / TBK;
                const unsigned int kk = bn ? e / TBN : e % TBK;
                const unsigned int gj = col0 + j, gk = k0 + kk;
                rb[q] = gj < p.n && gk < ke ? B[gk * p.b_rs + gj * p.b_cs] : 0.0f;
            }
        }
    };
    auto stash = [&](int buf) {
#pragma unroll
        for (int q = 0; q < A_PER; ++q) {
            const unsigned int e = tid + 256 * q;
            const unsigned int i = tp.a_m_contig ? e % TBM : e / TBK;
            const unsigned int kk = tp.a_m_contig ? e / TBM : e % TBK;
            As[buf][kk][i] = ra[q];
        }
#pragma unroll
        for (int q = 0; q < B_PER; ++q) {
            const unsigned int e = tid + 256 * q;
            const unsigned int j = bn ? e % TBN : e / TBK;
            const unsigned int kk = bn ? e / TBN : e % TBK;
            Bs[buf][kk][j] = rb[q];
        }
    };

    float acc[TM][TN];
#pragma unroll
    for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int c = 0; c < TN; ++c) acc[r][c] = 0.0f;

    const unsigned int steps = ke > kb ? (ke - kb + TBK - 1) / TBK : 0;
    if (steps > 0) {
        fetch(kb);
        stash(0);
    }
    __syncthreads();
    for (unsigned int s = 0; s < steps; ++s) {
        const int buf = s & 1;
        const bool more = s + 1 < steps;
        if (more) fetch(kb + (s + 1) * TBK);
        // Fully unrolled but at the 128-row tile, where prefetching eight steps' operands would
        // push the 64 accumulators past 128 registers (two blocks per SM) into local memory.
#pragma unroll KK_UNROLL
        for (int kk = 0; kk < TBK; ++kk) {
            // Vector reads (float4, float2 for the 32-row tile's A): 2–4 shared-memory
            // instructions per TM·TN FMAs instead of TM + TN.
            float a[TM], b[TN];
            const float* ap = &As[buf][kk][tr * TM];
            if (TM % 4 == 0) {
#pragma unroll
                for (int r = 0; r < TM; r += 4) {
                    const float4 v = *reinterpret_cast<const float4*>(ap + r);
                    a[r] = v.x;
                    a[r + 1] = v.y;
                    a[r + 2] = v.z;
                    a[r + 3] = v.w;
                }
            } else {
#pragma unroll
                for (int r = 0; r < TM; r += 2) {
                    const float2 v = *reinterpret_cast<const float2*>(ap + r);
                    a[r] = v.x;
                    a[r + 1] = v.y;
                }
            }
#pragma unroll
            for (int h = 0; h < TN / 4; ++h) {
                const float4 v = *reinterpret_cast<const float4*>(&Bs[buf][kk][(tc + 16 * h) * 4]);
                b[4 * h] = v.x;
                b[4 * h + 1] = v.y;
                b[4 * h + 2] = v.z;
                b[4 * h + 3] = v.w;
            }
#pragma unroll
            for (int r = 0; r < TM; ++r)
#pragma unroll
                for (int c = 0; c < TN; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
        }
        if (more) stash(buf ^ 1);
        __syncthreads();
    }

    if (tp.partial) {
        // Raw partial sums to the workspace: [batch·splits][m][n], row-major.
        float* W = C + (unsigned long long)z * p.m * p.n;
#pragma unroll
        for (int r = 0; r < TM; ++r) {
            const unsigned int gi = row0 + tr * TM + r;
            if (gi >= p.m) continue;
#pragma unroll
            for (int c = 0; c < TN; ++c) {
                const unsigned int gj = col0 + (tc + 16 * (c / 4)) * 4 + c % 4;
                if (gj < p.n) W[(unsigned long long)gi * p.n + gj] = acc[r][c];
            }
        }
        return;
    }
    C += (long long)bz * p.c_bs;
    if (EPI && act_kind >= 0) pre += (long long)bz * p.c_bs;
#pragma unroll
    for (int r = 0; r < TM; ++r) {
        const unsigned int gi = row0 + tr * TM + r;
        if (gi >= p.m) continue;
#pragma unroll
        for (int c = 0; c < TN; ++c) {
            const unsigned int gj = col0 + (tc + 16 * (c / 4)) * 4 + c % 4;
            if (gj >= p.n) continue;
            const long long off = gi * p.c_rs + gj * p.c_cs;
            float* out = C + off;
            // beta = 0 must not read C: it may hold uninitialised memory (NaN · 0 = NaN).
            float v = p.beta == 0.0f ? p.alpha * acc[r][c] : p.alpha * acc[r][c] + p.beta * *out;
            if (EPI) {
                if (has_bias) v += bias[gi];
                if (act_kind >= 0) {
                    pre[off] = v;
                    v = act(act_kind, v);
                }
            }
            *out = v;
        }
    }
}

// One kernel per tile height, plain and with the convolution epilogue.
extern "C" __global__ void __launch_bounds__(256, 2)
    sgemm_t128_f32(const float* __restrict__ A, const float* __restrict__ B,
                  float* __restrict__ C, TiledParams tp, ConvView cv) {
    sgemm_tiled_body<128, 0>(A, B, C, tp, cv, nullptr, 0, nullptr, -1);
}
extern "C" __global__ void __launch_bounds__(256, 2)
    sgemm_t128_bias_act_f32(const float* __restrict__ A, const float* __restrict__ B,
                           float* __restrict__ C, TiledParams tp, ConvView cv,
                           const float* __restrict__ bias, int has_bias, float* __restrict__ pre,
                           int act_kind) {
    sgemm_tiled_body<128, 1>(A, B, C, tp, cv, bias, has_bias, pre, act_kind);
}
extern "C" __global__ void __launch_bounds__(256)
    sgemm_t64_f32(const float* __restrict__ A, const float* __restrict__ B,
                  float* __restrict__ C, TiledParams tp, ConvView cv) {
    sgemm_tiled_body<64, 0>(A, B, C, tp, cv, nullptr, 0, nullptr, -1);
}
extern "C" __global__ void __launch_bounds__(256)
    sgemm_t64_bias_act_f32(const float* __restrict__ A, const float* __restrict__ B,
                           float* __restrict__ C, TiledParams tp, ConvView cv,
                           const float* __restrict__ bias, int has_bias, float* __restrict__ pre,
                           int act_kind) {
    sgemm_tiled_body<64, 1>(A, B, C, tp, cv, bias, has_bias, pre, act_kind);
}
extern "C" __global__ void __launch_bounds__(256)
    sgemm_t32_f32(const float* __restrict__ A, const float* __restrict__ B,
                  float* __restrict__ C, TiledParams tp, ConvView cv) {
    sgemm_tiled_body<32, 0>(A, B, C, tp, cv, nullptr, 0, nullptr, -1);
}
extern "C" __global__ void __launch_bounds__(256)
    sgemm_t32_bias_act_f32(const float* __restrict__ A, const float* __restrict__ B,
                           float* __restrict__ C, TiledParams tp, ConvView cv,
                           const float* __restrict__ bias, int has_bias, float* __restrict__ pre,
                           int act_kind) {
    sgemm_tiled_body<32, 1>(A, B, C, tp, cv, bias, has_bias, pre, act_kind);
}

// C = epilogue(alpha · Σ_s W[b·splits + s] + beta · C) over the split-K partials, slices in
// order; one thread per element of C (grid-stride). 4·splits B read, 4 B written (8 with beta,
// +4 with `pre`) per element.
extern "C" __global__ void sgemm_splitk_reduce_f32(const float* __restrict__ W,
                                                   float* __restrict__ C, GemmParams p,
                                                   unsigned int splits,
                                                   const float* __restrict__ bias, int has_bias,
                                                   float* __restrict__ pre, int act_kind) {
    const unsigned long long mn = (unsigned long long)p.m * p.n, total = mn * p.batch;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long b = g / mn, r = g % mn;
        const unsigned int i = r / p.n, j = r % p.n;
        float acc = 0.0f;
        for (unsigned int s = 0; s < splits; ++s) acc += W[(b * splits + s) * mn + r];
        const long long off = (long long)b * p.c_bs + i * p.c_rs + j * p.c_cs;
        float v = p.beta == 0.0f ? p.alpha * acc : p.alpha * acc + p.beta * C[off];
        if (has_bias) v += bias[i];
        if (act_kind >= 0) {
            pre[off] = v;
            v = act(act_kind, v);
        }
        C[off] = v;
    }
}
