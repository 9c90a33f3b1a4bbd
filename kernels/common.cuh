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
