import FFCore
import Foundation
import FFKernels

// Letters used in shape comments: B micro-batch (sequences or images), T tokens per sample,
// C d_model, F d_ff, H heads, L layers.

/// A model over flat parameter and gradient buffers built around a `TransformerStack`: what the
/// training loop needs of the language model and of the vision transformer alike.
public protocol TrainableModel: AnyObject {
    var layout: ParameterLayout { get }
    var params: FlatBuffer { get }
    var grads: FlatBuffer { get }
    var stack: TransformerStack { get }
    /// Ranges of `grads` in the order `backward` completes them.
    var gradientStages: [Range<Int>] { get }
    /// Bytes of activations and workspaces (parameters and gradients excluded).
    var activationBytes: Int { get }
    func initialize(seed: UInt64)
    func backward(onStageDone: ((Int) throws -> Void)?) rethrows
}

/// The shape and options of a stack of Transformer blocks (the part a language model and a
/// vision transformer share).
public struct StackConfig: Sendable, Equatable {
    public var layers: Int
    public var dModel: Int
    public var heads: Int
    public var dFF: Int
    /// Tokens per sample T.
    public var seq: Int
    public var norm: NormPlacement
    public var activation: Activation
    public var attention: AttentionKind
    /// Causal mask (language models) or none (vision).
    public var causal: Bool
    /// Element-wise dropout on the attention and MLP branch outputs.
    public var dropout: Float
    /// Stochastic depth: the largest rate of dropping a whole residual branch of a sample; layer l
    /// uses `dropPath * l / (L - 1)` (DeiT's linear rule).
    public var dropPath: Float

    public init(
        layers: Int, dModel: Int, heads: Int, dFF: Int, seq: Int, norm: NormPlacement,
        activation: Activation, attention: AttentionKind, causal: Bool, dropout: Float, dropPath: Float = 0
    ) {
        self.layers = layers; self.dModel = dModel; self.heads = heads; self.dFF = dFF; self.seq = seq
        self.norm = norm; self.activation = activation; self.attention = attention; self.causal = causal
        self.dropout = dropout; self.dropPath = dropPath
    }

    public var headDim: Int { dModel / heads }

    /// The drop-path rate of layer `l`.
    public func dropPathRate(_ l: Int) -> Float {
        layers > 1 ? dropPath * Float(l) / Float(layers - 1) : 0
    }
}

/// L Transformer blocks with an explicit forward and backward, parameters named
/// `blocks.{l}.ln1.weight`, `blocks.{l}.attn.qkv.weight`, ... inside the owner's flat buffers.
///
/// Block (post-LN): h = LN1(x + drop(proj(attn(qkv(x))))), y = LN2(h + drop(fc2(act(fc1(h))))).
/// Block (pre-LN):  h = x + drop(proj(attn(qkv(LN1(x))))),  y = h + drop(fc2(act(fc1(LN2(h))))).
/// `drop` is element-wise dropout and/or per-sample drop-path, both keyed by the sample's key.
public final class TransformerStack {
    public let config: StackConfig
    public let maxBatch: Int
    /// Workers for the attention kernels and for the row-wise and element-wise loops between the
    /// matrix products (layer norms, activations, masks, residuals, bias sums).
    let threads: Int
    let kernels: AttentionKernels

    struct BlockParams {
        var ln1w = 0, ln1b = 0, qkvW = 0, qkvB = 0, projW = 0, projB = 0, R = 0
        var ln2w = 0, ln2b = 0, fc1W = 0, fc1B = 0, fc2W = 0, fc2B = 0
    }
    let blockParams: [BlockParams]

    struct BlockActs {
        var ln1Out, ln1Mean, ln1Rstd: UnsafeMutablePointer<Float>  // (B,T,C) (B,T) (B,T)
        var qkv: UnsafeMutablePointer<Float>  // (B,T,3C)
        var att: UnsafeMutablePointer<Float>  // (B,T,C)
        var attStat: UnsafeMutablePointer<Float>  // (B,H,T)
        var proj, projMask: UnsafeMutablePointer<Float>  // (B,T,C)
        var res1: UnsafeMutablePointer<Float>  // (B,T,C)
        var ln2Out, ln2Mean, ln2Rstd: UnsafeMutablePointer<Float>
        var fc1, act: UnsafeMutablePointer<Float>  // (B,T,F)
        var fc2, fc2Mask: UnsafeMutablePointer<Float>  // (B,T,C)
        var res2: UnsafeMutablePointer<Float>  // (B,T,C)

