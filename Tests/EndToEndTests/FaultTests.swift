import FFFormats
import Foundation
import XCTest
import FFTrain

/// Faults with real ranks: NaN/Inf, a full disk, SIGTERM. (Killed and stalled ranks, and a kill
/// in the middle of a checkpoint, are in DataParallelTests and CheckpointTests.)
final class FaultTests: XCTestCase {
    var h: Harness!
    override func setUpWithError() throws { h = try Harness() }
    override func tearDown() { h = nil }

    func testNaNInOneRanksGradientIsSkippedByEveryRank() throws {
        let cfg = try h.config(name: "nan", checkpointEvery: 0)
        let o = try h.mpirun(2, ["--config", cfg, "--debug-nan-rank", "1", "--debug-nan-steps", "3"])
        XCTAssertEqual(o.status, 0, o.output)
        // Rank 0 prints: it saw rank 1's NaN through the reduced values.
        XCTAssertTrue(o.output.contains("warning: step 3: loss"), o.output)
        XCTAssertTrue(o.output.contains("not finite: update skipped"), o.output)
        let metrics = try String(contentsOfFile: h.dir + "/runs/nan/metrics.jsonl", encoding: .utf8)
        XCTAssertTrue(metrics.contains("\"reason\":\"nonfinite\",\"skipped\":true,\"step\":3"), metrics)
        XCTAssertTrue(try h.weights("nan").values.allSatisfy { $0.allSatisfy(\.isFinite) })
    }

    func testNaNWithStopPolicyEndsEveryRankAndKeepsTheLastCheckpoint() throws {
        let cfg = try h.config(name: "nanstop", checkpointEvery: 2)
        let o = try h.mpirun(
            2, ["--config", cfg, "--set", "train.on_nonfinite=stop", "--debug-nan-rank", "0", "--debug-nan-steps", "5"])
        XCTAssertNotEqual(o.status, 0)
        for r in 0..<2 { XCTAssertTrue(o.output.contains("rank \(r): error: step 5: loss"), o.output) }
        XCTAssertTrue(o.output.contains("not finite (train.on_nonfinite: stop)"), o.output)
        XCTAssertEqual(
            try String(contentsOfFile: h.checkpoints("nanstop") + "/latest", encoding: .utf8), "step-00000004\n")
        let resumed = try h.mpirun(2, ["--config", cfg, "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("at step 4"), resumed.output)
    }

    func testTooManySkippedStepsInARowStop() throws {
        let cfg = try h.config(name: "nanrun")
        let o = try h.run([
            h.binary, "--config", cfg, "--set", "train.max_skipped_steps=2",
            "--debug-nan-rank", "0", "--debug-nan-steps", "3", "--debug-nan-steps", "4", "--debug-nan-steps", "5",
        ])
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(o.output.contains("3 steps in a row (train.max_skipped_steps: 2)"), o.output)
    }

    func testFullDiskWhileSavingStopsWithTheReasonAndKeepsTheLastGoodCheckpoint() throws {
        let mnt = h.dir + "/small"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        // A checkpoint of the tiny model is ~0.25 MB: 1 MB holds a few, not twenty.
        let m = try h.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], timeout: 10)
        guard m.status == 0 else { throw XCTSkip("cannot mount a small tmpfs here (needs root): \(m.output)") }
        defer { _ = try? h.run(["umount", "-l", mnt], timeout: 10) }
        let cfg = try h.config(name: "full", checkpointEvery: 1)
        let o = try h.mpirun(2, ["--config", cfg, "--set", "run.dir=\(mnt)", "--set", "checkpoint.keep_last=50"])
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(o.output.contains("No space left on device"), o.output)
        XCTAssertTrue(o.output.contains("rank 0: error:") && o.output.contains("rank 1: error:"), o.output)
        let root = mnt + "/full/checkpoints"
        let latest = try String(contentsOfFile: root + "/latest", encoding: .utf8).trimmingCharacters(in: .newlines)
        let inspect = try h.run([h.binary, "inspect", root + "/" + latest])
        XCTAssertEqual(inspect.status, 0, "the last committed checkpoint is intact: \(inspect.output)")
        let leftovers = try FileManager.default.subpathsOfDirectory(atPath: root).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [], "no temporary files are left behind")
    }

    func testSIGTERMToTheRanksSavesAndExitsCleanly() throws {
        let cfg = try h.config(name: "term", steps: 100000, logEvery: 1)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var env = ProcessInfo.processInfo.environment.filter {
            !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_")
        }
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        p.environment = env
        p.arguments = ["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none", h.binary, "--config", cfg]
        let out = Pipe()
        p.standardOutput = out; p.standardError = out
        try p.run()
        let metrics = h.dir + "/runs/term/metrics.jsonl"
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline,
            ((try? String(contentsOfFile: metrics, encoding: .utf8))?.split(separator: "\n").count ?? 0) < 5
        {
            usleep(100_000)
        }
        // What SLURM does before pre-emption: SIGTERM to every task.
        // The ranks, not mpirun (whose own command line also contains the binary's).
        _ = try h.run(["pkill", "-TERM", "-f", "^\(h.binary) --config \(cfg)"], timeout: 10)
        let stopBy = Date().addingTimeInterval(60)
        while p.isRunning && Date() < stopBy { usleep(100_000) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("stopped on request after step"), text)
        let latest = try String(contentsOfFile: h.checkpoints("term") + "/latest", encoding: .utf8)
        XCTAssertTrue(latest.hasPrefix("step-"), latest)
        // Fewer steps than planned: a recipe change, allowed explicitly.
        let resumed = try h.mpirun(
            2,
            [
                "--config", cfg, "--resume", "auto", "--allow-config-change",
                "--set", "train.steps=\(Int(latest.dropFirst(5).trimmingCharacters(in: .newlines))! + 2)",
            ])
        XCTAssertEqual(resumed.status, 0, resumed.output)
    }
}

