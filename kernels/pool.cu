// Down- and up-sampling and the channel joins of skip connections, on [N, T, Y, X] blocks
// (N = batch × channels):
//   pooling with window = stride = k per axis (trailing remainders dropped), average or max
//   (max keeps the first maximum in (p, q, s) order, as the CPU does);
//   nearest up-sampling by integer factors;
//   concatenation along channels ([B, C1, ...] ++ [B, C2, ...]) and its split for the gradient.
// CPU twins: `wavecp::nn::ops::{Pool, Upsample}`, `wavecp::nn::model::{concat_channels,
// split_channels}`; parity tests: tests/cuda.rs.
//
// Thread mapping and cost (all bandwidth-bound, < 1 FLOP/B):
//   pool_forward_f32     one thread per output: reads kvol inputs, writes 4 B (+4 B argmax).
//   pool_backward_f32    one thread per input element (gather: each input lies in at most one
//                        window, so no atomics): reads 4 B of dy (+ its argmax), writes 4 B.
//   upsample_forward_f32 one thread per output: one read, one write.
//   upsample_backward_f32 one thread per input: sums its s_t·s_y·s_x children in (t, y, x)
//                        order, the CPU's order.
//   concat_f32 / split_f32 one thread per element of the joined tensor: a copy.

struct PoolParams {
    unsigned int n;        // batch × channels
    unsigned int kind;     // 0 = max, 1 = average
    unsigned int in_d[3];
    unsigned int out_d[3];
    unsigned int k[3];
};

__device__ __forceinline__ unsigned long long vol3(const unsigned int* d) {
    return (unsigned long long)d[0] * d[1] * d[2];
}

extern "C" __global__ void pool_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                            unsigned int* __restrict__ argmax, PoolParams p) {
    const unsigned long long nin = vol3(p.in_d), nout = vol3(p.out_d);
    const unsigned long long total = (unsigned long long)p.n * nout;
    const float inv = 1.0f / (float)(p.k[0] * p.k[1] * p.k[2]);
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long o = g % nout, nc = g / nout;
        const unsigned int t = o / (p.out_d[1] * p.out_d[2]), a = (o / p.out_d[2]) % p.out_d[1],
                           b = o % p.out_d[2];
        const float* xn = x + nc * nin;
        float best = -__int_as_float(0x7f800000), sum = 0.0f;  // −∞ (no math.h under NVRTC)
        unsigned int arg = 0;
        for (unsigned int pp = 0; pp < p.k[0]; ++pp)
            for (unsigned int q = 0; q < p.k[1]; ++q)
                for (unsigned int s = 0; s < p.k[2]; ++s) {
                    const unsigned int i =
                        ((t * p.k[0] + pp) * p.in_d[1] + a * p.k[1] + q) * p.in_d[2] + b * p.k[2] + s;
                    const float v = xn[i];
                    sum += v;
                    if (v > best) {
                        best = v;
                        arg = i;
                    }
                }
        y[g] = p.kind == 0 ? best : sum * inv;
        argmax[g] = arg;
    }
}

extern "C" __global__ void pool_backward_f32(const float* __restrict__ dy,
                                             const unsigned int* __restrict__ argmax,
                                             float* __restrict__ dx, PoolParams p) {
    const unsigned long long nin = vol3(p.in_d), nout = vol3(p.out_d);
    const unsigned long long total = (unsigned long long)p.n * nin;
    const float inv = 1.0f / (float)(p.k[0] * p.k[1] * p.k[2]);
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long i = g % nin, nc = g / nin;
        const unsigned int t = i / (p.in_d[1] * p.in_d[2]), a = (i / p.in_d[2]) % p.in_d[1],
                           b = i % p.in_d[2];
        const unsigned int ot = t / p.k[0], oa = a / p.k[1], ob = b / p.k[2];
        float v = 0.0f;
        if (ot < p.out_d[0] && oa < p.out_d[1] && ob < p.out_d[2]) {
            const unsigned long long o = nc * nout + ((unsigned long long)ot * p.out_d[1] + oa) * p.out_d[2] + ob;
            if (p.kind == 0) {
                v = argmax[o] == (unsigned int)i ? dy[o] : 0.0f;
            } else {
                v = dy[o] * inv;
            }
        }
        dx[g] = v;
    }
}

struct UpParams {
    unsigned int n;
    unsigned int in_d[3];
    unsigned int scale[3];
};

extern "C" __global__ void upsample_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                                UpParams p) {
    const unsigned int od[3] = {p.in_d[0] * p.scale[0], p.in_d[1] * p.scale[1],
                                p.in_d[2] * p.scale[2]};
    const unsigned long long nin = vol3(p.in_d), nout = vol3(od);
    const unsigned long long total = (unsigned long long)p.n * nout;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long o = g % nout, nc = g / nout;
        const unsigned int t = o / (od[1] * od[2]), a = (o / od[2]) % od[1], b = o % od[2];
        y[g] = x[nc * nin + ((unsigned long long)(t / p.scale[0]) * p.in_d[1] + a / p.scale[1]) *
                                p.in_d[2] +
                 b / p.scale[2]];
    }
}

extern "C" __global__ void upsample_backward_f32(const float* __restrict__ dy,
                                                 float* __restrict__ dx, UpParams p) {
    const unsigned int od[3] = {p.in_d[0] * p.scale[0], p.in_d[1] * p.scale[1],
                                p.in_d[2] * p.scale[2]};
    const unsigned long long nin = vol3(p.in_d), nout = vol3(od);
    const unsigned long long total = (unsigned long long)p.n * nin;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long i = g % nin, nc = g / nin;
        const unsigned int t = i / (p.in_d[1] * p.in_d[2]), a = (i / p.in_d[2]) % p.in_d[1],
                           b = i % p.in_d[2];
        const float* gn = dy + nc * nout;
        float acc = 0.0f;
        for (unsigned int pp = 0; pp < p.scale[0]; ++pp)
            for (unsigned int q = 0; q < p.scale[1]; ++q)
                for (unsigned int s = 0; s < p.scale[2]; ++s)
                    acc += gn[((unsigned long long)(t * p.scale[0] + pp) * od[1] + a * p.scale[1] + q) *
                                  od[2] +
                              b * p.scale[2] + s];
        dx[g] = acc;
    }
}

// y[b] = [a[b]; s[b]] along channels, with per-sample blocks of la = C1·V and ls = C2·V values.
extern "C" __global__ void concat_f32(const float* __restrict__ a, const float* __restrict__ s,
                                      float* __restrict__ y, unsigned int batch,
                                      unsigned long long la, unsigned long long ls) {
    const unsigned long long per = la + ls, total = (unsigned long long)batch * per;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long b = g / per, r = g % per;
        y[g] = r < la ? a[b * la + r] : s[b * ls + (r - la)];
    }
}

// The adjoint of concat_f32: dy split back into da and ds.
extern "C" __global__ void split_f32(const float* __restrict__ dy, float* __restrict__ da,
                                     float* __restrict__ ds, unsigned int batch,
                                     unsigned long long la, unsigned long long ls) {
    const unsigned long long per = la + ls, total = (unsigned long long)batch * per;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long b = g / per, r = g % per;
        if (r < la) {
            da[b * la + r] = dy[g];
        } else {
            ds[b * ls + (r - la)] = dy[g];
        }
    }
}
