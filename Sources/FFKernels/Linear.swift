import COpenBLAS
import FFCore

// Shapes: M rows (tokens), K inputs, N outputs. Weights are stored [N, K] row-major, as
// PyTorch's nn.Linear stores them, so exported tensors need no transpose.

/// Rows of a product per worker below which it stays on one thread.
let linearGrain = 64

/// Runs `body` with OpenBLAS single-threaded, for products that our own workers split. OpenBLAS's
/// threads spin for a while after each call, waiting for the next one; with as many workers as
/// cores, that spinning takes a core from our workers in the loops between the products (and the
/// attention kernels), so a rank with 2 threads ran well below 2 ranks of 1. One pool of workers
/// for everything avoids it.
func withOurWorkers(_ body: () -> Void) {
    let before = openblas_get_num_threads()
    if before != 1 { openblas_set_num_threads(1) }
    body()
    if before != 1 { openblas_set_num_threads(before) }
}

/// out(M,N) = inp(M,K) · weight(N,K)ᵀ + bias(N), the rows split over `threads` workers, one
/// single-threaded product per piece (equal to one call to rounding: see `sgemm`).
public func linearForward(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
    _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
    M: Int, K: Int, N: Int, threads: Int
) {
    guard threads > 1, M >= 2 * linearGrain else {
        linearForward(out, inp, weight, bias, M: M, K: K, N: N)
        return
    }
    withOurWorkers {
        parallelChunks(M, threads: threads, grain: linearGrain) { r in
            linearForward(out + r.lowerBound * N, inp + r.lowerBound * K, weight, bias, M: r.count, K: K, N: N)
        }
    }
}

/// out(M,N) = inp(M,K) · weight(N,K)ᵀ + bias(N).
public func linearForward(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
    _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
    M: Int, K: Int, N: Int
) {
    if let bias {
        for m in 0..<M { (out + m * N).update(from: bias, count: N) }
    }
    cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(N), Int32(K),
        1, inp, Int32(K), weight, Int32(K), bias == nil ? 0 : 1, out, Int32(N))
}

/// Accumulates dinp(M,K) += dout·W, dweight(N,K) += doutᵀ·inp, dbias(N) += Σ_m dout.
/// `dinp` may be nil when the input needs no gradient. The bias sum is split over output columns
/// on `threads` workers, each column still summed over the rows in order (the same bits).
public func linearBackward(
    dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
    dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
    inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
    M: Int, K: Int, N: Int, threads: Int = 1
) {
    // dinp rows m0..<m1 (independent rows) and dweight rows n0..<n1 (each still a sum over all M
    // rows of dout in one product).
    func slice(_ m0: Int, _ m1: Int, _ n0: Int, _ n1: Int) {
        if let dinp, m1 > m0 {
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m1 - m0), Int32(K), Int32(N),
                1, dout + m0 * N, Int32(N), weight, Int32(K), 1, dinp + m0 * K, Int32(K))
        }
        if n1 > n0 {
            cblas_sgemm(
                CblasRowMajor, CblasTrans, CblasNoTrans, Int32(n1 - n0), Int32(K), Int32(M),
                1, dout + n0, Int32(N), inp, Int32(K), 1, dweight + n0 * K, Int32(K))
        }
    }
    if threads > 1 && M >= 2 * linearGrain && N >= 16 {
        withOurWorkers {
            parallelFor(threads, threads: threads) { w, _ in
                slice(w * M / threads, (w + 1) * M / threads, w * N / threads, (w + 1) * N / threads)
            }
        }
    } else {
        slice(0, M, 0, N)
    }
    if let dbias {
        parallelRanges(N, threads: M * N >= 4096 * threads ? threads : 1, grain: 8) { cols in
            for m in 0..<M {
                let row = dout + m * N
                for n in cols { dbias[n] += row[n] }
            }
        }
    }
}

/// Row-major sgemm: C(M,N) = alpha · op(A) · op(B) + beta · C. With `threads` > 1 and enough
/// work, C is cut into row or column blocks (whichever dimension is longer), one single-threaded
/// product per worker. The result equals one call's to rounding, not bit for bit: OpenBLAS
/// computes the edge rows of a block with other kernels than full ones. OpenBLAS's own threads
/// stay idle; their spinning between calls would take a core from our workers in the loops
/// between the products.
public func sgemm(
    threads: Int = 1, transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
    _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
    beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int
) {
    func block(_ rows: Range<Int>, _ cols: Range<Int>) {
        let a0 = a + rows.lowerBound * (transA ? 1 : lda), b0 = b + cols.lowerBound * (transB ? ldb : 1)
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            Int32(rows.count), Int32(cols.count), Int32(K), alpha, a0, Int32(lda), b0, Int32(ldb), beta,
            c + rows.lowerBound * ldc + cols.lowerBound, Int32(ldc))
    }
    // Below about 2^20 flops per worker a dispatch costs more than it saves.
    let workers = min(threads, (2 * M * N * K) >> 20)
    guard workers > 1, max(M, N) >= 32 * workers else {
        if M > 0 && N > 0 { block(0..<M, 0..<N) }
        return
    }
    let long = max(M, N), splitRows = M >= N
    withOurWorkers {
        parallelFor(workers, threads: workers) { w, _ in
            // Boundaries on multiples of 16 keep every block but the last on full vector widths.
            let lo = min(long, (w * long / workers + 8) / 16 * 16)
            let hi = w == workers - 1 ? long : min(long, ((w + 1) * long / workers + 8) / 16 * 16)
            guard hi > lo else { return }
            if splitRows { block(lo..<hi, 0..<N) } else { block(0..<M, lo..<hi) }
        }
    }
}

/// Sets the number of threads OpenBLAS uses in this process.
public func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }

/// The name of the kernel family OpenBLAS chose for this CPU (e.g. "SkylakeX", "Haswell").
public func blasCoreName() -> String {
    guard let p = openblas_get_corename() else { return "unknown" }
    return String(cString: p)
}
