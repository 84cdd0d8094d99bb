// What the SIMD kernels of FFKernels need from the hardware and Swift cannot name:
// - reciprocals from the estimate instruction: Swift's `1 / x` on a vector is a full division
//   (VDIVPS: ~10 cycles of one port per AVX-512 vector); the estimate plus one Newton step is
//   3 cheap instructions;
// - flush-to-zero / denormals-are-zero for a kernel's thread (subnormal operands cost ~100
//   cycles each, and a product of sinc factors reaches them).
// The functions are `static inline` with a `target` attribute: Swift inlines them into kernels
// built for that vector unit (FF_AVX512 / FF_AVX2), and the header compiles for any target.
#ifndef FF_FASTMATH_H
#define FF_FASTMATH_H

typedef float ff_float8 __attribute__((ext_vector_type(8)));
typedef float ff_float16 __attribute__((ext_vector_type(16)));

#if defined(__x86_64__)
#include <immintrin.h>

/// 1/x per lane within 2 ulp of the division for 2^-126 <= |x| <= 2^126 (VRCP14PS, relative
/// error 2^-14, and the Newton step r + r (1 − x r), which squares it). Outside that range the
/// result is meaningless (NaN for x = 0 or ±inf): callers mask those lanes.
__attribute__((target("avx512f"), always_inline))
static inline ff_float16 ff_reciprocal16(ff_float16 x) {
    __m512 r = _mm512_rcp14_ps((__m512)x);
    return (ff_float16)_mm512_fmadd_ps(r, _mm512_fnmadd_ps((__m512)x, r, _mm512_set1_ps(1.0f)), r);
}

/// `ff_reciprocal16` for 8 lanes, from VRCPPS (relative error 1.5 · 2^-12): ~3 ulp after the
/// Newton step.
__attribute__((target("avx2,fma"), always_inline))
static inline ff_float8 ff_reciprocal8(ff_float8 x) {
    __m256 r = _mm256_rcp_ps((__m256)x);
    return (ff_float8)_mm256_fmadd_ps(r, _mm256_fnmadd_ps((__m256)x, r, _mm256_set1_ps(1.0f)), r);
}

/// Turns on flush-to-zero and denormals-are-zero for the calling thread; returns the previous
/// MXCSR for `ff_restore_fp_mode`.
static inline unsigned ff_flush_denormals(void) {
    unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8040);
    return old;
}

static inline void ff_restore_fp_mode(unsigned old) { _mm_setcsr(old); }
#else
static inline unsigned ff_flush_denormals(void) { return 0; }
static inline void ff_restore_fp_mode(unsigned old) { (void)old; }
#endif

#endif
