// Launch entry point of the emulated kernels, called from Python through ctypes.
// `decode_nms_emulated.cu` is runtime/decode_nms.cu with its one `extern __shared__`
// declaration pointed at the emulator's dynamic shared memory (tests/helpers/cuda_emulator.py).
#include "cuda_emulation.h"

#define expf cuda_expf  // the kernel's exponentials are CUDA's (cuda_keywords.h)
#define exp cuda_exp
#include "decode_nms_emulated.cu"
#undef expf
#undef exp

#include "kernel_adapters.h"

// Returns 0, or -1 for an unknown kernel, or -2 when the emulation found an error
// (message in `error`, `error_size` bytes).
extern "C" int emu_launch(const char* kernel, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                          unsigned int by, unsigned int bz, size_t shared_bytes, void** args, int reverse,
                          char* error, size_t error_size)
{
    void (*body)(void**) = nullptr;
    std::string name(kernel);
    if (name == "ssd_softmax") body = run_softmax;
    else if (name == "ssd_class_nms") body = run_class_nms;
    else if (name == "ssd_merge") body = run_merge;
    else if (name == "ssd_class_top_k") body = run_class_top_k;
    else if (name == "ssd_agnostic_nms") body = run_agnostic_nms;
    else if (name == "ssd_pack") body = run_pack;
    else return -1;
    try {
        emu::launch(body, args, dim3{gx, gy, gz}, dim3{bx, by, bz}, shared_bytes, reverse != 0);
    } catch (const std::exception& exc) {
        std::strncpy(error, exc.what(), error_size - 1);
        error[error_size - 1] = 0;
        return -2;
    }
    return 0;
}
