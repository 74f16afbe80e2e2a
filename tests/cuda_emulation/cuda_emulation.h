// A CPU emulation of the slice of CUDA that runtime/decode_nms.cu uses, so that its
// kernels run (slowly, exactly) on a machine without a GPU.
//
// Each CUDA thread of a block is a ucontext fiber; __syncthreads() switches back to the
// block scheduler, which resumes every thread of the block in turn, so code between two
// barriers runs thread after thread, in forward or (to expose missing barriers) reverse
// order. Blocks run one after another, so `__shared__` variables can be plain statics.
// Atomics need no locking: everything runs on one OS thread. A barrier reached by some
// threads of a block while others have returned is reported as an error, as CUDA leaves
// it undefined. Device memory is host memory: pointers are host addresses.
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

struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    dim3 index;
    bool finished = false;
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
    s.current->finished = true;
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
                    f.finished = false;
                    f.index = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                    getcontext(&f.context);
                    f.context.uc_stack.ss_sp = f.stack.data();
                    f.context.uc_stack.ss_size = f.stack.size();
                    f.context.uc_link = &s.scheduler;
                    makecontext(&f.context, run_fiber, 0);
                }
                while (true) {
                    unsigned int finished = 0;
                    for (unsigned int n = 0; n < threads; ++n) {
                        Fiber& f = s.fibers[reverse ? threads - 1 - n : n];
                        if (f.finished) {
                            ++finished;
                            continue;
                        }
                        s.current = &f;
                        swapcontext(&s.scheduler, &f.context);
                        if (f.finished) ++finished;
                    }
                    if (finished == threads) break;
                    if (finished != 0)
                        throw std::runtime_error("__syncthreads() reached by some threads of a block after others returned");
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
    swapcontext(&s.current->context, &s.scheduler);
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

