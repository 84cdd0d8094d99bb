// A plain fused Fourier attention kernel in C, forward and backward, written only to compare our
// Swift kernel against (launch/bench-speed.sh builds and runs it; nothing in the trainer uses it).
// It is what a careful C programmer writes from shared/fourierformer.md without our tricks: per
// query row, loops over keys that the compiler vectorises (keys transposed to (D, T) so that a
// dimension of consecutive keys is contiguous), sin and cos of u = R (q − k) for every pair and
// dimension by a polynomial (no sin/cos tables), sinc = sin u / u by a division with its series
// near 0, W = Y^p, row normalisation, and the backward through psi = cot u − 1/u (series near 0).
// No -ffast-math: the sums that vectorise across keys are marked `omp simd reduction`, so they
// are reassociated as ours are and nothing else is; its accuracy is printed beside its speed.
// -fno-trapping-math changes no result (nothing here reads the floating-point exception flags):
// it lets the compiler evaluate both sides of the series-or-closed-form selects, without which
// none of the per-pair loops vectorises.
//
//   cc -O3 -march=native -fno-trapping-math -fopenmp-simd fourier_compare.c -lm -o fourier_compare
//   ./fourier_compare --batch 8 --heads 8 --seq 256 --dim 16 [--repeats 3] [--noncausal] [--tables]
// prints one JSON line.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// sin and cos of x: reduction by k π/2 (π/2 in three parts, Cody–Waite), Taylor polynomials on
// [−π/4, π/4], quadrant swaps; absolute error ~2e-7 for |x| < 1e4.
static inline void sin_cos(float x, float *s, float *c) {
    const float magic = 12582912.0f;    // 1.5 · 2^23: adding and subtracting it rounds to an integer
    float k = (x * 0.636619772f + magic) - magic;
    float r = x - k * 1.5703125f;
    r = r - k * 4.83751297e-4f;
    r = r - k * 7.54978995e-8f;
    float r2 = r * r;
    float ps = r + r * r2 * (-1.0f / 6 + r2 * (1.0f / 120 + r2 * (-1.0f / 5040 + r2 / 362880)));
    float pc = 1 + r2 * (-0.5f + r2 * (1.0f / 24 + r2 * (-1.0f / 720 + r2 * (1.0f / 40320))));
    int q = (int)k & 3;
    float sv = (q & 1) ? pc : ps, cv = (q & 1) ? ps : pc;
    *s = (q & 2) ? -sv : sv;
    *c = ((q + 1) & 2) ? -cv : cv;              // q = 1 or 2
}

// sin u / u; below |u| = 0.3 its series (the division of two small numbers loses digits there
// only through sin's absolute error, but the series costs less and is exact to 3e-9).
static inline float sinc_from(float u, float s) {
    float u2 = u * u;
    float series = 1 + u2 * (-1.0f / 6 + u2 * (1.0f / 120 + u2 * (-1.0f / 5040)));
    // Divided on every lane (by 1 on the series lanes), so that the loop has no branch to vectorise.
    float ratio = s / (u2 < 0.09f ? 1.0f : u);
    return u2 < 0.09f ? series : ratio;
}

// psi(u) = cot u − 1/u = (u cos u − sin u) / (u sin u); its series below |u| = 0.3, where the
// closed form cancels.
static inline float psi_from(float u, float s, float c) {
    float u2 = u * u;
    float series = -u * (1.0f / 3 + u2 * (1.0f / 45 + u2 * (2.0f / 945)));
    float closed = (u * c - s) / (u2 < 0.09f ? 1.0f : u * s);
    return u2 < 0.09f ? series : closed;
}

static inline float sinc_of(float u) {
    float s, c;
    sin_cos(u, &s, &c);
    return sinc_from(u, s);
}

static inline float psi_of(float u) {
    float s, c;
    sin_cos(u, &s, &c);
    return psi_from(u, s, c);
}

// Shapes: q, k, v, g, o, dq, dk, dv of one head are (T, D) row-major; kT, vT, dkT, dvT (D, T).
// With --tables (the trick of shared/fourierformer.md section 6), sin and cos of u come from
// per-token tables by sin(a − b) = sin a cos b − cos a sin b: sq, cq (T, D) of R q, skT, ckT
// (D, T) of R k, filled per head (inside the timed region); else NULL.
typedef struct {
    int T, D, p, causal;
    float eps;
    const float *r;                      // (D)
    float *y, *a, *G;                    // (T) per-row scratch
    float *sq, *cq, *skT, *ckT;
} Head;

