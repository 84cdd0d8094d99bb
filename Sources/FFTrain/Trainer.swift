import FFAnalysis
import FFFormats
import FFCore
import Foundation
import FFData
import FFDistributed
import FFKernels
import FFModel

/// The training loop: one loop for one rank or many, for language models and image
/// classifiers alike (the `Workload` supplies the model and the data), built from a validated
/// config.
///
/// Each optimizer step takes `batchSize` samples, split evenly over ranks and then over
/// `gradAccum` micro-steps; gradients are summed over micro-steps and ranks and scaled so the loss
/// is the mean over the global batch's target tokens (or images).
public final class Trainer {
    public let config: TrainConfig
    public let comm: Communicator
    public let workload: Workload
    let sampler: EpochSampler
    let optimizer: AdamW
    let schedule: LRSchedule
    /// AdamW moments of the elements `owned` (all of them, or this rank's ZeRO-1 partition).
    let m: FlatBuffer, v: FlatBuffer
    /// The elements whose optimizer state this rank keeps and updates: all of them, or under
    /// ZeRO-1 this rank's equal share of the flat buffer (cutting tensors where it falls).
    public let owned: Range<Int>
    /// ZeRO-1: every rank's elements, in rank order (nil: every rank updates everything).
    let partitions: [Range<Int>]?
    /// Sequences per micro-step on this rank.
    public let microBatch: Int
    /// Exponential moving average of the parameters (`train.ema` > 0), full on every rank, and
    /// where the live parameters wait while an evaluation uses the average.
    public let ema: FlatBuffer?
    let liveParams: FlatBuffer?
    let keys: UnsafeMutablePointer<UInt64>
    /// (loss sum, stop votes) of a step, reduced over ranks.
    let stepSums: UnsafeMutablePointer<Double>
    var order: [Int] = []
    var orderEpoch = -1
    let sync: GradientSync
    /// Called at the start of every step (1-based) on every rank; debugging and fault injection.
    public var beforeStep: ((Int) -> Void)?
    /// Called with (step, epoch, the training samples this rank uses in that step), for audits.
    public var onSamples: ((Int, Int, ArraySlice<Int>) -> Void)?
    /// Polled once per step on every rank (e.g. a SIGTERM flag); if any rank says yes, all ranks
    /// save a checkpoint and `run` throws `TrainingStopped`.
    public var stopRequested: () -> Bool = { false }
    /// Called on every rank after the forward passes of a step, before its (last) backward: fault
    /// injection.
    public var beforeBackward: ((Int) -> Void)?
    /// Called with the step inside every checkpoint save, after the shards are written and before
    /// the commit (fault injection).
    public var checkpointHook: ((Int) -> Void)?
    /// Optimizer steps already done (non-zero after `resume`).
    public private(set) var startStep = 0

    public init(config: TrainConfig, comm: Communicator = SingleProcess()) throws {
        self.config = config
        self.comm = comm
        let tc = config.train
        let world = comm.size
        guard tc.batchSize % (world * tc.gradAccum) == 0 else {
            throw ConfigError(
                "\(config.source): train.batch_size (\(tc.batchSize)) must be divisible by ranks x "
                    + "grad_accum (\(world) x \(tc.gradAccum))")
        }
        microBatch = tc.batchSize / (world * tc.gradAccum)
        try MemoryBudget.checkThreads(tc.threads, source: config.source)
        // Our workers split every product; OpenBLAS's threads would only spin beside them.
        setBLASThreads(1)
        let workload: Workload
        switch config.model.kind {
        case .lm: workload = try LanguageModelWorkload(config: config, microBatch: microBatch)
        case .vit: workload = try ImageWorkload(config: config, microBatch: microBatch)
        }
        self.workload = workload
        guard workload.trainCount >= tc.batchSize else {
            let what =
                config.model.kind == .lm ? "training sequences of length \(config.model.context)" : "training images"
            throw ConfigError(
                "\(config.source): train.batch_size (\(tc.batchSize)) exceeds the "
                    + "\(workload.trainCount) \(what) in \(config.dataPath(config.data.train))")
        }
        workload.initialize(seed: config.run.seed)
        let layout = workload.layout
        partitions = config.dist.zero1 ? elementPartition(total: layout.count, ranks: world) : nil
        owned = partitions?[comm.rank] ?? 0..<layout.count
        // Under ZeRO-1 the buckets are cut at the partitions and each is reduced to its owner.
        sync = GradientSync(
            comm: comm, stages: workload.gradientStages,
            bucketFloats: max(1, Int(config.dist.bucketMB * 262_144)), owners: partitions)
        m = FlatBuffer(count: owned.count)
        v = FlatBuffer(count: owned.count)
        ema = tc.ema > 0 ? FlatBuffer(count: layout.count) : nil
        liveParams = tc.ema > 0 ? FlatBuffer(count: layout.count) : nil
        sampler = EpochSampler(count: workload.trainCount, seed: config.run.seed, globalBatch: tc.batchSize)
        optimizer = AdamW(beta1: tc.beta1, beta2: tc.beta2, eps: tc.adamEps, weightDecay: tc.weightDecay)
        schedule = LRSchedule(peak: tc.lr, warmup: tc.warmupSteps, total: tc.steps, minLR: tc.minLR, decay: tc.schedule)
        keys = .allocate(capacity: microBatch)
        stepSums = .allocate(capacity: 2)
    }

