import FFTestSupport
import XCTest
@testable import FFKernels

/// The fused output layer (logits GEMM + cross-entropy + both gradients, by row blocks) against the
/// unfused layer that materialises every logit, and against finite differences.
final class LinearCrossEntropyTests: XCTestCase {
    let M = 13, K = 6, V = 19  // V not a multiple of 8, M not a multiple of the block sizes below
    var rng = TestRNG(21)
    lazy var x = rng.normals(M * K)
    lazy var w = rng.normals(V * K, std: 0.7)
    lazy var targets: [Int32] = (0..<M).map { $0 == 4 ? -1 : Int32(($0 * 7 + 3) % V) }

    /// (loss, dx, dw) of the fused layer with blocks of `chunk` rows; dx and dw start at `start`.
    func fused(chunk: Int, scale: Float?, threads: Int = 1, start: Float = 0) -> (Double, [Float], [Float]) {
        var dx = [Float](repeating: start, count: M * K), dw = [Float](repeating: start, count: V * K)
        var scratch = [Float](repeating: .nan, count: chunk * V), rowLoss = [Double](repeating: .nan, count: M)
        let loss = dx.withUnsafeMutableBufferPointer { dxp in
            dw.withUnsafeMutableBufferPointer { dwp in
                let g = scale.map {
                    LinearCrossEntropyGradient(scale: $0, dx: dxp.baseAddress!, dweight: dwp.baseAddress!)
                }
                return linearCrossEntropy(
                    x: x, weight: w, targets: targets, M: M, K: K, V: V, chunk: chunk,
                    scratch: &scratch, rowLoss: &rowLoss, gradient: g, threads: threads)
            }
        }
        return (loss, dx, dw)
    }

    /// The same through the unfused kernels: the whole (M,V) logits, then linearBackward.
    func unfused(scale: Float) -> (Double, [Float], [Float]) {
        var logits = [Float](repeating: 0, count: M * V), rowLoss = [Double](repeating: 0, count: M)
        linearForward(&logits, x, w, nil, M: M, K: K, N: V)
        let loss = crossEntropy(logits: &logits, targets: targets, M: M, V: V, dscale: scale, rowLoss: &rowLoss)
        var dx = [Float](repeating: 0, count: M * K), dw = [Float](repeating: 0, count: V * K)
        linearBackward(dinp: &dx, dweight: &dw, dbias: nil, dout: logits, inp: x, weight: w, M: M, K: K, N: V)
        return (loss, dx, dw)
    }

    func testEqualsUnfusedForEveryBlockSize() {
        let (loss, dx, dw) = unfused(scale: 0.25)
        for chunk in [1, 4, 5, M - 1, M, 64] {
            for threads in [1, 2] {
                let (l, fdx, fdw) = fused(chunk: chunk, scale: 0.25, threads: threads)
                XCTAssertEqual(l, loss, accuracy: 1e-6 * loss, "chunk \(chunk)")
                XCTAssertLessThan(relErr(fdx.map(Double.init), dx.map(Double.init)), 1e-5, "dx, chunk \(chunk)")
                XCTAssertLessThan(relErr(fdw.map(Double.init), dw.map(Double.init)), 1e-5, "dw, chunk \(chunk)")
            }
        }
    }

    func testGradientsAccumulateAndIgnoredRowsGetNone() {
        let (_, dx, dw) = fused(chunk: 5, scale: 0.5)
        let (_, dx1, dw1) = fused(chunk: 5, scale: 0.5, start: 1)
        for (a, b) in zip(dx1 + dw1, dx + dw) { XCTAssertEqual(a, b + 1, accuracy: 1e-6) }
        XCTAssertTrue(dx[(4 * K)..<(5 * K)].allSatisfy { $0 == 0 }, "row 4 has no target")
    }

    func testEvaluationLeavesGradientsAloneAndMatchesTraining() {
        let (evalLoss, dx, dw) = fused(chunk: 4, scale: nil)
        XCTAssertEqual(evalLoss, fused(chunk: 4, scale: 1).0, accuracy: 1e-9 * evalLoss)
        XCTAssertTrue(dx.allSatisfy { $0 == 0 } && dw.allSatisfy { $0 == 0 })
    }

    func testGradientsMatchFiniteDifferences() {
        let (_, dx, dw) = fused(chunk: 5, scale: 0.5)
        func loss() -> Double { 0.5 * fused(chunk: 5, scale: nil).0 }
        /// Central differences of the loss in every element of `a` (one of the inputs `loss` reads).
        func centralDifferences(_ a: ReferenceWritableKeyPath<LinearCrossEntropyTests, [Float]>) -> [Double] {
            self[keyPath: a].indices.map { i in
                let old = self[keyPath: a][i]
                self[keyPath: a][i] = old + 1e-2; let lp = loss()
                self[keyPath: a][i] = old - 1e-2; let lm = loss()
                self[keyPath: a][i] = old
                return (lp - lm) / 2e-2
            }
        }
        let fdx = centralDifferences(\.x), fdw = centralDifferences(\.w)
        XCTAssertLessThan(relErr(dx.map(Double.init), fdx), 2e-3)
        XCTAssertLessThan(relErr(dw.map(Double.init), fdw), 2e-3)
    }

    func testBlockRowsStayWithinBudgetAndBounds() {
        XCTAssertEqual(crossEntropyChunkRows(rows: 2048, vocabulary: 13_000), 160)
        XCTAssertEqual(crossEntropyChunkRows(rows: 2048, vocabulary: 267_735), 64)
        XCTAssertEqual(crossEntropyChunkRows(rows: 12, vocabulary: 11), 12)
        XCTAssertEqual(crossEntropyChunkRows(rows: 2048, vocabulary: 100), 2048)
    }
}
