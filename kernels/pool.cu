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

// Launch (all four below): grid y over planes (an (n, t) pair: one t slice of one channel of one
// sample; grid-stride), x over the plane's y·x positions, so a thread decomposes only its
// position within the plane (one division) and the plane's part is done once per plane.
extern "C" __global__ void pool_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                            unsigned int* __restrict__ argmax, PoolParams p) {
    const unsigned long long nin = vol3(p.in_d);
    const unsigned int per = p.out_d[1] * p.out_d[2], planes = p.n * p.out_d[0];
    const float inv = 1.0f / (float)(p.k[0] * p.k[1] * p.k[2]);
    for (unsigned int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        const unsigned int nc = pl / p.out_d[0], t = pl % p.out_d[0];
        const float* xn = x + nc * nin;
        for (unsigned int o = blockIdx.x * blockDim.x + threadIdx.x; o < per;
             o += gridDim.x * blockDim.x) {
            const unsigned int a = o / p.out_d[2], b = o % p.out_d[2];
            float best = -__int_as_float(0x7f800000), sum = 0.0f;  // −∞ (no math.h under NVRTC)
            unsigned int arg = 0;
            for (unsigned int pp = 0; pp < p.k[0]; ++pp)
                for (unsigned int q = 0; q < p.k[1]; ++q)
                    for (unsigned int s = 0; s < p.k[2]; ++s) {
                        const unsigned int i = ((t * p.k[0] + pp) * p.in_d[1] + a * p.k[1] + q) *
                                                   p.in_d[2] +
                                               b * p.k[2] + s;
                        const float v = xn[i];
                        sum += v;
                        if (v > best) {
                            best = v;
                            arg = i;
                        }
                    }
            const unsigned long long g = (unsigned long long)pl * per + o;
            y[g] = p.kind == 0 ? best : sum * inv;
            argmax[g] = arg;
        }
    }
}

extern "C" __global__ void pool_backward_f32(const float* __restrict__ dy,
                                             const unsigned int* __restrict__ argmax,
                                             float* __restrict__ dx, PoolParams p) {
    const unsigned long long nout = vol3(p.out_d);
    const unsigned int per = p.in_d[1] * p.in_d[2], planes = p.n * p.in_d[0];
    const float inv = 1.0f / (float)(p.k[0] * p.k[1] * p.k[2]);
    for (unsigned int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        const unsigned int nc = pl / p.in_d[0], t = pl % p.in_d[0], ot = t / p.k[0];
        for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < per;
             j += gridDim.x * blockDim.x) {
            const unsigned int a = j / p.in_d[2], b = j % p.in_d[2];
            const unsigned int oa = a / p.k[1], ob = b / p.k[2];
            float v = 0.0f;
            if (ot < p.out_d[0] && oa < p.out_d[1] && ob < p.out_d[2]) {
                const unsigned long long o =
                    nc * nout + ((unsigned long long)ot * p.out_d[1] + oa) * p.out_d[2] + ob;
                if (p.kind == 0) {
                    v = argmax[o] == t * per + j ? dy[o] : 0.0f;
                } else {
                    v = dy[o] * inv;
                }
            }
            dx[(unsigned long long)pl * per + j] = v;
        }
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
    const unsigned long long nin = vol3(p.in_d);
    const unsigned int per = od[1] * od[2], planes = p.n * od[0];
    for (unsigned int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        const unsigned int nc = pl / od[0], it = (pl % od[0]) / p.scale[0];
        const float* xr = x + nc * nin + (unsigned long long)it * p.in_d[1] * p.in_d[2];
        for (unsigned int o = blockIdx.x * blockDim.x + threadIdx.x; o < per;
             o += gridDim.x * blockDim.x) {
            const unsigned int a = o / od[2], b = o % od[2];
            y[(unsigned long long)pl * per + o] = xr[(a / p.scale[1]) * p.in_d[2] + b / p.scale[2]];
        }
    }
}

extern "C" __global__ void upsample_backward_f32(const float* __restrict__ dy,
                                                 float* __restrict__ dx, UpParams p) {
    const unsigned int od[3] = {p.in_d[0] * p.scale[0], p.in_d[1] * p.scale[1],
                                p.in_d[2] * p.scale[2]};
    const unsigned long long nout = vol3(od);
    const unsigned int per = p.in_d[1] * p.in_d[2], planes = p.n * p.in_d[0];
    for (unsigned int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        const unsigned int nc = pl / p.in_d[0], t = pl % p.in_d[0];
        const float* gn = dy + nc * nout;
        for (unsigned int j = blockIdx.x * blockDim.x + threadIdx.x; j < per;
             j += gridDim.x * blockDim.x) {
            const unsigned int a = j / p.in_d[2], b = j % p.in_d[2];
            float acc = 0.0f;
            for (unsigned int pp = 0; pp < p.scale[0]; ++pp)
                for (unsigned int q = 0; q < p.scale[1]; ++q)
                    for (unsigned int s = 0; s < p.scale[2]; ++s)
                        acc += gn[((unsigned long long)(t * p.scale[0] + pp) * od[1] +
                                   a * p.scale[1] + q) *
                                      od[2] +
                                  b * p.scale[2] + s];
            dx[(unsigned long long)pl * per + j] = acc;
        }
    }
}

// y[b] = [a[b]; s[b]] along channels, with per-sample blocks of la = C1·V and ls = C2·V values.
// Launch: grid y over the samples (grid-stride), x over a sample's la + ls values: no division.
extern "C" __global__ void concat_f32(const float* __restrict__ a, const float* __restrict__ s,
                                      float* __restrict__ y, unsigned int batch, unsigned int la,
                                      unsigned int ls) {
    const unsigned int per = la + ls;
    for (unsigned int b = blockIdx.y; b < batch; b += gridDim.y)
        for (unsigned int r = blockIdx.x * blockDim.x + threadIdx.x; r < per;
             r += gridDim.x * blockDim.x)
            y[(unsigned long long)b * per + r] =
                r < la ? a[(unsigned long long)b * la + r] : s[(unsigned long long)b * ls + (r - la)];
}

// The adjoint of concat_f32: dy split back into da and ds (same launch).
extern "C" __global__ void split_f32(const float* __restrict__ dy, float* __restrict__ da,
                                     float* __restrict__ ds, unsigned int batch, unsigned int la,
                                     unsigned int ls) {
    const unsigned int per = la + ls;
    for (unsigned int b = blockIdx.y; b < batch; b += gridDim.y)
        for (unsigned int r = blockIdx.x * blockDim.x + threadIdx.x; r < per;
             r += gridDim.x * blockDim.x) {
            const float v = dy[(unsigned long long)b * per + r];
            if (r < la) {
                da[(unsigned long long)b * la + r] = v;
            } else {
                ds[(unsigned long long)b * ls + (r - la)] = v;
            }
        }
}
