import Foundation
import FFData
import FFDistributed
import FFKernels
import FFModel

/// What the training loop trains: a model on flat parameter and gradient buffers, and the data
/// that feeds it. The one seam between the loop (`Trainer`: sampling, gradient sync, ZeRO-1,
/// AdamW, checkpoints, faults) and its tasks — language modelling and image classification.
public protocol Workload: AnyObject {
    var params: FlatBuffer { get }
    var grads: FlatBuffer { get }
    var layout: ParameterLayout { get }
    /// See `LanguageModel.gradientStages`.
    var gradientStages: [Range<Int>] { get }
    var activationBytes: Int { get }
    /// Mean Σ_j A_ij per layer in the last forward.
    var attentionRowSum: [Double] { get }
    /// Samples in the training split (sequences or images).
    var trainCount: Int { get }
    /// Loss terms per sample (target tokens of a sequence; 1 for an image): the loss of a step is
    /// averaged over `batch × unitsPerSample`.
    var unitsPerSample: Int { get }
    /// What the units are: "tokens" or "images".
    var unit: String { get }
    /// For the start-up line: e.g. "vocab 16384" or "10 classes, 28x28x1 images".
    var dataDescription: String { get }
    /// The model config as JSON (safetensors metadata, checkpoints).
    var modelJSON: String { get }
    /// The splits `evaluate` knows, in reporting order ("valid" may be absent).
    var evalSplits: [String] { get }

    func initialize(seed: UInt64)
    /// Stages this rank's training samples (`samples`: training-split indices) of `epoch` and runs
    /// the training forward pass with one dropout key per sample; returns the summed loss.
    func trainForward(samples: ArraySlice<Int>, epoch: Int, keys: UnsafePointer<UInt64>, lossScale: Float) -> Double
    func backward(onStageDone: ((Int) throws -> Void)?) throws
    /// Evaluates `split` over every rank's share (all of it when `maxBatches` is 0); `stride`
    /// applies to language models. The result is the same on every rank.
    func evaluate(split: String, step: Int, comm: Communicator, maxBatches: Int, stride: Int?) throws -> EvalResult
    /// Adds what a final report shows beside the model's figures (e.g. a unigram baseline).
    func annotateFinal(_ result: inout EvalResult)

    /// The Transformer blocks (attention maps and R for analysis).
    var stack: TransformerStack { get }
    /// The blocks that ran the last training forward: `stack`, or when the threads split the
    /// samples the first thread's copy (its slice of the micro-batch).
    var trainingStack: TransformerStack { get }
    /// Runs an evaluation forward on `samples` samples of `split` from sample `first` on (at most
    /// one micro-batch; no dropout or augmentation) for analysis; returns how many it ran.
    func analysisForward(split: String, first: Int, samples: Int) throws -> Int
}

/// A workload whose model is a `TrainableModel`: the model-side requirements come from it.
/// Training goes through `replicas` when the threads split the samples (`train.thread_split`),
/// evaluation and analysis through `model`.
protocol ModelWorkload: Workload {
    associatedtype Model: TrainableModel
    var model: Model { get }
    var replicas: ModelReplicas<Model>? { get }
    var config: TrainConfig { get }
}

extension ModelWorkload {
    public var params: FlatBuffer { model.params }
    public var grads: FlatBuffer { model.grads }
    public var layout: ParameterLayout { model.layout }
    public var gradientStages: [Range<Int>] { model.gradientStages }
    public var activationBytes: Int { model.activationBytes + (replicas?.bytes ?? 0) }
    public var attentionRowSum: [Double] { replicas?.attentionRowSum ?? model.stack.attentionRowSum }
    public var stack: TransformerStack { model.stack }
    public var trainingStack: TransformerStack { replicas?.models[0].stack ?? model.stack }
    public func initialize(seed: UInt64) { model.initialize(seed: seed) }
    public func backward(onStageDone: ((Int) throws -> Void)?) throws {
        if let replicas {
            try replicas.backward(
                into: model.grads, stages: model.gradientStages, threads: config.train.threads,
                onStageDone: onStageDone)
        } else {
            try model.backward(onStageDone: onStageDone)
        }
    }

    /// The model's copies for `config`'s threads when they split the samples, else nil.
    static func makeReplicas(
        _ config: TrainConfig, microBatch: Int, _ make: (_ maxBatch: Int) -> Model
    ) -> ModelReplicas<Model>? {
        guard config.train.splitsSamples(microBatch: microBatch) else { return nil }
        return ModelReplicas(copies: config.train.threads, microBatch: microBatch, make: make)
    }
}

/// A causal language model on token shards.
public final class LanguageModelWorkload: ModelWorkload {
    public let model: LanguageModel
    let replicas: ModelReplicas<LanguageModel>?
    public let vocab: Vocabulary
    let train: LMDataset, valid: LMDataset, test: LMDataset
    let microBatch: Int
    let inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>
    let config: TrainConfig
    /// Text bytes per token (byte and GPT-2 vocabularies), for bits per byte.
    let textBytes: [Int]?

