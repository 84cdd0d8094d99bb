import FFCore
import XCTest
import FFKernels
@testable import FFModel

/// Adaptive softmax and adaptive input: gradients against finite differences of a Double
/// reference (`logProbabilities`, `embedding(of:)`, written straight from the definition), the
/// plain softmax as the one-cluster special case, and normalisation.
final class AdaptiveSoftmaxTests: XCTestCase {
    // V = 23 in four clusters [0,5) [5,11) [11,17) [17,23): with C = 8 and divVal 2 the tails have
    // d = 4, 2, 1, so the last one is the degenerate one-dimensional case.
    static let cutoffs = [5, 11, 17]
    // Every cluster gets rows, some targets repeat (accumulation into one weight row), two are ignored.
    static let targets: [Int32] = [0, 6, 12, 18, -1, 3, 10, 22, 16, 6, -1, 7, 19, 2, 11]

    /// A softmax (and the embedding it is tied to, if any) over fresh buffers, parameters ~ N(0, 0.5²).
    final class Fixture {
        let layout: ParameterLayout
        let embedding: AdaptiveEmbedding?
        let softmax: AdaptiveSoftmax
        let params: FlatBuffer, grads: FlatBuffer

        init(
            _ config: AdaptiveSoftmaxConfig, maxRows: Int, tailChunk: Int? = nil, embedding withEmbedding: Bool,
            seed: UInt64
        ) {
            var layout = ParameterLayout()
            embedding = withEmbedding ? AdaptiveEmbedding(config: config, layout: &layout, maxRows: maxRows) : nil
            softmax = AdaptiveSoftmax(
                config: config, layout: &layout, maxRows: maxRows, tailChunk: tailChunk, threads: 2,
                tiedTo: config.tieWeights ? embedding : nil)
            self.layout = layout
            params = FlatBuffer(count: layout.count); grads = FlatBuffer(count: layout.count)
            embedding?.bind(params: params, grads: grads)
            softmax.bind(params: params, grads: grads)
            var rng = SplitMix64(seed: seed)
            for i in 0..<layout.count { params[i] = Float(rng.nextNormal() * 0.5) }
        }
    }

    /// A group of gradient entries to compare: one parameter tensor, or the input.
    struct Group {
        var name: String
        var analytic: [Double]
        var numeric: [Double]
    }

    /// Central differences of `loss` in one Float value, Richardson-extrapolated (O(h⁴)); the loss
    /// is evaluated in Double, so rounding does not limit h.
    func derivative(get: () -> Float, set: (Float) -> Void, loss: () -> Double) -> Double {
        let old = get()
        func central(_ h: Float) -> Double {
            set(old + h); let lp = loss()
            set(old - h); let lm = loss()
            set(old)
            return (lp - lm) / (Double(old + h) - Double(old - h))
        }
        return (4 * central(5e-4) - central(1e-3)) / 3
    }

    /// Entries where |analytic - numeric| exceeds `tolerance` times the group's largest numeric
    /// entry. The analytic side is fp32 (and exp has 5e-6 relative error); the numeric side is
    /// Double, so honest gradients stay below 1e-6 and 1e-5 leaves room without hiding bugs
    /// (`testGradientCheckCatchesSmallErrors`).
    func mismatches(_ groups: [Group], tolerance: Double = 1e-5) -> [String] {
        var out: [String] = []
        for g in groups {
            let scale = g.numeric.map(abs).max() ?? 0
            if scale == 0 {
                out.append("\(g.name): numeric gradient is all zero (the check would see nothing)"); continue
            }
            for i in g.analytic.indices where abs(g.analytic[i] - g.numeric[i]) > tolerance * scale {
                out.append("\(g.name)[\(i)]: analytic \(g.analytic[i]) vs numeric \(g.numeric[i]) (scale \(scale))")
            }
        }
        return out
    }

    /// Asserts no mismatches and reports the worst deviation (the margin under the tolerance).
    func expectMatch(_ groups: [Group], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(mismatches(groups), [], label, file: file, line: line)
        print("\(label): worst |an - fd| / scale = \(worstRatio(groups))")
    }

