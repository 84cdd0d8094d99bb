import Foundation

/// How text becomes tokens.
public enum TokenizerKind: String, Sendable, Codable, CaseIterable {
    /// WikiText conventions: whitespace-separated tokens, `<eos>` at the end of every line,
    /// `<unk>` for words below the minimum count or past the vocabulary cap.
    case word
    /// UTF-8 bytes, 256 tokens; line ends are the byte 10.
    case byte
    /// GPT-2's byte-level BPE (50,257 tokens, `<|endoftext|>` between documents).
    case gpt2
}

/// A vocabulary: the token strings in id order, with their counts on the training split.
/// Stored as `vocab.json` beside the token shards.
public struct Vocabulary: Sendable, Codable, Equatable {
    public var tokenizer: TokenizerKind
    public var tokens: [String]
    /// Occurrences of each token in the training split (after mapping rare words to `<unk>`).
    public var counts: [Int]
    public var minCount: Int
    public var maxSize: Int?

    public static let eos = "<eos>", unk = "<unk>"

    public var size: Int { tokens.count }

    /// Builds a word vocabulary from the training text: `<eos>`, `<unk>`, then words by
    /// descending count (ties by the word), keeping those seen at least `minCount` times, capped
    /// at `maxSize` entries in all.
    public static func buildWord(trainText: String, minCount: Int, maxSize: Int?) -> Vocabulary {
        var counts: [Substring: Int] = [:]
        var lines = 0
        trainText.enumerateLinesFast { line in
            lines += 1
            for w in line.split(whereSeparator: { $0 == " " || $0 == "\t" }) { counts[w, default: 0] += 1 }
        }
        return buildWord(counts: counts, lines: lines, minCount: minCount, maxSize: maxSize)
    }

    /// `buildWord` from word counts and the number of lines (each line ends with `<eos>`).
    public static func buildWord(counts: [Substring: Int], lines: Int, minCount: Int, maxSize: Int?) -> Vocabulary {
        var words = counts.filter { $0.key != Substring(eos) && $0.key != Substring(unk) && $0.value >= minCount }
            .sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        if let maxSize { words = Array(words.prefix(max(maxSize - 2, 0))) }
        var tokens = [eos, unk]
        var tokenCounts = [lines + counts[Substring(eos), default: 0], 0]
        for (w, c) in words { tokens.append(String(w)); tokenCounts.append(c) }
        let total = counts.values.reduce(0, +)
        tokenCounts[1] = total - counts[Substring(eos), default: 0] - tokenCounts[2...].reduce(0, +)
        return Vocabulary(tokenizer: .word, tokens: tokens, counts: tokenCounts, minCount: minCount, maxSize: maxSize)
    }

    /// The 256-entry byte vocabulary; counts from the training text.
    public static func buildByte(trainText: String) -> Vocabulary {
        var counts = [Int](repeating: 0, count: 256)
        for b in trainText.utf8 { counts[Int(b)] += 1 }
        let tokens = (0..<256).map { String(format: "<0x%02X>", $0) }
        return Vocabulary(tokenizer: .byte, tokens: tokens, counts: counts, minCount: 0, maxSize: 256)
    }

    /// The GPT-2 vocabulary: `ranked` holds the mergeable tokens' bytes in rank order; each is
    /// stored as base64 (tiktoken's spelling), then `<|endoftext|>`. Counts come from `trainIDs`.
    public static func buildGPT2(ranked: [[UInt8]], trainIDs: [Int32]) -> Vocabulary {
        let tokens = ranked.map { Data($0).base64EncodedString() } + [GPT2BPE.endOfText]
        var counts = [Int](repeating: 0, count: tokens.count)
        for id in trainIDs { counts[Int(id)] += 1 }
        return Vocabulary(tokenizer: .gpt2, tokens: tokens, counts: counts, minCount: 0, maxSize: tokens.count)
    }

    /// The BPE tokenizer of a GPT-2 vocabulary, rebuilt from the tokens it stores.
    public func gpt2() throws -> GPT2BPE {
        guard tokenizer == .gpt2 else { throw DataError("vocabulary", "is \(tokenizer.rawValue), not gpt2") }
        guard tokens.last == GPT2BPE.endOfText else {
            throw DataError("vocabulary", "a gpt2 vocabulary ends with \(GPT2BPE.endOfText)")
        }
        let ranked = try tokens.dropLast().enumerated().map { (i, t) -> [UInt8] in
            guard let d = Data(base64Encoded: t) else { throw DataError("vocabulary", "token \(i) is not base64") }
            return [UInt8](d)
        }
        return try GPT2BPE(ranked: ranked)
    }

