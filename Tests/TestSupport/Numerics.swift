import FFCore
import Foundation

/// Relative L2 distance ||a - b|| / ||b||: the measure the tests bound.
public func relL2(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "relL2 of arrays of \(a.count) and \(b.count) elements")
    var d = 0.0, n = 0.0
    for i in a.indices {
        let x = Double(a[i]), y = Double(b[i])
        d += (x - y) * (x - y)
        n += y * y
    }
    return (d / max(n, 1e-300)).squareRoot()
}

/// Relative L2 distance over every tensor of two weight files read by name (`b`'s names must
/// include `a`'s).
public func relL2(_ a: [String: [Float]], _ b: [String: [Float]]) -> Double {
    var d = 0.0, n = 0.0
    for (name, x) in a {
        guard let y = b[name], y.count == x.count else {
            preconditionFailure("tensor \(name) missing or of another size in the second set")
        }
        for i in x.indices {
            d += Double(x[i] - y[i]) * Double(x[i] - y[i])
            n += Double(y[i]) * Double(y[i])
        }
    }
    return (d / max(n, 1e-300)).squareRoot()
}

/// max |a - b| / max |b|.
public func relErr(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var num = 0.0, den = 1e-30
    for i in 0..<a.count { num = max(num, abs(a[i] - b[i])); den = max(den, abs(b[i])) }
    return num / den
}

/// Deterministic test data: the project's SplitMix64 stream with normal draws.
public struct TestRNG {
    public var base: SplitMix64
    public init(_ seed: UInt64) { base = SplitMix64(seed: seed) }
    public mutating func next() -> UInt64 { base.next() }
    public mutating func uniform() -> Double { base.nextDouble() }
    public mutating func normal() -> Double { base.nextNormal() }
    public mutating func normals(_ n: Int, std: Double = 1) -> [Float] { (0..<n).map { _ in Float(normal() * std) } }
}
