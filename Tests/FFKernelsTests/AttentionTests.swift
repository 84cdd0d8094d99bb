import FFTestSupport
import XCTest
@testable import FFKernels

/// The fused kernels against the plain float64 reference, and against finite differences.
final class AttentionTests: XCTestCase {
    struct Case {
        var B = 2, T = 9, H = 2, D = 5; var causal = true; var mode = RMode.scalar; var scale = 0.3
        /// Added to every query and key entry of dimension d, times (d mod 3 − 1): a shared offset
        /// leaves u unchanged but makes Σ q·(…) and Σ k·(…) terms of dR large.
        var offset = 0.0
        var kernel = FourierKernel.fused
    }

    /// Runs the fused Fourier kernel and the reference on the same random data; returns the worst
    /// relative errors of (O, dq, dk, dv, dR).
    func compareFourier(_ c: Case, seed: UInt64 = 1, threads: Int = 2) -> [String: Double] {
        var rng = TestRNG(seed)
        let C = c.H * c.D
        var qkv = rng.normals(c.B * c.T * 3 * C, std: c.scale)
        for i in qkv.indices where i % (3 * C) < 2 * C { qkv[i] += Float(c.offset * Double(i % c.D % 3 - 1)) }
        let g = rng.normals(c.B * c.T * C)
        let nR = c.mode.count(heads: c.H, headDim: c.D)
        let R = (0..<nR).map { _ in Float(1 + 1.5 * rng.uniform()) }
        let pass = fourierPass(c, qkv: qkv, dout: g, R: R, kernel: c.kernel, threads: threads)
        let out = pass[0], dqkv = pass[2], dR = pass[3]

        var refO = [Double](), gotO = [Double](), refDq = [Double](), gotDq = [Double]()
        var refDk = [Double](), gotDk = [Double](), refDv = [Double](), gotDv = [Double]()
        var refDR = [Double](repeating: 0, count: nR)
        for b in 0..<c.B {
            for h in 0..<c.H {
                func slice(_ x: [Float], _ off: Int, _ stride: Int) -> [Double] {
                    (0..<c.T).flatMap { t in
                        (0..<c.D).map { d in Double(x[(b * c.T + t) * stride + off + h * c.D + d]) }
                    }
                }
                let q = slice(qkv, 0, 3 * C), kk = slice(qkv, C, 3 * C), v = slice(qkv, 2 * C, 3 * C)
                let gg = slice(g, 0, C)
                let r: [Double] = (0..<c.D).map { d in
                    Double(R[c.mode.index(head: h, dim: d)])
                }
                let fwd = FourierReference.forward(
                    q: q, k: kk, v: v, r: r, T: c.T, D: c.D, Dv: c.D, p: 4, eps: 1e-6,
                    causal: c.causal)
                let bwd = FourierReference.backward(
                    q: q, k: kk, v: v, r: r, g: gg, T: c.T, D: c.D, Dv: c.D, p: 4,
                    eps: 1e-6, causal: c.causal)
                refO += fwd.o; gotO += slice(out, 0, C)
                refDq += bwd.dq; gotDq += slice(dqkv, 0, 3 * C)
                refDk += bwd.dk; gotDk += slice(dqkv, C, 3 * C)
                refDv += bwd.dv; gotDv += slice(dqkv, 2 * C, 3 * C)
                for d in 0..<c.D {
                    switch c.mode {
                    case .scalar: refDR[0] += bwd.dRd[d]
                    case .perDim: refDR[d] += bwd.dRd[d]
                    case .perHead: refDR[h] += bwd.dRd[d]
                    }
                }
            }
        }
        return [
            "O": relErr(gotO, refO), "dq": relErr(gotDq, refDq), "dk": relErr(gotDk, refDk),
            "dv": relErr(gotDv, refDv), "dR": relErr(dR.map(Double.init), refDR),
        ]
    }

    func testFourierMatchesFloat64ReferenceInEveryMode() {
        for mode in RMode.allCases {
            for causal in [true, false] {
                for D in [5, 16] {
                    let errs = compareFourier(Case(D: D, causal: causal, mode: mode))
                    for (name, e) in errs {
                        XCTAssertLessThan(e, 2e-5, "\(name) mode=\(mode) causal=\(causal) D=\(D): rel err \(e)")
                    }
                }
            }
        }
    }

