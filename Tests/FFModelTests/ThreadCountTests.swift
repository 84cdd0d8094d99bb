import FFCore
import XCTest
import FFKernels
import FFTestSupport
@testable import FFModel

/// A training step's loss and gradients on 2 and 3 threads equal those on 1, at sizes where every
/// threaded piece really splits: the products, the element-wise passes, the embedding and position
/// gradients, the patch unfolding, the optimizer. The element-wise pieces keep their bits; split
/// products differ in the last bits (OpenBLAS's edge kernels), hence the tolerances.
final class ThreadCountTests: XCTestCase {
    /// For 1, 2 and 3 threads: a fresh model from `make(threads)`, initialised alike, one training
    /// forward (`forward(model, dropoutKeys)`, returning the loss) and backward; compares the loss
    /// and the gradients on 2 and 3 threads with those on 1.
    private func assertStepsMatch<Model: TrainableModel>(
        _ what: String, batch B: Int, file: StaticString = #filePath, line: UInt = #line,
        make: (_ threads: Int) -> Model, forward: (Model, UnsafePointer<UInt64>) -> Double
    ) {
        let keys = (0..<B).map { UInt64($0 * 7 + 1) }
        let runs = (1...3).map { threads -> (Double, [Float]) in
            let model = make(threads)
            model.initialize(seed: 8)
            model.grads.zero()
            let loss = keys.withUnsafeBufferPointer { forward(model, $0.baseAddress!) }
            model.backward(onStageDone: nil)
            return (loss, Array(UnsafeBufferPointer(start: model.grads.pointer, count: model.grads.count)))
        }
        for (i, run) in runs.enumerated().dropFirst() {
            XCTAssertLessThan(
                abs(run.0 - runs[0].0) / abs(runs[0].0), 1e-6, "\(what): loss, \(i + 1) threads", file: file, line: line
            )
            XCTAssertLessThan(
                relL2(run.1, runs[0].1), 1e-5, "\(what): gradients, \(i + 1) threads", file: file, line: line)
        }
    }

    /// The language models both thread tests run (softmax with learned positions, Fourier with
    /// sinusoids, dropout 0.1), each with `samples` sequences of random tokens and targets (every
    /// 13th target ignored).
    private func languageModelCases(
        dModel: Int, context: Int, samples: Int
    ) -> [(config: LMConfig, tokens: [Int32], targets: [Int32])] {
        [(AttentionKind.softmax, PositionKind.learned), (.fourier(FourierSpec(), rInit: 2.0), .sinusoidal)].map {
            attention, positions in
            var c = LMConfig(vocabSize: 300, layers: 2, dModel: dModel, heads: 4, dFF: 2 * dModel, context: context)
            c.attention = attention
            c.positions = positions
            c.dropout = 0.1
            var rng = SplitMix64(seed: 4)
            let n = samples * context
            let tokens = (0..<n).map { _ in Int32(rng.nextInt(below: c.vocabSize)) }
            let targets = (0..<n).map { i in i % 13 == 5 ? -1 : Int32(rng.nextInt(below: c.vocabSize)) }
            return (c, tokens, targets)
        }
    }

    func testLanguageModelStepMatchesOneThread() {
        let B = 17
        for (c, tokens, targets) in languageModelCases(dModel: 64, context: 64, samples: B) {
            assertStepsMatch(
                "LM \(c.attention)", batch: B, make: { LanguageModel(config: c, maxBatch: B, threads: $0) },
                forward: { model, keys in
                    model.forward(
                        tokens: tokens, targets: targets, batch: B, mode: .train(lossScale: 0.5, dropoutKeys: keys))
                })
        }
    }