        /// Reserves one block's activations in `a` for `batch` samples of `T` tokens; the returned
        /// closure names the pointers once the arena has committed its memory.
        static func reserve(in a: Arena, batch: Int, T: Int, C: Int, F: Int, H: Int) -> (Arena) -> BlockActs {
            let bt = batch * T
            let ln1Out = a.reserve(bt * C), ln1Mean = a.reserve(bt), ln1Rstd = a.reserve(bt)
            let qkv = a.reserve(bt * 3 * C), att = a.reserve(bt * C), attStat = a.reserve(batch * H * T)
            let proj = a.reserve(bt * C), projMask = a.reserve(bt * C), res1 = a.reserve(bt * C)
            let ln2Out = a.reserve(bt * C), ln2Mean = a.reserve(bt), ln2Rstd = a.reserve(bt)
            let fc1 = a.reserve(bt * F), act = a.reserve(bt * F)
            let fc2 = a.reserve(bt * C), fc2Mask = a.reserve(bt * C), res2 = a.reserve(bt * C)
            return { a in
                BlockActs(
                    ln1Out: a.pointer(ln1Out), ln1Mean: a.pointer(ln1Mean), ln1Rstd: a.pointer(ln1Rstd),
                    qkv: a.pointer(qkv), att: a.pointer(att), attStat: a.pointer(attStat),
                    proj: a.pointer(proj), projMask: a.pointer(projMask), res1: a.pointer(res1),
                    ln2Out: a.pointer(ln2Out), ln2Mean: a.pointer(ln2Mean), ln2Rstd: a.pointer(ln2Rstd),
                    fc1: a.pointer(fc1), act: a.pointer(act), fc2: a.pointer(fc2), fc2Mask: a.pointer(fc2Mask),
                    res2: a.pointer(res2))
            }
        }
    }
    var acts: [BlockActs] = []
    let arena = Arena()
    // Gradient scratch shared by all layers.
    let dRes, dH, dTmp, dAtt: UnsafeMutablePointer<Float>  // (B,T,C)
    let dQKV: UnsafeMutablePointer<Float>  // (B,T,3C)
    let dF1, dF2: UnsafeMutablePointer<Float>  // (B,T,F)
    /// Ping-pong buffers for the gradient flowing down the stack (B,T,C).
    let dPing, dPong: UnsafeMutablePointer<Float>

    /// The input of the last forward (B,T,C); the owner keeps it alive until backward.
    var input: UnsafeMutablePointer<Float>?
    var lastBatch = 0
    var lastKeys: UnsafePointer<UInt64>?

    /// Mean over rows of Σ_j A_ij per layer in the last forward (1 is healthy; Fourier rows whose
    /// Σ_j W falls below eps approach 0).
    public private(set) var attentionRowSum: [Double]

