/// Deterministic epoch orders: epoch e visits samples in a permutation drawn from (seed, e).
/// A global batch of B samples takes B consecutive positions of that order; the last
/// `count % B` positions of each epoch are dropped, so every step's batch is full and every
/// sample is seen at most once per epoch.
public struct EpochSampler: Sendable {
    public let count: Int
    public let seed: UInt64
    public let globalBatch: Int

    public init(count: Int, seed: UInt64, globalBatch: Int) {
        precondition(globalBatch > 0 && count >= globalBatch)
        self.count = count; self.seed = seed; self.globalBatch = globalBatch
    }

    public var stepsPerEpoch: Int { count / globalBatch }

    /// The permutation of epoch `e`.
    public func order(epoch e: Int) -> [Int] {
        var p = Array(0..<count)
        var state = SplitMix64.mix(seed ^ SplitMix64.mix(UInt64(e) &+ 0xE90C))
        for i in stride(from: count - 1, to: 0, by: -1) {
            state &+= 0x9E37_79B9_7F4A_7C15
            let j = Int(SplitMix64.mix(state) % UInt64(i + 1))
            p.swapAt(i, j)
        }
        return p
    }

    /// (epoch, first position in that epoch's order) of global step `step` (0-based).
    public func position(ofStep step: Int) -> (epoch: Int, offset: Int) {
        (step / stepsPerEpoch, (step % stepsPerEpoch) * globalBatch)
    }
}