    func testVisionTransformerStepMatchesOneThread() {
        for attention in [AttentionKind.softmax, .fourier(FourierSpec(), rInit: 1.0)] {
            var c = ViTConfig(
                imageSize: 28, channels: 1, patch: 4, classes: 10, layers: 2, dModel: 64, heads: 4, dFF: 128)
            c.attention = attention
            let B = 19
            var rng = SplitMix64(seed: 6)
            let images = (0..<(B * 28 * 28)).map { _ in Float(rng.nextNormal()) }
            var targets = [Float](repeating: 0, count: B * 10)
            for b in 0..<B { targets[b * 10 + b % 10] = 1 }
            assertStepsMatch(
                "ViT \(c.attention)", batch: B, make: { VisionTransformer(config: c, maxBatch: B, threads: $0) },
                forward: { model, keys in
                    model.forward(
                        images: images, targets: targets, batch: B, mode: .train(lossScale: 0.25, dropoutKeys: keys))
                })
        }
    }

    /// Two micro-steps (gradients accumulating) through `ModelReplicas` with 2 and 3 copies, and
    /// with more copies than samples, against the primary model alone on one thread: losses to
    /// 1e-6, gradients to 1e-5, every gradient stage reported once, in order and on the calling
    /// thread (also while the copies still run), and the copies' gradients left at zero for the
    /// next step; once without reporting (the stages then summed at the end).
    private func assertReplicasMatch<Model: TrainableModel>(
        _ what: String, batch B: Int, file: StaticString = #filePath, line: UInt = #line,
        make: (_ maxBatch: Int, _ shared: FlatBuffer?) -> Model,
        forward: (Model, Range<Int>, _ micro: Int, UnsafePointer<UInt64>) -> Double
    ) {
        let keys = (0..<(2 * B)).map { UInt64($0 * 7 + 1) }
        let primary = make(B, nil)
        primary.initialize(seed: 8)
        primary.grads.zero()
        var reference = 0.0
        for micro in 0..<2 {
            reference += keys.withUnsafeBufferPointer { forward(primary, 0..<B, micro, $0.baseAddress! + micro * B) }
            primary.backward(onStageDone: nil)
        }
        let expected = primary.grads.array
        let caller = pthread_self()
        // (copies, samples, whether backward reports its stages as a gradient sync would take them)
        for (copies, batch, report) in [(2, B, true), (3, B, true), (2, B, false), (4, 3, true)] {
            let replicas = ModelReplicas<Model>(copies: copies, microBatch: B) { make($0, primary.params) }
            primary.grads.zero()
            var loss = 0.0, stagesSeen: [Int] = [], onCaller = true
            var single = 0.0
            for micro in 0..<2 {
                loss += keys.withUnsafeBufferPointer { k in
                    replicas.forward(batch: batch) { copy, slice in
                        forward(copy, slice, micro, k.baseAddress! + micro * B + slice.lowerBound)
                    }
                }
                XCTAssertNoThrow(
                    try replicas.backward(
                        into: primary.grads, stages: primary.gradientStages, threads: copies,
                        onStageDone: report
                            ? { k in
                                stagesSeen.append(k)
                                onCaller = onCaller && pthread_equal(pthread_self(), caller) != 0
                            } : nil))
            }
            let all = Array(primary.gradientStages.indices)
            XCTAssertEqual(stagesSeen, report ? all + all : [], "\(what): stages reported")
            XCTAssertTrue(onCaller, "\(what): stages reported on the calling thread only")
            for copy in replicas.models {
                XCTAssertTrue(copy.grads.array.allSatisfy { $0 == 0 }, "\(what): a copy's gradients after backward")
            }
            if batch == B {
                XCTAssertLessThan(
                    abs(loss - reference) / abs(reference), 1e-6, "\(what): loss, \(copies) copies", file: file,
                    line: line)
                XCTAssertLessThan(
                    relL2(primary.grads.array, expected), 1e-5, "\(what): gradients, \(copies) copies", file: file,
                    line: line)
            } else {
                // 3 samples on 4 copies: one copy idle; the result is the primary's on those 3.
                XCTAssertEqual(replicas.slices.filter(\.isEmpty).count, 1)
                let check = make(B, nil)
                check.params.pointer.update(from: primary.params.pointer, count: primary.params.count)
                check.grads.zero()
                single = 0
                for micro in 0..<2 {
                    single += keys.withUnsafeBufferPointer { forward(check, 0..<batch, micro, $0.baseAddress! + micro * B) }
                    check.backward(onStageDone: nil)
                }
                XCTAssertLessThan(abs(loss - single) / abs(single), 1e-6, "\(what): loss, idle copy", file: file, line: line)
                XCTAssertLessThan(
                    relL2(primary.grads.array, check.grads.array), 1e-5, "\(what): gradients, idle copy", file: file,
                    line: line)
            }
        }
    }

