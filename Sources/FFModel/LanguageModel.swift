import Foundation
import FFKernels

// Letters used in shape comments: B micro-batch (sequences), T context, C d_model, F d_ff,
// H heads, V vocabulary, L layers.

/// A decoder-only Transformer language model with an explicit forward and backward.
///
/// Parameters and gradients live in two flat buffers described by `layout`. Every activation is
/// carved out of one arena at init for micro-batches of up to `maxBatch` sequences; `forward`
/// and `backward` allocate nothing.
public final class LanguageModel {
    public let config: LMConfig
    public let layout: ParameterLayout
    public let params: FlatBuffer
    public let grads: FlatBuffer
    public let maxBatch: Int
    let kernels: AttentionKernels

    // Parameter offsets, resolved once.
    struct BlockParams {
        var ln1w = 0, ln1b = 0, qkvW = 0, qkvB = 0, projW = 0, projB = 0, R = 0
        var ln2w = 0, ln2b = 0, fc1W = 0, fc1B = 0, fc2W = 0, fc2B = 0
    }
    let tokEmb: Int, posEmb: Int?, lnfW: Int?, lnfB: Int?, head: Int
    let blockParams: [BlockParams]

    // Activations of one block.
    struct BlockActs {
        var ln1Out, ln1Mean, ln1Rstd: UnsafeMutablePointer<Float>   // (B,T,C) (B,T) (B,T)
        var qkv: UnsafeMutablePointer<Float>                          // (B,T,3C)
        var att: UnsafeMutablePointer<Float>                          // (B,T,C)
        var attStat: UnsafeMutablePointer<Float>                      // (B,H,T)
        var proj, projMask: UnsafeMutablePointer<Float>               // (B,T,C)
        var res1: UnsafeMutablePointer<Float>                         // (B,T,C)
        var ln2Out, ln2Mean, ln2Rstd: UnsafeMutablePointer<Float>
        var fc1, act: UnsafeMutablePointer<Float>                     // (B,T,F)
        var fc2, fc2Mask: UnsafeMutablePointer<Float>                 // (B,T,C)
        var res2: UnsafeMutablePointer<Float>                         // (B,T,C)
    }
    var acts: [BlockActs] = []
    let arena = Arena()
    let embOut, embMask: UnsafeMutablePointer<Float>       // (B,T,C)
    let lnfOut, lnfMean, lnfRstd: UnsafeMutablePointer<Float>
    let logits: UnsafeMutablePointer<Float>                // (B,T,V)
    let posTable: UnsafeMutablePointer<Float>              // (T,C) sinusoids
    // Gradient scratch shared by all layers.
    let dA, dB, dRes, dH, dTmp, dAtt: UnsafeMutablePointer<Float>   // (B,T,C)
    let dQKV: UnsafeMutablePointer<Float>                           // (B,T,3C)
    let dF1, dF2: UnsafeMutablePointer<Float>                       // (B,T,F)
    let targetsBuf: UnsafeMutablePointer<Int32>                     // (B,T)
    let tokensBuf: UnsafeMutablePointer<Int32>                      // (B,T)
    let rowLoss: UnsafeMutablePointer<Double>                       // (B,T)
    let threads: Int

    // State of the last forward, for backward.
    var lastBatch = 0
    var lastTrain = false

    /// Statistics of the last forward: mean over rows of Σ_j A_ij per layer (1 is healthy; Fourier
    /// rows whose Σ_j W falls below eps approach 0).
    public private(set) var attentionRowSum: [Double]

