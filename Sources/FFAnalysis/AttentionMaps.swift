import FFKernels
import FFModel
import Foundation

extension TransformerStack {
    /// The attention maps A (H maps of T x T, row-major, in Double) of `layer` for sample `b` of
    /// the last forward pass, recomputed from its saved q, k, v (analysis only; allocates).
    public func attentionMaps(layer: Int, sample b: Int, params p: UnsafePointer<Float>) -> [[Double]] {
        precondition(b < lastBatchSize, "sample \(b) not in the last forward's batch of \(lastBatchSize)")
        let T = config.seq, C = config.dModel, H = config.heads, D = config.headDim
        let qkv = lastQKV(layer: layer)
        var maps: [[Double]] = []
        for h in 0..<H {
            func slice(_ off: Int) -> [Double] {
                (0..<T).flatMap { t in (0..<D).map { d in Double(qkv[(b * T + t) * 3 * C + off + h * D + d]) } }
            }
            let q = slice(0), k = slice(C), v = slice(2 * C)
            switch config.attention {
            case .fourier(let spec, _):
                let R = p + rOffset(layer: layer)!
                let r: [Double] = (0..<D).map { d in Double(R[spec.rMode.index(head: h, dim: d)]) }
                maps.append(
                    FourierReference.forward(
                        q: q, k: k, v: v, r: r, T: T, D: D, Dv: D, p: spec.p,
                        eps: Double(spec.eps), causal: config.causal
                    ).a)
            case .softmax:
                var a = [Double](repeating: 0, count: T * T)
                let scale = 1 / Double(D).squareRoot()
                for i in 0..<T {
                    let last = config.causal ? i : T - 1
                    var mx = -Double.infinity
                    for j in 0...last {
                        var s = 0.0
                        for d in 0..<D { s += q[i * D + d] * k[j * D + d] }
                        a[i * T + j] = s * scale; mx = max(mx, s * scale)
                    }
                    var sum = 0.0
                    for j in 0...last { a[i * T + j] = exp(a[i * T + j] - mx); sum += a[i * T + j] }
                    for j in 0...last { a[i * T + j] /= sum }
                }
                maps.append(a)
            }
        }
        return maps
    }
}