/// After a rank dies or hangs, the last committed checkpoint resumes to the uninterrupted run;
/// bad inputs stop every rank before training.
final class RecoveryAndBadInputTests: XCTestCase {
    var h: Harness!
    override func setUpWithError() throws { h = try Harness() }
    override func tearDown() { h = nil }

    func recoverAfter(_ faultArgs: [String], name: String, watchdog: Double) throws -> Harness.Outcome {
        let full = try h.config(name: "\(name)-full", checkpointEvery: 2)
        XCTAssertEqual(try h.mpirun(2, ["--config", full]).status, 0)
        let cfg = try h.config(name: name, watchdog: watchdog, checkpointEvery: 2)
        let fault = try h.mpirun(2, ["--config", cfg] + faultArgs, timeout: 90)
        XCTAssertFalse(fault.timedOut, fault.output)
        XCTAssertNotEqual(fault.status, 0)
        XCTAssertEqual(try String(contentsOfFile: h.checkpoints(name) + "/latest", encoding: .utf8), "step-00000004\n")
        let resumed = try h.mpirun(2, ["--config", cfg, "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertEqual(
            try h.weights(name), try h.weights("\(name)-full"),
            "resumed run must equal the uninterrupted "
                + "one bit for bit")
        return fault
    }

    func testKilledRankMidStepThenResume() throws {
        let o = try recoverAfter(["--debug-kill-rank", "1", "--debug-kill-step", "5"], name: "kill", watchdog: 5)
        XCTAssertLessThan(o.seconds, 5 + 15)
    }

    func testStalledRankThenResume() throws {
        let o = try recoverAfter(
            ["--debug-stall-rank", "0", "--debug-stall-step", "6", "--debug-stall-seconds", "120"], name: "stall",
            watchdog: 3)
        XCTAssertTrue(o.output.contains("rank 1: watchdog: collective"), o.output)
        XCTAssertTrue(o.output.contains("waiting for rank(s) 0"), o.output)
    }

    func testBatchNotDivisibleByRanksStopsEveryRank() throws {
        let cfg = try h.config(name: "div", batch: 8)
        let o = try h.mpirun(3, ["--config", cfg], timeout: 60)
        XCTAssertNotEqual(o.status, 0)
        for r in 0..<3 {
            XCTAssertTrue(
                o.output.contains(
                    "rank \(r): error: \(cfg): train.batch_size (8) must be "
                        + "divisible by ranks x grad_accum (3 x 1)"), o.output)
        }
    }

    func testMissingDataOnOneRankIsReportedByEveryRank() throws {
        let cfg = try h.config(name: "missing")
        // Rank 1 reads another data folder that lacks the shards.
        let o = try h.run(
            [
                "mpirun", "--oversubscribe", "-n", "1", h.binary, "--config", cfg, ":",
                "-n", "1", h.binary, "--config", cfg, "--set", "data.dir=\(h.dir)/nowhere",
            ], timeout: 60)
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(o.output.contains("rank 1: error:"), o.output)
        XCTAssertTrue(o.output.contains("rank 0: error:"), o.output)
    }

    func testCheckpointOfAnotherModelShapeOrVocabularyIsRefused() throws {
        let cfg = try h.config(name: "shape", steps: 4, checkpointEvery: 4)
        XCTAssertEqual(try h.run([h.binary, "--config", cfg]).status, 0)
        let ck = h.checkpoints("shape") + "/step-00000004"
        let wider = try h.run([
            h.binary, "--config", cfg, "--set", "model.d_ff=128", "--set", "run.name=other", "--resume", ck,
        ])
        XCTAssertNotEqual(wider.status, 0)
        XCTAssertTrue(
            wider.output.contains("the config changes the model this checkpoint holds: model.d_ff: 64 -> 128"),
            wider.output)
        // Another vocabulary: same data folder layout, one more word.
        let other = h.dir + "/data2"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        for f in ["train.bin", "valid.bin", "test.bin"] {
            try FileManager.default.copyItem(atPath: h.dir + "/data/" + f, toPath: other + "/" + f)
        }
        var vocab =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: h.dir + "/data/vocab.json")))
            as! [String: Any]
        vocab["tokens"] = (vocab["tokens"] as! [String]) + ["zebra"]
        vocab["counts"] = (vocab["counts"] as! [Int]) + [1]
        try JSONSerialization.data(withJSONObject: vocab).write(to: URL(fileURLWithPath: other + "/vocab.json"))
        let vocabMismatch = try h.run([
            h.binary, "--config", cfg, "--set", "data.dir=\(other)", "--set", "run.name=v", "--resume", ck,
        ])
        XCTAssertNotEqual(vocabMismatch.status, 0)
        XCTAssertTrue(vocabMismatch.output.contains("model.vocab_size:"), vocabMismatch.output)
    }
}
