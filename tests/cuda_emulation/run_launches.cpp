// A program that runs a decode + NMS launch sequence on the threaded CUDA emulation
// (cuda_threads.h), built with -fsanitize=thread by tests/helpers/cuda_tsan.py. A sanitizer runtime has
// to start with its process, so this is an executable driven through files rather than a
// library loaded into Python.
//
// Usage: run_launches PLAN. PLAN is a text file of lines
//   region NAME BYTES FILE          memory read from FILE, written back to it at the end
//   launch KERNEL GX GY GZ BX BY BZ SHARED_BYTES
//   arg p REGION OFFSET | arg i INT | arg f FLOAT_BITS   the last launch's arguments, in order
// Built with -DEMU_EXACT_SIZES (tests/helpers/cuda_asan.py: -fsanitize=address,undefined) every
// region is allocated at exactly its size and the dynamic shared memory's slack is poisoned.
// Exit status: 0; 2 for a bad plan or file; 3 when the emulation found an error (stderr).
#include "cuda_threads.h"

#define expf cuda_expf  // the kernel's exponentials are CUDA's (cuda_keywords.h)
#define exp cuda_exp
#include "decode_nms_threads.cu"
#undef expf
#undef exp

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "kernel_adapters.h"

namespace {

struct Region {
    std::string file;
    std::vector<unsigned char> bytes;  // over-allocated so that the data starts 256-aligned
    unsigned char* data = nullptr;
    size_t size = 0;
};

union Value {  // one kernel argument, as cuLaunchKernel takes it: a pointer to its bytes
    void* pointer;
    int integer;
    float real;
};

struct PendingLaunch {
    std::string kernel;
    dim3 grid, block;
    size_t shared = 0;
    std::vector<std::unique_ptr<Value>> values;
};

[[noreturn]] void fail(const std::string& message)
{
    std::cerr << "run_launches: " << message << "\n";
    std::exit(2);
}

void execute(const PendingLaunch& launch)
{
    static const std::map<std::string, void (*)(void**)> kernels = {
        {"ssd_softmax", run_softmax}, {"ssd_class_nms", run_class_nms}, {"ssd_merge", run_merge},
        {"ssd_class_top_k", run_class_top_k}, {"ssd_agnostic_nms", run_agnostic_nms}, {"ssd_pack", run_pack}};
    auto found = kernels.find(launch.kernel);
    if (found == kernels.end()) fail("unknown kernel " + launch.kernel);
    std::vector<void*> args;
    for (const auto& value : launch.values) args.push_back(value.get());
    try {
        emu::launch(found->second, args.data(), launch.grid, launch.block, launch.shared);
    } catch (const std::exception& exc) {
        std::cerr << "run_launches: " << launch.kernel << ": " << exc.what() << "\n";
        std::exit(3);
    }
}

}  // namespace

int main(int argc, char** argv)
{
    if (argc != 2) fail("usage: run_launches PLAN");
    std::ifstream plan(argv[1]);
    if (!plan) fail(std::string("cannot read ") + argv[1]);
    std::map<std::string, Region> regions;
    std::unique_ptr<PendingLaunch> pending;
    std::string line;
    while (std::getline(plan, line)) {
        std::istringstream words(line);
        std::string what;
        words >> what;
        if (what == "region") {
            std::string name;
            Region region;
            words >> name >> region.size >> region.file;
#ifdef EMU_EXACT_SIZES  // exactly `size` bytes, 256-aligned: AddressSanitizer's redzone starts where they end
            void* exact = nullptr;
            if (posix_memalign(&exact, 256, region.size ? region.size : 1) != 0) fail("out of memory");
            region.data = static_cast<unsigned char*>(exact);  // freed with the process
#else
            region.bytes.resize(region.size + 256);
            region.data = region.bytes.data() + (-(uintptr_t)region.bytes.data() & 255u);
#endif
            std::ifstream in(region.file, std::ios::binary);
            if (!in.read(reinterpret_cast<char*>(region.data), (std::streamsize)region.size))
                fail("cannot read " + std::to_string(region.size) + " bytes from " + region.file);
            regions[name] = std::move(region);
        } else if (what == "launch") {
            if (pending) execute(*pending);
            pending = std::make_unique<PendingLaunch>();
            words >> pending->kernel >> pending->grid.x >> pending->grid.y >> pending->grid.z >> pending->block.x >>
                pending->block.y >> pending->block.z >> pending->shared;
        } else if (what == "arg") {
            if (!pending) fail("arg before any launch");
            std::string kind;
            words >> kind;
            auto value = std::make_unique<Value>();
            if (kind == "p") {
                std::string name;
                size_t offset;
                words >> name >> offset;
                auto region = regions.find(name);
                if (region == regions.end() || offset > region->second.size) fail("bad pointer argument: " + line);
                value->pointer = region->second.data + offset;
            } else if (kind == "i") {
                words >> value->integer;
            } else if (kind == "f") {
                uint32_t bits;
                words >> bits;
                std::memcpy(&value->real, &bits, sizeof bits);
            } else {
                fail("bad argument: " + line);
            }
            pending->values.push_back(std::move(value));
        } else if (!what.empty()) {
            fail("bad line: " + line);
        }
    }
    if (pending) execute(*pending);
    for (auto& [name, region] : regions) {
        std::ofstream out(region.file, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(region.data), (std::streamsize)region.size);
        if (!out) fail("cannot write " + region.file);
    }
    return 0;
}
