import Foundation

/// GPT-2's byte-level BPE: text is cut into pieces by GPT-2's pre-tokenisation pattern, each
/// piece's UTF-8 bytes become byte tokens, and adjacent tokens are merged lowest rank first.
///
/// The ranks are tiktoken's format (one line per token: base64 of its bytes, a space, its rank;
/// ranks 0, 1, 2, ... in order). GPT-2 has 50,256 of them; `<|endoftext|>` is id 50,256. A
/// token's id is its rank, so a merged pair's priority is simply the merged token's id.
public final class GPT2BPE: @unchecked Sendable {
    public static let endOfText = "<|endoftext|>"
    /// GPT-2's number of mergeable tokens (the ranks file may hold more: p50k_base does).
    public static let rankCount = 50256

    /// The bytes of every token by id; the last is `<|endoftext|>`'s literal text.
    public let tokenBytes: [[UInt8]]
    public var endOfTextID: Int32 { Int32(tokenBytes.count - 1) }
    /// The token of each single byte.
    let byteToken: [Int32]
    /// (left id << 32 | right id) -> the id of their concatenation, for every pair whose
    /// concatenation is a token (not only the merge that made it: tiktoken looks up bytes).
    let merges: [UInt64: Int32]
    /// A hash of a token's bytes -> its id, for the whole-piece shortcut tiktoken takes.
    let whole: [UInt64: Int32]

    /// Builds the tokenizer from the mergeable tokens' bytes in rank order.
    public init(ranked: [[UInt8]]) throws {
        var byteToken = [Int32](repeating: -1, count: 256)
        var whole: [UInt64: Int32] = [:]
        whole.reserveCapacity(ranked.count)
        for (id, t) in ranked.enumerated() {
            if t.count == 1 { byteToken[Int(t[0])] = Int32(id) }
            guard whole.updateValue(Int32(id), forKey: GPT2BPE.hash(t)) == nil else {
                throw DataError("BPE ranks", "token \(id) repeats an earlier token's bytes (or their hash)")
            }
        }
        if let missing = byteToken.firstIndex(of: -1) {
            throw DataError("BPE ranks", "no token for the byte \(missing): byte-level BPE needs all 256")
        }
        var merges: [UInt64: Int32] = [:]
        for (id, t) in ranked.enumerated() where t.count > 1 {
            for k in 1..<t.count {
                guard let a = whole[GPT2BPE.hash(t[..<k])], let b = whole[GPT2BPE.hash(t[k...])] else { continue }
                merges[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] = Int32(id)
            }
        }
        self.byteToken = byteToken
        self.whole = whole
        self.merges = merges
        tokenBytes = ranked + [Array(GPT2BPE.endOfText.utf8)]
    }

    /// Reads a tiktoken ranks file and keeps its first `rankCount` tokens.
    public static func readRanks(path: String, count: Int = rankCount) throws -> [[UInt8]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError(path, "BPE ranks file not found (get it with: bash launch/fetch-gpt2-ranks.sh data)")
        }
        var out: [[UInt8]] = []
        out.reserveCapacity(count)
        for (n, line) in data.split(separator: 10, omittingEmptySubsequences: true).enumerated() {
            if out.count == count { break }
            let fields = line.split(separator: 32)
            guard fields.count == 2, let bytes = Data(base64Encoded: Data(fields[0])),
                let rank = Int(String(decoding: fields[1], as: UTF8.self))
            else {
                throw DataError(path, "line \(n + 1) is not 'BASE64 RANK'")
            }
            guard rank == n else { throw DataError(path, "line \(n + 1) has rank \(rank), expected \(n)") }
            out.append([UInt8](bytes))
        }
        guard out.count == count else { throw DataError(path, "holds \(out.count) ranks, GPT-2 needs \(count)") }
        return out
    }

    /// Encodes text without special tokens (tiktoken's `encode_ordinary`).
    public func encode(_ text: String) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3)
        var bytes: [UInt8] = []
        GPT2Pretokenizer.forEachPiece(text) { piece in
            bytes.removeAll(keepingCapacity: true)
            for s in piece { appendUTF8(s, to: &bytes) }
            encodePiece(bytes, into: &out)
        }
        return out
    }

    /// The token ids of one piece's bytes.
    func encodePiece(_ bytes: [UInt8], into out: inout [Int32]) {
        if bytes.count == 1 { out.append(byteToken[Int(bytes[0])]); return }
        if let id = whole[GPT2BPE.hash(bytes[...])], tokenBytes[Int(id)] == bytes { out.append(id); return }
        var parts = bytes.map { byteToken[Int($0)] }
        // rank[i]: the id of parts[i] + parts[i + 1] if that is a token, else Int32.max.
        var rank = (0..<(parts.count - 1)).map { pairRank(parts[$0], parts[$0 + 1]) }
        while true {
            var best = Int32.max, at = -1
            for (i, r) in rank.enumerated() where r < best { best = r; at = i }  // leftmost on ties
            if at < 0 { break }
            parts[at] = best
            parts.remove(at: at + 1)
            rank.remove(at: at)
            if at > 0 { rank[at - 1] = pairRank(parts[at - 1], parts[at]) }
            if at < rank.count { rank[at] = pairRank(parts[at], parts[at + 1]) }
        }
        out.append(contentsOf: parts)
    }

    @inline(__always) func pairRank(_ a: Int32, _ b: Int32) -> Int32 {
        merges[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] ?? Int32.max
    }

    /// Concatenated bytes of `ids` (`<|endoftext|>` as its literal text).
    public func decodeBytes(_ ids: [Int32]) -> [UInt8] {
        ids.flatMap { tokenBytes[Int($0)] }
    }

    /// 64-bit FNV-1a; collisions among the ranks are refused at init.
    static func hash<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}

