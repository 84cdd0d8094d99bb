import Foundation
import FFData
import FFDistributed
import FFKernels
import FFModel

/// The training loop: one loop for one rank or many, built from a validated config.
///
/// Each optimizer step takes `batchSize` sequences, split evenly over ranks and then over
/// `gradAccum` micro-steps; gradients are summed over micro-steps and ranks and scaled so the loss
/// is the mean over the global batch's target tokens.
public final class Trainer {
    public let config: TrainConfig
    public let comm: Communicator
    public let vocab: Vocabulary
    public let model: LanguageModel
    let train: LMDataset, valid: LMDataset, test: LMDataset
    let sampler: EpochSampler
    let optimizer: AdamW
    let schedule: LRSchedule
    /// AdamW moments of the elements `owned` (all of them, or this rank's ZeRO-1 partition).
    let m: FlatBuffer, v: FlatBuffer
    /// Tensor indices and element range whose optimizer state this rank keeps and updates.
    public let ownedTensors: Range<Int>
    public let owned: Range<Int>
    /// Element count of every rank's partition (ZeRO-1), in rank order.
    let partitionCounts: [Int]
    /// ZeRO-1: this rank's piece of the reduce-scattered gradient.
    let gradShard: FlatBuffer?
    /// Sequences per micro-step on this rank.
    public let microBatch: Int
    let inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>
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
        let vocabPath = config.dataPath("vocab.json")
        let vocab = try Vocabulary.read(from: vocabPath)
        self.vocab = vocab
        let T = config.model.context
        let open = { (file: String) throws -> LMDataset in
            let shard = try TokenShard(path: config.dataPath(file))
            let mx = shard.maxToken()
            guard Int(mx) < vocab.size else {
                throw DataError(shard.path, "holds token id \(mx), outside the vocabulary of \(vocab.size) in \(vocabPath)")
            }
            return try LMDataset(shard: shard, context: T)
        }
        train = try open(config.data.train)
        valid = try open(config.data.valid)
        test = try open(config.data.test)
        let tc = config.train
        let world = comm.size
        guard tc.batchSize % (world * tc.gradAccum) == 0 else {
            throw ConfigError("\(config.source): train.batch_size (\(tc.batchSize)) must be divisible by ranks x grad_accum (\(world) x \(tc.gradAccum))")
        }
        guard train.count >= tc.batchSize else {
            throw ConfigError("\(config.source): train.batch_size (\(tc.batchSize)) exceeds the \(train.count) training sequences of length \(T) in \(config.dataPath(config.data.train))")
        }
        microBatch = tc.batchSize / (world * tc.gradAccum)
        let lm = config.model.lmConfig(vocabSize: vocab.size)
        if let p = lm.problems().first { throw ConfigError("\(config.source): \(p)") }
        setBLASThreads(tc.threads)
        model = LanguageModel(config: lm, maxBatch: microBatch, threads: tc.threads)
        model.initialize(seed: config.run.seed)
        sync = GradientSync(comm: comm, stages: model.gradientStages, bucketFloats: max(1, Int(config.dist.bucketMB * 262_144)))
        let layout = model.layout
        let groups = Checkpoint.partition(layout, into: world)
        let elementRange = { (g: Range<Int>) -> Range<Int> in
            g.isEmpty ? 0..<0 : layout.tensors[g.lowerBound].offset..<layout.tensors[g.upperBound - 1].range.upperBound
        }
        partitionCounts = groups.map { elementRange($0).count }
        if config.dist.zero1 {
            ownedTensors = groups[comm.rank]
            owned = elementRange(ownedTensors)
            gradShard = FlatBuffer(count: owned.count)
        } else {
            ownedTensors = 0..<model.layout.tensors.count
            owned = 0..<model.params.count
            gradShard = nil
        }
        m = FlatBuffer(count: owned.count)
        v = FlatBuffer(count: owned.count)
        sampler = EpochSampler(count: train.count, seed: config.run.seed, globalBatch: tc.batchSize)
        optimizer = AdamW(beta1: tc.beta1, beta2: tc.beta2, eps: tc.adamEps, weightDecay: tc.weightDecay)
        schedule = LRSchedule(peak: tc.lr, warmup: tc.warmupSteps, total: tc.steps, minLR: tc.minLR, decay: tc.schedule)
        inputs = .allocate(capacity: microBatch * T)
        targets = .allocate(capacity: microBatch * T)
        keys = .allocate(capacity: microBatch)
        stepSums = .allocate(capacity: 2)
    }

    deinit {
        inputs.deallocate(); targets.deallocate(); keys.deallocate(); stepSums.deallocate()
    }

    /// Bytes this rank holds for training (see `StartInfo.memoryPerRank`).
    public var memoryBytes: Int {
        4 * (model.params.count + model.grads.count + m.count + v.count + (gradShard?.count ?? 0)) + model.activationBytes
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
        let tc = config.train, T = config.model.context
        let runDir = config.runDirectory
        // Every rank starts from rank 0's parameters.
        try comm.broadcast(model.params.pointer, count: model.params.count, root: 0)
        if comm.isRoot { try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true) }
        let metrics = comm.isRoot ? try MetricsLog(path: (runDir as NSString).appendingPathComponent("metrics.jsonl"), append: startStep > 0) : nil
        let tokensPerStep = tc.batchSize * T
        var perRank = [Double](repeating: 0, count: 2 * comm.size)
        perRank[comm.rank] = Double(memoryBytes)
        perRank[comm.size + comm.rank] = Double(4 * (m.count + v.count))
        try comm.allreduceSum(&perRank, count: perRank.count)
        onEvent(.started(StartInfo(parameters: model.params.count, vocabSize: vocab.size, trainTokens: train.shard.count,
                                   worldSize: comm.size, steps: tc.steps, tokensPerStep: tokensPerStep,
                                   attention: config.model.attention.name, runDirectory: runDir,
                                   memoryPerRank: perRank[0..<comm.size].map { Int($0) },
                                   optimizerBytesPerRank: perRank[comm.size...].map { Int($0) }, zero1: gradShard != nil)))
        let start = Date()
        var windowStart = Date(), windowSteps = 0
        var lastLoss = Double.nan
        let lossScale = 1 / Float(tokensPerStep)
        var computeSeconds = 0.0, commSeconds = 0.0
        var skippedInARow = 0
        for s in startStep..<tc.steps {
            let step = s + 1
            beforeStep?(step)
            let lr = schedule.lr(at: step)
            let t0 = Date()
            var exposed = 0.0
            model.grads.zero()
            var lossSum = 0.0
            var epoch = 0
            for micro in 0..<tc.gradAccum {
                let (e, idx) = sampleIndices(step: s, micro: micro)
                epoch = e
                onSamples?(step, e, idx)
                for (row, sample) in idx.enumerated() {
                    train.sample(sample, inputs: inputs + row * T, targets: targets + row * T)
                    keys[row] = SplitMix64.key(config.run.seed, UInt64(step), UInt64(sample))
                }
                lossSum += model.forward(tokens: inputs, targets: targets, batch: microBatch,
                                         mode: .train(lossScale: lossScale, dropoutKeys: keys))
                if micro == tc.gradAccum - 1 { beforeBackward?(step) }
                if micro == tc.gradAccum - 1 && comm.size > 1 && gradShard == nil {
                    // Only the last micro-step syncs: its buckets go out as backward finishes them.
                    sync.begin(grads: model.grads.pointer)
                    try model.backward(onStageDone: sync.stageDone)
                    exposed += try sync.finish()
                } else {
                    model.backward()
                }
            }
            if let gradShard {
                // ZeRO-1: each rank receives the summed gradient of its own partition only.
                let tz = Date()
                try comm.reduceScatterSum(model.grads.pointer, gradShard.pointer, counts: partitionCounts)
                exposed += Date().timeIntervalSince(tz)
            }
            let t1 = Date()
            // The loss sum and the stop votes travel in one allreduce (a preallocated pair).
            stepSums[0] = lossSum
            stepSums[1] = stopRequested() ? 1 : 0
            try comm.allreduceSum(stepSums, count: 2)
            lossSum = stepSums[0]
            let stop = stepSums[1] > 0
            exposed += Date().timeIntervalSince(t1)
            computeSeconds += Date().timeIntervalSince(t0) - exposed
            commSeconds += exposed
            let norm: Double
            if let gradShard {
                var sq = globalNorm(gradShard.pointer, count: gradShard.count)
                sq *= sq
                try comm.allreduceSum(&sq, count: 1)
                norm = sq.squareRoot()
            } else {
                norm = globalNorm(model.grads.pointer, count: model.grads.count)
            }
            // The loss sum and the norm are reduced values: every rank takes the same branch.
            if !(lossSum.isFinite && norm.isFinite) {
                skippedInARow += 1
                let what = "loss \(lossSum / Double(tokensPerStep)), gradient norm \(norm)"
                if tc.onNonFinite == .stop || skippedInARow > tc.maxSkippedSteps {
                    throw NonFiniteError(message: "step \(step): \(what) not finite" + (tc.onNonFinite == .stop
                        ? " (train.on_nonfinite: stop)" : "; \(skippedInARow) steps in a row (train.max_skipped_steps: \(tc.maxSkippedSteps))"))
                }
                onEvent(.skipped(step: step, reason: "\(what) not finite: update skipped"))
                try metrics?.append(SkippedStep(step: step, reason: "nonfinite"))
                continue
            }
            skippedInARow = 0
            let clip: Float = tc.gradClip > 0 && norm > Double(tc.gradClip) ? tc.gradClip / Float(norm) : 1
            let grads = gradShard.map { UnsafePointer($0.pointer) } ?? UnsafePointer(model.grads.pointer + owned.lowerBound)
            optimizer.update(layout: model.layout, tensors: ownedTensors, params: model.params.pointer, grads: grads,
                             m: m.pointer, v: v.pointer, base: owned.lowerBound, lr: lr, step: step, gradScale: clip)
            if gradShard != nil {
                let ta = Date()
                try comm.allgather(model.params.pointer, counts: partitionCounts)
                let dt = Date().timeIntervalSince(ta)
                commSeconds += dt
            }
            lastLoss = lossSum / Double(tokensPerStep)
            windowSteps += 1
            if step % tc.logEvery == 0 || step == tc.steps || step == 1 {
                let now = Date()
                let stepSec = now.timeIntervalSince(windowStart) / Double(windowSteps)
                let elapsed = now.timeIntervalSince(start)
                let sm = StepMetrics(step: step, steps: tc.steps, epoch: epoch, loss: lastLoss, lr: Double(lr),
                                     gradNorm: norm, tokensPerSecond: Double(tokensPerStep) / stepSec,
                                     stepSeconds: stepSec, elapsedSeconds: elapsed,
                                     etaSeconds: stepSec * Double(tc.steps - step), attentionRowSum: model.attentionRowSum,
                                     computeSeconds: computeSeconds / Double(windowSteps), commSeconds: commSeconds / Double(windowSteps))
                try metrics?.append(sm)
                onEvent(.step(sm))
                windowStart = now; windowSteps = 0; computeSeconds = 0; commSeconds = 0
            }
            let ck = config.checkpoint
            if stop || (ck.every > 0 && (step % ck.every == 0 || step == tc.steps)) {
                let tc0 = Date()
                let dir = try saveCheckpoint(step: step, epoch: epoch)
                let bytes = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).reduce(0) { sum, f in
                    sum + ((try? FileManager.default.attributesOfItem(atPath: (dir as NSString).appendingPathComponent(f))[.size] as? Int) ?? 0)
                }
                onEvent(.checkpointed(path: dir, seconds: Date().timeIntervalSince(tc0), bytes: bytes))
                windowStart = Date()
                if stop { throw TrainingStopped(step: step, checkpoint: dir) }
            }
            if tc.evalEvery > 0 && step % tc.evalEvery == 0 && step != tc.steps {
                let r = try evaluate(valid, split: "valid", step: step, maxBatches: tc.evalBatches)
                try metrics?.append(r)
                onEvent(.evaluated(r))
                windowStart = Date()
            }
        }
        let trainSeconds = Date().timeIntervalSince(start)
        var validResult = try evaluate(valid, split: "valid", step: tc.steps, maxBatches: 0)
        var testResult = try evaluate(test, split: "test", step: tc.steps, maxBatches: 0)
        validResult.unigramPerplexity = unigramPerplexity(valid)
        testResult.unigramPerplexity = unigramPerplexity(test)
        for r in [validResult, testResult] { try metrics?.append(r); onEvent(.evaluated(r)) }
        let weights = (runDir as NSString).appendingPathComponent("model.safetensors")
        if comm.isRoot { try saveWeights(to: weights) }
        let summary = RunSummary(attention: config.model.attention.name, steps: tc.steps, finalTrainLoss: lastLoss,
                                 valid: validResult, test: testResult,
                                 tokensPerSecond: Double(tokensPerStep * tc.steps) / trainSeconds,
                                 wallSeconds: Date().timeIntervalSince(start), weightsPath: weights)
        if comm.isRoot {
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try writeAtomically(try enc.encode(summary), to: (runDir as NSString).appendingPathComponent("summary.json"))
        }
        onEvent(.finished(summary))
        return summary
    }

    /// Perplexity on independent segments of the context length (every token but the first
    /// predicted once), over at most `maxBatches` micro-batches per rank (0: all).
    /// With `stride` (< context) the windows overlap and each scores only its new tokens, so
    /// every token is predicted with at least context − stride tokens of history.
    public func evaluate(_ data: LMDataset, split: String, step: Int, maxBatches: Int, stride: Int? = nil) throws -> EvalResult {
        let T = config.model.context
        let stride = min(max(stride ?? T, 1), T)
        let segments = data.windowCount(stride: stride)
        var nll = 0.0, count = 0.0
        var first = comm.rank * microBatch
        var batches = 0
        while first < segments && (maxBatches == 0 || batches < maxBatches) {
            let n = min(microBatch, segments - first)
            for row in 0..<n { data.windowSample(first + row, stride: stride, inputs: inputs + row * T, targets: targets + row * T) }
            nll += model.forward(tokens: inputs, targets: targets, batch: n, mode: .eval)
            for i in 0..<(n * T) where targets[i] >= 0 { count += 1 }
            first += microBatch * comm.size
            batches += 1
        }
        var sums = [nll, count]
        try comm.allreduceSum(&sums, count: 2)
        let loss = sums[0] / max(sums[1], 1)
        return EvalResult(step: step, split: split, loss: loss, perplexity: exp(loss), tokens: Int(sums[1]),
                          unigramPerplexity: nil, stride: stride)
    }

    func unigramPerplexity(_ data: LMDataset) -> Double {
        // Same tokens as the model predicts: all but the first.
        let ids = (1..<data.shard.count).map { data.shard[$0] }
        return vocab.unigramPerplexity(ids)
    }

    /// The parameters as safetensors, named as `model.layout`, with the model config as metadata.
    public func saveWeights(to path: String) throws {
        let p = model.params.pointer
        let tensors = model.layout.tensors.map {
            Safetensors.Tensor(name: $0.name, shape: $0.shape, data: UnsafeBufferPointer(start: p + $0.offset, count: $0.count))
        }
        try Safetensors.write(tensors, metadata: ["format": "pt", "config": config.modelJSON(vocabSize: vocab.size)], to: path)
    }
}

