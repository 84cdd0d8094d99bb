import Foundation

/// The plain Fourier attention of one (batch, head), in Double, straight from the formulas with
/// the full T x T matrices: the yardstick the fused kernels are tested against. Not for training.
public enum FourierReference {
    /// sinc(u) = sin(u)/u, sinc(0) = 1.
    public static func sinc(_ u: Double) -> Double { u == 0 ? 1 : sin(u) / u }

    /// psi(u) = cot(u) - 1/u, by its series for |u| < 1e-2.
    public static func psi(_ u: Double) -> Double {
        if abs(u) < 1e-2 { return -u / 3 - u * u * u / 45 - 2 * pow(u, 5) / 945 }
        return cos(u) / sin(u) - 1 / u
    }

    /// q, k (T, D), v (T, Dv), r (D): the per-dimension R of this head. Returns O (T, Dv) and A (T, T).
    public static func forward(
        q: [Double], k: [Double], v: [Double], r: [Double], T: Int, D: Int, Dv: Int,
        p: Int, eps: Double, causal: Bool
    ) -> (o: [Double], a: [Double]) {
        var w = [Double](repeating: 0, count: T * T)
        for i in 0..<T {
            for j in 0..<T where !(causal && j > i) {
                var y = 1.0
                for d in 0..<D { y *= sinc(r[d] * (q[i * D + d] - k[j * D + d])) }
                w[i * T + j] = pow(y, Double(p))
            }
        }
        var a = w, o = [Double](repeating: 0, count: T * Dv)
        for i in 0..<T {
            var s = eps
            for j in 0..<T { s += w[i * T + j] }
            for j in 0..<T {
                a[i * T + j] = w[i * T + j] / s
                for e in 0..<Dv { o[i * Dv + e] += a[i * T + j] * v[j * Dv + e] }
            }
        }
        return (o, a)
    }

    /// Gradients for g = dL/dO: dq, dk (T, D), dv (T, Dv), dR per dimension (D).
    public static func backward(
        q: [Double], k: [Double], v: [Double], r: [Double], g: [Double],
        T: Int, D: Int, Dv: Int, p: Int, eps: Double, causal: Bool
    )
        -> (dq: [Double], dk: [Double], dv: [Double], dRd: [Double])
    {
        let (o, a) = forward(q: q, k: k, v: v, r: r, T: T, D: D, Dv: Dv, p: p, eps: eps, causal: causal)
        var dq = [Double](repeating: 0, count: T * D), dk = dq, dRd = [Double](repeating: 0, count: D)
        var dv = [Double](repeating: 0, count: T * Dv)
        for i in 0..<T {
            var c = 0.0
            for e in 0..<Dv { c += g[i * Dv + e] * o[i * Dv + e] }
            for j in 0..<T {
                let aij = a[i * T + j]
                if aij == 0 { continue }
                var G = 0.0
                for e in 0..<Dv { G += g[i * Dv + e] * v[j * Dv + e]; dv[j * Dv + e] += aij * g[i * Dv + e] }
                let z = aij * (G - c) * Double(p)
                for d in 0..<D {
                    let delta = q[i * D + d] - k[j * D + d]
                    let ps = psi(r[d] * delta)
                    dq[i * D + d] += z * r[d] * ps
                    dk[j * D + d] -= z * r[d] * ps
                    dRd[d] += z * delta * ps
                }
            }
        }
        return (dq, dk, dv, dRd)
    }
}
