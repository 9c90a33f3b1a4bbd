// The CP convolution's three depthwise 1-D passes (along t, y and x) fused into one kernel
// through shared memory, for stride 1 and dilation 1 (any padding, filters of length ≤ 5):
//   y[n, t, u, v] = Σ_a Σ_b Σ_d wt[c, a]·wy[c, b]·wx[c, d]·x[n, t + a − pt, u + b − py, v + d − px]
// with c = n mod C and x zero outside its extents. The three passes act on different axes, so
// they commute, and the chain's adjoint is the same chain with each filter reversed and padding
// k − 1 − p: one kernel (`flip`) gives the forward pass and the input gradient. The unfused path
// (kernels/depthwise.cu, three launches and two intermediate tensors in global memory) remains
// for strides, dilations and longer filters.
// CPU twin: the CP layer's depthwise passes, `wavecp::nn::conv::depthwise_axis` over the three
// axes (src/nn/conv.rs, `CpConv`); parity tests: tests/cuda.rs (the GPU CP layer against the
// CPU one, fused and unfused geometries).
//
// cp_chain_forward_tNN_f32 — thread mapping: one 256-thread block per output tile of CT × CY × CX
// = 1 024 outputs (t, y, x; the variants below) of one (sample, channel) plane, grid x over the tiles, grid y over the planes
// (grid-stride). The block stages the input tile with its halo, (CT + kt − 1)·(CY + ky − 1)·
// (CX + kx − 1) values, in shared memory (coalesced along x), runs the t pass into a second
// buffer, the y pass into a third, and the x pass straight to global memory.
// Cost per output (k = 3, the 4 × 8 × 32 tile): 2·(kt·(1 + (ky − 1)/8)(1 + (kx − 1)/32) +
// ky·(1 + (kx − 1)/32) + kx) ≈ 19 FLOPs; from global memory ≈ 4·1.9 B read (the halo) and 4 B written, against
// 3 × (4 + 4) B + the reads of two intermediates for the three separate passes: ≈ 3× less
// traffic, 1 launch instead of 3. Still bandwidth-bound (≈ 1.6 FLOP/B), provided the index
// arithmetic stays small: the region loops (for_region) run over compile-time bounding boxes,
// so they divide by constants (PTX div/rem per kernel 22–25 → 4, all once per block; a run-time
// division costs ≈ 20 instructions, against ≈ 6 FLOPs per staged value), and each plane's
// filters are held in registers rather than re-read per tap.
//
// cp_chain_dweight_tNN_f32 — the filter gradients. Because the passes commute, the gradient of one
// axis's filter is the correlation of the output gradient g with the input passed through the
// other two filters only: dwx[c, d] = Σ g[n, o]·(T Y x)[n, o + d·e_x − px], and likewise for
// y (T X x) and t (Y X x). Thread mapping: one block per output tile and plane, as above: it
// stages x with its halo and the tile of g, forms T x, then Y(T x) and X(T x), then X x and
// Y(X x) in shared memory (39 KB for the 4 × 8 × 32 tile), each thread accumulating its four outputs' products
// per tap; a fixed-order tree per tap writes one partial sum per (plane, tile, tap).
// cp_chain_dweight_reduce_f32 then adds, per (channel, tap), the partials of every sample and
// tile in a fixed order to the gradient (deterministic; no atomics), the three filters in one
// launch.
// Cost per output: ≈ 2·(kt + ky + kx)·2 FLOPs for the products and ≈ 5 passes' worth of
// shared-memory filtering; from global memory ≈ 4·1.9 B of x and 4 B of g read.

// Output tiles (CT, CY, CX) of 1 024 outputs, picked by the host from the output's x extent
// (so that 8 × 8 planes do not idle three quarters of a 32-wide tile): _t32 = 4 × 8 × 32,
// _t16 = 4 × 16 × 16, _t8 = 16 × 8 × 8 (the suffix is CX).
#define KMAX 5

__host__ __device__ constexpr int cmax(int a, int b) { return a > b ? a : b; }

