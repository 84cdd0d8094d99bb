import Foundation

/// Writes one split's tokens as shards as they come: `SPLIT.bin` when `shardTokens` is 0, else
/// `SPLIT-000000.bin`, `SPLIT-000001.bin`, ... of `shardTokens` tokens each (the last may be
/// shorter). Holds at most one shard's tokens.
public final class ShardWriter {
    public let dir: String, split: String, shardTokens: Int
    var pending: [Int32] = []
    public private(set) var paths: [String] = []
    public private(set) var total = 0

    public init(dir: String, split: String, shardTokens: Int) {
        self.dir = dir; self.split = split; self.shardTokens = shardTokens
    }

    public func append(_ ids: [Int32]) throws {
        pending += ids
        total += ids.count
        while shardTokens > 0 && pending.count >= shardTokens {
            try write(Array(pending.prefix(shardTokens)))
            pending.removeFirst(shardTokens)
        }
    }

    /// Writes what is left; returns every shard's path.
    @discardableResult
    public func finish() throws -> [String] {
        if !pending.isEmpty || paths.isEmpty { try write(pending) }
        pending = []
        return paths
    }

    func write(_ ids: [Int32]) throws {
        let name = shardTokens > 0 ? String(format: "%@-%06d.bin", split, paths.count) : "\(split).bin"
        let path = (dir as NSString).appendingPathComponent(name)
        try writeTokenShard(ids, to: path)
        paths.append(path)
    }

    /// The glob pattern that names this split's shards in a config (`data.train` etc.).
    public var pattern: String { shardTokens > 0 ? "\(split)-*.bin" : "\(split).bin" }
}

/// Where a text may be cut so that tokenising the pieces gives the same tokens as the whole.
public enum TextCut: Sendable {
    /// After a line break (word and byte tokenizers: lines are independent).
    case afterNewline
    /// Before a line break that follows a printable ASCII character: GPT-2's pieces never join a
    /// non-space to the white space after it, and the pieces after the cut see the same text.
    case beforeNewlineAfterPrintable
}

/// Reads the UTF-8 file at `path` in chunks of about `chunkBytes`, each ending at a `cut` point
/// (a chunk grows when it has none), and calls `body` with each; memory stays near two chunks.
/// Invalid UTF-8 is an error naming the file and the byte offset of the chunk.
public func forEachTextChunk(path: String, chunkBytes: Int, cut: TextCut, _ body: (String) throws -> Void) throws {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw DataError(path, "cannot open for reading") }
    defer { try? handle.close() }
    var buffer = [UInt8](), offset = 0
    func emit(_ bytes: ArraySlice<UInt8>) throws {
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw DataError(path, "is not valid UTF-8 (in the \(bytes.count) bytes from offset \(offset))")
        }
        try body(s)
        offset += bytes.count
    }
    while true {
        let data: Data
        do { data = try handle.read(upToCount: max(chunkBytes, 1)) ?? Data() } catch {
            throw DataError(path, "read failed at offset \(offset + buffer.count): \(error.localizedDescription)")
        }
        if data.isEmpty { break }
        buffer += data
        if buffer.count < chunkBytes { continue }
        guard let at = cutPoint(buffer, cut) else { continue }
        try emit(buffer[..<at])
        buffer.removeFirst(at)
    }
    if !buffer.isEmpty { try emit(buffer[...]) }
}

/// The last cut point in `b` (an index into it), if any lies after its start.
func cutPoint(_ b: [UInt8], _ cut: TextCut) -> Int? {
    var i = b.count - 1
    while i > 0 {
        if b[i] == 10 {
            switch cut {
            case .afterNewline: return i + 1
            case .beforeNewlineAfterPrintable: if (0x21...0x7E).contains(b[i - 1]) { return i }
            }
        }
        i -= 1
    }
    return nil
}

/// Word counts accumulated chunk by chunk, for a word vocabulary of a corpus too large to hold.
public struct WordCounter {
    var counts: [Substring: Int] = [:]
    var lines = 0

    public init() {}

    public mutating func add(_ text: String) {
        text.enumerateLinesFast { line in
            lines += 1
            // Keys copied out of the chunk, which is freed after this call.
            for w in line.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                counts[Substring(String(w)), default: 0] += 1
            }
        }
    }

    public func vocabulary(minCount: Int, maxSize: Int?) -> Vocabulary {
        Vocabulary.buildWord(counts: counts, lines: lines, minCount: minCount, maxSize: maxSize)
    }
}
