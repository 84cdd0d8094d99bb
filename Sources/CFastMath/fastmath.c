// Most of CFastMath is static inline in include/fastmath.h; the FMA probe lives here because it
// must stay a real call (its loop is timed as a whole).
#include "fastmath.h"

#if defined(__x86_64__)
// Each round updates every accumulator once: a = a * m + c with |m| < 1 keeps the values normal
// (no subnormal slow path) and bounded. 12 chains of 8 lanes (16 of 16 with AVX-512) cover the
// FMA latency of every core these builds target (4 cycles on 2 pipes needs 8 chains in flight),
// and still fit the register file beside m and c.
#define FF_PROBE_BODY(VEC, FMA, SET1, ADD, N)                                                      \
    VEC m = SET1(0.999999f), c = SET1(1e-7f), a[N];                                               \
    for (int i = 0; i < N; i++) a[i] = SET1(1.0f + (float)i);                                     \
    for (long r = 0; r < rounds; r++) {                                                            \
        for (int i = 0; i < N; i++) a[i] = FMA(a[i], m, c);                                        \
    }                                                                                              \
    VEC s = a[0];                                                                                  \
    for (int i = 1; i < N; i++) s = ADD(s, a[i]);                                                  \
    float out[sizeof(VEC) / 4];                                                                    \
    __builtin_memcpy(out, &s, sizeof out);                                                         \
    return out[0];

__attribute__((target("avx2,fma"), noinline))
float ff_fma_probe8(long rounds) {
    FF_PROBE_BODY(__m256, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_add_ps, 12)
}

__attribute__((target("avx512f"), noinline))
float ff_fma_probe16(long rounds) {
    FF_PROBE_BODY(__m512, _mm512_fmadd_ps, _mm512_set1_ps, _mm512_add_ps, 16)
}

// Baseline x86-64 has no FMA: a multiply and an add per lane stand in for one.
static inline __m128 ff_mul_add4(__m128 a, __m128 b, __m128 c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }

__attribute__((noinline))
float ff_fma_probe4(long rounds) {
    FF_PROBE_BODY(__m128, ff_mul_add4, _mm_set1_ps, _mm_add_ps, 12)
}
#endif
