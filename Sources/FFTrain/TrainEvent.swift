/// What the trainer reports while it works; the command line decides what to show.
public enum TrainEvent: Sendable {
    case started(StartInfo)
    case step(StepMetrics)
    case evaluated(EvalResult)
    /// A step's update was dropped (non-finite loss or gradient, policy `skip`).
    case skipped(step: Int, reason: String)
    /// A checkpoint was committed: its folder, the seconds the save took, its size.
    case checkpointed(path: String, seconds: Double, bytes: Int)
    case finished(RunSummary)
}

public struct StartInfo: Sendable {
    public var parameters: Int
    public var vocabSize: Int
    public var trainTokens: Int
    public var worldSize: Int
    public var steps: Int
    public var tokensPerStep: Int
    public var attention: String
    public var runDirectory: String
    /// Per rank (in rank order): bytes held for training — parameters, gradients, AdamW moments (all
    /// or the ZeRO-1 partition), the reduce-scatter buffer, activations, workspaces — and of the
    /// AdamW moments alone.
    public var memoryPerRank: [Int]
    public var optimizerBytesPerRank: [Int]
    public var zero1: Bool
}

public struct StepMetrics: Sendable, Codable {
    public var step: Int
    public var steps: Int
    public var epoch: Int
    /// Mean cross-entropy per target token of this step's global batch (nats).
    public var loss: Double
    public var lr: Double
    public var gradNorm: Double
    public var tokensPerSecond: Double
    /// Seconds per step, averaged since the last report.
    public var stepSeconds: Double
    public var elapsedSeconds: Double
    public var etaSeconds: Double
    /// Mean Σ_j A_ij per layer (attention health: 1 is healthy, near 0 means collapsed rows).
    public var attentionRowSum: [Double]
    /// Seconds per step of computation, and of communication the backward pass did not hide.
    public var computeSeconds: Double
    public var commSeconds: Double
    enum CodingKeys: String, CodingKey {
        case step, steps, epoch, loss, lr
        case computeSeconds = "compute_s", commSeconds = "comm_s"
        case gradNorm = "grad_norm", tokensPerSecond = "tokens_per_s", stepSeconds = "step_s"
        case elapsedSeconds = "elapsed_s", etaSeconds = "eta_s", attentionRowSum = "attn_row_sum"
    }
}

public struct EvalResult: Sendable, Codable {
    public var step: Int
    public var split: String
    /// Mean cross-entropy per predicted token (nats).
    public var loss: Double
    public var perplexity: Double
    public var tokens: Int
    /// The perplexity of the training split's unigram model on this split.
    public var unigramPerplexity: Double?
    /// Window stride (= context: independent segments; smaller: sliding window).
    public var stride: Int? = nil
    enum CodingKeys: String, CodingKey {
        case step, split, loss, perplexity, tokens, stride
        case unigramPerplexity = "unigram_perplexity"
    }
}

public struct RunSummary: Sendable, Codable {
    public var attention: String
    public var steps: Int
    public var finalTrainLoss: Double
    public var valid: EvalResult
    public var test: EvalResult
    public var tokensPerSecond: Double
    public var wallSeconds: Double
    public var weightsPath: String
    enum CodingKeys: String, CodingKey {
        case attention, steps, valid, test
        case finalTrainLoss = "final_train_loss", tokensPerSecond = "tokens_per_s"
        case wallSeconds = "wall_s", weightsPath = "weights"
    }
}
