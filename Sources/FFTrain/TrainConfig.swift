import FFFormats
import Foundation
import FFKernels
import FFData
import FFModel

/// Everything a training run needs, read from YAML and validated before any work starts.
public struct TrainConfig: Sendable {
    public struct Run: Sendable {
        public var name: String
        /// Runs live in `dir/name`.
        public var dir: String
        public var seed: UInt64
    }
    public struct Data: Sendable {
        /// Folder with `vocab.json` and the token shards (LM), or the IDX files (images).
        public var dir: String
        /// LM: token shards. Images: IDX image files (labels below); an empty `valid` means none.
        public var train = "train.bin", valid = "valid.bin", test = "test.bin"
        /// LM: the shards of each split, file names or glob patterns relative to `dir` (a split is
        /// their concatenation); `train`, `valid`, `test` then name them for messages.
        public var trainShards = ["train.bin"], validShards = ["valid.bin"], testShards = ["test.bin"]
        /// Images: IDX label files.
        public var trainLabels = "", validLabels = "", testLabels = ""
        /// Images: hold out this many training images (a seeded choice) as the valid split.
        public var validHoldout = 0
        /// Images: per-channel normalisation of pixels in [0, 1]; nil: measured on the training split.
        public var mean: [Float]?, std: [Float]?
        /// Images: number of classes; nil: the largest training label + 1.
        public var classes: Int?
    }

    /// What the model is: a causal language model or a vision transformer classifier.
    public enum ModelKind: String, Sendable, CaseIterable {
        case lm, vit
    }
    /// The model section, without the vocabulary size (that comes from the data).
    public struct Model: Sendable {
        public var kind: ModelKind
        /// ViT: patch side (stride), patch window side (>= patch), drop-path rate of the last block.
        public var patch: Int, patchWindow: Int, dropPath: Float
        public var layers: Int, dModel: Int, heads: Int, dFF: Int, context: Int
        public var norm: NormPlacement, positions: PositionKind, activation: Activation
        public var dropout: Float, tieEmbeddings: Bool, scaleEmbeddings: Bool, initStd: Float
        public var attention: AttentionKind
        /// Fourier attention with `r_init: auto`: R is set from the data before the first step
        /// (see `RCalibration`); nil: R starts at the `rInit` of `attention`.
        public var rCalibration: RCalibration?
        /// Adaptive softmax (and, with tied embeddings, adaptive input); nil: full softmax.
        public var adaptive: Adaptive?

        public func lmConfig(vocabSize: Int) -> LMConfig {
            var c = LMConfig(
                vocabSize: vocabSize, layers: layers, dModel: dModel, heads: heads, dFF: dFF,
                context: context)
            c.norm = norm; c.positions = positions; c.activation = activation; c.dropout = dropout
            c.tieEmbeddings = tieEmbeddings; c.scaleEmbeddings = scaleEmbeddings; c.initStd = initStd
            c.attention = attention
            c.adaptive = adaptive.map {
                AdaptiveSoftmaxConfig(
                    vocabSize: vocabSize, dModel: dModel, cutoffs: $0.cutoffs, divVal: $0.divVal,
                    tieWeights: tieEmbeddings, tieProjections: tieEmbeddings && $0.tieProjections)
            }
            return c
        }

