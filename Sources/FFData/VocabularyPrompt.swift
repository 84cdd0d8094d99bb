import Foundation

extension Vocabulary {
    /// A prompt's tokens for generation; an empty prompt starts where a document or line starts
    /// (`<|endoftext|>`, `<eos>`, or a line break).
    public func promptTokens(_ text: String) throws -> [Int32] {
        switch tokenizer {
        case .gpt2:
            let bpe = try gpt2()
            return text.isEmpty ? [bpe.endOfTextID] : bpe.encode(text)
        case .byte:
            return text.isEmpty ? [10] : text.utf8.map { Int32($0) }
        case .word:
            let eos = Int32(tokens.firstIndex(of: Vocabulary.eos) ?? 0)
            var ids = encode(text)
            // encode ends every line with <eos>; a prompt that stops mid-line continues that line.
            if !text.hasSuffix("\n") && ids.last == eos { ids.removeLast() }
            return ids.isEmpty ? [eos] : ids
        }
    }

    /// Tokens that end a generated text: `<|endoftext|>` or `<eos>` (none for bytes).
    public var stopTokens: Set<Int32> {
        switch tokenizer {
        case .gpt2: return [Int32(size - 1)]
        case .word: return Set(tokens.firstIndex(of: Vocabulary.eos).map { [Int32($0)] } ?? [])
        case .byte: return []
        }
    }

    /// What separates a prompt from its continuation when printed (a space between words).
    public func promptSeparator(_ prompt: String) -> String {
        tokenizer == .word && !prompt.isEmpty && !prompt.hasSuffix("\n") ? " " : ""
    }

    /// The text of generated tokens, as `generate` streams it (bytes that are not UTF-8 replaced).
    public func text(of ids: [Int32]) -> String {
        String(decoding: ids.flatMap { bytes(of: $0) }, as: UTF8.self)
    }
}