@inline(__always) func appendUTF8(_ s: Unicode.Scalar, to bytes: inout [UInt8]) {
    let v = s.value
    switch v {
    case 0..<0x80: bytes.append(UInt8(v))
    case 0x80..<0x800: bytes += [UInt8(0xC0 | v >> 6), UInt8(0x80 | v & 0x3F)]
    case 0x800..<0x10000:
        bytes += [UInt8(0xE0 | v >> 12), UInt8(0x80 | v >> 6 & 0x3F), UInt8(0x80 | v & 0x3F)]
    default:
        bytes += [
            UInt8(0xF0 | v >> 18), UInt8(0x80 | v >> 12 & 0x3F), UInt8(0x80 | v >> 6 & 0x3F),
            UInt8(0x80 | v & 0x3F),
        ]
    }
}

/// GPT-2's pre-tokenisation, written out by hand instead of a regex engine:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, over Unicode
/// scalars, alternatives tried in order, each greedy (what tiktoken's regex does).
public enum GPT2Pretokenizer {
    /// Scalar classes: \s (White_Space), \p{L}, \p{N}, and everything else.
    enum Class: UInt8 { case space, letter, number, other }

    static let ascii: [Class] = (0..<128).map { classifyByProperties(Unicode.Scalar(UInt8($0))) }

    @inline(__always) static func classify(_ s: Unicode.Scalar) -> Class {
        s.value < 128 ? ascii[Int(s.value)] : classifyByProperties(s)
    }

    static func classifyByProperties(_ s: Unicode.Scalar) -> Class {
        let p = s.properties
        if p.isWhitespace { return .space }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Calls `body` with each piece of `text`, in order; the pieces concatenate to the text.
    public static func forEachPiece(_ text: String, _ body: (ArraySlice<Unicode.Scalar>) -> Void) {
        let s = Array(text.unicodeScalars)
        let c = s.map(classify)
        let n = s.count
        var i = 0
        while i < n {
            let start = i
            i = pieceEnd(s, c, from: i)
            body(s[start..<i])
        }
    }

    /// Where the piece starting at `i` ends.
    static func pieceEnd(_ s: [Unicode.Scalar], _ c: [Class], from i: Int) -> Int {
        let n = s.count
        if s[i] == "'", let len = contraction(s, at: i) { return i + len }
        if c[i] != .space { return run(c, from: i) }
        if s[i] == " ", i + 1 < n, c[i + 1] != .space { return run(c, from: i + 1) }
        let j = run(c, from: i)
        // \s+(?!\S) backs off one scalar when non-space follows; a run of one falls to \s+.
        return j < n && j - i >= 2 ? j - 1 : j
    }

    /// End of the run of scalars of `c[i]`'s class starting at i.
    static func run(_ c: [Class], from i: Int) -> Int {
        var j = i + 1
        while j < c.count && c[j] == c[i] { j += 1 }
        return j
    }

    /// Length of 's 't 're 've 'm 'll 'd at i (i holds the apostrophe), if one is there.
    static func contraction(_ s: [Unicode.Scalar], at i: Int) -> Int? {
        guard i + 1 < s.count else { return nil }
        switch s[i + 1] {
        case "s", "t", "m", "d": return 2
        case "r", "v": return i + 2 < s.count && s[i + 2] == "e" ? 3 : nil
        case "l": return i + 2 < s.count && s[i + 2] == "l" ? 3 : nil
        default: return nil
        }
    }
}

extension GPT2BPE {
    /// Splits text into documents for `<|endoftext|>`: a WikiText top-level heading line
    /// (" = Title = ", not " = = Section = = ") starts a new document; text without one is a
    /// single document.
    public static func documents(_ text: String) -> [Substring] {
        var docs: [Substring] = []
        var start = text.startIndex
        var lineStart = text.startIndex
        for i in text.utf8.indices where text.utf8[i] == 10 {
            let next = text.utf8.index(after: i)
            let line = text[lineStart..<i]
            if line.hasPrefix(" = ") && !line.hasPrefix(" = = ") && lineStart > start {
                docs.append(text[start..<lineStart]); start = lineStart
            }
            lineStart = next
        }
        let tail = text[lineStart...]
        if tail.hasPrefix(" = ") && !tail.hasPrefix(" = = ") && lineStart > start {
            docs.append(text[start..<lineStart]); start = lineStart
        }
        if start < text.endIndex || docs.isEmpty { docs.append(text[start...]) }
        return docs
    }

    /// Every document's tokens, each followed by `<|endoftext|>`.
    public func encodeDocuments(_ text: String) -> [Int32] {
        var out: [Int32] = []
        for d in GPT2BPE.documents(text) { out += encode(String(d)); out.append(endOfTextID) }
        return out
    }
}
