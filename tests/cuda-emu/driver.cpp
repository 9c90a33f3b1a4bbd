// Host half of the CUDA emulator: the subset of the CUDA driver API that cudarc calls for
// wavecp, built as a stand-in `libcuda.so.1` (scripts/cuda-emu), so that the whole GPU path
// (the Rust launchers, the GPU layers, GPU training and every parity test) runs on a machine
// without a GPU, with the kernels of kernels/*.cu compiled as host C++.
//
// What it checks beyond "the kernel ran": every launch's grid and block against the hardware
// limits, that cuModuleGetFunction names a kernel present in the PTX NVRTC produced, that all
// threads of a block reach the same __syncthreads() (a divergent barrier is an error), that
// copies stay inside their allocations, and out-of-bounds reads and writes past the end of a
// device buffer (each allocation ends at a guard page; the fault names the kernel, block and
// thread). New allocations are filled with NaN so that a kernel reading memory nobody wrote
// shows up in the results. What it cannot check: races between threads that need a barrier
// that the thread orders tried happen to hide (fibers run one at a time between barriers, in
// index order or, with WAVECP_EMU_ORDER=reverse, the reverse, or with =shuffle[:SEED] a
// random permutation per block and barrier interval), warp-level behaviour, the
// memory ordering between blocks, timing.
//
// It counts every driver call it serves (and the bytes copied, and the launches of each kernel
// as "launch <name>"): `wavecp_emu_count(name)` gives
// a count to tests, and with WAVECP_EMU_STATS=FILE all of them are written as JSON at exit.
// The host-side work of a training step (launches, function lookups, allocations, copies,
// waits) is thus measured here, GPU or not.

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cuda_emu.hpp"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUstream;

enum : int {
    OK = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    INVALID_DEVICE = 101,
    INVALID_IMAGE = 200,
    INVALID_HANDLE = 400,
    NOT_FOUND = 500,
    ILLEGAL_ADDRESS = 700,
    LAUNCH_OUT_OF_RESOURCES = 701,
    LAUNCH_FAILED = 719,
    NOT_SUPPORTED = 801,
};

