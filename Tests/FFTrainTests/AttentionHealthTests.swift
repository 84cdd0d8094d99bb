import FFAnalysis
import FFCore
import FFKernels
import XCTest
@testable import FFTrain
import FFData
import FFModel

/// The data-dependent R initialisation, the health metrics and the collapse alarm.
final class AttentionHealthTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "ffhealth-\(UUID().uuidString)"
        try writeSentenceCorpus(to: dir + "/data", sentences: 500, seed: 3, heldOut: 300)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func config(_ overrides: [String] = []) throws -> TrainConfig {
        let yaml = """
            run: {name: r, dir: \(dir!)/runs, seed: 7}
            data: {dir: \(dir!)/data}
            model: {layers: 3, d_model: 32, heads: 4, d_ff: 64, context: 16, dropout: 0.0}
            train: {steps: 40, batch_size: 8, lr: 3.0e-3, warmup_steps: 4, threads: 1, log_every: 5}
            """
        var tree = try ConfigReader.parse(yaml: yaml, source: "test.yaml")
        try ConfigReader.applyOverrides(overrides, to: &tree)
        return try TrainConfig.parse(tree: tree, source: "test.yaml")
    }

    func metricLines(_ cfg: TrainConfig) throws -> [[String: Any]] {
        let text = try String(contentsOfFile: cfg.runDirectory + "/metrics.jsonl", encoding: .utf8)
        return try text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// `auto` is the default, and R then gives the median query/key pair of the calibration
    /// samples the target weight under the exact kernel (the rule uses the small-u expansion of
    /// log sinc, so this checks that the approximation holds where it is used).
    func testAutoRGivesTheMedianPairTheTargetWeight() throws {
        for (target, mode) in [(0.9, "scalar"), (0.6, "per_dim"), (0.9, "per_head")] {
            let cfg = try config(["model.attention.r_target=\(target)", "model.attention.r_mode=\(mode)"])
            XCTAssertEqual(cfg.model.rCalibration?.target, target)
            let trainer = try Trainer(config: cfg)
            let chosen = try cfg.model.rCalibration!.apply(to: trainer.workload)
            XCTAssertEqual(chosen.count, 3)
            let stack = trainer.workload.stack, p = trainer.workload.params.pointer
            for l in 0..<3 {
                let R = stack.rValues(layer: l, params: p)
                XCTAssertEqual(Set(R), [chosen[l]], "every entry of layer \(l)'s R is set")
                XCTAssertGreaterThan(chosen[l], 0)
                // Exact kernel weights of every causal pair of the 8 calibration samples.
                var w: [Double] = []
                for s in 0..<8 {
                    _ = try trainer.workload.analysisForward(split: "train", first: s, samples: 1)
                    let qkv = stack.lastQKV(layer: l)
                    for i in 0..<16 {
                        for j in 0...i {
                            for h in 0..<4 {
                                var y = 1.0
                                for d in 0..<8 {
                                    let u =
                                        Double(chosen[l])
                                        * Double(qkv[i * 96 + h * 8 + d] - qkv[j * 96 + 32 + h * 8 + d])
                                    y *= u == 0 ? 1 : sin(u) / u
                                }
                                w.append(pow(y, 4))
                            }
                        }
                    }
                }
                w.sort()
                XCTAssertEqual(w[w.count / 2], target, accuracy: 0.03, "layer \(l), target \(target), \(mode)")
            }
        }
        let fixed = try config(["model.attention.r_init=2.0"])
        XCTAssertNil(fixed.model.rCalibration)
        XCTAssertThrowsError(try config(["model.attention.r_init=-1"])) { e in
            XCTAssertTrue(
                "\(e)".contains("model.attention.r_init") && "\(e)".contains("positive number or auto"), "\(e)")
        }
        XCTAssertThrowsError(try config(["model.attention.r_target=1.5"])) { e in
            XCTAssertTrue("\(e)".contains("model.attention.r_target"), "\(e)")
        }
    }

    /// The calibration is part of a fresh start only: it is recorded once, two runs from the same
    /// seed agree bit for bit, and a resumed run keeps the R of its checkpoint.
    func testAutoRIsDeterministicAndNotRedoneOnResume() throws {
        let a = try Trainer(config: try config(["train.steps=6", "checkpoint.every=3", "run.name=a"]))
        try a.run()
        let b = try Trainer(config: try config(["train.steps=6", "run.name=b"]))
        try b.run()
        XCTAssertEqual(a.workload.params.array, b.workload.params.array)

        let cfg = try config(["train.steps=6", "checkpoint.every=3", "run.name=a"])
        let lines = try metricLines(cfg)
        XCTAssertEqual(lines.filter { $0["event"] as? String == "r_calibrated" }.count, 1)
        // Resume the 3-step checkpoint and finish: no second calibration, the same final weights.
        let c = try Trainer(config: cfg)
        XCTAssertNotNil(try c.resume(from: cfg.checkpointDirectory + "/step-00000003"))
        var events: [TrainEvent] = []
        try c.run { events.append($0) }
        XCTAssertFalse(
            events.contains {
                if case .calibrated = $0 { return true }; return false
            })
        XCTAssertEqual(try metricLines(cfg).filter { $0["event"] as? String == "r_calibrated" }.count, 1)
        XCTAssertEqual(c.workload.params.array, a.workload.params.array)
    }

    /// A forced collapse (a huge R) raises one alarm per collapsed layer, in the events and in
    /// metrics.jsonl; the default start stays quiet, and its health lines are complete.
    func testCollapseAlarmFiresOnACollapsedModelAndNotOnAHealthyOne() throws {
        let bad = try config(["model.attention.r_init=60", "run.name=bad", "train.steps=20"])
        var events: [TrainEvent] = []
        try Trainer(config: bad).run { events.append($0) }
        let alarms = events.compactMap { e -> Collapse? in
            if case .collapse(let c) = e { return c }; return nil
        }
        XCTAssertEqual(Set(alarms.map(\.layer)), [0, 1, 2], "every layer collapses at R = 60")
        XCTAssertEqual(alarms.count, 3, "one alarm per layer")
        XCTAssertEqual(alarms[0].since, 1)
        XCTAssertTrue(alarms[0].message.contains("layer 0") && alarms[0].message.contains("r_init"), alarms[0].message)
        XCTAssertEqual(try metricLines(bad).filter { $0["alarm"] as? String == "attention_collapse" }.count, 3)

        let good = try config(["run.name=good"])
        events = []
        try Trainer(config: good).run { events.append($0) }
        XCTAssertFalse(
            events.contains {
                if case .collapse = $0 { return true }; return false
            })
        let health = try metricLines(good).compactMap { $0["attn_health"] as? [[String: Any]] }
        XCTAssertEqual(health.count, 9, "steps 1, 5, ..., 40")
        for h in health.last! {
            XCTAssertGreaterThan(h["row_sum"] as! Double, 0.9)
            XCTAssertLessThan(h["collapsed"] as! Double, 0.02)
            XCTAssertLessThanOrEqual(h["u10"] as! Double, h["u50"] as! Double)
            XCTAssertLessThanOrEqual(h["u50"] as! Double, h["u90"] as! Double)
            XCTAssertGreaterThan(h["q_norm"] as! Double, 0)
        }
        // The collapsed run's health says why: most rows dead, kernel arguments far past π.
        let deadHealth = try metricLines(bad).compactMap { $0["attn_health"] as? [[String: Any]] }.last!
        XCTAssertGreaterThan(deadHealth[0]["collapsed"] as! Double, 0.5)
        XCTAssertGreaterThan(deadHealth[0]["u50"] as! Double, 1)
        // Softmax has no health lines and no alarms.
        let soft = try config(["model.attention.kind=softmax", "run.name=soft", "train.steps=5"])
        try Trainer(config: soft).run()
        XCTAssertTrue(try metricLines(soft).allSatisfy { $0["attn_health"] == nil })
    }

    /// Quantiles by selection equal the sorted array's nearest-rank quantiles: random values,
    /// runs of duplicates, all equal, one and two values.
    func testQuantilesBySelectionEqualTheSortedOnes() {
        var rng = SplitMix64(seed: 12)
        let cases: [[Double]] = [
            (0..<1000).map { _ in rng.nextNormal() },
            (0..<5000).map { _ in Double(rng.nextInt(below: 7)) },
            Array(repeating: 2.5, count: 300), [4], [3, -1], [],
        ]
        let qs = [0.0, 0.1, 0.5, 0.9, 0.999]
        for values in cases {
            var work = values
            let sorted = values.sorted()
            let got = quantiles(&work, qs)
            for (q, g) in zip(qs, got) {
                let want = quantile(sorted, q)
                XCTAssertTrue(g == want || (g.isNaN && want.isNaN), "q \(q) of \(values.count) values: \(g) vs \(want)")
            }
            XCTAssertEqual(work.sorted(), sorted, "only reordered")
        }
    }

    func testAlarmNeedsAStreakAndFiresOncePerLayer() {
        var a = CollapseAlarm(layers: 2, threshold: 0.5, patience: 3)
        XCTAssertEqual(a.observe(step: 10, rowSums: [0.4, 0.9]), [])
        XCTAssertEqual(a.observe(step: 20, rowSums: [0.3, 0.9]), [])
        XCTAssertEqual(a.observe(step: 30, rowSums: [0.6, 0.4]), [], "layer 0's streak is broken")
        XCTAssertEqual(a.observe(step: 40, rowSums: [0.4, 0.4]), [])
        XCTAssertEqual(a.observe(step: 50, rowSums: [0.4, 0.4]).map(\.layer), [1])
        let c = a.observe(step: 60, rowSums: [0.2, 0.1])
        XCTAssertEqual(c.map(\.layer), [0])
        XCTAssertEqual(c.first?.since, 40)
        XCTAssertEqual(a.observe(step: 70, rowSums: [0.2, 0.1]), [], "each layer warns once")
        var off = CollapseAlarm(layers: 1, threshold: 0, patience: 1)
        XCTAssertEqual(off.observe(step: 1, rowSums: [0]), [])
    }
}