    init(config: TrainConfig, microBatch: Int) throws {
        self.config = config
        self.microBatch = microBatch
        let vocabPath = config.dataPath("vocab.json")
        let vocab = try Vocabulary.read(from: vocabPath)
        self.vocab = vocab
        textBytes = vocab.textBytesPerToken
        let T = config.model.context
        let open = { (patterns: [String]) throws -> LMDataset in
            let corpus = try TokenCorpus(dir: config.data.dir, patterns: patterns)
            for shard in corpus.shards {
                let mx = shard.maxToken()
                guard Int(mx) < vocab.size else {
                    throw DataError(
                        shard.path,
                        "holds token id \(mx), outside the vocabulary of \(vocab.size) in \(vocabPath)")
                }
            }
            return try LMDataset(corpus: corpus, context: T)
        }
        train = try open(config.data.trainShards)
        valid = try open(config.data.validShards)
        test = try open(config.data.testShards)
        let lm = config.model.lmConfig(vocabSize: vocab.size)
        if let p = lm.problems().first { throw ConfigError("\(config.source): \(p)") }
        let outputRows = lm.adaptive == nil ? crossEntropyChunkRows(rows: microBatch * T, vocabulary: vocab.size) : nil
        try MemoryBudget.check(
            MemoryBudget.estimate(
                config, microBatch: microBatch, tokens: T, outputs: vocab.size,
                outputRows: outputRows), source: config.source,
            threadCopies: config.train.splitsSamples(microBatch: microBatch))
        let model = LanguageModel(config: lm, maxBatch: microBatch, threads: config.train.threads)
        self.model = model
        replicas = Self.makeReplicas(config, microBatch: microBatch) {
            LanguageModel(config: lm, maxBatch: $0, sharedParams: model.params)
        }
        inputs = .allocate(capacity: microBatch * T)
        targets = .allocate(capacity: microBatch * T)
    }

    deinit { inputs.deallocate(); targets.deallocate() }

    public var trainCount: Int { train.count }
    public var unitsPerSample: Int { config.model.context }
    public var unit: String { "tokens" }
    public var dataDescription: String { "vocab \(vocab.size), \(train.shard.count) training tokens" }
    public var modelJSON: String { config.modelJSON(outputs: vocab.size) }
    public var evalSplits: [String] { ["valid", "test"] }

    public func trainForward(
        samples: ArraySlice<Int>, epoch: Int, keys: UnsafePointer<UInt64>,
        lossScale: Float
    ) -> Double {
        let T = config.model.context
        for (row, sample) in samples.enumerated() {
            train.sample(sample, inputs: inputs + row * T, targets: targets + row * T)
        }
        guard let replicas else {
            return model.forward(
                tokens: inputs, targets: targets, batch: samples.count,
                mode: .train(lossScale: lossScale, dropoutKeys: keys))
        }
        let (inputs, targets) = (self.inputs, self.targets)
        return replicas.forward(batch: samples.count) { copy, slice in
            copy.forward(
                tokens: inputs + slice.lowerBound * T, targets: targets + slice.lowerBound * T,
                batch: slice.count, mode: .train(lossScale: lossScale, dropoutKeys: keys + slice.lowerBound))
        }
    }

    func dataset(_ split: String) -> LMDataset {
        switch split {
        case "valid": return valid
        case "test": return test
        default: return train
        }
    }

    /// Perplexity on independent segments of the context length (every token but the first
    /// predicted once). With `stride` (< context) the windows overlap and each scores only its new
    /// tokens, so every token is predicted with at least context − stride tokens of history.
    public func evaluate(
        split: String, step: Int, comm: Communicator, maxBatches: Int,
        stride: Int?
    ) throws -> EvalResult {
        let data = dataset(split)
        let T = config.model.context
        let stride = min(max(stride ?? T, 1), T)
        let segments = data.windowCount(stride: stride)
        var nll = 0.0, count = 0.0, bytes = 0.0
        var first = comm.rank * microBatch
        var batches = 0
        while first < segments && (maxBatches == 0 || batches < maxBatches) {
            let n = min(microBatch, segments - first)
            for row in 0..<n {
                data.windowSample(first + row, stride: stride, inputs: inputs + row * T, targets: targets + row * T)
            }
            nll += model.forward(tokens: inputs, targets: targets, batch: n, mode: .eval)
            for i in 0..<(n * T) where targets[i] >= 0 {
                count += 1
                bytes += Double(textBytes?[Int(targets[i])] ?? 0)
            }
            first += microBatch * comm.size
            batches += 1
        }
        var sums = [nll, count, bytes]
        try comm.allreduceSum(&sums, count: 3)
        let loss = sums[0] / max(sums[1], 1)
        var r = EvalResult(step: step, split: split, loss: loss)
        r.perplexity = exp(loss)
        r.tokens = Int(sums[1])
        r.stride = stride
        if textBytes != nil && sums[2] > 0 { r.bitsPerByte = sums[0] / sums[2] / log(2) }
        return r
    }

    public func annotateFinal(_ result: inout EvalResult) {
        // Same tokens as the model predicts: all but the first.
        let data = dataset(result.split)
        result.unigramPerplexity = vocab.unigramPerplexity((1..<data.shard.count).map { data.shard[$0] })
    }

    public func analysisForward(split: String, first: Int, samples: Int) throws -> Int {
        let data = dataset(split), T = config.model.context
        let n = min(samples, data.evalCount - first, microBatch)
        guard n >= 1 else { throw ConfigError("analyze: no sequence \(first) to analyse in the \(split) split") }
        for row in 0..<n { data.evalSample(first + row, inputs: inputs + row * T, targets: targets + row * T) }
        _ = model.forward(tokens: inputs, targets: targets, batch: n, mode: .eval)
        return n
    }
}
