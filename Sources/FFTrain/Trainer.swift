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
    let m: FlatBuffer, v: FlatBuffer
    /// Sequences per micro-step on this rank.
    public let microBatch: Int
    let inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>
    let keys: UnsafeMutablePointer<UInt64>
    var order: [Int] = []
    var orderEpoch = -1
    let sync: GradientSync
    /// Called at the start of every step (1-based) on every rank; debugging and fault injection.
    public var beforeStep: ((Int) -> Void)?
    /// Called with (step, epoch, the training samples this rank uses in that step), for audits.
    public var onSamples: ((Int, Int, ArraySlice<Int>) -> Void)?

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
        m = FlatBuffer(count: model.params.count)
        v = FlatBuffer(count: model.params.count)
        sampler = EpochSampler(count: train.count, seed: config.run.seed, globalBatch: tc.batchSize)
        optimizer = AdamW(beta1: tc.beta1, beta2: tc.beta2, eps: tc.adamEps, weightDecay: tc.weightDecay)
        schedule = LRSchedule(peak: tc.lr, warmup: tc.warmupSteps, total: tc.steps, minLR: tc.minLR, decay: tc.schedule)
        inputs = .allocate(capacity: microBatch * T)
        targets = .allocate(capacity: microBatch * T)
        keys = .allocate(capacity: microBatch)
    }

    deinit {
        inputs.deallocate(); targets.deallocate(); keys.deallocate()
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
        let metrics = comm.isRoot ? try MetricsLog(path: (runDir as NSString).appendingPathComponent("metrics.jsonl")) : nil
        let tokensPerStep = tc.batchSize * T
        onEvent(.started(StartInfo(parameters: model.params.count, vocabSize: vocab.size, trainTokens: train.shard.count,
                                   worldSize: comm.size, steps: tc.steps, tokensPerStep: tokensPerStep,
                                   attention: config.model.attention.name, runDirectory: runDir)))
        let start = Date()
        var windowStart = Date(), windowSteps = 0
        var lastLoss = Double.nan
        let lossScale = 1 / Float(tokensPerStep)
        var computeSeconds = 0.0, commSeconds = 0.0
        for s in 0..<tc.steps {
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
                if micro == tc.gradAccum - 1 && comm.size > 1 {
                    // Only the last micro-step syncs: its buckets go out as backward finishes them.
                    sync.begin(grads: model.grads.pointer)
                    try model.backward(onStageDone: sync.stageDone)
                    exposed += try sync.finish()
                } else {
                    model.backward()
                }
            }
            let t1 = Date()
            lossSum = try comm.sum(lossSum)
            exposed += Date().timeIntervalSince(t1)
            computeSeconds += Date().timeIntervalSince(t0) - exposed
            commSeconds += exposed
            let norm = globalNorm(model.grads.pointer, count: model.grads.count)
            let clip: Float = tc.gradClip > 0 && norm > Double(tc.gradClip) ? tc.gradClip / Float(norm) : 1
            optimizer.update(layout: model.layout, params: model.params, grads: model.grads, m: m, v: v,
                             lr: lr, step: step, gradScale: clip)
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
    public func evaluate(_ data: LMDataset, split: String, step: Int, maxBatches: Int) throws -> EvalResult {
        let T = config.model.context
        let segments = data.evalCount
        var nll = 0.0, count = 0.0
        var first = comm.rank * microBatch
        var batches = 0
        while first < segments && (maxBatches == 0 || batches < maxBatches) {
            let n = min(microBatch, segments - first)
            for row in 0..<n { data.evalSample(first + row, inputs: inputs + row * T, targets: targets + row * T) }
            nll += model.forward(tokens: inputs, targets: targets, batch: n, mode: .eval)
            for i in 0..<(n * T) where targets[i] >= 0 { count += 1 }
            first += microBatch * comm.size
            batches += 1
        }
        var sums = [nll, count]
        try comm.allreduceSum(&sums, count: 2)
        let loss = sums[0] / max(sums[1], 1)
        return EvalResult(step: step, split: split, loss: loss, perplexity: exp(loss), tokens: Int(sums[1]), unigramPerplexity: nil)
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

extension Trainer {
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
    public func evaluateSplits(step: Int = 0) throws -> [EvalResult] {
        var v = try evaluate(valid, split: "valid", step: step, maxBatches: 0)
        var t = try evaluate(test, split: "test", step: step, maxBatches: 0)
        v.unigramPerplexity = unigramPerplexity(valid)
        t.unigramPerplexity = unigramPerplexity(test)
        return [v, t]
    }
}
