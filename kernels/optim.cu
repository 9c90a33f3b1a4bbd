// Training arithmetic on the device: the MSE loss and its gradient, the squared norm of the
// gradients (for global-norm clipping) and the AdamW update. The update runs in double
// precision like its CPU twin, so both round the same f64 values to f32.
// CPU twins: `wavecp::nn::train::{loss, Adam::update}` (src/nn/train.rs); parity tests:
// tests/cuda.rs.
//
// Reductions are deterministic: a fixed grid (the launcher's, independent of timing) of
// 256-thread blocks, each thread summing a grid-stride slice in order, then a shared-memory tree
// in a fixed order; the host adds the per-block partial sums in block order, in f64.
//
// Thread mapping and cost per element:
//   mse_f32        one thread per element (grid-stride): reads p, t (8 B), writes the gradient
//                  (4 B), 4 FLOPs; per-block partial of Σ d² in f64.
//   sumsq_multi_f32 reads g (4 B), 2 FLOPs (f64); per-block partial.
//   adamw_f32      reads w, g, m, v (16 B), writes w, m, v (12 B), ≈ 20 FLOPs in f64: on the
//                  H100/H200 (FP64 ≈ 34–67 TFLOP/s) still bandwidth-bound.
//   sumsq_multi_f32, adamw_multi_f32, zero_multi_f32: the same (and zeroing, 4 B written)
//                  over a table of tensors in one launch (each block finds its tensor by a
//                  binary search of the table): a model's gradient zeroing, norm and update
//                  cost three launches per step, not three per parameter array.
//   clip_scale_f64 one 256-thread block: the partials of sumsq_multi_f32 (thread-strided, then
//                  the fixed tree) → the global norm and the clipping factor, left on the device
//                  for adamw_multi_f32, so a training step never waits for the host mid-way.
//   rel_l2_den_f64 one thread: the per-sample denominators and the loss from rel_l2_sums_f32's
//                  sums, in the host's order and f64 operations (same bits as computed there).

