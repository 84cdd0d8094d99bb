import Foundation
import FFCore

/// AdamW with decoupled weight decay (Loshchilov & Hutter), over flat buffers.
public struct AdamW: Sendable, Equatable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var eps: Float = 1e-8
    public var weightDecay: Float = 0
    public init(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }

    /// One update of `count` consecutive elements (a tensor, or a rank's ZeRO-1 partition). The four
    /// pointers point at the first element of the span in their own buffers; `t` is the 1-based
    /// step; `gradScale` multiplies the gradient first (the clipping factor).
    public func update(
        params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>,
        m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        count: Int, decays: Bool, lr: Float, step t: Int, gradScale: Float
    ) {
        let bc1 = 1 - pow(beta1, Float(t)), bc2 = 1 - pow(beta2, Float(t))
        let stepSize = lr / bc1
        let decay = decays ? 1 - lr * weightDecay : 1
        let b1 = beta1, b2 = beta2, e = eps
        for i in 0..<count {
            let g = grads[i] * gradScale
            let mi = b1 * m[i] + (1 - b1) * g
            let vi = b2 * v[i] + (1 - b2) * g * g
            m[i] = mi; v[i] = vi
            params[i] = params[i] * decay - stepSize * mi / ((vi / bc2).squareRoot() + e)
        }
    }

    /// Updates the elements `elements` of the flat buffers; the range may start and end inside
    /// tensors (a ZeRO-1 partition). Each piece of a tensor is updated with that tensor's decay
    /// flag, and AdamW is element-wise, so any split gives the same result as whole tensors.
    /// `grads`, `m` and `v` hold the elements from `base` on (0 for full buffers; the range's first
    /// element otherwise); `params` is the full buffer.
    /// `threads` workers take pieces of the range (the same bits for any number).
    public func update(
        layout: ParameterLayout, elements: Range<Int>, params: UnsafeMutablePointer<Float>,
        grads: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        base: Int, lr: Float, step t: Int, gradScale: Float, threads: Int = 1
    ) {
        parallelChunks(elements.count, threads: threads, grain: memoryPassGrain) { r in
            let part = (elements.lowerBound + r.lowerBound)..<(elements.lowerBound + r.upperBound)
            for tensor in layout.tensors {
                let lo = max(tensor.offset, part.lowerBound)
                let hi = min(tensor.offset + tensor.count, part.upperBound)
                guard lo < hi else { continue }
                let o = lo - base
                update(
                    params: params + lo, grads: grads + o, m: m + o, v: v + o, count: hi - lo,
                    decays: tensor.decays, lr: lr, step: t, gradScale: gradScale)
            }
        }
    }

    /// One update of every tensor of `layout` over full buffers.
    public func update(
        layout: ParameterLayout, params: FlatBuffer, grads: FlatBuffer, m: FlatBuffer, v: FlatBuffer,
        lr: Float, step t: Int, gradScale: Float, threads: Int = 1
    ) {
        update(
            layout: layout, elements: 0..<layout.count, params: params.pointer, grads: grads.pointer,
            m: m.pointer, v: v.pointer, base: 0, lr: lr, step: t, gradScale: gradScale, threads: threads)
    }
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine (or constant) decay to `minLR`
/// at `total` steps. Steps are 1-based.
public struct LRSchedule: Sendable, Equatable {
    public enum Decay: String, Sendable, CaseIterable { case cosine, linear, constant }
    public var peak: Float
    public var warmup: Int
    public var total: Int
    public var minLR: Float
    public var decay: Decay
    public init(peak: Float, warmup: Int, total: Int, minLR: Float = 0, decay: Decay = .cosine) {
        self.peak = peak; self.warmup = warmup; self.total = total; self.minLR = minLR; self.decay = decay
    }

    public func lr(at step: Int) -> Float {
        if step <= warmup && warmup > 0 { return peak * Float(step) / Float(warmup) }
        let span = max(total - warmup, 1)
        let progress = min(max(Float(step - warmup) / Float(span), 0), 1)
        switch decay {
        case .constant: return peak
        case .linear: return minLR + (peak - minLR) * (1 - progress)
        case .cosine: return minLR + (peak - minLR) * 0.5 * (1 + cos(Float.pi * progress))
        }
    }
}

/// sqrt(Σ g²) over a flat buffer, accumulated in Double.
public func globalNorm(_ g: UnsafePointer<Float>, count: Int) -> Double {
    var s = 0.0
    for i in 0..<count { let x = Double(g[i]); s += x * x }
    return s.squareRoot()
}