    public init(config: LMConfig, maxBatch: Int, threads: Int = 1) {
        precondition(config.problems().isEmpty, config.problems().joined(separator: "; "))
        self.config = config
        self.maxBatch = maxBatch
        self.threads = max(1, threads)
        rowLoss = .allocate(capacity: maxBatch * config.context)
        let C = config.dModel, F = config.dFF, V = config.vocabSize, T = config.context, L = config.layers
        var lay = ParameterLayout()
        tokEmb = lay.add("tok_emb.weight", [V, C], decays: true).offset
        posEmb = config.positions == .learned ? lay.add("pos_emb.weight", [T, C], decays: true).offset : nil
        var bps: [BlockParams] = []
        for l in 0..<L {
            let p = "blocks.\(l)."
            var b = BlockParams()
            b.ln1w = lay.add(p + "ln1.weight", [C], decays: false).offset
            b.ln1b = lay.add(p + "ln1.bias", [C], decays: false).offset
            b.qkvW = lay.add(p + "attn.qkv.weight", [3 * C, C], decays: true).offset
            b.qkvB = lay.add(p + "attn.qkv.bias", [3 * C], decays: false).offset
            b.projW = lay.add(p + "attn.proj.weight", [C, C], decays: true).offset
            b.projB = lay.add(p + "attn.proj.bias", [C], decays: false).offset
            if case .fourier(let spec, _) = config.attention {
                b.R = lay.add(p + "attn.R", [spec.rMode.count(heads: config.heads, headDim: config.headDim)], decays: false).offset
            }
            b.ln2w = lay.add(p + "ln2.weight", [C], decays: false).offset
            b.ln2b = lay.add(p + "ln2.bias", [C], decays: false).offset
            b.fc1W = lay.add(p + "mlp.fc1.weight", [F, C], decays: true).offset
            b.fc1B = lay.add(p + "mlp.fc1.bias", [F], decays: false).offset
            b.fc2W = lay.add(p + "mlp.fc2.weight", [C, F], decays: true).offset
            b.fc2B = lay.add(p + "mlp.fc2.bias", [C], decays: false).offset
            bps.append(b)
        }
        blockParams = bps
        if config.norm == .pre {
            lnfW = lay.add("ln_f.weight", [C], decays: false).offset
            lnfB = lay.add("ln_f.bias", [C], decays: false).offset
        } else {
            lnfW = nil; lnfB = nil
        }
        head = config.tieEmbeddings ? tokEmb : lay.add("lm_head.weight", [V, C], decays: true).offset
        layout = lay
        params = FlatBuffer(count: lay.count)
        grads = FlatBuffer(count: lay.count)
        kernels = AttentionKernels(maxSeq: T, headDim: config.headDim, threads: threads)
        kernels.reserve(AttentionShape(batch: maxBatch, seq: T, heads: config.heads, headDim: config.headDim, causal: true))

        // Activations.
        let BT = maxBatch * T, H = config.heads
        let a = arena
        var blockHandles: [[Int]] = []
        for _ in 0..<L {
            let sizes = [BT * C, BT, BT, BT * 3 * C, BT * C, maxBatch * H * T, BT * C, BT * C, BT * C,
                         BT * C, BT, BT, BT * F, BT * F, BT * C, BT * C, BT * C]
            blockHandles.append(sizes.map { a.reserve($0) })
        }
        let hEmb = a.reserve(BT * C), hEmbMask = a.reserve(BT * C)
        let hLnf = a.reserve(BT * C), hLnfM = a.reserve(BT), hLnfR = a.reserve(BT)
        let hLogits = a.reserve(BT * V), hPos = a.reserve(T * C)
        let hd = (0..<6).map { _ in a.reserve(BT * C) }
        let hQKV = a.reserve(BT * 3 * C), hF1 = a.reserve(BT * F), hF2 = a.reserve(BT * F)
        let hTok = a.reserve(BT), hTgt = a.reserve(BT)
        a.commit()
        for hs in blockHandles {
            let p = hs.map { a.pointer($0) }
            acts.append(BlockActs(ln1Out: p[0], ln1Mean: p[1], ln1Rstd: p[2], qkv: p[3], att: p[4], attStat: p[5],
                                  proj: p[6], projMask: p[7], res1: p[8], ln2Out: p[9], ln2Mean: p[10],
                                  ln2Rstd: p[11], fc1: p[12], act: p[13], fc2: p[14], fc2Mask: p[15], res2: p[16]))
        }
        embOut = a.pointer(hEmb); embMask = a.pointer(hEmbMask)
        lnfOut = a.pointer(hLnf); lnfMean = a.pointer(hLnfM); lnfRstd = a.pointer(hLnfR)
        logits = a.pointer(hLogits); posTable = a.pointer(hPos)
        dA = a.pointer(hd[0]); dB = a.pointer(hd[1]); dRes = a.pointer(hd[2]); dH = a.pointer(hd[3])
        dTmp = a.pointer(hd[4]); dAtt = a.pointer(hd[5])
        dQKV = a.pointer(hQKV); dF1 = a.pointer(hF1); dF2 = a.pointer(hF2)
        // Int32 buffers share Float storage (same size).
        tokensBuf = UnsafeMutableRawPointer(a.pointer(hTok)).assumingMemoryBound(to: Int32.self)
        targetsBuf = UnsafeMutableRawPointer(a.pointer(hTgt)).assumingMemoryBound(to: Int32.self)
        attentionRowSum = [Double](repeating: 0, count: L)
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
    public var activationBytes: Int { arena.floats * 4 + kernels.workspaceBytes + maxBatch * config.context * 8 }

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
                let std = (n.hasSuffix("attn.proj.weight") || n.hasSuffix("mlp.fc2.weight")) ? residualStd : config.initStd
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
        /// not depend on which rank or micro-batch it lands in); logits are replaced by the
        /// gradient of `lossScale * loss` for the following `backward`.
        case train(lossScale: Float, dropoutKeys: UnsafePointer<UInt64>)
    }