    /// Adds the blocks' tensors to `layout`; activations are sized for `maxBatch` samples.
    public init(config: StackConfig, maxBatch: Int, layout: inout ParameterLayout, threads: Int) {
        self.config = config
        self.maxBatch = maxBatch
        self.threads = max(1, threads)
        let C = config.dModel, F = config.dFF, T = config.seq, H = config.heads
        var bps: [BlockParams] = []
        for l in 0..<config.layers {
            let p = "blocks.\(l)."
            var b = BlockParams()
            b.ln1w = layout.add(p + "ln1.weight", [C], decays: false).offset
            b.ln1b = layout.add(p + "ln1.bias", [C], decays: false).offset
            b.qkvW = layout.add(p + "attn.qkv.weight", [3 * C, C], decays: true).offset
            b.qkvB = layout.add(p + "attn.qkv.bias", [3 * C], decays: false).offset
            b.projW = layout.add(p + "attn.proj.weight", [C, C], decays: true).offset
            b.projB = layout.add(p + "attn.proj.bias", [C], decays: false).offset
            if case .fourier(let spec, _) = config.attention {
                b.R =
                    layout.add(
                        p + "attn.R", [spec.rMode.count(heads: H, headDim: config.headDim)],
                        decays: false
                    ).offset
            }
            b.ln2w = layout.add(p + "ln2.weight", [C], decays: false).offset
            b.ln2b = layout.add(p + "ln2.bias", [C], decays: false).offset
            b.fc1W = layout.add(p + "mlp.fc1.weight", [F, C], decays: true).offset
            b.fc1B = layout.add(p + "mlp.fc1.bias", [F], decays: false).offset
            b.fc2W = layout.add(p + "mlp.fc2.weight", [C, F], decays: true).offset
            b.fc2B = layout.add(p + "mlp.fc2.bias", [C], decays: false).offset
            bps.append(b)
        }
        blockParams = bps
        kernels = AttentionKernels(maxSeq: T, headDim: config.headDim, threads: threads)
        kernels.reserve(
            AttentionShape(
                batch: maxBatch, seq: T, heads: H, headDim: config.headDim,
                causal: config.causal),
            for: config.attention == .softmax ? .softmax : .fourier)

        let BT = maxBatch * T
        let a = arena
        let blocks = (0..<config.layers).map { _ in
            BlockActs.reserve(in: a, batch: maxBatch, T: T, C: C, F: F, H: H)
        }
        let hd = (0..<6).map { _ in a.reserve(BT * C) }
        let hQKV = a.reserve(BT * 3 * C), hF1 = a.reserve(BT * F), hF2 = a.reserve(BT * F)
        a.commit()
        acts = blocks.map { $0(a) }
        dRes = a.pointer(hd[0]); dH = a.pointer(hd[1]); dTmp = a.pointer(hd[2]); dAtt = a.pointer(hd[3])
        dPing = a.pointer(hd[4]); dPong = a.pointer(hd[5])
        dQKV = a.pointer(hQKV); dF1 = a.pointer(hF1); dF2 = a.pointer(hF2)
        attentionRowSum = [Double](repeating: 0, count: config.layers)
    }

    /// Bytes held for activations and kernel workspaces.
    public var activationBytes: Int { arena.floats * 4 + kernels.workspaceBytes }

    var anyMask: Bool { config.dropout > 0 || config.dropPath > 0 }

    /// Runs an element-wise loop over 0..<n on the stack's workers: with one thread all the loops
    /// between two matrix products would run on one core while the others idle.
    func elementwise(_ n: Int, _ body: (Range<Int>) -> Void) {
        parallelChunks(n, threads: threads, grain: 16_384, body)
    }

    /// dst(n) = src(n) * mask(n), or a copy of src without a mask.
    func maskedCopy(
        _ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, mask: UnsafePointer<Float>?,
        count n: Int
    ) {
        guard let mask else { parallelCopy(dst, from: src, count: n, threads: threads); return }
        elementwise(n) { r in for i in r { dst[i] = src[i] * mask[i] } }
    }

    /// Names of the residual-branch output projections (initialised with a smaller std).
    public static func isResidualOutput(_ name: String) -> Bool {
        name.hasSuffix("attn.proj.weight") || name.hasSuffix("mlp.fc2.weight")
    }

    // MARK: Forward

    /// Runs the blocks on x (B,T,C) and returns the output (B,T,C, inside the stack's arena).
    /// `keys` (one per sample) turns on dropout and drop-path; nil is evaluation.
    public func forward(
        _ x: UnsafeMutablePointer<Float>, batch B: Int, params p: UnsafePointer<Float>,
        keys: UnsafePointer<UInt64>?
    ) -> UnsafeMutablePointer<Float> {
        precondition(B <= maxBatch, "micro-batch \(B) exceeds the stack's allocation \(maxBatch)")
        input = x
        lastBatch = B
        lastKeys = keys
        var h = x
        for l in 0..<config.layers { h = blockForward(l, x: h, B: B, p: p, keys: keys) }
        return h
    }