static void fill_tables(const Head *h, const float *q, const float *kT) {
    for (long x = 0; x < (long)h->T * h->D; x++) {
        int d = (int)(x % h->D), dk = (int)(x / h->T);
        sin_cos(h->r[d] * q[x], &h->sq[x], &h->cq[x]);
        sin_cos(h->r[dk] * kT[x], &h->skT[x], &h->ckT[x]);
    }
}

// W_ij for keys j < n of row i into h->y.
static void row_weights(const Head *h, const float *q, int i, const float *kT, int n) {
    for (int j = 0; j < n; j++) h->y[j] = 1;
    for (int d = 0; d < h->D; d++) {
        const long id = (long)i * h->D + d;
        const float rd = h->r[d], qd = q[id], *kd = kT + (long)d * h->T;
        if (h->sq) {
            const float sqd = h->sq[id], cqd = h->cq[id];
            const float *skd = h->skT + (long)d * h->T, *ckd = h->ckT + (long)d * h->T;
            for (int j = 0; j < n; j++) h->y[j] *= sinc_from(rd * (qd - kd[j]), sqd * ckd[j] - cqd * skd[j]);
        } else {
            for (int j = 0; j < n; j++) h->y[j] *= sinc_of(rd * (qd - kd[j]));
        }
    }
    for (int j = 0; j < n; j++) {
        float w = h->y[j] * h->y[j];
        for (int e = 2; e < h->p; e += 2) w *= h->y[j] * h->y[j];
        h->y[j] = w;
    }
}

static void head_forward(const Head *h, const float *q, const float *kT, const float *v, float *o,
                         float *S) {
    const int T = h->T, D = h->D;
    for (int i = 0; i < T; i++) {
        int n = h->causal ? i + 1 : T;
        row_weights(h, q, i, kT, n);
        float sum = 0, *oi = o + (long)i * D;
        #pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; j++) sum += h->y[j];
        for (int e = 0; e < D; e++) oi[e] = 0;
        for (int j = 0; j < n; j++)
            for (int e = 0; e < D; e++) oi[e] += h->y[j] * v[(long)j * D + e];
        S[i] = sum + h->eps;
        float inv = S[i] > 0 ? 1 / S[i] : 0;
        for (int e = 0; e < D; e++) oi[e] *= inv;
    }
}

// Accumulates dq, dkT, dvT and dR_d (fp64) of one head.
static void head_backward(const Head *h, const float *q, const float *kT, const float *vT,
                          const float *g, const float *o, const float *S, float *dq, float *dkT,
                          float *dvT, double *dR) {
    const int T = h->T, D = h->D;
    for (int i = 0; i < T; i++) {
        int n = h->causal ? i + 1 : T;
        const float *qi = q + (long)i * D, *gi = g + (long)i * D;
        row_weights(h, q, i, kT, n);
        float c = 0, inv = 1 / S[i];
        for (int e = 0; e < D; e++) c += gi[e] * o[(long)i * D + e];
        for (int j = 0; j < n; j++) { h->a[j] = h->y[j] * inv; h->G[j] = 0; }
        for (int e = 0; e < D; e++) {
            const float ge = gi[e], *ve = vT + (long)e * T;
            float *dve = dvT + (long)e * T;
            for (int j = 0; j < n; j++) { h->G[j] += ge * ve[j]; dve[j] += h->a[j] * ge; }
        }
        for (int j = 0; j < n; j++) h->G[j] = (float)h->p * h->a[j] * (h->G[j] - c);   // now z_ij
        for (int d = 0; d < D; d++) {
            const float rd = h->r[d], qd = qi[d], *kd = kT + (long)d * T;
            float *dkd = dkT + (long)d * T, dqd = 0, dRd = 0;
            const float *skd = h->sq ? h->skT + (long)d * T : kd, *ckd = h->sq ? h->ckT + (long)d * T : kd;
            const float sqd = h->sq ? h->sq[(long)i * D + d] : 0, cqd = h->sq ? h->cq[(long)i * D + d] : 0;
            if (h->sq) {
                #pragma omp simd reduction(+ : dqd, dRd)
                for (int j = 0; j < n; j++) {
                    float delta = qd - kd[j], z = h->G[j];
                    float s = sqd * ckd[j] - cqd * skd[j], cu = cqd * ckd[j] + sqd * skd[j];
                    float t = z * psi_from(rd * delta, s, cu);
                    t = z == 0 ? 0 : t;                         // W = 0 where sin u = 0, psi inf
                    dkd[j] -= rd * t;
                    dqd += t;
                    dRd += t * delta;
                }
            } else {
                #pragma omp simd reduction(+ : dqd, dRd)
                for (int j = 0; j < n; j++) {
                    float delta = qd - kd[j], z = h->G[j];
                    float t = z * psi_of(rd * delta);
                    t = z == 0 ? 0 : t;
                    dkd[j] -= rd * t;
                    dqd += t;
                    dRd += t * delta;
                }
            }
            dq[(long)i * D + d] += rd * dqd;
            dR[d] += dRd;
        }
    }
}

