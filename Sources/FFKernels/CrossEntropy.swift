import FFCore
import Foundation

/// Softmax cross-entropy over logits(M,V) against targets(M), fused with its backward.
///
/// Returns the summed loss (nats, in Double) over rows whose target is >= 0. When `dscale` is
/// non-nil, the logits are overwritten by their gradient, `dscale * (softmax - onehot)`; rows with
/// target < 0 get a zero gradient. `rowLoss` (M) is scratch for the per-row losses, summed in row
/// order so the result does not depend on `threads`.
public func crossEntropy(
    logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
    M: Int, V: Int, dscale: Float?, rowLoss: UnsafeMutablePointer<Double>,
    threads: Int = 1
) -> Double {
    let chunks = V / 8
    parallelTasks(M, threads: threads) { m, _ in
        let row = logits + m * V
        let t = Int(targets[m])
        guard t >= 0 else {
            if dscale != nil { row.update(repeating: 0, count: V) }
            rowLoss[m] = 0
            return
        }
        let target = row[t]
        // e = exp(logit - max), kept in the row for the gradient.
        let mx = rowMax(row, V)
        let s = expShiftInPlace(row, V, mx)
        rowLoss[m] = Double(mx + logf(s) - target)
        if let dscale {
            let raw = UnsafeMutableRawPointer(row)
            let k = SIMD8<Float>(repeating: dscale / s)
            for c in 0..<chunks {
                let e = raw.loadUnaligned(fromByteOffset: c * 32, as: SIMD8<Float>.self)
                raw.storeBytes(of: e * k, toByteOffset: c * 32, as: SIMD8<Float>.self)
            }
            for v in (chunks * 8)..<V { row[v] *= dscale / s }
            row[t] -= dscale
        }
    }
    var total = 0.0
    for m in 0..<M { total += rowLoss[m] }
    return total
}

/// max of row[0..<n].
@inline(__always) func rowMax(_ row: UnsafeMutablePointer<Float>, _ n: Int) -> Float {
    let raw = UnsafeRawPointer(row), chunks = n / 8
    var m8 = SIMD8<Float>(repeating: -.infinity)
    // pointwiseMax is a generic call per chunk in Swift 6.3 (a visible share of an LM step); a
    // compare and select is two instructions.
    for c in 0..<chunks {
        let x = raw.loadUnaligned(fromByteOffset: c * 32, as: SIMD8<Float>.self)
        m8.replace(with: x, where: x .> m8)
    }
    var m = m8[0]
    for l in 1..<8 { m = max(m, m8[l]) }
    for j in (chunks * 8)..<n { m = max(m, row[j]) }
    return m
}

/// row[j] = exp(row[j] - shift) for j < n; returns their sum.
@inline(__always) func expShiftInPlace(_ row: UnsafeMutablePointer<Float>, _ n: Int, _ shift: Float) -> Float {
    let raw = UnsafeMutableRawPointer(row), chunks = n / 8
    let sv = SIMD8<Float>(repeating: shift)
    var s8 = SIMD8<Float>()
    for c in 0..<chunks {
        let e = fastExp(raw.loadUnaligned(fromByteOffset: c * 32, as: SIMD8<Float>.self) - sv)
        raw.storeBytes(of: e, toByteOffset: c * 32, as: SIMD8<Float>.self)
        s8 += e
    }
    var s = s8.sum()
    for j in (chunks * 8)..<n { let e = expf(row[j] - shift); row[j] = e; s += e }
    return s
}

/// exp(x) per lane for x <= 0 (softmax arguments), relative error < 5e-6 (tested): 2^n * 2^f, degree-6
/// polynomial for 2^f on f in [-0.5, 0.5]. Lanes below -87 give 0.
@inline(__always) public func fastExp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let log2e: Float = 1.4426950408889634
    var y = x * log2e
    y.replace(with: SIMD8<Float>(repeating: -126), where: y .< -126)
    // Round to nearest by the 1.5 * 2^23 trick: the integer lands in the low mantissa bits.
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let t = y + magic
    let n = t - magic
    let f = y - n  // [-0.5, 0.5]
    // 2^f = exp(f ln2): Taylor coefficients of exp scaled by powers of ln 2.
    let c6: Float = 1.5403530393381606e-4, c5: Float = 1.3333558146428443e-3, c4: Float = 9.618129107628477e-3
    let c3: Float = 5.550410866482158e-2, c2: Float = 0.2402265069591007, c1: Float = 0.6931471805599453
    var p = SIMD8<Float>(repeating: c6)
    p = p * f + c5
    p = p * f + c4
    p = p * f + c3
    p = p * f + c2
    p = p * f + c1
    p = p * f + 1
    let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)) &+ 127
    let scale = unsafeBitCast(bits &<< 23, to: SIMD8<Float>.self)
    var r = p * scale
    r.replace(with: SIMD8<Float>(), where: x .< -87)
    return r
}

/// Cross-entropy of logits(M,V) against soft targets(M,V) (class probabilities: smoothed or mixed
/// labels), fused with its backward: the summed loss −Σ_m Σ_v y_mv log softmax(z_m)_v (nats, in
/// Double). With `dscale`, the logits are overwritten by `dscale * ((Σ_v y_mv) softmax(z_m) − y_m)`.
public func softCrossEntropy(
    logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Float>,
    M: Int, V: Int, dscale: Float, rowLoss: UnsafeMutablePointer<Double>
) -> Double {
    for m in 0..<M {
        let row = logits + m * V, y = targets + m * V
        var dot = 0.0, mass: Float = 0
        for v in 0..<V { dot += Double(y[v]) * Double(row[v]); mass += y[v] }
        let mx = rowMax(row, V)
        let s = expShiftInPlace(row, V, mx)
        rowLoss[m] = Double(mass) * Double(mx + logf(s)) - dot
        let k = dscale * mass / s
        for v in 0..<V { row[v] = row[v] * k - dscale * y[v] }
    }
    var total = 0.0
    for m in 0..<M { total += rowLoss[m] }
    return total
}

/// The loss of `softCrossEntropy` without touching the logits (evaluation).
public func softTargetLoss(
    logits: UnsafePointer<Float>, targets: UnsafePointer<Float>, M: Int, V: Int,
    rowLoss: UnsafeMutablePointer<Double>
) -> Double {
    var total = 0.0
    for m in 0..<M {
        let row = logits + m * V, y = targets + m * V
        var mx = -Float.infinity
        for v in 0..<V { mx = max(mx, row[v]) }
        var s = 0.0, dot = 0.0, mass = 0.0
        for v in 0..<V { s += exp(Double(row[v] - mx)); dot += Double(y[v]) * Double(row[v]); mass += Double(y[v]) }
        rowLoss[m] = mass * (Double(mx) + log(s)) - dot
        total += rowLoss[m]
    }
    return total
}
