import FFCore
import Foundation

/// The feed-forward non-linearity.
public enum Activation: String, Sendable, CaseIterable {
    case relu, gelu
}

private let geluC: Float = 0.7978845608028654  // sqrt(2/pi)

/// Elements handled per task when an activation is split over threads: a multiple of the vector
/// width, so that every element takes the same (vector or scalar) path as in one serial loop.
let activationBlock = 4096

/// y(n) = act(x(n)), split over `threads` workers in blocks (the same bits for any thread count).
public func activationForward(
    _ kind: Activation, _ y: UnsafeMutablePointer<Float>,
    _ x: UnsafePointer<Float>, count n: Int, threads: Int
) {
    let blocks = (n + activationBlock - 1) / activationBlock
    parallelChunks(blocks, threads: threads, grain: 2) { r in
        let lo = r.lowerBound * activationBlock, hi = min(n, r.upperBound * activationBlock)
        activationForward(kind, y + lo, x + lo, count: hi - lo)
    }
}

/// dx(n) += dy(n) * act'(x(n)), split over `threads` workers in blocks.
public func activationBackward(
    _ kind: Activation, dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
    x: UnsafePointer<Float>, count n: Int, threads: Int
) {
    let blocks = (n + activationBlock - 1) / activationBlock
    parallelChunks(blocks, threads: threads, grain: 2) { r in
        let lo = r.lowerBound * activationBlock, hi = min(n, r.upperBound * activationBlock)
        activationBackward(kind, dx: dx + lo, dy: dy + lo, x: x + lo, count: hi - lo)
    }
}

/// y(n) = act(x(n)).
public func activationForward(
    _ kind: Activation, _ y: UnsafeMutablePointer<Float>,
    _ x: UnsafePointer<Float>, count n: Int
) {
    switch kind {
    case .relu:
        for i in 0..<n { y[i] = max(x[i], 0) }
    case .gelu:  // tanh approximation, as GPT-2 and PyTorch's approximate="tanh"
        let chunks = n / 8
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        for c in 0..<chunks {
            let v = rx.loadUnaligned(fromByteOffset: c * 32, as: SIMD8<Float>.self)
            let inner: SIMD8<Float> = geluC * (v + 0.044715 * v * v * v)
            let t = fastTanh(inner)
            ry.storeBytes(of: 0.5 * v * (1 + t), toByteOffset: c * 32, as: SIMD8<Float>.self)
        }
        for i in (chunks * 8)..<n {
            let v = x[i]
            y[i] = 0.5 * v * (1 + tanh(geluC * (v + 0.044715 * v * v * v)))
        }
    }
}

/// dx(n) += dy(n) * act'(x(n)).
public func activationBackward(
    _ kind: Activation, dx: UnsafeMutablePointer<Float>,
    dy: UnsafePointer<Float>, x: UnsafePointer<Float>, count n: Int
) {
    switch kind {
    case .relu:
        for i in 0..<n where x[i] > 0 { dx[i] += dy[i] }
    case .gelu:
        let chunks = n / 8
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(dy), rd = UnsafeMutableRawPointer(dx)
        for c in 0..<chunks {
            let v = rx.loadUnaligned(fromByteOffset: c * 32, as: SIMD8<Float>.self)
            let v2 = v * v
            let inner: SIMD8<Float> = geluC * (v + 0.044715 * v2 * v)
            let t = fastTanh(inner)
            let slope: SIMD8<Float> = geluC * (1 + 3 * 0.044715 * v2)
            let half: SIMD8<Float> = 0.5 * (1 + t)
            let d: SIMD8<Float> = half + 0.5 * v * (1 - t * t) * slope
            let g = rd.loadUnaligned(fromByteOffset: c * 32, as: SIMD8<Float>.self)
            rd.storeBytes(
                of: g + ry.loadUnaligned(fromByteOffset: c * 32, as: SIMD8<Float>.self) * d,
                toByteOffset: c * 32, as: SIMD8<Float>.self)
        }
        for i in (chunks * 8)..<n {
            let v = x[i]
            let t = tanh(geluC * (v + 0.044715 * v * v * v))
            let d = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * geluC * (1 + 3 * 0.044715 * v * v)
            dx[i] += dy[i] * d
        }
    }
}

/// tanh per lane from `fastExp` of a non-positive argument: (1 − e)/(1 + e), e = exp(−2|u|),
/// with the sign of u; absolute error < 1e-6 (tested).
@inline(__always) public func fastTanh(_ u: SIMD8<Float>) -> SIMD8<Float> {
    let a = u.replacing(with: -u, where: u .< 0)
    let e = fastExp(-2 * a)
    let t = (1 - e) / (1 + e)
    return t.replacing(with: -t, where: u .< 0)
}
