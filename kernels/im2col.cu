// im2col and its adjoint for 3-D convolutions with stride, zero padding and dilation, batched:
//   col[b, (c, p, q, s), (ot, oy, ox)] = x[b, c, ot·st + p·dt − pt, oy·sy + q·dy − py, ox·sx + s·dx − px]
// (zero outside the input). With kernels/gemm.cu they make the dense convolution:
// y = W · col, dW = dy · colᵀ, dcol = Wᵀ · dy, dx = col2im(dcol).
// CPU twins: `wavecp::nn::conv::{im2col, col2im}` (src/nn/conv.rs); parity tests: tests/cuda.rs.
//
// Thread mapping and cost:
//   im2col_f32   one thread per col element (grid-stride): one 4 B read (L1/L2 hits: the kvol
//                column entries of one input value are read by neighbouring threads) and one 4 B
//                write; no FLOPs. Bandwidth-bound: kvol × the input size written.
//   col2im_f32   one thread per x element, gathering the ≤ kvol column entries that read it in a
//                fixed (p, q, s) order: no atomics, deterministic. kvol reads of 4 B, 1 write.
//                (The transposed convolution's forward pass; its backward pass and the dense
//                layers' are implicit GEMMs, kernels/gemm.cu, except on the baseline GEMM.)

// struct ConvParams and im2col_at (the gather itself): kernels/common.cuh, shared with the
// implicit GEMM of kernels/gemm.cu.

extern "C" __global__ void im2col_f32(const float* __restrict__ x, float* __restrict__ col,
                                      ConvParams p) {
    const unsigned long long nout = (unsigned long long)p.out_d[0] * p.out_d[1] * p.out_d[2];
    const unsigned long long nin = (unsigned long long)p.in_d[0] * p.in_d[1] * p.in_d[2];
    const unsigned int kv = p.k[0] * p.k[1] * p.k[2];
    const unsigned long long rows = (unsigned long long)p.c * kv;
    const unsigned long long total = (unsigned long long)p.batch * rows * nout;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long o = g % nout, row = (g / nout) % rows, b = g / (nout * rows);
        col[g] = im2col_at(x + b * p.c * nin, p, (unsigned int)row, (unsigned int)o);
    }
}

// Launch: grid y over the batch·c planes of dx (grid-stride), x over a plane's positions, so that
// only the position within a plane is decomposed per thread (two divisions); taps are walked as
// nested (p, q, s) loops that skip a whole axis's taps as soon as they miss, with one
// division by the stride per axis and tap coordinate, instead of decomposing every tap.
extern "C" __global__ void col2im_f32(const float* __restrict__ col, float* __restrict__ dx,
                                      ConvParams p) {
    const unsigned long long nout = (unsigned long long)p.out_d[0] * p.out_d[1] * p.out_d[2];
    const unsigned int nin = p.in_d[0] * p.in_d[1] * p.in_d[2];
    const unsigned int kv = p.k[0] * p.k[1] * p.k[2];
    const unsigned int planes = p.batch * p.c;
    for (unsigned int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        // Plane (b, ch): its rows of col are (b, ch·kv + tap), tap < kv, contiguous.
        const float* colc = col + (unsigned long long)pl * kv * nout;
        float* dxp = dx + (unsigned long long)pl * nin;
        for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < nin;
             i += gridDim.x * blockDim.x) {
            const int i0 = (int)(i / (p.in_d[1] * p.in_d[2])), i1 = (int)((i / p.in_d[2]) % p.in_d[1]),
                      i2 = (int)(i % p.in_d[2]);
            float acc = 0.0f;
            // o·s = i + pad − tap·dil must be a non-negative multiple of s inside the output;
            // taps in (p, q, s) order, the CPU's.
            for (unsigned int a = 0; a < p.k[0]; ++a) {
                const int t0 = i0 + (int)p.pad[0] - (int)(a * p.dil[0]);
                if (t0 < 0) break;  // t0 only falls as a grows
                const unsigned int o0 = (unsigned int)t0 / p.stride[0];
                if (o0 * p.stride[0] != (unsigned int)t0 || o0 >= p.out_d[0]) continue;
                for (unsigned int q = 0; q < p.k[1]; ++q) {
                    const int t1 = i1 + (int)p.pad[1] - (int)(q * p.dil[1]);
                    if (t1 < 0) break;
                    const unsigned int o1 = (unsigned int)t1 / p.stride[1];
                    if (o1 * p.stride[1] != (unsigned int)t1 || o1 >= p.out_d[1]) continue;
                    for (unsigned int s = 0; s < p.k[2]; ++s) {
                        const int t2 = i2 + (int)p.pad[2] - (int)(s * p.dil[2]);
                        if (t2 < 0) break;
                        const unsigned int o2 = (unsigned int)t2 / p.stride[2];
                        if (o2 * p.stride[2] != (unsigned int)t2 || o2 >= p.out_d[2]) continue;
                        acc += colc[(unsigned long long)((a * p.k[1] + q) * p.k[2] + s) * nout +
                                    ((unsigned long long)o0 * p.out_d[1] + o1) * p.out_d[2] + o2];
                    }
                }
            }
            dxp[i] = acc;
        }
    }
}

// The weights of the input gradient as a convolution (stride 1, dilation 1): for
// y = conv(x, W, pad p), dx = conv(dy, W', pad k − 1 − p) with
//   W'[ci, co, a, b, c] = W[co, ci, kt − 1 − a, ky − 1 − b, kx − 1 − c]
// (channels swapped, taps reversed), so that the implicit GEMM of kernels/gemm.cu computes dx
// without the Wᵀ·dy matrix and col2im. One thread per weight: 4 B read, 4 B written.
extern "C" __global__ void conv_weight_adjoint_f32(const float* __restrict__ w,
                                                   float* __restrict__ wa, unsigned int co,
                                                   unsigned int ci, unsigned int kvol) {
    const unsigned long long total = (unsigned long long)co * ci * kvol;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long tap = g % kvol, pair = g / kvol;
        const unsigned long long i = pair / co, o = pair % co;  // wa is [ci, co, kvol]
        wa[g] = w[(o * ci + i) * kvol + (kvol - 1 - tap)];
    }
}