namespace {

std::mutex& kernels_lock() {
    static std::mutex m;
    return m;
}
std::map<std::string, emu::Invoke>& kernels() {
    static std::map<std::string, emu::Invoke> k;
    return k;
}

struct Module {
    std::set<std::string> entries;
};
struct Function {
    std::string name;
    emu::Invoke invoke;
};
struct Event {
    std::chrono::steady_clock::time_point t;
};

// Live allocations: start → (mapping base, mapping length, usable bytes).
struct Alloc {
    char* base;
    size_t map_len;
    size_t bytes;
};
std::mutex allocs_lock;
std::map<uintptr_t, Alloc> allocs;

const size_t PAGE = 4096;

// Call counts for WAVECP_EMU_STATS, written when the library is unloaded.
struct Stats {
    std::mutex lock;
    std::map<std::string, unsigned long long> calls;
    ~Stats() {
        const char* path = std::getenv("WAVECP_EMU_STATS");
        if (!path || !*path) return;
        FILE* f = std::fopen(path, "w");
        if (!f) return;
        std::fprintf(f, "{");
        bool first = true;
        for (auto& [k, v] : calls) {
            std::fprintf(f, "%s\n  \"%s\": %llu", first ? "" : ",", k.c_str(), v);
            first = false;
        }
        std::fprintf(f, "\n}\n");
        std::fclose(f);
    }
};
Stats& stats() {
    static Stats s;
    return s;
}
// The same counts for the calling thread only (tests run side by side in one process).
thread_local std::map<std::string, unsigned long long> thread_calls;
void count(const char* what, unsigned long long n = 1) {
    thread_calls[what] += n;
    std::lock_guard<std::mutex> g(stats().lock);
    stats().calls[what] += n;
}

void fail(const char* what) { std::fprintf(stderr, "wavecp cuda-emu: %s\n", what); }

// Whether [p, p + n) lies inside one live allocation.
bool inside(uintptr_t p, size_t n) {
    std::lock_guard<std::mutex> g(allocs_lock);
    auto it = allocs.upper_bound(p);
    if (it == allocs.begin()) return false;
    --it;
    return p >= it->first && p + n <= it->first + it->second.bytes;
}

// The block being run on this OS thread, for the fault handler.
thread_local const char* cur_kernel = nullptr;

// Fibers switch with a few instructions (x86-64 System V: the callee-saved registers and the
// stack pointer) instead of swapcontext, whose signal-mask system call dominated: a kernel over
// 17 M elements starts 17 M threads.
extern "C" void emu_switch(void** save_sp, void* to_sp);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

struct Fiber {
    void* sp;
    char* stack;
    unsigned barriers;
    bool done;
};
const size_t STACK = 256 * 1024;
thread_local void* sched_sp;
thread_local Fiber* cur_fiber = nullptr;
thread_local std::vector<Fiber> fibers;
thread_local emu::Invoke cur_invoke;
thread_local void** cur_params;

[[noreturn]] void fiber_main() {
    cur_invoke(cur_params);
    Fiber* f = cur_fiber;
    f->done = true;
    void* dead;
    emu_switch(&dead, sched_sp);
    __builtin_unreachable();
}

// A fresh fiber: emu_switch into it pops six zero registers and "returns" into fiber_main with
// the stack aligned as after a call.
void start(Fiber& f) {
    auto top = reinterpret_cast<uintptr_t>(f.stack + STACK) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                     // fiber_main's "return address"
    *--sp = reinterpret_cast<void*>(&fiber_main);        // where emu_switch's ret goes
    for (int r = 0; r < 6; ++r) *--sp = nullptr;         // rbp rbx r12 r13 r14 r15
    f.sp = sp;
    f.barriers = 0;
    f.done = false;
}

void on_segv(int sig, siginfo_t* info, void*) {
    char msg[512];
    if (cur_kernel) {
        int n = std::snprintf(msg, sizeof msg,
                              "wavecp cuda-emu: kernel %s read or wrote outside its buffers at %p "
                              "(block %u,%u,%u thread %u,%u,%u): an out-of-bounds access that "
                              "would be CUDA_ERROR_ILLEGAL_ADDRESS or silent garbage on a GPU\n",
                              cur_kernel, info->si_addr, blockIdx.x, blockIdx.y, blockIdx.z,
                              threadIdx.x, threadIdx.y, threadIdx.z);
        if (n > 0) (void)!write(2, msg, (size_t)n);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void install_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigaction(SIGSEGV, &sa, nullptr);
        sigaction(SIGBUS, &sa, nullptr);
    });
}

// WAVECP_EMU_ORDER=reverse runs a block's threads from the last to the first between barriers.
// Sequential threads are an extreme interleaving: with a barrier missing, some thread reads
// shared memory its neighbours have not written yet (or have already overwritten) in one of
// the two orders, so running the tests in both orders exposes most missing barriers.
// The order a block's threads run in between barriers: WAVECP_EMU_ORDER unset or `index`
// (0, 1, ...), `reverse`, or `shuffle[:SEED]` (a fresh pseudo-random permutation for every block
// and every barrier interval, reproducible from the seed, default 1).
enum class Order { Index, Reverse, Shuffle };
struct OrderSpec {
    Order order;
    uint64_t seed;
};
const OrderSpec& order_spec() {
    static const OrderSpec o = [] {
        const char* v = std::getenv("WAVECP_EMU_ORDER");
        if (v && std::strcmp(v, "reverse") == 0) return OrderSpec{Order::Reverse, 0};
        if (v && std::strncmp(v, "shuffle", 7) == 0) {
            uint64_t seed = 1;
            if (v[7] == ':') seed = std::strtoull(v + 8, nullptr, 10);
            return OrderSpec{Order::Shuffle, seed};
        }
        return OrderSpec{Order::Index, 0};
    }();
    return o;
}
uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
thread_local std::vector<unsigned> perm;
// The thread order of one barrier interval of the current block.
void order_threads(unsigned nthreads, unsigned round) {
    perm.resize(nthreads);
    const OrderSpec& o = order_spec();
    for (unsigned i = 0; i < nthreads; ++i)
        perm[i] = o.order == Order::Reverse ? nthreads - 1 - i : i;
    if (o.order != Order::Shuffle) return;
    uint64_t st = o.seed ^ (((uint64_t)blockIdx.z << 42) ^ ((uint64_t)blockIdx.y << 21) ^
                            blockIdx.x ^ ((uint64_t)round << 58));
    for (unsigned i = nthreads; i > 1; --i) std::swap(perm[i - 1], perm[splitmix64(st) % i]);
}

