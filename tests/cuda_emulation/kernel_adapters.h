// The kernels' launch adapters, shared by both CPU emulations: each takes the launch's
// argument pointers (CUDA's `void** kernelParams`) and calls the kernel with them typed.
// Included after the kernel source.
#pragma once

namespace {

template <class T>
T arg(void** args, int i)
{
    return *static_cast<T*>(args[i]);
}

void run_softmax(void** a)
{
    ssd_softmax(arg<const float*>(a, 0), arg<unsigned char*>(a, 1), arg<float*>(a, 2), arg<int>(a, 3), arg<int>(a, 4),
                arg<float>(a, 5), arg<int>(a, 6));
}

void run_class_nms(void** a)
{
    ssd_class_nms(arg<const float*>(a, 0), arg<const unsigned char*>(a, 1), arg<const float*>(a, 2),
                  arg<const float*>(a, 3), arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<int>(a, 7),
                  arg<float>(a, 8), arg<float>(a, 9), arg<float>(a, 10), arg<float>(a, 11), arg<float>(a, 12),
                  arg<u64*>(a, 13), arg<float4*>(a, 14), arg<int*>(a, 15));
}

void run_merge(void** a)
{
    ssd_merge(arg<const float*>(a, 0), arg<const u64*>(a, 1), arg<const float4*>(a, 2), arg<const int*>(a, 3),
              arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<int>(a, 7), arg<int>(a, 8), arg<float*>(a, 9),
              arg<int*>(a, 10));
}

void run_class_top_k(void** a)
{
    ssd_class_top_k(arg<const float*>(a, 0), arg<const unsigned char*>(a, 1), arg<const float*>(a, 2),
                    arg<const float*>(a, 3), arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<float>(a, 7),
                    arg<float>(a, 8), arg<float>(a, 9), arg<float>(a, 10), arg<u64*>(a, 11), arg<float4*>(a, 12),
                    arg<int*>(a, 13));
}

void run_agnostic_nms(void** a)
{
    ssd_agnostic_nms(arg<const u64*>(a, 0), arg<const float4*>(a, 1), arg<const int*>(a, 2), arg<int>(a, 3),
                     arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<int>(a, 7), arg<float>(a, 8),
                     arg<u64*>(a, 9), arg<u64*>(a, 10), arg<float4*>(a, 11), arg<int*>(a, 12));
}

void run_pack(void** a)
{
    ssd_pack(arg<const float*>(a, 0), arg<const u64*>(a, 1), arg<const float4*>(a, 2), arg<const int*>(a, 3),
             arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<float*>(a, 7));
}

}  // namespace