    /// The plain fp32 kernel against the float64 reference, as the fused one.
    func testPlainFourierMatchesFloat64ReferenceInEveryMode() {
        for mode in RMode.allCases {
            for causal in [true, false] {
                for (D, scale, offset) in [(5, 0.3, 0.0), (16, 0.3, 0.0), (13, 1.0, 6.0), (64, 0.05, 0.0)] {
                    let c = Case(D: D, causal: causal, mode: mode, scale: scale, offset: offset, kernel: .plain)
                    for (name, e) in compareFourier(c) {
                        XCTAssertLessThan(e, 2e-5, "\(name) mode=\(mode) causal=\(causal) D=\(D): rel err \(e)")
                    }
                }
            }
        }
    }

    /// Runs one kernel on random data; returns O, rowSum, dqkv, dR.
    func runFourier(_ c: Case, kernel: FourierKernel, seed: UInt64) -> [[Float]] {
        var rng = TestRNG(seed)
        let C = c.H * c.D
        let qkv = rng.normals(c.B * c.T * 3 * C, std: c.scale), g = rng.normals(c.B * c.T * C)
        let nR = c.mode.count(heads: c.H, headDim: c.D)
        let R = (0..<nR).map { _ in Float(0.5 + 2 * rng.uniform()) }
        return fourierPass(c, qkv: qkv, dout: g, R: R, kernel: kernel, threads: 2)
    }

    /// One forward and backward of `kernel` on fresh buffers; returns O, rowSum, dqkv, dR.
    func fourierPass(_ c: Case, qkv: [Float], dout g: [Float], R: [Float], kernel: FourierKernel,
                     threads: Int) -> [[Float]] {
        let C = c.H * c.D
        let spec = FourierSpec(p: 4, eps: 1e-6, rMode: c.mode, kernel: kernel)
        let shape = AttentionShape(batch: c.B, seq: c.T, heads: c.H, headDim: c.D, causal: c.causal)
        let k = AttentionKernels(maxSeq: c.T, headDim: c.D, threads: threads)
        var out = [Float](repeating: 0, count: c.B * c.T * C), rows = [Float](repeating: 0, count: c.B * c.H * c.T)
        var dqkv = [Float](repeating: 0, count: qkv.count), dR = [Float](repeating: 0, count: R.count)
        k.fourierForward(out: &out, rowSum: &rows, qkv: qkv, R: R, spec: spec, shape: shape)
        k.fourierBackward(
            dqkv: &dqkv, dR: &dR, dout: g, out: out, qkv: qkv, R: R, rowSum: rows, spec: spec,
            shape: shape)
        return [out, rows, dqkv, dR]
    }

    /// The fused kernel against the plain one, output for output, over tiles with tails, padded
    /// key blocks, every R mode and head sizes up to 64.
    func testFusedFourierMatchesPlainKernel() {
        let shapes = [
            (T: 37, D: 6, scale: 1.5), (T: 21, D: 16, scale: 0.3), (T: 40, D: 13, scale: 0.8),
            (T: 33, D: 64, scale: 0.1),
        ]
        for (n, s) in shapes.enumerated() {
            for mode in RMode.allCases {
                for causal in [true, false] {
                    let c = Case(B: 2, T: s.T, H: 3, D: s.D, causal: causal, mode: mode, scale: s.scale)
                    let fused = runFourier(c, kernel: .fused, seed: UInt64(n + 1))
                    let plain = runFourier(c, kernel: .plain, seed: UInt64(n + 1))
                    for (name, k) in [("O", 0), ("rowSum", 1), ("dqkv", 2), ("dR", 3)] {
                        let e = relErr(fused[k].map(Double.init), plain[k].map(Double.init))
                        XCTAssertLessThan(e, 2e-5, "\(name) T=\(s.T) D=\(s.D) mode=\(mode) causal=\(causal)")
                    }
                }
            }
        }
    }

