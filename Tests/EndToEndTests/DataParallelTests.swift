import Foundation
import XCTest
import FFData

enum TokenShardCount {
    static func of(_ path: String) throws -> Int { try TokenShard(path: path).count }
}

/// Data parallelism with real `mpirun` and real ranks, against the single-process run.
final class DataParallelTests: XCTestCase {
    var h: Harness!
    override func setUpWithError() throws { h = try Harness() }
    override func tearDown() { h = nil }

    /// ‖a − b‖ / ‖b‖ over all parameters (L2). Per-tensor maxima would be dominated by directions
    /// the loss does not depend on at all (softmax attention's key bias: adding a constant to all
    /// scores of a row changes nothing), whose gradient is pure rounding noise that Adam turns into
    /// full-size steps; the printout names the worst tensor anyway.
    func relativeDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Double {
        XCTAssertEqual(Set(a.keys), Set(b.keys))
        var num = 0.0, den = 0.0, worst = (0.0, "")
        for (name, x) in a {
            guard let y = b[name], x.count == y.count else {
                XCTFail("tensor \(name) differs in shape"); return .infinity
            }
            var tn = 0.0, td = 0.0
            for i in 0..<x.count { let d = Double(x[i] - y[i]); tn += d * d; td += Double(y[i]) * Double(y[i]) }
            num += tn; den += td
            let r = (tn / max(td, 1e-30)).squareRoot()
            if r > worst.0 { worst = (r, name) }
        }
        let rel = (num / den).squareRoot()
        print("relative L2 difference \(rel); worst tensor \(worst.1) at \(worst.0)")
        return rel
    }

    func assertSucceeded(_ o: Harness.Outcome, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(o.timedOut, "timed out:\n\(o.output)", file: file, line: line)
        XCTAssertEqual(o.status, 0, o.output, file: file, line: line)
    }

    func testTwoRanksEqualOneRankForBothAttentions() throws {
        for attention in ["fourier", "softmax"] {
            let one = try h.config(name: "one-\(attention)", attention: attention)
            assertSucceeded(try h.run([h.binary, "--config", one]))
            let two = try h.config(name: "two-\(attention)", attention: attention)
            assertSucceeded(try h.mpirun(2, ["--config", two]))
            let d = relativeDifference(try h.weights("two-\(attention)"), try h.weights("one-\(attention)"))
            XCTAssertLessThan(d, 1e-5, "\(attention): 2 ranks vs 1 rank after 20 steps")
            XCTAssertGreaterThan(d, 0, "the runs should differ by rounding only, not be the same file")
        }
    }