    /// The UTF-8 bytes token `id` stands for in decoded text (word tokens: the word then a space;
    /// `<eos>`: a line break), for streaming output and bits per byte.
    public func bytes(of id: Int32) -> [UInt8] {
        let t = tokens[Int(id)]
        switch tokenizer {
        case .byte: return [UInt8(truncatingIfNeeded: id)]
        case .word: return t == Vocabulary.eos ? [10] : Array(t.utf8) + [32]
        case .gpt2:
            if Int(id) == tokens.count - 1 { return Array(t.utf8) }
            return Data(base64Encoded: t).map { [UInt8]($0) } ?? []
        }
    }

    /// Bytes of text each token stands for, when that is well defined (byte and GPT-2 tokenizers;
    /// `<|endoftext|>` counts 0): the denominator of bits per byte.
    public var textBytesPerToken: [Int]? {
        switch tokenizer {
        case .word: return nil
        case .byte: return [Int](repeating: 1, count: size)
        case .gpt2: return (0..<size).map { $0 == size - 1 ? 0 : bytes(of: Int32($0)).count }
        }
    }

    /// Encodes text to token ids (GPT-2: without `<|endoftext|>`; builds the tokenizer on every
    /// call, so callers that encode often keep `gpt2()`).
    public func encode(_ text: String) -> [Int32] {
        switch tokenizer {
        case .gpt2:
            return (try? gpt2().encode(text)) ?? []
        case .byte:
            return text.utf8.map { Int32($0) }
        case .word:
            var index: [Substring: Int32] = [:]
            for (i, t) in tokens.enumerated() { index[Substring(t)] = Int32(i) }
            let eosID = index[Substring(Vocabulary.eos)]!, unkID = index[Substring(Vocabulary.unk)]!
            var out: [Int32] = []
            out.reserveCapacity(text.utf8.count / 5)
            text.enumerateLinesFast { line in
                for w in line.split(whereSeparator: { $0 == " " || $0 == "\t" }) { out.append(index[w] ?? unkID) }
                out.append(eosID)
            }
            return out
        }
    }

    /// Turns ids back into text (words joined by spaces, `<eos>` as a line break).
    public func decode(_ ids: [Int32]) -> String {
        switch tokenizer {
        case .byte:
            return String(decoding: ids.map { UInt8(truncatingIfNeeded: $0) }, as: UTF8.self)
        case .gpt2:
            return String(decoding: ids.flatMap { bytes(of: $0) }, as: UTF8.self)
        case .word:
            var s = ""
            for id in ids {
                let t = tokens[Int(id)]
                if t == Vocabulary.eos { s += "\n" } else { if !s.isEmpty && !s.hasSuffix("\n") { s += " " }; s += t }
            }
            return s
        }
    }

    /// Perplexity of the unigram model fitted on the training counts, on `ids`: the baseline a
    /// language model must beat.
    public func unigramPerplexity(_ ids: [Int32]) -> Double {
        let total = Double(counts.reduce(0, +))
        var nll = 0.0
        for id in ids {
            let c = Double(counts[Int(id)])
            nll -= log(max(c, 0.5) / total)  // a token unseen in training gets half a count
        }
        return exp(nll / Double(max(ids.count, 1)))
    }

    public func write(to path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        do { try enc.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw DataError(path, "cannot write vocabulary: \(error.localizedDescription)")
        }
    }

    public static func read(from path: String) throws -> Vocabulary {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError(path, "vocabulary file not found")
        }
        let v: Vocabulary
        do { v = try JSONDecoder().decode(Vocabulary.self, from: data) } catch {
            throw DataError(path, "not a valid vocabulary file: \(error)")
        }
        guard v.tokens.count == v.counts.count, v.tokens.count >= 2 else {
            throw DataError(path, "vocabulary has \(v.tokens.count) tokens and \(v.counts.count) counts")
        }
        if v.tokenizer == .word && !(v.tokens.contains(eos) && v.tokens.contains(unk)) {
            throw DataError(path, "word vocabulary lacks \(eos) or \(unk)")
        }
        return v
    }
}

extension String {
    /// Calls `body` for every line, split on "\n", "\r\n" or a lone "\r". A final line without a
    /// line break counts; the empty string after a final line break does not.
    ///
    /// Works on UTF-8 bytes: "\r\n" is a single Swift Character, so splitting on the Character
    /// "\n" would leave CRLF files as one long line.
    func enumerateLinesFast(_ body: (Substring) -> Void) {
        let u = utf8
        var start = u.startIndex, i = start
        while i != u.endIndex {
            let b = u[i]
            guard b == 10 || b == 13 else { i = u.index(after: i); continue }
            body(self[start..<i])
            var next = u.index(after: i)
            if b == 13, next != u.endIndex, u[next] == 10 { next = u.index(after: next) }
            start = next; i = next
        }
        if start != u.endIndex { body(self[start...]) }
    }
}
