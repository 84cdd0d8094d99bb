import Foundation

// Fused Fourier attention, vectorised over keys: lanes of a SIMD8 are 8 keys j of one query row i.
// Key-side tables are transposed, (D, Tp) with Tp = T rounded up to 8, so that dimension d of 8
// consecutive keys is one vector load; query-side values are scalars broadcast across lanes.
// Padding keys (j >= T) and masked keys (j > i) get W = 0 by a lane mask.

/// Per-worker scratch of the key-vectorised Fourier kernel, sized once for (T, D).
final class FourierScratch {
    let T: Int, D: Int, Tp: Int
    // Key side, transposed (D, Tp): R k, sin(R k), cos(R k), v, and the dk, dv accumulators.
    let rk, sk, ck, v, dk, dv: UnsafeMutablePointer<Float>
    // Query side, row-major (T, D): R q, sin(R q), cos(R q).
    let rq, sq, cq: UnsafeMutablePointer<Float>
    // Per query row, D vectors: output / dq / dR accumulators; and g_i (D floats).
    let acc, acc2: UnsafeMutablePointer<F8>
    let g, r: UnsafeMutablePointer<Float>
    private let base: UnsafeMutablePointer<Float>
    private let vecs: UnsafeMutablePointer<F8>

    init(T: Int, D: Int) {
        self.T = T; self.D = D; Tp = (T + 7) / 8 * 8
        let keySize = D * Tp, querySize = T * D
        base = .allocate(capacity: 6 * keySize + 3 * querySize + 2 * D)
        base.initialize(repeating: 0, count: 6 * keySize + 3 * querySize + 2 * D)
        var p = base
        func take(_ n: Int) -> UnsafeMutablePointer<Float> { defer { p += n }; return p }
        rk = take(keySize); sk = take(keySize); ck = take(keySize); v = take(keySize)
        dk = take(keySize); dv = take(keySize)
        rq = take(querySize); sq = take(querySize); cq = take(querySize)
        g = take(D); r = take(D)
        vecs = .allocate(capacity: 2 * D)
        vecs.initialize(repeating: F8(), count: 2 * D)
        acc = vecs; acc2 = vecs + D
    }

    deinit { base.deallocate(); vecs.deallocate() }

    var bytes: Int { (6 * D * Tp + 3 * T * D + 2 * D) * 4 + 2 * D * 32 }

    /// Fills the tables for head (b, h) from qkv (B, T, 3C), with R_d in `r`.
    func load(_ qkv: UnsafePointer<Float>, _ s: AttentionShape, b: Int, h: Int) {
        let C = s.width, T = s.seq
        for t in 0..<T {
            let row = qkv + (b * T + t) * 3 * C + h * D
            for d in 0..<D {
                let qd = row[d], kd = row[C + d], rqd = r[d] * qd, rkd = r[d] * kd
                rq[t * D + d] = rqd; sq[t * D + d] = sinf(rqd); cq[t * D + d] = cosf(rqd)
                rk[d * Tp + t] = rkd; sk[d * Tp + t] = sinf(rkd); ck[d * Tp + t] = cosf(rkd)
                v[d * Tp + t] = row[2 * C + d]
            }
        }
        for d in 0..<D {
            for t in T..<Tp { rk[d * Tp + t] = 0; sk[d * Tp + t] = 0; ck[d * Tp + t] = 1; v[d * Tp + t] = 0 }
        }
    }

    @inline(__always) func keys(_ table: UnsafeMutablePointer<Float>, _ d: Int, _ j0: Int) -> F8 {
        UnsafeRawPointer(table + d * Tp + j0).loadUnaligned(as: F8.self)
    }

    @inline(__always) func addKeys(_ table: UnsafeMutablePointer<Float>, _ d: Int, _ j0: Int, _ x: F8) {
        let p = UnsafeMutableRawPointer(table + d * Tp + j0)
        p.storeBytes(of: p.loadUnaligned(as: F8.self) + x, as: F8.self)
    }

