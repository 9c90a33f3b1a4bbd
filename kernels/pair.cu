// The paper's pair-wise factorised kernel on the device: W[o, i] = Σ_r f_t[o,i,r] ⊗ f_y[o,i,r] ⊗
// f_x[o,i,r] (2-D: the t factor absent, kt = 1), and the factor gradients from the dense kernel's
// gradient dW by the chain rule. With them the pair layer keeps its factors, gradients and
// optimiser state on the device and runs the dense convolution in between.
// CPU twins: `wavecp::nn::layers::PairConv::{rebuild, factor_grads}`; parity test: the GPU
// pair layer in tests/cuda.rs (its factor gradients against the CPU layer's).
//
// Factor layout: one array per axis slot, [Co·Ci, R, k_axis]; `has_t` says whether slot 0 is t.
// Thread mapping and cost:
//   pair_rebuild_f32      one thread per dense kernel entry (o, i, p, q, s): R products of
//                         2–3 factors, 3R FLOPs; reads 3R factors (L1/L2 hits), writes 4 B.
//   pair_factor_grad_f32  one thread per factor entry (slot, oi, r, j) of all the slots (one
//                         launch): sums dW over the kvol/k taps whose coordinate on that axis
//                         is j, times the other factors, in (p, q, s) order as the CPU does: no
//                         atomics, deterministic. ≈ 3·kvol/k FLOPs per entry.
// Both are tiny next to the convolution (Co·Ci·R·kvol work against B·N·Co·Ci·kvol).

struct PairParams {
    unsigned int oi;     // Co·Ci kernels
    unsigned int rank;
    unsigned int k[3];   // kernel extents (t, y, x); k[0] = 1 in 2-D
    unsigned int has_t;  // 1: factors for t, y, x; 0: for y, x only
};

__device__ __forceinline__ const float* slot_ptr(const float* ft, const float* fy, const float* fx,
                                                 unsigned int axis) {
    return axis == 0 ? ft : (axis == 1 ? fy : fx);
}

extern "C" __global__ void pair_rebuild_f32(const float* __restrict__ ft,
                                            const float* __restrict__ fy,
                                            const float* __restrict__ fx, float* __restrict__ w,
                                            PairParams p) {
    const unsigned int kv = p.k[0] * p.k[1] * p.k[2];
    const unsigned long long total = (unsigned long long)p.oi * kv;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int oi = g / kv, tap = g % kv;
        const unsigned int tp = tap / (p.k[1] * p.k[2]), tq = (tap / p.k[2]) % p.k[1],
                           ts = tap % p.k[2];
        float acc = 0.0f;
        for (unsigned int r = 0; r < p.rank; ++r) {
            const unsigned long long row = (unsigned long long)oi * p.rank + r;
            float prod = 1.0f;
            if (p.has_t) prod *= ft[row * p.k[0] + tp];
            prod *= fy[row * p.k[1] + tq];
            prod *= fx[row * p.k[2] + ts];
            acc += prod;
        }
        w[g] = acc;
    }
}

// The gradients of every factor in one launch: thread g runs over the entries of slot 0's
// factor, then slot 1's, then (3-D) slot 2's, each [Co·Ci, R, k_axis]; d0, d1, d2 are the slots'
// gradient arrays (d2 unused in 2-D), added to (gradients accumulate until zeroed, as on the
// CPU).
extern "C" __global__ void pair_factor_grad_f32(const float* __restrict__ ft,
                                                const float* __restrict__ fy,
                                                const float* __restrict__ fx,
                                                const float* __restrict__ dw,
                                                float* __restrict__ d0, float* __restrict__ d1,
                                                float* __restrict__ d2, PairParams p) {
    // The extents as scalars: a select among p.k's elements by a per-thread axis is turned
    // into an indexed load, which puts the parameter block in local memory.
    const unsigned int k0 = p.k[0], k1 = p.k[1], k2 = p.k[2];
    const unsigned int kv = k0 * k1 * k2;
    const unsigned long long rows = (unsigned long long)p.oi * p.rank;
    // Entries per slot (slot 0 is t when has_t, else y).
    const unsigned long long n0 = rows * (p.has_t ? k0 : k1);
    const unsigned long long n1 = rows * (p.has_t ? k1 : k2);
    const unsigned long long n2 = p.has_t ? rows * k2 : 0;
    const unsigned long long total = n0 + n1 + n2;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        // The slot of entry g and its index within that slot's factor.
        const unsigned int s = g < n0 ? 0 : (g < n0 + n1 ? 1 : 2);
        const unsigned long long e = g - (s == 0 ? 0 : (s == 1 ? n0 : n0 + n1));
        const unsigned int axis = p.has_t ? s : s + 1;
        const unsigned int ka = axis == 0 ? k0 : (axis == 1 ? k1 : k2);
        const unsigned int j = e % ka;
        const unsigned long long row = e / ka;  // oi·R + r
        const unsigned int oi = row / p.rank;
        const float* dwk = dw + (unsigned long long)oi * kv;
        float acc = 0.0f;
        for (unsigned int tap = 0; tap < kv; ++tap) {
            const unsigned int tp = tap / (k1 * k2), tq = (tap / k2) % k1, ts = tap % k2;
            const unsigned int mine = axis == 0 ? tp : (axis == 1 ? tq : ts);
            if (mine != j) continue;
            float prod = dwk[tap];
            if (p.has_t && axis != 0) prod *= ft[row * k0 + tp];
            if (axis != 1) prod *= fy[row * k1 + tq];
            if (axis != 2) prod *= fx[row * k2 + ts];
            acc += prod;
        }
        // Branches, not a pointer picked by s (which ptxas kept in a local array).
        if (s == 0)
            d0[e] += acc;
        else if (s == 1)
            d1[e] += acc;
        else
            d2[e] += acc;
    }
}
