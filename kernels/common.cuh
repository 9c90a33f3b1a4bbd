// Device functions shared by several kernel files, prepended to each file when it is compiled
// (`wavecp::cuda::compile`; a `#line` directive keeps NVRTC's line numbers those of the file).
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

// Geometry of a 3-D convolution input and its im2col matrix (kernels/im2col.cu, and the
// implicit GEMM of kernels/gemm.cu); laid out as `ConvParams` in src/cuda/mod.rs.
struct ConvParams {
    unsigned int c;        // channels of x
    unsigned int batch;
    unsigned int in_d[3];  // (T, Y, X)
    unsigned int out_d[3]; // (T', Y', X')
    unsigned int k[3], stride[3], pad[3], dil[3];
};

// One entry of the im2col matrix of sample xb: row (channel, tap), column output position:
//   x[c, ot·st + p·dt − pt, oy·sy + q·dy − py, ox·sx + s·dx − px], zero outside the input.
__device__ __forceinline__ float im2col_at(const float* __restrict__ xb, const ConvParams& p,
                                           unsigned int row, unsigned int pos) {
    const unsigned int kv = p.k[0] * p.k[1] * p.k[2];
    const unsigned int ch = row / kv, tap = row % kv;
    const unsigned int ta = tap / (p.k[1] * p.k[2]), tb = (tap / p.k[2]) % p.k[1],
                       tc = tap % p.k[2];
    const unsigned int oa = pos / (p.out_d[1] * p.out_d[2]), ob = (pos / p.out_d[2]) % p.out_d[1],
                       oc = pos % p.out_d[2];
    const int ia = (int)(oa * p.stride[0] + ta * p.dil[0]) - (int)p.pad[0];
    const int ib = (int)(ob * p.stride[1] + tb * p.dil[1]) - (int)p.pad[1];
    const int ic = (int)(oc * p.stride[2] + tc * p.dil[2]) - (int)p.pad[2];
    if (ia < 0 || ia >= (int)p.in_d[0] || ib < 0 || ib >= (int)p.in_d[1] || ic < 0 ||
        ic >= (int)p.in_d[2])
        return 0.0f;
    const unsigned long long nin = (unsigned long long)p.in_d[0] * p.in_d[1] * p.in_d[2];
    return xb[ch * nin + ((unsigned long long)ia * p.in_d[1] + ib) * p.in_d[2] + ic];
}