    deinit {
        keys.deallocate(); stepSums.deallocate()
    }

    /// Bytes this rank holds for training (see `StartInfo.memoryPerRank`).
    public var memoryBytes: Int {
        4 * (2 * workload.params.count + m.count + v.count + 2 * (ema?.count ?? 0)) + workload.activationBytes
    }

    /// Global sample indices of this rank's micro-step `micro` of 0-based step `step`.
    func sampleIndices(step: Int, micro: Int) -> (epoch: Int, indices: ArraySlice<Int>) {
        let (epoch, offset) = sampler.position(ofStep: step)
        if epoch != orderEpoch { order = sampler.order(epoch: epoch); orderEpoch = epoch }
        let perRank = config.train.batchSize / comm.size
        let start = offset + comm.rank * perRank + micro * microBatch
        return (epoch, order[start..<(start + microBatch)])
    }

    /// Runs every step, evaluates, saves the final weights; reports through `onEvent`.
    @discardableResult
    public func run(onEvent: (TrainEvent) -> Void = { _ in }) throws -> RunSummary {
        var loop = try startRun(onEvent: onEvent)
        for s in startStep..<config.train.steps {
            let step = s + 1
            beforeStep?(step)
            let pass = try computeStep(s, &loop)
            guard let norm = try checkFinite(step: step, pass, &loop, onEvent: onEvent) else { continue }
            try update(step: step, gradNorm: norm, &loop)
            try report(step: step, pass, gradNorm: norm, &loop, onEvent: onEvent)
            try checkpointIfDue(step: step, pass, &loop, onEvent: onEvent)
            try sampleIfDue(step: step, &loop, onEvent: onEvent)
            try evaluateIfDue(step: step, &loop, onEvent: onEvent)
        }
        return try finish(&loop, onEvent: onEvent)
    }

    /// What the loop carries from step to step: the metrics file, the throughput window, the
    /// non-finite streak, the collapse alarm.
    struct LoopState {
        let metrics: MetricsLog?
        /// Loss units (target tokens or images) per optimizer step, over all ranks.
        let unitsPerStep: Int
        let start = Date()
        var windowStart = Date(), windowSteps = 0
        var computeSeconds = 0.0, commSeconds = 0.0
        var skippedInARow = 0
        var lastLoss: Double?
        var alarm: CollapseAlarm
    }

    /// The summed loss of one step's forward and backward passes, after the gradient sync.
    struct StepPass {
        var lossSum: Double
        var epoch: Int
        /// Some rank asked to stop (a signal): every rank saves and stops after this step.
        var stop: Bool
    }

