import FFCore

/// One copy of a model per thread, all reading the parameters of a primary model: each copy runs
/// forward and backward on its own contiguous slice of the micro-batch on one thread, as ranks
/// do, and `backward` sums their gradients into the primary's.
///
/// Splitting every operation instead (`threads` on the model) makes the threads meet at each of a
/// step's few hundred parallel loops, many tens of microseconds long; on a busy or virtual machine
/// a thread that loses its core for a moment holds the other up at every one. Here the threads
/// meet twice per micro-step. The price is memory: an activation arena per copy (together one
/// micro-batch's worth, beside the primary's, which evaluation keeps using) and a gradient
/// buffer per copy.
///
/// Results equal the primary's own step within fp32 rounding: the per-sample work is the same
/// (dropout and drop-path are keyed per sample), only the order of the sums over samples moves.
public final class ModelReplicas<Model: TrainableModel> {
    /// The copies, one per thread; each was made with one thread and the primary's parameters.
    public let models: [Model]
    /// Samples per copy at most.
    public let maxBatch: Int
    /// The slices of the last `forward`'s batch, one per copy (empty ones when it had fewer
    /// samples than copies).
    public private(set) var slices: [Range<Int>]
    private let losses: UnsafeMutablePointer<Double>

    /// `copies` models from `make(maxBatch)`, each for up to ⌈microBatch / copies⌉ samples.
    public init(copies: Int, microBatch: Int, make: (_ maxBatch: Int) -> Model) {
        precondition(copies >= 1)
        let maxBatch = (microBatch + copies - 1) / copies
        self.maxBatch = maxBatch
        models = (0..<copies).map { _ in make(maxBatch) }
        slices = Array(repeating: 0..<0, count: copies)
        losses = .allocate(capacity: copies)
        losses.initialize(repeating: 0, count: copies)
    }

    deinit { losses.deallocate() }

    /// Cuts samples 0..<batch into one contiguous slice per copy and runs `body(copy, slice)` for
    /// every non-empty slice, each on its own thread; returns the losses summed in copy order.
    public func forward(batch: Int, _ body: (Model, Range<Int>) -> Double) -> Double {
        let n = models.count
        precondition(batch <= n * maxBatch, "micro-batch \(batch) exceeds the copies' allocation")
        for r in 0..<n { slices[r] = (r * batch / n)..<((r + 1) * batch / n) }
        let slices = self.slices, losses = self.losses, models = self.models
        parallelTasks(n, threads: n) { r, _ in
            losses[r] = slices[r].isEmpty ? 0 : body(models[r], slices[r])
        }
        var sum = 0.0
        for r in 0..<n { sum += losses[r] }
        return sum
    }

    /// Runs every copy's backward (on its own thread), then adds the copies' gradients into
    /// `grads` stage by stage (`stages`: the model's `gradientStages`), zeroing theirs for the next
    /// micro-step, and calls `onStageDone(k)` as stage k is summed.
    public func backward(
        into grads: FlatBuffer, stages: [Range<Int>], threads: Int,
        onStageDone: ((Int) throws -> Void)?
    ) rethrows {
        let n = models.count
        let slices = self.slices, models = self.models
        parallelTasks(n, threads: n) { r, _ in
            if !slices[r].isEmpty { models[r].backward(onStageDone: nil) }
        }
        let g = grads.pointer
        let sources = (0..<n).filter { !slices[$0].isEmpty }.map { models[$0].grads.pointer }
        for (k, stage) in stages.enumerated() {
            parallelChunks(stage.count, threads: threads, grain: memoryPassGrain) { piece in
                let range = (stage.lowerBound + piece.lowerBound)..<(stage.lowerBound + piece.upperBound)
                for src in sources {
                    for i in range {
                        g[i] += src[i]
                        src[i] = 0
                    }
                }
            }
            try onStageDone?(k)
        }
    }

    /// Mean over rows of Σ_j A_ij per layer in the last forward, over every copy's rows.
    public var attentionRowSum: [Double] {
        var sum = [Double](repeating: 0, count: models[0].stack.attentionRowSum.count)
        var rows = 0
        for (model, slice) in zip(models, slices) where !slice.isEmpty {
            for (l, v) in model.stack.attentionRowSum.enumerated() { sum[l] += v * Double(slice.count) }
            rows += slice.count
        }
        return sum.map { $0 / Double(max(rows, 1)) }
    }

    /// Bytes of the copies' activations and their gradient buffers.
    public var bytes: Int { models.reduce(0) { $0 + $1.activationBytes + $1.grads.count * 4 } }
}