    /// Multiplies a branch output x (B,T,C) in place by a fresh mask (element-wise dropout times
    /// per-sample drop-path) and keeps the mask for backward.
    private func applyBranchMask(
        _ x: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>, layer l: Int,
        site: UInt64, keys: UnsafePointer<UInt64>?, B: Int
    ) {
        guard let keys, anyMask else { return }
        let rate = config.dropout, pathRate = config.dropPathRate(l)
        let n = config.seq * config.dModel
        let keep = rate > 0 ? 1 / (1 - rate) : 1
        // Each sample's mask comes from its own key: samples can be masked on any worker.
        parallelTasks(B, threads: threads) { b, _ in
            let m = mask + b * n, xs = x + b * n
            var path: Float = 1
            if pathRate > 0 {
                var prng = SplitMix64(seed: SplitMix64.key(keys[b], site, 0xD20F_9A7B))
                path = prng.nextFloat() < pathRate ? 0 : 1 / (1 - pathRate)
            }
            if rate > 0 {
                var rng = SplitMix64(seed: SplitMix64.key(keys[b], site))
                for i in 0..<n { m[i] = (rng.nextFloat() < rate ? 0 : keep) * path }
            } else {
                m.update(repeating: path, count: n)
            }
            for i in 0..<n { xs[i] *= m[i] }
        }
    }

    private func blockForward(
        _ l: Int, x: UnsafeMutablePointer<Float>, B: Int, p: UnsafePointer<Float>,
        keys: UnsafePointer<UInt64>?
    ) -> UnsafeMutablePointer<Float> {
        let T = config.seq, C = config.dModel, F = config.dFF, BT = B * T
        let w = blockParams[l], a = acts[l]
        let pre = config.norm == .pre
        let shape = AttentionShape(
            batch: B, seq: T, heads: config.heads, headDim: config.headDim,
            causal: config.causal)

        var attnIn = x
        if pre {
            layerNormForward(
                a.ln1Out, mean: a.ln1Mean, rstd: a.ln1Rstd, x, weight: p + w.ln1w, bias: p + w.ln1b,
                M: BT, C: C, threads: threads)
            attnIn = a.ln1Out
        }
        linearForward(a.qkv, attnIn, p + w.qkvW, p + w.qkvB, M: BT, K: C, N: 3 * C, threads: threads)
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
        linearForward(a.proj, a.att, p + w.projW, p + w.projB, M: BT, K: C, N: C, threads: threads)
        applyBranchMask(a.proj, mask: a.projMask, layer: l, site: UInt64(2 * l + 1), keys: keys, B: B)
        elementwise(BT * C) { r in for i in r { a.res1[i] = x[i] + a.proj[i] } }
        var h = a.res1
        if !pre {
            layerNormForward(
                a.ln1Out, mean: a.ln1Mean, rstd: a.ln1Rstd, a.res1, weight: p + w.ln1w,
                bias: p + w.ln1b, M: BT, C: C, threads: threads)
            h = a.ln1Out
        }
        var ffIn = h
        if pre {
            layerNormForward(
                a.ln2Out, mean: a.ln2Mean, rstd: a.ln2Rstd, h, weight: p + w.ln2w, bias: p + w.ln2b,
                M: BT, C: C, threads: threads)
            ffIn = a.ln2Out
        }
        linearForward(a.fc1, ffIn, p + w.fc1W, p + w.fc1B, M: BT, K: C, N: F, threads: threads)
        activationForward(config.activation, a.act, a.fc1, count: BT * F, threads: threads)
        linearForward(a.fc2, a.act, p + w.fc2W, p + w.fc2B, M: BT, K: F, N: C, threads: threads)
        applyBranchMask(a.fc2, mask: a.fc2Mask, layer: l, site: UInt64(2 * l + 2), keys: keys, B: B)
        elementwise(BT * C) { r in for i in r { a.res2[i] = h[i] + a.fc2[i] } }
        if pre { return a.res2 }
        layerNormForward(
            a.ln2Out, mean: a.ln2Mean, rstd: a.ln2Rstd, a.res2, weight: p + w.ln2w, bias: p + w.ln2b,
            M: BT, C: C, threads: threads)
        return a.ln2Out
    }

    // MARK: Backward

    /// The gradient of the stack's output goes here (B,T,C) before `backward`.
    public var outputGradient: UnsafeMutablePointer<Float> { dPing }

    /// Element offsets where each block's tensors start, and where the last one ends.
    public func blockBoundaries() -> [Int] {
        guard let last = blockParams.last else { return [] }
        return blockParams.map(\.ln1w) + [last.fc2B + config.dModel]
    }