    /// Calibrates R on a fresh start, makes every rank start from rank 0's parameters, opens the
    /// metrics and reports the start.
    func startRun(onEvent: (TrainEvent) -> Void) throws -> LoopState {
        let tc = config.train, runDir = config.runDirectory, params = workload.params
        // A resumed run has its R in the checkpoint: calibrating again would change the model.
        let calibratedR = startStep == 0 ? try config.model.rCalibration?.apply(to: workload) : nil
        // Every rank starts from rank 0's parameters (and, on a fresh start, its average).
        try comm.broadcast(params.pointer, count: params.count, root: 0)
        if let ema, startStep == 0 { ema.pointer.update(from: params.pointer, count: params.count) }
        if comm.isRoot { try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true) }
        let metrics =
            comm.isRoot
            ? try MetricsLog(path: (runDir as NSString).appendingPathComponent("metrics.jsonl"), append: startStep > 0)
            : nil
        let unitsPerStep = tc.batchSize * workload.unitsPerSample
        var perRank = [Double](repeating: 0, count: 2 * comm.size)
        perRank[comm.rank] = Double(memoryBytes)
        perRank[comm.size + comm.rank] = Double(4 * (m.count + v.count))
        try comm.allreduceSum(&perRank, count: perRank.count)
        onEvent(
            .started(
                StartInfo(
                    parameters: params.count, data: workload.dataDescription,
                    worldSize: comm.size,
                    threadLayout: tc.threads == 1
                        ? "1 thread"
                        : tc.splitsSamples(microBatch: microBatch)
                            ? "\(tc.threads) threads, each on a slice of the samples"
                            : "\(tc.threads) threads, splitting each operation",
                    steps: tc.steps, unitsPerStep: unitsPerStep,
                    unit: workload.unit, attention: config.model.attention.name, runDirectory: runDir,
                    memoryPerRank: perRank[0..<comm.size].map { Int($0) },
                    optimizerBytesPerRank: perRank[comm.size...].map { Int($0) },
                    zero1: partitions != nil)))
        try metrics?.append(
            MemoryRecord(
                memoryBytes: perRank[0..<comm.size].map { Int($0) },
                optimizerBytes: perRank[comm.size...].map { Int($0) },
                zero1: partitions != nil))
        if let calibratedR {
            try metrics?.append(CalibratedR(r: calibratedR, target: config.model.rCalibration!.target))
            onEvent(.calibrated(r: calibratedR))
        }
        return LoopState(
            metrics: metrics, unitsPerStep: unitsPerStep,
            alarm: CollapseAlarm(
                layers: config.model.layers, threshold: tc.collapseThreshold,
                patience: tc.collapsePatience))
    }

    /// Forward and backward over the step's micro-batches, the gradient sync overlapped with the
    /// last backward (allreduce, or under ZeRO-1 each bucket reduced to the rank that owns it), and
    /// one allreduce of the loss and stop votes.
    func computeStep(_ s: Int, _ loop: inout LoopState) throws -> StepPass {
        let tc = config.train, step = s + 1, grads = workload.grads
        let lossScale = 1 / Float(loop.unitsPerStep)
        let t0 = Date()
        var exposed = 0.0, lossSum = 0.0, epoch = 0
        grads.zero()
        for micro in 0..<tc.gradAccum {
            let (e, idx) = sampleIndices(step: s, micro: micro)
            epoch = e
            onSamples?(step, e, idx)
            for (row, sample) in idx.enumerated() {
                keys[row] = SplitMix64.key(config.run.seed, UInt64(step), UInt64(sample))
            }
            lossSum += workload.trainForward(samples: idx, epoch: e, keys: keys, lossScale: lossScale)
            if micro == tc.gradAccum - 1 { beforeBackward?(step) }
            if micro == tc.gradAccum - 1 && comm.size > 1 {
                // Only the last micro-step syncs: its buckets go out as backward finishes them.
                sync.begin(grads: grads.pointer)
                try workload.backward(onStageDone: sync.stageDone)
                exposed += try sync.finish()
            } else {
                try workload.backward(onStageDone: nil)
            }
        }
        let t1 = Date()
        // The loss sum and the stop votes travel in one allreduce (a preallocated pair).
        stepSums[0] = lossSum
        stepSums[1] = stopRequested() ? 1 : 0
        try comm.allreduceSum(stepSums, count: 2)
        exposed += Date().timeIntervalSince(t1)
        loop.computeSeconds += Date().timeIntervalSince(t0) - exposed
        loop.commSeconds += exposed
        return StepPass(lossSum: stepSums[0], epoch: epoch, stop: stepSums[1] > 0)
    }

    /// The global gradient norm, or nil when the step is skipped for a non-finite loss or norm
    /// (`train.on_nonfinite: skip`); throws when the policy says stop. Both are reduced values,
    /// so every rank takes the same branch.
    func checkFinite(
        step: Int, _ pass: StepPass, _ loop: inout LoopState,
        onEvent: (TrainEvent) -> Void
    ) throws -> Double? {
        let tc = config.train
        let norm: Double
        if partitions != nil {
            // ZeRO-1: only the owned elements hold summed gradients.
            var sq = globalNorm(workload.grads.pointer + owned.lowerBound, count: owned.count)
            sq *= sq
            try comm.allreduceSum(&sq, count: 1)
            norm = sq.squareRoot()
        } else {
            norm = globalNorm(workload.grads.pointer, count: workload.grads.count)
        }
        if pass.lossSum.isFinite && norm.isFinite {
            loop.skippedInARow = 0
            return norm
        }
        loop.skippedInARow += 1
        let what = "loss \(pass.lossSum / Double(loop.unitsPerStep)), gradient norm \(norm)"
        if tc.onNonFinite == .stop || loop.skippedInARow > tc.maxSkippedSteps {
            let why =
                tc.onNonFinite == .stop
                ? " (train.on_nonfinite: stop)"
                : "; \(loop.skippedInARow) steps in a row (train.max_skipped_steps: \(tc.maxSkippedSteps))"
            throw NonFiniteError(message: "step \(step): \(what) not finite" + why)
        }
        onEvent(.skipped(step: step, reason: "\(what) not finite: update skipped"))
        try loop.metrics?.append(SkippedStep(step: step, reason: "nonfinite"))
        return nil
    }

    /// AdamW on this rank's elements (clipped by the global norm), the ZeRO-1 allgather of the
    /// new parameters, and the weight average.
    func update(step: Int, gradNorm norm: Double, _ loop: inout LoopState) throws {
        let tc = config.train, params = workload.params
        let lr = schedule.lr(at: step)
        let clip: Float = tc.gradClip > 0 && norm > Double(tc.gradClip) ? tc.gradClip / Float(norm) : 1
        optimizer.update(
            layout: workload.layout, elements: owned, params: params.pointer,
            grads: workload.grads.pointer + owned.lowerBound, m: m.pointer, v: v.pointer,
            base: owned.lowerBound, lr: lr, step: step, gradScale: clip, threads: tc.threads)
        if let partitions {
            let ta = Date()
            try comm.allgather(params.pointer, counts: partitions.map(\.count))
            loop.commSeconds += Date().timeIntervalSince(ta)
        }
        if let ema { updateAverage(ema, decay: min(tc.ema, Float(1 + step) / Float(10 + step))) }
    }

    /// At logged steps: the metrics line (with per-layer attention health on rank 0), the step
    /// event, and the collapse alarm.
    func report(
        step: Int, _ pass: StepPass, gradNorm norm: Double, _ loop: inout LoopState,
        onEvent: (TrainEvent) -> Void
    ) throws {
        let tc = config.train
        let stepLoss = pass.lossSum / Double(loop.unitsPerStep)
        loop.lastLoss = stepLoss
        loop.windowSteps += 1
        guard step % tc.logEvery == 0 || step == tc.steps || step == 1 else { return }
        let now = Date()
        let steps = Double(loop.windowSteps)
        let stepSec = now.timeIntervalSince(loop.windowStart) / steps
        let rate = Double(loop.unitsPerStep) / stepSec
        let sm = StepMetrics(
            step: step, steps: tc.steps, epoch: pass.epoch, loss: stepLoss,
            lr: Double(schedule.lr(at: step)), gradNorm: norm,
            tokensPerSecond: workload.unit == "tokens" ? rate : nil,
            imagesPerSecond: workload.unit == "images" ? rate : nil,
            stepSeconds: stepSec, elapsedSeconds: now.timeIntervalSince(loop.start),
            etaSeconds: stepSec * Double(tc.steps - step), attentionRowSum: workload.attentionRowSum,
            computeSeconds: loop.computeSeconds / steps, commSeconds: loop.commSeconds / steps)
        var health = sm
        if comm.isRoot && config.model.attention != .softmax {
            health.attentionHealth = LayerHealth.measure(workload.trainingStack, params: workload.params.pointer)
        }
        try loop.metrics?.append(health)
        onEvent(.step(sm))
        // Rank 0's row sums decide (the alarm only prints; it changes nothing in training).
        for c in loop.alarm.observe(step: step, rowSums: sm.attentionRowSum) where config.model.attention != .softmax {
            try loop.metrics?.append(c)
            onEvent(.collapse(c))
        }
        loop.windowStart = now; loop.windowSteps = 0; loop.computeSeconds = 0; loop.commSeconds = 0
    }

    /// Saves at `checkpoint.every` steps, at the last step, and when a rank asked to stop (then
    /// throws `TrainingStopped`).
    func checkpointIfDue(
        step: Int, _ pass: StepPass, _ loop: inout LoopState,
        onEvent: (TrainEvent) -> Void
    ) throws {
        let ck = config.checkpoint
        guard pass.stop || (ck.every > 0 && (step % ck.every == 0 || step == config.train.steps)) else { return }
        let t0 = Date()
        let dir = try saveCheckpoint(step: step, epoch: pass.epoch)
        let fm = FileManager.default
        let bytes = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).reduce(0) { sum, f in
            sum + ((try? fm.attributesOfItem(atPath: (dir as NSString).appendingPathComponent(f))[.size] as? Int) ?? 0)
        }
        onEvent(.checkpointed(path: dir, seconds: Date().timeIntervalSince(t0), bytes: bytes))
        loop.windowStart = Date()
        if pass.stop { throw TrainingStopped(step: step, checkpoint: dir) }
    }

    /// A text sample from rank 0 every `train.sample_every` steps (language models).
    func sampleIfDue(step: Int, _ loop: inout LoopState, onEvent: (TrainEvent) -> Void) throws {
        let tc = config.train
        guard tc.sampleEvery > 0 && step % tc.sampleEvery == 0 && comm.isRoot,
            let lm = workload as? LanguageModelWorkload
        else { return }
        let s = try lm.sample(
            step: step, prompt: tc.samplePrompt, tokens: tc.sampleTokens,
            seed: SplitMix64.key(config.run.seed, UInt64(step)))
        try loop.metrics?.append(s)
        onEvent(.sampled(s))
    }

    /// A (bounded) evaluation on the first eval split every `train.eval_every` steps but the last.
    func evaluateIfDue(step: Int, _ loop: inout LoopState, onEvent: (TrainEvent) -> Void) throws {
        let tc = config.train
        guard tc.evalEvery > 0 && step % tc.evalEvery == 0 && step != tc.steps else { return }
        let r = try evaluate(split: workload.evalSplits[0], step: step, maxBatches: tc.evalBatches)
        try loop.metrics?.append(r)
        onEvent(.evaluated(r))
        loop.windowStart = Date()
    }

    /// Full evaluation of every split, the final weights and summary.json (rank 0).
    func finish(_ loop: inout LoopState, onEvent: (TrainEvent) -> Void) throws -> RunSummary {
        let tc = config.train, runDir = config.runDirectory
        let trainSeconds = Date().timeIntervalSince(loop.start)
        let results = try evaluateSplits(step: tc.steps)
        for r in results { try loop.metrics?.append(r); onEvent(.evaluated(r)) }
        let weights = (runDir as NSString).appendingPathComponent("model.safetensors")
        if comm.isRoot { try saveWeights(to: weights) }
        let rate = Double(loop.unitsPerStep * (tc.steps - startStep)) / trainSeconds
        let summary = RunSummary(
            attention: config.model.attention.name, steps: tc.steps, finalTrainLoss: loop.lastLoss,
            valid: results.first { $0.split == "valid" }, test: results.first { $0.split == "test" }!,
            tokensPerSecond: workload.unit == "tokens" ? rate : nil,
            imagesPerSecond: workload.unit == "images" ? rate : nil,
            wallSeconds: Date().timeIntervalSince(loop.start), weightsPath: weights)
        if comm.isRoot {
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try writeAtomically(
                try enc.encode(summary), to: (runDir as NSString).appendingPathComponent("summary.json"))
        }
        onEvent(.finished(summary))
        return summary
    }

    /// ema = decay · ema + (1 − decay) · params, over every element. The run uses
    /// decay_t = min(train.ema, (1 + t) / (10 + t)) at step t, so the average forgets the random
    /// initialisation quickly instead of keeping e^(−t(1 − decay)) of it.
    func updateAverage(_ ema: FlatBuffer, decay: Float) {
        let e = ema.pointer, p = workload.params.pointer, w = 1 - decay
        for i in 0..<ema.count { e[i] = decay * e[i] + w * p[i] }
    }

    /// Runs `body` with the averaged weights in place of the live ones (when EMA is on).
    func withAveragedWeights<R>(_ body: () throws -> R) rethrows -> R {
        guard let ema, let live = liveParams else { return try body() }
        let p = workload.params
        live.pointer.update(from: p.pointer, count: p.count)
        p.pointer.update(from: ema.pointer, count: p.count)
        defer { p.pointer.update(from: live.pointer, count: p.count) }
        return try body()
    }

    /// Evaluates `split` ("valid", "test", "train") with the averaged weights when EMA is on, over
    /// at most `maxBatches` micro-batches per rank (0: all); `stride` is for language models.
    public func evaluate(split: String, step: Int, maxBatches: Int, stride: Int? = nil) throws -> EvalResult {
        var r = try withAveragedWeights {
            try workload.evaluate(split: split, step: step, comm: comm, maxBatches: maxBatches, stride: stride)
        }
        if ema != nil { r.ema = true }
        return r
    }

    /// The parameters (the averaged ones when EMA is on) as safetensors, named as the layout, with
    /// the model config as metadata.
    public func saveWeights(to path: String) throws {
        let p = (ema ?? workload.params).pointer
        let tensors = workload.layout.tensors.map {
            Safetensors.Tensor(
                name: $0.name, shape: $0.shape, data: UnsafeBufferPointer(start: p + $0.offset, count: $0.count))
        }
        try Safetensors.write(tensors, metadata: ["format": "pt", "config": workload.modelJSON], to: path)
    }
}

