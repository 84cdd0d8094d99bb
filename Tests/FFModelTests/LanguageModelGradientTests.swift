import FFCore
import XCTest
import FFKernels
@testable import FFModel

/// The whole model's gradient against central finite differences of its loss.
final class LanguageModelGradientTests: XCTestCase {
    func tinyConfig() -> LMConfig {
        var c = LMConfig(vocabSize: 11, layers: 2, dModel: 16, heads: 2, dFF: 24, context: 6)
        c.initStd = 0.3
        c.activation = .gelu
        return c
    }

    /// The gradient at a sample of parameters (every R entry included) against finite differences.
    func checkGradient(_ config: LMConfig, file: StaticString = #filePath, line: UInt = #line) {
        let B = 2, T = config.context
        let model = LanguageModel(config: config, maxBatch: B, threads: 2)
        model.initialize(seed: 5)
        var rng = SplitMix64(seed: 9)
        let tokens = (0..<(B * T)).map { _ in Int32(rng.nextInt(below: config.vocabSize)) }
        var targets = (0..<(B * T)).map { _ in Int32(rng.nextInt(below: config.vocabSize)) }
        targets[3] = -1  // ignored position
        let keys: [UInt64] = [11, 12]
        func loss() -> Double {
            keys.withUnsafeBufferPointer { k in
                model.forward(
                    tokens: tokens, targets: targets, batch: B, mode: .train(lossScale: 0, dropoutKeys: k.baseAddress!))
            }
        }
        model.grads.zero()
        _ = keys.withUnsafeBufferPointer { k in
            model.forward(
                tokens: tokens, targets: targets, batch: B, mode: .train(lossScale: 1, dropoutKeys: k.baseAddress!))
        }
        model.backward()
        let idx = sampleIndices(model.layout, &rng) { $0.hasSuffix("attn.R") }
        assertGradientMatchesFiniteDifferences(model, at: idx, loss: loss, file: file, line: line)
    }

    func testAdaptiveSoftmaxOutputTiedAndUntied() {
        for tie in [false, true] {
            var c = tinyConfig()
            c.tieEmbeddings = tie
            c.adaptive = AdaptiveSoftmaxConfig(
                vocabSize: c.vocabSize, dModel: c.dModel, cutoffs: [4, 8], divVal: 2,
                tieWeights: tie, tieProjections: tie)
            checkGradient(c)
        }
    }

    /// One cluster covering the vocabulary is the full softmax: same loss and gradients when the
    /// adaptive head holds the full head's weights.
    func testAdaptiveWithOneClusterEqualsFullSoftmax() {
        var full = tinyConfig()
        full.tieEmbeddings = false
        full.dropout = 0
        var adaptive = full
        adaptive.adaptive = AdaptiveSoftmaxConfig(vocabSize: full.vocabSize, dModel: full.dModel, cutoffs: [])
        let a = LanguageModel(config: full, maxBatch: 2), b = LanguageModel(config: adaptive, maxBatch: 2)
        a.initialize(seed: 4)
        for t in b.layout.tensors {
            let src = a.layout[t.name == "adaptive_softmax.head.weight" ? "lm_head.weight" : t.name]!
            XCTAssertEqual(src.shape, t.shape, t.name)
            (b.params.pointer + t.offset).update(from: a.params.pointer + src.offset, count: t.count)
        }
        var rng = SplitMix64(seed: 2)
        let tokens = (0..<12).map { _ in Int32(rng.nextInt(below: 11)) },
            targets = (0..<12).map { _ in Int32(rng.nextInt(below: 11)) }
        let keys: [UInt64] = [1, 2]
        let la = keys.withUnsafeBufferPointer {
            a.forward(
                tokens: tokens, targets: targets, batch: 2, mode: .train(lossScale: 0.5, dropoutKeys: $0.baseAddress!))
        }
        let lb = keys.withUnsafeBufferPointer {
            b.forward(
                tokens: tokens, targets: targets, batch: 2, mode: .train(lossScale: 0.5, dropoutKeys: $0.baseAddress!))
        }
        XCTAssertEqual(la, lb, accuracy: 1e-5 * la)
        a.backward(); b.backward()
        var worst: Float = 0
        for t in b.layout.tensors {
            let src = a.layout[t.name == "adaptive_softmax.head.weight" ? "lm_head.weight" : t.name]!
            for k in 0..<t.count { worst = max(worst, abs(a.grads[src.offset + k] - b.grads[t.offset + k])) }
        }
        XCTAssertLessThan(worst, 1e-5)
    }

    func testFourierPostLNEveryRMode() {
        for mode in RMode.allCases {
            var c = tinyConfig()
            c.attention = .fourier(FourierSpec(p: 4, eps: 1e-6, rMode: mode), rInit: 1.5)
            checkGradient(c)
        }
    }

    func testFourierPreLNLearnedPositionsUntied() {
        var c = tinyConfig()
        c.norm = .pre; c.positions = .learned; c.tieEmbeddings = false
        // After LayerNorm q and k have unit scale whatever initStd is; a smaller weight scale keeps
        // R|q - k| where finite differences in fp32 can still resolve dR.
        c.initStd = 0.15
        c.attention = .fourier(FourierSpec(rMode: .perHead), rInit: 1.0)
        checkGradient(c)
    }

    func testSoftmaxBothNormPlacementsWithDropout() {
        for norm in NormPlacement.allCases {
            var c = tinyConfig()
            c.norm = norm; c.attention = .softmax; c.dropout = 0.2
            checkGradient(c)
        }
    }

    func testFourierWithDropoutAndReLU() {
        var c = tinyConfig()
        c.dropout = 0.1; c.activation = .relu; c.scaleEmbeddings = false
        checkGradient(c)
    }
}