    func worstRatio(_ groups: [Group]) -> Double {
        groups.map { g in
            let scale = g.numeric.map(abs).max() ?? 1
            return zip(g.analytic, g.numeric).map { abs($0 - $1) / scale }.max() ?? 0
        }.max() ?? 0
    }

    /// Runs softmax forward + backward on `hidden` (M, C) after a warm-up on other data (stale
    /// scratch must not leak), and returns analytic vs numeric gradient groups: hidden and every
    /// parameter tensor. Gradients and dhidden start from junk, so accumulation is checked too.
    /// Tails are scored 2 rows at a time, so each tail runs several chunks, the last one partial.
    func softmaxGroups(
        _ config: AdaptiveSoftmaxConfig, lossScale: Float = 0.37, seed: UInt64 = 3,
        file: StaticString = #filePath, line: UInt = #line
    ) -> [Group] {
        let M = Self.targets.count, C = config.dModel
        let f = Fixture(config, maxRows: M + 4, tailChunk: 2, embedding: config.tieWeights, seed: seed)
        var rng = SplitMix64(seed: seed &+ 100)
        // Warm-up on more rows with other targets.
        let warmHidden = (0..<((M + 4) * C)).map { _ in Float(rng.nextNormal()) }
        let warmTargets = (0..<(M + 4)).map { _ in Int32(rng.nextInt(below: config.vocabSize)) }
        var warmD = [Float](repeating: 0, count: (M + 4) * C)
        _ = f.softmax.forward(hidden: warmHidden, targets: warmTargets, M: M + 4, lossScale: 1)
        f.softmax.backward(dhidden: &warmD)

        var hidden = (0..<(M * C)).map { _ in Float(rng.nextNormal()) }
        let junkG = (0..<f.layout.count).map { _ in Float(rng.nextNormal()) }
        let junkD = (0..<(M * C)).map { _ in Float(rng.nextNormal()) }
        for i in 0..<f.layout.count { f.grads[i] = junkG[i] }
        var dhidden = junkD
        let loss = f.softmax.forward(hidden: hidden, targets: Self.targets, M: M, lossScale: lossScale)
        f.softmax.backward(dhidden: &dhidden)

        func reference() -> Double {
            var s = 0.0
            for m in 0..<M where Self.targets[m] >= 0 {
                s -= f.softmax.logProbabilities(Array(hidden[(m * C)..<((m + 1) * C)]))[Int(Self.targets[m])]
            }
            return s
        }
        let ref = reference()
        XCTAssertEqual(
            loss, ref, accuracy: 1e-5 * abs(ref), "forward loss vs the Double reference", file: file, line: line)
        let scaled = { Double(lossScale) * reference() }

        var groups: [Group] = []
        var hGroup = Group(name: "hidden", analytic: [], numeric: [])
        for i in 0..<(M * C) {
            hGroup.analytic.append(Double(dhidden[i] - junkD[i]))
            hGroup.numeric.append(derivative(get: { hidden[i] }, set: { hidden[i] = $0 }, loss: scaled))
        }
        groups.append(hGroup)
        for t in f.layout.tensors {
            var g = Group(name: t.name, analytic: [], numeric: [])
            for i in t.range {
                g.analytic.append(Double(f.grads[i] - junkG[i]))
                g.numeric.append(derivative(get: { f.params[i] }, set: { f.params[i] = $0 }, loss: scaled))
            }
            groups.append(g)
        }
        return groups
    }

    func config(
        cutoffs: [Int] = cutoffs, divVal: Float, tie: Bool = false, tieProj: Bool = false,
        projectShortlist: Bool = false
    ) -> AdaptiveSoftmaxConfig {
        AdaptiveSoftmaxConfig(
            vocabSize: 23, dModel: 8, cutoffs: cutoffs, divVal: divVal, tieWeights: tie,
            tieProjections: tieProj, projectShortlist: projectShortlist)
    }

    // MARK: Adaptive softmax

