import Foundation

/// Sums gradients over ranks in buckets, overlapped with the backward pass.
///
/// The backward pass finishes parameters in stages (the head, then the last block, ..., then the
/// embeddings); `stages[k]` is the contiguous range of the flat gradient buffer that stage k
/// completes. Consecutive stages are grouped into buckets of at least `bucketFloats` elements; a
/// bucket's non-blocking allreduce starts the moment its last stage is done, in the same order on
/// every rank, and `finish` waits for all of them.
public final class GradientSync {
    public struct Bucket: Equatable, Sendable {
        public var range: Range<Int>
        /// The stage whose completion makes the bucket ready.
        public var lastStage: Int
    }

    public let comm: Communicator
    public let buckets: [Bucket]
    private var next = 0
    private var grads: UnsafeMutablePointer<Float>?

    public init(comm: Communicator, stages: [Range<Int>], bucketFloats: Int) {
        self.comm = comm
        var out: [Bucket] = []
        var current: Range<Int>? = nil
        for (k, r) in stages.enumerated() where !r.isEmpty {
            if let c = current {
                precondition(r.upperBound == c.lowerBound || r.lowerBound == c.upperBound, "stages must be adjacent")
                current = min(c.lowerBound, r.lowerBound)..<max(c.upperBound, r.upperBound)
            } else {
                current = r
            }
            if current!.count >= bucketFloats || k == stages.count - 1 {
                out.append(Bucket(range: current!, lastStage: k)); current = nil
            }
        }
        if let c = current { out.append(Bucket(range: c, lastStage: stages.count - 1)) }
        buckets = out
    }

    /// Call before the backward pass whose gradients are to be synchronised.
    public func begin(grads: UnsafeMutablePointer<Float>) {
        self.grads = grads
        next = 0
    }

    /// Call when backward stage `k` is done: starts every bucket that is now complete.
    public func stageDone(_ k: Int) throws {
        guard let grads else { return }
        while next < buckets.count && buckets[next].lastStage <= k {
            let b = buckets[next]
            try comm.startAllreduceSum(grads + b.range.lowerBound, count: b.range.count)
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
            let b = buckets[next]
            try comm.startAllreduceSum(grads + b.range.lowerBound, count: b.range.count)
            next += 1
        }
        let t0 = Date()
        try comm.waitPending("gradient allreduce (\(buckets.count) buckets)")
        self.grads = nil
        return Date().timeIntervalSince(t0)
    }
}