extension TrainConfig {
    /// The model section as JSON (what `eval` and PyTorch users need to rebuild the model);
    /// `outputs` is the vocabulary (LM) or the number of classes (ViT).
    public func modelJSON(
        outputs: Int, imageSize: Int = 0, channels: Int = 0, mean: [Float] = [], std: [Float] = []
    ) -> String {
        var d: [String: Any] = [
            "kind": model.kind.rawValue, "layers": model.layers, "d_model": model.dModel, "heads": model.heads,
            "d_ff": model.dFF, "norm": model.norm.rawValue, "activation": model.activation.rawValue,
            "dropout": decimal(model.dropout), "init_std": decimal(model.initStd),
        ]
        switch model.kind {
        case .lm:
            d["vocab_size"] = outputs; d["context"] = model.context; d["positions"] = model.positions.rawValue
            d["tie_embeddings"] = model.tieEmbeddings; d["scale_embeddings"] = model.scaleEmbeddings
            d["output"] = model.adaptive == nil ? "full" : "adaptive"
            if let a = model.adaptive {
                d["adaptive"] =
                    ["cutoffs": a.cutoffs, "div_val": decimal(a.divVal), "tie_projections": a.tieProjections]
                    as [String: Any]
            }
        case .vit:
            d["classes"] = outputs; d["image_size"] = imageSize; d["channels"] = channels; d["patch"] = model.patch
            d["patch_window"] = model.patchWindow
            d["drop_path"] = decimal(model.dropPath)
            // Inputs are (pixel / 255 − mean[c]) / std[c], channels first.
            d["mean"] = mean.map(decimal); d["std"] = std.map(decimal)
            d["gelu"] = "tanh"  // PyTorch: nn.GELU(approximate="tanh")
        }
        switch model.attention {
        case .softmax: d["attention"] = ["kind": "softmax"]
        case .fourier(let s, let r0):
            var a: [String: Any] = ["kind": "fourier", "p": s.p, "eps": decimal(s.eps), "r_mode": s.rMode.rawValue]
            if let cal = model.rCalibration {
                a["r_init"] = "auto"; a["r_target"] = cal.target
            } else {
                a["r_init"] = decimal(r0)
            }
            d["attention"] = a
        }
        let data = (try? JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])) ?? Foundation.Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// A Float as the decimal the config wrote (1e-06, not the 9.999999974752427e-07 that widening
