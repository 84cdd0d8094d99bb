import Foundation

/// Token shards: a header of 256 little-endian int32 — [0] magic 20240520, [1] version (1: uint16
/// tokens, 2: uint32 tokens), [2] token count, the rest 0 — then the tokens, little-endian. Version
/// 1 is the layout llm.c reads.
public enum TokenShardFormat {
    public static let magic: Int32 = 20240520
    public static let headerBytes = 256 * 4
}

/// Writes `tokens` as a shard at `path`, atomically (temporary file, then rename). Uses uint16
/// when every token fits, else uint32.
public func writeTokenShard(_ tokens: [Int32], to path: String) throws {
    let wide = tokens.contains { $0 < 0 || $0 > Int32(UInt16.max) }
    var header = [Int32](repeating: 0, count: 256)
    header[0] = TokenShardFormat.magic
    header[1] = wide ? 2 : 1
    header[2] = Int32(tokens.count)
    var data = Data(capacity: TokenShardFormat.headerBytes + tokens.count * (wide ? 4 : 2))
    header.withUnsafeBytes { data.append(contentsOf: $0) }  // x86-64 and arm64 are little-endian
    if wide {
        tokens.map { UInt32(bitPattern: $0) }.withUnsafeBytes { data.append(contentsOf: $0) }
    } else {
        tokens.map { UInt16(truncatingIfNeeded: $0) }.withUnsafeBytes { data.append(contentsOf: $0) }
    }
    let url = URL(fileURLWithPath: path)
    do {
        try data.write(to: url, options: .atomic)
    } catch {
        throw DataError(path, "cannot write token shard: \(error.localizedDescription)")
    }
}

/// A token shard mapped read-only into memory; every header field is checked on open.
public final class TokenShard: @unchecked Sendable {
    public let path: String
    public let count: Int
    public let version: Int32
    private let base: UnsafeMutableRawPointer
    private let length: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DataError(path, "cannot open token shard (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DataError(path, "cannot stat token shard") }
        let size = Int(st.st_size)
        guard size >= TokenShardFormat.headerBytes else {
            throw DataError(
                path,
                "file is \(size) bytes, shorter than the \(TokenShardFormat.headerBytes)-byte shard header")
        }
        guard let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
            throw DataError(path, "cannot map token shard")
        }
        base = m; length = size
        let h = m.assumingMemoryBound(to: Int32.self)
        let magic = Int32(littleEndian: h[0]), version = Int32(littleEndian: h[1]), n = Int(Int32(littleEndian: h[2]))
        func fail(_ msg: String) -> DataError { munmap(m, size); return DataError(path, msg) }
        guard magic == TokenShardFormat.magic else {
            throw fail("bad magic \(magic), expected \(TokenShardFormat.magic): not a token shard")
        }
        guard version == 1 || version == 2 else { throw fail("unsupported shard version \(version) (expected 1 or 2)") }
        let width = version == 1 ? 2 : 4
        guard n >= 0, TokenShardFormat.headerBytes + n * width == size else {
            let expected = TokenShardFormat.headerBytes + max(n, 0) * width
            throw fail("header says \(n) tokens (\(expected) bytes) but the file has \(size) bytes")
        }
        self.version = version
        count = n
    }

    deinit { munmap(base, length) }

    @inline(__always) public subscript(i: Int) -> Int32 {
        precondition(i >= 0 && i < count)
        let p = base + TokenShardFormat.headerBytes
        if version == 1 { return Int32(UInt16(littleEndian: p.load(fromByteOffset: 2 * i, as: UInt16.self))) }
        return Int32(bitPattern: UInt32(littleEndian: p.load(fromByteOffset: 4 * i, as: UInt32.self)))
    }

    /// Copies tokens [start, start + n) into `out`.
    public func copy(from start: Int, count n: Int, into out: UnsafeMutablePointer<Int32>) {
        precondition(start >= 0 && start + n <= count)
        for i in 0..<n { out[i] = self[start + i] }
    }

    /// The largest token id (a full scan).
    public func maxToken() -> Int32 {
        var m: Int32 = -1
        for i in 0..<count { m = max(m, self[i]) }
        return m
    }
}