static unsigned long long rng_state = 1;
static double uniform01(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static float normal(float std) {
    return (float)(std * sqrt(-2 * log(uniform01())) * cos(6.283185307179586 * uniform01()));
}
static double seconds(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
static void transpose(const float *x, float *xT, int T, int D) {
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) xT[(long)d * T + t] = x[(long)t * D + d];
}

static double median(double *x, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (x[j] < x[i]) { double t = x[i]; x[i] = x[j]; x[j] = t; }
    return x[n / 2];
}

// Worst relative error (max |got − ref| / max |ref|) of O, dq, dk, dv against a plain fp64
// evaluation on one small head: the accuracy that goes with the speed.
static double rel(const float *got, const double *ref, int n) {
    double num = 0, den = 1e-30;
    for (int i = 0; i < n; i++) {
        num = fmax(num, fabs(got[i] - ref[i]));
        den = fmax(den, fabs(ref[i]));
    }
    return num / den;
}

static double accuracy(int D, int causal, int tables) {
    enum { T = 48 };
    float q[T * 64] = {0}, k[T * 64] = {0}, v[T * 64] = {0}, g[T * 64] = {0}, kT[T * 64] = {0};
    float vT[T * 64] = {0}, o[T * 64], S[T], sq[T * 64], cq[T * 64], skT[T * 64], ckT[T * 64];
    float dq[T * 64] = {0}, dkT[T * 64] = {0}, dvT[T * 64] = {0}, dk[T * 64], dv[T * 64];
    float y[T], a[T], G[T], r[64];
    double dR[64] = {0};
    for (int i = 0; i < T * D; i++) {
        q[i] = normal(0.25f); k[i] = normal(0.25f); v[i] = normal(1); g[i] = normal(1);
    }
    for (int d = 0; d < D; d++) r[d] = 2;
    transpose(k, kT, T, D); transpose(v, vT, T, D);
    Head h = {T, D, 4, causal, 1e-6f, r, y, a, G, NULL, NULL, NULL, NULL};
    if (tables) {
        h.sq = sq; h.cq = cq; h.skT = skT; h.ckT = ckT;
        fill_tables(&h, q, kT);
    }
    head_forward(&h, q, kT, v, o, S);
    head_backward(&h, q, kT, vT, g, o, S, dq, dkT, dvT, dR);
    transpose(dkT, dk, D, T); transpose(dvT, dv, D, T);
    static double W[T][T], A[T][T], ro[T * 64], rdq[T * 64], rdk[T * 64], rdv[T * 64];
    memset(ro, 0, sizeof ro); memset(rdq, 0, sizeof rdq);
    memset(rdk, 0, sizeof rdk); memset(rdv, 0, sizeof rdv);
    for (int i = 0; i < T; i++) {
        double s = 1e-6;
        for (int j = 0; j < T; j++) {
            double w = 0;
            if (!(causal && j > i)) {
                double yy = 1;
                for (int d = 0; d < D; d++) {
                    double u = 2.0 * ((double)q[i * D + d] - k[j * D + d]);
                    yy *= u == 0 ? 1 : sin(u) / u;
                }
                w = yy * yy * yy * yy;
            }
            W[i][j] = w; s += w;
        }
        for (int j = 0; j < T; j++) {
            A[i][j] = W[i][j] / s;
            for (int e = 0; e < D; e++) ro[i * D + e] += A[i][j] * v[j * D + e];
        }
    }
    for (int i = 0; i < T; i++) {
        double c = 0;
        for (int e = 0; e < D; e++) c += g[i * D + e] * ro[i * D + e];
        for (int j = 0; j < T; j++) {
            if (A[i][j] == 0) continue;
            double G2 = 0;
            for (int e = 0; e < D; e++) {
                G2 += g[i * D + e] * (double)v[j * D + e];
                rdv[j * D + e] += A[i][j] * g[i * D + e];
            }
            double z = 4 * A[i][j] * (G2 - c);
            for (int d = 0; d < D; d++) {
                double u = 2.0 * ((double)q[i * D + d] - k[j * D + d]);
                double ps = fabs(u) < 1e-2 ? -u / 3 - u * u * u / 45 : cos(u) / sin(u) - 1 / u;
                rdq[i * D + d] += z * 2 * ps; rdk[j * D + d] -= z * 2 * ps;
            }
        }
    }
    double e = fmax(rel(o, ro, T * D), rel(dq, rdq, T * D));
    e = fmax(e, fmax(rel(dk, rdk, T * D), rel(dv, rdv, T * D)));
    return e;
}

int main(int argc, char **argv) {
    int B = 8, H = 8, T = 256, D = 16, repeats = 3, causal = 1, tables = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--noncausal")) { causal = 0; continue; }
        if (!strcmp(argv[i], "--tables")) { tables = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "%s needs a value\n", argv[i]); return 2; }
        int value = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--batch")) B = value;
        else if (!strcmp(argv[i], "--heads")) H = value;
        else if (!strcmp(argv[i], "--seq")) T = value;
        else if (!strcmp(argv[i], "--dim")) D = value;
        else if (!strcmp(argv[i], "--repeats")) repeats = value;
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
        i++;
    }
    if (D < 1 || D > 64 || T < 1 || B < 1 || H < 1 || repeats < 1) { fprintf(stderr, "bad shape\n"); return 2; }
    long n = (long)B * H * T * D;
    float *q = malloc(n * 4), *kT = malloc(n * 4), *v = malloc(n * 4), *vT = malloc(n * 4);
    float *g = malloc(n * 4), *o = malloc(n * 4), *S = malloc((long)B * H * T * 4), *k = malloc(n * 4);
    float *dq = calloc(n, 4), *dkT = calloc(n, 4), *dvT = calloc(n, 4);
    float *y = malloc(T * 4), *a = malloc(T * 4), *G = malloc(T * 4);
    float r[64];
    double dR[64] = {0};
    for (long i = 0; i < n; i++) {
        q[i] = normal(0.25f); k[i] = normal(0.25f); v[i] = normal(1); g[i] = normal(1);
    }
    for (long x = 0; x < (long)B * H; x++) {
        transpose(k + x * T * D, kT + x * T * D, T, D);
        transpose(v + x * T * D, vT + x * T * D, T, D);
    }
    for (int d = 0; d < D; d++) r[d] = 2;
    Head h = {T, D, 4, causal, 1e-6f, r, y, a, G, NULL, NULL, NULL, NULL};
    if (tables) {
        h.sq = malloc((long)T * D * 4); h.cq = malloc((long)T * D * 4);
        h.skT = malloc((long)T * D * 4); h.ckT = malloc((long)T * D * 4);
    }
    // Wall and CPU time of each timed run (a first run warms up); their medians. CPU time is what
    // counts on a shared machine, as for `swift-ff-train bench attention`.
    double wall[64], cpu[64];
    if (repeats > 64) repeats = 64;
    for (int rep = -1; rep < repeats; rep++) {
        double t0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
        for (long x = 0; x < (long)B * H; x++) {
            long off = x * T * D;
            if (tables) fill_tables(&h, q + off, kT + off);
            head_forward(&h, q + off, kT + off, v + off, o + off, S + x * T);
            head_backward(&h, q + off, kT + off, vT + off, g + off, o + off, S + x * T,
                          dq + off, dkT + off, dvT + off, dR);
        }
        if (rep >= 0) {
            wall[rep] = seconds(CLOCK_MONOTONIC) - t0;
            cpu[rep] = seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
    }
    double tw = median(wall, repeats), tc = median(cpu, repeats);
    double pairs = (double)B * H * (causal ? (double)T * (T + 1) / 2 : (double)T * T);
    double check = 0;
    for (int d = 0; d < D; d++) check += dR[d];
    printf("{\"kernel\":\"%s\",\"batch\":%d,\"heads\":%d,\"seq\":%d,\"dim\":%d,\"causal\":%s,"
           "\"seconds_fwd_bwd\":%.6f,\"pair_dims_per_s\":%.4g,\"cpu_seconds_fwd_bwd\":%.6f,"
           "\"pair_dims_per_cpu_s\":%.4g,\"max_rel_err_vs_fp64\":%.2g,\"dR_finite\":%s}\n",
           tables ? "c-plain-tables" : "c-plain", B, H, T, D, causal ? "true" : "false",
           tw, pairs * D / tw, tc, pairs * D / tc,
           accuracy(D, causal, tables), isfinite(check) ? "true" : "false");
    return 0;
}
