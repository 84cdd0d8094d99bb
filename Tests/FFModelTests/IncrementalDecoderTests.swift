import FFCore
import XCTest
import FFKernels
@testable import FFModel

final class IncrementalDecoderTests: XCTestCase {
    func model(
        _ attention: AttentionKind, norm: NormPlacement = .pre, positions: PositionKind = .sinusoidal,
        context: Int = 12
    ) -> LanguageModel {
        var c = LMConfig(vocabSize: 37, layers: 2, dModel: 24, heads: 3, dFF: 40, context: context)
        c.attention = attention; c.norm = norm; c.positions = positions; c.dropout = 0
        c.initStd = 0.2  // large enough that attention is far from uniform
        let m = LanguageModel(config: c, maxBatch: 1)
        m.initialize(seed: 7)
        // R entries that differ by head and dimension, so a wrong index would show.
        var rng = SplitMix64(seed: 3)
        for t in m.layout.tensors where t.name.hasSuffix("attn.R") {
            for i in t.range { m.params.pointer[i] = 0.3 + rng.nextFloat() }
        }
        return m
    }

    /// Logits (T, V) of the model's ordinary forward over `tokens` (padded to the context).
    func fullLogits(_ m: LanguageModel, _ tokens: [Int32]) -> [Float] {
        let T = m.config.context, V = m.config.vocabSize
        let inputs = tokens + [Int32](repeating: 0, count: T - tokens.count)
        let targets = [Int32](repeating: -1, count: T)  // -1 rows keep their logits
        _ = m.forward(tokens: inputs, targets: targets, batch: 1, mode: .eval)
        return Array(UnsafeBufferPointer(start: m.logits, count: T * V))
    }

    static let kinds: [(String, AttentionKind)] = [
        ("softmax", .softmax),
        ("fourier scalar", .fourier(FourierSpec(rMode: .scalar), rInit: 1)),
        ("fourier per_dim", .fourier(FourierSpec(rMode: .perDim), rInit: 1)),
        ("fourier per_head", .fourier(FourierSpec(rMode: .perHead), rInit: 1)),
    ]

    func testCachedLogitsMatchTheFullForward() {
        var rng = SplitMix64(seed: 11)
        for (name, kind) in Self.kinds {
            for (norm, positions) in [(NormPlacement.pre, PositionKind.sinusoidal), (.post, .learned)] {
                let m = model(kind, norm: norm, positions: positions)
                let T = m.config.context, V = m.config.vocabSize
                let tokens = (0..<T).map { _ in Int32(rng.nextInt(below: V)) }
                let full = fullLogits(m, tokens)
                let dec = IncrementalDecoder(model: m)
                var worst: Float = 0, scale: Float = 0
                for t in 0..<T {
                    let row = dec.append(tokens[t])
                    for v in 0..<V {
                        worst = max(worst, abs(row[v] - full[t * V + v])); scale = max(scale, abs(full[t * V + v]))
                    }
                }
                print("cached vs full forward, \(name) \(norm) \(positions): max |diff| \(worst), max |logit| \(scale)")
                XCTAssertLessThan(
                    worst, 1e-5 * max(1, scale),
                    "\(name) \(norm) \(positions): max |diff| \(worst), "
                        + "max |logit| \(scale)")
            }
        }
    }

    /// Adaptive input and softmax (the paper's WikiText-103 set-up): the decoder's log-probabilities
    /// equal the adaptive softmax's on the full forward's final hidden states.
    func testAdaptiveSoftmaxModelsDecode() {
        for norm in [NormPlacement.post, .pre] {
            var c = LMConfig(vocabSize: 60, layers: 2, dModel: 16, heads: 2, dFF: 32, context: 8)
            c.attention = .fourier(FourierSpec(), rInit: 1); c.norm = norm; c.dropout = 0; c.initStd = 0.2
            c.adaptive = AdaptiveSoftmaxConfig(
                vocabSize: 60, dModel: 16, cutoffs: [20, 40], divVal: 2, tieWeights: true,
                tieProjections: true)
            let m = LanguageModel(config: c, maxBatch: 1)
            m.initialize(seed: 5)
            let tokens: [Int32] = [3, 45, 12, 59, 0, 21, 33, 7]
            _ = m.forward(tokens: tokens, targets: tokens, batch: 1, mode: .eval)
            let hidden = norm == .pre ? m.lnfOut : m.stack.layerOutput(c.layers - 1)
            let full = (0..<8).map { t in
                m.adaptiveOutput!.logProbabilities(Array(UnsafeBufferPointer(start: hidden + t * 16, count: 16)))
            }
            let dec = IncrementalDecoder(model: m)
            var worst = 0.0
            for t in 0..<8 {
                let row = dec.append(tokens[t])
                for v in 0..<60 { worst = max(worst, abs(Double(row[v]) - full[t][v])) }
            }
            XCTAssertLessThan(worst, 1e-5, "\(norm): max |diff| \(worst)")
        }
    }