    /// Runs the model on tokens (B, T) and returns the summed cross-entropy (nats) over targets
    /// (B, T); a target < 0 is ignored.
    public func forward(tokens: UnsafePointer<Int32>, targets: UnsafePointer<Int32>, batch B: Int, mode: Mode) -> Double {
        precondition(B <= maxBatch, "micro-batch \(B) exceeds the model's allocation \(maxBatch)")
        let T = config.context, C = config.dModel, V = config.vocabSize, BT = B * T
        let p = params.pointer
        tokensBuf.update(from: tokens, count: BT)
        targetsBuf.update(from: targets, count: BT)
        var keys: UnsafePointer<UInt64>? = nil
        var scale: Float? = nil
        if case .train(let s, let k) = mode { keys = k; scale = s }
        lastBatch = B
        lastTrain = scale != nil
        let dropout = lastTrain ? config.dropout : 0

        // Embedding.
        let embScale: Float = config.scaleEmbeddings ? Float(C).squareRoot() : 1
        for b in 0..<B {
            for t in 0..<T {
                let tok = Int(tokens[b * T + t])
                precondition(tok >= 0 && tok < V, "token \(tok) outside the vocabulary (\(V))")
                let out = embOut + (b * T + t) * C, e = p + tokEmb + tok * C
                let pos = posEmb.map { p + $0 + t * C } ?? (posTable + t * C)
                for c in 0..<C { out[c] = e[c] * embScale + pos[c] }
            }
        }
        applyDropout(embOut, mask: embMask, rate: dropout, keys: keys, site: 0, B: B)

        var x = UnsafeMutablePointer(embOut)
        for l in 0..<config.layers {
            x = blockForward(l, x: x, B: B, dropout: dropout, keys: keys)
        }
        var final = x
        if let lnfW, let lnfB {
            layerNormForward(lnfOut, mean: lnfMean, rstd: lnfRstd, x, weight: p + lnfW, bias: p + lnfB, M: BT, C: C)
            final = lnfOut
        }
        linearForward(logits, final, p + head, nil, M: BT, K: C, N: V)
        return crossEntropy(logits: logits, targets: targets, M: BT, V: V, dscale: scale, rowLoss: rowLoss, threads: threads)
    }

    /// Multiplies x (B,T,C) in place by a fresh dropout mask and keeps the mask for backward.
    private func applyDropout(_ x: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>, rate: Float,
                              keys: UnsafePointer<UInt64>?, site: UInt64, B: Int) {
        guard rate > 0, let keys else { return }
        let n = config.context * config.dModel
        let keep = 1 / (1 - rate)
        for b in 0..<B {
            var rng = SplitMix64(seed: SplitMix64.key(keys[b], site))
            let m = mask + b * n, xs = x + b * n
            for i in 0..<n {
                m[i] = rng.nextFloat() < rate ? 0 : keep
                xs[i] *= m[i]
            }
        }
    }