        /// The ViT for images of `imageSize`² pixels with `channels` channels and `classes` classes.
        public func vitConfig(imageSize: Int, channels: Int, classes: Int) -> ViTConfig {
            var c = ViTConfig(
                imageSize: imageSize, channels: channels, patch: patch, classes: classes,
                layers: layers, dModel: dModel, heads: heads, dFF: dFF)
            c.patchWindow = patchWindow
            c.activation = activation; c.attention = attention; c.dropout = dropout; c.dropPath = dropPath
            c.initStd = initStd
            return c
        }
    }
    public struct Train: Sendable {
        public var steps: Int
        /// Sequences per optimizer step, over all ranks and micro-steps.
        public var batchSize: Int
        public var gradAccum: Int
        public var lr: Float, minLR: Float, warmupSteps: Int, schedule: LRSchedule.Decay
        public var weightDecay: Float, beta1: Float, beta2: Float, adamEps: Float
        /// Clip the global gradient norm to this (0: no clipping).
        public var gradClip: Float
        /// Threads per process for BLAS and our kernels.
        public var threads: Int
        public var logEvery: Int
        /// Validation perplexity every this many steps (0: only at the end).
        public var evalEvery: Int
        /// Batches of the validation split per periodic evaluation (0: the whole split).
        public var evalBatches: Int
        /// Exponential moving average of the weights with this decay (0: off), warmed up as
        /// min(decay, (1 + step) / (10 + step)); evaluation and the saved weights use the average.
        public var ema: Float
        /// What to do when the loss or the gradient is NaN/Inf (decided on reduced values, so
        /// every rank decides the same).
        public var onNonFinite: NonFinitePolicy
        /// Stop anyway after this many consecutive skipped steps.
        public var maxSkippedSteps: Int
        /// Warn when a Fourier layer's mean row-sum of A stays below this (0: never) ...
        public var collapseThreshold: Double
        /// ... at this many logged steps in a row.
        public var collapsePatience: Int
        /// Language models: every this many steps, rank 0 generates `sampleTokens` tokens from
        /// `samplePrompt` (0: never).
        public var sampleEvery = 0, sampleTokens = 64, samplePrompt = ""
        /// How `threads` share the work of a micro-batch.
        public var threadSplit = ThreadSplit.auto

        /// Whether the threads take slices of the samples (`ModelReplicas`) for micro-batches of
        /// `microBatch` samples.
        public func splitsSamples(microBatch: Int) -> Bool {
            switch threadSplit {
            case .samples: return threads > 1
            case .operations: return false
            case .auto: return threads > 1 && microBatch >= threads
            }
        }
    }

    /// `train.thread_split`: how a rank's threads share a micro-batch.
    public enum ThreadSplit: String, Sendable, CaseIterable {
        /// `samples` when the micro-batch has at least one sample per thread, else `operations`.
        case auto
        /// Each thread trains a copy of the model on its slice of the samples; their gradients
        /// are summed into the rank's stage by stage (`ModelReplicas`). Fastest; an activation
        /// arena and a gradient buffer more per thread.
        case samples
        /// Every operation is split over the threads: no memory beyond one copy.
        case operations
    }

    /// `model.output: adaptive` settings (the paper's WikiText-103 output layer).
    public struct Adaptive: Sendable, Equatable {
        /// Cluster boundaries: the head holds the `cutoffs[0]` most frequent words.
        public var cutoffs: [Int]
        /// Tail cluster i has vectors of d_model / div_val^i.
        public var divVal: Float
        /// With tied embeddings: the softmax reuses the input's projections too.
        public var tieProjections: Bool
    }

    public enum NonFinitePolicy: String, Sendable, CaseIterable {
        /// Drop the step's update and go on.
        case skip
        /// End the run with an error (the last checkpoint stays intact).
        case stop
    }

    /// Data-parallel settings.
    public struct Dist: Sendable {
        /// Gradient bucket size for the overlapped allreduce, in MiB of floats.
        public var bucketMB: Double
        /// Seconds a collective may take before the watchdog aborts the job.
        public var watchdogSeconds: Double
        /// ZeRO-1: each rank keeps the AdamW moments of its partition only.
        public var zero1: Bool
    }

    /// Periodic sharded checkpoints.
    public struct Checkpointing: Sendable {
        /// Save every this many steps (0: only on a stop request).
        public var every: Int
        /// Keep the newest this many checkpoints...
        public var keepLast: Int
        /// ...plus every checkpoint whose step is a multiple of this (0: none).
        public var keepEvery: Int
    }

    public var source: String
    public var checkpoint: Checkpointing
    /// FNV-1a hash of the whole config after overrides (ranks compare it at start-up).
    public var hash: UInt64 = 0
    public var dist: Dist
    public var run: Run
    public var data: Data
    public var model: Model
    public var train: Train
    /// Image augmentation (ViT only).
    public var augment: Augmentation

