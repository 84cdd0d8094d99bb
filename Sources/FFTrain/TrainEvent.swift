import FFAnalysis
/// What the trainer reports while it works; the command line decides what to show.
public enum TrainEvent: Sendable {
    case started(StartInfo)
    case step(StepMetrics)
    case evaluated(EvalResult)
    /// A step's update was dropped (non-finite loss or gradient, policy `skip`).
    case skipped(step: Int, reason: String)
    /// `r_init: auto` set each Fourier layer's R from the data before the first step.
    case calibrated(r: [Float])
    /// A Fourier layer's rows have stayed collapsed over several logged steps.
    case collapse(Collapse)
    /// A checkpoint was committed: its folder, the seconds the save took, its size.
    case checkpointed(path: String, seconds: Double, bytes: Int)
    /// Text the model generated from `train.sample_prompt` (`train.sample_every`).
    case sampled(TextSample)
    case finished(RunSummary)
}

public struct StartInfo: Sendable {
    public var parameters: Int
    /// E.g. "vocab 16384, 474000 training tokens".
    public var data: String
    public var worldSize: Int
    /// How each rank's threads share its micro-batch, e.g. "2 threads, each on a slice of the
    /// samples" (`train.thread_split`).
    public var threadLayout: String
    public var steps: Int
    /// Tokens or images per optimizer step (`unit` says which).
    public var unitsPerStep: Int
    public var unit: String
    public var attention: String
    public var runDirectory: String
    /// Per rank (in rank order): bytes held for training — parameters, gradients, AdamW moments (all
    /// or the ZeRO-1 partition), activations, workspaces — and of the AdamW moments alone.
    public var memoryPerRank: [Int]
    public var optimizerBytesPerRank: [Int]
    public var zero1: Bool
}

public struct StepMetrics: Sendable, Codable {
    public var step: Int
    public var steps: Int
    public var epoch: Int
    /// Mean cross-entropy per target token (or image) of this step's global batch (nats).
    public var loss: Double
    public var lr: Double
    public var gradNorm: Double
    /// Throughput: one of the two, by what the model consumes.
    public var tokensPerSecond: Double?
    public var imagesPerSecond: Double?
    /// Seconds per step, averaged since the last report.
    public var stepSeconds: Double
    public var elapsedSeconds: Double
    public var etaSeconds: Double
    /// Mean Σ_j A_ij per layer (attention health: 1 is healthy, near 0 means collapsed rows).
    public var attentionRowSum: [Double]
    /// Seconds per step of computation, and of communication the backward pass did not hide.
    public var computeSeconds: Double
    public var commSeconds: Double
    /// Fourier attention: per layer, R, the size of q and k, the spread of R·|q − k| and the
    /// collapsed rows (rank 0's last micro-batch); nil for softmax.
    public var attentionHealth: [LayerHealth]? = nil
    enum CodingKeys: String, CodingKey {
        case step, steps, epoch, loss, lr
        case computeSeconds = "compute_s"
        case commSeconds = "comm_s"
        case gradNorm = "grad_norm"
        case tokensPerSecond = "tokens_per_s"
        case imagesPerSecond = "images_per_s"
        case stepSeconds = "step_s"
        case elapsedSeconds = "elapsed_s"
        case etaSeconds = "eta_s"
        case attentionRowSum = "attn_row_sum"
        case attentionHealth = "attn_health"
    }
}

public struct EvalResult: Sendable, Codable {
    public var step: Int
    public var split: String
    /// Mean cross-entropy per predicted token or image (nats).
    public var loss: Double
    /// Language models: perplexity, tokens scored, window stride (= context: independent
    /// segments; smaller: sliding window), and the training split's unigram perplexity here.
    public var perplexity: Double?
    public var tokens: Int?
    public var stride: Int?
    public var unigramPerplexity: Double?
    /// Byte-level and GPT-2 tokenizers: the loss in bits per UTF-8 byte of the scored text, a
    /// figure that compares across tokenizers (byte: loss / ln 2).
    public var bitsPerByte: Double?
    /// Classifiers: images scored, top-1 and top-5 accuracy (fractions), and the confusion matrix
    /// (rows: true class, columns: predicted class; counts).
    public var images: Int?
    public var top1: Double?
    public var top5: Double?
    public var confusion: [[Int]]?
    /// True when the weights evaluated are the exponential moving average.
    public var ema: Bool?

    public init(step: Int, split: String, loss: Double) {
        self.step = step; self.split = split; self.loss = loss
    }

    enum CodingKeys: String, CodingKey {
        case step, split, loss, perplexity, tokens, stride, images, top1, top5, confusion, ema
        case unigramPerplexity = "unigram_perplexity"
        case bitsPerByte = "bits_per_byte"
    }
}

public struct RunSummary: Sendable, Codable {
    public var attention: String
    public var steps: Int
    /// The last step's training loss; nil when no step ran (a run resumed at its final step).
    public var finalTrainLoss: Double?
    /// Absent when the data has no valid split.
    public var valid: EvalResult?
    public var test: EvalResult
    public var tokensPerSecond: Double?
    public var imagesPerSecond: Double?
    public var wallSeconds: Double
    public var weightsPath: String
    enum CodingKeys: String, CodingKey {
        case attention, steps, valid, test
        case finalTrainLoss = "final_train_loss"
        case tokensPerSecond = "tokens_per_s"
        case imagesPerSecond = "images_per_s"
        case wallSeconds = "wall_s"
        case weightsPath = "weights"
    }
}