    func testSoftmaxGradientDivVal1() {
        let groups = softmaxGroups(config(divVal: 1))
        XCTAssertEqual(
            groups.map(\.name),
            [
                "hidden", "adaptive_softmax.head.weight",
                "adaptive_softmax.tail.0.proj.weight", "adaptive_softmax.tail.0.out.weight",
                "adaptive_softmax.tail.1.proj.weight", "adaptive_softmax.tail.1.out.weight",
                "adaptive_softmax.tail.2.proj.weight", "adaptive_softmax.tail.2.out.weight",
            ])
        expectMatch(groups, "softmax divVal 1")
    }

    func testSoftmaxGradientDivVal2() {
        let groups = softmaxGroups(config(divVal: 2))
        expectMatch(groups, "softmax divVal 2")
    }

    func testSoftmaxGradientOtherCutoffs() {
        // (A one-word tail has log p_k(w) = 0 and so no gradient: see the normalisation test.)
        for (cutoffs, divVal) in [([9], Float(2)), ([2, 20], Float(4)), ([2, 4, 8], Float(1.5))] {
            let groups = softmaxGroups(config(cutoffs: cutoffs, divVal: divVal), lossScale: 1, seed: 7)
            expectMatch(groups, "softmax cutoffs \(cutoffs) divVal \(divVal)")
        }
    }

    /// The tolerance is tight enough to catch a single entry off by 0.01% of its tensor's largest
    /// gradient, and a gradient scaled by 1.0001 (a wrong loss scale).
    func testGradientCheckCatchesSmallErrors() {
        let groups = softmaxGroups(config(divVal: 2))
        XCTAssertEqual(mismatches(groups), [])
        for (j, g) in groups.enumerated() {
            var bad = groups
            let scale = g.numeric.map(abs).max()!
            bad[j].analytic[g.analytic.count / 2] += 1e-4 * scale
            XCTAssertEqual(mismatches(bad).count, 1, "an error of 0.01% in \(g.name) went unnoticed")
        }
        for g in groups {
            let scaled = Group(name: g.name, analytic: g.analytic.map { $0 * 1.0001 }, numeric: g.numeric)
            XCTAssertFalse(mismatches([scaled]).isEmpty, "a 0.01% scale error in \(g.name) went unnoticed")
        }
    }

    /// With no cutoffs the adaptive softmax is the plain softmax: same loss, dhidden and dW as
    /// linearForward + crossEntropy + linearBackward with the same weight.
    func testNoCutoffsEqualsPlainSoftmax() {
        let V = 37, C = 16, M = 20, scale: Float = 0.25
        let f = Fixture(
            AdaptiveSoftmaxConfig(vocabSize: V, dModel: C, cutoffs: []), maxRows: M, embedding: false, seed: 11)
        XCTAssertEqual(f.layout.tensors.map(\.name), ["adaptive_softmax.head.weight"])
        XCTAssertEqual(f.layout.tensors[0].shape, [V, C])
        var rng = SplitMix64(seed: 12)
        let hidden = (0..<(M * C)).map { _ in Float(rng.nextNormal()) }
        var targets = (0..<M).map { _ in Int32(rng.nextInt(below: V)) }
        targets[4] = -1; targets[13] = -1
        var dh = [Float](repeating: 0, count: M * C)
        let loss = f.softmax.forward(hidden: hidden, targets: targets, M: M, lossScale: scale)
        f.softmax.backward(dhidden: &dh)

        let W = f.params.pointer + f.layout.tensors[0].offset
        var logits = [Float](repeating: 0, count: M * V), dhRef = [Float](repeating: 0, count: M * C)
        var dW = [Float](repeating: 0, count: V * C), rowLoss = [Double](repeating: 0, count: M)
        linearForward(&logits, hidden, W, nil, M: M, K: C, N: V)
        let lossRef = crossEntropy(logits: &logits, targets: targets, M: M, V: V, dscale: scale, rowLoss: &rowLoss)
        linearBackward(dinp: &dhRef, dweight: &dW, dbias: nil, dout: logits, inp: hidden, weight: W, M: M, K: C, N: V)

        XCTAssertEqual(loss, lossRef, accuracy: 1e-5 * lossRef)
        let dWAdaptive = Array(UnsafeBufferPointer(start: f.grads.pointer, count: V * C))
        XCTAssertLessThan(maxRelDiff(dh, dhRef), 1e-5)
        XCTAssertLessThan(maxRelDiff(dWAdaptive, dW), 1e-5)
    }