    /// table[d, j0..<j0+8] += a * b, fused.
    @inline(__always) func addKeys(_ table: UnsafeMutablePointer<Float>, _ d: Int, _ j0: Int, _ a: F8, _ b: F8) {
        let p = UnsafeMutableRawPointer(table + d * Tp + j0)
        p.storeBytes(of: p.loadUnaligned(as: F8.self).addingProduct(a, b), as: F8.self)
    }

    /// W for query i and keys j0..<j0+8 (0 where j >= jEnd).
    @inline(__always) func weights(_ i: Int, _ j0: Int, jEnd: Int, p: Int) -> F8 {
        // Y = Π_d sin(u_d)/u_d with one division per block of 4 dimensions: numerators and
        // denominators are multiplied separately. Lanes with |u| < 0.3 take the series in the
        // numerator and 1 in the denominator, so a denominator is at least 0.3^4 and at most
        // (max|u|)^4; |numerator| <= 1.
        var y = F8(repeating: 1)
        var d = 0
        let qRow = i * D
        while d < D {
            var num = F8(repeating: 1), den = F8(repeating: 1)
            let end = Swift.min(d + 4, D)
            while d < end {
                let u = F8(repeating: rq[qRow + d]) - keys(rk, d, j0)
                let su = (F8(repeating: sq[qRow + d]) * keys(ck, d, j0)).addingProduct(F8(repeating: -cq[qRow + d]), keys(sk, d, j0))
                let u2 = u * u
                let small = u2 .< 0.09
                num *= su.replacing(with: sincSeries(u2), where: small)
                den *= u.replacing(with: F8(repeating: 1), where: small)
                d += 1
            }
            y *= num / den
            // |Y| only shrinks from here, and below 1e-9 W = Y^4 is dropped anyway: flushing now
            // keeps later products out of slow subnormals.
            y.replace(with: F8(), where: y * y .< 1e-18)
        }
        var y2 = y * y
        // Below 1e-9, Y^4 would be an fp32 subnormal (slow, and nothing against eps).
        y2.replace(with: F8(), where: y2 .< 1e-18)
        var w = p == 4 ? y2 * y2 : { var r = F8(repeating: 1); for _ in 0..<(p / 2) { r *= y2 }; return r }()
        let lane = F8(0, 1, 2, 3, 4, 5, 6, 7) + Float(j0)
        w.replace(with: F8(), where: lane .>= Float(jEnd))
        return w
    }
}

extension AttentionKernels {
    /// R_d of head h into `r`.
    func fillR(_ r: UnsafeMutablePointer<Float>, _ R: UnsafePointer<Float>, mode: RMode, h: Int, D: Int) {
        for d in 0..<D {
            switch mode {
            case .scalar: r[d] = R[0]
            case .perDim: r[d] = R[d]
            case .perHead: r[d] = R[h]
            }
        }
    }

