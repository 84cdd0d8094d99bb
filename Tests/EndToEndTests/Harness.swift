import FFFormats
import FFCore
import FFKernels
import Foundation
import XCTest
import FFData
import FFModel
import FFTrain

/// Builds a small corpus, writes configs, and runs the built `swift-ff-train` directly or under
/// `mpirun`, with a timeout and with the test process's own OMPI_*/PMIX_* variables removed.
final class Harness {
    let dir: String
    let binary: String

    init() throws {
        dir = NSTemporaryDirectory() + "ffe2e-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        // The test bundle sits beside the executable in .build/<config>/.
        let exe = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).resolvingSymlinksInPath()
        var candidate = exe.deletingLastPathComponent()
        if candidate.path.hasSuffix(".xctest/Contents/MacOS") {
            candidate = candidate.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        }
        binary = candidate.appendingPathComponent("swift-ff-train").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("swift-ff-train not built beside the tests at \(binary): run `swift build --build-tests`")
        }
        var lines: [String] = []
        var rng = SplitMix64(seed: 1)
        let subjects = ["the cat", "a dog", "the old man", "my sister"], verbs = ["sees", "likes", "finds"]
        for _ in 0..<400 {
            lines.append(
                " \(subjects[rng.nextInt(below: 4)]) \(verbs[rng.nextInt(below: 3)]) the red "
                    + "ball . ")
        }
        let text = lines.joined(separator: "\n") + "\n"
        let vocab = Vocabulary.buildWord(trainText: text, minCount: 1, maxSize: nil)
        try vocab.write(to: dir + "/data/vocab.json")
        let ids = vocab.encode(text)
        try writeTokenShard(ids, to: dir + "/data/train.bin")
        try writeTokenShard(Array(ids.prefix(200)), to: dir + "/data/valid.bin")
        try writeTokenShard(Array(ids.suffix(200)), to: dir + "/data/test.bin")
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// Writes a config; `extra` lines are appended to the train section.
    func config(
        name: String, attention: String = "fourier", steps: Int = 20, batch: Int = 8,
        accum: Int = 1, dropout: Double = 0.1, watchdog: Double = 60, checkpointEvery: Int = 0,
        zero1: Bool = false, logEvery: Int = 5, weightDecay: Double = 0
    ) throws -> String {
        let yaml = """
            run: {name: \(name), dir: \(dir)/runs, seed: 5}
            data: {dir: \(dir)/data}
            model: {layers: 2, d_model: 32, heads: 4, d_ff: 64, context: 16, dropout: \(dropout), attention: {kind: \(attention)}}
            train: {steps: \(steps), batch_size: \(batch), grad_accum: \(accum), lr: 3.0e-3, warmup_steps: 3, grad_clip: 1.0, threads: 1, log_every: \(logEvery), weight_decay: \(weightDecay)}
            dist: {watchdog_s: \(watchdog), bucket_mb: 0.01, zero1: \(zero1)}
            checkpoint: {every: \(checkpointEvery), keep_last: 5}
            """
        let path = "\(dir)/\(name).yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    struct Outcome {
        var status: Int32
        var output: String
        var seconds: Double
        var timedOut: Bool
    }

    /// Runs `args` (an executable and its arguments) with a timeout.
    func run(_ args: [String], timeout: Double = 120) throws -> Outcome {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        var env = ProcessInfo.processInfo.environment.filter {
            !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_")
        }
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
        p.environment = env
        let outPath = "\(dir)/out-\(UUID().uuidString).txt"
        FileManager.default.createFile(atPath: outPath, contents: nil)
        let out = FileHandle(forWritingAtPath: outPath)!
        p.standardOutput = out
        p.standardError = out
        let start = Date()
        try p.run()
        var timedOut = false
        while p.isRunning {
            if Date().timeIntervalSince(start) > timeout {
                timedOut = true
                p.terminate()
                usleep(500_000)
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
                break
            }
            usleep(20_000)
        }
        p.waitUntilExit()
        try? out.close()
        let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        return Outcome(
            status: p.terminationStatus, output: text, seconds: Date().timeIntervalSince(start), timedOut: timedOut)
    }

    /// `mpirun -n N` of the trainer; `mca` adds `--mca KEY VALUE` pairs.
    func mpirun(_ n: Int, _ args: [String], mca: [(String, String)] = [], timeout: Double = 180) throws -> Outcome {
        var cmd = ["mpirun", "-n", "\(n)", "--oversubscribe", "--bind-to", "none"]
        for (k, v) in mca { cmd += ["--mca", k, v] }
        return try run(cmd + [binary] + args, timeout: timeout)
    }

    /// Per-step training losses from a run's metrics.jsonl.
    func losses(_ run: String) throws -> [Int: Double] {
        let text = try String(contentsOfFile: "\(dir)/runs/\(run)/metrics.jsonl", encoding: .utf8)
        var out: [Int: Double] = [:]
        for line in text.split(separator: "\n") {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            if o["grad_norm"] != nil, let s = o["step"] as? Int, let l = o["loss"] as? Double { out[s] = l }
        }
        return out
    }

    func checkpoints(_ run: String) -> String { "\(dir)/runs/\(run)/checkpoints" }

    func weights(_ run: String) throws -> [String: [Float]] {
        let (t, _) = try Safetensors.read(path: "\(dir)/runs/\(run)/model.safetensors")
        return t.mapValues { $0.values }
    }
}

extension XCTestCase {
    /// Asserts that a child run finished in time with exit status 0 (its output is the message).
    func ok(_ o: Harness.Outcome, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(o.timedOut, "timed out:\n\(o.output)", file: file, line: line)
        XCTAssertEqual(o.status, 0, o.output, file: file, line: line)
    }

    /// Asserts that a child run finished in time, failed, and said `text`.
    func failed(_ o: Harness.Outcome, _ text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(o.timedOut, "timed out:\n\(o.output)", file: file, line: line)
        XCTAssertNotEqual(o.status, 0, o.output, file: file, line: line)
        XCTAssertTrue(o.output.contains(text), "expected '\(text)' in:\n\(o.output)", file: file, line: line)
    }
}