    func maxRelDiff(_ a: [Float], _ b: [Float]) -> Double {
        var num = 0.0, den = 1e-30
        for i in a.indices { num = max(num, Double(abs(a[i] - b[i]))); den = max(den, Double(abs(b[i]))) }
        return num / den
    }

    /// exp(log p) sums to 1 over the vocabulary, and the training forward of one row scores
    /// every word as logProbabilities does.
    func testProbabilitiesSumToOneAndMatchForward() {
        let configs = [
            config(divVal: 1), config(divVal: 2), config(divVal: 2, tie: true, tieProj: true, projectShortlist: true),
            config(cutoffs: [], divVal: 1), config(cutoffs: [1, 2, 3, 4], divVal: 1.5),
        ]
        for c in configs {
            let f = Fixture(c, maxRows: 1, embedding: c.tieWeights, seed: 21)
            var rng = SplitMix64(seed: 22)
            for _ in 0..<3 {
                let h = (0..<c.dModel).map { _ in Float(rng.nextNormal() * 2) }
                let lp = f.softmax.logProbabilities(h)
                XCTAssertEqual(lp.count, c.vocabSize)
                XCTAssertEqual(lp.reduce(0) { $0 + exp($1) }, 1, accuracy: 1e-12, "\(c)")
                for w in 0..<c.vocabSize {
                    let nll = f.softmax.forward(hidden: h, targets: [Int32(w)], M: 1, lossScale: nil)
                    XCTAssertEqual(nll, -lp[w], accuracy: 2e-5 * max(1, abs(lp[w])), "word \(w) of \(c)")
                }
            }
        }
    }

    /// Only a tail's own rows are scored by it.
    func testTailsSeeOnlyTheirRows() {
        let f = Fixture(config(divVal: 2), maxRows: Self.targets.count, embedding: false, seed: 1)
        let hidden = [Float](repeating: 0.1, count: Self.targets.count * 8)
        _ = f.softmax.forward(hidden: hidden, targets: Self.targets, M: Self.targets.count, lossScale: nil)
        // Shortlist [0,5) + 2 ignored = 5; [5,11): 6,10,6,7 = 4; [11,17): 12,16,11 = 3; [17,23): 18,22,19 = 3.
        XCTAssertEqual(f.softmax.lastClusterRows, [5, 4, 3, 3])
    }

    // MARK: Adaptive input

    func embeddingGroups(_ config: AdaptiveSoftmaxConfig, seed: UInt64) -> (groups: [Group], layout: ParameterLayout) {
        var layout = ParameterLayout()
        let tokens: [Int32] = [0, 6, 12, 18, 4, 22, 16, 6, 7, 19, 2, 11, 0, 20]
        let M = tokens.count, C = config.dModel
        let emb = AdaptiveEmbedding(config: config, layout: &layout, maxRows: M + 2)
        let params = FlatBuffer(count: layout.count), grads = FlatBuffer(count: layout.count)
        emb.bind(params: params, grads: grads)
        var rng = SplitMix64(seed: seed)
        for i in 0..<layout.count { params[i] = Float(rng.nextNormal() * 0.5) }
        // Warm-up on other tokens, then a random linear functional of the output as the loss.
        var warm = [Float](repeating: 0, count: (M + 2) * C)
        emb.forward(tokens: (0..<(M + 2)).map { Int32(($0 * 7) % config.vocabSize) }, M: M + 2, out: &warm)
        emb.backward(dout: warm)
        let R = (0..<(M * C)).map { _ in Float(rng.nextNormal()) }
        let junk = (0..<layout.count).map { _ in Float(rng.nextNormal()) }
        for i in 0..<layout.count { grads[i] = junk[i] }
        var out = [Float](repeating: 0, count: M * C)
        emb.forward(tokens: tokens, M: M, out: &out)
        emb.backward(dout: R)
        func reference() -> Double {
            var s = 0.0
            for m in 0..<M {
                let e = emb.embedding(of: Int(tokens[m]))
                for c in 0..<C { s += Double(R[m * C + c]) * e[c] }
            }
            return s
        }
        var maxOutErr = 0.0
        for m in 0..<M {
            let e = emb.embedding(of: Int(tokens[m]))
            for c in 0..<C { maxOutErr = max(maxOutErr, abs(Double(out[m * C + c]) - e[c])) }
        }
        XCTAssertLessThan(maxOutErr, 1e-5, "forward vs embedding(of:)")
        let groups = layout.tensors.map { t in
            Group(
                name: t.name, analytic: t.range.map { Double(grads[$0] - junk[$0]) },
                numeric: t.range.map { i in derivative(get: { params[i] }, set: { params[i] = $0 }, loss: reference) })
        }
        return (groups, layout)
    }

