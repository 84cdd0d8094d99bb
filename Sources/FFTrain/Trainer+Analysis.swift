import FFAnalysis

extension Trainer {
    /// Runs `sequences` samples (segments or images) of a split through the model and averages the
    /// attention statistics per layer and head; `onMaps(layer, maps)` sees the first sequence's maps.
    public func analyzeAttention(
        split: String, sequences: Int,
        onMaps: (Int, [[Double]]) -> Void = { _, _ in }
    ) throws -> AttentionReport {
        let n = try workload.analysisForward(split: split, first: 0, samples: sequences)
        return AttentionReport.measure(
            stack: workload.stack, params: workload.params, samples: n,
            attention: config.model.attention.name, split: split, onMaps: onMaps)
    }
}
