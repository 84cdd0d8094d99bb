import Foundation

/// Sums gradients over ranks in buckets, overlapped with the backward pass.
///
/// The backward pass finishes parameters in stages (the head, then the last block, ..., then the
/// embeddings); `stages[k]` is the contiguous range of the flat gradient buffer that stage k
/// completes, each stage just below the previous one. A bucket is a contiguous range of that
/// buffer of about `bucketFloats` elements; it may cut a tensor or a stage (a large embedding
/// becomes several buckets) and is sent the moment the last stage touching it is done, in the
/// same order on every rank; `finish` waits for all of them.
///
/// Without owners every bucket is allreduced. With ZeRO-1 owners (`owners[r]`: the elements rank
/// r updates) buckets are also cut at the owners' boundaries and each is summed into its owner
/// only (a reduce): together they are the reduce-scatter of the gradient, overlapped with
/// backward, and the owner's sums land in place in its gradient buffer.
public final class GradientSync {
    public struct Bucket: Equatable, Sendable {
        public var range: Range<Int>
        /// The stage whose completion makes the bucket ready.
        public var lastStage: Int
        /// The rank that receives the sum (ZeRO-1), or nil: every rank does (allreduce).
        public var owner: Int?
    }

    public let comm: Communicator
    public let buckets: [Bucket]
    private var next = 0
    private var grads: UnsafeMutablePointer<Float>?

    public init(comm: Communicator, stages: [Range<Int>], bucketFloats: Int, owners: [Range<Int>]? = nil) {
        self.comm = comm
        buckets = Self.cut(stages: stages, bucketFloats: max(bucketFloats, 1), owners: owners)
    }

    /// Buckets from the top of the buffer down: a piece is closed when it reaches `bucketFloats`,
    /// when an owner boundary lies below it, or at the last stage; so every bucket is sent at the
    /// last stage that touches it.
    static func cut(stages: [Range<Int>], bucketFloats: Int, owners: [Range<Int>]?) -> [Bucket] {
        let boundaries = (owners ?? []).map(\.lowerBound).filter { $0 > 0 }
        let last = stages.lastIndex { !$0.isEmpty } ?? -1
        var out: [Bucket] = []
        var top: Int? = nil, low = 0
        for (k, r) in stages.enumerated() where !r.isEmpty {
            if top == nil { top = r.upperBound; low = r.upperBound }
            precondition(r.upperBound == low, "stages must be adjacent, from the end of the buffer down")
            low = r.lowerBound
            while let hi = top, hi > low {
                // An owner boundary at or above `low` closes the piece above it: nothing below joins it.
                let boundary = boundaries.filter { $0 >= low && $0 < hi }.max()
                guard boundary != nil || hi - low >= bucketFloats || k == last else { break }
                let lo = max(low, hi - bucketFloats, boundary ?? low)
                let owner = owners?.firstIndex { $0.contains(lo) }
                out.append(Bucket(range: lo..<hi, lastStage: k, owner: owner))
                top = lo
            }
        }
        return out
    }

    /// Call before the backward pass whose gradients are to be synchronised.
    public func begin(grads: UnsafeMutablePointer<Float>) {
        self.grads = grads
        next = 0
    }

    private func start(_ b: Bucket, _ grads: UnsafeMutablePointer<Float>) throws {
        if let owner = b.owner {
            try comm.startReduceSum(grads + b.range.lowerBound, count: b.range.count, root: owner)
        } else {
            try comm.startAllreduceSum(grads + b.range.lowerBound, count: b.range.count)
        }
    }

    /// Call when backward stage `k` is done: starts every bucket that is now complete.
    public func stageDone(_ k: Int) throws {
        guard let grads else { return }
        while next < buckets.count && buckets[next].lastStage <= k {
            try start(buckets[next], grads)
            next += 1
        }
        try comm.progressPending()
    }

    /// Starts any bucket not yet started and waits for all; returns the seconds spent waiting
    /// (the communication the backward pass did not hide).
    @discardableResult
    public func finish() throws -> Double {
        guard let grads else { return 0 }
        while next < buckets.count {
            try start(buckets[next], grads)
            next += 1
        }
        let t0 = Date()
        let kind = buckets.first?.owner == nil ? "allreduce" : "reduce to owners"
        try comm.waitPending("gradient \(kind) (\(buckets.count) buckets)")
        self.grads = nil
        return Date().timeIntervalSince(t0)
    }
}

/// ZeRO-1 partitions: rank r owns the r-th of `ranks` contiguous element ranges of the flat
/// buffer, equal but for boundaries rounded down to multiples of `align` elements (64-byte
/// lines of floats), so each rank holds 1/N of the optimizer state within `align` elements.
/// Ranges cut tensors wherever the boundaries fall.
public func elementPartition(total: Int, ranks: Int, align: Int = 16) -> [Range<Int>] {
    precondition(ranks >= 1 && align >= 1)
    var bounds = (0...ranks).map { r in (total * r / ranks) / align * align }
    bounds[ranks] = total
    return (0..<ranks).map { bounds[$0]..<bounds[$0 + 1] }
}