    private func blockForward(_ l: Int, x: UnsafeMutablePointer<Float>, B: Int, dropout: Float,
                              keys: UnsafePointer<UInt64>?) -> UnsafeMutablePointer<Float> {
        let T = config.context, C = config.dModel, F = config.dFF, BT = B * T
        let w = blockParams[l], a = acts[l], p = params.pointer
        let pre = config.norm == .pre
        let shape = AttentionShape(batch: B, seq: T, heads: config.heads, headDim: config.headDim, causal: true)

        var attnIn = x
        if pre {
            layerNormForward(a.ln1Out, mean: a.ln1Mean, rstd: a.ln1Rstd, x, weight: p + w.ln1w, bias: p + w.ln1b, M: BT, C: C)
            attnIn = a.ln1Out
        }
        linearForward(a.qkv, attnIn, p + w.qkvW, p + w.qkvB, M: BT, K: C, N: 3 * C)
        switch config.attention {
        case .softmax:
            kernels.softmaxForward(out: a.att, rowLSE: a.attStat, qkv: a.qkv, shape: shape)
            attentionRowSum[l] = 1
        case .fourier(let spec, _):
            kernels.fourierForward(out: a.att, rowSum: a.attStat, qkv: a.qkv, R: p + w.R, spec: spec, shape: shape)
            // Row sum of A is (S - eps) / S per row.
            var s = 0.0
            let n = B * config.heads * T
            for i in 0..<n { let S = a.attStat[i]; s += S > 0 ? Double((S - spec.eps) / S) : 0 }
            attentionRowSum[l] = s / Double(n)
        }
        linearForward(a.proj, a.att, p + w.projW, p + w.projB, M: BT, K: C, N: C)
        applyDropout(a.proj, mask: a.projMask, rate: dropout, keys: keys, site: UInt64(2 * l + 1), B: B)
        for i in 0..<(BT * C) { a.res1[i] = x[i] + a.proj[i] }
        var h = a.res1
        if !pre {
            layerNormForward(a.ln1Out, mean: a.ln1Mean, rstd: a.ln1Rstd, a.res1, weight: p + w.ln1w, bias: p + w.ln1b, M: BT, C: C)
            h = a.ln1Out
        }
        var ffIn = h
        if pre {
            layerNormForward(a.ln2Out, mean: a.ln2Mean, rstd: a.ln2Rstd, h, weight: p + w.ln2w, bias: p + w.ln2b, M: BT, C: C)
            ffIn = a.ln2Out
        }
        linearForward(a.fc1, ffIn, p + w.fc1W, p + w.fc1B, M: BT, K: C, N: F)
        activationForward(config.activation, a.act, a.fc1, count: BT * F)
        linearForward(a.fc2, a.act, p + w.fc2W, p + w.fc2B, M: BT, K: F, N: C)
        applyDropout(a.fc2, mask: a.fc2Mask, rate: dropout, keys: keys, site: UInt64(2 * l + 2), B: B)
        for i in 0..<(BT * C) { a.res2[i] = h[i] + a.fc2[i] }
        if pre { return a.res2 }
        layerNormForward(a.ln2Out, mean: a.ln2Mean, rstd: a.ln2Rstd, a.res2, weight: p + w.ln2w, bias: p + w.ln2b, M: BT, C: C)
        return a.ln2Out
    }

    // MARK: Backward

    /// The ranges of the flat gradient buffer that `backward` completes, in the order it completes
    /// them: the head (ln_f, lm_head), block L-1, ..., block 0, then the embeddings. Consecutive
    /// stages are adjacent, so buckets cut from them are contiguous.
    public var gradientStages: [Range<Int>] {
        var stages: [Range<Int>] = []
        let firstBlock = layout["blocks.0.ln1.weight"]!.offset
        let blockStarts = (0..<config.layers).map { layout["blocks.\($0).ln1.weight"]!.offset }
        let afterBlocks = config.layers > 0 ? (layout.tensors.first { $0.name.hasPrefix("blocks.\(config.layers - 1).") && $0.name.hasSuffix("mlp.fc2.bias") }!.range.upperBound) : firstBlock
        stages.append(afterBlocks..<layout.count)
        for l in stride(from: config.layers - 1, through: 0, by: -1) {
            let end = l == config.layers - 1 ? afterBlocks : blockStarts[l + 1]
            stages.append(blockStarts[l]..<end)
        }
        stages.append(0..<firstBlock)
        return stages
    }

