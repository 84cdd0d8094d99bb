/// A problem with input data, naming the file and what is wrong.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let message: String
    public init(_ path: String, _ message: String) { self.path = path; self.message = message }
    /// An error whose message already names the file (relayed from another rank).
    public init(_ message: String) { self.path = ""; self.message = message }
    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}
