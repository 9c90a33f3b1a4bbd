// Depthwise 1-D convolution along one axis of [N, T, Y, X] blocks (N = batch × channels, one
// filter w[c, 0..k] per channel c = n mod C): the per-axis pass of the CP convolution.
//   y[n, .., o, ..] = Σ_j w[c, j] · x[n, .., o·s + j·d − p, ..]      (zero outside the input)
// CPU twins: `wavecp::nn::conv::{depthwise_axis, depthwise_axis_backward}` (src/nn/conv.rs);
// parity tests: tests/cuda.rs.
//
// Thread mapping and cost, per output (forward) or input (input gradient) element:
//   dw_axis_forward_f32   one thread per y element, k taps gathered: 2k FLOPs, (k + 1)·4 B
//                         (the k reads of x hit L1/L2: neighbours share them), 4 B written.
//   dw_axis_dinput_f32    one thread per x element, gathers the ≤ ⌈k/s⌉ outputs that read it
//                         (no atomics: every sum has one owner and a fixed order): 2k FLOPs.
//   dw_axis_dweight_f32   one 256-thread block per (c, j): each thread strides over the batch
//                         and the output positions, then a shared-memory tree reduction in a
//                         fixed order (deterministic): 2 FLOPs and 8 B read per (n, o).
// All three are bandwidth-bound for the small k of the paper's factors (k = 3: 0.75 FLOP/B).

struct DwParams {
    unsigned int n;        // batch × channels
    unsigned int c;        // channels (weight rows)
    unsigned int in_d[3];  // input extents (t, y, x)
    unsigned int out_d[3]; // output extents
    unsigned int axis;     // 0 = t, 1 = y, 2 = x
    unsigned int k, stride, pad, dil;
};

__device__ __forceinline__ unsigned int vol(const unsigned int* d) { return d[0] * d[1] * d[2]; }

extern "C" __global__ void dw_axis_forward_f32(const float* __restrict__ x,
                                               const float* __restrict__ w,
                                               float* __restrict__ y, DwParams p) {
    const unsigned int nout = vol(p.out_d), nin = vol(p.in_d);
    const unsigned long long total = (unsigned long long)p.n * nout;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int n = g / nout, r = g % nout;
        unsigned int o[3] = {r / (p.out_d[1] * p.out_d[2]), (r / p.out_d[2]) % p.out_d[1],
                             r % p.out_d[2]};
        unsigned int i[3] = {o[0], o[1], o[2]};
        const float* xn = x + (unsigned long long)n * nin;
        const float* wc = w + (n % p.c) * p.k;
        float acc = 0.0f;
        for (unsigned int j = 0; j < p.k; ++j) {
            const int t = (int)(o[p.axis] * p.stride + j * p.dil) - (int)p.pad;
            if (t < 0 || t >= (int)p.in_d[p.axis]) continue;
            i[p.axis] = t;
            acc += wc[j] * xn[(i[0] * p.in_d[1] + i[1]) * p.in_d[2] + i[2]];
        }
        y[g] = acc;
    }
}

extern "C" __global__ void dw_axis_dinput_f32(const float* __restrict__ dy,
                                              const float* __restrict__ w,
                                              float* __restrict__ dx, DwParams p) {
    const unsigned int nout = vol(p.out_d), nin = vol(p.in_d);
    const unsigned long long total = (unsigned long long)p.n * nin;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int n = g / nin, r = g % nin;
        unsigned int i[3] = {r / (p.in_d[1] * p.in_d[2]), (r / p.in_d[2]) % p.in_d[1],
                             r % p.in_d[2]};
        unsigned int o[3] = {i[0], i[1], i[2]};
        const float* gn = dy + (unsigned long long)n * nout;
        const float* wc = w + (n % p.c) * p.k;
        float acc = 0.0f;
        for (unsigned int j = 0; j < p.k; ++j) {
            const int t = (int)(i[p.axis] + p.pad) - (int)(j * p.dil);
            if (t < 0 || t % (int)p.stride != 0) continue;
            const unsigned int oa = t / p.stride;
            if (oa >= p.out_d[p.axis]) continue;
            o[p.axis] = oa;
            acc += wc[j] * gn[(o[0] * p.out_d[1] + o[1]) * p.out_d[2] + o[2]];
        }
        dx[g] = acc;
    }
}

// Launch with blockDim.x = 256 and gridDim.x = C · k.
extern "C" __global__ void dw_axis_dweight_f32(const float* __restrict__ x,
                                               const float* __restrict__ dy,
                                               float* __restrict__ dw, DwParams p) {
    __shared__ float part[256];
    const unsigned int c = blockIdx.x / p.k, j = blockIdx.x % p.k;
    const unsigned int nout = vol(p.out_d), nin = vol(p.in_d);
    const unsigned int per_c = p.n / p.c;  // samples in the batch
    const unsigned long long total = (unsigned long long)per_c * nout;
    float acc = 0.0f;
    for (unsigned long long g = threadIdx.x; g < total; g += blockDim.x) {
        const unsigned int b = g / nout, r = g % nout;
        unsigned int o[3] = {r / (p.out_d[1] * p.out_d[2]), (r / p.out_d[2]) % p.out_d[1],
                             r % p.out_d[2]};
        const int t = (int)(o[p.axis] * p.stride + j * p.dil) - (int)p.pad;
        if (t < 0 || t >= (int)p.in_d[p.axis]) continue;
        const unsigned int n = b * p.c + c;
        unsigned int i[3] = {o[0], o[1], o[2]};
        i[p.axis] = t;
        acc += dy[(unsigned long long)n * nout + r] *
               x[(unsigned long long)n * nin + (i[0] * p.in_d[1] + i[1]) * p.in_d[2] + i[2]];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) dw[c * p.k + j] = part[0];
}
