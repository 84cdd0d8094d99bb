import Foundation

// Shapes used in this file:
//   B batch, T sequence length, H heads, D head dimension, C = H * D model width.
//   qkv (B, T, 3C): q of head h at [b, t, h*D + d], k at [.., C + h*D + d], v at [.., 2C + h*D + d]
//   out (B, T, C):  head h at [b, t, h*D + d]
//   rowStat (B, H, T): what backward needs per query row (Fourier: S = Σ_j W + eps;
//                      softmax: log-sum-exp of the scaled scores)
// Head dimensions are padded to Dp = 8 * ceil(D / 8) lanes inside the kernels. A padded lane has
// q = k = v = 0 and R = 0, hence u = 0, sinc(u) = 1 and psi(u) = 0: it changes nothing.

/// How the Fourier kernel's scale R is shared.
public enum RMode: String, Sendable, CaseIterable {
    /// One scalar per layer, shared by all heads and dimensions (the paper's default).
    case scalar
    /// One value per head dimension, shared by heads: R has D entries.
    case perDim = "per_dim"
    /// One scalar per head: R has H entries.
    case perHead = "per_head"

    /// Number of entries of R for a layer with `heads` heads of dimension `headDim`.
    public func count(heads: Int, headDim: Int) -> Int {
        switch self {
        case .scalar: return 1
        case .perDim: return headDim
        case .perHead: return heads
        }
    }
}

/// Generalised Fourier integral attention: W = Π_d sinc(R_d (q_d - k_d))^p, A = W / (Σ_j W + eps).
public struct FourierSpec: Sendable, Equatable {
    public var p: Int
    public var eps: Float
    public var rMode: RMode
    public init(p: Int = 4, eps: Float = 1e-6, rMode: RMode = .scalar) {
        self.p = p; self.eps = eps; self.rMode = rMode
    }
}

/// The attention geometry of one layer call.
public struct AttentionShape: Sendable, Equatable {
    public var batch: Int, seq: Int, heads: Int, headDim: Int
    public var causal: Bool
    public init(batch: Int, seq: Int, heads: Int, headDim: Int, causal: Bool) {
        self.batch = batch; self.seq = seq; self.heads = heads; self.headDim = headDim; self.causal = causal
    }
    public var width: Int { heads * headDim }
}

typealias F8 = SIMD8<Float>

/// Fused attention kernels (Fourier and softmax), forward and backward, that never build a
/// T x T matrix: backward recomputes the pair weights from the saved per-row statistic.
/// Owns its per-thread workspace, sized once for (T, D, threads); calls allocate nothing.
public final class AttentionKernels {
    public let maxSeq: Int, headDim: Int, threads: Int
    let nc: Int  // SIMD8 chunks per head vector
    // Per worker: 11 tables of (T, nc) chunks, then 4 rows of nc chunks for one query row.
    let tableCount = 11
    let perWorker: Int
    let work: UnsafeMutablePointer<F8>
    /// Per (b, h) partial dR, reduced in a fixed order so results do not depend on threads.
    var dRPartial: UnsafeMutablePointer<Double>
    var dRPartialCount: Int

    public init(maxSeq: Int, headDim: Int, threads: Int) {
        self.maxSeq = maxSeq; self.headDim = headDim; self.threads = max(1, threads)
        nc = (headDim + 7) / 8
        perWorker = tableCount * maxSeq * nc + 4 * nc
        work = .allocate(capacity: perWorker * self.threads)
        work.initialize(repeating: F8(), count: perWorker * self.threads)
        dRPartialCount = 0
        dRPartial = .allocate(capacity: 1)
    }

    deinit {
        work.deallocate()
        dRPartial.deallocate()
    }

    private func ensurePartial(_ n: Int) {
        if n > dRPartialCount {
            dRPartial.deallocate()
            dRPartial = .allocate(capacity: n)
            dRPartialCount = n
        }
    }

    /// Bytes of workspace held.
    public var workspaceBytes: Int { perWorker * threads * MemoryLayout<F8>.stride + dRPartialCount * 8 }

    /// Reserves what a backward with this shape needs, so that the step itself allocates nothing.
    public func reserve(_ s: AttentionShape) {
        precondition(s.seq <= maxSeq && s.headDim == headDim, "attention workspace too small")
        ensurePartial(s.batch * s.heads * nc * 8)
    }

    /// The table t (0..<11) of worker w: (T, nc) chunks.
    @inline(__always) private func table(_ w: Int, _ t: Int) -> UnsafeMutablePointer<F8> {
        work + w * perWorker + t * maxSeq * nc
    }

