import FFCore
import Foundation
import FFKernels

// Letters used in shape comments: B micro-batch (sequences), T context, C d_model, F d_ff,
// H heads, V vocabulary, L layers.

/// A decoder-only Transformer language model with an explicit forward and backward.
///
/// Parameters and gradients live in two flat buffers described by `layout`. Every activation is
/// carved out of one arena at init for micro-batches of up to `maxBatch` sequences; `forward`
/// and `backward` allocate nothing.
public final class LanguageModel: TrainableModel {
    public let config: LMConfig
    public let layout: ParameterLayout
    public let params: FlatBuffer
    public let grads: FlatBuffer
    public let maxBatch: Int
    /// Rows (tokens) whose logits exist at once in the full-softmax output (`linearCrossEntropy`).
    public let outputChunk: Int
    /// The blocks, with their activations and attention kernels.
    public let stack: TransformerStack

    // Parameter offsets, resolved once (tokEmb and head unused with adaptive input / output).
    let tokEmb: Int, posEmb: Int?, lnfW: Int?, lnfB: Int?, head: Int
    /// Adaptive input embedding and adaptive softmax output (`config.adaptive`).
    let adaptiveInput: AdaptiveEmbedding?
    let adaptiveOutput: AdaptiveSoftmax?

    let arena = Arena()
    let embOut, embMask: UnsafeMutablePointer<Float>  // (B,T,C)
    let lnfOut, lnfMean, lnfRstd: UnsafeMutablePointer<Float>
    let logits: UnsafeMutablePointer<Float>  // (outputChunk,V): one block of rows
    let posTable: UnsafeMutablePointer<Float>  // (T,C) sinusoids
    let dHead: UnsafeMutablePointer<Float>  // (B,T,C) d(final hidden), from the training forward
    let tokensBuf: UnsafeMutablePointer<Int32>  // (B,T)
    let rowLoss: UnsafeMutablePointer<Double>  // (B,T)
    let threads: Int

    // State of the last forward, for backward.
    var lastBatch = 0
    var lastTrain = false

    /// Statistics of the last forward: mean over rows of Σ_j A_ij per layer (1 is healthy; Fourier
    /// rows whose Σ_j W falls below eps approach 0).
    public var attentionRowSum: [Double] { stack.attentionRowSum }

