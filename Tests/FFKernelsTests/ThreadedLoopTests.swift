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
}
