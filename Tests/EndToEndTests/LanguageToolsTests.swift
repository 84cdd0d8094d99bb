import Foundation
import XCTest
import FFData
import FFTrain

/// Bits per byte, the step `eval` reports, and text generation, through the built executable.
final class LanguageToolsTests: XCTestCase {
    /// A byte-level corpus in DIR/bytes and a config training on it; returns the config path.
    func byteRun(_ h: Harness, name: String, steps: Int = 10, extra: String = "") throws -> String {
        let data = h.dir + "/bytes"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let text = String(repeating: "to be or not to be, that is the question.\n", count: 60)
        let vocab = Vocabulary.buildByte(trainText: text)
        try vocab.write(to: data + "/vocab.json")
        let ids = vocab.encode(text)
        try writeTokenShard(ids, to: data + "/train.bin")
        try writeTokenShard(Array(ids.prefix(300)), to: data + "/valid.bin")
        try writeTokenShard(Array(ids.suffix(300)), to: data + "/test.bin")
        let yaml = """
            run: {name: \(name), dir: \(h.dir)/runs, seed: 3}
            data: {dir: \(data)}
            model: {layers: 2, d_model: 32, heads: 4, d_ff: 64, context: 32, dropout: 0.0, norm: pre, attention: {kind: fourier, r_init: 0.5}}
            train: {steps: \(steps), batch_size: 8, lr: 3.0e-3, warmup_steps: 2, threads: 1, log_every: 5\(extra)}
            checkpoint: {every: 5, keep_last: 5}
            """
        let path = "\(h.dir)/\(name).yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testByteRunsReportBitsPerByteAndEvalKnowsTheStep() throws {
        let h = try Harness()
        let cfg = try byteRun(h, name: "bpb")
        let train = try h.run([h.binary, "--config", cfg])
        XCTAssertEqual(train.status, 0, train.output)
        let stepLines = train.output.split(separator: "\n").filter { $0.hasPrefix("step ") }
        XCTAssertFalse(stepLines.isEmpty)
        XCTAssertTrue(stepLines.allSatisfy { $0.contains("bits/byte") }, train.output)
        XCTAssertTrue(train.output.contains("eval step 10 | test loss"), train.output)

        let run = "\(h.dir)/runs/bpb"
        let metrics = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)
        var evals = 0
        for line in metrics.split(separator: "\n") {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            guard o["split"] != nil else { continue }
            evals += 1
            let loss = o["loss"] as! Double, bpb = try XCTUnwrap(o["bits_per_byte"] as? Double, "\(o)")
            XCTAssertEqual(bpb, loss / log(2), accuracy: 1e-9)
        }
        XCTAssertEqual(evals, 2)
        let summary =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json")))
            as! [String: Any]
        let test = summary["test"] as! [String: Any]
        XCTAssertEqual(test["bits_per_byte"] as! Double, (test["loss"] as! Double) / log(2), accuracy: 1e-9)

        // eval labels results with the step the weights were trained to: the run's final weights
        // (summary.json), a checkpoint (its trainer state), a run's checkpoints folder (latest).
        for (weights, step) in [(nil, 10), ("\(run)/checkpoints/step-00000005", 5), ("\(run)/checkpoints", 10)] {
            let ev = try h.run([h.binary, "eval", "--config", cfg] + (weights.map { ["--weights", $0] } ?? []))
            XCTAssertEqual(ev.status, 0, ev.output)
            XCTAssertTrue(ev.output.contains("eval step \(step) | valid loss"), ev.output)
            XCTAssertTrue(ev.output.contains("bits/byte"), ev.output)
        }
        // A copy of the weights without summary.json: the step is unknown, and eval says so.
        try FileManager.default.copyItem(atPath: run + "/model.safetensors", toPath: h.dir + "/loose.safetensors")
        let loose = try h.run([h.binary, "eval", "--config", cfg, "--weights", h.dir + "/loose.safetensors"])
        XCTAssertEqual(loose.status, 0, loose.output)
        XCTAssertTrue(loose.output.contains("training step is unknown"), loose.output)
    }
}

