/// The collectives the trainer needs. Two implementations: `SingleProcess` (world of one, no
/// MPI) and the MPI one. Every rank calls the same collectives in the same order.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// In-place sum over ranks of `count` floats.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// In-place sum over ranks of `count` doubles.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws
    /// Rank `root`'s `count` floats copied to every rank.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws
    /// Rank `root`'s bytes copied to every rank.
    func broadcast(bytes: UnsafeMutableRawPointer, count: Int, root: Int) throws
    func barrier() throws
    /// In place: rank r contributes the r-th piece (counts[r] floats, pieces in rank order) of
    /// `buffer`, and every rank ends with all pieces.
    func allgather(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws
    /// Rank r sends `sendCounts[j]` floats from `send + sendOffsets[j]` to every rank j, and
    /// receives `recvCounts[j]` floats from rank j at `recv + recvOffsets[j]`.
    func alltoallv(
        _ send: UnsafePointer<Float>, sendCounts: [Int], sendOffsets: [Int],
        _ recv: UnsafeMutablePointer<Float>, recvCounts: [Int], recvOffsets: [Int]) throws
    /// In place: rank r contributes bytes `r * count ..< (r + 1) * count` of `buffer` (size × count
    /// bytes), and every rank ends with all of them.
    func allgather(bytes buffer: UnsafeMutableRawPointer, count: Int) throws
    /// Starts an in-place sum over ranks of `count` floats; it completes in `waitPending`.
    func startAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Starts a sum over ranks of `count` floats into rank `root`'s `buffer` (in place there; the
    /// other ranks' buffers are only read); it completes in `waitPending`.
    func startReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws
    /// Lets outstanding non-blocking collectives progress, without waiting.
    func progressPending() throws
    /// Waits for every outstanding non-blocking collective.
    func waitPending(_ what: @autoclosure () -> String) throws
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }
}

/// The world of one process: every collective is the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws {}
    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {}
    public func broadcast(bytes: UnsafeMutableRawPointer, count: Int, root: Int) throws {}
    public func barrier() throws {}
    public func allgather(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws {}
    public func alltoallv(
        _ send: UnsafePointer<Float>, sendCounts: [Int], sendOffsets: [Int],
        _ recv: UnsafeMutablePointer<Float>, recvCounts: [Int], recvOffsets: [Int]
    ) throws {
        (recv + recvOffsets[0]).update(from: send + sendOffsets[0], count: sendCounts[0])
    }
    public func allgather(bytes buffer: UnsafeMutableRawPointer, count: Int) throws {}
    public func startAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    public func startReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {}
    public func progressPending() throws {}
    public func waitPending(_ what: @autoclosure () -> String) throws {}
}

/// A collective step that failed on some ranks (each rank reports the same ranks and cause).
public struct CollectiveError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
