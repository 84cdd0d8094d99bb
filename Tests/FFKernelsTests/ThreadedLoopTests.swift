import FFTestSupport
import XCTest
@testable import FFKernels

/// The loops between the matrix products split over threads give the same bits as one thread:
/// rows and elements are computed as in a serial loop, and sums over rows keep their order.
final class ThreadedLoopTests: XCTestCase {
    /// Shapes large enough that 2 and 3 workers really split the work (M·C ≥ 4096 per worker).
    func testLayerNormActivationAndBiasSumsAreBitIdenticalForAnyThreadCount() {
        var rng = TestRNG(7)
        let M = 1030, C = 40, N = 24
        let x = rng.normals(M * C), dy = rng.normals(M * C), w = rng.normals(C), b = rng.normals(C)
        let dout = rng.normals(M * N), inp = rng.normals(M * C), weight = rng.normals(N * C)
        func run(_ threads: Int) -> [[Float]] {
            var y = [Float](repeating: 0, count: M * C), mean = [Float](repeating: 0, count: M)
            var rstd = [Float](repeating: 0, count: M), dx = [Float](repeating: 0.5, count: M * C)
            var dw = [Float](repeating: 0.25, count: C), db = [Float](repeating: -0.25, count: C)
            layerNormForward(&y, mean: &mean, rstd: &rstd, x, weight: w, bias: b, M: M, C: C, threads: threads)
            layerNormBackward(
                dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: x, weight: w, mean: mean, rstd: rstd,
                M: M, C: C, threads: threads)
            var act = [Float](repeating: 0, count: M * C), dact = [Float](repeating: 0.1, count: M * C)
            activationForward(.gelu, &act, x, count: M * C - 3, threads: threads)
            activationBackward(.gelu, dx: &dact, dy: dy, x: x, count: M * C - 3, threads: threads)
            var dwl = [Float](repeating: 0, count: N * C), dbl = [Float](repeating: 0, count: N)
            linearBackward(
                dinp: nil, dweight: &dwl, dbias: &dbl, dout: dout, inp: inp, weight: weight,
                M: M, K: C, N: N, threads: threads)
            return [y, mean, rstd, dx, dw, db, act, dact, dbl]
        }
        let one = run(1)
        for threads in [2, 3] {
            let many = run(threads)
            for (i, (a, b)) in zip(one, many).enumerated() {
                XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "output \(i) with \(threads) threads")
            }
        }
    }

    /// sgemm split over workers by rows (M ≥ N) or columns (N > M) of C, for every transpose,
    /// with alpha and beta not 1 and 0, equals one call to rounding: OpenBLAS computes a block's
    /// edge rows with other kernels than full ones, so the split moves some last bits.
    func testSplitProductsMatchOneCallForAnyThreadCount() {
        var rng = TestRNG(11)
        for (M, N, K) in [(301, 70, 90), (45, 530, 64)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = rng.normals(M * K), b = rng.normals(K * N), c0 = rng.normals(M * N)
                func run(_ threads: Int) -> [Float] {
                    var c = c0
                    sgemm(
                        threads: threads, transA: ta, transB: tb, M: M, N: N, K: K, alpha: 0.75, a,
                        lda: ta ? M : K, b, ldb: tb ? K : N, beta: 0.5, &c, ldc: N)
                    return c
                }
                let one = run(1)
                for threads in [2, 3] {
                    XCTAssertLessThan(
                        relL2(run(threads), one), 1e-6, "M \(M) N \(N) transA \(ta) transB \(tb), \(threads) threads")
                }
            }
        }
    }

    /// The fused output layer with its products split over workers: loss and both gradients as on
    /// one thread, to rounding.
    func testFusedOutputLayerMatchesOneThreadForAnyThreadCount() {
        var rng = TestRNG(12)
        let M = 200, K = 48, V = 700
        let x = rng.normals(M * K), w = rng.normals(V * K)
        let targets = (0..<M).map { Int32($0 % 7 == 3 ? -1 : ($0 * 37) % V) }
        func run(_ threads: Int) -> (Double, [Float], [Float]) {
            var scratch = [Float](repeating: 0, count: 96 * V), rowLoss = [Double](repeating: 0, count: M)
            var dx = [Float](repeating: 0.125, count: M * K), dw = [Float](repeating: -0.5, count: V * K)
            let loss = dx.withUnsafeMutableBufferPointer { dxp in
                dw.withUnsafeMutableBufferPointer { dwp in
                    linearCrossEntropy(
                        x: x, weight: w, targets: targets, M: M, K: K, V: V, chunk: 96, scratch: &scratch,
                        rowLoss: &rowLoss,
                        gradient: LinearCrossEntropyGradient(
                            scale: 0.01, dx: dxp.baseAddress!, dweight: dwp.baseAddress!),
                        threads: threads)
                }
            }
            return (loss, dx, dw)
        }
        let one = run(1)
        for threads in [2, 3] {
            let many = run(threads)
            XCTAssertLessThan(abs(many.0 - one.0) / abs(one.0), 1e-6, "loss, \(threads) threads")
            XCTAssertLessThan(relL2(many.1, one.1), 1e-6, "dx, \(threads) threads")
            XCTAssertLessThan(relL2(many.2, one.2), 1e-6, "dweight, \(threads) threads")
        }
    }
}
