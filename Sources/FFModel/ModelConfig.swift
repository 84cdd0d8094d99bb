import FFKernels

/// Where LayerNorm sits in a block.
public enum NormPlacement: String, Sendable, CaseIterable {
    /// x + f(LN(x)), and a final LayerNorm before the head (GPT-2, DeiT).
    case pre
    /// LN(x + f(x)) (the original Transformer; the paper's LM).
    case post
}

/// How positions enter the model.
public enum PositionKind: String, Sendable, CaseIterable {
    case sinusoidal, learned
}

/// The attention of every layer.
public enum AttentionKind: Sendable, Equatable {
    case softmax
    case fourier(FourierSpec, rInit: Float)

    public var name: String {
        switch self {
        case .softmax: return "softmax"
        case .fourier: return "fourier"
        }
    }
}

/// The shape and options of a decoder-only language model.
public struct LMConfig: Sendable, Equatable {
    public var vocabSize: Int
    public var layers: Int
    public var dModel: Int
    public var heads: Int
    public var dFF: Int
    /// Context length T.
    public var context: Int
    public var norm: NormPlacement = .post
    public var positions: PositionKind = .sinusoidal
    public var activation: Activation = .relu
    public var dropout: Float = 0.1
    public var tieEmbeddings = true
    /// Multiply token embeddings by sqrt(d_model) (the original Transformer does, with sinusoids).
    public var scaleEmbeddings = true
    public var attention: AttentionKind = .fourier(FourierSpec(), rInit: 2.0)
    /// The output layer: nil for a full softmax over the vocabulary, or an adaptive softmax
    /// (Grave et al.). With `tieEmbeddings` the input is then an adaptive embedding sharing the
    /// softmax's cluster weights (Baevski & Auli), as in the paper's WikiText-103 set-up.
    public var adaptive: AdaptiveSoftmaxConfig?
    /// Standard deviation of the initial weights.
    public var initStd: Float = 0.02

    public init(vocabSize: Int, layers: Int, dModel: Int, heads: Int, dFF: Int, context: Int) {
        self.vocabSize = vocabSize; self.layers = layers; self.dModel = dModel
        self.heads = heads; self.dFF = dFF; self.context = context
    }

    public var headDim: Int { dModel / heads }

    /// The blocks: causal, element-wise dropout, no drop-path.
    public var stackConfig: StackConfig {
        StackConfig(
            layers: layers, dModel: dModel, heads: heads, dFF: dFF, seq: context, norm: norm,
            activation: activation, attention: attention, causal: true, dropout: dropout)
    }

    /// Problems that make the configuration unusable, each a sentence naming the field.
    public func problems() -> [String] {
        var p: [String] = []
        if vocabSize < 2 { p.append("vocab size must be at least 2 (got \(vocabSize))") }
        if layers < 1 { p.append("model.layers must be at least 1 (got \(layers))") }
        if heads < 1 || dModel % max(heads, 1) != 0 {
            p.append("model.heads (\(heads)) must divide model.d_model (\(dModel))")
        }
        if dFF < 1 { p.append("model.d_ff must be at least 1 (got \(dFF))") }
        if context < 1 { p.append("model.context must be at least 1 (got \(context))") }
        if !(0..<1).contains(dropout) { p.append("model.dropout must be in [0, 1) (got \(dropout))") }
        if let a = adaptive {
            p += a.problems().map { "model.adaptive: \($0)" }
            if a.vocabSize != vocabSize || a.dModel != dModel {
                p.append(
                    "model.adaptive: built for another "
                        + "vocabulary or width")
            }
        }
        if case .fourier(let spec, _) = attention {
            if spec.p < 2 || spec.p % 2 != 0 {
                p.append("model.attention.p must be an even integer >= 2 (got \(spec.p))")
            }
            if !(spec.eps >= 0) { p.append("model.attention.eps must be >= 0 (got \(spec.eps))") }
        }
        return p
    }
}