    func testLanguageModelReplicasMatchOneModel() {
        let B = 7
        for (c, tokens, targets) in languageModelCases(dModel: 32, context: 32, samples: 2 * B) {
            let T = c.context
            assertReplicasMatch(
                "LM \(c.attention)", batch: B,
                make: { LanguageModel(config: c, maxBatch: $0, sharedParams: $1) },
                forward: { model, slice, micro, keys in
                    let first = (micro * B + slice.lowerBound) * T
                    return model.forward(
                        tokens: Array(tokens[first..<(first + slice.count * T)]),
                        targets: Array(targets[first..<(first + slice.count * T)]), batch: slice.count,
                        mode: .train(lossScale: 0.5, dropoutKeys: keys))
                })
        }
    }

    func testVisionTransformerReplicasMatchOneModel() {
        for attention in [AttentionKind.softmax, .fourier(FourierSpec(), rInit: 1.0)] {
            var c = ViTConfig(
                imageSize: 16, channels: 1, patch: 4, classes: 10, layers: 2, dModel: 32, heads: 4, dFF: 64)
            c.attention = attention
            c.dropPath = 0.2
            let B = 7, P = 16 * 16
            var rng = SplitMix64(seed: 6)
            let images = (0..<(2 * B * P)).map { _ in Float(rng.nextNormal()) }
            var targets = [Float](repeating: 0, count: 2 * B * 10)
            for b in 0..<(2 * B) { targets[b * 10 + b % 10] = 1 }
            assertReplicasMatch(
                "ViT \(c.attention)", batch: B,
                make: { VisionTransformer(config: c, maxBatch: $0, sharedParams: $1) },
                forward: { model, slice, micro, keys in
                    let first = micro * B + slice.lowerBound
                    return model.forward(
                        images: Array(images[(first * P)..<((first + slice.count) * P)]),
                        targets: Array(targets[(first * 10)..<((first + slice.count) * 10)]), batch: slice.count,
                        mode: .train(lossScale: 0.25, dropoutKeys: keys))
                })
        }
    }

    /// AdamW split over workers by element ranges equals the serial update bit for bit.
    func testAdamWOverWorkersIsBitIdentical() {
        var layout = ParameterLayout()
        _ = layout.add("a", [300, 200], decays: true)
        _ = layout.add("b", [70_001], decays: false)
        var rng = SplitMix64(seed: 3)
        let p0 = (0..<layout.count).map { _ in Float(rng.nextNormal()) }
        let g = (0..<layout.count).map { _ in Float(rng.nextNormal()) }
        let opt = AdamW(beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        func run(_ threads: Int, _ elements: Range<Int>) -> [Float] {
            var p = p0, m = [Float](repeating: 0.01, count: layout.count),
                v = [Float](repeating: 0.02, count: layout.count)
            for step in 1...3 {
                opt.update(
                    layout: layout, elements: elements, params: &p, grads: g, m: &m, v: &v, base: 0, lr: 1e-3,
                    step: step, gradScale: 0.5, threads: threads)
            }
            return p + m + v
        }
        for elements in [0..<layout.count, 1234..<(layout.count - 17)] {
            let one = run(1, elements)
            for threads in [2, 3] {
                XCTAssertEqual(
                    run(threads, elements).map(\.bitPattern), one.map(\.bitPattern),
                    "\(threads) threads, "
                        + "\(elements)")
            }
        }
    }
}