    /// Loads `path`, applies `--set` overrides, and validates every key.
    public static func load(path: String, overrides: [String] = []) throws -> TrainConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("\(path): cannot read the config file")
        }
        var tree = try ConfigReader.parse(yaml: text, source: path)
        try ConfigReader.applyOverrides(overrides, to: &tree)
        return try parse(tree: tree, source: path)
    }

    static func parse(tree: [String: Any], source: String) throws -> TrainConfig {
        var r = ConfigReader(source: source, tree: tree)
        let run = Run(
            name: try r.string("run.name"), dir: try r.string("run.dir", "runs"),
            seed: UInt64(try r.int("run.seed", 1111, min: 0)))
        let kind = try r.choice("model.kind", ModelKind.lm)
        let data = try readData(&r, kind: kind)
        let model = try readModel(&r, kind: kind, source: source)
        let augment = kind == .lm ? Augmentation() : try readAugmentation(&r)
        let train = try readTrain(&r)
        let dist = Dist(
            bucketMB: try r.double("dist.bucket_mb", 1, min: 0.001),
            watchdogSeconds: try r.double("dist.watchdog_s", 300, min: 0.1),
            zero1: try r.bool("dist.zero1", false))
        let checkpoint = Checkpointing(
            every: try r.int("checkpoint.every", 0, min: 0),
            keepLast: try r.int("checkpoint.keep_last", 3, min: 1),
            keepEvery: try r.int("checkpoint.keep_every", 0, min: 0))
        try r.finish()
        var cfg = TrainConfig(
            source: source, checkpoint: checkpoint, dist: dist, run: run, data: data, model: model,
            train: train, augment: augment)
        cfg.hash = fnv1a(canonical(tree))
        try cfg.validate()
        return cfg
    }

    static func readData(_ r: inout ConfigReader, kind: ModelKind) throws -> Data {
        var data = Data(dir: try r.string("data.dir"))
        if kind == .lm {
            data.trainShards = try r.strings("data.train", data.trainShards)
            data.validShards = try r.strings("data.valid", data.validShards)
            data.testShards = try r.strings("data.test", data.testShards)
            data.train = data.trainShards.joined(separator: ", ")
            data.valid = data.validShards.joined(separator: ", ")
            data.test = data.testShards.joined(separator: ", ")
        } else {
            // Defaults: the MNIST / Fashion-MNIST file names.
            data.train = try r.string("data.train", "train-images-idx3-ubyte.gz")
            data.trainLabels = try r.string("data.train_labels", "train-labels-idx1-ubyte.gz")
            data.valid = try r.string("data.valid", "")
            data.validLabels = try r.string("data.valid_labels", "")
            data.test = try r.string("data.test", "t10k-images-idx3-ubyte.gz")
            data.testLabels = try r.string("data.test_labels", "t10k-labels-idx1-ubyte.gz")
            data.validHoldout = try r.int("data.valid_holdout", 0, min: 0)
            data.mean = try r.floats("data.mean")
            data.std = try r.floats("data.std", min: 1e-6)
            data.classes = try r.optionalInt("data.classes")
        }
        return data
    }

    /// The attention section: the kind, the Fourier kernel's settings and how R starts.
    static func readAttention(
        _ r: inout ConfigReader, kind: ModelKind, source: String
    ) throws
        -> (attention: AttentionKind, rCalibration: RCalibration?)
    {
        // The Fourier keys are read whatever the kind, so that `--set model.attention.kind=softmax`
        // turns a Fourier config into its twin without tripping the unknown-key check.
        let attentionKind = try r.string("model.attention.kind", "fourier")
        let spec = FourierSpec(
            p: try r.int("model.attention.p", 4, min: 2),
            eps: try r.float("model.attention.eps", 1e-6, min: 0),
            rMode: try r.choice("model.attention.r_mode", RMode.scalar),
            kernel: try r.choice("model.attention.kernel", FourierKernel.fused))
        // R starts from the data by default (`auto`); the paper's values are 2.0 for the LM and
        // 1.0 for DeiT, with which rows collapse during training (see the README).
        let rInitText = try r.string("model.attention.r_init", "auto")
        let rTarget = try r.double(
            "model.attention.r_target", RCalibration.defaultTarget(lm: kind == .lm),
            min: 1e-6, max: 0.999999)
        let rCalibration: RCalibration? = rInitText == "auto" ? RCalibration(target: rTarget) : nil
        var rInit: Float = 1
        if rCalibration == nil {
            guard let x = Double(rInitText), x.isFinite, x > 0 else {
                throw ConfigError(
                    "\(source): model.attention.r_init: expected a positive number or auto, "
                        + "got '\(rInitText)'")
            }
            rInit = Float(x)
        }
        switch attentionKind {
        case "fourier": return (.fourier(spec, rInit: rInit), rCalibration)
        case "softmax": return (.softmax, nil)
        default:
            throw ConfigError("\(source): model.attention.kind: '\(attentionKind)' is not one of fourier, softmax")
        }
    }

    static func readModel(_ r: inout ConfigReader, kind: ModelKind, source: String) throws -> Model {
        let (attention, rCalibration) = try readAttention(&r, kind: kind, source: source)
        let lm = kind == .lm
        // Keys that only one kind reads: the other kind reports them as unknown.
        let patch = lm ? 0 : try r.int("model.patch", min: 1)
        return Model(
            kind: kind,
            patch: patch,
            patchWindow: lm ? 0 : try r.int("model.patch_window", patch, min: 1),
            dropPath: lm ? 0 : try r.float("model.drop_path", 0.1, min: 0, max: 0.99),
            layers: try r.int("model.layers", min: 1), dModel: try r.int("model.d_model", min: 1),
            heads: try r.int("model.heads", min: 1), dFF: try r.int("model.d_ff", min: 1),
            context: lm ? try r.int("model.context", min: 1) : 0,
            norm: lm ? try r.choice("model.norm", NormPlacement.post) : .pre,
            positions: lm ? try r.choice("model.positions", PositionKind.sinusoidal) : .learned,
            activation: try r.choice("model.activation", lm ? Activation.relu : .gelu),
            dropout: try r.float("model.dropout", lm ? 0.1 : 0, min: 0, max: 0.99),
            tieEmbeddings: lm ? try r.bool("model.tie_embeddings", true) : false,
            scaleEmbeddings: lm ? try r.bool("model.scale_embeddings", true) : false,
            initStd: try r.float("model.init_std", 0.02, min: 0),
            attention: attention,
            rCalibration: rCalibration,
            adaptive: lm ? try readAdaptive(&r, source: source) : nil)
    }

    static func readAugmentation(_ r: inout ConfigReader) throws -> Augmentation {
        var augment = Augmentation()
        augment.cropPadding = try r.int("augment.crop_padding", 0, min: 0)
        augment.flip = try r.bool("augment.flip", false)
        augment.mixup = try r.float("augment.mixup", 0, min: 0)
        augment.cutmix = try r.float("augment.cutmix", 0, min: 0)
        augment.mixProb = try r.float("augment.mix_prob", 1, min: 0, max: 1)
        augment.switchProb = try r.float("augment.switch_prob", 0.5, min: 0, max: 1)
        augment.erase = try r.float("augment.erase", 0, min: 0, max: 1)
        augment.labelSmoothing = try r.float("augment.label_smoothing", 0, min: 0, max: 0.99)
        return augment
    }

    static func readTrain(_ r: inout ConfigReader) throws -> Train {
        var train = Train(
            steps: try r.int("train.steps", min: 1), batchSize: try r.int("train.batch_size", min: 1),
            gradAccum: try r.int("train.grad_accum", 1, min: 1),
            lr: try r.float("train.lr", min: 0), minLR: try r.float("train.min_lr", 0, min: 0),
            warmupSteps: try r.int("train.warmup_steps", 0, min: 0),
            schedule: try r.choice("train.schedule", LRSchedule.Decay.cosine),
            weightDecay: try r.float("train.weight_decay", 0, min: 0),
            beta1: try r.float("train.beta1", 0.9, min: 0, max: 0.999999),
            beta2: try r.float("train.beta2", 0.999, min: 0, max: 0.999999),
            adamEps: try r.float("train.adam_eps", 1e-8, min: 0),
            gradClip: try r.float("train.grad_clip", 0, min: 0),
            threads: try r.int("train.threads", 1, min: 1),
            logEvery: try r.int("train.log_every", 10, min: 1),
            evalEvery: try r.int("train.eval_every", 0, min: 0),
            evalBatches: try r.int("train.eval_batches", 0, min: 0),
            ema: try r.float("train.ema", 0, min: 0, max: 0.99999999),
            onNonFinite: try r.choice("train.on_nonfinite", NonFinitePolicy.skip),
            maxSkippedSteps: try r.int("train.max_skipped_steps", 10, min: 0),
            collapseThreshold: try r.double("train.collapse_alarm", 0.5, min: 0, max: 1),
            collapsePatience: try r.int("train.collapse_patience", 3, min: 1))
        train.sampleEvery = try r.int("train.sample_every", 0, min: 0)
        train.sampleTokens = try r.int("train.sample_tokens", 64, min: 1)
        train.samplePrompt = try r.string("train.sample_prompt", "")
        train.threadSplit = try r.choice("train.thread_split", ThreadSplit.auto)
        return train
    }

    /// Cross-field checks that need no data.
    func validate() throws {
        let m = model
        if m.dModel % m.heads != 0 {
            throw ConfigError("\(source): model.heads (\(m.heads)) must divide model.d_model (\(m.dModel))")
        }
        if m.kind == .vit {
            if data.validHoldout > 0 && !data.valid.isEmpty {
                throw ConfigError("\(source): data.valid and data.valid_holdout both give a valid split: keep one")
            }
            if data.valid.isEmpty != data.validLabels.isEmpty {
                throw ConfigError("\(source): data.valid and data.valid_labels go together")
            }
            if let mean = data.mean, let std = data.std, mean.count != std.count {
                throw ConfigError("\(source): data.mean has \(mean.count) entries, data.std \(std.count)")
            }
        }
        if case .fourier(let spec, _) = m.attention, spec.p % 2 != 0 {
            throw ConfigError("\(source): model.attention.p must be even (got \(spec.p)): W = Y^p must be non-negative")
        }
        if train.batchSize % train.gradAccum != 0 {
            throw ConfigError(
                "\(source): train.batch_size (\(train.batchSize)) must be divisible by "
                    + "train.grad_accum (\(train.gradAccum))")
        }
        if run.name.isEmpty || run.name.contains("/") {
            throw ConfigError("\(source): run.name '\(run.name)' must be a non-empty name without '/'")
        }
    }

    static func readAdaptive(_ r: inout ConfigReader, source: String) throws -> Adaptive? {
        let output = try r.string("model.output", "full")
        let cutoffs = try r.floats("model.adaptive.cutoffs", min: 1)
        let divVal = try r.float("model.adaptive.div_val", 1, min: 1)
        let tieProjections = try r.bool("model.adaptive.tie_projections", true)
        switch output {
        case "full":
            return nil
        case "adaptive":
            guard let cutoffs else {
                throw ConfigError(
                    "\(source): model.output: adaptive needs model.adaptive.cutoffs "
                        + "(e.g. [20000, 40000, 200000])")
            }
            return Adaptive(cutoffs: cutoffs.map { Int($0) }, divVal: divVal, tieProjections: tieProjections)
        default:
            throw ConfigError("\(source): model.output: '\(output)' is not one of full, adaptive")
        }
    }

    public var runDirectory: String { (run.dir as NSString).appendingPathComponent(run.name) }
    public var checkpointDirectory: String { (runDirectory as NSString).appendingPathComponent("checkpoints") }
    public func dataPath(_ file: String) -> String { (data.dir as NSString).appendingPathComponent(file) }
}

/// A deterministic text form of a parsed YAML tree (mapping keys sorted).
func canonical(_ v: Any) -> String {
    if let d = v as? [String: Any] {
        return "{" + d.keys.sorted().map { "\($0):\(canonical(d[$0]!))" }.joined(separator: ",") + "}"
    }
    if let a = v as? [Any] { return "[" + a.map(canonical).joined(separator: ",") + "]" }
    return "\(type(of: v))=\(v)"
}

func fnv1a(_ s: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return h
}
