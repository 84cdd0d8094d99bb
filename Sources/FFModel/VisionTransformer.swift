import FFCore
import Foundation
import FFKernels

// Letters used in shape comments: B micro-batch (images), Ch image channels, S image side,
// P patch side (the stride), W patch window side (>= P), N patches (= (S/P)^2), T tokens (= N + 1,
// the class token first), C d_model, K classes, Q patch vector length (= Ch·W·W).

/// The shape and options of a vision transformer (ViT / DeiT).
public struct ViTConfig: Sendable, Equatable {
    public var imageSize: Int
    public var channels: Int
    public var patch: Int
    /// Side of the window each patch token sees, centred on its P × P patch and zero-padded at the
    /// border: W = P is the plain ViT; W > P overlaps neighbouring patches (as in PVTv2's overlapping
    /// patch embedding), a locality prior that small datasets reward. Conv2d(kernel W, stride P,
    /// padding (W − P) / 2) in PyTorch.
    public var patchWindow: Int
    public var classes: Int
    public var layers: Int
    public var dModel: Int
    public var heads: Int
    public var dFF: Int
    public var activation: Activation = .gelu
    public var attention: AttentionKind = .fourier(FourierSpec(), rInit: 1.0)
    public var dropout: Float = 0
    /// Stochastic depth of the last block (DeiT-tiny: 0.1).
    public var dropPath: Float = 0.1
    public var initStd: Float = 0.02

    public init(imageSize: Int, channels: Int, patch: Int, classes: Int, layers: Int, dModel: Int, heads: Int, dFF: Int)
    {
        self.imageSize = imageSize; self.channels = channels; self.patch = patch; self.patchWindow = patch
        self.classes = classes; self.layers = layers; self.dModel = dModel; self.heads = heads; self.dFF = dFF
    }

    public var patchesPerSide: Int { imageSize / patch }
    public var patches: Int { patchesPerSide * patchesPerSide }
    /// Tokens per image: the class token, then the patches in row-major order.
    public var tokens: Int { patches + 1 }
    public var patchVector: Int { channels * patchWindow * patchWindow }
    /// Zero rows/columns around the image that windows reach beyond it.
    public var patchPadding: Int { (patchWindow - patch) / 2 }

    /// Pre-LN, no mask.
    public var stackConfig: StackConfig {
        StackConfig(
            layers: layers, dModel: dModel, heads: heads, dFF: dFF, seq: tokens, norm: .pre,
            activation: activation, attention: attention, causal: false, dropout: dropout, dropPath: dropPath)
    }

    /// Problems that make the configuration unusable, each a sentence naming the field.
    public func problems() -> [String] {
        var p: [String] = []
        if patch < 1 || imageSize % max(patch, 1) != 0 {
            p.append("model.patch (\(patch)) must divide the image size (\(imageSize))")
        }
        if patchWindow < patch || (patchWindow - patch) % 2 != 0 {
            p.append("model.patch_window (\(patchWindow)) must be model.patch (\(patch)) plus an even number of pixels")
        }
        if classes < 2 { p.append("the data must have at least 2 classes (got \(classes))") }
        if layers < 1 { p.append("model.layers must be at least 1 (got \(layers))") }
        if heads < 1 || dModel % max(heads, 1) != 0 {
            p.append(
                "model.heads (\(heads)) must divide model.d_model "
                    + "(\(dModel))")
        }
        if !(0..<1).contains(dropout) { p.append("model.dropout must be in [0, 1) (got \(dropout))") }
        if !(0..<1).contains(dropPath) { p.append("model.drop_path must be in [0, 1) (got \(dropPath))") }
        return p
    }
}

/// A ViT classifier with an explicit forward and backward, named like timm's DeiT so exported
/// weights load in PyTorch: `patch_embed.proj.weight` [C, Ch, W, W] (a Conv2d with stride P, run
/// here as one GEMM over unfolded patch windows), `patch_embed.proj.bias`, `cls_token` [1, 1, C],
/// `pos_embed` [1, T, C], `blocks.*`, `norm.*`, `head.weight` [K, C], `head.bias` [K].
public final class VisionTransformer: TrainableModel {
    public let config: ViTConfig
    public let layout: ParameterLayout
    public let params: FlatBuffer
    public let grads: FlatBuffer
    public let maxBatch: Int
    public let stack: TransformerStack
    let threads: Int

    let patchW: Int, patchB: Int, cls: Int, pos: Int, normW: Int, normB: Int, headW: Int, headB: Int

    let arena = Arena()
    let patches: UnsafeMutablePointer<Float>  // (B·N, Q)
    let patchOut: UnsafeMutablePointer<Float>  // (B·N, C)
    let tokens: UnsafeMutablePointer<Float>  // (B, T, C)
    let clsOut, normOut: UnsafeMutablePointer<Float>  // (B, C)
    let normMean, normRstd: UnsafeMutablePointer<Float>  // (B)
    let dNorm, dCls: UnsafeMutablePointer<Float>  // (B, C)
    let dPatch: UnsafeMutablePointer<Float>  // (B·N, C)
    /// Logits (B, K) of the last forward; in training they are replaced by their gradient.
    public let logits: UnsafeMutablePointer<Float>
    let rowLoss: UnsafeMutablePointer<Double>  // (B)