extension LanguageToolsTests {
    /// Every subcommand `--help` lists has a row in the README's command table.
    func testReadmeCommandTableListsEverySubcommand() throws {
        let h = try Harness()
        let help = try h.run([h.binary, "--help"])
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let readme = try String(contentsOfFile: root + "/README.md", encoding: .utf8)
        let table = readme.split(separator: "\n").filter { $0.hasPrefix("| `swift-ff-train ") }
        var names: [String] = []
        var inSubcommands = false
        for line in help.output.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("SUBCOMMANDS:") { inSubcommands = true; continue }
            if line.isEmpty { inSubcommands = false }
            if inSubcommands, line.hasPrefix("  "), !line.hasPrefix("   "), let name = line.split(separator: " ").first
            {
                names.append(String(name))
            }
        }
        XCTAssertTrue(names.contains("plot"), help.output)
        for name in names where name != "train" && name != "fuzz" {
            XCTAssertTrue(
                table.contains { $0.hasPrefix("| `swift-ff-train \(name)") }, "README lacks a row for \(name)")
        }
    }
}

extension LanguageToolsTests {
    /// `generate` from a run folder, a checkpoint and a safetensors file: the prompt, then at most
    /// --max-new-tokens tokens; the same seed gives the same text; tokens/s on standard error.
    func testGenerateFromRunCheckpointAndFile() throws {
        let h = try Harness()
        let cfg = try byteRun(h, name: "gen")
        let train = try h.run([h.binary, "--config", cfg])
        XCTAssertEqual(train.status, 0, train.output)
        let run = "\(h.dir)/runs/gen"
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/vocab.json"), "training keeps the vocabulary")
        // Standard output as bytes: a byte-level model may emit bytes that are not UTF-8.
        func generate(_ source: String, _ extra: [String] = []) throws -> (status: Int32, out: [UInt8], err: String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: h.binary)
            p.arguments = ["generate", source, "to be", "--max-new-tokens", "20", "--seed", "4"] + extra
            let out = Pipe(), err = Pipe()
            p.standardOutput = out; p.standardError = err
            try p.run()
            let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, [UInt8](o), String(decoding: e, as: UTF8.self))
        }
        let a = try generate(run), b = try generate(run)
        XCTAssertEqual(a.status, 0, a.err)
        XCTAssertEqual(Array(a.out.prefix(5)), Array("to be".utf8))
        XCTAssertEqual(a.out.count, "to be".utf8.count + 20 + 1, "the prompt, 20 byte tokens, a final line break")
        XCTAssertTrue(a.err.contains("tokens/s"), a.err)
        XCTAssertEqual(a.out, b.out, "same seed, same text")
        let ck = try generate(run + "/checkpoints/step-00000010", ["--vocab", h.dir + "/bytes/vocab.json"])
        XCTAssertEqual(ck.out, a.out, "the final checkpoint holds the final weights")
        let file = try generate(run + "/model.safetensors", ["--temperature", "0"])
        XCTAssertEqual(file.status, 0, file.err)
        let missing = try h.run([h.binary, "generate", h.dir + "/nothing", "x"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.output.contains(h.dir + "/nothing"), missing.output)
    }
}