struct ChainParams {
    unsigned int n;         // planes: batch × channels
    unsigned int c;         // channels (filter rows)
    unsigned int in_d[3];   // input extents (t, y, x)
    unsigned int out_d[3];  // output extents: in + 2·pad − k + 1
    unsigned int k[3];      // filter lengths (≤ KMAX)
    int pad[3];             // zero padding before the first input value
    unsigned int flip;      // 1: filters read reversed (the adjoint)
    unsigned int tiles[3];  // output tiles per axis
};

__device__ __forceinline__ float tap(const float* w, unsigned int k, unsigned int j,
                                     unsigned int flip) {
    return w[flip ? k - 1 - j : j];
}

// Calls f(a, b, d) for every point of the region (na, nb, nd) ≤ (MA, MB, MD), spreading the
// block's threads over the compile-time bounding box: the index arithmetic then divides by
// constants (a multiply and a shift) instead of the run-time extents (a division is ≈ 20
// instructions, more than the point's work), at the price of skipping the box's unused slots.
template <int MA, int MB, int MD, class F>
__device__ __forceinline__ void for_region(unsigned int na, unsigned int nb, unsigned int nd,
                                           F f) {
    for (unsigned int e = threadIdx.x; e < MA * MB * MD; e += blockDim.x) {
        const unsigned int a = e / (MB * MD), b = (e / MD) % MB, d = e % MD;
        if (a < na && b < nb && d < nd) f(a, b, d);
    }
}

// One plane's filter (k ≤ KMAX taps, reversed when flip) in registers; taps past k are zero.
__device__ __forceinline__ void load_taps(float (&r)[KMAX], const float* w, unsigned int k,
                                          unsigned int flip) {
#pragma unroll
    for (unsigned int j = 0; j < KMAX; ++j) r[j] = j < k ? tap(w, k, j, flip) : 0.0f;
}

// Σ_j f[j]·s[base + j·step] over the k ≤ KMAX taps, ascending; the loop runs to KMAX, unrolled,
// so that f stays in registers.
__device__ __forceinline__ float tap_sum(const float (&f)[KMAX], unsigned int k, const float* s,
                                         unsigned int base, unsigned int step) {
    float acc = 0.0f;
#pragma unroll
    for (unsigned int j = 0; j < KMAX; ++j)
        if (j < k) acc += f[j] * s[base + j * step];
    return acc;
}

// Stages the input region of output tile origin (o0, o1, o2) of plane xn: extents
// (CT + k0 − 1, CY + k1 − 1, CX + k2 − 1) at row strides ZY·ZX and ZX, zero outside the input.
template <int CT, int CY, int CX>
__device__ __forceinline__ void stage_input(float* sz, const float* __restrict__ xn,
                                            const ChainParams& p, int o0, int o1, int o2) {
    constexpr int ZT = CT + KMAX - 1, ZY = CY + KMAX - 1, ZX = CX + KMAX - 1;
    const unsigned int rt = CT + p.k[0] - 1, ry = CY + p.k[1] - 1, rx = CX + p.k[2] - 1;
    for_region<ZT, ZY, ZX>(rt, ry, rx, [&](unsigned int a, unsigned int b, unsigned int d) {
        const int it = o0 + (int)a - p.pad[0], iy = o1 + (int)b - p.pad[1],
                  ix = o2 + (int)d - p.pad[2];
        const bool in = it >= 0 && it < (int)p.in_d[0] && iy >= 0 && iy < (int)p.in_d[1] &&
                        ix >= 0 && ix < (int)p.in_d[2];
        sz[(a * ZY + b) * ZX + d] =
            in ? xn[((unsigned long long)it * p.in_d[1] + iy) * p.in_d[2] + ix] : 0.0f;
    });
}