    var lastBatch = 0
    var lastTrain = false

    public var attentionRowSum: [Double] { stack.attentionRowSum }

    /// `sharedParams`: another model's parameters to read instead of an own buffer (a replica
    /// that trains on a slice of the batch, see `ModelReplicas`).
    public init(config: ViTConfig, maxBatch: Int, threads: Int = 1, sharedParams: FlatBuffer? = nil) {
        precondition(config.problems().isEmpty, config.problems().joined(separator: "; "))
        self.config = config
        self.maxBatch = maxBatch
        self.threads = max(1, threads)
        let C = config.dModel, T = config.tokens, W = config.patchWindow, K = config.classes
        var lay = ParameterLayout()
        patchW = lay.add("patch_embed.proj.weight", [C, config.channels, W, W], decays: true).offset
        patchB = lay.add("patch_embed.proj.bias", [C], decays: false).offset
        // timm excludes cls_token and pos_embed from weight decay.
        cls = lay.add("cls_token", [1, 1, C], decays: false).offset
        pos = lay.add("pos_embed", [1, T, C], decays: false).offset
        stack = TransformerStack(config: config.stackConfig, maxBatch: maxBatch, layout: &lay, threads: self.threads)
        normW = lay.add("norm.weight", [C], decays: false).offset
        normB = lay.add("norm.bias", [C], decays: false).offset
        headW = lay.add("head.weight", [K, C], decays: true).offset
        headB = lay.add("head.bias", [K], decays: false).offset
        layout = lay
        precondition(sharedParams.map { $0.count == lay.count } ?? true, "shared parameters of another shape")
        params = sharedParams ?? FlatBuffer(count: lay.count)
        grads = FlatBuffer(count: lay.count)

        let BN = maxBatch * config.patches, B = maxBatch
        let a = arena
        let h = [BN * config.patchVector, BN * C, B * T * C, B * C, B * C, B, B, B * C, B * C, BN * C, B * K].map {
            a.reserve($0)
        }
        a.commit()
        patches = a.pointer(h[0]); patchOut = a.pointer(h[1]); tokens = a.pointer(h[2])
        clsOut = a.pointer(h[3]); normOut = a.pointer(h[4]); normMean = a.pointer(h[5]); normRstd = a.pointer(h[6])
        dNorm = a.pointer(h[7]); dCls = a.pointer(h[8]); dPatch = a.pointer(h[9]); logits = a.pointer(h[10])
        rowLoss = .allocate(capacity: maxBatch)
    }

    deinit { rowLoss.deallocate() }

    /// Bytes held for activations and kernel workspaces (parameters and gradients excluded).
    public var activationBytes: Int { arena.floats * 4 + stack.activationBytes + maxBatch * 8 }