// Runs one block: every thread to its next barrier, round after round, until all have returned.
CUresult run_block(const char* name, unsigned nthreads) {
    if (fibers.size() < nthreads) {
        size_t old = fibers.size();
        fibers.resize(nthreads);
        for (size_t t = old; t < nthreads; ++t) {
            void* s = mmap(nullptr, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
            if (s == MAP_FAILED) return OUT_OF_MEMORY;
            fibers[t].stack = static_cast<char*>(s);
        }
    }
    for (unsigned t = 0; t < nthreads; ++t) start(fibers[t]);
    for (unsigned round = 0;; ++round) {
        unsigned waiting = 0, done = 0;
        order_threads(nthreads, round);
        for (unsigned i = 0; i < nthreads; ++i) {
            const unsigned t = perm[i];
            Fiber& f = fibers[t];
            if (f.done) {
                ++done;
                continue;
            }
            threadIdx.x = t % blockDim.x;
            threadIdx.y = (t / blockDim.x) % blockDim.y;
            threadIdx.z = t / (blockDim.x * blockDim.y);
            cur_fiber = &f;
            emu_switch(&sched_sp, f.sp);
            if (!f.done) ++waiting;
        }
        if (waiting == 0) return OK;
        if (waiting != nthreads) {
            char msg[300];
            std::snprintf(msg, sizeof msg,
                          "kernel %s: __syncthreads() number %u reached by %u of %u threads of "
                          "block (%u,%u,%u) (the others returned): a divergent barrier",
                          name, round + 1, waiting, nthreads, blockIdx.x, blockIdx.y, blockIdx.z);
            fail(msg);
            return LAUNCH_FAILED;
        }
    }
}

}  // namespace

void emu::barrier() {
    Fiber* f = cur_fiber;
    f->barriers++;
    emu_switch(&f->sp, sched_sp);
}

void emu::register_kernel(const char* name, emu::Invoke f) {
    std::lock_guard<std::mutex> g(kernels_lock());
    kernels()[name] = f;
}

extern "C" {

CUresult cuInit(unsigned) {
    install_handler();
    return OK;
}
CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return OK;
}
CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return OK;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *d = 0;
    return OK;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    std::snprintf(name, (size_t)len, "wavecp cuda-emu (CPU emulation, not a GPU)");
    return OK;
}
// The device's memory: 16 GiB, or WAVECP_EMU_MEMORY_MIB (a test of what running out does),
// of which WAVECP_EMU_MEMORY_TAKEN_MIB is held by "other processes" (a shared GPU). This
// process's allocations are counted against the rest; the pool's in-use and peak figures are
// these counts.
static size_t mib_env(const char* name, size_t fallback) {
    const char* v = std::getenv(name);
    return v ? size_t(std::atof(v) * double(1 << 20)) : fallback;
}
static size_t device_bytes() {
    static const size_t total = mib_env("WAVECP_EMU_MEMORY_MIB", size_t(16) << 30);
    return total;
}
static size_t ours_at_most() {
    static const size_t ours = [] {
        const size_t taken = mib_env("WAVECP_EMU_MEMORY_TAKEN_MIB", 0);
        return taken < device_bytes() ? device_bytes() - taken : 0;
    }();
    return ours;
}
static size_t bytes_in_use, bytes_peak;  // under allocs_lock
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = device_bytes();
    return OK;
}
CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice) {
    switch (attr) {
        case 1: *v = 1024; break;             // max threads per block
        case 2: case 3: *v = 1024; break;     // max block x, y
        case 4: *v = 64; break;               // max block z
        case 5: *v = 2147483647; break;       // max grid x
        case 6: case 7: *v = 65535; break;    // max grid y, z
        case 8: *v = 49152; break;            // shared memory per block
        case 10: *v = 32; break;              // warp size
        case 13: *v = 1980000; break;         // clock (kHz)
        case 16: *v = 132; break;             // multiprocessors
        case 36: *v = 3201000; break;         // memory clock (kHz)
        case 37: *v = 6144; break;            // memory bus width (bits)
        case 75: *v = 9; break;               // compute capability
        case 76: *v = 0; break;
        case 115: *v = 1; break;              // memory pools (stream-ordered allocation)
        default: *v = 0;
    }
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice) {
    static int ctx;
    *c = &ctx;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }
CUresult cuCtxSetCurrent(CUcontext) { return OK; }
CUresult cuCtxGetCurrent(CUcontext* c) {
    static int ctx;
    *c = &ctx;
    return OK;
}
CUresult cuCtxPushCurrent_v2(CUcontext) { return OK; }
CUresult cuCtxPopCurrent_v2(CUcontext* c) {
    if (c) *c = nullptr;
    return OK;
}
CUresult cuCtxSynchronize() {
    count("cuCtxSynchronize");
    return OK;
}
CUresult cuMemGetInfo_v2(size_t* free_b, size_t* total) {
    std::lock_guard<std::mutex> g(allocs_lock);
    *free_b = ours_at_most() - bytes_in_use;
    *total = device_bytes();
    return OK;
}

CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = new int(0);
    return OK;
}
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned, int) {
    *s = new int(0);
    return OK;
}
CUresult cuStreamDestroy_v2(CUstream s) {
    delete static_cast<int*>(s);
    return OK;
}
CUresult cuStreamSynchronize(CUstream) {
    count("cuStreamSynchronize");
    return OK;
}
CUresult cuStreamQuery(CUstream) { return OK; }
CUresult cuStreamWaitEvent(CUstream, void*, unsigned) { return OK; }

CUresult cuEventCreate(void** e, unsigned) {
    count("cuEventCreate");
    *e = new Event{std::chrono::steady_clock::now()};
    return OK;
}
CUresult cuEventDestroy_v2(void* e) {
    delete static_cast<Event*>(e);
    return OK;
}
CUresult cuEventRecord(void* e, CUstream) {
    count("cuEventRecord");
    static_cast<Event*>(e)->t = std::chrono::steady_clock::now();
    return OK;
}
CUresult cuEventSynchronize(void*) {
    count("cuEventSynchronize");
    return OK;
}
CUresult cuEventQuery(void*) { return OK; }
CUresult cuEventElapsedTime(float* ms, void* a, void* b) {
    *ms = std::chrono::duration<float, std::milli>(static_cast<Event*>(b)->t -
                                                   static_cast<Event*>(a)->t)
              .count();
    return OK;
}
CUresult cuEventElapsedTime_v2(float* ms, void* a, void* b) { return cuEventElapsedTime(ms, a, b); }

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    count("cuMemAlloc");
    // CUDA aligns to 256 B; here to 16 B so that the end of the buffer meets the guard page.
    const size_t used = (bytes + 15) / 16 * 16;
    const size_t len = (used + PAGE - 1) / PAGE * PAGE + PAGE;
    {
        std::lock_guard<std::mutex> g(allocs_lock);
        if (used > ours_at_most() - bytes_in_use) return OUT_OF_MEMORY;
        bytes_in_use += used;
        bytes_peak = std::max(bytes_peak, bytes_in_use);
    }
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        std::lock_guard<std::mutex> g(allocs_lock);
        bytes_in_use -= used;
        return OUT_OF_MEMORY;
    }
    char* base = static_cast<char*>(m);
    mprotect(base + len - PAGE, PAGE, PROT_NONE);
    char* start = base + len - PAGE - used;
    // NaN in every f32: a kernel that reads memory nobody wrote poisons its results.
    std::memset(start, 0xff, used);
    {
        std::lock_guard<std::mutex> g(allocs_lock);
        allocs[(uintptr_t)start] = Alloc{base, len, used};
    }
    *p = (CUdeviceptr)start;
    return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    count("cuMemFree");
    Alloc a;
    {
        std::lock_guard<std::mutex> g(allocs_lock);
        auto it = allocs.find((uintptr_t)p);
        if (it == allocs.end()) return INVALID_VALUE;
        a = it->second;
        allocs.erase(it);
        bytes_in_use -= a.bytes;
    }
    munmap(a.base, a.map_len);
    return OK;
}
// Stream-ordered allocation: the emulator runs every operation at once, so these are the
// plain calls; freed memory goes back at once (a later use of it faults).
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream) { return cuMemAlloc_v2(p, bytes); }
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return cuMemFree_v2(p); }

