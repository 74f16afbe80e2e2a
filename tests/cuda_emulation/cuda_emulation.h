// A CPU emulation of the slice of CUDA that runtime/decode_nms.cu uses, so that its
// kernels run (slowly, exactly) on a machine without a GPU.
//
// Each CUDA thread of a block is a ucontext fiber. A thread runs until it reaches a
// __syncthreads() or a warp shuffle (__shfl_xor_sync), or returns, and then switches back
// to the block scheduler. The scheduler resumes, thread after thread in forward or (to
// expose missing barriers) reverse order: the threads of a warp whose every lane waits at
// a shuffle (after exchanging their values), else every thread once all wait at the
// barrier. So code between two synchronisation points runs thread after thread. Blocks run
// one after another, so `__shared__` variables can be plain statics. Atomics need no
// locking: everything runs on one OS thread. A barrier reached by some threads of a block
// while others have returned, a shuffle reached by some lanes of a warp while others have
// returned, and threads waiting on each other at different points are reported as errors,
// as CUDA leaves them undefined. Device memory is host memory: pointers are host addresses.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <ucontext.h>
#include <vector>

#include "cuda_keywords.h"

namespace emu {

enum class Wait { running, barrier, shuffle, finished };

struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    dim3 index;
    Wait wait = Wait::running;
    uint32_t shuffle_value = 0, shuffle_result = 0;  // a shuffle's bits, sent and received
    unsigned int shuffle_lane = 0;  // the lane it reads from
};

struct State {
    dim3 block_idx, block_dim, grid_dim;
    std::vector<Fiber> fibers;
    Fiber* current = nullptr;
    ucontext_t scheduler;
    std::vector<unsigned char> dynamic_shared;
    void (*body)(void**) = nullptr;
    void** args = nullptr;
};

inline State& state()
{
    static State s;
    return s;
}

inline unsigned char* dynamic_shared() { return state().dynamic_shared.data(); }

inline void run_fiber()
{
    State& s = state();
    s.body(s.args);
    s.current->wait = Wait::finished;
}

// One step of the block scheduler: resume, in order, every thread that may go on. Returns
// false when every thread has returned; throws on a synchronisation CUDA leaves undefined.
inline bool schedule_step(State& s, bool reverse)
{
    const unsigned int threads = (unsigned int)s.fibers.size();
    std::vector<bool> go(threads, false);
    bool any = false;
    for (unsigned int first = 0; first < threads; first += 32) {  // warps whose lanes all wait at a shuffle
        const unsigned int last = first + 32 < threads ? first + 32 : threads;
        unsigned int at_shuffle = 0, done = 0;
        for (unsigned int t = first; t < last; ++t) {
            at_shuffle += s.fibers[t].wait == Wait::shuffle;
            done += s.fibers[t].wait == Wait::finished;
        }
        if (at_shuffle == 0) continue;
        if (done != 0) throw std::runtime_error("a warp shuffle reached by some lanes of a warp after others returned");
        if (at_shuffle != last - first) continue;
        for (unsigned int t = first; t < last; ++t) {
            const unsigned int source = first + s.fibers[t].shuffle_lane;
            s.fibers[t].shuffle_result = source < last ? s.fibers[source].shuffle_value : s.fibers[t].shuffle_value;
            go[t] = any = true;
        }
    }
    if (!any) {
        unsigned int at_barrier = 0, done = 0;
        for (const Fiber& f : s.fibers) {
            at_barrier += f.wait == Wait::barrier;
            done += f.wait == Wait::finished;
        }
        if (done == threads) return false;
        if (at_barrier + done != threads)
            throw std::runtime_error("threads of a block wait at a __syncthreads() and at a warp shuffle at once");
        if (done != 0)
            throw std::runtime_error("__syncthreads() reached by some threads of a block after others returned");
        go.assign(threads, true);
    }
    for (unsigned int n = 0; n < threads; ++n) {
        const unsigned int t = reverse ? threads - 1 - n : n;
        if (!go[t]) continue;
        Fiber& f = s.fibers[t];
        f.wait = Wait::running;
        s.current = &f;
        swapcontext(&s.scheduler, &f.context);
    }
    return true;
}

// Run `body(args)` as a kernel over the grid; reverse: resume threads in reverse order.
inline void launch(void (*body)(void**), void** args, dim3 grid, dim3 block, size_t shared_bytes, bool reverse)
{
    State& s = state();
    s.body = body;
    s.args = args;
    s.grid_dim = grid;
    s.block_dim = block;
    s.dynamic_shared.assign(shared_bytes + 16, 0xCD);  // garbage, as on a GPU
    const unsigned int threads = block.x * block.y * block.z;
    s.fibers.assign(threads, Fiber());
    for (Fiber& f : s.fibers) f.stack.resize(256 * 1024);
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                s.block_idx = dim3{bx, by, bz};
                for (unsigned int t = 0; t < threads; ++t) {
                    Fiber& f = s.fibers[t];
                    f.wait = Wait::barrier;  // the kernel's start: every thread goes
                    f.index = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                    getcontext(&f.context);
                    f.context.uc_stack.ss_sp = f.stack.data();
                    f.context.uc_stack.ss_size = f.stack.size();
                    f.context.uc_link = &s.scheduler;
                    makecontext(&f.context, run_fiber, 0);
                }
                while (schedule_step(s, reverse)) {
                }
            }
    s.current = nullptr;
}

}  // namespace emu

#define threadIdx (emu::state().current->index)
#define blockIdx (emu::state().block_idx)
#define blockDim (emu::state().block_dim)
#define gridDim (emu::state().grid_dim)

inline void __syncthreads()
{
    emu::State& s = emu::state();
    s.current->wait = emu::Wait::barrier;
    swapcontext(&s.current->context, &s.scheduler);
}

// __shfl_xor_sync(0xffffffff, value, lane_mask) of a 4-byte value: every lane of the warp
// must reach it (the full mask is the only one the kernels use).
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T value, int lane_mask)
{
    static_assert(sizeof(T) == 4, "4-byte shuffles only");
    if (mask != 0xFFFFFFFFu) throw std::runtime_error("__shfl_xor_sync: only the full mask is emulated");
    emu::State& s = emu::state();
    emu::Fiber& self = *s.current;
    const unsigned int lane = (unsigned int)(&self - s.fibers.data()) % 32;
    std::memcpy(&self.shuffle_value, &value, 4);
    self.shuffle_lane = lane ^ ((unsigned int)lane_mask & 31u);
    self.wait = emu::Wait::shuffle;
    swapcontext(&self.context, &s.scheduler);
    T result;
    std::memcpy(&result, &self.shuffle_result, 4);
    return result;
}

inline unsigned int atomicAdd(unsigned int* address, unsigned int value)
{
    unsigned int old = *address;
    *address = old + value;
    return old;
}

inline int atomicAdd(int* address, int value)
{
    int old = *address;
    *address = old + value;
    return old;
}

inline unsigned long long atomicMax(unsigned long long* address, unsigned long long value)
{
    unsigned long long old = *address;
    if (value > old) *address = value;
    return old;
}