/// to Double gives): the shortest decimal that reads back as the same Float.
func decimal(_ f: Float) -> Double { Double("\(f)") ?? Double(f) }

/// The run stopped on a NaN/Inf loss or gradient.
public struct NonFiniteError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

struct CalibratedR: Encodable {
    var event = "r_calibrated"
    var r: [Float]
    var target: Double
}

/// Bytes each rank holds at the start (in rank order), and of them the AdamW moments.
struct MemoryRecord: Encodable {
    var event = "memory"
    var memoryBytes: [Int]
    var optimizerBytes: [Int]
    var zero1: Bool
    enum CodingKeys: String, CodingKey {
        case event
        case memoryBytes = "memory_bytes"
        case optimizerBytes = "optimizer_bytes"
        case zero1
    }
}

struct SkippedStep: Encodable {
    var step: Int
    var skipped = true
    var reason: String
}

/// Thrown by `Trainer.run` after a requested stop (SIGTERM/SIGINT) once every rank has saved.
public struct TrainingStopped: Error, CustomStringConvertible {
    public let step: Int
    public let checkpoint: String
    public var description: String { "stopped on request after step \(step); checkpoint \(checkpoint)" }
}

extension Trainer {
    /// Saves a sharded checkpoint of the state after `step` (every rank calls this).
    @discardableResult
    public func saveCheckpoint(step: Int, epoch: Int) throws -> String {
        let state = TrainerState(
            step: step, epoch: epoch, samplesSeen: step * config.train.batchSize,
            globalBatch: config.train.batchSize, worldSize: comm.size, shards: comm.size,
            seed: config.run.seed, configHash: String(config.hash, radix: 16),
            modelConfig: workload.modelJSON, files: [:], recipe: config.recipe)
        return try Checkpoint.save(
            root: config.checkpointDirectory, step: step, state: state, layout: workload.layout,
            params: workload.params, m: m, v: v, ema: ema, partitions: partitions, comm: comm,
            keepLast: config.checkpoint.keepLast, keepEvery: config.checkpoint.keepEvery,
            afterShards: { [weak self] in self?.checkpointHook?(step) })
    }

