import Foundation
import FFKernels
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
        /// Folder with `vocab.json` and the token shards.
        public var dir: String
        public var train = "train.bin", valid = "valid.bin", test = "test.bin"
    }
    /// The model section, without the vocabulary size (that comes from the data).
    public struct Model: Sendable {
        public var layers: Int, dModel: Int, heads: Int, dFF: Int, context: Int
        public var norm: NormPlacement, positions: PositionKind, activation: Activation
        public var dropout: Float, tieEmbeddings: Bool, scaleEmbeddings: Bool, initStd: Float
        public var attention: AttentionKind
        /// `full` softmax over the vocabulary; `adaptive` is the paper's, not built yet.
        public var output: String

        public func lmConfig(vocabSize: Int) -> LMConfig {
            var c = LMConfig(vocabSize: vocabSize, layers: layers, dModel: dModel, heads: heads, dFF: dFF, context: context)
            c.norm = norm; c.positions = positions; c.activation = activation; c.dropout = dropout
            c.tieEmbeddings = tieEmbeddings; c.scaleEmbeddings = scaleEmbeddings; c.initStd = initStd
            c.attention = attention
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
        /// What to do when the loss or the gradient is NaN/Inf (decided on reduced values, so
        /// every rank decides the same).
        public var onNonFinite: NonFinitePolicy
        /// Stop anyway after this many consecutive skipped steps.
        public var maxSkippedSteps: Int
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
        let run = Run(name: try r.string("run.name"), dir: try r.string("run.dir", "runs"),
                      seed: UInt64(try r.int("run.seed", 1111, min: 0)))
        var data = Data(dir: try r.string("data.dir"))
        data.train = try r.string("data.train", data.train)
        data.valid = try r.string("data.valid", data.valid)
        data.test = try r.string("data.test", data.test)

        // The Fourier keys are read whatever the kind, so that `--set model.attention.kind=softmax`
        // turns a Fourier config into its twin without tripping the unknown-key check.
        let kind = try r.string("model.attention.kind", "fourier")
        let spec = FourierSpec(p: try r.int("model.attention.p", 4, min: 2),
                               eps: try r.float("model.attention.eps", 1e-6, min: 0),
                               rMode: try r.choice("model.attention.r_mode", RMode.scalar))
        let rInit = try r.float("model.attention.r_init", 2.0)
        let attention: AttentionKind
        switch kind {
        case "fourier": attention = .fourier(spec, rInit: rInit)
        case "softmax": attention = .softmax
        default:
            throw ConfigError("\(source): model.attention.kind: '\(kind)' is not one of fourier, softmax")
        }
        let model = Model(
            layers: try r.int("model.layers", min: 1), dModel: try r.int("model.d_model", min: 1),
            heads: try r.int("model.heads", min: 1), dFF: try r.int("model.d_ff", min: 1),
            context: try r.int("model.context", min: 1),
            norm: try r.choice("model.norm", NormPlacement.post),
            positions: try r.choice("model.positions", PositionKind.sinusoidal),
            activation: try r.choice("model.activation", Activation.relu),
            dropout: try r.float("model.dropout", 0.1, min: 0, max: 0.99),
            tieEmbeddings: try r.bool("model.tie_embeddings", true),
            scaleEmbeddings: try r.bool("model.scale_embeddings", true),
            initStd: try r.float("model.init_std", 0.02, min: 0),
            attention: attention,
            output: try r.string("model.output", "full"))
        let train = Train(
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
            onNonFinite: try r.choice("train.on_nonfinite", NonFinitePolicy.skip),
            maxSkippedSteps: try r.int("train.max_skipped_steps", 10, min: 0))
        let dist = Dist(bucketMB: try r.double("dist.bucket_mb", 1, min: 0.001),
                        watchdogSeconds: try r.double("dist.watchdog_s", 300, min: 0.1),
                        zero1: try r.bool("dist.zero1", false))
        let checkpoint = Checkpointing(every: try r.int("checkpoint.every", 0, min: 0),
                                       keepLast: try r.int("checkpoint.keep_last", 3, min: 1),
                                       keepEvery: try r.int("checkpoint.keep_every", 0, min: 0))
        let unknown = r.unknownKeys()
        if !unknown.isEmpty {
            throw ConfigError("\(source): unknown key\(unknown.count > 1 ? "s" : "") \(unknown.map { "'\($0)'" }.joined(separator: ", "))")
        }
        var cfg = TrainConfig(source: source, checkpoint: checkpoint, dist: dist, run: run, data: data, model: model, train: train)
        cfg.hash = fnv1a(canonical(tree))
        try cfg.validate()
        return cfg
    }

    /// Cross-field checks that need no data.
    func validate() throws {
        let m = model
        if m.dModel % m.heads != 0 {
            throw ConfigError("\(source): model.heads (\(m.heads)) must divide model.d_model (\(m.dModel))")
        }
        if m.output != "full" {
            throw ConfigError("\(source): model.output: '\(m.output)' is not built yet (only 'full' softmax output exists; adaptive softmax is planned)")
        }
        if case .fourier(let spec, _) = m.attention, spec.p % 2 != 0 {
            throw ConfigError("\(source): model.attention.p must be even (got \(spec.p)): W = Y^p must be non-negative")
        }
        if train.batchSize % train.gradAccum != 0 {
            throw ConfigError("\(source): train.batch_size (\(train.batchSize)) must be divisible by train.grad_accum (\(train.gradAccum))")
        }
        if run.name.isEmpty || run.name.contains("/") {
            throw ConfigError("\(source): run.name '\(run.name)' must be a non-empty name without '/'")
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