    /// `outputChunk`: rows per block of the full-softmax output (default: about 8 MB of logits).
    /// `sharedParams`: another model's parameters to read instead of an own buffer (a replica
    /// that trains on a slice of the batch, see `ModelReplicas`).
    public init(
        config: LMConfig, maxBatch: Int, threads: Int = 1, outputChunk: Int? = nil,
        sharedParams: FlatBuffer? = nil
    ) {
        precondition(config.problems().isEmpty, config.problems().joined(separator: "; "))
        self.config = config
        self.maxBatch = maxBatch
        let rows = maxBatch * config.context
        let chunk = outputChunk ?? crossEntropyChunkRows(rows: rows, vocabulary: config.vocabSize)
        self.outputChunk = min(rows, max(1, chunk))
        self.threads = max(1, threads)
        rowLoss = .allocate(capacity: maxBatch * config.context)
        let C = config.dModel, V = config.vocabSize, T = config.context
        var lay = ParameterLayout()
        if let a = config.adaptive, config.tieEmbeddings {
            adaptiveInput = AdaptiveEmbedding(config: a, layout: &lay, maxRows: maxBatch * T)
            tokEmb = -1
        } else {
            adaptiveInput = nil
            tokEmb = lay.add("tok_emb.weight", [V, C], decays: true).offset
        }
        posEmb = config.positions == .learned ? lay.add("pos_emb.weight", [T, C], decays: true).offset : nil
        stack = TransformerStack(config: config.stackConfig, maxBatch: maxBatch, layout: &lay, threads: self.threads)
        if config.norm == .pre {
            lnfW = lay.add("ln_f.weight", [C], decays: false).offset
            lnfB = lay.add("ln_f.bias", [C], decays: false).offset
        } else {
            lnfW = nil; lnfB = nil
        }
        if let a = config.adaptive {
            adaptiveOutput = AdaptiveSoftmax(
                config: a, layout: &lay, maxRows: maxBatch * T, threads: self.threads,
                tiedTo: adaptiveInput)
            head = -1
        } else {
            adaptiveOutput = nil
            head = config.tieEmbeddings ? tokEmb : lay.add("lm_head.weight", [V, C], decays: true).offset
        }
        layout = lay
        precondition(sharedParams.map { $0.count == lay.count } ?? true, "shared parameters of another shape")
        params = sharedParams ?? FlatBuffer(count: lay.count)
        grads = FlatBuffer(count: lay.count)
        adaptiveInput?.bind(params: params, grads: grads)
        adaptiveOutput?.bind(params: params, grads: grads)

        // Activations outside the blocks.
        let BT = maxBatch * T
        let a = arena
        let hEmb = a.reserve(BT * C), hEmbMask = a.reserve(BT * C)
        let hLnf = a.reserve(BT * C), hLnfM = a.reserve(BT), hLnfR = a.reserve(BT)
        let hLogits = a.reserve(config.adaptive == nil ? self.outputChunk * V : 0)
        let hPos = a.reserve(T * C), hHead = a.reserve(BT * C)
        let hTok = a.reserve(BT)
        a.commit()
        embOut = a.pointer(hEmb); embMask = a.pointer(hEmbMask)
        lnfOut = a.pointer(hLnf); lnfMean = a.pointer(hLnfM); lnfRstd = a.pointer(hLnfR)
        logits = a.pointer(hLogits); posTable = a.pointer(hPos); dHead = a.pointer(hHead)
        // Int32 buffers share Float storage (same size).
        tokensBuf = UnsafeMutableRawPointer(a.pointer(hTok)).assumingMemoryBound(to: Int32.self)
        for t in 0..<T {
            for i in 0..<(C / 2) {
                let freq = exp(-log(10000.0) * Double(2 * i) / Double(C))
                posTable[t * C + 2 * i] = Float(sin(Double(t) * freq))
                posTable[t * C + 2 * i + 1] = Float(cos(Double(t) * freq))
            }
        }
    }

    deinit { rowLoss.deallocate() }

    /// Bytes held for activations and kernel workspaces (parameters and gradients excluded).
    public var activationBytes: Int {
        arena.floats * 4 + stack.activationBytes + maxBatch * config.context * 8
            + (adaptiveInput?.scratchBytes ?? 0) + (adaptiveOutput?.scratchBytes ?? 0)
    }

