/// A file that is not what its format says: one sentence naming the file, and the field or
/// byte range, and what is wrong (safetensors, indexes, trainer states, metrics, model configs).
public struct FormatError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A checkpoint folder that cannot be written, committed, found or resumed from: names the
/// folder and what to do about it.
public struct CheckpointError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
