import FFFormats
import Foundation
import FFTestSupport
import XCTest
import FFTrain

/// Sharded checkpoints, resume at the same and other world sizes, ZeRO-1, faults, export.
final class CheckpointTests: XCTestCase {
    var h: Harness!
    override func setUpWithError() throws { h = try Harness() }
    override func tearDown() { h = nil }

    /// Runs `ranks` ranks (1: no mpirun) of the trainer.
    func train(_ ranks: Int, _ args: [String], mca: [(String, String)] = []) throws -> Harness.Outcome {
        ranks == 1 ? try h.run([h.binary] + args) : try h.mpirun(ranks, args, mca: mca)
    }

    func testSameWorldSizeResumeIsBitForBit() throws {
        let full = try h.config(name: "full", checkpointEvery: 10, logEvery: 1)
        ok(try train(2, ["--config", full]))
        let split = try h.config(name: "split", checkpointEvery: 10, logEvery: 1)
        let first = try train(2, ["--config", split, "--debug-stop-at-step", "10"])
        ok(first)
        XCTAssertTrue(first.output.contains("stopped on request after step 10"), first.output)
        let second = try train(2, ["--config", split, "--resume", "auto"])
        ok(second)
        XCTAssertTrue(second.output.contains("at step 10"), second.output)
        XCTAssertEqual(try h.weights("split"), try h.weights("full"), "parameters must be bitwise identical")
        let a = try h.losses("full"), b = try h.losses("split")
        XCTAssertEqual(Set(b.keys), Set(1...20))
        for s in 1...20 { XCTAssertEqual(a[s], b[s], "loss at step \(s)") }
    }

    func testResumeAtOtherWorldSizesMatchesTheUninterruptedRun() throws {
        let full = try h.config(name: "full", batch: 12, checkpointEvery: 10)
        ok(try train(1, ["--config", full]))
        let reference = try h.weights("full")
        for (from, to) in [(2, 1), (1, 2), (2, 3)] {
            let name = "r\(from)to\(to)"
            let cfg = try h.config(name: name, batch: 12, checkpointEvery: 10)
            ok(try train(from, ["--config", cfg, "--debug-stop-at-step", "10"]))
            ok(try train(to, ["--config", cfg, "--resume", "auto"]))
            let d = relL2(try h.weights(name), reference)
            XCTAssertLessThan(d, 1e-5, "\(from) -> \(to) ranks: relative L2 difference \(d)")
        }
    }

    func testZeroOneMatchesPlainTrainingAndReshardsOnResume() throws {
        let plain = try h.config(name: "plain", batch: 12)
        ok(try train(2, ["--config", plain]))
        let zero = try h.config(name: "zero", batch: 12, zero1: true)
        ok(try train(2, ["--config", zero]))
        XCTAssertLessThan(relL2(try h.weights("zero"), try h.weights("plain")), 1e-5)
        // ZeRO-1 on 2 ranks, stopped, resumed with ZeRO-1 on 3 ranks: optimizer shards resharded.
        let re = try h.config(name: "zero-re", batch: 12, checkpointEvery: 10, zero1: true)
        ok(try train(2, ["--config", re, "--debug-stop-at-step", "10"]))
        let files = try FileManager.default.contentsOfDirectory(atPath: h.checkpoints("zero-re") + "/step-00000010")
        XCTAssertEqual(
            files.filter { $0.hasPrefix("optimizer-") }.sorted(),
            ["optimizer-00001-of-00002.safetensors", "optimizer-00002-of-00002.safetensors"])
        ok(try train(3, ["--config", re, "--resume", "auto"]))
        XCTAssertLessThan(relL2(try h.weights("zero-re"), try h.weights("plain")), 1e-5)
    }

