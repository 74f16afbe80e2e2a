// A CPU emulation of the slice of CUDA that runtime/cuda/decode_nms.cu uses, in which every
// CUDA thread of a block is an OS thread, so that ThreadSanitizer can watch the kernels'
// shared-memory traffic for data races (build with g++ -fsanitize=thread -g).
//
//   * __syncthreads() is a real block-wide barrier (mutex + condition variable, which
//     ThreadSanitizer models exactly: everything before the barrier in any thread
//     happens-before everything after it in every thread). Unlike pthread_barrier it
//     also counts threads that have returned, so a kernel that returns early in some
//     threads cannot deadlock the emulation; a barrier reached after some threads of the
//     block returned is reported as an error (CUDA leaves it undefined).
//   * __shfl_xor_sync is an exchange among the 32 lanes of a warp under the warp's own
//     mutex: every lane of the warp must reach it (a lane that has returned makes it an
//     error). Being a mutex, it also orders the lanes' other memory accesses, which a
//     real shuffle does not (only __syncwarp does): an intra-warp race that a shuffle
//     seems to order is out of this emulation's sight.
//   * atomicAdd & co. are __atomic builtins with relaxed ordering, as CUDA's are: they
//     order nothing, so code that leans on them for ordering is reported too.
//   * Blocks run one after another on the same OS threads (a full barrier between two
//     blocks), so `__shared__` variables can be plain statics and the dynamic shared
//     memory one buffer, refilled with garbage for every block. Races between blocks of
//     one launch (on global memory) are therefore out of this emulation's sight.
// Device memory is host memory: pointers are host addresses.
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#ifdef EMU_EXACT_SIZES
#include <sanitizer/asan_interface.h>
#endif

#include "cuda_keywords.h"

namespace emu {

// The barrier of one block's threads; see the file comment.
class BlockBarrier {
public:
    void start(unsigned int threads)
    {
        threads_ = threads;
        arrived_ = exited_ = 0;
        diverged_ = false;
    }

    void sync()  // __syncthreads()
    {
        std::unique_lock<std::mutex> lock(mutex_);
        if (exited_ > 0) diverged_ = true;
        const unsigned long generation = generation_;
        if (++arrived_ == threads_ - exited_) {
            release();
            return;
        }
        wake_.wait(lock, [&] { return generation_ != generation; });
    }

    // The calling thread has returned from the kernel for this block: wait until every
    // thread has, then run `between_blocks` once (in the last thread) before all go on.
    template <class F>
    void finish_block(F between_blocks)
    {
        std::unique_lock<std::mutex> lock(mutex_);
        ++exited_;
        if (arrived_ > 0) {
            diverged_ = true;  // others wait at a barrier this thread never reaches
            if (arrived_ == threads_ - exited_) release();
        }
        if (exited_ == threads_) {
            between_blocks(diverged_);
            arrived_ = exited_ = 0;
            diverged_ = false;
            ++block_generation_;
            wake_.notify_all();
            return;
        }
        const unsigned long block = block_generation_;
        wake_.wait(lock, [&] { return block_generation_ != block; });
    }

private:
    void release()
    {
        arrived_ = 0;
        ++generation_;
        wake_.notify_all();
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    unsigned int threads_ = 0, arrived_ = 0, exited_ = 0;
    unsigned long generation_ = 0, block_generation_ = 0;
    bool diverged_ = false;
};

// The shuffles of one warp: each lane leaves its value and the lane it reads, the last to
// arrive hands every lane its result.
class WarpExchange {
public:
    void start(unsigned int lanes)
    {
        lanes_ = lanes;
        arrived_ = exited_ = 0;
        diverged_ = false;
    }

    uint32_t exchange(unsigned int lane, uint32_t value, unsigned int source)
    {
        std::unique_lock<std::mutex> lock(mutex_);
        if (exited_ > 0) diverged_ = true;
        value_[lane] = value;
        source_[lane] = source;
        const unsigned long generation = generation_;
        if (++arrived_ >= lanes_ - exited_) {
            release();
        } else {
            wake_.wait(lock, [&] { return generation_ != generation; });
        }
        return result_[lane];
    }

    void exit()  // a lane of the warp has returned from the kernel for this block
    {
        std::unique_lock<std::mutex> lock(mutex_);
        ++exited_;
        if (arrived_ > 0) {
            diverged_ = true;  // lanes wait at a shuffle this lane never reaches
            if (arrived_ >= lanes_ - exited_) release();
        }
    }