    func testEmbeddingGradient() {
        let (g1, l1) = embeddingGroups(config(divVal: 1), seed: 31)
        expectMatch(g1, "embedding divVal 1")
        XCTAssertEqual(
            l1.tensors.map(\.name),
            [
                "adaptive_input.embeddings.0.weight",
                "adaptive_input.embeddings.1.weight", "adaptive_input.projections.1.weight",
                "adaptive_input.embeddings.2.weight", "adaptive_input.projections.2.weight",
                "adaptive_input.embeddings.3.weight", "adaptive_input.projections.3.weight",
            ])
        let (g2, l2) = embeddingGroups(config(divVal: 2, projectShortlist: true), seed: 32)
        expectMatch(g2, "embedding divVal 2, projected shortlist")
        XCTAssertEqual(
            l2.tensors.map(\.shape), [[5, 8], [8, 8], [6, 4], [8, 4], [6, 2], [8, 2], [6, 1], [8, 1]])
    }

    // MARK: Tied pair

    /// Embedding → softmax with shared storage: the gradient of each shared tensor is the sum of
    /// both uses.
    func tiedGroups(_ config: AdaptiveSoftmaxConfig, seed: UInt64) -> (groups: [Group], layout: ParameterLayout) {
        let tokens: [Int32] = [1, 6, 12, 18, 4, 22, 16, 6, 7, 19, 2, 11, 0, 20, 9]
        let M = tokens.count, C = config.dModel, scale: Float = 0.5
        let f = Fixture(config, maxRows: M, embedding: true, seed: seed)
        guard let emb = f.embedding else { XCTFail("no embedding"); return ([], f.layout) }
        var rng = SplitMix64(seed: seed &+ 1)
        let junk = (0..<f.layout.count).map { _ in Float(rng.nextNormal()) }
        for i in 0..<f.layout.count { f.grads[i] = junk[i] }
        var hidden = [Float](repeating: 0, count: M * C), dh = [Float](repeating: 0, count: M * C)
        emb.forward(tokens: tokens, M: M, out: &hidden)
        let loss = f.softmax.forward(hidden: hidden, targets: Self.targets, M: M, lossScale: scale)
        f.softmax.backward(dhidden: &dh)
        emb.backward(dout: dh)
        func reference() -> Double {
            var s = 0.0
            for m in 0..<M where Self.targets[m] >= 0 {
                s -= f.softmax.logProbabilities(emb.embedding(of: Int(tokens[m])))[Int(Self.targets[m])]
            }
            return s
        }
        let ref = reference()
        XCTAssertEqual(loss, ref, accuracy: 1e-5 * ref)
        let groups = f.layout.tensors.map { t in
            Group(
                name: t.name, analytic: t.range.map { Double(f.grads[$0] - junk[$0]) },
                numeric: t.range.map { i in
                    derivative(get: { f.params[i] }, set: { f.params[i] = $0 }, loss: { Double(scale) * reference() })
                })
        }
        return (groups, f.layout)
    }