extension TrainConfig {
    /// The model section as JSON (what `eval` and PyTorch users need to rebuild the model).
    public func modelJSON(vocabSize: Int) -> String {
        var d: [String: Any] = [
            "vocab_size": vocabSize, "layers": model.layers, "d_model": model.dModel, "heads": model.heads,
            "d_ff": model.dFF, "context": model.context, "norm": model.norm.rawValue,
            "positions": model.positions.rawValue, "activation": model.activation.rawValue,
            "dropout": Double(model.dropout), "tie_embeddings": model.tieEmbeddings,
            "scale_embeddings": model.scaleEmbeddings, "init_std": Double(model.initStd),
        ]
        switch model.attention {
        case .softmax: d["attention"] = ["kind": "softmax"]
        case .fourier(let s, let r0):
            d["attention"] = ["kind": "fourier", "p": s.p, "eps": Double(s.eps), "r_mode": s.rMode.rawValue, "r_init": Double(r0)] as [String: Any]
        }
        let data = (try? JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])) ?? Foundation.Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// The run stopped on a NaN/Inf loss or gradient.
public struct NonFiniteError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
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
        let state = TrainerState(step: step, epoch: epoch, samplesSeen: step * config.train.batchSize,
                                 globalBatch: config.train.batchSize, worldSize: comm.size, shards: comm.size,
                                 seed: config.run.seed, configHash: String(config.hash, radix: 16),
                                 modelConfig: config.modelJSON(vocabSize: vocab.size), files: [:])
        return try Checkpoint.save(root: config.checkpointDirectory, step: step, state: state, layout: model.layout,
                                   params: model.params, m: m, v: v, stateBase: owned.lowerBound, comm: comm,
                                   keepLast: config.checkpoint.keepLast, keepEvery: config.checkpoint.keepEvery,
                                   afterShards: { [weak self] in self?.checkpointHook?(step) })
    }

    /// Continues from a checkpoint folder, or (`"auto"`) from the run's newest committed one if any.
    /// Returns the folder used, or nil for a fresh start. Works with any number of ranks as long as
    /// the global batch divides evenly.
    @discardableResult
    public func resume(from spec: String) throws -> String? {
        let root = config.checkpointDirectory
        var dir: String? = spec
        if spec == "auto" {
            if comm.isRoot { Checkpoint.cleanUncommitted(root: root) }
            try comm.barrier()
            dir = Checkpoint.latest(root: root)
        }
        guard let dir else { return nil }
        let state = try Checkpoint.load(dir, layout: model.layout, params: model.params, m: m, v: v, owned: owned)
        guard state.globalBatch == config.train.batchSize else {
            throw ConfigError("\(dir): the checkpoint was trained with batch_size \(state.globalBatch), the config says \(config.train.batchSize); the global batch must stay the same to continue the data order")
        }
        guard state.seed == config.run.seed else {
            throw ConfigError("\(dir): the checkpoint was trained with run.seed \(state.seed), the config says \(config.run.seed)")
        }
        startStep = state.step
        return dir
    }

    /// Loads weights saved by `saveWeights` (or `export`); every tensor must match by name and shape.
    public func loadWeights(from path: String) throws {
        let (tensors, _) = try Safetensors.read(path: path)
        for t in model.layout.tensors {
            guard let (shape, values) = tensors[t.name] else {
                throw ConfigError("\(path): tensor '\(t.name)' missing (does the config match the weights?)")
            }
            guard shape == t.shape else {
                throw ConfigError("\(path): tensor '\(t.name)' has shape \(shape), the config needs \(t.shape)")
            }
            values.withUnsafeBufferPointer { (model.params.pointer + t.offset).update(from: $0.baseAddress!, count: t.count) }
        }
    }

    /// Full valid and test evaluation of the current weights, with unigram baselines.
    public func evaluateSplits(step: Int = 0, stride: Int? = nil) throws -> [EvalResult] {
        var v = try evaluate(valid, split: "valid", step: step, maxBatches: 0, stride: stride)
        var t = try evaluate(test, split: "test", step: step, maxBatches: 0, stride: stride)
        v.unigramPerplexity = unigramPerplexity(valid)
        t.unigramPerplexity = unigramPerplexity(test)
        return [v, t]
    }
}