    /// Loads q, k, v of head (b, h) into padded tables; returns nothing, fills qT, kT, vT.
    @inline(__always)
    private func load(_ qkv: UnsafePointer<Float>, _ s: AttentionShape, b: Int, h: Int,
                      q qT: UnsafeMutablePointer<F8>, k kT: UnsafeMutablePointer<F8>,
                      v vT: UnsafeMutablePointer<F8>) {
        let C = s.width, D = s.headDim
        for t in 0..<s.seq {
            let row = qkv + (b * s.seq + t) * 3 * C + h * D
            for c in 0..<nc {
                var q = F8(), k = F8(), v = F8()
                for l in 0..<8 where c * 8 + l < D {
                    q[l] = row[c * 8 + l]; k[l] = row[C + c * 8 + l]; v[l] = row[2 * C + c * 8 + l]
                }
                qT[t * nc + c] = q; kT[t * nc + c] = k; vT[t * nc + c] = v
            }
        }
    }

    /// Loads row i of dout (head h) into padded chunks `gi`; returns c_i = g_i · O_i.
    @inline(__always)
    private func loadGradientRow(_ dout: UnsafePointer<Float>, _ out: UnsafePointer<Float>, _ s: AttentionShape,
                                 b: Int, h: Int, i: Int, into gi: UnsafeMutablePointer<F8>) -> Float {
        let D = s.headDim, at = (b * s.seq + i) * s.width + h * D
        var ci: Float = 0
        for c in 0..<nc {
            var gv = F8()
            for l in 0..<8 where c * 8 + l < D { gv[l] = dout[at + c * 8 + l]; ci += dout[at + c * 8 + l] * out[at + c * 8 + l] }
            gi[c] = gv
        }
        return ci
    }

    /// Adds the per-head dk and dv tables (T, nc) into dqkv (B, T, 3C).
    @inline(__always)
    private func storeKeyValueGradients(_ dkT: UnsafePointer<F8>, _ dvT: UnsafePointer<F8>, into dqkv: UnsafeMutablePointer<Float>,
                                        _ s: AttentionShape, b: Int, h: Int) {
        let C = s.width, D = s.headDim
        for t in 0..<s.seq {
            let row = dqkv + (b * s.seq + t) * 3 * C + h * D
            for c in 0..<nc {
                for l in 0..<8 where c * 8 + l < D {
                    row[C + c * 8 + l] += dkT[t * nc + c][l]
                    row[2 * C + c * 8 + l] += dvT[t * nc + c][l]
                }
            }
        }
    }

    /// R of head h as padded chunks (padding lanes 0).
    @inline(__always)
    private func rChunk(_ R: UnsafePointer<Float>, mode: RMode, h: Int, c: Int, D: Int) -> F8 {
        var r = F8()
        for l in 0..<8 where c * 8 + l < D {
            switch mode {
            case .scalar: r[l] = R[0]
            case .perDim: r[l] = R[c * 8 + l]
            case .perHead: r[l] = R[h]
            }
        }
        return r
    }

    /// rq = R q, with sin and cos tables of rq (and the same for k).
    @inline(__always)
    private func scaleAndTabulate(_ x: UnsafePointer<F8>, _ rx: UnsafeMutablePointer<F8>,
                                  _ sx: UnsafeMutablePointer<F8>, _ cx: UnsafeMutablePointer<F8>,
                                  r: UnsafePointer<F8>, T: Int) {
        for t in 0..<T {
            for c in 0..<nc {
                let u = x[t * nc + c] * r[c]
                rx[t * nc + c] = u
                var s = F8(), co = F8()
                for l in 0..<8 { s[l] = sinf(u[l]); co[l] = cosf(u[l]) }
                sx[t * nc + c] = s; cx[t * nc + c] = co
            }
        }
    }

    // MARK: Fourier

