// Training data kept on the device: batches cut from the resident, normalised frame set.
// CPU twin: `wavecp::surrogate::data::WindowSpec::stack` (src/surrogate/data.rs); parity test:
// tests/cuda.rs (bit-exact: a copy).
//
// gather_windows_f32: out[b, k, :] = frames[first_frame[b0 + b] + off + k, :] for b < count,
// k < t, where a frame holds `n` values (ny·nx) and `first_frame` is a window's first frame as
// an index into the frame set (sample·frames_per_sample + t0), uploaded once per epoch in the
// epoch's shuffled order. The layout of out is that of a 2-D [B, t, 1, ny, nx] or a 3-D
// [B, 1, t, ny, nx] batch (the same memory).
//
// Thread mapping: one thread per output value, grid-stride loop; consecutive threads copy
// consecutive values of one frame (coalesced reads and writes). Cost per value: 4 B read, 4 B
// written, 0 FLOPs: a bandwidth-bound copy, replacing one host-to-device copy per batch.
extern "C" __global__ void gather_windows_f32(const float* __restrict__ frames,
                                              const unsigned int* __restrict__ first_frame,
                                              float* __restrict__ out, unsigned int b0,
                                              unsigned int count, unsigned int off,
                                              unsigned int t, unsigned long long n) {
    const unsigned long long per = (unsigned long long)t * n, total = (unsigned long long)count * per;
    for (unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         g < total; g += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long b = g / per, r = g % per, k = r / n, p = r % n;
        const unsigned long long f = (unsigned long long)first_frame[b0 + b] + off + k;
        out[g] = frames[f * n + p];
    }
}
