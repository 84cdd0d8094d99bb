import ArgumentParser
import Foundation
import FFData

/// GPT-2 BPE encoding speed on one core: MB of UTF-8 text per second, median of rounds.
struct BenchTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "GPT-2 BPE encoding speed (MB/s of UTF-8 text, one thread).",
        discussion: "launch/bench-tokenizer.sh runs it beside tiktoken on the same files.")

    @Argument(help: "UTF-8 text files to encode (each once per round).") var files: [String]
    @Option(name: .long, help: "The tiktoken ranks file.") var bpeRanks: String = "data/gpt2/gpt2.tiktoken"
    @Option(name: .long, help: "Timed rounds (after one warm-up round).") var rounds: Int = 5

    func run() throws {
        do {
            let bpe = try GPT2BPE(ranked: GPT2BPE.readRanks(path: bpeRanks))
            var texts: [String] = []
            for f in files {
                guard let data = FileManager.default.contents(atPath: f) else { throw DataError(f, "cannot read") }
                texts.append(String(decoding: data, as: UTF8.self))
            }
            let bytes = texts.reduce(0) { $0 + $1.utf8.count }
            var tokens = 0
            for t in texts { tokens += bpe.encode(t).count }  // warm-up
            var seconds: [Double] = []
            for _ in 0..<max(rounds, 1) {
                let t0 = Date()
                for t in texts { _ = bpe.encode(t) }
                seconds.append(Date().timeIntervalSince(t0))
            }
            let median = seconds.sorted()[seconds.count / 2]
            print(
                String(
                    format: "swift-ff-train gpt2: %d bytes, %d tokens, median %.3f s over %d rounds, %.2f MB/s",
                    bytes, tokens, median, seconds.count, Double(bytes) / median / 1e6))
        } catch { fail(error) }
    }
}
