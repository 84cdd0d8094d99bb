/// Gradient outputs of `linearCrossEntropy`, accumulated (+=) like every backward here.
public struct LinearCrossEntropyGradient {
    /// The loss is multiplied by this before differentiating (1 / tokens of the step, say).
    public var scale: Float
    /// d input (M,K), accumulated.
    public var dx: UnsafeMutablePointer<Float>
    /// d weight (V,K), accumulated.
    public var dweight: UnsafeMutablePointer<Float>

    public init(scale: Float, dx: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>) {
        self.scale = scale
        self.dx = dx
        self.dweight = dweight
    }
}

/// The output layer and its loss in one pass over row blocks: logits = x(M,K) · weight(V,K)ᵀ,
/// softmax cross-entropy against targets(M) (a target < 0 is ignored), and, with `gradient`, the
/// gradient of `scale · loss` for x and weight, all `chunk` rows at a time through
/// `scratch` (chunk,V).
///
/// No (M,V) matrix exists at any time: each block's logits become its dlogits in place and are
/// consumed by the two gradient GEMMs at once. Done in the forward pass, this costs no more
/// arithmetic than the unfused layer (a backward on its own would have to recompute the logits).
/// Returns the summed loss in nats; `rowLoss` (M) receives the per-row losses, summed in row
/// order, so `chunk` and `threads` reach the result only through the products' rounding.
public func linearCrossEntropy(
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
    M: Int, K: Int, V: Int, chunk: Int, scratch: UnsafeMutablePointer<Float>,
    rowLoss: UnsafeMutablePointer<Double>, gradient: LinearCrossEntropyGradient?,
    threads: Int = 1
) -> Double {
    precondition(chunk > 0, "chunk must be positive")
    var start = 0
    while start < M {
        let rows = min(chunk, M - start)
        let xs = x + start * K
        sgemm(
            threads: threads, transA: false, transB: true, M: rows, N: V, K: K, alpha: 1, xs, lda: K, weight,
            ldb: K, beta: 0, scratch, ldc: V)
        _ = crossEntropy(
            logits: scratch, targets: targets + start, M: rows, V: V, dscale: gradient?.scale,
            rowLoss: rowLoss + start, threads: threads)
        if let g = gradient {
            // scratch now holds dlogits (rows,V).
            sgemm(
                threads: threads, transA: false, transB: false, M: rows, N: K, K: V, alpha: 1, scratch, lda: V,
                weight, ldb: K, beta: 1, g.dx + start * K, ldc: K)
            sgemm(
                threads: threads, transA: true, transB: false, M: V, N: K, K: rows, alpha: 1, scratch, lda: V, xs,
                ldb: K, beta: 1, g.dweight, ldc: K)
        }
        start += rows
    }
    var total = 0.0
    for m in 0..<M { total += rowLoss[m] }
    return total
}

/// Rows per block for `linearCrossEntropy`: about `budgetFloats` of logits (a block that stays in
/// the last-level cache between the GEMM that writes it and the two that read it), but at least
/// 64 rows, below which the weight-gradient GEMM (inner dimension = rows) runs slowly, and never
/// more than `rows`.
public func crossEntropyChunkRows(rows: Int, vocabulary V: Int, budgetFloats: Int = 1 << 21) -> Int {
    max(1, min(rows, max(64, budgetFloats / max(V, 1) / 16 * 16)))
}
