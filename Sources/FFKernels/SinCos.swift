import Foundation

// sin and cos of 8 floats at once, for the Fourier kernel's per-token tables (scalar libm calls
// were 11% of a ViT step). The argument is reduced by k·π/2 with π/2 split in three parts
// (Cody–Waite: k·part1 and k·part2 are exact for |k| < 2^12), then Taylor polynomials on
// [−π/4, π/4] (truncation < 2e-9) and the quadrant k mod 4 swaps and negates. |x| above
// `sinCosVectorLimit` falls back to libm, where the reduction would lose accuracy.

/// Largest |x| handled by the vector path (k stays below 2^12).
let sinCosVectorLimit: Float = 4000

private let halfPi = Double.pi / 2
/// π/2 with its low 12 mantissa bits cleared, so k·part1 is exact.
private let piOver2Part1 = Float(bitPattern: Float(halfPi).bitPattern & 0xFFFF_F000)
private let piOver2Part2 = Float(bitPattern: Float(halfPi - Double(piOver2Part1)).bitPattern & 0xFFFF_F000)
private let piOver2Part3 = Float(halfPi - Double(piOver2Part1) - Double(piOver2Part2))

/// (sin x, cos x) per lane; absolute error < 3e-7 for |x| <= `sinCosVectorLimit`.
@inline(__always) func sinCos(_ x: F8) -> (sin: F8, cos: F8) {
    let k = (x * Float(2 / Double.pi)).rounded(.toNearestOrEven)
    var r = x.addingProduct(-k, SIMD8(repeating: piOver2Part1))
    r = r.addingProduct(-k, SIMD8(repeating: piOver2Part2))
    r = r.addingProduct(-k, SIMD8(repeating: piOver2Part3))
    let r2 = r * r
    // sin r = r (1 − r²/3! + r⁴/5! − r⁶/7! + r⁸/9!), cos r = 1 − r²/2! + ... + r¹⁰/10!
    var ps = SIMD8(repeating: -1.0 / 5040).addingProduct(r2, SIMD8(repeating: 1.0 / 362_880))
    ps = SIMD8(repeating: 1.0 / 120).addingProduct(r2, ps)
    ps = SIMD8(repeating: -1.0 / 6).addingProduct(r2, ps)
    let s = r.addingProduct(r * r2, ps)
    var pc = SIMD8(repeating: 1.0 / 40320).addingProduct(r2, SIMD8(repeating: -1.0 / 3_628_800))
    pc = SIMD8(repeating: -1.0 / 720).addingProduct(r2, pc)
    pc = SIMD8(repeating: 1.0 / 24).addingProduct(r2, pc)
    pc = SIMD8(repeating: -0.5).addingProduct(r2, pc)
    let c = SIMD8<Float>(repeating: 1).addingProduct(r2, pc)
    // Quadrant q = k mod 4 (in float: a generic Int32 conversion would not vectorise): q odd
    // swaps sin and cos; sin is negated for q = 2, 3, cos for q = 1, 2.
    let q = k - 4 * (k * 0.25).rounded(.down)
    let odd = q - 2 * (q * 0.5).rounded(.down) .== 1
    var sinX = s.replacing(with: c, where: odd)
    var cosX = c.replacing(with: s, where: odd)
    sinX.replace(with: -sinX, where: q .>= 2)
    cosX.replace(with: -cosX, where: (q - 1.5) * (q - 1.5) .< 0.5) // q = 1 or 2
    return (sinX, cosX)
}

/// sin and cos of x[0..<n] into s and c (any of them may not alias).
public func sinCos(_ x: UnsafePointer<Float>, sin s: UnsafeMutablePointer<Float>,
                   cos c: UnsafeMutablePointer<Float>, count n: Int) {
    let chunks = n / 8
    let rx = UnsafeRawPointer(x), rs = UnsafeMutableRawPointer(s), rc = UnsafeMutableRawPointer(c)
    for i in 0..<chunks {
        let v = rx.loadUnaligned(fromByteOffset: i * 32, as: SIMD8<Float>.self)
        if v.max() > sinCosVectorLimit || v.min() < -sinCosVectorLimit {
            for l in 0..<8 { s[i * 8 + l] = sinf(v[l]); c[i * 8 + l] = cosf(v[l]) }
            continue
        }
        let (sv, cv) = sinCos(v)
        rs.storeBytes(of: sv, toByteOffset: i * 32, as: SIMD8<Float>.self)
        rc.storeBytes(of: cv, toByteOffset: i * 32, as: SIMD8<Float>.self)
    }
    for i in (chunks * 8)..<n { s[i] = sinf(x[i]); c[i] = cosf(x[i]) }
}