    /// Accumulates into `grads` the gradient of `lossScale * loss` of the preceding `.train` forward.
    /// `onStageDone(k)` is called as soon as stage k of `gradientStages` holds its final gradient.
    public func backward(onStageDone: ((Int) throws -> Void)? = nil) rethrows {
        precondition(lastTrain, "backward needs a preceding forward in .train mode")
        let B = lastBatch, T = config.context, C = config.dModel, V = config.vocabSize, BT = B * T
        let p = params.pointer, g = grads.pointer
        let pre = config.norm == .pre
        let dropout = config.dropout

        // Head: logits now hold dlogits (B,T,V).
        let blockOut = layerOutput(config.layers - 1)
        let final = pre ? UnsafeMutablePointer(lnfOut) : blockOut
        dA.update(repeating: 0, count: BT * C)
        linearBackward(dinp: dA, dweight: g + head, dbias: nil, dout: logits, inp: final, weight: p + head, M: BT, K: C, N: V)
        var dy = dA, dx = dB
        if let lnfW, let lnfB {
            dB.update(repeating: 0, count: BT * C)
            layerNormBackward(dx: dB, dweight: g + lnfW, dbias: g + lnfB, dy: dA, x: blockOut, weight: p + lnfW,
                              mean: lnfMean, rstd: lnfRstd, M: BT, C: C)
            dy = dB; dx = dA
        }
        try onStageDone?(0)
        for l in stride(from: config.layers - 1, through: 0, by: -1) {
            blockBackward(l, dy: dy, dx: dx, B: B, dropout: dropout)
            swap(&dy, &dx)
            try onStageDone?(config.layers - l)
        }
        // Embedding: dy holds d(embOut after dropout).
        if dropout > 0 { for i in 0..<(BT * C) { dy[i] *= embMask[i] } }
        let embScale: Float = config.scaleEmbeddings ? Float(C).squareRoot() : 1
        for b in 0..<B {
            for t in 0..<T {
                let tok = Int(tokensBuf[b * T + t])
                let src = dy + (b * T + t) * C, e = g + tokEmb + tok * C
                for c in 0..<C { e[c] += src[c] * embScale }
                if let posEmb { let pe = g + posEmb + t * C; for c in 0..<C { pe[c] += src[c] } }
            }
        }
        try onStageDone?(config.layers + 1)
    }

    private func layerOutput(_ l: Int) -> UnsafeMutablePointer<Float> {
        config.norm == .pre ? acts[l].res2 : acts[l].ln2Out
    }

    private func layerInput(_ l: Int) -> UnsafeMutablePointer<Float> {
        l == 0 ? embOut : layerOutput(l - 1)
    }

    /// dy: gradient of the block's output; writes (overwrites) the gradient of its input into dx.
    private func blockBackward(_ l: Int, dy: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>, B: Int, dropout: Float) {
        let T = config.context, C = config.dModel, F = config.dFF, BT = B * T, n = BT * C
        let w = blockParams[l], a = acts[l], p = params.pointer, g = grads.pointer
        let pre = config.norm == .pre
        let x = layerInput(l)
        let shape = AttentionShape(batch: B, seq: T, heads: config.heads, headDim: config.headDim, causal: true)

        // y = pre ? res2 : LN2(res2), res2 = h + drop(fc2(act(fc1(ffIn)))).
        let dres2: UnsafeMutablePointer<Float>
        if pre {
            dres2 = dy
        } else {
            dRes.update(repeating: 0, count: n)
            layerNormBackward(dx: dRes, dweight: g + w.ln2w, dbias: g + w.ln2b, dy: dy, x: a.res2, weight: p + w.ln2w,
                              mean: a.ln2Mean, rstd: a.ln2Rstd, M: BT, C: C)
            dres2 = dRes
        }
        dH.update(from: dres2, count: n)                    // residual path
        if dropout > 0 { for i in 0..<n { dTmp[i] = dres2[i] * a.fc2Mask[i] } } else { dTmp.update(from: dres2, count: n) }
        dF2.update(repeating: 0, count: BT * F)
        linearBackward(dinp: dF2, dweight: g + w.fc2W, dbias: g + w.fc2B, dout: dTmp, inp: a.act, weight: p + w.fc2W, M: BT, K: F, N: C)
        dF1.update(repeating: 0, count: BT * F)
        activationBackward(config.activation, dx: dF1, dy: dF2, x: a.fc1, count: BT * F)
        let h = pre ? a.res1 : a.ln1Out
        let ffIn = pre ? a.ln2Out : h
        if pre {
            dTmp.update(repeating: 0, count: n)
            linearBackward(dinp: dTmp, dweight: g + w.fc1W, dbias: g + w.fc1B, dout: dF1, inp: ffIn, weight: p + w.fc1W, M: BT, K: C, N: F)
            layerNormBackward(dx: dH, dweight: g + w.ln2w, dbias: g + w.ln2b, dy: dTmp, x: h, weight: p + w.ln2w,
                              mean: a.ln2Mean, rstd: a.ln2Rstd, M: BT, C: C)
        } else {
            linearBackward(dinp: dH, dweight: g + w.fc1W, dbias: g + w.fc1B, dout: dF1, inp: ffIn, weight: p + w.fc1W, M: BT, K: C, N: F)
        }
        // h = pre ? res1 : LN1(res1), res1 = x + drop(proj(att(qkv(attnIn)))).
        let dres1: UnsafeMutablePointer<Float>
        if pre {
            dres1 = dH
        } else {
            dRes.update(repeating: 0, count: n)
            layerNormBackward(dx: dRes, dweight: g + w.ln1w, dbias: g + w.ln1b, dy: dH, x: a.res1, weight: p + w.ln1w,
                              mean: a.ln1Mean, rstd: a.ln1Rstd, M: BT, C: C)
            dres1 = dRes
        }
        dx.update(from: dres1, count: n)                   // residual path
        if dropout > 0 { for i in 0..<n { dTmp[i] = dres1[i] * a.projMask[i] } } else { dTmp.update(from: dres1, count: n) }
        dAtt.update(repeating: 0, count: n)
        linearBackward(dinp: dAtt, dweight: g + w.projW, dbias: g + w.projB, dout: dTmp, inp: a.att, weight: p + w.projW, M: BT, K: C, N: C)
        dQKV.update(repeating: 0, count: 3 * n)
        switch config.attention {
        case .softmax:
            kernels.softmaxBackward(dqkv: dQKV, dout: dAtt, out: a.att, qkv: a.qkv, rowLSE: a.attStat, shape: shape)
        case .fourier(let spec, _):
            kernels.fourierBackward(dqkv: dQKV, dR: g + w.R, dout: dAtt, out: a.att, qkv: a.qkv, R: p + w.R,
                                    rowSum: a.attStat, spec: spec, shape: shape)
        }
        if pre {
            dTmp.update(repeating: 0, count: n)
            linearBackward(dinp: dTmp, dweight: g + w.qkvW, dbias: g + w.qkvB, dout: dQKV, inp: a.ln1Out, weight: p + w.qkvW, M: BT, K: C, N: 3 * C)
            layerNormBackward(dx: dx, dweight: g + w.ln1w, dbias: g + w.ln1b, dy: dTmp, x: x, weight: p + w.ln1w,
                              mean: a.ln1Mean, rstd: a.ln1Rstd, M: BT, C: C)
        } else {
            linearBackward(dinp: dx, dweight: g + w.qkvW, dbias: g + w.qkvB, dout: dQKV, inp: x, weight: p + w.qkvW, M: BT, K: C, N: 3 * C)
        }
    }
}

