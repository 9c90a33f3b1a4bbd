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

extern "C" __global__ void col2im_f32(const float* __restrict__ col, float* __restrict__ dx,
                                      ConvParams p) {
    const unsigned long long nout = (unsigned long long)p.out_d[0] * p.out_d[1] * p.out_d[2];
    const unsigned long long nin = (unsigned long long)p.in_d[0] * p.in_d[1] * p.in_d[2];
    const unsigned int kv = p.k[0] * p.k[1] * p.k[2];
    const unsigned long long rows = (unsigned long long)p.c * kv;
    const unsigned long long total = (unsigned long long)p.batch * p.c * nin;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long i = g % nin, bc = g / nin;
        const unsigned int ch = bc % p.c;
        const unsigned long long b = bc / p.c;
        const unsigned int ip[3] = {(unsigned int)(i / (p.in_d[1] * p.in_d[2])),
                                    (unsigned int)((i / p.in_d[2]) % p.in_d[1]),
                                    (unsigned int)(i % p.in_d[2])};
        const float* colb = col + b * rows * nout;
        float acc = 0.0f;
        for (unsigned int tap = 0; tap < kv; ++tap) {
            const unsigned int tp[3] = {tap / (p.k[1] * p.k[2]), (tap / p.k[2]) % p.k[1],
                                        tap % p.k[2]};
            unsigned int op[3];
            bool hit = true;
            for (int a = 0; a < 3; ++a) {
                // o·s = i + pad − tap·dil must be a non-negative multiple of s inside the output.
                const int t = (int)(ip[a] + p.pad[a]) - (int)(tp[a] * p.dil[a]);
                hit = hit && t >= 0 && t % (int)p.stride[a] == 0 &&
                      (unsigned int)(t / (int)p.stride[a]) < p.out_d[a];
                op[a] = hit ? (unsigned int)(t / (int)p.stride[a]) : 0;
            }
            if (hit) {
                acc += colb[((unsigned long long)ch * kv + tap) * nout +
                            ((unsigned long long)op[0] * p.out_d[1] + op[1]) * p.out_d[2] + op[2]];
            }
        }
        dx[g] = acc;
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
