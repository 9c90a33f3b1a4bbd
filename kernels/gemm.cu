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