    /// The gradient stages of a model whose layout is [inputs, blocks, outputs] with `total`
    /// elements, in the order its backward completes them: the outputs, block L-1, ..., block 0,
    /// then the inputs. Consecutive stages are adjacent, so buckets cut from them are contiguous.
    public func gradientStages(total: Int) -> [Range<Int>] {
        let bounds = blockBoundaries()
        var stages = [bounds.last!..<total]
        for l in stride(from: config.layers - 1, through: 0, by: -1) { stages.append(bounds[l]..<bounds[l + 1]) }
        stages.append(0..<bounds[0])
        return stages
    }

    /// Backpropagates `outputGradient` through the blocks of the last forward, accumulating into
    /// `g`; calls `onLayerDone(l)` when block l's gradients are final (l = L-1 down to 0) and
    /// returns the gradient of the stack's input (B,T,C, inside the stack's arena).
    public func backward(
        params p: UnsafePointer<Float>, grads g: UnsafeMutablePointer<Float>,
        onLayerDone: ((Int) throws -> Void)? = nil
    ) rethrows -> UnsafeMutablePointer<Float> {
        var dy = dPing, dx = dPong
        for l in stride(from: config.layers - 1, through: 0, by: -1) {
            blockBackward(l, dy: dy, dx: dx, B: lastBatch, p: p, g: g)
            swap(&dy, &dx)
            try onLayerDone?(l)
        }
        return dy
    }

    /// The output of block `l` in the last forward.
    func layerOutput(_ l: Int) -> UnsafeMutablePointer<Float> {
        config.norm == .pre ? acts[l].res2 : acts[l].ln2Out
    }

    private func layerInput(_ l: Int) -> UnsafeMutablePointer<Float> {
        l == 0 ? input! : layerOutput(l - 1)
    }

    /// dy: gradient of the block's output; writes (overwrites) the gradient of its input into dx.
    private func blockBackward(
        _ l: Int, dy: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>, B: Int,
        p: UnsafePointer<Float>, g: UnsafeMutablePointer<Float>
    ) {
        mlpHalfBackward(l, dy: dy, B: B, p: p, g: g)
        attentionHalfBackward(l, dx: dx, B: B, p: p, g: g)
    }

    /// The block's MLP half: from dy to dL/dh in `dH` (h = the attention half's output).
    private func mlpHalfBackward(
        _ l: Int, dy: UnsafeMutablePointer<Float>, B: Int,
        p: UnsafePointer<Float>, g: UnsafeMutablePointer<Float>
    ) {
        let T = config.seq, C = config.dModel, F = config.dFF, BT = B * T, n = BT * C
        let w = blockParams[l], a = acts[l]
        let pre = config.norm == .pre
        let masked = anyMask && lastKeys != nil
        // y = pre ? res2 : LN2(res2), res2 = h + drop(fc2(act(fc1(ffIn)))).
        let dres2: UnsafeMutablePointer<Float>
        if pre {
            dres2 = dy
        } else {
            parallelZero(dRes, count: n, threads: threads)
            layerNormBackward(
                dx: dRes, dweight: g + w.ln2w, dbias: g + w.ln2b, dy: dy, x: a.res2, weight: p + w.ln2w,
                mean: a.ln2Mean, rstd: a.ln2Rstd, M: BT, C: C, threads: threads)
            dres2 = dRes
        }
        parallelCopy(dH, from: dres2, count: n, threads: threads)  // residual path
        maskedCopy(dTmp, dres2, mask: masked ? a.fc2Mask : nil, count: n)
        parallelZero(dF2, count: BT * F, threads: threads)
        linearBackward(
            dinp: dF2, dweight: g + w.fc2W, dbias: g + w.fc2B, dout: dTmp, inp: a.act, weight: p + w.fc2W,
            M: BT, K: F, N: C, threads: threads)
        parallelZero(dF1, count: BT * F, threads: threads)
        activationBackward(config.activation, dx: dF1, dy: dF2, x: a.fc1, count: BT * F, threads: threads)
        let h = pre ? a.res1 : a.ln1Out
        let ffIn = pre ? a.ln2Out : h
        if pre {
            parallelZero(dTmp, count: n, threads: threads)
            linearBackward(
                dinp: dTmp, dweight: g + w.fc1W, dbias: g + w.fc1B, dout: dF1, inp: ffIn,
                weight: p + w.fc1W, M: BT, K: C, N: F, threads: threads)
            layerNormBackward(
                dx: dH, dweight: g + w.ln2w, dbias: g + w.ln2b, dy: dTmp, x: h, weight: p + w.ln2w,
                mean: a.ln2Mean, rstd: a.ln2Rstd, M: BT, C: C, threads: threads)
        } else {
            linearBackward(
                dinp: dH, dweight: g + w.fc1W, dbias: g + w.fc1B, dout: dF1, inp: ffIn,
                weight: p + w.fc1W, M: BT, K: C, N: F, threads: threads)
        }
    }

