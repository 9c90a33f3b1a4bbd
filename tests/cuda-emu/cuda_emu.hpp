// Device-side half of the CUDA emulator: what a kernel file from kernels/ needs to compile as
// host C++ (built by scripts/cuda-emu). Each CUDA thread is a fiber; the threads of a block run
// one after another up to each __syncthreads(), so a block behaves as on the GPU as long as the
// kernel synchronises where CUDA requires it. Shared memory is one copy per OS thread, and an
// OS thread runs one block at a time.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <type_traits>
#include <utility>

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};
// CUDA's vector types (one 64- or 128-bit shared or global access on a GPU), with CUDA's
// alignment.
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
#define __align__(n) __attribute__((aligned(n)))
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }

// Built-in variables, set by the scheduler before it switches to a thread's fiber.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One copy per OS thread, shared by the fibers (threads) of the block that thread runs.
#define __shared__ static thread_local

namespace emu {
// Suspends the calling fiber until every thread of the block has reached the barrier.
void barrier();
}  // namespace emu

inline void __syncthreads() { emu::barrier(); }
inline void __threadfence() {}
inline void __threadfence_block() {}

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

// CUDA's integer min/max overloads (C++ has none at global scope).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// Fibers switch only at barriers, so a read-modify-write is atomic here.
inline float atomicAdd(float* p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}
inline double atomicAdd(double* p, double v) {
    const double old = *p;
    *p = old + v;
    return old;
}
inline int atomicAdd(int* p, int v) {
    const int old = *p;
    *p = old + v;
    return old;
}
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    const unsigned int old = *p;
    *p = old + v;
    return old;
}

namespace emu {
using Invoke = void (*)(void**);

// Adds a kernel to the table cuModuleGetFunction looks names up in.
void register_kernel(const char* name, Invoke f);

template <typename... A, std::size_t... I>
void call(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}
template <typename... A>
void call(void (*f)(A...), void** p) {
    call(f, p, std::index_sequence_for<A...>{});
}
// The kernel `F` called with cuLaunchKernel's parameter array (one pointer per argument).
template <auto F>
void invoke(void** p) {
    call(F, p);
}
struct Reg {
    Reg(const char* name, Invoke f) { register_kernel(name, f); }
};
}  // namespace emu

#define EMU_REGISTER(name) static emu::Reg emu_reg_##name(#name, &emu::invoke<&name>);