    /// Continues from a checkpoint folder, or (`"auto"`) from the run's newest verified one if any.
    /// Returns the folder used, or nil for a fresh start.
    @discardableResult
    public func resume(from spec: String, allowConfigChange: Bool = false) throws -> String? {
        try resume(ResumeRequest(spec), allowConfigChange: allowConfigChange).folder
    }

    /// Settles how the run starts (every rank calls this): rank 0 inspects the checkpoints folder
    /// and decides, then every rank checks the config against the checkpoint and loads it. Works
    /// with any number of ranks as long as the global batch divides evenly.
    public func resume(_ request: ResumeRequest, allowConfigChange: Bool = false) throws -> ResumeOutcome {
        var outcome = try rootDecides(comm) { try decideStart(request) }
        guard let dir = outcome.folder, !outcome.finished else { return outcome }
        let saved = try Checkpoint.readState(dir)
        outcome.notes += try checkConfig(against: saved, in: dir, allowConfigChange: allowConfigChange)
        let state = try Checkpoint.load(
            dir, layout: workload.layout, params: workload.params, m: m, v: v, ema: ema,
            owned: owned)
        startStep = state.step
        return outcome
    }

    /// Rank 0's decision: which checkpoint (if any) to load, and what to move aside first.
    func decideStart(_ request: ResumeRequest) throws -> ResumeOutcome {
        let root = config.checkpointDirectory
        switch request {
        case .none:
            if let newest = Checkpoint.committed(root: root).last {
                throw CheckpointError(
                    "\(root) holds committed checkpoints (newest "
                        + "\((newest.path as NSString).lastPathComponent)): "
                        + "continue with --resume auto, or start over with --resume fresh (which moves them aside)")
            }
            return ResumeOutcome(folder: nil)
        case .fresh:
            guard FileManager.default.fileExists(atPath: root) else { return ResumeOutcome(folder: nil) }
            let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
            let moved = try Checkpoint.setAside(root, suffix: "before-fresh-\(stamp)")
            return ResumeOutcome(folder: nil, notes: ["warning: --resume fresh: moved \(root) to \(moved)"])
        case .path(let dir):
            let state = try Checkpoint.readState(dir)
            var notes: [String] = []
            let parent = ((dir as NSString).standardizingPath as NSString).deletingLastPathComponent
            if parent == (root as NSString).standardizingPath {
                notes = try Checkpoint.supersede(root: root, after: state.step)
                Checkpoint.cleanUncommitted(root: root)
            }
            return ResumeOutcome(folder: dir, notes: notes)
        case .auto:
            let (folder, notes) = try Checkpoint.selectNewest(root: root)
            guard let folder else { return try decideWithoutCheckpoint(notes: notes) }
            let state = try Checkpoint.readState(folder)
            let done = state.step == config.train.steps && finishedSummarySteps() == state.step
            return ResumeOutcome(folder: folder, notes: notes, finished: done)
        }
    }

