import Foundation

/// Token shards read as one sequence: their concatenation, in the order given. Every shard stays
/// memory-mapped, so a corpus of any size costs address space, not memory.
public final class TokenCorpus: @unchecked Sendable {
    public let shards: [TokenShard]
    /// Where shard k starts in the concatenation; the last entry is the total count.
    let starts: [Int]
    /// The shard path, or "FIRST (+N more shards)", for messages.
    public let path: String

    public init(shards: [TokenShard]) {
        precondition(!shards.isEmpty)
        self.shards = shards
        var s = [0]
        for sh in shards { s.append(s.last! + sh.count) }
        starts = s
        path = shards.count == 1 ? shards[0].path : "\(shards[0].path) (+\(shards.count - 1) more shards)"
    }

    /// Opens `patterns` (file names or glob patterns, relative to `dir` unless absolute); each
    /// glob's matches are taken in name order. Errors name the pattern that matches nothing.
    public convenience init(dir: String, patterns: [String]) throws {
        var shards: [TokenShard] = []
        for p in patterns {
            let full = p.hasPrefix("/") ? p : (dir as NSString).appendingPathComponent(p)
            let paths = isGlob(p) ? expandGlob(full) : [full]
            if paths.isEmpty { throw DataError(full, "matches no token shard") }
            for path in paths { shards.append(try TokenShard(path: path)) }
        }
        if shards.isEmpty { throw DataError(dir, "no token shard given") }
        self.init(shards: shards)
    }

    public var count: Int { starts.last! }

    @inline(__always) func locate(_ i: Int) -> Int {
        if shards.count == 1 { return 0 }
        var lo = 0, hi = shards.count - 1  // the last shard k with starts[k] <= i
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if starts[mid] <= i { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    public subscript(i: Int) -> Int32 {
        precondition(i >= 0 && i < count)
        let k = locate(i)
        return shards[k][i - starts[k]]
    }

    /// Copies tokens [start, start + n) into `out`, across shard boundaries.
    public func copy(from start: Int, count n: Int, into out: UnsafeMutablePointer<Int32>) {
        precondition(start >= 0 && start + n <= count)
        var done = 0
        while done < n {
            let i = start + done, k = locate(i)
            let m = min(n - done, starts[k + 1] - i)
            shards[k].copy(from: i - starts[k], count: m, into: out + done)
            done += m
        }
    }

    /// The largest token id (a full scan of every shard).
    public func maxToken() -> Int32 { shards.map { $0.maxToken() }.max() ?? -1 }
}

func isGlob(_ p: String) -> Bool { p.contains { "*?[".contains($0) } }

/// Paths matching a shell glob pattern, sorted.
func expandGlob(_ pattern: String) -> [String] {
    var g = glob_t()
    defer { globfree(&g) }
    guard glob(pattern, 0, nil, &g) == 0 else { return [] }
    return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }.sorted()
}
