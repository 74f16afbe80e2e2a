// The CUDA keywords, vector types, intrinsics and math functions decode_nms.cu uses, as plain C++:
// shared by both CPU emulations (cuda_emulation.h: fibers; cuda_threads.h: OS threads for
// ThreadSanitizer). The kernel's expf and exp are CUDA's own algorithms (cuda_expf, cuda_exp
// below), not the host's libm: launch.cpp and run_launches.cpp point the kernel's `expf` and
// `exp` at them while they include the kernel source.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
// Inlined as nvcc inlines it: an out-of-line call (g++ -O1 keeps a helper with two callers
// out of line) left ThreadSanitizer blind to the race of a planted missing barrier after
// ssd_class_nms's decode once ssd_class_top_k decoded boxes too.
#define __forceinline__ inline __attribute__((always_inline))
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

using std::fmaxf;
using std::fminf;

// ---------------------------------------------------------------- CUDA's exponentials
// Transcribed from libdevice (__nv_expf, __nv_exp) as nvcc 13.0 (V13.0.88) inlines them
// into PTX for `expf(x)` and `exp(x)` without fast-math (`nvcc --ptx -arch=sm_87`; the
// same sequence for every SM the project targets): instruction for instruction, with each
// PTX instruction's rounding. The one instruction whose exact bits are not public is
// ex2.approx.ftz.f32 (the MUFU.EX2 unit; PTX ISA: "maximum relative error 2^-22" for
// .approx.f32): it is modelled as the correctly rounded 2^x, flushing subnormal inputs and
// results to zero as .ftz does. So cuda_expf can differ from a GPU's expf in the last bit
// or two (which the comparison rule's 1e-6 absorbs); cuda_exp uses only IEEE operations
// and is the GPU's to the bit.

inline float cuda_bits_float(uint32_t u)
{
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

inline uint32_t cuda_float_bits(float x)
{
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}

inline double cuda_bits_double(uint32_t lo, uint32_t hi)
{
    uint64_t u = ((uint64_t)hi << 32) | lo;
    double x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

inline void cuda_double_words(double x, uint32_t& lo, uint32_t& hi)
{
    uint64_t u;
    std::memcpy(&u, &x, sizeof u);
    lo = (uint32_t)u;
    hi = (uint32_t)(u >> 32);
}

inline bool cuda_is_subnormal(float x) { return x != 0.0f && std::fabs(x) < 1.17549435e-38f; }

// ex2.approx.ftz.f32 (see above): 2^x correctly rounded, subnormals flushed to zero.
inline float cuda_ex2_approx_ftz(float x)
{
    if (cuda_is_subnormal(x)) x = std::copysign(0.0f, x);
    float y = (float)std::exp2((double)x);
    if (cuda_is_subnormal(y)) y = std::copysign(0.0f, y);
    return y;
}

// libdevice __nv_expf. PTX:
//   fma.rn.f32 t, x, 0f3BBB989D, 0f3F000000;    t = x * log2(e) / 252 + 0.5
//   cvt.sat.f32.f32 t, t;                         clamp to [0, 1] (NaN -> 0)
//   fma.rm.f32 j, t, 0f437C0000, 0f4B400001;      j = floor(252 t) + 12582913
//   add.f32 n, j, 0fCB40007F;                     n = floor(x log2(e)) (-126..126)
//   fma.rn.f32 f, x, 0f3FB8AA3B, -n;              f = x log2(e) - n, log2(e) in two parts
//   fma.rn.f32 f, x, 0f32A57060, f;
//   shl.b32 s, j, 23;                             s = 2^n (j's low bits are n + 127)
//   ex2.approx.ftz.f32 e, f;
//   mul.f32 r, e, s;
inline float cuda_expf(float x)
{
    float t = std::fma(x, cuda_bits_float(0x3BBB989Du), 0.5f);
    t = t != t ? 0.0f : std::fmin(std::fmax(t, 0.0f), 1.0f);
    // fma.rm: t * 252 is exact in double; the sum is below 2^24, where float steps are 1.
    const float j = 12582913.0f + (float)std::floor((double)t * 252.0);
    const float n = j + cuda_bits_float(0xCB40007Fu);
    float f = std::fma(x, cuda_bits_float(0x3FB8AA3Bu), -n);
    f = std::fma(x, cuda_bits_float(0x32A57060u), f);
    const float scale = cuda_bits_float(cuda_float_bits(j) << 23);
    return cuda_ex2_approx_ftz(f) * scale;
}

// libdevice __nv_exp: round x log2(e) to an integer n (the 0x1.8p52 shift), reduce with
// ln(2) in two parts, a degree-11 polynomial, scale by 2^n in the exponent field (in two
// steps near the ends of the range); |x| >= 745: 0 or x + inf.
inline double cuda_exp(double x)
{
    const double shifted = std::fma(x, cuda_bits_double(0x652B82FEu, 0x3FF71547u), cuda_bits_double(0u, 0x43380000u));
    uint32_t n, unused;
    cuda_double_words(shifted, n, unused);
    const double rounded = shifted + cuda_bits_double(0u, 0xC3380000u);
    double r = std::fma(rounded, cuda_bits_double(0xFEFA39EFu, 0xBFE62E42u), x);
    r = std::fma(rounded, cuda_bits_double(0x3B39803Fu, 0xBC7ABC9Eu), r);
    static const uint32_t coefficients[][2] = {  // lo, hi words, highest degree first
        {0x69CE2BDFu, 0x3E5ADE15u}, {0xFCA213EAu, 0x3E928AF3u}, {0x62401315u, 0x3EC71DEEu},
        {0x7C89EB71u, 0x3EFA0199u}, {0x14761F65u, 0x3F2A01A0u}, {0x1852B7AFu, 0x3F56C16Cu},
        {0x11122322u, 0x3F811111u}, {0x555502A1u, 0x3FA55555u}, {0x55555511u, 0x3FC55555u},
        {0x0000000Bu, 0x3FE00000u}, {0x00000000u, 0x3FF00000u}};
    double p = cuda_bits_double(coefficients[0][0], coefficients[0][1]);
    for (int i = 1; i < 11; ++i) p = std::fma(p, r, cuda_bits_double(coefficients[i][0], coefficients[i][1]));
    p = std::fma(p, r, 1.0);
    uint32_t lo, hi;
    cuda_double_words(p, lo, hi);
    double result = cuda_bits_double(lo, hi + (n << 20));
    uint32_t x_lo, x_hi;
    cuda_double_words(x, x_lo, x_hi);
    const float magnitude = std::fabs(cuda_bits_float(x_hi));  // |x|'s high word compared as a float
    if (magnitude < cuda_bits_float(0x4086232Bu)) return result;  // |x| < 708.4
    result = x < 0.0 ? 0.0 : x + cuda_bits_double(0u, 0x7FF00000u);
    if (!(magnitude < cuda_bits_float(0x40874800u))) return result;  // |x| >= 745 (or NaN): 0, inf, NaN
    const int32_t whole = (int32_t)n, half = (whole + (int32_t)((uint32_t)whole >> 31)) >> 1;
    const double first = cuda_bits_double(lo, hi + ((uint32_t)half << 20));
    const double second = cuda_bits_double(0u, ((uint32_t)(whole - half) << 20) + 1072693248u);
    return first * second;
}
