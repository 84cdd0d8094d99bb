import Foundation

/// SplitMix64: a small, fast generator with a 64-bit state that is trivial to save and restore.
public struct SplitMix64: Sendable, Equatable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.mix(state)
    }

    /// The SplitMix64 finaliser: a bijective 64-bit hash.
    @inline(__always) public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A key derived from several integers, for counter-based streams (dropout masks, orders).
    /// Fixed arities rather than variadics: a variadic call allocates its array, and these run
    /// inside the training step.
    @inline(__always) public static func key(_ a: UInt64, _ b: UInt64) -> UInt64 {
        fold(fold(0x2545_F491_4F6C_DD1D, a), b)
    }

    @inline(__always) public static func key(_ a: UInt64, _ b: UInt64, _ c: UInt64) -> UInt64 {
        fold(key(a, b), c)
    }

    @inline(__always) static func fold(_ h: UInt64, _ p: UInt64) -> UInt64 { mix(h ^ mix(p &+ 0x9E37_79B9_7F4A_7C15)) }

    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// Standard normal (Box-Muller; one draw per call keeps the stream position simple).
    public mutating func nextNormal() -> Double {
        let u1 = max(nextDouble(), 1e-300), u2 = nextDouble()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Uniform integer in 0..<n.
    public mutating func nextInt(below n: Int) -> Int {
        precondition(n > 0)
        return Int(next() % UInt64(n))  // bias < n / 2^64: negligible for data orders
    }
}