// The device's one default memory pool; only its attributes are kept.
static int default_pool;
static uint64_t pool_release_threshold;
CUresult cuDeviceGetDefaultMemPool(void** pool, int dev) {
    if (dev != 0 || !pool) return INVALID_VALUE;
    *pool = &default_pool;
    return OK;
}
// Attributes (uint64s): 4 release threshold; 5, 6 reserved now / at most; 7, 8 in use now / at
// most. Freed memory goes back at once here, so reserved = in use; a peak resets to zero only.
CUresult cuMemPoolSetAttribute(void* pool, int attr, void* value) {
    if (pool != &default_pool || !value) return INVALID_VALUE;
    uint64_t v;
    std::memcpy(&v, value, 8);
    if (attr == 4) {
        pool_release_threshold = v;
        return OK;
    }
    if (attr == 6 || attr == 8) {
        if (v != 0) return INVALID_VALUE;
        std::lock_guard<std::mutex> g(allocs_lock);
        bytes_peak = bytes_in_use;
        return OK;
    }
    return NOT_SUPPORTED;
}
CUresult cuMemPoolGetAttribute(void* pool, int attr, void* value) {
    if (pool != &default_pool || !value) return INVALID_VALUE;
    uint64_t v;
    {
        std::lock_guard<std::mutex> g(allocs_lock);
        switch (attr) {
            case 4: v = pool_release_threshold; break;
            case 5: case 7: v = bytes_in_use; break;
            case 6: case 8: v = bytes_peak; break;
            default: return NOT_SUPPORTED;
        }
    }
    std::memcpy(value, &v, 8);
    return OK;
}

// Freed memory goes back at once here, so there is nothing to trim; counted for the tests.
CUresult cuMemPoolTrimTo(void* pool, size_t) {
    count("cuMemPoolTrimTo");
    return pool == &default_pool ? OK : INVALID_VALUE;
}

CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
    count("cuMemset");
    if (n && !inside(p, n)) return INVALID_VALUE;
    std::memset((void*)p, v, n);
    return OK;
}
CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream) {
    return cuMemsetD8_v2(p, v, n);
}
CUresult cuMemsetD32Async(CUdeviceptr p, unsigned int v, size_t n, CUstream) {
    count("cuMemset");
    if (n && !inside(p, 4 * n)) return INVALID_VALUE;
    for (size_t i = 0; i < n; ++i) std::memcpy((char*)p + 4 * i, &v, 4);
    return OK;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* h, size_t n) {
    count("cuMemcpyHtoD");
    count("bytes HtoD", n);
    if (n && !inside(d, n)) {
        fail("host-to-device copy runs past the end of its device buffer");
        return INVALID_VALUE;
    }
    std::memcpy((void*)d, h, n);
    return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* h, size_t n, CUstream) {
    return cuMemcpyHtoD_v2(d, h, n);
}
CUresult cuMemcpyDtoH_v2(void* h, CUdeviceptr d, size_t n) {
    count("cuMemcpyDtoH");
    count("bytes DtoH", n);
    if (n && !inside(d, n)) {
        fail("device-to-host copy reads past the end of its device buffer");
        return INVALID_VALUE;
    }
    std::memcpy(h, (const void*)d, n);
    return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void* h, CUdeviceptr d, size_t n, CUstream) {
    return cuMemcpyDtoH_v2(h, d, n);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    count("cuMemcpyDtoD");
    if (n && (!inside(dst, n) || !inside(src, n))) {
        fail("device-to-device copy runs past the end of a device buffer");
        return INVALID_VALUE;
    }
    std::memmove((void*)dst, (const void*)src, n);
    return OK;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream) {
    return cuMemcpyDtoD_v2(dst, src, n);
}
CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    *p = std::malloc(bytes ? bytes : 1);
    return *p ? OK : OUT_OF_MEMORY;
}
CUresult cuMemAllocHost_v2(void** p, size_t bytes) { return cuMemHostAlloc(p, bytes, 0); }
CUresult cuMemFreeHost(void* p) {
    std::free(p);
    return OK;
}
CUresult cuMemHostRegister_v2(void*, size_t, unsigned) { return OK; }
CUresult cuMemHostUnregister(void*) { return OK; }