    func testTiedWeightsGradient() {
        let (g, layout) = tiedGroups(config(divVal: 2, tie: true), seed: 41)
        expectMatch(g, "tied weights divVal 2")
        // The tables are held once; the softmax keeps its cluster rows and its own projections.
        XCTAssertEqual(
            layout.tensors.filter { $0.name.hasPrefix("adaptive_softmax.") }.map(\.name),
            [
                "adaptive_softmax.head.clusters.weight", "adaptive_softmax.tail.0.proj.weight",
                "adaptive_softmax.tail.1.proj.weight", "adaptive_softmax.tail.2.proj.weight",
            ])
    }

    func testTiedWeightsAndProjectionsGradient() {
        let (g, layout) = tiedGroups(config(divVal: 2, tie: true, tieProj: true, projectShortlist: true), seed: 42)
        expectMatch(g, "tied weights+projections divVal 2, projected shortlist")
        XCTAssertEqual(
            layout.tensors.filter { $0.name.hasPrefix("adaptive_softmax.") }.map(\.name),
            ["adaptive_softmax.head.clusters.weight"])
        let (g1, _) = tiedGroups(config(divVal: 1, tie: true, tieProj: true), seed: 43)
        expectMatch(g1, "tied weights+projections divVal 1")
        // One cluster, tied: the ordinary tied embedding / output matrix.
        let (g0, l0) = tiedGroups(config(cutoffs: [], divVal: 1, tie: true, tieProj: true), seed: 44)
        expectMatch(g0, "tied, one cluster")
        XCTAssertEqual(l0.tensors.map(\.name), ["adaptive_input.embeddings.0.weight"])
    }

    // MARK: Configuration

    func testProblems() {
        XCTAssertEqual(config(divVal: 2).problems(), [])
        let bad = AdaptiveSoftmaxConfig(
            vocabSize: 100, dModel: 8, cutoffs: [0, 50, 40, 100], divVal: 0.5,
            tieWeights: false, tieProjections: true)
        let p = bad.problems()
        XCTAssertEqual(p.count, 5, "\(p)")
        XCTAssertTrue(p.contains { $0.contains("positive") })
        XCTAssertTrue(p.contains { $0.contains("ascending") && $0.contains("50 then 40") })
        XCTAssertTrue(p.contains { $0.contains("below the vocabulary size 100") })
        XCTAssertTrue(p.contains { $0.contains("div_val") })
        XCTAssertTrue(p.contains { $0.contains("tie_weights") })
    }

    /// The WikiText-103 setup (Baevski & Auli): cutoffs 20k/40k/200k, divVal 4, tied weights and
    /// projections; names and shapes as documented.
    func testWikiText103Layout() {
        let c = AdaptiveSoftmaxConfig(
            vocabSize: 267_735, dModel: 1024, cutoffs: [20_000, 40_000, 200_000], divVal: 4,
            tieWeights: true, tieProjections: true)
        var layout = ParameterLayout()
        let emb = AdaptiveEmbedding(config: c, layout: &layout, maxRows: 1)
        let sm = AdaptiveSoftmax(config: c, layout: &layout, maxRows: 1, tiedTo: emb)
        XCTAssertEqual(
            layout.tensors.map(\.name),
            [
                "adaptive_input.embeddings.0.weight",
                "adaptive_input.embeddings.1.weight", "adaptive_input.projections.1.weight",
                "adaptive_input.embeddings.2.weight", "adaptive_input.projections.2.weight",
                "adaptive_input.embeddings.3.weight", "adaptive_input.projections.3.weight",
                "adaptive_softmax.head.clusters.weight",
            ])
        XCTAssertEqual(
            layout.tensors.map(\.shape),
            [
                [20_000, 1024], [20_000, 256], [1024, 256], [160_000, 64],
                [1024, 64], [67_735, 16], [1024, 16], [3, 1024],
            ])
        XCTAssertEqual(sm.registered.map(\.name), ["adaptive_softmax.head.clusters.weight"])
        XCTAssertEqual(c.headSize, 20_003)
    }
}
