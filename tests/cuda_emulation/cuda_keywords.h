// The CUDA keywords, vector types and intrinsics decode_nms.cu uses, as plain C++: shared by both CPU
// emulations (cuda_emulation.h: fibers; cuda_threads.h: OS threads for ThreadSanitizer).
#pragma once

#include <cmath>
#include <cstring>

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

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __double2float_rn(double x) { return static_cast<float>(x); }

inline unsigned int __float_as_uint(float x)
{
    unsigned int u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}

inline float __uint_as_float(unsigned int u)
{
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

using std::exp;
using std::fmaxf;
using std::fminf;
