import FFTestSupport
import XCTest
@testable import FFKernels

/// Each layer's backward against central finite differences of its forward (loss = Σ out * g).
final class LayerTests: XCTestCase {
    /// Central differences of `loss` with respect to every entry of `x` (fp32 steps, Double loss).
    func numericGradient(_ x: inout [Float], h: Float = 1e-2, _ loss: ([Float]) -> Double) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for i in 0..<x.count {
            let old = x[i]
            x[i] = old + h; let lp = loss(x)
            x[i] = old - h; let lm = loss(x)
            x[i] = old
            out[i] = (lp - lm) / Double(2 * h)
        }
        return out
    }

    func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

    func testLinearBackward() {
        var rng = TestRNG(1)
        let M = 5, K = 7, N = 3
        var x = rng.normals(M * K), w = rng.normals(N * K), b = rng.normals(N)
        let g = rng.normals(M * N)
        func fwd(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: M * N)
            linearForward(&y, x, w, b, M: M, K: K, N: N)
            return dot(y, g)
        }
        var dx = [Float](repeating: 0, count: M * K), dw = [Float](repeating: 0, count: N * K),
            db = [Float](repeating: 0, count: N)
        linearBackward(dinp: &dx, dweight: &dw, dbias: &db, dout: g, inp: x, weight: w, M: M, K: K, N: N)
        let (x0, w0, b0) = (x, w, b)
        XCTAssertLessThan(relErr(dx.map(Double.init), numericGradient(&x) { fwd($0, w0, b0) }), 1e-3)
        XCTAssertLessThan(relErr(dw.map(Double.init), numericGradient(&w) { fwd(x0, $0, b0) }), 1e-3)
        XCTAssertLessThan(relErr(db.map(Double.init), numericGradient(&b) { fwd(x0, w0, $0) }), 1e-3)
    }

    func testLayerNormBackward() {
        var rng = TestRNG(2)
        let M = 4, C = 9
        var x = rng.normals(M * C, std: 2), w = rng.normals(C), b = rng.normals(C)
        let g = rng.normals(M * C)
        func fwd(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: M * C), mean = [Float](repeating: 0, count: M), rstd = mean
            layerNormForward(&y, mean: &mean, rstd: &rstd, x, weight: w, bias: b, M: M, C: C)
            return dot(y, g)
        }
        var y = [Float](repeating: 0, count: M * C), mean = [Float](repeating: 0, count: M), rstd = mean
        layerNormForward(&y, mean: &mean, rstd: &rstd, x, weight: w, bias: b, M: M, C: C)
        var dx = [Float](repeating: 0, count: M * C), dw = [Float](repeating: 0, count: C), db = dw
        layerNormBackward(dx: &dx, dweight: &dw, dbias: &db, dy: g, x: x, weight: w, mean: mean, rstd: rstd, M: M, C: C)
        let (x0, w0, b0) = (x, w, b)
        XCTAssertLessThan(relErr(dx.map(Double.init), numericGradient(&x, h: 1e-3) { fwd($0, w0, b0) }), 3e-3)
        XCTAssertLessThan(relErr(dw.map(Double.init), numericGradient(&w) { fwd(x0, $0, b0) }), 1e-3)
        XCTAssertLessThan(relErr(db.map(Double.init), numericGradient(&b) { fwd(x0, w0, $0) }), 1e-3)
    }

    func testActivationBackward() {
        for kind in Activation.allCases {
            var rng = TestRNG(3)
            // Keep ReLU inputs away from the kink at 0, where differences are meaningless.
            var x = rng.normals(50).map { abs($0) < 0.05 ? $0 + 0.2 : $0 }
            let g = rng.normals(50)
            var dx = [Float](repeating: 0, count: 50)
            activationBackward(kind, dx: &dx, dy: g, x: x, count: 50)
            let fd = numericGradient(&x, h: 1e-3) { x in
                var y = [Float](repeating: 0, count: 50)
                activationForward(kind, &y, x, count: 50)
                return dot(y, g)
            }
            XCTAssertLessThan(relErr(dx.map(Double.init), fd), 2e-3, "\(kind)")
        }
    }

    func testCrossEntropyValueAndBackward() {
        var rng = TestRNG(4)
        let M = 3, V = 21  // V not a multiple of 8: exercises the scalar tail
        var logits = rng.normals(M * V, std: 3)
        let targets: [Int32] = [4, -1, 20]
        var rowLoss = [Double](repeating: 0, count: M)
        func loss(_ l: [Float]) -> Double {
            var c = l
            return crossEntropy(logits: &c, targets: targets, M: M, V: V, dscale: nil, rowLoss: &rowLoss)
        }
        // Value against a direct Double computation.
        var expected = 0.0
        for m in [0, 2] {
            let row = logits[(m * V)..<((m + 1) * V)].map(Double.init)
            let mx = row.max()!
            expected += mx + log(row.map { exp($0 - mx) }.reduce(0, +)) - row[Int(targets[m])]
        }
        XCTAssertEqual(loss(logits), expected, accuracy: 1e-4 * abs(expected))
        var grad = logits
        _ = crossEntropy(logits: &grad, targets: targets, M: M, V: V, dscale: 0.5, rowLoss: &rowLoss, threads: 2)
        let fd = numericGradient(&logits, h: 1e-2) { 0.5 * loss($0) }
        XCTAssertLessThan(relErr(grad.map(Double.init), fd), 1e-3)
        XCTAssertTrue(grad[V..<(2 * V)].allSatisfy { $0 == 0 }, "ignored row must get no gradient")
    }

    func testSoftCrossEntropyValueAndBackward() {
        var rng = TestRNG(7)
        let M = 3, V = 13
        var logits = rng.normals(M * V, std: 2)
        // Row 0: one-hot; row 1: smoothed; row 2: a mixup of two smoothed labels.
        var y = [Float](repeating: 0, count: M * V)
        y[4] = 1
        for v in 0..<V { y[V + v] = 0.1 / Float(V); y[2 * V + v] = 0.1 / Float(V) }
        y[V + 7] += 0.9
        y[2 * V + 2] += 0.9 * 0.3; y[2 * V + 11] += 0.9 * 0.7
        var rowLoss = [Double](repeating: 0, count: M)
        func loss(_ l: [Float]) -> Double { softTargetLoss(logits: l, targets: y, M: M, V: V, rowLoss: &rowLoss) }
        // A one-hot row equals the hard-label cross-entropy.
        var hard = Array(logits[0..<V])
        let hardLoss = crossEntropy(logits: &hard, targets: [4], M: 1, V: V, dscale: nil, rowLoss: &rowLoss)
        _ = loss(logits)
        XCTAssertEqual(rowLoss[0], hardLoss, accuracy: 1e-5 * hardLoss)
        var grad = logits
        let fused = softCrossEntropy(logits: &grad, targets: y, M: M, V: V, dscale: 0.5, rowLoss: &rowLoss)
        XCTAssertEqual(fused, loss(logits), accuracy: 1e-5 * fused)
        let fd = numericGradient(&logits, h: 1e-2) { 0.5 * loss($0) }
        XCTAssertLessThan(relErr(grad.map(Double.init), fd), 1e-3)
    }

    func testFastExpAccuracy() {
        var worst: Float = 0
        var x: Float = -87
        while x <= 0 {
            let v = fastExp(SIMD8<Float>(repeating: x))[0]
            worst = max(worst, abs(v - expf(x)) / expf(x))
            x += 0.01
        }
        XCTAssertLessThan(worst, 5e-6)
        XCTAssertEqual(fastExp(SIMD8<Float>(repeating: -200))[3], 0)
    }

    func testFastTanhAccuracy() {
        var worst: Float = 0
        var x: Float = -12
        while x <= 12 {
            let v = fastTanh(SIMD8<Float>(repeating: x))[5]
            worst = max(worst, abs(v - tanhf(x)))
            x += 0.003
        }
        XCTAssertLessThan(worst, 1e-6)
    }
}
