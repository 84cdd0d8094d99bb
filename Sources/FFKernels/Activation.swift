import Foundation

/// The feed-forward non-linearity.
public enum Activation: String, Sendable, CaseIterable {
    case relu, gelu
}

private let geluC: Float = 0.7978845608028654 // sqrt(2/pi)

/// y(n) = act(x(n)).
public func activationForward(_ kind: Activation, _ y: UnsafeMutablePointer<Float>,
                              _ x: UnsafePointer<Float>, count n: Int) {
    switch kind {
    case .relu:
        for i in 0..<n { y[i] = max(x[i], 0) }
    case .gelu: // tanh approximation, as GPT-2 and PyTorch's approximate="tanh"
        for i in 0..<n {
            let v = x[i]
            y[i] = 0.5 * v * (1 + tanh(geluC * (v + 0.044715 * v * v * v)))
        }
    }
}

/// dx(n) += dy(n) * act'(x(n)).
public func activationBackward(_ kind: Activation, dx: UnsafeMutablePointer<Float>,
                               dy: UnsafePointer<Float>, x: UnsafePointer<Float>, count n: Int) {
    switch kind {
    case .relu:
        for i in 0..<n where x[i] > 0 { dx[i] += dy[i] }
    case .gelu:
        for i in 0..<n {
            let v = x[i]
            let inner = geluC * (v + 0.044715 * v * v * v)
            let t = tanh(inner)
            let sech2 = 1 - t * t
            let d = 0.5 * (1 + t) + 0.5 * v * sech2 * geluC * (1 + 3 * 0.044715 * v * v)
            dx[i] += dy[i] * d
        }
    }
}
