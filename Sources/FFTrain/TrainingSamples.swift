import Foundation
import FFData
import FFModel

/// A text the model generated during training (`train.sample_every`): printed, and kept in
/// metrics.jsonl as {"event": "sample", "step", "prompt", "text"}.
public struct TextSample: Sendable, Codable {
    public var event = "sample"
    public var step: Int
    public var prompt: String
    /// The continuation only (bytes that are not UTF-8 replaced).
    public var text: String
}

extension LanguageModelWorkload {
    /// Continues `prompt` by up to `tokens` tokens with the current weights (temperature 0.8,
    /// top-k 40, seeded by `seed`, so a run and its resumption print the same samples).
    public func sample(step: Int, prompt: String, tokens: Int, seed: UInt64) throws -> TextSample {
        let gen = TextGenerator(model: model, options: SamplingOptions(temperature: 0.8, topK: 40, seed: seed))
        let ids = gen.generate(prompt: try vocab.promptTokens(prompt), maxTokens: tokens, stop: vocab.stopTokens)
        return TextSample(step: step, prompt: prompt, text: vocab.promptSeparator(prompt) + vocab.text(of: ids))
    }
}
