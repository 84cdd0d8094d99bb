import FFDistributed

/// Runs a start-up step on every rank and lets all ranks learn whether any of them failed, so
/// that a bad file seen by one rank stops every rank with a message (instead of leaving the
/// others blocked in the next collective). A failing rank rethrows its own error; the others
/// throw one that names the failed ranks.
public func agree<T>(_ comm: Communicator, _ what: String, _ body: () throws -> T) throws -> T {
    let result: Result<T, Error>
    do { result = .success(try body()) } catch { result = .failure(error) }
    guard comm.size > 1 else { return try result.get() }
    var failed = [Double](repeating: 0, count: comm.size)
    if case .failure = result { failed[comm.rank] = 1 }
    try comm.allreduceSum(&failed, count: comm.size)
    if case .failure(let e) = result { throw e }
    let ranks = failed.indices.filter { failed[$0] > 0 }
    if !ranks.isEmpty {
        throw CollectiveError(
            "\(what) failed on rank\(ranks.count > 1 ? "s" : "") "
                + "\(ranks.map(String.init).joined(separator: ", ")); see \(ranks.count > 1 ? "their" : "its") message")
    }
    return try result.get()
}

/// Stops every rank when a rank's config (after its overrides) differs from rank 0's.
public func checkSameConfig(_ comm: Communicator, _ config: TrainConfig) throws {
    guard comm.size > 1 else { return }
    var h = config.hash
    try withUnsafeMutableBytes(of: &h) { try comm.broadcast(bytes: $0.baseAddress!, count: 8, root: 0) }
    let mine = config.hash
    try agree(comm, "the config check") {
        if h != mine {
            throw ConfigError(
                "rank \(comm.rank): config \(config.source) (hash \(String(mine, radix: 16))) differs "
                    + "from rank 0's (hash \(String(h, radix: 16))); every rank must run the same config and --set "
                    + "overrides")
        }
    }
}
