import FFCore
import XCTest
import FFKernels
@testable import FFModel

/// The full-softmax output computed block by block (`outputChunk` rows of logits at a time):
/// the same loss and gradients whatever the block, gradients right by finite differences, and
/// no (tokens x vocabulary) buffer.
final class LanguageModelOutputTests: XCTestCase {
    let B = 2
    var config: LMConfig = {
        var c = LMConfig(vocabSize: 11, layers: 1, dModel: 16, heads: 2, dFF: 24, context: 6)
        c.initStd = 0.3
        c.activation = .gelu  // smooth: finite differences across a ReLU kink mean nothing
        return c
    }()
    var rng = SplitMix64(seed: 17)
    lazy var tokens = (0..<(B * config.context)).map { _ in Int32(rng.nextInt(below: config.vocabSize)) }
    lazy var targets: [Int32] = (0..<(B * config.context)).map {
        $0 == 7 ? -1 : Int32(rng.nextInt(below: config.vocabSize))
    }
    let keys: [UInt64] = [3, 4]

    func run(_ model: LanguageModel, lossScale: Float) -> Double {
        keys.withUnsafeBufferPointer {
            model.forward(
                tokens: tokens, targets: targets, batch: B,
                mode: .train(lossScale: lossScale, dropoutKeys: $0.baseAddress!))
        }
    }

    /// Loss and the whole gradient buffer after one training forward and backward.
    func lossAndGradients(chunk: Int, norm: NormPlacement, tie: Bool) -> (Double, [Float]) {
        var c = config
        c.norm = norm; c.tieEmbeddings = tie
        let model = LanguageModel(config: c, maxBatch: B, threads: 2, outputChunk: chunk)
        XCTAssertEqual(model.outputChunk, min(chunk, B * c.context))
        model.initialize(seed: 8)
        model.grads.zero()
        let loss = run(model, lossScale: 0.5)
        model.backward()
        return (loss, Array(UnsafeBufferPointer(start: model.grads.pointer, count: model.grads.count)))
    }

    func testEveryBlockSizeGivesTheSameLossAndGradients() {
        for norm in NormPlacement.allCases {
            for tie in [true, false] {
                let (loss, grads) = lossAndGradients(chunk: B * config.context, norm: norm, tie: tie)
                for chunk in [1, 5, 7] {
                    let (l, g) = lossAndGradients(chunk: chunk, norm: norm, tie: tie)
                    XCTAssertEqual(l, loss, accuracy: 1e-6 * loss, "\(norm) tie \(tie) chunk \(chunk)")
                    let worst = zip(g, grads).map { abs($0 - $1) }.max()!, scale = grads.map(abs).max()!
                    XCTAssertLessThan(worst, 1e-5 * scale, "\(norm) tie \(tie) chunk \(chunk)")
                }
            }
        }
    }

    func testBlockwiseGradientMatchesFiniteDifferences() {
        for norm in NormPlacement.allCases {
            var c = config
            c.norm = norm; c.tieEmbeddings = false; c.dropout = 0.1
            let model = LanguageModel(config: c, maxBatch: B, threads: 2, outputChunk: 5)
            model.initialize(seed: 6)
            model.grads.zero()
            _ = run(model, lossScale: 1)
            model.backward()
            let idx = sampleIndices(model.layout, &rng) { $0 == "lm_head.weight" || $0.hasPrefix("ln_f") }
            assertGradientMatchesFiniteDifferences(model, at: idx) { run(model, lossScale: 0) }
        }
    }

    /// Evaluation gives the training forward's loss and leaves the gradients alone.
    func testEvaluationMatchesTrainingLoss() {
        var c = config
        c.dropout = 0
        let model = LanguageModel(config: c, maxBatch: B, outputChunk: 5)
        model.initialize(seed: 2)
        model.grads.zero()
        let eval = model.forward(tokens: tokens, targets: targets, batch: B, mode: .eval)
        XCTAssertTrue(UnsafeBufferPointer(start: model.grads.pointer, count: model.grads.count).allSatisfy { $0 == 0 })
        XCTAssertEqual(eval, run(model, lossScale: 0), accuracy: 1e-9 * eval)
    }

    func testNoTokensByVocabularyBuffer() {
        var c = config
        c.vocabSize = 50_000
        c.context = 64
        let maxBatch = 8, rows = maxBatch * c.context
        let model = LanguageModel(config: c, maxBatch: maxBatch)
        XCTAssertLessThan(model.outputChunk, rows)
        XCTAssertLessThan(model.activationBytes, rows * c.vocabSize * 4 / 2)
        XCTAssertGreaterThanOrEqual(model.activationBytes, model.outputChunk * c.vocabSize * 4)
    }
}