    /// Fills the parameters from `seed`: weights ~ N(0, initStd²), output projections of the
    /// residual branches scaled by 1/sqrt(2L) (GPT-2), biases 0, LayerNorm gains 1, R = rInit.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: SplitMix64.key(seed, 0x1A17))
        let p = params.pointer
        let residualStd = config.initStd / Float(2 * config.layers).squareRoot()
        for t in layout.tensors {
            let n = t.name
            if n.hasSuffix(".bias") {
                for i in t.range { p[i] = 0 }
            } else if n.contains("ln") && n.hasSuffix(".weight") && t.shape.count == 1 {
                for i in t.range { p[i] = 1 }
            } else if n.hasSuffix("attn.R") {
                if case .fourier(_, let r0) = config.attention { for i in t.range { p[i] = r0 } }
            } else {
                let std = TransformerStack.isResidualOutput(n) ? residualStd : config.initStd
                for i in t.range { p[i] = Float(rng.nextNormal()) * std }
            }
        }
    }

    // MARK: Forward

    /// What a forward pass is for.
    public enum Mode {
        /// Evaluation: no dropout, no gradient.
        case eval
        /// Training: dropout keyed by `dropoutKeys` (one per sequence, so the masks of a sample do
        /// not depend on which rank or micro-batch it lands in). The gradient of `lossScale * loss`
        /// is for the following `backward`; a full-softmax output adds its weights' share to
        /// `grads` during this forward already (its logits exist only one block at a time).
        case train(lossScale: Float, dropoutKeys: UnsafePointer<UInt64>)
    }

    /// Runs the model on tokens (B, T) and returns the summed cross-entropy (nats) over targets
    /// (B, T); a target < 0 is ignored.
    public func forward(
        tokens: UnsafePointer<Int32>, targets: UnsafePointer<Int32>, batch B: Int,
        mode: Mode
    ) -> Double {
        precondition(B <= maxBatch, "micro-batch \(B) exceeds the model's allocation \(maxBatch)")
        let T = config.context, C = config.dModel, V = config.vocabSize, BT = B * T
        let p = params.pointer
        tokensBuf.update(from: tokens, count: BT)
        var keys: UnsafePointer<UInt64>? = nil
        var scale: Float? = nil
        if case .train(let s, let k) = mode { keys = k; scale = s }
        lastBatch = B
        lastTrain = scale != nil
        let dropout = lastTrain ? config.dropout : 0

        // Embedding.
        let embScale: Float = config.scaleEmbeddings ? Float(C).squareRoot() : 1
        if let adaptiveInput {
            for i in 0..<BT {
                precondition(tokens[i] >= 0 && Int(tokens[i]) < V, "token \(tokens[i]) outside the vocabulary (\(V))")
            }
            adaptiveInput.forward(tokens: tokens, M: BT, out: embOut)
        }
        let adaptive = adaptiveInput != nil
        parallelChunks(BT, threads: threads, grain: 64) { rows in
            for i in rows {
                let tok = Int(tokens[i]), t = i % T
                precondition(tok >= 0 && tok < V, "token \(tok) outside the vocabulary (\(V))")
                let out = embOut + i * C
                let e = adaptive ? UnsafePointer(out) : UnsafePointer(p + tokEmb + tok * C)
                let pos = posEmb.map { p + $0 + t * C } ?? (posTable + t * C)
                for c in 0..<C { out[c] = e[c] * embScale + pos[c] }
            }
        }
        applyDropout(embOut, mask: embMask, rate: dropout, keys: keys, B: B)

        let x = stack.forward(embOut, batch: B, params: p, keys: keys)
        var final = x
        if let lnfW, let lnfB {
            layerNormForward(
                lnfOut, mean: lnfMean, rstd: lnfRstd, x, weight: p + lnfW, bias: p + lnfB, M: BT, C: C,
                threads: threads)
            final = lnfOut
        }
        if let adaptiveOutput {
            return adaptiveOutput.forward(hidden: final, targets: targets, M: BT, lossScale: scale)
        }
        // The head's gradient is complete here (see linearCrossEntropy); backward takes d(final) from dHead.
        var gradient: LinearCrossEntropyGradient?
        if let scale {
            parallelZero(dHead, count: BT * C, threads: threads)
            gradient = LinearCrossEntropyGradient(scale: scale, dx: dHead, dweight: grads.pointer + head)
        }
        return linearCrossEntropy(
            x: final, weight: p + head, targets: targets, M: BT, K: C, V: V, chunk: outputChunk,
            scratch: logits, rowLoss: rowLoss, gradient: gradient, threads: threads)
    }

    /// Multiplies the embeddings (B,T,C) in place by a fresh dropout mask and keeps it for backward.
    private func applyDropout(
        _ x: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>, rate: Float,
        keys: UnsafePointer<UInt64>?, B: Int
    ) {
        guard rate > 0, let keys else { return }
        let n = config.context * config.dModel
        let keep = 1 / (1 - rate)
        parallelTasks(B, threads: threads) { b, _ in
            var rng = SplitMix64(seed: SplitMix64.key(keys[b], 0))
            let m = mask + b * n, xs = x + b * n
            for i in 0..<n {
                m[i] = rng.nextFloat() < rate ? 0 : keep
                xs[i] *= m[i]
            }
        }
    }

    // MARK: Backward

    /// The ranges of the flat gradient buffer that `backward` completes, in the order it completes
    /// them: the head (ln_f, lm_head), block L-1, ..., block 0, then the embeddings. Consecutive
    /// stages are adjacent, so buckets cut from them are contiguous.
    public var gradientStages: [Range<Int>] {
        stack.gradientStages(total: layout.count)
    }

    /// Accumulates into `grads` the gradient of `lossScale * loss` of the preceding `.train` forward.
    /// With the full-softmax output, that forward has already added the output weights' share.
    /// `onStageDone(k)` is called as soon as stage k of `gradientStages` holds its final gradient.
    public func backward(onStageDone: ((Int) throws -> Void)? = nil) rethrows {
        precondition(lastTrain, "backward needs a preceding forward in .train mode")
        let B = lastBatch, T = config.context, C = config.dModel, BT = B * T
        let p = params.pointer, g = grads.pointer

        let blockOut = stack.layerOutput(config.layers - 1)
        let dOut = stack.outputGradient
        // d(final hidden) in dHead (pre-LN, or any full-softmax output) or straight in dOut.
        if let adaptiveOutput {
            dOut.update(repeating: 0, count: BT * C)
            let dFinal = lnfW != nil ? dHead : dOut
            if lnfW != nil { dHead.update(repeating: 0, count: BT * C) }
            adaptiveOutput.backward(dhidden: dFinal)
        } else if lnfW == nil {
            parallelCopy(dOut, from: dHead, count: BT * C, threads: threads)
        } else {
            parallelZero(dOut, count: BT * C, threads: threads)
        }
        if let lnfW, let lnfB {
            layerNormBackward(
                dx: dOut, dweight: g + lnfW, dbias: g + lnfB, dy: dHead, x: blockOut, weight: p + lnfW,
                mean: lnfMean, rstd: lnfRstd, M: BT, C: C, threads: threads)
        }
        try onStageDone?(0)
        let L = config.layers
        let dy = try stack.backward(params: p, grads: g) { l in try onStageDone?(L - l) }
        // Embedding: dy holds d(embOut after dropout).
        if config.dropout > 0 {
            let mask = embMask
            parallelChunks(BT * C, threads: threads, grain: memoryPassGrain) { r in
                for i in r { dy[i] *= mask[i] }
            }
        }
        let embScale: Float = config.scaleEmbeddings ? Float(C).squareRoot() : 1
        // Rows that share a token add into the same embedding row, so the workers split the
        // columns: each element still sums the rows in order (the same bits for any thread count).
        let adaptive = adaptiveInput != nil, tokens = tokensBuf, tokEmb = tokEmb, posEmb = posEmb
        parallelRanges(C, threads: BT * C >= 4 * memoryPassGrain ? threads : 1, grain: 16) { cols in
            for i in 0..<BT {
                let src = dy + i * C
                if !adaptive {
                    let e = g + tokEmb + Int(tokens[i]) * C
                    for c in cols { e[c] += src[c] * embScale }
                }
                if let posEmb { let pe = g + posEmb + (i % T) * C; for c in cols { pe[c] += src[c] } }
            }
        }
        if let adaptiveInput {
            if embScale != 1 { for i in 0..<(BT * C) { dy[i] *= embScale } }
            adaptiveInput.backward(dout: dy)
        }
        try onStageDone?(config.layers + 1)
    }
}

extension LanguageModel {

    /// The learned R entries of `layer` (empty for softmax attention).
    public func rValues(layer: Int) -> [Float] { stack.rValues(layer: layer, params: params.pointer) }
}
