import FFCore
import Foundation
import FFKernels

/// How the next token is drawn from the logits.
public struct SamplingOptions: Sendable, Equatable {
    /// 0: greedy (the most likely token); otherwise logits are divided by it.
    public var temperature: Double = 1
    /// Keep the k most likely tokens (0: all).
    public var topK: Int = 0
    /// Keep the fewest most likely tokens whose probabilities sum to at least p (1: all).
    public var topP: Double = 1
    public var seed: UInt64 = 1

    public init(temperature: Double = 1, topK: Int = 0, topP: Double = 1, seed: UInt64 = 1) {
        self.temperature = temperature; self.topK = topK; self.topP = topP; self.seed = seed
    }
}

/// Continues a token sequence with an `IncrementalDecoder`.
///
/// The window: the model only knows positions 0 ..< context. When the text fills the context, the
/// oldest `context / 2` tokens are dropped and the cache is rebuilt from the remaining ones at
/// positions 0 ..< context / 2 — the logits are then exactly a fresh pass over that window (every
/// training window also starts at position 0). Sliding by one token would keep more history but
/// needs a full recompute per token, since every cached key depends on its position.
public final class TextGenerator {
    public let decoder: IncrementalDecoder
    public var options: SamplingOptions
    var rng: SplitMix64
    /// The tokens of the current window, in the cache.
    public private(set) var window: [Int32] = []
    /// Times the window slid (each rebuilds the cache).
    public private(set) var slides = 0

    public init(model: LanguageModel, options: SamplingOptions) {
        decoder = IncrementalDecoder(model: model)
        self.options = options
        rng = SplitMix64(seed: SplitMix64.key(options.seed, 0x6E47))
    }

    var context: Int { decoder.model.config.context }

    /// Feeds tokens (a prompt, or a token just drawn), sliding the window when it is full;
    /// returns the logits after the last one.
    @discardableResult
    public func feed(_ tokens: [Int32]) -> UnsafeBufferPointer<Float> {
        precondition(!tokens.isEmpty)
        var logits: UnsafeBufferPointer<Float>!
        for tok in tokens {
            if decoder.isFull { slide() }
            window.append(tok)
            logits = decoder.append(tok)
        }
        return logits
    }

    func slide() {
        let keep = Array(window.suffix(context - max(context / 2, 1)))
        decoder.reset()
        window = keep
        for t in keep { decoder.append(t) }
        slides += 1
    }

    /// Generates up to `maxTokens` after `prompt` (non-empty), stopping after a token in `stop`;
    /// `onToken` sees each token as it is drawn. Returns the new tokens.
    public func generate(
        prompt: [Int32], maxTokens: Int, stop: Set<Int32> = [],
        onToken: (Int32) -> Void = { _ in }
    ) -> [Int32] {
        var logits = feed(prompt)
        var out: [Int32] = []
        while out.count < maxTokens {
            let tok = sample(logits)
            out.append(tok)
            onToken(tok)
            if stop.contains(tok) || out.count == maxTokens { break }
            logits = feed([tok])
        }
        return out
    }

    /// Draws a token from `logits` with `options`.
    public func sample(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        if options.temperature <= 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        let mx = Double(logits.max() ?? 0)
        var order = Array(0..<logits.count)
        let prob = logits.map { exp((Double($0) - mx) / options.temperature) }
        order.sort { prob[$0] != prob[$1] ? prob[$0] > prob[$1] : $0 < $1 }
        if options.topK > 0 { order = Array(order.prefix(options.topK)) }
        let total = order.reduce(0.0) { $0 + prob[$1] }
        if options.topP < 1 {
            var cum = 0.0, n = 0
            while n < order.count && (n == 0 || cum < options.topP * total) { cum += prob[order[n]]; n += 1 }
            order = Array(order.prefix(n))
        }
        let kept = order.reduce(0.0) { $0 + prob[$1] }
        var u = rng.nextDouble() * kept
        for i in order {
            u -= prob[i]
            if u < 0 { return Int32(i) }
        }
        return Int32(order.last!)
    }
}
