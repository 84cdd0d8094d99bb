import Foundation

/// Softmax cross-entropy over logits(M,V) against targets(M), fused with its backward.
///
/// Returns the summed loss (nats, in Double) over rows whose target is >= 0. When `dscale` is
/// non-nil, the logits are overwritten by their gradient, `dscale * (softmax - onehot)`; rows with
/// target < 0 get a zero gradient.
public func crossEntropy(logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
                         M: Int, V: Int, dscale: Float?) -> Double {
    var total = 0.0
    for m in 0..<M {
        let row = logits + m * V
        let t = Int(targets[m])
        guard t >= 0 else {
            if dscale != nil { row.update(repeating: 0, count: V) }
            continue
        }
        var mx = -Float.infinity
        for v in 0..<V { mx = max(mx, row[v]) }
        var s: Float = 0
        for v in 0..<V { s += expf(row[v] - mx) }
        let lse = mx + logf(s)
        total += Double(lse - row[t])
        if let dscale {
            let inv = 1 / s
            for v in 0..<V { row[v] = expf(row[v] - mx) * inv * dscale }
            row[t] -= dscale
        }
    }
    return total
}