template <int CT, int CY, int CX>
__device__ __forceinline__ void chain_forward(const float* __restrict__ x,
                                              const float* __restrict__ wt,
                                              const float* __restrict__ wy,
                                              const float* __restrict__ wx,
                                              float* __restrict__ y, const ChainParams& p) {
    constexpr int ZT = CT + KMAX - 1, ZY = CY + KMAX - 1, ZX = CX + KMAX - 1;
    __shared__ float sz[ZT * ZY * ZX];
    __shared__ float sa[CT * ZY * ZX];
    __shared__ float sb[CT * CY * ZX];
    const unsigned int tile = blockIdx.x;
    const unsigned int tx = tile % p.tiles[2], ty = (tile / p.tiles[2]) % p.tiles[1],
                       tt = tile / (p.tiles[2] * p.tiles[1]);
    const int o0 = tt * CT, o1 = ty * CY, o2 = tx * CX;
    const unsigned int k0 = p.k[0], k1 = p.k[1], k2 = p.k[2];
    const unsigned int ry = CY + k1 - 1, rx = CX + k2 - 1;
    const unsigned long long nin = (unsigned long long)p.in_d[0] * p.in_d[1] * p.in_d[2];
    const unsigned long long nout = (unsigned long long)p.out_d[0] * p.out_d[1] * p.out_d[2];
    for (unsigned int n = blockIdx.y; n < p.n; n += gridDim.y) {
        const unsigned int c = n % p.c;
        float ft[KMAX], fy[KMAX], fx[KMAX];
        load_taps(ft, wt + c * k0, k0, p.flip);
        load_taps(fy, wy + c * k1, k1, p.flip);
        load_taps(fx, wx + c * k2, k2, p.flip);
        stage_input<CT, CY, CX>(sz, x + n * nin, p, o0, o1, o2);
        __syncthreads();
        // Taps in ascending order, as before the region loops: the same sums, bit for bit.
        for_region<CT, ZY, ZX>(CT, ry, rx, [&](unsigned int a, unsigned int b, unsigned int d) {
            sa[(a * ZY + b) * ZX + d] = tap_sum(ft, k0, sz, (a * ZY + b) * ZX + d, ZY * ZX);
        });
        __syncthreads();
        for_region<CT, CY, ZX>(CT, CY, rx, [&](unsigned int a, unsigned int b, unsigned int d) {
            sb[(a * CY + b) * ZX + d] = tap_sum(fy, k1, sa, (a * ZY + b) * ZX + d, ZX);
        });
        __syncthreads();
        float* yn = y + n * nout;
        for (unsigned int e = threadIdx.x; e < CT * CY * CX; e += blockDim.x) {
            const unsigned int a = e / (CY * CX), b = (e / CX) % CY, d = e % CX;
            const unsigned int ot = o0 + a, oy = o1 + b, ox = o2 + d;
            if (ot >= p.out_d[0] || oy >= p.out_d[1] || ox >= p.out_d[2]) continue;
            yn[((unsigned long long)ot * p.out_d[1] + oy) * p.out_d[2] + ox] =
                tap_sum(fx, k2, sb, (a * CY + b) * ZX + d, 1);
        }
        // The next plane restages sz: every thread must be done reading sb (and sz, sa).
        __syncthreads();
    }
}