    /// A ZeRO-1 checkpoint written by 3 ranks (partitions cut tensors; each shard's writer gathers
    /// its tensors' moments from their owners) holds whole tensors, resumes bit for bit at 3 ranks,
    /// and resumes with ZeRO-1 at 2 ranks and without it at 2 and 1, each matching the 1-rank run.
    func testZeroOneCheckpointOfThreeRanksResumesAtTwoAndWithoutZero() throws {
        let full = try h.config(name: "full", batch: 12, weightDecay: 0.1)
        ok(try train(1, ["--config", full]))
        let reference = try h.weights("full")
        let zero3 = try h.config(name: "zero3", batch: 12, zero1: true, weightDecay: 0.1)
        ok(try train(3, ["--config", zero3]))
        for (to, zero) in [(3, true), (2, true), (2, false), (1, false)] {
            let name = "z3to\(to)" + (zero ? "zero" : "plain")
            let first = try h.config(name: name, batch: 12, checkpointEvery: 10, zero1: true, weightDecay: 0.1)
            ok(try train(3, ["--config", first, "--debug-stop-at-step", "10"]))
            let ck = h.checkpoints(name) + "/step-00000010"
            let opt = try Safetensors.read(path: ck + "/optimizer-00001-of-00003.safetensors").0
            let model = try Safetensors.read(path: ck + "/model-00001-of-00003.safetensors").0
            XCTAssertEqual(Set(opt.keys), Set(model.keys.flatMap { [$0 + ".exp_avg", $0 + ".exp_avg_sq"] }))
            for (k, t) in model { XCTAssertEqual(opt[k + ".exp_avg"]?.shape, t.shape, k) }
            let second = try h.config(name: name, batch: 12, checkpointEvery: 10, zero1: zero, weightDecay: 0.1)
            ok(try train(to, ["--config", second, "--resume", "auto"]))
            if to == 3 {
                XCTAssertEqual(try h.weights(name), try h.weights("zero3"), "same world size: bit for bit")
            } else {
                let d = relL2(try h.weights(name), reference)
                XCTAssertLessThan(d, 1e-5, "3 ranks ZeRO-1 -> \(to) ranks\(zero ? " ZeRO-1" : ""): \(d)")
            }
        }
    }

    func testDataCursorContinuesAcrossResumeWithoutRepeats() throws {
        let full = try h.config(name: "full", steps: 24, batch: 12, checkpointEvery: 12)
        ok(try train(1, ["--config", full, "--debug-log-samples", h.dir + "/full"]))
        let cfg = try h.config(name: "cut", steps: 24, batch: 12, checkpointEvery: 12)
        ok(try train(2, ["--config", cfg, "--debug-stop-at-step", "12", "--debug-log-samples", h.dir + "/a"]))
        ok(try train(3, ["--config", cfg, "--resume", "auto", "--debug-log-samples", h.dir + "/b"]))
        func read(_ prefix: String, ranks: Int) throws -> [Int: [Int]] {
            var bySteps: [Int: [Int]] = [:]
            for r in 0..<ranks {
                for line in try String(contentsOfFile: "\(prefix).rank\(r)", encoding: .utf8).split(separator: "\n") {
                    let f = line.split(separator: " ").map { Int($0)! }
                    bySteps[f[0], default: []] += f[2...]
                }
            }
            return bySteps
        }
        let reference = try read(h.dir + "/full", ranks: 1)
        var resumed = try read(h.dir + "/a", ranks: 2)
        resumed.merge(try read(h.dir + "/b", ranks: 3)) { _, _ in
            XCTFail("a step ran twice"); return []
        }
        XCTAssertEqual(Set(resumed.keys), Set(1...24))
        for s in 1...24 { XCTAssertEqual(resumed[s]!.sorted(), reference[s]!.sorted(), "samples of step \(s)") }
        let epoch0 = (1...14).flatMap { resumed[$0]! }  // 190 samples / 12: 15 steps per epoch
        XCTAssertEqual(epoch0.count, Set(epoch0).count, "a sample was seen twice within the epoch")
    }

    func testKillDuringCheckpointKeepsThePreviousOneLatestAndLoadable() throws {
        let full = try h.config(name: "full", checkpointEvery: 5)
        ok(try train(2, ["--config", full]))
        let cfg = try h.config(name: "crash", checkpointEvery: 5)
        let crashed = try train(2, ["--config", cfg, "--debug-kill-in-checkpoint", "10"])
        XCTAssertNotEqual(crashed.status, 0)
        let root = h.checkpoints("crash")
        XCTAssertEqual(try String(contentsOfFile: root + "/latest", encoding: .utf8), "step-00000005\n")
        XCTAssertTrue(
            FileManager.default.fileExists(atPath: root + "/step-00000010/model-00001-of-00002.safetensors"),
            "the shards of the interrupted save were written")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/step-00000010/trainer_state.json"))
        let resumed = try train(2, ["--config", cfg, "--resume", "auto"])
        ok(resumed)
        XCTAssertTrue(resumed.output.contains("step-00000005 at step 5"), resumed.output)
        XCTAssertEqual(try h.weights("crash"), try h.weights("full"))
    }

