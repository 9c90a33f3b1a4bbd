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
//                         fixed order (deterministic), added to dw[c, j]: 2 FLOPs and 8 B read per (n, o).
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

// Picks one of three values by axis without indexing an array with a run-time value: such an
// index put the coordinate arrays (and DwParams' extents) in local memory, an 80-byte stack
// frame per thread in `ptxas -v` (scripts/ptxas-report).
__device__ __forceinline__ unsigned int sel3(unsigned int axis, unsigned int a0, unsigned int a1,
                                             unsigned int a2) {
    return axis == 0 ? a0 : (axis == 1 ? a1 : a2);
}

// A point r of a block with extents d, seen from a block with extents e that differs from d only
// along `axis`: its coordinate along the axis, and the flat offset in e of the same point with
// that coordinate set to 0, plus e's stride along the axis.
struct AxisView {
    unsigned int coord, base, stride, extent;
};

__device__ __forceinline__ AxisView axis_view(unsigned int r, const unsigned int* d,
                                              const unsigned int* e, unsigned int axis) {
    const unsigned int c0 = r / (d[1] * d[2]), c1 = (r / d[2]) % d[1], c2 = r % d[2];
    const unsigned int s0 = e[1] * e[2], s1 = e[2];
    AxisView v;
    v.coord = sel3(axis, c0, c1, c2);
    v.stride = sel3(axis, s0, s1, 1u);
    v.extent = sel3(axis, e[0], e[1], e[2]);
    v.base = c0 * s0 + c1 * s1 + c2 - v.coord * v.stride;
    return v;
}

extern "C" __global__ void dw_axis_forward_f32(const float* __restrict__ x,
                                               const float* __restrict__ w,
                                               float* __restrict__ y, DwParams p) {
    const unsigned int nout = vol(p.out_d), nin = vol(p.in_d);
    const unsigned long long total = (unsigned long long)p.n * nout;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int n = g / nout, r = g % nout;
        const AxisView v = axis_view(r, p.out_d, p.in_d, p.axis);
        const float* xn = x + (unsigned long long)n * nin + v.base;
        const float* wc = w + (n % p.c) * p.k;
        float acc = 0.0f;
        for (unsigned int j = 0; j < p.k; ++j) {
            const int t = (int)(v.coord * p.stride + j * p.dil) - (int)p.pad;
            if (t < 0 || t >= (int)v.extent) continue;
            acc += wc[j] * xn[t * v.stride];
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
        const AxisView v = axis_view(r, p.in_d, p.out_d, p.axis);
        const float* gn = dy + (unsigned long long)n * nout + v.base;
        const float* wc = w + (n % p.c) * p.k;
        float acc = 0.0f;
        for (unsigned int j = 0; j < p.k; ++j) {
            const int t = (int)(v.coord + p.pad) - (int)(j * p.dil);
            if (t < 0 || t % (int)p.stride != 0) continue;
            const unsigned int oa = t / p.stride;
            if (oa >= v.extent) continue;
            acc += wc[j] * gn[oa * v.stride];
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
        const AxisView v = axis_view(r, p.out_d, p.in_d, p.axis);
        const int t = (int)(v.coord * p.stride + j * p.dil) - (int)p.pad;
        if (t < 0 || t >= (int)v.extent) continue;
        const unsigned int n = b * p.c + c;
        acc += dy[(unsigned long long)n * nout + r] *
               x[(unsigned long long)n * nin + v.base + t * v.stride];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) dw[c * p.k + j] += part[0];
}
