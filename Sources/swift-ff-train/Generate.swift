import FFFormats
import ArgumentParser
import Foundation
import FFData
import FFModel
import FFTrain

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue a prompt with a trained language model, streaming the text as it is drawn.",
        discussion: """
            WEIGHTS is a run folder (its model.safetensors, else its latest checkpoint), a checkpoint \
            folder, or a .safetensors file written by swift-ff-train (the model config is in its \
            metadata). The vocabulary is --vocab, else the data of --config, else a vocab.json in the \
            run folder (training writes one there). Generation stops at <eos> / <|endoftext|> or after \
            --max-new-tokens; tokens per second go to standard error. Keys and values are cached; when \
            the text outgrows the context the window drops its older half and the cache is rebuilt.
            """)

    @Argument(help: "A run folder, a checkpoint folder or a .safetensors file.") var weights: String
    @Argument(help: "The prompt (or --prompt-file; empty: start from a document/line start).") var prompt: String?
    @Option(name: .long, help: "Read the prompt from this file.") var promptFile: String?
    @Option(name: .long, help: "The vocabulary (vocab.json).") var vocab: String?
    @Option(name: .long, help: "A training config: its data.dir holds the vocabulary.") var config: String?
    @Option(name: .long, help: "Tokens to generate at most.") var maxNewTokens: Int = 200
    @Option(name: .long, help: "Sampling temperature; 0 is greedy.") var temperature: Double = 0.8
    @Option(name: .long, help: "Sample from the k most likely tokens only (0: all).") var topK: Int = 0
    @Option(name: .long, help: "Sample from the smallest set of tokens with this much probability (1: all).")
    var topP: Double = 1
    @Option(name: .long, help: "Random seed (the same seed, model and prompt give the same text).") var seed: UInt64 = 1

    func validate() throws {
        guard maxNewTokens >= 1 else { throw ValidationError("--max-new-tokens must be at least 1") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be >= 0") }
        guard topK >= 0 else { throw ValidationError("--top-k must be >= 0") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        if prompt != nil && promptFile != nil { throw ValidationError("give the prompt or --prompt-file, not both") }
    }

    func run() throws {
        do {
            let saved = try SavedModel.locate(weights)
            let lm = try LMConfig(modelJSON: saved.modelJSON, source: saved.path)
            let vocabulary = try loadVocabulary(saved)
            guard vocabulary.size == lm.vocabSize else {
                throw ConfigError(
                    "\(saved.path): the model has \(lm.vocabSize) tokens, the vocabulary "
                        + "\(vocabulary.size)")
            }
            let model = LanguageModel(config: lm, maxBatch: 1)
            try saved.load(layout: model.layout, params: model.params)
            let text = try promptText()
            let ids = try vocabulary.promptTokens(text)
            let options = SamplingOptions(temperature: temperature, topK: topK, topP: topP, seed: seed)
            let gen = TextGenerator(model: model, options: options)
            let out = FileHandle.standardOutput
            out.write(Data(text.utf8))
            out.write(Data(vocabulary.promptSeparator(text).utf8))
            let t0 = Date()
            var first: Date?
            let tokens = gen.generate(prompt: ids, maxTokens: maxNewTokens, stop: vocabulary.stopTokens) { tok in
                if first == nil { first = Date() }
                out.write(Data(vocabulary.bytes(of: tok)))
            }
            out.write(Data("\n".utf8))
            report(
                tokens: tokens.count, promptTokens: ids.count, start: t0, firstToken: first ?? Date(),
                slides: gen.slides)
        } catch { fail(error) }
    }

    func promptText() throws -> String {
        guard let promptFile else { return prompt ?? "" }
        guard let data = FileManager.default.contents(atPath: promptFile) else {
            throw DataError(promptFile, "cannot read the prompt file")
        }
        guard let s = String(data: data, encoding: .utf8) else { throw DataError(promptFile, "is not valid UTF-8") }
        return s
    }

    /// --vocab, else --config's data, else vocab.json in the run folder the weights belong to.
    func loadVocabulary(_ saved: SavedModel) throws -> Vocabulary {
        if let vocab { return try Vocabulary.read(from: vocab) }
        if let config { return try Vocabulary.read(from: try TrainConfig.load(path: config).dataPath("vocab.json")) }
        var dir = saved.path
        for _ in 0..<4 {
            dir = (dir as NSString).deletingLastPathComponent
            let p = (dir as NSString).appendingPathComponent("vocab.json")
            if FileManager.default.fileExists(atPath: p) { return try Vocabulary.read(from: p) }
            if dir.isEmpty || dir == "/" { break }
        }
        throw ConfigError("\(weights): no vocab.json found beside the weights; pass --vocab FILE or --config FILE")
    }

    func report(tokens: Int, promptTokens: Int, start: Date, firstToken: Date, slides: Int) {
        let total = Date().timeIntervalSince(start), decode = Date().timeIntervalSince(firstToken)
        let rate = tokens > 1 ? Double(tokens - 1) / max(decode, 1e-9) : Double(tokens) / max(total, 1e-9)
        var line = String(
            format: "generated %d tokens in %.2f s: %.1f tokens/s (prompt %d tokens, "
                + "first token after %.2f s)",
            tokens, total, rate, promptTokens, firstToken.timeIntervalSince(start))
        if slides > 0 { line += ", window slid \(slides) time(s)" }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

/// A copy of the vocabulary in the run folder, so that `generate RUN` needs nothing else.
func keepVocabulary(_ v: Vocabulary, in runDirectory: String) throws {
    try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
    try v.write(to: (runDirectory as NSString).appendingPathComponent("vocab.json"))
}