extension LanguageToolsTests {
    /// prepare --shard-tokens writes the same tokens as one file per split, read in small chunks
    /// encoded 3 at a time in parallel against 1 thread reading whole files;
    /// training on a glob, a list or llm.c-style shards sees the same data as on one file, and a
    /// run stopped midway resumes to the same weights.
    func testManyShardsPrepareTrainAndResume() throws {
        let h = try Harness()
        let raw = h.dir + "/raw"
        try FileManager.default.createDirectory(atPath: raw, withIntermediateDirectories: true)
        var text = ""
        for i in 0..<300 {
            text +=
                " the \(["cat", "dog", "bird"][i % 3]) sat on mat \(i % 7) "
                + ".\(i % 5 == 0 ? "\r\n" : "\n")"
        }
        for split in ["train", "valid", "test"] {
            try text.write(toFile: "\(raw)/\(split).txt", atomically: true, encoding: .utf8)
        }
        for tok in ["word", "byte"] {
            let one = try h.run([
                h.binary, "prepare", "--input", raw, "--output", "\(h.dir)/\(tok)-one", "--tokenizer", tok,
                "--threads", "1",
            ])
            XCTAssertEqual(one.status, 0, one.output)
            let many = try h.run([
                h.binary, "prepare", "--input", raw, "--output", "\(h.dir)/\(tok)-many", "--tokenizer", tok,
                "--shard-tokens", "700", "--chunk-bytes", "64", "--threads", "3",
            ])
            XCTAssertEqual(many.status, 0, many.output)
            for split in ["train", "valid", "test"] {
                let a = try TokenCorpus(dir: "\(h.dir)/\(tok)-one", patterns: ["\(split).bin"])
                let b = try TokenCorpus(dir: "\(h.dir)/\(tok)-many", patterns: ["\(split)-*.bin"])
                XCTAssertGreaterThan(b.shards.count, 1)
                XCTAssertEqual((0..<a.count).map { a[$0] }, (0..<b.count).map { b[$0] }, "\(tok) \(split)")
            }
            XCTAssertEqual(
                try Vocabulary.read(from: "\(h.dir)/\(tok)-one/vocab.json"),
                try Vocabulary.read(from: "\(h.dir)/\(tok)-many/vocab.json"))
        }
        func config(_ name: String, _ data: String, _ shards: String) throws -> String {
            let yaml = """
                run: {name: \(name), dir: \(h.dir)/runs, seed: 3}
                data: {dir: \(data), \(shards)}
                model: {layers: 1, d_model: 16, heads: 2, d_ff: 32, context: 16, dropout: 0.1}
                train: {steps: 8, batch_size: 4, lr: 3.0e-3, threads: 1, log_every: 1}
                checkpoint: {every: 0}
                """
            try yaml.write(toFile: "\(h.dir)/\(name).yaml", atomically: true, encoding: .utf8)
            return "\(h.dir)/\(name).yaml"
        }
        let many = "\(h.dir)/word-many"
        let trainShards = try FileManager.default.contentsOfDirectory(atPath: many).filter { $0.hasPrefix("train-") }
            .sorted()
        let runs = [
            ("single", try config("single", "\(h.dir)/word-one", "train: train.bin")),
            (
                "glob",
                try config("glob", many, "train: \"train-*.bin\", valid: \"valid-*.bin\", test: [\"test-*.bin\"]")
            ),
            (
                "list",
                try config(
                    "list", many,
                    "train: [\(trainShards.joined(separator: ", "))], valid: "
                        + "\"valid-*.bin\", test: \"test-*.bin\"")
            ),
        ]
        for (_, cfg) in runs { let r = try h.run([h.binary, "--config", cfg]); XCTAssertEqual(r.status, 0, r.output) }
        XCTAssertEqual(try h.losses("glob"), try h.losses("single"))
        XCTAssertEqual(try h.losses("list"), try h.losses("single"))
        XCTAssertEqual(try h.weights("glob"), try h.weights("single"))

        // Stopped after step 4 (a checkpoint), resumed: the same weights as the uninterrupted run.
        let cfg = try config("resumed", many, "train: \"train-*.bin\", valid: \"valid-*.bin\", test: \"test-*.bin\"")
        let stopped = try h.run([h.binary, "--config", cfg, "--debug-stop-at-step", "4"])
        XCTAssertTrue(stopped.output.contains("stopped on request after step 4"), stopped.output)
        let resumed = try h.run([h.binary, "--config", cfg, "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertEqual(try h.weights("resumed"), try h.weights("glob"))
    }
}

extension LanguageToolsTests {
    /// train.sample_every: samples printed and kept in metrics.jsonl, the same for the same seed.
    func testSamplesDuringTraining() throws {
        let h = try Harness()
        let cfg = try byteRun(
            h, name: "samples",
            extra: ", sample_every: 5, sample_tokens: 12, sample_prompt: \"to "
                + "be\"")
        let a = try h.run([h.binary, "--config", cfg])
        XCTAssertEqual(a.status, 0, a.output)
        XCTAssertTrue(a.output.contains("sample step 5: to be"), a.output)
        let metrics = try String(contentsOfFile: "\(h.dir)/runs/samples/metrics.jsonl", encoding: .utf8)
        let samples = try metrics.split(separator: "\n").compactMap { line -> [String: Any]? in
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return o["event"] as? String == "sample" ? o : nil
        }
        XCTAssertEqual(samples.map { $0["step"] as! Int }, [5, 10])
        XCTAssertTrue(samples.allSatisfy { ($0["prompt"] as! String) == "to be" && !($0["text"] as! String).isEmpty })
        let cfg2 = try byteRun(
            h, name: "samples2",
            extra: ", sample_every: 5, sample_tokens: 12, sample_prompt: \"to "
                + "be\"")
        let b = try h.run([h.binary, "--config", cfg2])
        let lines = { (o: Harness.Outcome) in o.output.split(separator: "\n").filter { $0.hasPrefix("sample step") } }
        XCTAssertEqual(lines(a), lines(b))
    }
}
