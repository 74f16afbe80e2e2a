// The CUDA keywords and vector types decode_nms.cu uses, as plain C++: shared by both CPU
// emulations (cuda_emulation.h: fibers; cuda_threads.h: OS threads for ThreadSanitizer).
#pragma once

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

struct alignas(16) float4 {
    float x, y, z, w;
};
