import FFCore
import Foundation

// The plain fp32 Fourier kernel: loops straight from the formulas of shared/fourierformer.md,
// one query row and one key at a time, libm's sin and cos per pair and dimension, no tables,
// tiles or vectors. It is meant to be read first, and it is what the fused kernel
// (FourierAttention.swift) is tested against; `model.attention.kernel: plain` trains with it.
//
// Shapes as in Attention.swift: qkv (B, T, 3C), out and dout (B, T, C), rowSum (B, H, T).

/// sin(u) / u, with sinc(0) = 1.
@inline(__always) func plainSinc(_ u: Float) -> Float { u == 0 ? 1 : sinf(u) / u }

/// psi(u) = d/du log|sinc u| = cot u − 1/u. Below |u| = 0.3 the two terms cancel in fp32, so
/// the series −u/3 − u³/45 − 2u⁵/945 (truncation < 1e-9 there) takes over.
@inline(__always) func plainPsi(_ u: Float) -> Float {
    if abs(u) < 0.3 {
        let u2 = u * u
        return -u * (1.0 / 3 + u2 * (1.0 / 45 + u2 * (2.0 / 945)))
    }
    return cosf(u) / sinf(u) - 1 / u
}

extension AttentionKernels {
    /// Forward of Fourier attention by the plain loops; same contract as `fourierForward`.
    func plainFourierForward(
        out: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Float>,
        qkv: UnsafePointer<Float>, R: UnsafePointer<Float>,
        spec: FourierSpec, shape s: AttentionShape
    ) {
        let T = s.seq, C = s.width, D = s.headDim
        parallelTasks(s.batch * s.heads, threads: threads) { task, _ in
            let b = task / s.heads, h = task % s.heads
            func q(_ t: Int) -> UnsafePointer<Float> { qkv + (b * T + t) * 3 * C + h * D }
            for i in 0..<T {
                let o = out + (b * T + i) * C + h * D  // (D)
                for e in 0..<D { o[e] = 0 }
                var S: Float = 0
                for j in 0..<(s.causal ? i + 1 : T) {
                    let k = q(j) + C, v = q(j) + 2 * C
                    var y: Float = 1
                    for d in 0..<D {
                        let r = R[spec.rMode.index(head: h, dim: d)]
                        y *= plainSinc(r * (q(i)[d] - k[d]))
                    }
                    let w = power(y, spec.p)
                    S += w
                    for e in 0..<D { o[e] += w * v[e] }
                }
                S += spec.eps
                rowSum[task * T + i] = S
                let inv: Float = S > 0 ? 1 / S : 0
                for e in 0..<D { o[e] *= inv }
            }
        }
    }

    /// Backward of Fourier attention by the plain loops; same contract as `fourierBackward`
    /// (accumulates into dqkv and dR). W is recomputed pair by pair.
    func plainFourierBackward(
        dqkv: UnsafeMutablePointer<Float>, dR: UnsafeMutablePointer<Float>,
        dout: UnsafePointer<Float>, out: UnsafePointer<Float>,
        qkv: UnsafePointer<Float>, R: UnsafePointer<Float>,
        rowSum: UnsafePointer<Float>, spec: FourierSpec, shape s: AttentionShape
    ) {
        let T = s.seq, C = s.width, D = s.headDim
        let tasks = s.batch * s.heads
        reserveDR(tasks * D)
        let partial = dRPartial, pf = Float(spec.p)
        parallelTasks(tasks, threads: threads) { task, _ in
            let b = task / s.heads, h = task % s.heads
            let dRTask = partial + task * D  // dR_d of this (b, h), in fp64
            for d in 0..<D { dRTask[d] = 0 }
            func row(_ t: Int) -> Int { (b * T + t) * 3 * C + h * D }
            for i in 0..<T {
                let q = qkv + row(i), dq = dqkv + row(i)
                let g = dout + (b * T + i) * C + h * D, o = out + (b * T + i) * C + h * D
                var c: Float = 0  // c_i = g_i · O_i
                for e in 0..<D { c += g[e] * o[e] }
                let invS = 1 / rowSum[task * T + i]
                for j in 0..<(s.causal ? i + 1 : T) {
                    let k = qkv + row(j) + C, v = k + C
                    let dk = dqkv + row(j) + C, dv = dk + C
                    var y: Float = 1
                    for d in 0..<D { y *= plainSinc(R[spec.rMode.index(head: h, dim: d)] * (q[d] - k[d])) }
                    let a = power(y, spec.p) * invS
                    if a == 0 { continue }  // also where sin u = 0: psi is inf
                    var G: Float = 0  // G_ij = g_i · v_j
                    for e in 0..<D {
                        G += g[e] * v[e]
                        dv[e] += a * g[e]
                    }
                    let z = pf * a * (G - c)  // dL/d log W_ij, times p
                    for d in 0..<D {
                        let r = R[spec.rMode.index(head: h, dim: d)]
                        let delta = q[d] - k[d]
                        let t = z * plainPsi(r * delta)
                        dq[d] += r * t
                        dk[d] -= r * t
                        dRTask[d] += Double(t) * Double(delta)
                    }
                }
            }
        }
        reduceDR(dR, partial: partial, spec: spec, shape: s)
    }

    /// Adds the per-(b, h) partial dR_d (B·H rows of D, fp64) into dR by R's sharing mode, in
    /// task order so that the result does not depend on the thread count.
    func reduceDR(
        _ dR: UnsafeMutablePointer<Float>, partial: UnsafePointer<Double>,
        spec: FourierSpec, shape s: AttentionShape
    ) {
        let D = s.headDim, tasks = s.batch * s.heads
        switch spec.rMode {
        case .scalar:
            var total = 0.0
            for task in 0..<tasks { for d in 0..<D { total += partial[task * D + d] } }
            dR[0] += Float(total)
        case .perDim:
            for d in 0..<D {
                var total = 0.0
                for task in 0..<tasks { total += partial[task * D + d] }
                dR[d] += Float(total)
            }
        case .perHead:
            for h in 0..<s.heads {
                var total = 0.0
                for b in 0..<s.batch { for d in 0..<D { total += partial[(b * s.heads + h) * D + d] } }
                dR[h] += Float(total)
            }
        }
    }
}