    /// The block's attention half: from dL/dh in `dH` to the block input's gradient `dx`.
    private func attentionHalfBackward(
        _ l: Int, dx: UnsafeMutablePointer<Float>, B: Int,
        p: UnsafePointer<Float>, g: UnsafeMutablePointer<Float>
    ) {
        let T = config.seq, C = config.dModel, BT = B * T, n = BT * C
        let w = blockParams[l], a = acts[l]
        let pre = config.norm == .pre
        let masked = anyMask && lastKeys != nil
        let x = layerInput(l)
        let shape = AttentionShape(
            batch: B, seq: T, heads: config.heads, headDim: config.headDim,
            causal: config.causal)

        // h = pre ? res1 : LN1(res1), res1 = x + drop(proj(att(qkv(attnIn)))).
        let dres1: UnsafeMutablePointer<Float>
        if pre {
            dres1 = dH
        } else {
            parallelZero(dRes, count: n, threads: threads)
            layerNormBackward(
                dx: dRes, dweight: g + w.ln1w, dbias: g + w.ln1b, dy: dH, x: a.res1, weight: p + w.ln1w,
                mean: a.ln1Mean, rstd: a.ln1Rstd, M: BT, C: C, threads: threads)
            dres1 = dRes
        }
        parallelCopy(dx, from: dres1, count: n, threads: threads)  // residual path
        maskedCopy(dTmp, dres1, mask: masked ? a.projMask : nil, count: n)
        parallelZero(dAtt, count: n, threads: threads)
        linearBackward(
            dinp: dAtt, dweight: g + w.projW, dbias: g + w.projB, dout: dTmp, inp: a.att,
            weight: p + w.projW, M: BT, K: C, N: C, threads: threads)
        parallelZero(dQKV, count: 3 * n, threads: threads)
        switch config.attention {
        case .softmax:
            kernels.softmaxBackward(dqkv: dQKV, dout: dAtt, out: a.att, qkv: a.qkv, rowLSE: a.attStat, shape: shape)
        case .fourier(let spec, _):
            kernels.fourierBackward(
                dqkv: dQKV, dR: g + w.R, dout: dAtt, out: a.att, qkv: a.qkv, R: p + w.R,
                rowSum: a.attStat, spec: spec, shape: shape)
        }
        if pre {
            parallelZero(dTmp, count: n, threads: threads)
            linearBackward(
                dinp: dTmp, dweight: g + w.qkvW, dbias: g + w.qkvB, dout: dQKV, inp: a.ln1Out,
                weight: p + w.qkvW, M: BT, K: C, N: 3 * C, threads: threads)
            layerNormBackward(
                dx: dx, dweight: g + w.ln1w, dbias: g + w.ln1b, dy: dTmp, x: x, weight: p + w.ln1w,
                mean: a.ln1Mean, rstd: a.ln1Rstd, M: BT, C: C, threads: threads)
        } else {
            linearBackward(
                dinp: dx, dweight: g + w.qkvW, dbias: g + w.qkvB, dout: dQKV, inp: x, weight: p + w.qkvW,
                M: BT, K: C, N: 3 * C, threads: threads)
        }
    }

    /// The learned R entries of `layer` (empty for softmax attention).
    public func rValues(layer: Int, params p: UnsafePointer<Float>) -> [Float] {
        guard case .fourier(let spec, _) = config.attention else { return [] }
        let n = spec.rMode.count(heads: config.heads, headDim: config.headDim)
        return Array(UnsafeBufferPointer(start: p + blockParams[layer].R, count: n))
    }
}