// The kernels of a cubin (an ELF file from NVRTC): each has a section `.text.<name>`, whose
// name is in the section-name string table. The file's length is not passed in; it ends at
// the section header table or at the last section's end, whichever is later.
void cubin_entries(const unsigned char* b, std::set<std::string>& out) {
    uint64_t shoff;
    uint16_t shentsize, shnum;
    std::memcpy(&shoff, b + 0x28, 8);
    std::memcpy(&shentsize, b + 0x3A, 2);
    std::memcpy(&shnum, b + 0x3C, 2);
    size_t end = shoff + (size_t)shentsize * shnum;
    for (unsigned i = 0; i < shnum; ++i) {
        uint64_t off, size;
        std::memcpy(&off, b + shoff + (size_t)i * shentsize + 0x18, 8);
        std::memcpy(&size, b + shoff + (size_t)i * shentsize + 0x20, 8);
        uint32_t type;
        std::memcpy(&type, b + shoff + (size_t)i * shentsize + 0x04, 4);
        if (type != 8 && off + size > end) end = off + size;  // 8: SHT_NOBITS, no file bytes
    }
    const char* key = ".text.";
    for (size_t i = 0; i + 6 < end; ++i) {
        if (std::memcmp(b + i, key, 6) != 0) continue;
        size_t j = i + 6;
        while (j < end && b[j] != 0) ++j;
        if (j > i + 6) out.insert(std::string((const char*)b + i + 6, j - i - 6));
        i = j;
    }
}

// The image's kernels (the PTX's `.entry` names, or a cubin's kernel sections); each must
// exist in the host build too.
CUresult cuModuleLoadData(void** m, const void* image) {
    count("cuModuleLoadData");
    auto* mod = new Module;
    const unsigned char* b = static_cast<const unsigned char*>(image);
    if (std::memcmp(b, "\x7f" "ELF", 4) == 0) {
        count("cubin modules");
        cubin_entries(b, mod->entries);
    } else {
        count("PTX modules");
        const char* p = static_cast<const char*>(image);
        while ((p = std::strstr(p, ".entry ")) != nullptr) {
            p += 7;
            const char* e = p;
            while (*e && *e != '(' && *e != ' ' && *e != '\n') ++e;
            mod->entries.insert(std::string(p, e));
        }
    }
    if (mod->entries.empty()) {
        delete mod;
        fail("cuModuleLoadData: no kernel in the image (neither PTX nor a cubin from NVRTC?)");
        return INVALID_IMAGE;
    }
    *m = mod;
    return OK;
}
CUresult cuModuleLoadDataEx(void** m, const void* image, unsigned, void*, void*) {
    return cuModuleLoadData(m, image);
}
CUresult cuModuleUnload(void* m) {
    delete static_cast<Module*>(m);
    return OK;
}
CUresult cuModuleGetFunction(void** f, void* m, const char* name) {
    count("cuModuleGetFunction");
    auto* mod = static_cast<Module*>(m);
    if (!mod->entries.count(name)) return NOT_FOUND;
    emu::Invoke inv;
    {
        std::lock_guard<std::mutex> g(kernels_lock());
        auto it = kernels().find(name);
        if (it == kernels().end()) {
            std::string msg = std::string("kernel ") + name +
                              " is in the PTX but not in the emulator build: rerun scripts/cuda-emu";
            fail(msg.c_str());
            return NOT_FOUND;
        }
        inv = it->second;
    }
    *f = new Function{name, inv};
    return OK;
}
CUresult cuFuncGetAttribute(int* v, int, void*) {
    *v = 0;
    return OK;
}
CUresult cuFuncSetAttribute(void*, int, int) { return OK; }
CUresult cuFuncSetCacheConfig(void*, int) { return OK; }