    func testCorruptTruncatedAndMissingShardsAreRefused() throws {
        let cfg = try h.config(name: "c", steps: 10, checkpointEvery: 10)
        ok(try train(2, ["--config", cfg]))
        let ck = h.checkpoints("c") + "/step-00000010"
        let model = ck + "/model-00002-of-00002.safetensors", opt = ck + "/optimizer-00001-of-00002.safetensors"
        let original = FileManager.default.contents(atPath: model)!
        // Bit flip.
        var flipped = [UInt8](FileManager.default.contents(atPath: opt)!)
        flipped[flipped.count - 3] ^= 0x10
        try Data(flipped).write(to: URL(fileURLWithPath: opt + ".bad"))
        try FileManager.default.moveItem(atPath: opt, toPath: opt + ".good")
        try FileManager.default.moveItem(atPath: opt + ".bad", toPath: opt)
        var o = try train(1, ["--config", cfg, "--resume", ck, "--set", "train.steps=12"])
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(o.output.contains("optimizer-00001-of-00002.safetensors: checksum mismatch"), o.output)
        try FileManager.default.removeItem(atPath: opt)
        try FileManager.default.moveItem(atPath: opt + ".good", toPath: opt)
        // Truncated.
        try original.prefix(original.count - 100).write(to: URL(fileURLWithPath: model))
        o = try train(2, ["--config", cfg, "--resume", ck, "--set", "train.steps=12"])
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(
            o.output.contains("rank 0: error:") && o.output.contains("rank 1: error:"),
            "every rank "
                + "reports: \(o.output)")
        XCTAssertTrue(o.output.contains("model-00002-of-00002.safetensors: checksum mismatch: sha256"), o.output)
        // Missing.
        try FileManager.default.removeItem(atPath: model)
        o = try train(1, ["--config", cfg, "--resume", ck, "--set", "train.steps=12"])
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(o.output.contains("model-00002-of-00002.safetensors: missing"), o.output)
        let inspect = try h.run([h.binary, "inspect", ck])
        XCTAssertNotEqual(inspect.status, 0)
        XCTAssertTrue(inspect.output.contains("CHECKSUM MISMATCH OR MISSING"), inspect.output)
    }

    func testExportIsOneSafetensorsFileEqualToTheCheckpointAndLoadsInPython() throws {
        let cfg = try h.config(name: "e", steps: 10, batch: 12, checkpointEvery: 10)
        ok(try train(3, ["--config", cfg]))
        let out = h.dir + "/export"
        ok(try h.run([h.binary, "export", h.checkpoints("e"), "--output", out]))
        let inspect = try h.run([h.binary, "inspect", h.checkpoints("e")])
        ok(inspect)
        XCTAssertTrue(inspect.output.contains("3 shard(s)"), inspect.output)
        let (exported, meta) = try Safetensors.read(path: out + "/model.safetensors")
        XCTAssertNotNil(meta["config"])
        XCTAssertEqual(
            exported.mapValues { $0.values }, try h.weights("e"),
            "the final weights equal the step-10 "
                + "checkpoint")
        XCTAssertNoThrow(
            try JSONSerialization.jsonObject(with: FileManager.default.contents(atPath: out + "/config.json")!))
        // The reference reader: Hugging Face's safetensors package.
        let py = """
            import sys, json
            from safetensors.numpy import load_file
            t = load_file(sys.argv[1])
            print(json.dumps({k: [list(v.shape), float(v.astype('float64').sum())] for k, v in t.items()}))
            """
        let probe = try h.run(["python3", "-c", "import safetensors.numpy"])
        guard probe.status == 0 else { throw XCTSkip("python3 safetensors not installed (launch/test.sh installs it)") }
        let r = try h.run(["python3", "-c", py, out + "/model.safetensors"])
        ok(r)
        let line = r.output.split(separator: "\n").last!
        let parsed = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: [Any]]
        XCTAssertEqual(Set(parsed.keys), Set(exported.keys))
        for (k, v) in exported {
            XCTAssertEqual(parsed[k]![0] as! [Int], v.shape, k)
            let sum = v.values.reduce(0.0) { $0 + Double($1) }
            XCTAssertEqual(parsed[k]![1] as! Double, sum, accuracy: 1e-9 * max(1, abs(sum)), k)
        }
    }

    /// config.json keeps the config's decimals (floats are not widened to 9.999999974752427e-07).
    func testExportedConfigKeepsTheConfigsDecimals() throws {
        let cfg = try h.config(name: "dec", steps: 2, checkpointEvery: 2)
        ok(
            try train(
                1,
                [
                    "--config", cfg, "--set", "model.attention.eps=1.0e-6", "--set", "model.dropout=0.1",
                    "--set", "model.attention.r_init=0.3",
                ]))
        let out = h.dir + "/export"
        ok(try h.run([h.binary, "export", h.checkpoints("dec"), "--output", out]))
        let text = try String(contentsOfFile: out + "/config.json", encoding: .utf8)
        XCTAssertFalse(
            text.contains("9.99999997") || text.contains("0.10000000149") || text.contains("0.30000001"), text)
        let json = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        let attention = json["attention"] as! [String: Any]
        XCTAssertEqual(attention["eps"] as? Double, 1e-6, text)
        XCTAssertEqual(attention["r_init"] as? Double, 0.3, text)
        XCTAssertEqual(json["dropout"] as? Double, 0.1, text)
    }
}
