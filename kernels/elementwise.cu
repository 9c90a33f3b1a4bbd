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
// Activation codes: 0 = ReLU, 1 = GELU (tanh approximation, PyTorch approximate="tanh"),
// 2 = tanh. The tanh is the same rational function as the CPU path (Eigen's float form), so
// both sides differ only by FMA contraction and rounding of the division.

#define GELU_C 0.7978846f

__device__ __forceinline__ float fast_tanh(float x) {
    x = fminf(fmaxf(x, -7.905311f), 7.905311f);
    const float x2 = x * x;
    float p = x2 * -2.7607685e-16f + 2.000188e-13f;
    p = x2 * p + -8.604672e-11f;
    p = x2 * p + 5.122297e-8f;
    p = x2 * p + 1.4857224e-5f;
    p = x2 * p + 6.3726193e-4f;
    p = x2 * p + 4.8935246e-3f;
    float q = x2 * 1.1982584e-6f + 1.185347e-4f;
    q = x2 * q + 2.2684346e-3f;
    q = x2 * q + 4.893525e-3f;
    return x * p / q;
}

__device__ __forceinline__ float act(int kind, float v) {
    if (kind == 0) return fmaxf(v, 0.0f);
    if (kind == 2) return fast_tanh(v);
    return 0.5f * v * (1.0f + fast_tanh(GELU_C * (v + 0.044715f * v * v * v)));
}

__device__ __forceinline__ float dact(int kind, float v) {
    if (kind == 0) return v > 0.0f ? 1.0f : 0.0f;
    if (kind == 2) {
        const float t = fast_tanh(v);
        return 1.0f - t * t;
    }
    const float u = GELU_C * (v + 0.044715f * v * v * v);
    const float t = fast_tanh(u);
    return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * 0.044715f * v * v);
}

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
//   bias_grad_f32  one 256-thread block per channel c: Σ over the batch and the inner extent of
//                  dy[b, c, :], thread-strided then a fixed-order shared-memory tree
//                  (deterministic). 4 B read and 1 FLOP per element.
//   axpy_f32       one thread per element: y += alpha · x (gradient accumulation). 12 B, 2 FLOPs.
extern "C" __global__ void bias_add_f32(float* __restrict__ y, const float* __restrict__ bias,
                                        unsigned int c, unsigned long long inner,
                                        unsigned long long total) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         i < total; i += (unsigned long long)gridDim.x * blockDim.x) {
        y[i] += bias[(i / inner) % c];
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
    if (threadIdx.x == 0) db[ch] = part[0];
}

extern "C" __global__ void axpy_f32(float* __restrict__ y, const float* __restrict__ x,
                                    float alpha, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        y[i] += alpha * x[i];
    }
}
