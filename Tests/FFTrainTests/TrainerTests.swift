import FFFormats
import FFKernels
import XCTest
@testable import FFTrain
import FFData
import FFModel

/// End to end on a small generated corpus: prepare-style shards, a short run, its files, eval.
final class TrainerTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "fftrain-\(UUID().uuidString)"
        try writeSentenceCorpus(to: dir + "/data", sentences: 600, seed: 1, heldOut: 400)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func config(_ overrides: [String] = []) throws -> TrainConfig {
        let yaml = """
            run: {name: r, dir: \(dir!)/runs, seed: 5}
            data: {dir: \(dir!)/data}
            model: {layers: 2, d_model: 32, heads: 4, d_ff: 64, context: 16, dropout: 0.0, norm: pre}
            train: {steps: 60, batch_size: 8, lr: 3.0e-3, warmup_steps: 5, threads: 1, log_every: 20}
            """
        var tree = try ConfigReader.parse(yaml: yaml, source: "test.yaml")
        try ConfigReader.applyOverrides(overrides, to: &tree)
        return try TrainConfig.parse(tree: tree, source: "test.yaml")
    }

    func testShortRunLearnsWritesMetricsAndWeightsThatEvalReloads() throws {
        for kind in ["fourier", "softmax"] {
            let cfg = try config(["model.attention.kind=\(kind)", "run.name=\(kind)"])
            let trainer = try Trainer(config: cfg)
            var events: [TrainEvent] = []
            let summary = try trainer.run { events.append($0) }
            XCTAssertLessThan(summary.test.perplexity!, 0.5 * summary.test.unigramPerplexity!, kind)
            XCTAssertTrue(
                events.contains {
                    if case .step(let m) = $0 { return m.step == 60 }; return false
                })
            let metrics = try String(contentsOfFile: cfg.runDirectory + "/metrics.jsonl", encoding: .utf8)
            let lines = metrics.split(separator: "\n")
            XCTAssertGreaterThanOrEqual(lines.count, 4)
            for l in lines { XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(l.utf8))) }
            // A fresh trainer (new random init) that loads the weights gets the same perplexity.
            let other = try Trainer(config: try config(["model.attention.kind=\(kind)", "run.seed=99"]))
            try other.loadWeights(from: summary.weightsPath)
            let again = try other.evaluateSplits()
            XCTAssertEqual(again[1].perplexity!, summary.test.perplexity!, accuracy: 1e-9 * summary.test.perplexity!)
        }
    }

    func testSameSeedSameRunBitForBit() throws {
        let a = try Trainer(config: try config(["train.steps=8", "model.dropout=0.1"]))
        try a.run()
        let b = try Trainer(config: try config(["train.steps=8", "model.dropout=0.1", "run.name=r2"]))
        try b.run()
        XCTAssertEqual(a.workload.params.array, b.workload.params.array)
    }

    func testGradientAccumulationEqualsOneBigBatch() throws {
        let a = try Trainer(config: try config(["train.steps=5", "train.grad_accum=1"]))
        try a.run()
        let b = try Trainer(config: try config(["train.steps=5", "train.grad_accum=4", "run.name=r2"]))
        try b.run()
        let pa = a.workload.params.array, pb = b.workload.params.array
        var worst: Float = 0
        for i in 0..<pa.count { worst = max(worst, abs(pa[i] - pb[i]) / max(abs(pa[i]), 1e-3)) }
        XCTAssertLessThan(worst, 1e-4)
    }

    /// Three threads that each train a copy on a slice of the samples, and three that split every
    /// operation, end 5 steps (with dropout) where one thread does, to fp32 rounding; `auto`
    /// picks the copies when the micro-batch has a sample per thread.
    func testThreadSplitsTrainAsOneThread() throws {
        let one = try Trainer(config: try config(["train.steps=5", "model.dropout=0.1"]))
        try one.run()
        for split in ["samples", "operations", "auto"] {
            let t = try Trainer(
                config: try config([
                    "train.steps=5", "model.dropout=0.1", "train.threads=3", "train.thread_split=\(split)",
                    "run.name=\(split)",
                ]))
            let workload = try XCTUnwrap(t.workload as? LanguageModelWorkload)
            XCTAssertEqual(workload.replicas?.models.count, split == "operations" ? nil : 3, split)
            try t.run()
            let pa = one.workload.params.array, pb = t.workload.params.array
            var worst: Float = 0
            for i in 0..<pa.count { worst = max(worst, abs(pa[i] - pb[i]) / max(abs(pa[i]), 1e-3)) }
            XCTAssertLessThan(worst, 1e-4, split)
        }
        var c = try config(["train.threads=16", "train.batch_size=8"])
        XCTAssertFalse(c.train.splitsSamples(microBatch: 8), "auto: fewer samples than threads")
        c.train.threadSplit = .samples
        XCTAssertTrue(c.train.splitsSamples(microBatch: 8))
        // The memory estimate counts the copies' gradient buffers and activations.
        let estimate = { (split: String) in
            MemoryBudget.estimate(
                try self.config(["train.threads=2", "train.thread_split=\(split)"]), microBatch: 8, tokens: 16,
                outputs: 100)
        }
        XCTAssertGreaterThan(try estimate("samples"), try estimate("operations"))
    }

    func testDataErrorsNameTheFile() throws {
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/data/valid.bin"))
        XCTAssertThrowsError(try Trainer(config: try config())) { e in
            XCTAssertTrue("\(e)".contains("valid.bin") && "\(e)".contains("shorter than"), "\(e)")
        }
        XCTAssertThrowsError(try Trainer(config: try config(["data.train=missing.bin"]))) { e in
            XCTAssertTrue("\(e)".contains("missing.bin"), "\(e)")
        }
        XCTAssertThrowsError(try Trainer(config: try config(["model.context=100000"]))) { e in
            XCTAssertTrue("\(e)".contains("fewer than context"), "\(e)")
        }
    }

    func testSafetensorsRoundTripAndBoundsChecks() throws {
        let values: [Float] = [1, -2, 3.5, 4, 5, 6]
        let path = dir + "/t.safetensors"
        try values.withUnsafeBufferPointer { buf in
            try Safetensors.write(
                [
                    .init(name: "a", shape: [2, 2], data: UnsafeBufferPointer(rebasing: buf[0..<4])),
                    .init(name: "b", shape: [2], data: UnsafeBufferPointer(rebasing: buf[4..<6])),
                ],
                metadata: ["k": "v"], to: path)
        }
        let (t, meta) = try Safetensors.read(path: path)
        XCTAssertEqual(t["a"]?.shape, [2, 2]); XCTAssertEqual(t["a"]?.values, [1, -2, 3.5, 4])
        XCTAssertEqual(t["b"]?.values, [5, 6]); XCTAssertEqual(meta, ["k": "v"])
        let raw = FileManager.default.contents(atPath: path)!
        let headerLen = Int(raw.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        XCTAssertEqual(headerLen % 8, 0)
        try raw.prefix(raw.count - 4).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try Safetensors.read(path: path)) { e in
            XCTAssertTrue("\(e)".contains("do not fit"), "\(e)")
        }
    }
}

extension TrainerTests {
    func testSlidingWindowWithStrideContextEqualsSegmentEvaluation() throws {
        let trainer = try Trainer(config: try config(["train.steps=3"]))
        try trainer.run()
        let segments = try trainer.evaluateSplits()
        let sliding = try trainer.evaluateSplits(stride: 16)
        XCTAssertEqual(sliding[0].perplexity, segments[0].perplexity)
        XCTAssertEqual(sliding[1].perplexity, segments[1].perplexity)
        let overlapping = try trainer.evaluateSplits(stride: 4)
        XCTAssertEqual(overlapping[1].tokens, segments[1].tokens, "the same tokens are scored, with more context")
        XCTAssertTrue(overlapping[1].perplexity!.isFinite)
        XCTAssertNotEqual(overlapping[1].perplexity, segments[1].perplexity)
    }
}