    /// `r_init: auto` (the default) runs its calibration samples one at a time, so 1, 2 and 3
    /// ranks set bit-identical R before the first step.
    func testAutoRIsIdenticalForOneTwoAndThreeRanks() throws {
        func calibrated(_ run: String) throws -> [Double] {
            let text = try String(contentsOfFile: "\(h.dir)/runs/\(run)/metrics.jsonl", encoding: .utf8)
            let lines = try text.split(separator: "\n").map {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
            let r = lines.filter { $0["event"] as? String == "r_calibrated" }
            XCTAssertEqual(r.count, 1, run)
            return r.first?["r"] as? [Double] ?? []
        }
        assertSucceeded(try h.run([h.binary, "--config", try h.config(name: "r1", steps: 1, batch: 6)]))
        assertSucceeded(try h.mpirun(2, ["--config", try h.config(name: "r2", steps: 1, batch: 6)]))
        assertSucceeded(try h.mpirun(3, ["--config", try h.config(name: "r3", steps: 1, batch: 6)]))
        let one = try calibrated("r1")
        XCTAssertEqual(one.count, 2)
        XCTAssertTrue(one.allSatisfy { $0 > 0 && $0.isFinite }, "\(one)")
        XCTAssertEqual(try calibrated("r2"), one)
        XCTAssertEqual(try calibrated("r3"), one)
    }

    /// 3 ranks on 2 cores (oversubscribed) over Open MPI's TCP transport, the multi-node path,
    /// with gradient accumulation on top: 3 ranks x 2 micro-steps x 2 sequences = 12.
    func testThreeRanksOverTCPWithAccumulationEqualOneRank() throws {
        let one = try h.config(name: "one", batch: 12)
        assertSucceeded(try h.run([h.binary, "--config", one]))
        let three = try h.config(name: "three", batch: 12, accum: 2)
        assertSucceeded(try h.mpirun(3, ["--config", three], mca: [("btl", "self,tcp")]))
        XCTAssertLessThan(relativeDifference(try h.weights("three"), try h.weights("one")), 1e-5)
    }

    /// ZeRO-1 with 2 ranks and with 3 (over TCP, with accumulation): equal element ranges that cut
    /// tensors, buckets reduced to their owners during backward, AdamW with weight decay on pieces
    /// of tensors, parameters all-gathered; against the 1-rank run without ZeRO-1. Each rank keeps
    /// the moments of 1/N of the elements, to within the 16-element alignment of the boundaries.
    func testZeroOneWithTwoAndThreeRanksEqualsOneRank() throws {
        let one = try h.config(name: "one", batch: 12, weightDecay: 0.1)
        assertSucceeded(try h.run([h.binary, "--config", one]))
        for (n, accum) in [(2, 1), (3, 2)] {
            let cfg = try h.config(name: "zero\(n)", batch: 12, accum: accum, zero1: true, weightDecay: 0.1)
            assertSucceeded(try h.mpirun(n, ["--config", cfg], mca: n == 3 ? [("btl", "self,tcp")] : []))
            let d = relativeDifference(try h.weights("zero\(n)"), try h.weights("one"))
            XCTAssertLessThan(d, 1e-5, "ZeRO-1 on \(n) ranks vs 1 rank after 20 steps")
            XCTAssertGreaterThan(d, 0, "the runs should differ by rounding only")
            let memory = try memoryRecord("zero\(n)")
            let total = try h.weights("one").values.reduce(0) { $0 + $1.count }
            let bytes = memory["optimizer_bytes"] as? [Int] ?? []
            XCTAssertEqual(bytes.count, n)
            XCTAssertEqual(bytes.reduce(0, +), 8 * total, "the partitions cover every element once")
            for b in bytes {
                XCTAssertLessThanOrEqual(abs(b - 8 * total / n), 8 * 16, "optimizer bytes per rank \(bytes)")
            }
        }
    }

    /// Ranks and threads together: 2 ranks × 2 threads that split the samples (a copy of the
    /// model per thread), with gradient accumulation, plain and under ZeRO-1 (the copies'
    /// gradients reach the bucketed sync stage by stage), against 1 rank × 1 thread.
    func testTwoRanksOfTwoThreadsEachEqualOneRank() throws {
        let one = try h.config(name: "one", batch: 12, weightDecay: 0.1)
        assertSucceeded(try h.run([h.binary, "--config", one]))
        for zero1 in [false, true] {
            let name = zero1 ? "hybrid-zero1" : "hybrid"
            let cfg = try h.config(name: name, batch: 12, accum: 2, zero1: zero1, weightDecay: 0.1)
            let threads = ["--set", "train.threads=2", "--set", "train.thread_split=samples"]
            assertSucceeded(try h.mpirun(2, ["--config", cfg] + threads))
            let d = relativeDifference(try h.weights(name), try h.weights("one"))
            XCTAssertLessThan(d, 1e-5, "\(name): 2 ranks x 2 threads vs 1 rank x 1 thread after 20 steps")
            XCTAssertGreaterThan(d, 0, "the runs should differ by rounding only")
        }
    }

    /// The start-up memory record of a run's metrics.jsonl.
    func memoryRecord(_ run: String) throws -> [String: Any] {
        let text = try String(contentsOfFile: "\(h.dir)/runs/\(run)/metrics.jsonl", encoding: .utf8)
        for line in text.split(separator: "\n") {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            if o["event"] as? String == "memory" { return o }
        }
        XCTFail("\(run): no memory record in metrics.jsonl")
        return [:]
    }

    func testEverySampleOfAnEpochIsUsedOnceAcrossRanks() throws {
        // 400 lines of 7-8 tokens / 16 per sample: ~190 samples; batch 12 -> 15 full steps an epoch.
        let cfg = try h.config(name: "audit", steps: 40, batch: 12, accum: 2)
        let prefix = h.dir + "/samples"
        assertSucceeded(try h.mpirun(3, ["--config", cfg, "--debug-log-samples", prefix]))
        var perEpoch: [Int: [Int]] = [:]
        var steps: Set<Int> = []
        for r in 0..<3 {
            let text = try String(contentsOfFile: "\(prefix).rank\(r)", encoding: .utf8)
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ").map { Int($0)! }
                steps.insert(f[0])
                perEpoch[f[1], default: []] += f[2...]
            }
        }
        XCTAssertEqual(steps, Set(1...40))
        let epoch0 = perEpoch[0]!
        XCTAssertEqual(epoch0.count, Set(epoch0).count, "a sample was used twice in epoch 0")
        // A full epoch uses floor(samples / 12) * 12 distinct samples, all of index < samples.
        let samples = (try TokenShardCount.of(h.dir + "/data/train.bin") - 1) / 16
        XCTAssertEqual(epoch0.count, samples / 12 * 12)
        XCTAssertTrue(epoch0.allSatisfy { $0 >= 0 && $0 < samples })
        XCTAssertGreaterThan(perEpoch.keys.count, 1, "40 steps should reach a second epoch")
    }

