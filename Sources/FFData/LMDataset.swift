/// Language-model samples cut from token shards (their concatenation): sample i is the window of
/// T + 1 tokens starting at i * T (inputs: the first T, targets: the last T). Windows do not
/// overlap, so every token but the first is a target exactly once (the "independent segments" of
/// the paper's evaluation). A window may span two shards.
public struct LMDataset: Sendable {
    public let shard: TokenCorpus
    public let context: Int

    public init(shard: TokenShard, context: Int) throws {
        try self.init(corpus: TokenCorpus(shards: [shard]), context: context)
    }

    public init(corpus shard: TokenCorpus, context: Int) throws {
        guard shard.count >= context + 1 else {
            throw DataError(shard.path, "has \(shard.count) tokens, fewer than context + 1 = \(context + 1)")
        }
        self.shard = shard
        self.context = context
    }

    /// Number of samples.
    public var count: Int { (shard.count - 1) / context }

    /// Writes sample `i`'s inputs and targets (T each): segment i, always a full one (i < count).
    public func sample(_ i: Int, inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>) {
        precondition(i >= 0 && i < count)
        windowSample(i, stride: context, inputs: inputs, targets: targets)
    }
}

extension LMDataset {
    /// Segments for evaluation: like `count`, plus a final partial window, so that every token
    /// but the first is predicted exactly once.
    public var evalCount: Int { windowCount(stride: context) }

    /// Segment `i` for evaluation; positions past the end of the data get input 0 and target -1
    /// (ignored by the loss).
    public func evalSample(_ i: Int, inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>) {
        windowSample(i, stride: context, inputs: inputs, targets: targets)
    }
}

extension LMDataset {
    /// Windows for sliding-window evaluation with `stride` (1 ... context): window w starts at
    /// w·stride; the first scores all its targets, each later one only its last `stride` (the
    /// others were scored by an earlier window with less context). Every token but the first is
    /// scored exactly once; stride = context gives the independent segments of `evalSample`.
    public func windowCount(stride: Int) -> Int {
        let n = shard.count - 1
        return 1 + max(0, n - context + stride - 1) / stride
    }

    public func windowSample(
        _ w: Int, stride: Int, inputs: UnsafeMutablePointer<Int32>,
        targets: UnsafeMutablePointer<Int32>
    ) {
        let start = w * stride
        let n = max(0, min(context, shard.count - 1 - start))
        shard.copy(from: start, count: n, into: inputs)
        shard.copy(from: start + 1, count: n, into: targets)
        for t in n..<context { inputs[t] = 0; targets[t] = -1 }
        if w > 0 { for t in 0..<(context - stride) { targets[t] = -1 } }
    }
}