    /// Forward of Fourier attention.
    /// - Parameters:
    ///   - out: (B, T, C) attention output, overwritten.
    ///   - rowSum: (B, H, T) receives S_i = Σ_j W_ij + eps for backward and health metrics.
    ///   - qkv: (B, T, 3C); R: the layer's R (1, D or H entries by `spec.rMode`).
    public func fourierForward(out: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Float>,
                               qkv: UnsafePointer<Float>, R: UnsafePointer<Float>,
                               spec: FourierSpec, shape s: AttentionShape) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        let T = s.seq, C = s.width, D = s.headDim, nc = self.nc
        parallelFor(s.batch * s.heads, threads: threads) { task, w in
            let b = task / s.heads, h = task % s.heads
            let qT = table(w, 0), kT = table(w, 1), vT = table(w, 2)
            let rq = table(w, 3), rk = table(w, 4), sq = table(w, 5), cq = table(w, 6)
            let sk = table(w, 7), ck = table(w, 8), accT = table(w, 9)
            let rr = work + w * perWorker + tableCount * maxSeq * nc
            load(qkv, s, b: b, h: h, q: qT, k: kT, v: vT)
            for c in 0..<nc { rr[c] = rChunk(R, mode: spec.rMode, h: h, c: c, D: D) }
            scaleAndTabulate(qT, rq, sq, cq, r: rr, T: T)
            scaleAndTabulate(kT, rk, sk, ck, r: rr, T: T)
            for i in 0..<T {
                let acc = accT
                for c in 0..<nc { acc[c] = F8() }
                var sumW: Float = 0
                let jEnd = s.causal ? i + 1 : T
                for j in 0..<jEnd {
                    let wgt = fourierWeight(i, j, rq, rk, sq, cq, sk, ck, p: spec.p)
                    if wgt == 0 { continue }
                    sumW += wgt
                    for c in 0..<nc { acc[c] += wgt * vT[j * nc + c] }
                }
                let S = sumW + spec.eps
                rowSum[(b * s.heads + h) * T + i] = S
                let o = out + (b * T + i) * C + h * D
                let inv = S > 0 ? 1 / S : 0
                for c in 0..<nc {
                    let a = acc[c] * inv
                    for l in 0..<8 where c * 8 + l < D { o[c * 8 + l] = a[l] }
                }
            }
        }
    }

    /// W_ij = Π_d sinc(u_d)^p with u = rq_i - rk_j, sin u from the angle-difference identity and
    /// sinc by its series where |u| < 0.3 (the identity loses relative accuracy there).
    @inline(__always)
    private func fourierWeight(_ i: Int, _ j: Int, _ rq: UnsafePointer<F8>, _ rk: UnsafePointer<F8>,
                               _ sq: UnsafePointer<F8>, _ cq: UnsafePointer<F8>,
                               _ sk: UnsafePointer<F8>, _ ck: UnsafePointer<F8>, p: Int) -> Float {
        var y = F8(repeating: 1)
        for c in 0..<nc {
            let u = rq[i * nc + c] - rk[j * nc + c]
            let su = sq[i * nc + c] * ck[j * nc + c] - cq[i * nc + c] * sk[j * nc + c]
            y *= sincChunk(u, su)
        }
        let Y = ((y[0] * y[1]) * (y[2] * y[3])) * ((y[4] * y[5]) * (y[6] * y[7]))
        // Below 1e-9, Y^4 < 1e-36 would enter fp32's subnormal range, where every operation traps
        // to microcode (~100x slower) for a weight that rounds to nothing against eps anyway.
        if Y * Y < 1e-18 { return 0 }
        return power(Y, p)
    }

    /// Backward of Fourier attention. Accumulates into dqkv (B, T, 3C) and dR (entries of R).
    /// - Parameters:
    ///   - dout: (B, T, C) gradient of the output; out: (B, T, C) the forward output.
    ///   - rowSum: (B, H, T) saved by the forward.
    public func fourierBackward(dqkv: UnsafeMutablePointer<Float>, dR: UnsafeMutablePointer<Float>,
                                dout: UnsafePointer<Float>, out: UnsafePointer<Float>,
                                qkv: UnsafePointer<Float>, R: UnsafePointer<Float>,
                                rowSum: UnsafePointer<Float>, spec: FourierSpec, shape s: AttentionShape) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        let T = s.seq, C = s.width, D = s.headDim, nc = self.nc
        let tasks = s.batch * s.heads
        ensurePartial(tasks * nc * 8)
        let partial = dRPartial
        let pf = Float(spec.p)
        parallelFor(tasks, threads: threads) { task, w in
            let b = task / s.heads, h = task % s.heads
            let qT = table(w, 0), kT = table(w, 1), vT = table(w, 2)
            let rq = table(w, 3), rk = table(w, 4), sq = table(w, 5), cq = table(w, 6)
            let sk = table(w, 7), ck = table(w, 8), dkT = table(w, 9), dvT = table(w, 10)
            let rr = work + w * perWorker + tableCount * maxSeq * nc
            let gi = rr + nc, dqi = rr + 2 * nc
            load(qkv, s, b: b, h: h, q: qT, k: kT, v: vT)
            for c in 0..<nc { rr[c] = rChunk(R, mode: spec.rMode, h: h, c: c, D: D) }
            scaleAndTabulate(qT, rq, sq, cq, r: rr, T: T)
            scaleAndTabulate(kT, rk, sk, ck, r: rr, T: T)
            for t in 0..<(T * nc) { dkT[t] = F8(); dvT[t] = F8() }
            // dR is a sum of terms far larger than itself: accumulate each row's terms in Float
            // (drRow), then the rows in Double (dRTask).
            let drRow = rr + 3 * nc
            let dRTask = partial + task * nc * 8
            for l in 0..<(nc * 8) { dRTask[l] = 0 }
            for i in 0..<T {
                let ci = loadGradientRow(dout, out, s, b: b, h: h, i: i, into: gi)
                for c in 0..<nc { dqi[c] = F8(); drRow[c] = F8() }
                let invS = 1 / rowSum[(b * s.heads + h) * T + i]
                let jEnd = s.causal ? i + 1 : T
                for j in 0..<jEnd {
                    let wgt = fourierWeight(i, j, rq, rk, sq, cq, sk, ck, p: spec.p)
                    if wgt == 0 { continue }
                    let a = wgt * invS
                    var G: Float = 0
                    for c in 0..<nc { G += (gi[c] * vT[j * nc + c]).sum() }
                    let z = pf * a * (G - ci)
                    for c in 0..<nc {
                        dvT[j * nc + c] += a * gi[c]
                        let u = rq[i * nc + c] - rk[j * nc + c]
                        let su = sq[i * nc + c] * ck[j * nc + c] - cq[i * nc + c] * sk[j * nc + c]
                        let cu = cq[i * nc + c] * ck[j * nc + c] + sq[i * nc + c] * sk[j * nc + c]
                        let zp = z * psiChunk(u, su, cu)
                        let zpr = zp * rr[c]
                        dqi[c] += zpr
                        dkT[j * nc + c] -= zpr
                        // (q - k) rather than u / R: R may be zero.
                        drRow[c] += zp * (qT[i * nc + c] - kT[j * nc + c])
                    }
                }
                let dq = dqkv + (b * T + i) * 3 * C + h * D
                for c in 0..<nc {
                    for l in 0..<8 where c * 8 + l < D { dq[c * 8 + l] += dqi[c][l] }
                    for l in 0..<8 { dRTask[c * 8 + l] += Double(drRow[c][l]) }
                }
            }
            storeKeyValueGradients(dkT, dvT, into: dqkv, s, b: b, h: h)
        }
        // Reduce the per-(b, h) dR in task order, in Double.
        let stride = nc * 8
        switch spec.rMode {
        case .scalar:
            var total = 0.0
            for task in 0..<tasks { for d in 0..<D { total += partial[task * stride + d] } }
            dR[0] += Float(total)
        case .perDim:
            for d in 0..<D {
                var total = 0.0
                for task in 0..<tasks { total += partial[task * stride + d] }
                dR[d] += Float(total)
            }
        case .perHead:
            for h in 0..<s.heads {
                var total = 0.0
                for b in 0..<s.batch { for d in 0..<D { total += partial[(b * s.heads + h) * stride + d] } }
                dR[h] += Float(total)
            }
        }
    }

    // MARK: Softmax

    /// Forward of causal/non-causal softmax attention with 1/sqrt(D) scaling.
    /// rowLSE (B, H, T) receives each row's log-sum-exp of the scaled scores.
    public func softmaxForward(out: UnsafeMutablePointer<Float>, rowLSE: UnsafeMutablePointer<Float>,
                               qkv: UnsafePointer<Float>, shape s: AttentionShape) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        let T = s.seq, C = s.width, D = s.headDim, nc = self.nc
        let scale = 1 / Float(D).squareRoot()
        parallelFor(s.batch * s.heads, threads: threads) { task, w in
            let b = task / s.heads, h = task % s.heads
            let qT = table(w, 0), kT = table(w, 1), vT = table(w, 2), accT = table(w, 9)
            // Scores of one row live in table 3 viewed as Floats (T <= maxSeq * nc * 8).
            let scores = UnsafeMutableRawPointer(table(w, 3)).assumingMemoryBound(to: Float.self)
            load(qkv, s, b: b, h: h, q: qT, k: kT, v: vT)
            for i in 0..<T {
                let jEnd = s.causal ? i + 1 : T
                var mx = -Float.infinity
                for j in 0..<jEnd {
                    var dot = F8()
                    for c in 0..<nc { dot += qT[i * nc + c] * kT[j * nc + c] }
                    let sc = dot.sum() * scale
                    scores[j] = sc
                    mx = max(mx, sc)
                }
                for c in 0..<nc { accT[c] = F8() }
                var l: Float = 0
                for j in 0..<jEnd {
                    let e = expf(scores[j] - mx)
                    l += e
                    for c in 0..<nc { accT[c] += e * vT[j * nc + c] }
                }
                rowLSE[(b * s.heads + h) * T + i] = mx + logf(l)
                let o = out + (b * T + i) * C + h * D
                let inv = 1 / l
                for c in 0..<nc { let a = accT[c] * inv; for ll in 0..<8 where c * 8 + ll < D { o[c * 8 + ll] = a[ll] } }
            }
        }
    }

    /// Backward of softmax attention; accumulates into dqkv (B, T, 3C).
    public func softmaxBackward(dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                out: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
                                rowLSE: UnsafePointer<Float>, shape s: AttentionShape) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        let T = s.seq, C = s.width, D = s.headDim, nc = self.nc
        let scale = 1 / Float(D).squareRoot()
        parallelFor(s.batch * s.heads, threads: threads) { task, w in
            let b = task / s.heads, h = task % s.heads
            let qT = table(w, 0), kT = table(w, 1), vT = table(w, 2)
            let dkT = table(w, 9), dvT = table(w, 10)
            let gi = work + w * perWorker + tableCount * maxSeq * nc, dqi = gi + nc
            load(qkv, s, b: b, h: h, q: qT, k: kT, v: vT)
            for t in 0..<(T * nc) { dkT[t] = F8(); dvT[t] = F8() }
            for i in 0..<T {
                let ci = loadGradientRow(dout, out, s, b: b, h: h, i: i, into: gi)
                for c in 0..<nc { dqi[c] = F8() }
                let lse = rowLSE[(b * s.heads + h) * T + i]
                let jEnd = s.causal ? i + 1 : T
                for j in 0..<jEnd {
                    var dot = F8(), gv = F8()
                    for c in 0..<nc { dot += qT[i * nc + c] * kT[j * nc + c]; gv += gi[c] * vT[j * nc + c] }
                    let pij = expf(dot.sum() * scale - lse)
                    let dS = pij * (gv.sum() - ci) * scale
                    for c in 0..<nc {
                        dvT[j * nc + c] += pij * gi[c]
                        dqi[c] += dS * kT[j * nc + c]
                        dkT[j * nc + c] += dS * qT[i * nc + c]
                    }
                }
                let dq = dqkv + (b * T + i) * 3 * C + h * D
                for c in 0..<nc { for l in 0..<8 where c * 8 + l < D { dq[c * 8 + l] += dqi[c][l] } }
            }
            storeKeyValueGradients(dkT, dvT, into: dqkv, s, b: b, h: h)
        }
    }
}