template <int CT, int CY, int CX>
__device__ __forceinline__ void chain_dweight(const float* __restrict__ x,
                                              const float* __restrict__ g,
                                              const float* __restrict__ wt,
                                              const float* __restrict__ wy,
                                              const float* __restrict__ wx,
                                              float* __restrict__ part, const ChainParams& p) {
    constexpr int ZT = CT + KMAX - 1, ZY = CY + KMAX - 1, ZX = CX + KMAX - 1;
    constexpr int PER = CT * CY * CX / 256;
    __shared__ float sz[ZT * ZY * ZX];
    __shared__ float s1[cmax(CT * ZY * ZX, ZT * ZY * CX)];  // T x, then X x
    __shared__ float s2[cmax(cmax(CT * CY * ZX, CT * ZY * CX), ZT * CY * CX)];  // Y(T x), X(T x), Y(X x)
    __shared__ float sg[CT * CY * CX];
    // The tap reduction below keeps up to 3·KMAX rows of 256 sums in sz and s1.
    static_assert(ZT * ZY * ZX / 256 + cmax(CT * ZY * ZX, ZT * ZY * CX) / 256 >= 3 * KMAX,
                  "sz and s1 must hold every tap's 256 partial sums");
    const unsigned int ntiles = p.tiles[0] * p.tiles[1] * p.tiles[2];
    const unsigned int tile = blockIdx.x;
    const unsigned int tx = tile % p.tiles[2], ty = (tile / p.tiles[2]) % p.tiles[1],
                       tt = tile / (p.tiles[2] * p.tiles[1]);
    const int o0 = tt * CT, o1 = ty * CY, o2 = tx * CX;
    const unsigned int k0 = p.k[0], k1 = p.k[1], k2 = p.k[2];
    const unsigned int rt = CT + k0 - 1, ry = CY + k1 - 1, rx = CX + k2 - 1;
    const unsigned long long nin = (unsigned long long)p.in_d[0] * p.in_d[1] * p.in_d[2];
    const unsigned long long nout = (unsigned long long)p.out_d[0] * p.out_d[1] * p.out_d[2];
    for (unsigned int n = blockIdx.y; n < p.n; n += gridDim.y) {
        const unsigned int c = n % p.c;
        float ft[KMAX], fy[KMAX], fx[KMAX];
        load_taps(ft, wt + c * k0, k0, 0);
        load_taps(fy, wy + c * k1, k1, 0);
        load_taps(fx, wx + c * k2, k2, 0);
        stage_input<CT, CY, CX>(sz, x + n * nin, p, o0, o1, o2);
        const float* gn = g + n * nout;
        for (unsigned int e = threadIdx.x; e < CT * CY * CX; e += blockDim.x) {
            const unsigned int a = e / (CY * CX), b = (e / CX) % CY, d = e % CX;
            const unsigned int ot = o0 + a, oy = o1 + b, ox = o2 + d;
            const bool in = ot < p.out_d[0] && oy < p.out_d[1] && ox < p.out_d[2];
            sg[e] = in ? gn[((unsigned long long)ot * p.out_d[1] + oy) * p.out_d[2] + ox] : 0.0f;
        }
        __syncthreads();
        // T x over (CT, ry, rx), row strides ZY·ZX, ZX. (These two passes are the forward
        // kernel's; written with tap_sum here, ptxas spills 4 bytes in the t8 and t16 variants.)
        for_region<CT, ZY, ZX>(CT, ry, rx, [&](unsigned int a, unsigned int b, unsigned int d) {
            float acc = 0.0f;
#pragma unroll
            for (unsigned int j = 0; j < KMAX; ++j)
                if (j < k0) acc += ft[j] * sz[((a + j) * ZY + b) * ZX + d];
            s1[(a * ZY + b) * ZX + d] = acc;
        });
        __syncthreads();
        // Y(T x) over (CT, CY, rx), strides CY·ZX, ZX: the x filter's input.
        for_region<CT, CY, ZX>(CT, CY, rx, [&](unsigned int a, unsigned int b, unsigned int d) {
            float acc = 0.0f;
#pragma unroll
            for (unsigned int j = 0; j < KMAX; ++j)
                if (j < k1) acc += fy[j] * s1[(a * ZY + b + j) * ZX + d];
            s2[(a * CY + b) * ZX + d] = acc;
        });
        __syncthreads();
        // Per-tap sums in registers: the tap loops run to KMAX, unrolled, so that every index
        // is a constant (a run-time index would put the arrays in local memory).
        float accx[KMAX], accy[KMAX], acct[KMAX];
#pragma unroll
        for (unsigned int j = 0; j < KMAX; ++j) accx[j] = accy[j] = acct[j] = 0.0f;
        for (unsigned int m = 0; m < PER; ++m) {
            const unsigned int e = threadIdx.x + m * 256;
            const unsigned int a = e / (CY * CX), b = (e / CX) % CY, d = e % CX;
            const float gv = sg[e];
#pragma unroll
            for (unsigned int j = 0; j < KMAX; ++j)
                if (j < k2) accx[j] += gv * s2[(a * CY + b) * ZX + d + j];
        }
        __syncthreads();
        // X(T x) over (CT, ry, CX), strides ZY·CX, CX: the y filter's input.
        for_region<CT, ZY, CX>(CT, ry, CX, [&](unsigned int a, unsigned int b, unsigned int d) {
            s2[(a * ZY + b) * CX + d] = tap_sum(fx, k2, s1, (a * ZY + b) * ZX + d, 1);
        });
        __syncthreads();
        for (unsigned int m = 0; m < PER; ++m) {
            const unsigned int e = threadIdx.x + m * 256;
            const unsigned int a = e / (CY * CX), b = (e / CX) % CY, d = e % CX;
            const float gv = sg[e];
#pragma unroll
            for (unsigned int j = 0; j < KMAX; ++j)
                if (j < k1) accy[j] += gv * s2[(a * ZY + b + j) * CX + d];
        }
        __syncthreads();
        // X x over (rt, ry, CX), strides ZY·CX, CX.
        for_region<ZT, ZY, CX>(rt, ry, CX, [&](unsigned int a, unsigned int b, unsigned int d) {
            s1[(a * ZY + b) * CX + d] = tap_sum(fx, k2, sz, (a * ZY + b) * ZX + d, 1);
        });
        __syncthreads();
        // Y(X x) over (rt, CY, CX), strides CY·CX, CX: the t filter's input.
        for_region<ZT, CY, CX>(rt, CY, CX, [&](unsigned int a, unsigned int b, unsigned int d) {
            s2[(a * CY + b) * CX + d] = tap_sum(fy, k1, s1, (a * ZY + b) * CX + d, CX);
        });
        __syncthreads();
        for (unsigned int m = 0; m < PER; ++m) {
            const unsigned int e = threadIdx.x + m * 256;
            const unsigned int a = e / (CY * CX), b = (e / CX) % CY, d = e % CX;
            const float gv = sg[e];
#pragma unroll
            for (unsigned int j = 0; j < KMAX; ++j)
                if (j < k0) acct[j] += gv * s2[((a + j) * CY + b) * CX + d];
        }
        // One partial per (plane, tile, tap), taps ordered t, y, x: every tap's 256 thread
        // sums reduced together, one tree level per barrier (8 barriers, not 8 per tap), each
        // tap by the same fixed tree as before (thread t adds t + s, s = 128 … 1): the same
        // sums, bit for bit. Scratch: sz, then s1, whose last readers finish before the
        // barrier below.
        __syncthreads();
        constexpr unsigned int CAP0 = ZT * ZY * ZX / 256;
        auto slot = [&](unsigned int j) -> float* {
            return j < CAP0 ? sz + j * 256 : s1 + (j - CAP0) * 256;
        };
        const unsigned int taps = k0 + k1 + k2;
#pragma unroll
        for (unsigned int j = 0; j < KMAX; ++j) {
            if (j < k0) slot(j)[threadIdx.x] = acct[j];
            if (j < k1) slot(k0 + j)[threadIdx.x] = accy[j];
            if (j < k2) slot(k0 + k1 + j)[threadIdx.x] = accx[j];
        }
        __syncthreads();
        for (unsigned int st = 128; st > 0; st >>= 1) {
            if (threadIdx.x < st)
                for (unsigned int j = 0; j < taps; ++j)
                    slot(j)[threadIdx.x] += slot(j)[threadIdx.x + st];
            __syncthreads();
        }
        float* out = part + ((unsigned long long)n * ntiles + tile) * taps;
        for (unsigned int j = threadIdx.x; j < taps; j += blockDim.x) out[j] = slot(j)[0];
        // sz, s1 and sg are restaged for the next plane only after every thread read its sum.
        __syncthreads();
    }
}

