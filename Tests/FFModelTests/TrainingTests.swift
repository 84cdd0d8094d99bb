import XCTest
import FFKernels
@testable import FFModel

final class TrainingTests: XCTestCase {
    /// A tiny model must drive its loss on one short sequence to near zero: forward, backward and
    /// AdamW together learn.
    func testTinyModelMemorisesASequence() {
        for attention in [AttentionKind.fourier(FourierSpec(), rInit: 2.0), .softmax] {
            var c = LMConfig(vocabSize: 16, layers: 2, dModel: 32, heads: 4, dFF: 64, context: 12)
            c.dropout = 0; c.attention = attention; c.norm = .pre
            let model = LanguageModel(config: c, maxBatch: 1, threads: 1)
            model.initialize(seed: 1)
            let seq: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9]
            let inputs = Array(seq.prefix(12)), targets = Array(seq.dropFirst())
            let m = FlatBuffer(count: model.params.count), v = FlatBuffer(count: model.params.count)
            let opt = AdamW()
            var loss = 0.0
            let keys: [UInt64] = [0]
            for step in 1...150 {
                model.grads.zero()
                loss =
                    keys.withUnsafeBufferPointer {
                        model.forward(
                            tokens: inputs, targets: targets, batch: 1,
                            mode: .train(lossScale: 1.0 / 12, dropoutKeys: $0.baseAddress!))
                    } / 12
                model.backward()
                opt.update(
                    layout: model.layout, params: model.params, grads: model.grads, m: m, v: v, lr: 1e-2, step: step,
                    gradScale: 1)
            }
            XCTAssertLessThan(loss, 0.05, "\(attention.name) did not memorise: loss \(loss)")
            let eval = model.forward(tokens: inputs, targets: targets, batch: 1, mode: .eval) / 12
            XCTAssertLessThan(eval, 0.05)
        }
    }

    func testAdamWStepMatchesHandComputation() {
        var layout = ParameterLayout()
        layout.add("w", [2], decays: true)
        layout.add("b", [1], decays: false)
        let p = FlatBuffer(count: 3), g = FlatBuffer(count: 3), m = FlatBuffer(count: 3), v = FlatBuffer(count: 3)
        p[0] = 1; p[1] = -2; p[2] = 0.5
        g[0] = 0.1; g[1] = -0.3; g[2] = 2
        let opt = AdamW(beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1)
        opt.update(layout: layout, params: p, grads: g, m: m, v: v, lr: 0.01, step: 1, gradScale: 0.5)
        // Step 1: m̂ = g', v̂ = g'^2, so the update is lr * sign(g') (plus decay on decaying tensors).
        XCTAssertEqual(p[0], 1 * (1 - 0.001) - 0.01, accuracy: 1e-6)
        XCTAssertEqual(p[1], -2 * (1 - 0.001) + 0.01, accuracy: 1e-6)
        XCTAssertEqual(p[2], 0.5 - 0.01, accuracy: 1e-6)  // no decay on "b"
        XCTAssertEqual(m[2], 0.1 * 1.0, accuracy: 1e-6)  // (1 - beta1) * g * gradScale
        XCTAssertEqual(v[2], 0.01 * 1.0, accuracy: 1e-6)
    }

    func testScheduleWarmsUpThenDecaysToMin() {
        let s = LRSchedule(peak: 1, warmup: 10, total: 110, minLR: 0.1, decay: .cosine)
        XCTAssertEqual(s.lr(at: 5), 0.5, accuracy: 1e-6)
        XCTAssertEqual(s.lr(at: 10), 1, accuracy: 1e-6)
        XCTAssertEqual(s.lr(at: 60), 0.55, accuracy: 1e-6)
        XCTAssertEqual(s.lr(at: 110), 0.1, accuracy: 1e-6)
    }

    func testInitialisationIsDeterministicAndNamed() {
        let c = LMConfig(vocabSize: 10, layers: 1, dModel: 8, heads: 2, dFF: 16, context: 4)
        let a = LanguageModel(config: c, maxBatch: 1), b = LanguageModel(config: c, maxBatch: 1)
        a.initialize(seed: 3); b.initialize(seed: 3)
        XCTAssertEqual(a.params.array, b.params.array)
        XCTAssertEqual(a.layout["blocks.0.attn.R"]?.shape, [1])
        XCTAssertEqual(a.params[a.layout["blocks.0.attn.R"]!.offset], 2.0)
        XCTAssertEqual(a.layout["blocks.0.attn.qkv.weight"]?.shape, [24, 8])
        XCTAssertFalse(a.layout["blocks.0.attn.R"]!.decays)
        XCTAssertNil(a.layout["lm_head.weight"])  // tied
    }
}
