import Foundation
import FFData
import FFDistributed
import FFFormats

/// How a run starts with respect to the checkpoints it may already have.
public enum ResumeRequest: Equatable, Sendable {
    /// No `--resume`: a fresh start, refused while committed checkpoints exist.
    case none
    /// The newest committed checkpoint that verifies; fresh when there is none.
    case auto
    /// Start over: existing checkpoints are moved aside, never deleted.
    case fresh
    /// A given checkpoint folder.
    case path(String)

    /// Parses the `--resume` argument (`auto`, `fresh`, or a folder; nil: none).
    public init(_ spec: String?) {
        switch spec {
        case nil: self = .none
        case "auto": self = .auto
        case "fresh": self = .fresh
        case let p?: self = .path(p)
        }
    }
}

/// What rank 0 decided about the checkpoints folder; every rank acts on the same decision.
public struct ResumeOutcome: Codable, Sendable {
    /// The checkpoint loaded, or nil for a fresh start.
    public var folder: String?
    /// Warnings and notes for rank 0 to print (checkpoints skipped or moved aside, config changes).
    public var notes: [String] = []
    /// The run had already finished: nothing was loaded and there is nothing to do.
    public var finished = false
}

/// A decision or the error that prevented it, as rank 0 sends it.
struct DecisionWire<V: Codable>: Codable { var value: V?; var error: String?; var domain: String? }

/// Rank 0's error as the same error type on every rank, so callers can tell the domains apart.
func domainError(_ message: String, domain: String?) -> Error {
    switch domain {
    case "checkpoint": CheckpointError(message)
    case "format": FormatError(message)
    case "data": DataError(message)
    case "collective": CollectiveError(message)
    default: ConfigError(message)
    }
}

func domain(of error: Error) -> String {
    switch error {
    case is CheckpointError: "checkpoint"
    case is FormatError: "format"
    case is DataError: "data"
    case is CollectiveError: "collective"
    default: "config"
    }
}

/// Rank 0 runs `body`; every rank gets its result, or throws its error's message, so a decision
/// about shared files is taken once and every rank reports the same failure.
public func rootDecides<T: Codable>(_ comm: Communicator, _ body: () throws -> T) throws -> T {
    guard comm.size > 1 else { return try body() }
    var bytes = Data()
    if comm.isRoot {
        var wire = DecisionWire<T>(value: nil, error: nil)
        do { wire.value = try body() } catch { wire.error = "\(error)"; wire.domain = domain(of: error) }
        bytes = try JSONEncoder().encode(wire)
    }
    var count = Int64(bytes.count)
    try withUnsafeMutableBytes(of: &count) { try comm.broadcast(bytes: $0.baseAddress!, count: 8, root: 0) }
    var buffer = [UInt8](repeating: 0, count: Int(count))
    if comm.isRoot { buffer = [UInt8](bytes) }
    try buffer.withUnsafeMutableBytes { try comm.broadcast(bytes: $0.baseAddress!, count: $0.count, root: 0) }
    let wire = try JSONDecoder().decode(DecisionWire<T>.self, from: Data(buffer))
    if let error = wire.error { throw domainError(error, domain: wire.domain) }
    guard let value = wire.value else { throw CollectiveError("rank 0 sent no decision") }
    return value
}