// dw[c, j] += Σ over samples b and tiles of part[(b·C + c)·ntiles + tile][off + j], in that
// order: one thread per (c, j), j < k (one axis's taps, at offset `off` of `taps` per partial).
// One thread per (channel, tap) of all three filters (c·(k0 + k1 + k2) values; grid-stride):
// the partials of that tap over the planes of the channel and the tiles, in that order, added
// to the tap's filter gradient (dw0, dw1 or dw2, by the tap's place among k0, k1, k2). One
// launch for the three filters.
extern "C" __global__ void cp_chain_dweight_reduce_f32(const float* __restrict__ part,
                                                       float* __restrict__ dw0,
                                                       float* __restrict__ dw1,
                                                       float* __restrict__ dw2, unsigned int n,
                                                       unsigned int c, unsigned int ntiles,
                                                       unsigned int k0, unsigned int k1,
                                                       unsigned int k2) {
    const unsigned int taps = k0 + k1 + k2;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < c * taps;
         i += gridDim.x * blockDim.x) {
        const unsigned int ch = i / taps, j = i % taps;
        float acc = 0.0f;
        for (unsigned int pl = ch; pl < n; pl += c)
            for (unsigned int t = 0; t < ntiles; ++t)
                acc += part[((unsigned long long)pl * ntiles + t) * taps + j];
        if (j < k0)
            dw0[ch * k0 + j] += acc;
        else if (j < k0 + k1)
            dw1[ch * k1 + (j - k0)] += acc;
        else
            dw2[ch * k2 + (j - k0 - k1)] += acc;
    }
}

