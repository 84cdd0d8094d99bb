// What the SIMD kernels of FFKernels need from the hardware and Swift cannot name:
// - reciprocals from the estimate instruction: Swift's `1 / x` on a vector is a full division
//   (VDIVPS: ~10 cycles of one port per AVX-512 vector); the estimate plus one Newton step is
//   3 cheap instructions;
// - flush-to-zero / denormals-are-zero for a kernel's thread (subnormal operands cost ~100
//   cycles each, and a product of sinc factors reaches them);
// - a · b − c in one instruction; folding two vectors into one, and fast sums of many
//   half-vectors' lanes (the backward's dq accumulators).
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

/// a · b − c, one rounding (Swift's SIMD has only c + a · b: a negated operand was a separate
/// instruction).
__attribute__((target("avx512f"), always_inline))
static inline ff_float16 ff_fmsub16(ff_float16 a, ff_float16 b, ff_float16 c) {
    return (ff_float16)_mm512_fmsub_ps((__m512)a, (__m512)b, (__m512)c);
}
__attribute__((target("avx2,fma"), always_inline))
static inline ff_float8 ff_fmsub8(ff_float8 a, ff_float8 b, ff_float8 c) {
    return (ff_float8)_mm256_fmsub_ps((__m256)a, (__m256)b, (__m256)c);
}

/// `ff_reciprocal16` for 8 lanes, from VRCPPS (relative error 1.5 · 2^-12): ~3 ulp after the
/// Newton step.
__attribute__((target("avx2,fma"), always_inline))
static inline ff_float8 ff_reciprocal8(ff_float8 x) {
    __m256 r = _mm256_rcp_ps((__m256)x);
    return (ff_float8)_mm256_fmadd_ps(r, _mm256_fnmadd_ps((__m256)x, r, _mm256_set1_ps(1.0f)), r);
}

/// One vector from two: lanes 0–7 hold a's 128-bit quarters 0+2 and 1+3, lanes 8–15 b's, so
/// they sum to a's and b's lane sums (two shuffles and an add; see `foldPair`).
__attribute__((target("avx512f"), always_inline))
static inline ff_float16 ff_fold_pair16(ff_float16 a, ff_float16 b) {
    return (ff_float16)_mm512_add_ps(_mm512_shuffle_f32x4((__m512)a, (__m512)b, 0x44),
                                     _mm512_shuffle_f32x4((__m512)a, (__m512)b, 0xEE));
}

/// out[k] = the sum of the 8 floats at v + 8k, for k < n. Per 8 vectors: unpacks within 128-bit
/// lanes, then 128-bit permutes, ~3 instructions a sum (a lane-by-lane sum is 7 dependent adds).
__attribute__((target("avx2,fma"), always_inline))
static inline void ff_lane_sums8(const float *v, long n, float *out) {
    long k = 0;
    for (; k + 8 <= n; k += 8) {
        const float *p = v + k * 8;
        __m256 s[4], q[2];
        for (int i = 0; i < 4; i++) {
            __m256 a = _mm256_loadu_ps(p + 16 * i), b = _mm256_loadu_ps(p + 16 * i + 8);
            s[i] = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        }
        for (int i = 0; i < 2; i++) {
            __m256d x = _mm256_castps_pd(s[2 * i]), y = _mm256_castps_pd(s[2 * i + 1]);
            q[i] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)),
                                 _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
        }
        _mm256_storeu_ps(out + k, _mm256_add_ps(_mm256_permute2f128_ps(q[0], q[1], 0x20),
                                                _mm256_permute2f128_ps(q[0], q[1], 0x31)));
    }
    for (; k < n; k++) {
        float t = 0;
        for (int l = 0; l < 8; l++) t += v[k * 8 + l];
        out[k] = t;
    }
}

/// Turns on flush-to-zero and denormals-are-zero for the calling thread; returns the previous
/// MXCSR for `ff_restore_fp_mode`.
static inline unsigned ff_flush_denormals(void) {
    unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8040);
    return old;
}

static inline void ff_restore_fp_mode(unsigned old) { _mm_setcsr(old); }

/// The FMA-throughput probe: `rounds` rounds of independent multiply-add chains, one vector
/// FMA per chain and round (12 chains of 8 lanes, 16 of 16 with AVX-512, 12 of 4 for baseline
/// x86-64, where a multiply and an add stand in for the FMA). Returns a value derived from every
/// chain, so that none is optimised away. Call only the variant the CPU supports.
float ff_fma_probe8(long rounds);
float ff_fma_probe16(long rounds);
float ff_fma_probe4(long rounds);
#else
static inline unsigned ff_flush_denormals(void) { return 0; }
static inline void ff_restore_fp_mode(unsigned old) { (void)old; }
#endif

#endif