CUresult cuLaunchKernel(void* fp, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned smem, CUstream, void** params, void** extra) {
    auto* f = static_cast<Function*>(fp);
    count("cuLaunchKernel");
    count(("launch " + f->name).c_str());
    char msg[300];
    if (extra) {
        fail("cuLaunchKernel: `extra` parameter passing is not emulated");
        return NOT_SUPPORTED;
    }
    if (smem) {
        std::snprintf(msg, sizeof msg, "kernel %s: dynamic shared memory is not emulated",
                      f->name.c_str());
        fail(msg);
        return NOT_SUPPORTED;
    }
    const unsigned long long nthreads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || nthreads == 0 || nthreads > 1024 || bx > 1024 ||
        by > 1024 || bz > 64 || gy > 65535 || gz > 65535 || gx > 2147483647u) {
        std::snprintf(msg, sizeof msg,
                      "kernel %s: launch grid (%u,%u,%u) block (%u,%u,%u) is outside the "
                      "device limits",
                      f->name.c_str(), gx, gy, gz, bx, by, bz);
        fail(msg);
        return INVALID_VALUE;
    }
    gridDim = dim3{gx, gy, gz};
    blockDim = dim3{bx, by, bz};
    cur_invoke = f->invoke;
    cur_params = params;
    cur_kernel = f->name.c_str();
    CUresult r = OK;
    for (unsigned z = 0; z < gz && r == OK; ++z)
        for (unsigned y = 0; y < gy && r == OK; ++y)
            for (unsigned x = 0; x < gx && r == OK; ++x) {
                blockIdx = uint3{x, y, z};
                r = run_block(cur_kernel, (unsigned)nthreads);
            }
    cur_kernel = nullptr;
    return r;
}

// Not a driver call: how many times the calling thread has made driver call `what` (or copied
// "bytes HtoD"/"bytes DtoH") so far, for tests that count a training step's host-side work
// (they find it with dlsym; the real libcuda has no such symbol).
unsigned long long wavecp_emu_count(const char* what) {
    auto it = thread_calls.find(what);
    return it == thread_calls.end() ? 0 : it->second;
}

// NVRTC looks this private entry point up in libcuda.so.1; there is no table to give it.
CUresult cuGetExportTable(const void** table, const void*) {
    *table = nullptr;
    return NOT_SUPPORTED;
}

CUresult cuGetErrorString(CUresult e, const char** s) {
    switch (e) {
        case OK: *s = "no error"; break;
        case INVALID_VALUE: *s = "invalid argument"; break;
        case OUT_OF_MEMORY: *s = "out of memory"; break;
        case NOT_FOUND: *s = "named symbol not found"; break;
        case LAUNCH_FAILED: *s = "unspecified launch failure"; break;
        case NOT_SUPPORTED: *s = "operation not supported"; break;
        default: *s = "error (cuda-emu)";
    }
    return OK;
}
CUresult cuGetErrorName(CUresult e, const char** s) {
    switch (e) {
        case OK: *s = "CUDA_SUCCESS"; break;
        case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
        case OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
        case LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
        case NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
        default: *s = "CUDA_ERROR_UNKNOWN";
    }
    return OK;
}

}  // extern "C"
