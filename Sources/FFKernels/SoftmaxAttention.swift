import FFCore
import COpenBLAS
import Foundation

// Softmax attention per (batch, head) as GEMMs on strided views of qkv (leading dimension 3C, so
// nothing is copied): S = scale·QKᵀ, P = softmax(S) (causal mask), O = PV. Backward recomputes P
// from the saved log-sum-exp. Each worker holds two T x T scratch matrices: memory is O(T²) per
// worker, not per batch or head.

/// Per-worker T x T scratch for the softmax kernels.
final class SoftmaxScratch {
    let p: UnsafeMutablePointer<Float>, dp: UnsafeMutablePointer<Float>
    init(T: Int) {
        p = .allocate(capacity: T * T); p.initialize(repeating: 0, count: T * T)
        dp = .allocate(capacity: T * T); dp.initialize(repeating: 0, count: T * T)
    }
    deinit { p.deallocate(); dp.deallocate() }
}

@inline(__always)
private func gemm(
    _ ta: Bool, _ tb: Bool, _ M: Int, _ N: Int, _ K: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int
) {
    cblas_sgemm(
        CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
        Int32(M), Int32(N), Int32(K), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

extension AttentionKernels {
    /// P (T, T) = softmax over j of scale·q_i·k_j (j <= i when causal), from scores already in P;
    /// returns nothing, writes each row's log-sum-exp to `lse` when given, or uses it when `recompute`.
    private func softmaxRows(
        _ P: UnsafeMutablePointer<Float>, T: Int, causal: Bool,
        lse: UnsafeMutablePointer<Float>, recompute: Bool
    ) {
        for i in 0..<T {
            let row = P + i * T, n = causal ? i + 1 : T
            let mx = recompute ? lse[i] : rowMax(row, n)
            let sum = expShiftInPlace(row, n, mx)
            for j in n..<T { row[j] = 0 }
            if recompute { continue }  // exp(s - lse) is already the probability
            let inv = 1 / sum
            for j in 0..<n { row[j] *= inv }
            lse[i] = mx + logf(sum)
        }
    }

    /// Forward of causal/non-causal softmax attention with 1/sqrt(D) scaling.
    /// rowLSE (B, H, T) receives each row's log-sum-exp of the scaled scores.
    public func softmaxForward(
        out: UnsafeMutablePointer<Float>, rowLSE: UnsafeMutablePointer<Float>,
        qkv: UnsafePointer<Float>, shape s: AttentionShape
    ) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        let T = s.seq, C = s.width, D = s.headDim, ld = 3 * C
        let scale = 1 / Float(D).squareRoot()
        // Our workers each call sgemm on small matrices; BLAS threads would only oversubscribe.
        withOurWorkers {
            let scratch = softmaxScratch
            parallelTasks(s.batch * s.heads, threads: threads) { task, w in
                let b = task / s.heads, h = task % s.heads
                let P = scratch[w].p
                let q = qkv + b * T * ld + h * D, k = q + C, v = q + 2 * C
                gemm(false, true, T, T, D, scale, q, ld, k, ld, 0, P, T)
                softmaxRows(P, T: T, causal: s.causal, lse: rowLSE + task * T, recompute: false)
                gemm(false, false, T, D, T, 1, P, T, v, ld, 0, out + b * T * C + h * D, C)
            }
        }
    }

    /// Backward of softmax attention; accumulates into dqkv (B, T, 3C).
    public func softmaxBackward(
        dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
        out: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
        rowLSE: UnsafePointer<Float>, shape s: AttentionShape
    ) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        let T = s.seq, C = s.width, D = s.headDim, ld = 3 * C
        let scale = 1 / Float(D).squareRoot()
        // Our workers each call sgemm on small matrices; BLAS threads would only oversubscribe.
        withOurWorkers {
            let scratch = softmaxScratch
            parallelTasks(s.batch * s.heads, threads: threads) { task, w in
                let b = task / s.heads, h = task % s.heads
                let P = scratch[w].p, dP = scratch[w].dp
                let q = qkv + b * T * ld + h * D, k = q + C, v = q + 2 * C
                let dq = dqkv + b * T * ld + h * D, dk = dq + C, dv = dq + 2 * C
                let g = dout + b * T * C + h * D, o = out + b * T * C + h * D
                // P = exp(scale·QKᵀ - lse), recomputed.
                gemm(false, true, T, T, D, scale, q, ld, k, ld, 0, P, T)
                softmaxRows(
                    P, T: T, causal: s.causal, lse: UnsafeMutablePointer(mutating: rowLSE + task * T), recompute: true)
                gemm(true, false, T, D, T, 1, P, T, g, C, 1, dv, ld)  // dV += Pᵀ dO
                gemm(false, true, T, T, D, 1, g, C, v, ld, 0, dP, T)  // dP = dO Vᵀ
                for i in 0..<T {
                    var c: Float = 0
                    for d in 0..<D { c += g[i * C + d] * o[i * C + d] }
                    let pr = P + i * T, dr = dP + i * T
                    for j in 0..<T { dr[j] = pr[j] * (dr[j] - c) * scale }  // dS
                }
                gemm(false, false, T, D, T, 1, dP, T, k, ld, 1, dq, ld)  // dQ += dS K
                gemm(true, false, T, D, T, 1, dP, T, q, ld, 1, dk, ld)  // dK += dSᵀ Q
            }
        }
    }
}