// The block's sum of v (256 threads, fixed tree), returned to thread 0.
__device__ double block_tree_f64(double v) {
    __shared__ double s[256];
    s[threadIdx.x] = v;
    __syncthreads();
    for (unsigned int w = 128; w > 0; w >>= 1) {
        if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    return s[0];
}

__device__ void block_sum_f64(double v, double* partial) {
    const double total = block_tree_f64(v);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// Launch with blockDim.x = 256; partial holds gridDim.x values.
extern "C" __global__ void mse_f32(const float* __restrict__ pred, const float* __restrict__ target,
                                   float* __restrict__ grad, unsigned long long n,
                                   double* __restrict__ partial) {
    double acc = 0.0;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const double d = (double)(pred[i] - target[i]);
        acc += d * d;
        grad[i] = (float)(2.0 * d / (double)n);
    }
    block_sum_f64(acc, partial);
}

// Σ g² over g[first], g[first + stride], ... (one thread's share of a sum).
__device__ __forceinline__ double sumsq_share(const float* __restrict__ g, unsigned long long n,
                                              unsigned long long first,
                                              unsigned long long stride) {
    double acc = 0.0;
    for (unsigned long long i = first; i < n; i += stride) {
        const double v = (double)g[i];
        acc += v * v;
    }
    return acc;
}

// One tensor of a multi-tensor launch (laid out as `TensorRef` in src/cuda/ops/optim.rs): its
// arrays (sumsq reads g only), its length, and the launch's blocks that serve it,
// [first_block, first_block + blocks).
struct TensorRef {
    float* w;
    const float* g;
    float* m;
    float* v;
    unsigned long long n;
    unsigned int first_block, blocks;
};

// The tensor served by block b: refs are in first_block order (binary search).
__device__ __forceinline__ unsigned int tensor_of(const TensorRef* refs, unsigned int count,
                                                  unsigned int b) {
    unsigned int lo = 0, hi = count;  // refs[lo].first_block <= b < refs[hi].first_block
    while (hi - lo > 1) {
        const unsigned int mid = (lo + hi) / 2;
        if (refs[mid].first_block <= b)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

// Σg² over every tensor of `refs` in one launch: block first_block + j of a tensor sums what
// block j of a launch of `blocks` blocks over that tensor alone would, so partial[] holds the
// same values in the same order whatever the other tensors (the host's f64 sum is unchanged,
// bit for bit). Launch with blockDim.x = 256.
extern "C" __global__ void sumsq_multi_f32(const TensorRef* __restrict__ refs, unsigned int count,
                                           double* __restrict__ partial) {
    const TensorRef r = refs[tensor_of(refs, count, blockIdx.x)];
    const unsigned long long lb = blockIdx.x - r.first_block;
    block_sum_f64(sumsq_share(r.g, r.n, lb * blockDim.x + threadIdx.x,
                              (unsigned long long)r.blocks * blockDim.x),
                  partial);
}

// Launch with one block of 256 threads. out[0] = ‖g‖ = sqrt(Σ partial), out[1] = the clipping
// factor of `AdamConfig::step_scalars`: clip / ‖g‖ when clip > 0 and ‖g‖ > clip, else 1.
extern "C" __global__ void clip_scale_f64(const double* __restrict__ partial, unsigned int n,
                                          double clip, double* __restrict__ out) {
    double acc = 0.0;
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
    const double total = block_tree_f64(acc);
    if (threadIdx.x == 0) {
        const double norm = sqrt(total);
        out[0] = norm;
        out[1] = (clip > 0.0 && norm > clip) ? clip / norm : 1.0;
    }
}

// Zeroes every tensor's `w` array (a model's gradients before a backward pass): one launch
// instead of one memset per parameter array. 4 B written per element.
extern "C" __global__ void zero_multi_f32(const TensorRef* __restrict__ refs, unsigned int count) {
    const TensorRef r = refs[tensor_of(refs, count, blockIdx.x)];
    const unsigned long long stride = (unsigned long long)r.blocks * blockDim.x;
    for (unsigned long long i = (blockIdx.x - r.first_block) * (unsigned long long)blockDim.x +
                                threadIdx.x;
         i < r.n; i += stride)
        r.w[i] = 0.0f;
}

struct AdamParams {
    double scale;        // gradient clipping factor (1: none)
    double lr, b1, b2;
    double c1, c2;       // bias corrections 1 − β₁ᵗ, 1 − β₂ᵗ
    double eps, weight_decay;
};

// One AdamW update of element i (moments in f32, arithmetic in f64).
__device__ __forceinline__ void adamw_at(float* __restrict__ w, const float* __restrict__ g,
                                         float* __restrict__ m, float* __restrict__ v,
                                         unsigned long long i, const AdamParams& p) {
    const double gi = (double)g[i] * p.scale;
    const float mi = (float)(p.b1 * (double)m[i] + (1.0 - p.b1) * gi);
    const float vi = (float)(p.b2 * (double)v[i] + (1.0 - p.b2) * gi * gi);
    m[i] = mi;
    v[i] = vi;
    const double mhat = (double)mi / p.c1, vhat = (double)vi / p.c2;
    const double wi = (double)w[i];
    w[i] = (float)(wi - p.lr * (mhat / (sqrt(vhat) + p.eps) + p.weight_decay * wi));
}

extern "C" __global__ void adamw_f32(float* __restrict__ w, const float* __restrict__ g,
                                     float* __restrict__ m, float* __restrict__ v,
                                     unsigned long long n, AdamParams p) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        adamw_at(w, g, m, v, i, p);
}

// adamw_f32 over every tensor of `refs` in one launch (a model's parameters: one launch per
// step instead of one per parameter array). With `clip` (clip_scale_f64's output) the
// clipping factor is clip[1], computed on the device; without (null), p.scale.
extern "C" __global__ void adamw_multi_f32(const TensorRef* __restrict__ refs, unsigned int count,
                                           AdamParams p, const double* __restrict__ clip) {
    if (clip) p.scale = clip[1];
    const TensorRef r = refs[tensor_of(refs, count, blockIdx.x)];
    const unsigned long long stride = (unsigned long long)r.blocks * blockDim.x;
    for (unsigned long long i = (blockIdx.x - r.first_block) * (unsigned long long)blockDim.x +
                                threadIdx.x;
         i < r.n; i += stride)
        adamw_at(r.w, r.g, r.m, r.v, i, p);
}

// Relative-L2 loss, mean over the batch of ‖p_b − t_b‖ / ‖t_b‖ (CPU twin: `loss(RelL2, ..)`).
//   rel_l2_sums_f32  one 256-thread block per sample: Σ (p − t)² and Σ t² in f64, thread-strided
//                    then a fixed-order tree; sums[2b] and sums[2b + 1]. 8 B read, 4 FLOPs per
//                    element.
//   rel_l2_den_f64   one thread: den[b] = ‖p_b − t_b‖·‖t_b‖·B (0: a sample that is already
//                    exact gets a zero gradient; ‖t_b‖ = 0 counts as 1) and the loss's sum
//                    Σ_b ‖p_b − t_b‖ / ‖t_b‖ into den[B], so no value goes through the host.
//   rel_l2_grad_f32  one thread per element: (p − t) / den[b] in f64.
// Launch rel_l2_sums_f32 with blockDim.x = 256 and gridDim.x = batch.
extern "C" __global__ void rel_l2_sums_f32(const float* __restrict__ pred,
                                           const float* __restrict__ target,
                                           unsigned long long per, double* __restrict__ sums) {
    __shared__ double sd[256], st[256];
    const unsigned long long base = (unsigned long long)blockIdx.x * per;
    double a = 0.0, b = 0.0;
    for (unsigned long long i = threadIdx.x; i < per; i += blockDim.x) {
        const double d = (double)(pred[base + i] - target[base + i]);
        const double t = (double)target[base + i];
        a += d * d;
        b += t * t;
    }
    sd[threadIdx.x] = a;
    st[threadIdx.x] = b;
    __syncthreads();
    for (unsigned int w = 128; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
            sd[threadIdx.x] += sd[threadIdx.x + w];
            st[threadIdx.x] += st[threadIdx.x + w];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        sums[2 * blockIdx.x] = sd[0];
        sums[2 * blockIdx.x + 1] = st[0];
    }
}

// Launch with one thread (any other thread returns at once); den holds batch + 1 values.
extern "C" __global__ void rel_l2_den_f64(const double* __restrict__ sums, unsigned int batch,
                                          double* __restrict__ den) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double total = 0.0;
    for (unsigned int b = 0; b < batch; ++b) {
        const double diff = sqrt(sums[2 * b]);
        double tn = sqrt(sums[2 * b + 1]);
        tn = tn > 0.0 ? tn : 1.0;
        total += diff / tn;
        den[b] = diff > 0.0 ? diff * tn * (double)batch : 0.0;
    }
    den[batch] = total;
}

extern "C" __global__ void rel_l2_grad_f32(const float* __restrict__ pred,
                                           const float* __restrict__ target,
                                           float* __restrict__ grad, unsigned long long per,
                                           unsigned long long total,
                                           const double* __restrict__ den) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         i < total; i += (unsigned long long)gridDim.x * blockDim.x) {
        const double dn = den[i / per];
        grad[i] = dn > 0.0 ? (float)((double)(pred[i] - target[i]) / dn) : 0.0f;
    }
}