    /// `--resume auto` with no committed checkpoint: a fresh start, unless the run already
    /// finished (its weights would be overwritten).
    func decideWithoutCheckpoint(notes: [String]) throws -> ResumeOutcome {
        guard let steps = finishedSummarySteps() else { return ResumeOutcome(folder: nil, notes: notes) }
        if steps >= config.train.steps { return ResumeOutcome(folder: nil, notes: notes, finished: true) }
        throw CheckpointError(
            "\(config.runDirectory): the run finished \(steps) steps without a checkpoint to "
                + "continue "
                + "from (checkpoint.every: 0); --resume fresh trains again from step 0")
    }

    /// The step count summary.json records, if the run has one.
    func finishedSummarySteps() -> Int? {
        let path = (config.runDirectory as NSString).appendingPathComponent("summary.json")
        guard let data = FileManager.default.contents(atPath: path),
            let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return nil }
        return obj["steps"] as? Int
    }

    /// Refuses a resume whose config changes the model, or the recipe without
    /// `allowConfigChange`; returns the notes to print.
    func checkConfig(against state: TrainerState, in dir: String, allowConfigChange: Bool) throws -> [String] {
        let c = ConfigChanges.between(
            oldModel: state.modelConfig, newModel: workload.modelJSON,
            oldRecipe: state.recipe, newRecipe: config.recipe)
        if !c.model.isEmpty {
            throw ConfigError(
                "\(dir): the config changes the model this checkpoint holds: "
                    + c.model.joined(separator: ", ") + "; a checkpoint continues only with its own model")
        }
        guard state.globalBatch == config.train.batchSize else {
            throw ConfigError(
                "\(dir): the checkpoint was trained with batch_size \(state.globalBatch), the config "
                    + "says "
                    + "\(config.train.batchSize); the global batch must stay the same to continue the data order")
        }
        guard state.seed == config.run.seed else {
            throw ConfigError(
                "\(dir): the checkpoint was trained with run.seed \(state.seed), the config says "
                    + "\(config.run.seed)")
        }
        guard state.step <= config.train.steps else {
            throw ConfigError(
                "\(dir): the checkpoint is at step \(state.step), beyond train.steps "
                    + "\(config.train.steps)")
        }
        let recipe = c.recipe.joined(separator: ", ")
        if !c.recipe.isEmpty && !allowConfigChange {
            throw ConfigError(
                "\(dir): the config changes the training recipe: \(recipe); "
                    + "pass --allow-config-change to continue with it")
        }
        return c.notes + (c.recipe.isEmpty ? [] : ["warning: continuing with a changed recipe: \(recipe)"])
    }

    /// Loads weights saved by `saveWeights` (or `export`); every tensor must match by name and shape.
    public func loadWeights(from path: String) throws {
        let (tensors, _) = try Safetensors.read(path: path)
        for t in workload.layout.tensors {
            guard let (shape, values) = tensors[t.name] else {
                throw FormatError("\(path): tensor '\(t.name)' missing (does the config match the weights?)")
            }
            guard shape == t.shape else {
                throw FormatError("\(path): tensor '\(t.name)' has shape \(shape), the config needs \(t.shape)")
            }
            values.withUnsafeBufferPointer {
                (workload.params.pointer + t.offset).update(from: $0.baseAddress!, count: t.count)
            }
        }
        ema?.pointer.update(from: workload.params.pointer, count: workload.params.count)
    }

    /// Full evaluation of every split the data has (valid if any, then test), with baselines.
    public func evaluateSplits(step: Int = 0, stride: Int? = nil) throws -> [EvalResult] {
        try workload.evalSplits.map { split in
            var r = try evaluate(split: split, step: step, maxBatches: 0, stride: stride)
            workload.annotateFinal(&r)
            return r
        }
    }
}
