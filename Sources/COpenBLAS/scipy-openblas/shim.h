// The OpenBLAS of the PyPI wheel scipy-openblas32 (FF_BLAS=scipy-openblas swift build): every
// symbol carries the prefix scipy_, so that it can sit next to another BLAS in one process. Swift
// imports no function-like macros, hence inline wrappers under the usual cblas names. The wheel's
// own header is not included: its directory is known only to Python, while these few
// declarations are the stable CBLAS ABI.
#ifndef FF_SCIPY_OPENBLAS_SHIM_H
#define FF_SCIPY_OPENBLAS_SHIM_H

typedef enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 } CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 } CBLAS_TRANSPOSE;

void scipy_cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE transA,
                       const enum CBLAS_TRANSPOSE transB, const int M, const int N, const int K,
                       const float alpha, const float *A, const int lda, const float *B, const int ldb,
                       const float beta, float *C, const int ldc);
void scipy_openblas_set_num_threads(int threads);
int scipy_openblas_get_num_threads(void);
char *scipy_openblas_get_corename(void);
char *scipy_openblas_get_config(void);

static inline void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE transA,
                               const enum CBLAS_TRANSPOSE transB, const int M, const int N, const int K,
                               const float alpha, const float *A, const int lda, const float *B, const int ldb,
                               const float beta, float *C, const int ldc) {
    scipy_cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static inline void openblas_set_num_threads(int threads) { scipy_openblas_set_num_threads(threads); }
static inline int openblas_get_num_threads(void) { return scipy_openblas_get_num_threads(); }
static inline char *openblas_get_corename(void) { return scipy_openblas_get_corename(); }
static inline char *openblas_get_config(void) { return scipy_openblas_get_config(); }

#endif
