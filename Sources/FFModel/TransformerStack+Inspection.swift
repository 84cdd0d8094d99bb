import FFKernels

/// Read-only views of what the last forward pass left in the stack, for attention health
/// metrics and the data-dependent R initialisation. Nothing here runs a kernel.
extension TransformerStack {
    /// A layer's q, k, v from the last forward: (B, T, 3C) with q at column 0, k at C, v at 2C;
    /// head h's slice of each starts at h · headDim. Valid for `lastBatch` samples.
    public func lastQKV(layer: Int) -> UnsafePointer<Float> { UnsafePointer(acts[layer].qkv) }

    /// A layer's per-row statistic from the last forward, (B, H, T): S_i = Σ_j W_ij + eps for
    /// Fourier attention (log-sum-exp of the logits for softmax).
    public func lastRowStat(layer: Int) -> UnsafePointer<Float> { UnsafePointer(acts[layer].attStat) }

    /// Samples in the last forward.
    public var lastBatchSize: Int { lastBatch }

    /// Offset of layer `layer`'s R tensor in the parameter buffer (Fourier attention only).
    public func rOffset(layer: Int) -> Int? {
        guard case .fourier = config.attention else { return nil }
        return blockParams[layer].R
    }
}