    bool diverged()
    {
        std::unique_lock<std::mutex> lock(mutex_);
        return diverged_;
    }

private:
    void release()
    {
        for (unsigned int l = 0; l < lanes_; ++l) result_[l] = source_[l] < lanes_ ? value_[source_[l]] : value_[l];
        arrived_ = 0;
        ++generation_;
        wake_.notify_all();
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    unsigned int lanes_ = 32, arrived_ = 0, exited_ = 0;
    unsigned long generation_ = 0;
    bool diverged_ = false;
    uint32_t value_[32] = {}, result_[32] = {};
    unsigned int source_[32] = {};
};

struct Launch {
    dim3 grid, block;
    std::vector<unsigned char> dynamic_shared;  // shared_bytes, then slack (poisoned under EMU_EXACT_SIZES)
    size_t shared_bytes = 0;
    BlockBarrier barrier;
    std::vector<WarpExchange> warps;
    std::string error;  // written under the barrier's lock, read after the join
};

inline Launch*& current_launch()
{
    static Launch* launch = nullptr;  // set before the threads start, cleared after they join
    return launch;
}

inline thread_local dim3 thread_index, block_index;
inline thread_local unsigned int linear_thread;  // threadIdx as one number: its warp is linear_thread / 32

inline unsigned char* dynamic_shared() { return current_launch()->dynamic_shared.data(); }

// The dynamic shared memory's slack beyond what the launch asked for. Built with
// -DEMU_EXACT_SIZES (and -fsanitize=address: tests/helpers/cuda_asan.py) the slack is
// poisoned, so a kernel touching shared memory the plan did not request is reported.
constexpr size_t SHARED_SLACK = 256;

inline void fill_garbage(Launch& state)
{
    std::vector<unsigned char>& memory = state.dynamic_shared;
#ifdef EMU_EXACT_SIZES
    ASAN_UNPOISON_MEMORY_REGION(memory.data(), memory.size());
#endif
    std::memset(memory.data(), 0xCD, memory.size());
#ifdef EMU_EXACT_SIZES
    ASAN_POISON_MEMORY_REGION(memory.data() + state.shared_bytes, memory.size() - state.shared_bytes);
#endif
}

// Run `body(args)` as a kernel over the grid, one OS thread per CUDA thread of a block.
// Throws std::runtime_error when a barrier was reached by part of a block only.
inline void launch(void (*body)(void**), void** args, dim3 grid, dim3 block, size_t shared_bytes)
{
    Launch state;
    state.grid = grid;
    state.block = block;
    state.dynamic_shared.resize(shared_bytes + SHARED_SLACK);
    state.shared_bytes = shared_bytes;
    fill_garbage(state);
    const unsigned int threads = block.x * block.y * block.z;
    const unsigned long blocks = (unsigned long)grid.x * grid.y * grid.z;
    state.barrier.start(threads);
    const unsigned int warps = (threads + 31) / 32;
    state.warps = std::vector<WarpExchange>(warps);
    for (unsigned int w = 0; w < warps; ++w) state.warps[w].start(threads - 32 * w < 32 ? threads - 32 * w : 32);
    current_launch() = &state;

    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (unsigned int t = 0; t < threads; ++t) {
        workers.emplace_back([&state, body, args, t, blocks] {
            const dim3 g = state.grid, b = state.block;
            thread_index = dim3{t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
            linear_thread = t;
            for (unsigned long n = 0; n < blocks; ++n) {
                block_index = dim3{(unsigned int)(n % g.x), (unsigned int)((n / g.x) % g.y),
                                   (unsigned int)(n / ((unsigned long)g.x * g.y))};
                body(args);
                state.warps[t / 32].exit();
                state.barrier.finish_block([&state, n](bool diverged) {
                    if (diverged && state.error.empty())
                        state.error = "block " + std::to_string(n) +
                                      ": __syncthreads() reached by some threads after others returned";
                    for (WarpExchange& warp : state.warps) {
                        if (warp.diverged() && state.error.empty())
                            state.error = "block " + std::to_string(n) +
                                          ": a warp shuffle reached by some lanes after others returned";
                    }
                    const unsigned int all = state.block.x * state.block.y * state.block.z;
                    for (unsigned int w = 0; w < state.warps.size(); ++w)
                        state.warps[w].start(all - 32 * w < 32 ? all - 32 * w : 32);
                    fill_garbage(state);  // shared memory does not outlive a block
                });
            }
        });
    }
    for (std::thread& worker : workers) worker.join();
    current_launch() = nullptr;
#ifdef EMU_EXACT_SIZES
    ASAN_UNPOISON_MEMORY_REGION(state.dynamic_shared.data(), state.dynamic_shared.size());
#endif
    if (!state.error.empty()) throw std::runtime_error(state.error);
}

}  // namespace emu

#define threadIdx (emu::thread_index)
#define blockIdx (emu::block_index)
#define blockDim (emu::current_launch()->block)
#define gridDim (emu::current_launch()->grid)

inline void __syncthreads() { emu::current_launch()->barrier.sync(); }

// __shfl_xor_sync(0xffffffff, value, lane_mask) of a 4-byte value (the full mask only).
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T value, int lane_mask)
{
    static_assert(sizeof(T) == 4, "4-byte shuffles only");
    if (mask != 0xFFFFFFFFu) throw std::runtime_error("__shfl_xor_sync: only the full mask is emulated");
    const unsigned int lane = emu::linear_thread % 32;
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    bits = emu::current_launch()->warps[emu::linear_thread / 32].exchange(lane, bits, lane ^ ((unsigned int)lane_mask & 31u));
    T result;
    std::memcpy(&result, &bits, 4);
    return result;
}

// CUDA's atomics are relaxed: they make the update indivisible and order nothing else.
template <class T>
inline T atomicAdd(T* address, T value)
{
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

template <class T>
inline T atomicSub(T* address, T value)
{
    return __atomic_fetch_sub(address, value, __ATOMIC_RELAXED);
}

template <class T>
inline T atomicExch(T* address, T value)
{
    return __atomic_exchange_n(address, value, __ATOMIC_RELAXED);
}

template <class T>
inline T atomicCAS(T* address, T compare, T value)
{
    __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;  // the old value, whether or not it was swapped
}

template <class T>
inline T atomicMax(T* address, T value)
{
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old < value &&
           !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

template <class T>
inline T atomicMin(T* address, T value)
{
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old > value &&
           !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