    /// Weights ~ N(0, initStd²) (timm's DeiT uses a truncated normal of the same std), biases 0,
    /// LayerNorm gains 1, R = rInit.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: SplitMix64.key(seed, 0x1A17))
        let p = params.pointer
        for t in layout.tensors {
            let n = t.name
            if n.hasSuffix(".bias") {
                for i in t.range { p[i] = 0 }
            } else if (n.contains("ln") || n.hasPrefix("norm.")) && t.shape.count == 1 {
                for i in t.range { p[i] = 1 }
            } else if n.hasSuffix("attn.R") {
                if case .fourier(_, let r0) = config.attention { for i in t.range { p[i] = r0 } }
            } else {
                for i in t.range { p[i] = Float(rng.nextNormal()) * config.initStd }
            }
        }
    }

    // MARK: Forward

    /// Runs the model on images (B, Ch, S, S) and returns the summed cross-entropy against soft
    /// targets (B, K) (rows of class probabilities: one-hot, smoothed or mixed).
    /// In `.train` mode the logits are replaced by the gradient of `lossScale * loss`; the keys
    /// (one per image) drive drop-path and dropout.
    public func forward(
        images: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch B: Int,
        mode: LanguageModel.Mode
    ) -> Double {
        precondition(B <= maxBatch, "micro-batch \(B) exceeds the model's allocation \(maxBatch)")
        let C = config.dModel, T = config.tokens, N = config.patches, K = config.classes
        let p = params.pointer
        var keys: UnsafePointer<UInt64>? = nil
        var scale: Float? = nil
        if case .train(let s, let k) = mode { keys = k; scale = s }
        lastBatch = B
        lastTrain = scale != nil

        unfoldPatchWindows(images, batch: B)
        linearForward(
            patchOut, patches, p + patchW, p + patchB, M: B * N, K: config.patchVector, N: C, threads: threads)
        // Tokens: [cls, patch 0, ..., patch N-1] + positions.
        parallelTasks(B, threads: threads) { b, _ in
            let x = tokens + b * T * C
            for c in 0..<C { x[c] = p[cls + c] + p[pos + c] }
            for n in 0..<N {
                let row = x + (n + 1) * C, src = patchOut + (b * N + n) * C, pe = p + pos + (n + 1) * C
                for c in 0..<C { row[c] = src[c] + pe[c] }
            }
        }
        let out = stack.forward(tokens, batch: B, params: p, keys: keys)
        // Head on the class token only (LayerNorm is per token, so this equals normalising all).
        for b in 0..<B { (clsOut + b * C).update(from: out + b * T * C, count: C) }
        layerNormForward(
            normOut, mean: normMean, rstd: normRstd, clsOut, weight: p + normW, bias: p + normB, M: B, C: C)
        linearForward(logits, normOut, p + headW, p + headB, M: B, K: C, N: K)
        guard let scale else { return softTargetLoss(logits: logits, targets: targets, M: B, V: K, rowLoss: rowLoss) }
        return softCrossEntropy(logits: logits, targets: targets, M: B, V: K, dscale: scale, rowLoss: rowLoss)
    }

    /// patches (B·N, Q) ← the W × W window of every patch (b, gy, gx), ordered (channel, y, x) as
    /// Conv2d's weight is; pixels outside the image are 0.
    func unfoldPatchWindows(_ images: UnsafePointer<Float>, batch B: Int) {
        let S = config.imageSize, P = config.patch, W = config.patchWindow, pad = config.patchPadding
        let G = config.patchesPerSide, N = config.patches, Ch = config.channels, Q = config.patchVector
        parallelTasks(B, threads: threads) { b, _ in
            for gy in 0..<G {
                for gx in 0..<G {
                    var dst = patches + ((b * N) + gy * G + gx) * Q
                    let x0 = gx * P - pad, xs = max(0, -x0), xe = min(W, S - x0)  // in-image columns
                    for c in 0..<Ch {
                        for y in 0..<W {
                            let sy = gy * P - pad + y
                            dst.update(repeating: 0, count: W)
                            if (0..<S).contains(sy) && xe > xs {
                                (dst + xs).update(from: images + ((b * Ch + c) * S + sy) * S + x0 + xs, count: xe - xs)
                            }
                            dst += W
                        }
                    }
                }
            }
        }
    }

    // MARK: Backward

    /// The ranges of the flat gradient buffer that `backward` completes, in the order it completes
    /// them: the head (norm, head), block L-1, ..., block 0, then the embeddings.
    public var gradientStages: [Range<Int>] {
        stack.gradientStages(total: layout.count)
    }

    /// Accumulates into `grads` the gradient of `lossScale * loss` of the preceding `.train` forward;
    /// `onStageDone(k)` is called when stage k of `gradientStages` is final.
    public func backward(onStageDone: ((Int) throws -> Void)? = nil) rethrows {
        precondition(lastTrain, "backward needs a preceding forward in .train mode")
        let B = lastBatch, C = config.dModel, T = config.tokens, N = config.patches, K = config.classes
        let p = params.pointer, g = grads.pointer
        dNorm.update(repeating: 0, count: B * C)
        linearBackward(
            dinp: dNorm, dweight: g + headW, dbias: g + headB, dout: logits, inp: normOut, weight: p + headW, M: B,
            K: C, N: K)
        dCls.update(repeating: 0, count: B * C)
        layerNormBackward(
            dx: dCls, dweight: g + normW, dbias: g + normB, dy: dNorm, x: clsOut, weight: p + normW,
            mean: normMean, rstd: normRstd, M: B, C: C)
        let dOut = stack.outputGradient
        parallelTasks(B, threads: threads) { b, _ in
            (dOut + b * T * C).update(from: dCls + b * C, count: C)
            (dOut + b * T * C + C).update(repeating: 0, count: (T - 1) * C)
        }
        try onStageDone?(0)
        let L = config.layers
        let dx = try stack.backward(params: p, grads: g) { l in try onStageDone?(L - l) }
        // Class token and positions: each element sums over the batch in order, whichever worker
        // takes it (the same bits for any thread count).
        parallelRanges(T * C, threads: threads, grain: 256) { r in
            for i in r {
                var sum = g[pos + i]
                for b in 0..<B { sum += dx[b * T * C + i] }
                g[pos + i] = sum
            }
        }
        parallelRanges(C, threads: threads, grain: 64) { r in
            for c in r { for b in 0..<B { g[cls + c] += dx[b * T * C + c] } }
        }
        parallelTasks(B, threads: threads) { b, _ in
            (dPatch + b * N * C).update(from: dx + b * T * C + C, count: N * C)
        }
        linearBackward(
            dinp: nil, dweight: g + patchW, dbias: g + patchB, dout: dPatch, inp: patches, weight: p + patchW,
            M: B * N, K: config.patchVector, N: C, threads: threads)
        try onStageDone?(L + 1)
    }

}
