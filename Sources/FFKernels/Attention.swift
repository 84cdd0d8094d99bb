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
    /// Per-worker scratch of the Fourier kernel.
    let fourierScratch: [FourierScratch]
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
        fourierScratch = (0..<self.threads).map { _ in FourierScratch(T: maxSeq, D: headDim) }
    }

    deinit {
        work.deallocate()
        dRPartial.deallocate()
    }

    func reserveDR(_ n: Int) { ensurePartial(n) }

    private func ensurePartial(_ n: Int) {
        if n > dRPartialCount {
            dRPartial.deallocate()
            dRPartial = .allocate(capacity: n)
            dRPartialCount = n
        }
    }

    /// Bytes of workspace held.
    public var workspaceBytes: Int {
        perWorker * threads * MemoryLayout<F8>.stride + dRPartialCount * 8 + fourierScratch.reduce(0) { $0 + $1.bytes }
    }

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
