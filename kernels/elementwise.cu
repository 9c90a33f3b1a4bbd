// Element-wise kernels of the surrogate: activations (forward, and backward as dy * f'(x)).
// CPU twins: `wavecp::nn::ops::{act, dact}` (src/nn/ops.rs); parity test: tests/cuda.rs.
//
// Thread mapping: one thread per element, grid-stride loop (any grid size covers any n).
// Cost per element: forward reads 4 B and writes 4 B; backward reads 8 B and writes 4 B.
// FLOPs per element: relu 1; tanh 19 (the 13/6 rational: 9 FMA-able terms, 1 division);
// GELU forward ≈ 25, backward ≈ 32. Every variant is bandwidth-bound on any GPU
// (≤ 3 FLOP/B against a machine balance of 10+ FLOP/B), so the roofline figure is the
// achieved fraction of DRAM bandwidth.
//
// Activation codes: see kernels/common.cuh.

// fast_tanh, act and dact: kernels/common.cuh.

// y[i] = f(x[i])
extern "C" __global__ void act_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                           unsigned int n, int kind) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += gridDim.x * blockDim.x) {
        y[i] = act(kind, x[i]);
    }
}

// dx[i] = dy[i] * f'(x[i])
extern "C" __global__ void act_backward_f32(const float* __restrict__ x,
                                            const float* __restrict__ dy,
                                            float* __restrict__ dx, unsigned int n, int kind) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += gridDim.x * blockDim.x) {
        dx[i] = dy[i] * dact(kind, x[i]);
    }
}

// Bias and accumulation kernels of the convolution layers (CPU twins: the bias loops of
// `wavecp::nn::layers` and `nn::conv::sum8`).
//   bias_add_f32   one thread per element of y [B, C, inner]: y += bias[c]. 8 B moved, 1 FLOP.
//   bias_grad_f32  one 256-thread block per channel c: adds Σ over the batch and the inner
//                  extent of dy[b, c, :] to db[c], thread-strided then a fixed-order shared-memory tree
//                  (deterministic). 4 B read and 1 FLOP per element.
//   axpy_f32       one thread per element: y += alpha · x (gradient accumulation). 12 B, 2 FLOPs.
// Launch: grid y over the batch·c planes (grid-stride), x over a plane's `inner` values.
extern "C" __global__ void bias_add_f32(float* __restrict__ y, const float* __restrict__ bias,
                                        unsigned int c, unsigned int inner, unsigned int planes) {
    for (unsigned int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        const float v = bias[pl % c];
        float* yp = y + (unsigned long long)pl * inner;
        for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < inner;
             i += gridDim.x * blockDim.x)
            yp[i] += v;
    }
}

// Launch with blockDim.x = 256 and gridDim.x = c.
extern "C" __global__ void bias_grad_f32(const float* __restrict__ dy, float* __restrict__ db,
                                         unsigned int batch, unsigned int c,
                                         unsigned long long inner) {
    __shared__ float part[256];
    const unsigned int ch = blockIdx.x;
    float acc = 0.0f;
    for (unsigned int b = 0; b < batch; ++b) {
        const float* row = dy + ((unsigned long long)b * c + ch) * inner;
        for (unsigned long long i = threadIdx.x; i < inner; i += blockDim.x) acc += row[i];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[ch] += part[0];
}

extern "C" __global__ void axpy_f32(float* __restrict__ y, const float* __restrict__ x,
                                    float alpha, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        y[i] += alpha * x[i];
    }
}