/// sinc(u) = sin(u)/u per lane, given sin(u); by its series where |u| < 0.3.
@inline(__always) func sincChunk(_ u: F8, _ su: F8) -> F8 {
    let u2 = u * u
    let c3: Float = 1.0 / 5040, c2: Float = 1.0 / 120, c1: Float = 1.0 / 6
    let t2: F8 = c2 - u2 * c3
    let t1: F8 = c1 - u2 * t2
    let series: F8 = 1 - u2 * t1
    var s = su / u
    s.replace(with: series, where: u2 .< 0.09)
    return s
}

/// psi(u) = d/du log|sinc u| = cot u - 1/u per lane, given sin u and cos u; its series where
/// |u| < 0.3, where the closed form cancels catastrophically in fp32.
@inline(__always) func psiChunk(_ u: F8, _ su: F8, _ cu: F8) -> F8 {
    let u2 = u * u
    let c3: Float = 2.0 / 945, c2: Float = 1.0 / 45, c1: Float = 1.0 / 3
    let t2: F8 = c2 + u2 * c3
    let t1: F8 = c1 + u2 * t2
    let series: F8 = -u * t1
    var r = (u * cu - su) / (u * su)
    r.replace(with: series, where: u2 .< 0.09)
    return r
}

/// x^p for an even p >= 2 (p = 4 is two squarings).
@inline(__always) func power(_ x: Float, _ p: Int) -> Float {
    if p == 4 { let x2 = x * x; return x2 * x2 }
    var r: Float = 1
    for _ in 0..<p { r *= x }
    return r
}