    /// Forward of Fourier attention.
    /// - Parameters:
    ///   - out: (B, T, C) attention output, overwritten.
    ///   - rowSum: (B, H, T) receives S_i = Σ_j W_ij + eps for backward and health metrics.
    ///   - qkv: (B, T, 3C); R: the layer's R (1, D or H entries by `spec.rMode`).
    public func fourierForward(out: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Float>,
                               qkv: UnsafePointer<Float>, R: UnsafePointer<Float>,
                               spec: FourierSpec, shape s: AttentionShape) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        let T = s.seq, C = s.width, D = s.headDim
        parallelFor(s.batch * s.heads, threads: threads) { task, w in
            let b = task / s.heads, h = task % s.heads
            let f = fourierScratch[w]
            fillR(f.r, R, mode: spec.rMode, h: h, D: D)
            f.load(qkv, s, b: b, h: h)
            for i in 0..<T {
                let jEnd = s.causal ? i + 1 : T
                for d in 0..<D { f.acc[d] = F8() }
                var sumW = F8()
                var j0 = 0
                while j0 < jEnd {
                    let wgt = f.weights(i, j0, jEnd: jEnd, p: spec.p)
                    j0 += 8
                    if wgt == F8() { continue }
                    sumW += wgt
                    for d in 0..<D { f.acc[d] = f.acc[d].addingProduct(wgt, f.keys(f.v, d, j0 - 8)) }
                }
                let S = sumW.sum() + spec.eps
                rowSum[(b * s.heads + h) * T + i] = S
                let inv = S > 0 ? 1 / S : 0
                let o = out + (b * T + i) * C + h * D
                for d in 0..<D { o[d] = f.acc[d].sum() * inv }
            }
        }
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
        let T = s.seq, C = s.width, D = s.headDim
        let tasks = s.batch * s.heads
        reserveDR(tasks * D)
        let partial = dRPartial
        let pf = Float(spec.p)
        parallelFor(tasks, threads: threads) { task, w in
            let b = task / s.heads, h = task % s.heads
            let f = fourierScratch[w]
            fillR(f.r, R, mode: spec.rMode, h: h, D: D)
            f.load(qkv, s, b: b, h: h)
            f.dk.update(repeating: 0, count: D * f.Tp)
            f.dv.update(repeating: 0, count: D * f.Tp)
            // dR is a sum of terms far larger than itself: per row in fp32 lanes, rows in fp64.
            let dRTask = partial + task * D
            for d in 0..<D { dRTask[d] = 0 }
            for i in 0..<T {
                let gRow = dout + (b * T + i) * C + h * D, oRow = out + (b * T + i) * C + h * D
                var ci: Float = 0
                for d in 0..<D { f.g[d] = gRow[d]; ci += gRow[d] * oRow[d]; f.acc[d] = F8(); f.acc2[d] = F8() }
                let invS = 1 / rowSum[(b * s.heads + h) * T + i]
                let jEnd = s.causal ? i + 1 : T
                var j0 = 0
                while j0 < jEnd {
                    let wgt = f.weights(i, j0, jEnd: jEnd, p: spec.p)
                    defer { j0 += 8 }
                    if wgt == F8() { continue }
                    let a = wgt * invS
                    var G = F8()
                    for d in 0..<D { G = G.addingProduct(F8(repeating: f.g[d]), f.keys(f.v, d, j0)) }
                    var z = pf * a * (G - ci)
                    z.replace(with: F8(), where: wgt .== 0) // psi may be infinite where W is 0
                    for d in 0..<D {
                        f.addKeys(f.dv, d, j0, a, F8(repeating: f.g[d]))
                        let u = F8(repeating: f.rq[i * D + d]) - f.keys(f.rk, d, j0)
                        let sqd = F8(repeating: f.sq[i * D + d]), cqd = F8(repeating: f.cq[i * D + d])
                        let skd = f.keys(f.sk, d, j0), ckd = f.keys(f.ck, d, j0)
                        let su = (sqd * ckd).addingProduct(-cqd, skd), cu = (cqd * ckd).addingProduct(sqd, skd)
                        var zp = z * psiChunk(u, su, cu)
                        zp.replace(with: F8(), where: z .== 0)
                        f.acc[d] += zp                                             // dq_i / R_d
                        f.addKeys(f.dk, d, j0, zp, F8(repeating: -f.r[d]))
                        // dR_d: Σ zp (q_i − k_j); u = R_d (q_i − k_j), divided by R_d per row below.
                        f.acc2[d] = f.acc2[d].addingProduct(zp, u)
                    }
                }
                let dq = dqkv + (b * T + i) * 3 * C + h * D
                for d in 0..<D {
                    dq[d] += f.acc[d].sum() * f.r[d]
                    // At R_d = 0 exactly, u = 0 and psi(0) = 0: the term is 0 (and 0/0 must not be).
                    if f.r[d] != 0 { dRTask[d] += Double(f.acc2[d].sum()) / Double(f.r[d]) }
                }
            }
            for t in 0..<T {
                let row = dqkv + (b * T + t) * 3 * C + h * D
                for d in 0..<D { row[C + d] += f.dk[d * f.Tp + t]; row[2 * C + d] += f.dv[d * f.Tp + t] }
            }
        }
        // Reduce the per-(b, h) dR in task order, in Double.
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