extension LanguageModel {
    /// The attention maps A (H maps of T x T, row-major, in Double) of `layer` for sequence `b`
    /// of the last forward pass, recomputed from its saved q, k, v (analysis only; allocates).
    public func attentionMaps(layer: Int, sequence b: Int) -> [[Double]] {
        precondition(b < lastBatch, "sequence \(b) not in the last forward's batch of \(lastBatch)")
        let T = config.context, C = config.dModel, H = config.heads, D = config.headDim
        let qkv = acts[layer].qkv, p = params.pointer
        var maps: [[Double]] = []
        for h in 0..<H {
            func slice(_ off: Int) -> [Double] {
                (0..<T).flatMap { t in (0..<D).map { d in Double(qkv[(b * T + t) * 3 * C + off + h * D + d]) } }
            }
            let q = slice(0), k = slice(C), v = slice(2 * C)
            switch config.attention {
            case .fourier(let spec, _):
                let R = p + blockParams[layer].R
                let r: [Double] = (0..<D).map { d in
                    switch spec.rMode {
                    case .scalar: Double(R[0])
                    case .perDim: Double(R[d])
                    case .perHead: Double(R[h])
                    }
                }
                maps.append(FourierReference.forward(q: q, k: k, v: v, r: r, T: T, D: D, Dv: D, p: spec.p,
                                                     eps: Double(spec.eps), causal: true).a)
            case .softmax:
                var a = [Double](repeating: 0, count: T * T)
                let scale = 1 / Double(D).squareRoot()
                for i in 0..<T {
                    var mx = -Double.infinity
                    for j in 0...i {
                        var s = 0.0
                        for d in 0..<D { s += q[i * D + d] * k[j * D + d] }
                        a[i * T + j] = s * scale; mx = max(mx, s * scale)
                    }
                    var sum = 0.0
                    for j in 0...i { a[i * T + j] = exp(a[i * T + j] - mx); sum += a[i * T + j] }
                    for j in 0...i { a[i * T + j] /= sum }
                }
                maps.append(a)
            }
        }
        return maps
    }

    /// The learned R entries of `layer` (empty for softmax attention).
    public func rValues(layer: Int) -> [Float] {
        guard let t = layout["blocks.\(layer).attn.R"] else { return [] }
        return Array(UnsafeBufferPointer(start: params.pointer + t.offset, count: t.count))
    }
}