    /// The plain kernel's backward against central finite differences of its own forward (fp32:
    /// steps of 1e-2 and a loose bound), for q, k, v and every entry of R.
    func testPlainFourierBackwardMatchesFiniteDifferences() {
        for (mode, causal) in [(RMode.perDim, true), (.perHead, false), (.scalar, true)] {
            let B = 1, T = 6, H = 2, D = 4, C = H * D
            var rng = TestRNG(9)
            var qkv = rng.normals(B * T * 3 * C, std: 0.4)
            let g = rng.normals(B * T * C)
            var R = (0..<mode.count(heads: H, headDim: D)).map { _ in Float(1 + rng.uniform()) }
            let spec = FourierSpec(rMode: mode, kernel: .plain)
            let shape = AttentionShape(batch: B, seq: T, heads: H, headDim: D, causal: causal)
            let k = AttentionKernels(maxSeq: T, headDim: D, threads: 1)
            var out = [Float](repeating: 0, count: B * T * C), rows = [Float](repeating: 0, count: B * H * T)
            func loss() -> Double {
                k.fourierForward(out: &out, rowSum: &rows, qkv: qkv, R: R, spec: spec, shape: shape)
                return zip(out, g).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            _ = loss()
            var dqkv = [Float](repeating: 0, count: qkv.count), dR = [Float](repeating: 0, count: R.count)
            k.fourierBackward(
                dqkv: &dqkv, dR: &dR, dout: g, out: out, qkv: qkv, R: R, rowSum: rows, spec: spec,
                shape: shape)
            let h: Float = 1e-2
            func central(_ old: Float, _ set: (Float) -> Void) -> Double {
                set(old + h); let lp = loss()
                set(old - h); let lm = loss()
                set(old)
                return (lp - lm) / Double(2 * h)
            }
            let fdQKV = (0..<qkv.count).map { i in central(qkv[i]) { qkv[i] = $0 } }
            let fdR = (0..<R.count).map { i in central(R[i]) { R[i] = $0 } }
            XCTAssertLessThan(relErr(dqkv.map(Double.init), fdQKV), 3e-3, "dqkv mode=\(mode) causal=\(causal)")
            XCTAssertLessThan(relErr(dR.map(Double.init), fdR), 3e-3, "dR mode=\(mode) causal=\(causal)")
        }
    }

    /// Row tiles with a ragged last tile, key blocks with padding lanes, dimension blocks with a
    /// tail (D = 6, 13), the forward's W·V in one vector of columns, pairs of them, and pairs plus
    /// one (D = 48), and angles far outside the small-|u| series (std up to 2.5, R up to 2.5; wider
    /// would make every W negligible against eps).
    func testFourierTilesTailsAndWideAngles() {
        let cases = [
            (37, 6, 1.5, 0.0), (21, 12, 0.8, 0.0), (9, 3, 2.5, 0.0), (18, 13, 1.0, 0.0), (40, 16, 0.5, 6.0),
            (20, 48, 0.3, 0.0),
        ]
        for (T, D, scale, offset) in cases {
            for causal in [true, false] {
                let errs = compareFourier(Case(B: 1, T: T, H: 2, D: D, causal: causal, scale: scale, offset: offset))
                for (name, e) in errs {
                    let label = "T=\(T) D=\(D) std=\(scale) offset=\(offset) causal=\(causal)"
                    XCTAssertLessThan(e, 2e-5, "\(name) \(label): rel err \(e)")
                }
            }
        }
    }

    /// The Fourier kernels hold O(T D) per worker, never a T x T matrix: their workspace grows
    /// linearly with T (and no softmax scratch is made for a Fourier-only model).
    func testFourierWorkspaceIsLinearInSequenceLength() {
        func workspace(T: Int) -> Int {
            let D = 16, C = D
            let k = AttentionKernels(maxSeq: T, headDim: D, threads: 2)
            var rng = TestRNG(5)
            let qkv = rng.normals(T * 3 * C, std: 0.3), g = rng.normals(T * C)
            var out = [Float](repeating: 0, count: T * C), rows = [Float](repeating: 0, count: T)
            var dqkv = [Float](repeating: 0, count: qkv.count), dR: [Float] = [0]
            let shape = AttentionShape(batch: 1, seq: T, heads: 1, headDim: D, causal: true)
            k.fourierForward(out: &out, rowSum: &rows, qkv: qkv, R: [1], spec: FourierSpec(), shape: shape)
            k.fourierBackward(
                dqkv: &dqkv, dR: &dR, dout: g, out: out, qkv: qkv, R: [1], rowSum: rows,
                spec: FourierSpec(), shape: shape)
            return k.workspaceBytes
        }
        let small = workspace(T: 128), large = workspace(T: 1024)
        XCTAssertLessThan(large, 9 * small, "8x the tokens: \(small) -> \(large) bytes")
        XCTAssertLessThan(large, 1024 * 1024 * 4, "one T x T fp32 matrix alone would be 4 MB")
    }

    /// The vector sin/cos of the per-token tables against libm, across quadrants and magnitudes,
    /// including the scalar fallback above the reduction's range.
    func testSinCosMatchesLibm() {
        var rng = TestRNG(11)
        var x = (0..<4099).map { _ in Float(rng.normal() * 30) }
        x += [0, -0, 1e-30, Float.pi / 4, Float.pi / 2, -Float.pi, 3999.9, -3999.9, 5000, -1e6]
        var s = [Float](repeating: 9, count: x.count), c = [Float](repeating: 9, count: x.count)
        sinCos(x, sin: &s, cos: &c, count: x.count)
        var worst = 0.0
        for i in 0..<x.count {
            worst = max(worst, abs(Double(s[i]) - sin(Double(x[i]))), abs(Double(c[i]) - cos(Double(x[i]))))
        }
        XCTAssertLessThan(worst, 3e-7)
    }

    /// At D = 64 with small |u| the naive fp32 cot(u) - 1/u loses ~1e-4 in dq (PyTorch's autograd
    /// through sinc does); the series keeps us near fp32 round-off.
    func testFourierGradientAccurateAtLargeHeadDim() {
        let errs = compareFourier(Case(B: 1, T: 16, H: 1, D: 64, scale: 0.05))
        XCTAssertLessThan(errs["dq"]!, 2e-5, "\(errs)")
        XCTAssertLessThan(errs["dk"]!, 2e-5, "\(errs)")
        XCTAssertLessThan(errs["O"]!, 2e-5, "\(errs)")
    }

    func testFourierResultDoesNotDependOnThreadCount() {
        let a = compareFourier(Case(B: 3, T: 8, H: 3, D: 8), threads: 1)
        let b = compareFourier(Case(B: 3, T: 8, H: 3, D: 8), threads: 3)
        XCTAssertEqual(a, b)
    }

    func testFourierRowSumIsEpsForCollapsedRows() {
        // Far-apart q and k with a large R: every W underflows; the rows' outputs and all
        // gradients must be finite (and the outputs 0), not NaN. At R = 30 the blocks' Π x
        // (x = u sin u, |u| ~ 3000) stays in range; at R = 1e5 (|u| ~ 1e7) it overflows fp32 to
        // inf, and only the range guard on 1/Π x keeps NaN out of W and psi.
        let T = 4, D = 8, C = D
        var qkv = [Float](repeating: 0, count: T * 3 * C)
        for t in 0..<T { for d in 0..<D { qkv[t * 3 * C + d] = 50; qkv[t * 3 * C + C + d] = Float(-50 - 3 * t) } }
        let k = AttentionKernels(maxSeq: T, headDim: D, threads: 1)
        let shape = AttentionShape(batch: 1, seq: T, heads: 1, headDim: D, causal: false)
        for R: Float in [30, 1e5] {
            var out = [Float](repeating: 1, count: T * C), rows = [Float](repeating: 0, count: T)
            k.fourierForward(out: &out, rowSum: &rows, qkv: qkv, R: [R], spec: FourierSpec(), shape: shape)
            XCTAssertTrue(out.allSatisfy { $0.isFinite && abs($0) < 1e-3 }, "R \(R): \(out)")
            XCTAssertTrue(rows.allSatisfy { $0 < 1e-5 }, "R \(R): \(rows)")
            var dqkv = [Float](repeating: 0, count: qkv.count), dR: [Float] = [0]
            let g = [Float](repeating: 1, count: T * C)
            k.fourierBackward(
                dqkv: &dqkv, dR: &dR, dout: g, out: out, qkv: qkv, R: [R], rowSum: rows,
                spec: FourierSpec(), shape: shape)
            XCTAssertTrue(dqkv.allSatisfy { $0.isFinite }, "R \(R): \(dqkv)")
            XCTAssertTrue(dR[0].isFinite, "R \(R)")
        }
    }

    /// The estimate-plus-Newton reciprocal the kernel uses instead of division: within a few ulp
    /// of 1/x over the range it serves, both signs; the guarded form is 0 outside
    /// [1e-30, 1e30] in magnitude and keeps NaN.
    func testReciprocalMatchesDivision() {
        var rng = TestRNG(5)
        var worst = 0.0
        for _ in 0..<2000 {
            var x = FV()
            for l in 0..<lanes {
                let magnitude = Float(pow(10, rng.uniform() * 60 - 30))
                x[l] = rng.uniform() < 0.5 ? -magnitude : magnitude
            }
            let r = reciprocal(x)
            for l in 0..<lanes {
                worst = max(worst, abs(Double(r[l]) * Double(x[l]) - 1) / Double(Float.ulpOfOne))
            }
        }
        // AVX-512's 14-bit estimate squares to ~2^-28 (measured 0.5 ulp); AVX2's 12-bit one to ~3 ulp.
        XCTAssertLessThan(worst, lanes == 16 ? 1 : 4, "worst relative error in units of 2^-23")
        var x = FV(repeating: 2)
        x[0] = 1e-31; x[1] = -1e31; x[2] = .infinity; x[3] = 0; x[4] = .nan; x[5] = -4
        let g = guardedReciprocal(x)
        XCTAssertEqual([g[0], g[1], g[2], g[3]], [0, 0, 0, 0])
        XCTAssertTrue(g[4].isNaN)
        XCTAssertEqual(g[5], -0.25, accuracy: 1e-7)
        XCTAssertEqual(g[6], 0.5, accuracy: 1e-7)
    }

    /// The Fourier kernels flush subnormals on their threads while they run (forward and
    /// backward must do so alike); the caller's thread gets its floating-point mode back.
    func testFourierKernelsLeaveTheCallersFloatingPointMode() {
        let factors: [Float] = [1e-30, 1e-9]  // in an array: not folded at compile time
        func subnormalSurvives() -> Bool {
            (factors[0] * factors[1]).isSubnormal  // 1e-39; 0 with flush-to-zero
        }
        XCTAssertTrue(subnormalSurvives())
        let c = Case(B: 1, T: 5, H: 1, D: 4)
        _ = compareFourier(c, threads: 1)  // one worker: the kernels run on this thread
        XCTAssertTrue(subnormalSurvives())
    }

    /// Softmax attention: backward against central finite differences of the forward.
    func testSoftmaxBackwardMatchesFiniteDifferences() {
        for causal in [true, false] {
            let B = 2, T = 6, H = 2, D = 5, C = H * D
            var rng = TestRNG(7)
            var qkv = rng.normals(B * T * 3 * C)
            let g = rng.normals(B * T * C)
            let shape = AttentionShape(batch: B, seq: T, heads: H, headDim: D, causal: causal)
            let k = AttentionKernels(maxSeq: T, headDim: D, threads: 2)
            var out = [Float](repeating: 0, count: B * T * C), lse = [Float](repeating: 0, count: B * H * T)
            func loss() -> Double {
                k.softmaxForward(out: &out, rowLSE: &lse, qkv: qkv, shape: shape)
                return zip(out, g).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            _ = loss()
            var dqkv = [Float](repeating: 0, count: qkv.count)
            k.softmaxBackward(dqkv: &dqkv, dout: g, out: out, qkv: qkv, rowLSE: lse, shape: shape)
            var fd = [Double](repeating: 0, count: qkv.count)
            let h: Float = 1e-2
            for i in 0..<qkv.count {
                let old = qkv[i]
                qkv[i] = old + h; let lp = loss()
                qkv[i] = old - h; let lm = loss()
                qkv[i] = old
                fd[i] = (lp - lm) / Double(2 * h)
            }
            let e = relErr(dqkv.map(Double.init), fd)
            XCTAssertLessThan(e, 2e-3, "causal=\(causal)")
        }
    }

    /// The float64 reference itself against central finite differences (as the spec's numpy check).
    func testFourierReferenceMatchesFiniteDifferences() {
        var rng = TestRNG(3)
        let T = 6, D = 4
        var q = (0..<T * D).map { _ in rng.normal() * 0.3 }
        let k = (0..<T * D).map { _ in rng.normal() * 0.3 }
        let v = (0..<T * D).map { _ in rng.normal() }
        let g = (0..<T * D).map { _ in rng.normal() }
        var r = [1.3, 2.0, 0.7, 1.1]
        func loss() -> Double {
            let o = FourierReference.forward(q: q, k: k, v: v, r: r, T: T, D: D, Dv: D, p: 4, eps: 1e-6, causal: true).o
            return zip(o, g).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let bwd = FourierReference.backward(
            q: q, k: k, v: v, r: r, g: g, T: T, D: D, Dv: D, p: 4, eps: 1e-6,
            causal: true)
        var fdq = [Double](repeating: 0, count: q.count), fdr = [Double](repeating: 0, count: D)
        for i in 0..<q.count {
            let o = q[i]; q[i] = o + 1e-6; let lp = loss(); q[i] = o - 1e-6; let lm = loss(); q[i] = o
            fdq[i] = (lp - lm) / 2e-6
        }
        for d in 0..<D {
            let o = r[d]; r[d] = o + 1e-6; let lp = loss(); r[d] = o - 1e-6; let lm = loss(); r[d] = o
            fdr[d] = (lp - lm) / 2e-6
        }
        XCTAssertLessThan(relErr(bwd.dq, fdq), 1e-6)
        XCTAssertLessThan(relErr(bwd.dRd, fdr), 1e-6)
    }
}