    func testConfigMismatchStopsEveryRankWithTheMessage() throws {
        let cfg = try h.config(name: "mismatch")
        let o = try h.run(
            [
                "mpirun", "--oversubscribe", "-n", "1", h.binary, "--config", cfg, ":",
                "-n", "1", h.binary, "--config", cfg, "--set", "train.lr=0.5",
            ], timeout: 60)
        XCTAssertFalse(o.timedOut, o.output)
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(o.output.contains("rank 1: error: rank 1: config"), o.output)
        XCTAssertTrue(o.output.contains("differs from rank 0's"), o.output)
        XCTAssertTrue(o.output.contains("rank 0: error: the config check failed on rank 1"), o.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.dir + "/runs/mismatch/metrics.jsonl"))
    }

    func testKilledRankEndsTheJobWithinTheWatchdogTimeout() throws {
        let cfg = try h.config(name: "killed", steps: 50, watchdog: 5)
        let o = try h.mpirun(2, ["--config", cfg, "--debug-kill-rank", "1", "--debug-kill-step", "3"], timeout: 60)
        XCTAssertFalse(o.timedOut, o.output)
        XCTAssertNotEqual(o.status, 0)
        XCTAssertLessThan(o.seconds, 5 + 15, "job must end within the watchdog timeout plus start-up")
    }

    func testStalledRankTripsTheWatchdogWhichNamesIt() throws {
        let cfg = try h.config(name: "stalled", steps: 50, watchdog: 3)
        let o = try h.mpirun(
            2,
            [
                "--config", cfg, "--debug-stall-rank", "1", "--debug-stall-step", "4",
                "--debug-stall-seconds", "120",
            ], timeout: 60)
        XCTAssertFalse(o.timedOut, o.output)
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(o.output.contains("rank 0: watchdog: collective"), o.output)
        XCTAssertTrue(o.output.contains("at step 4"), o.output)
        XCTAssertTrue(o.output.contains("waiting for rank(s) 1"), o.output)
        XCTAssertLessThan(o.seconds, 3 + 15)
    }

    /// Rank 1 of 4 stalls in the middle of step 5 (after its forward passes, and inside its first
    /// collective): every rank that reports names rank 1, never a rank that is only waiting.
    func testStalledRankOfFourInTheMiddleOfAStepIsTheOneNamed() throws {
        for at in ["backward", "collective"] {
            let cfg = try h.config(name: "stall4-\(at)", steps: 50, watchdog: 3)
            let o = try h.mpirun(
                4,
                [
                    "--config", cfg, "--debug-stall-rank", "1", "--debug-stall-step", "5",
                    "--debug-stall-at", at, "--debug-stall-seconds", "120",
                ], timeout: 90)
            XCTAssertFalse(o.timedOut, o.output)
            XCTAssertNotEqual(o.status, 0, o.output)
            let reports = o.output.split(separator: "\n").filter { $0.contains("watchdog: collective") }
            XCTAssertFalse(reports.isEmpty, "\(at): no watchdog report:\n\(o.output)")
            for line in reports {
                XCTAssertTrue(line.contains("at step 5"), "\(at): \(line)")
                XCTAssertTrue(line.contains("waiting for rank(s) 1 ("), "\(at): \(line)")
                for innocent in [0, 2, 3] {
                    XCTAssertFalse(
                        line.contains("rank(s) \(innocent) (") || line.contains(", \(innocent) ("),
                        "\(at): names rank \(innocent): \(line)")
                }
            }
        }
    }
}
