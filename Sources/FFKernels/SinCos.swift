import Foundation

// sin and cos of `lanes` floats at once, for the Fourier kernel's per-token tables (scalar libm calls
// are a visible share of a ViT step). The argument is reduced by k·π/2 with π/2 split in three parts
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
@inline(__always) func sinCos(_ x: FV) -> (sin: FV, cos: FV) {
    let k = (x * Float(2 / Double.pi)).rounded(.toNearestOrEven)
    var r = x.addingProduct(-k, FV(repeating: piOver2Part1))
    r = r.addingProduct(-k, FV(repeating: piOver2Part2))
    r = r.addingProduct(-k, FV(repeating: piOver2Part3))
    let r2 = r * r
    // sin r = r (1 − r²/3! + r⁴/5! − r⁶/7! + r⁸/9!), cos r = 1 − r²/2! + ... + r¹⁰/10!
    var ps = FV(repeating: -1.0 / 5040).addingProduct(r2, FV(repeating: 1.0 / 362_880))
    ps = FV(repeating: 1.0 / 120).addingProduct(r2, ps)
    ps = FV(repeating: -1.0 / 6).addingProduct(r2, ps)
    let s = r.addingProduct(r * r2, ps)
    var pc = FV(repeating: 1.0 / 40320).addingProduct(r2, FV(repeating: -1.0 / 3_628_800))
    pc = FV(repeating: -1.0 / 720).addingProduct(r2, pc)
    pc = FV(repeating: 1.0 / 24).addingProduct(r2, pc)
    pc = FV(repeating: -0.5).addingProduct(r2, pc)
    let c = FV(repeating: 1).addingProduct(r2, pc)
    // Quadrant q = k mod 4 (in float: a generic Int32 conversion would not vectorise): q odd
    // swaps sin and cos; sin is negated for q = 2, 3, cos for q = 1, 2.
    let q = k - 4 * (k * 0.25).rounded(.down)
    let odd = q - 2 * (q * 0.5).rounded(.down) .== 1
    var sinX = s.replacing(with: c, where: odd)
    var cosX = c.replacing(with: s, where: odd)
    sinX.replace(with: -sinX, where: q .>= 2)
    cosX.replace(with: -cosX, where: (q - 1.5) * (q - 1.5) .< 0.5)  // q = 1 or 2
    return (sinX, cosX)
}

/// sin and cos of x[0..<n] into s and c (any of them may not alias).
public func sinCos(
    _ x: UnsafePointer<Float>, sin s: UnsafeMutablePointer<Float>,
    cos c: UnsafeMutablePointer<Float>, count n: Int
) {
    let chunks = n / lanes, bytes = lanes * 4
    let rx = UnsafeRawPointer(x), rs = UnsafeMutableRawPointer(s), rc = UnsafeMutableRawPointer(c)
    var outOfRange = FV()
    for i in 0..<chunks {
        let v = rx.loadUnaligned(fromByteOffset: i * bytes, as: FV.self)
        outOfRange.replace(with: FV(repeating: 1), where: magnitude(v) .> sinCosVectorLimit)
        let (sv, cv) = sinCos(v)
        rs.storeBytes(of: sv, toByteOffset: i * bytes, as: FV.self)
        rc.storeBytes(of: cv, toByteOffset: i * bytes, as: FV.self)
    }
    for i in (chunks * lanes)..<n { s[i] = sinf(x[i]); c[i] = cosf(x[i]) }
    if outOfRange.sum() > 0 {
        for i in 0..<(chunks * lanes) where abs(x[i]) > sinCosVectorLimit { s[i] = sinf(x[i]); c[i] = cosf(x[i]) }
    }
}
