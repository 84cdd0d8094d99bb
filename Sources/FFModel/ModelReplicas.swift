import FFCore
import Foundation
import Synchronization

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
    /// Per copy: how many gradient stages its running backward has finished.
    private let progress: [StageProgress]

    /// `copies` models from `make(maxBatch)`, each for up to ⌈microBatch / copies⌉ samples.
    public init(copies: Int, microBatch: Int, make: (_ maxBatch: Int) -> Model) {
        precondition(copies >= 1)
        let maxBatch = (microBatch + copies - 1) / copies
        self.maxBatch = maxBatch
        models = (0..<copies).map { _ in make(maxBatch) }
        slices = Array(repeating: 0..<0, count: copies)
        progress = (0..<copies).map { _ in StageProgress() }
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

    /// Runs every copy's backward (each on its own thread) and adds the copies' gradients into
    /// `grads` stage by stage (`stages`: the model's `gradientStages`), zeroing theirs for the next
    /// micro-step; calls `onStageDone(k)` as stage k is summed, always on the calling thread (MPI
    /// runs funneled through it).
    ///
    /// With `onStageDone` (a gradient sync to start), the calling thread sums a stage as soon as
    /// every copy has finished it, between its own copy's layers, so the sync of the first stages
    /// overlaps the copies' backward; the stages left when all copies are done are summed by all
    /// threads. Without it, all stages are summed by all threads at the end.
    public func backward(
        into grads: FlatBuffer, stages: [Range<Int>], threads: Int,
        onStageDone: ((Int) throws -> Void)?
    ) throws {
        let slices = self.slices, models = self.models
        let active = models.indices.filter { !slices[$0].isEmpty }
        let sources = active.map { models[$0].grads.pointer }
        let g = grads.pointer
        /// Adds the copies' gradients over `stage` into g and zeroes them.
        func sum(_ stage: Range<Int>, threads: Int) {
            parallelChunks(stage.count, threads: threads, grain: memoryPassGrain) { piece in
                let range = (stage.lowerBound + piece.lowerBound)..<(stage.lowerBound + piece.upperBound)
                for src in sources {
                    for i in range {
                        g[i] += src[i]
                        src[i] = 0
                    }
                }
            }
        }
        guard let onStageDone else {
            parallelFor(models.count, threads: models.count) { r, _ in
                if !slices[r].isEmpty { models[r].backward(onStageDone: nil) }
            }
            for stage in stages { sum(stage, threads: threads) }
            return
        }
        let progress = self.progress, caller = pthread_self()
        for p in progress { p.stages.store(0, ordering: .relaxed) }
        var next = 0  // stages summed and reported; the calling thread's alone
        var failure: Error?
        /// Sums and reports the next stage.
        func finishStage(threads: Int) {
            sum(stages[next], threads: threads)
            do { try onStageDone(next) } catch { failure = error }
            next += 1
        }
        /// On the calling thread: sums and reports every stage that all copies have finished.
        func drain() {
            while failure == nil && next < stages.count
                && active.allSatisfy({ progress[$0].stages.load(ordering: .acquiring) > next })
            {
                finishStage(threads: 1)  // the other threads are busy with their copies
            }
        }
        // One copy per worker: a copy's thread never waits for another copy.
        parallelFor(models.count, threads: models.count) { r, _ in
            guard !slices[r].isEmpty else { return }
            models[r].backward { k in
                progress[r].stages.store(k + 1, ordering: .releasing)
                if pthread_equal(pthread_self(), caller) != 0 { drain() }
            }
        }
        while failure == nil && next < stages.count { finishStage(threads: threads) }
        if let failure { throw failure }
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

/// The gradient stages one copy's backward has finished, published to the thread that sums them.
final class StageProgress: Sendable {
    let stages = Atomic<Int>(0)
}