    func testSlidingWindowEqualsAFreshPassOverTheWindow() {
        for (name, kind) in Self.kinds {
            let m = model(kind, context: 8)
            let gen = TextGenerator(model: m, options: SamplingOptions(temperature: 0))
            let tokens: [Int32] = (0..<19).map { Int32(($0 * 7) % 37) }
            let logits = Array(gen.feed(tokens))
            XCTAssertEqual(gen.window.count, 7, name)  // 19 tokens: slides at 9 and 13 and 17, keeping 4 each time
            XCTAssertEqual(gen.window, Array(tokens.suffix(7)), name)
            let full = fullLogits(m, gen.window)
            let V = m.config.vocabSize, t = gen.window.count - 1
            for v in 0..<V { XCTAssertEqual(logits[v], full[t * V + v], accuracy: 1e-5, "\(name) logit \(v)") }
        }
    }

    func testSamplingIsReproducibleAndRespectsTopK() {
        let m = model(.fourier(FourierSpec(), rInit: 1))
        func run(_ o: SamplingOptions) -> [Int32] {
            TextGenerator(model: m, options: o).generate(prompt: [1, 2, 3], maxTokens: 30)
        }
        let a = run(SamplingOptions(temperature: 1, seed: 5)), b = run(SamplingOptions(temperature: 1, seed: 5))
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.count, 30)
        XCTAssertNotEqual(a, run(SamplingOptions(temperature: 1, seed: 6)))
        // top-k 1 and a tiny top-p are greedy.
        let greedy = run(SamplingOptions(temperature: 0))
        XCTAssertEqual(run(SamplingOptions(temperature: 1, topK: 1, seed: 9)), greedy)
        XCTAssertEqual(run(SamplingOptions(temperature: 0.7, topP: 1e-9, seed: 9)), greedy)
        // Stops after a stop token.
        let stopped = TextGenerator(model: m, options: SamplingOptions(temperature: 0))
            .generate(prompt: [1, 2, 3], maxTokens: 30, stop: [greedy[2]])
        XCTAssertEqual(stopped, Array(greedy.prefix(through: greedy.firstIndex(of: greedy[2])!)))
    }

    /// Train a tiny model on one sequence (as TrainingTests does), then greedy decoding from its
    /// first three tokens must give back the rest: the cache carries what attention needs.
    func testGreedyDecodingReproducesAMemorisedSequence() {
        for attention in [AttentionKind.fourier(FourierSpec(), rInit: 2.0), .softmax] {
            var c = LMConfig(vocabSize: 16, layers: 2, dModel: 32, heads: 4, dFF: 64, context: 12)
            c.dropout = 0; c.attention = attention; c.norm = .pre
            let model = LanguageModel(config: c, maxBatch: 1, threads: 1)
            model.initialize(seed: 1)
            let seq: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9]
            let inputs = Array(seq.prefix(12)), targets = Array(seq.dropFirst())
            let m = FlatBuffer(count: model.params.count), v = FlatBuffer(count: model.params.count)
            let opt = AdamW()
            let keys: [UInt64] = [0]
            for step in 1...150 {
                model.grads.zero()
                _ = keys.withUnsafeBufferPointer {
                    model.forward(
                        tokens: inputs, targets: targets, batch: 1,
                        mode: .train(lossScale: 1.0 / 12, dropoutKeys: $0.baseAddress!))
                }
                model.backward()
                opt.update(
                    layout: model.layout, params: model.params, grads: model.grads, m: m, v: v, lr: 1e-2,
                    step: step, gradScale: 1)
            }
            let gen = TextGenerator(model: model, options: SamplingOptions(temperature: 0))
            let out = gen.generate(prompt: Array(seq.prefix(3)), maxTokens: 10)
            XCTAssertEqual(out, Array(seq.dropFirst(3)), attention.name)
        }
    }
}