// The tile variants (see the top of the file); the host picks by the output's x extent.
extern "C" __global__ void __launch_bounds__(256)
    cp_chain_forward_t32_f32(const float* __restrict__ x, const float* __restrict__ wt,
                             const float* __restrict__ wy, const float* __restrict__ wx,
                             float* __restrict__ y, ChainParams p) {
    chain_forward<4, 8, 32>(x, wt, wy, wx, y, p);
}
extern "C" __global__ void __launch_bounds__(256)
    cp_chain_forward_t16_f32(const float* __restrict__ x, const float* __restrict__ wt,
                             const float* __restrict__ wy, const float* __restrict__ wx,
                             float* __restrict__ y, ChainParams p) {
    chain_forward<4, 16, 16>(x, wt, wy, wx, y, p);
}
extern "C" __global__ void __launch_bounds__(256)
    cp_chain_forward_t8_f32(const float* __restrict__ x, const float* __restrict__ wt,
                            const float* __restrict__ wy, const float* __restrict__ wx,
                            float* __restrict__ y, ChainParams p) {
    chain_forward<16, 8, 8>(x, wt, wy, wx, y, p);
}
extern "C" __global__ void __launch_bounds__(256)
    cp_chain_dweight_t32_f32(const float* __restrict__ x, const float* __restrict__ g,
                             const float* __restrict__ wt, const float* __restrict__ wy,
                             const float* __restrict__ wx, float* __restrict__ part,
                             ChainParams p) {
    chain_dweight<4, 8, 32>(x, g, wt, wy, wx, part, p);
}
extern "C" __global__ void __launch_bounds__(256)
    cp_chain_dweight_t16_f32(const float* __restrict__ x, const float* __restrict__ g,
                             const float* __restrict__ wt, const float* __restrict__ wy,
                             const float* __restrict__ wx, float* __restrict__ part,
                             ChainParams p) {
    chain_dweight<4, 16, 16>(x, g, wt, wy, wx, part, p);
}
extern "C" __global__ void __launch_bounds__(256)
    cp_chain_dweight_t8_f32(const float* __restrict__ x, const float* __restrict__ g,
                            const float* __restrict__ wt, const float* __restrict__ wy,
                            const float* __restrict__ wx, float* __restrict__ part,
                            ChainParams p) {
    chain_dweight<16, 8, 8>(x, g, wt, wy, wx, part, p);
}
