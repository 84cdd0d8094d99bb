import Foundation
import FFKernels

/// Runs a `LanguageModel` one token at a time, keeping each layer's keys and values so that a new
/// token costs one row of every matrix product and one query row of attention.
///
/// Softmax attention caches k and v. Fourier attention caches what its weight needs per key —
/// R·k with sin(R·k) and cos(R·k), so sin(R(q − k)) = sin(Rq)cos(Rk) − cos(Rq)sin(Rk) costs no
/// transcendental per pair — and v. Attention sums run in Double; the matrix products are the
/// model's own fp32 ones; an adaptive softmax gives log-probabilities (in Double, from its
/// definition) in place of logits. Positions are absolute within the window (0 ..< context), as in
/// training, so the cache holds at most `context` tokens: `TextGenerator` slides the window.
public final class IncrementalDecoder {
    public let model: LanguageModel
    let L: Int, C: Int, H: Int, D: Int, F: Int, V: Int, T: Int
    /// Per layer, (T, C): keys (softmax) or R·k (Fourier), and values.
    let keys: [UnsafeMutablePointer<Double>], values: [UnsafeMutablePointer<Double>]
    /// Fourier only, per layer (T, C): sin(R·k) and cos(R·k).
    let sinK: [UnsafeMutablePointer<Double>], cosK: [UnsafeMutablePointer<Double>]
    let x, tmp, h, qkv, att, proj, ln, ff1, ff2, logitsBuf: UnsafeMutablePointer<Float>
    let mean = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    let rstd = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    /// Attention weights of one query row (T).
    let weights: UnsafeMutablePointer<Double>
    /// Tokens in the cache (the position the next token takes).
    public private(set) var count = 0

    public init(model: LanguageModel) {
        self.model = model
        let c = model.config
        L = c.layers; C = c.dModel; H = c.heads; D = c.headDim; F = c.dFF; V = c.vocabSize; T = c.context
        let fourier = c.attention != .softmax
        let make = { (n: Int) in UnsafeMutablePointer<Double>.allocate(capacity: n) }
        keys = (0..<L).map { _ in make(c.context * c.dModel) }
        values = (0..<L).map { _ in make(c.context * c.dModel) }
        sinK = fourier ? (0..<L).map { _ in make(c.context * c.dModel) } : []
        cosK = fourier ? (0..<L).map { _ in make(c.context * c.dModel) } : []
        let f = { (n: Int) in UnsafeMutablePointer<Float>.allocate(capacity: n) }
        x = f(C); tmp = f(C); h = f(C); qkv = f(3 * C); att = f(C); proj = f(C); ln = f(C)
        ff1 = f(F); ff2 = f(F); logitsBuf = f(V)
        weights = make(T)
    }

    deinit {
        for p in keys + values + sinK + cosK { p.deallocate() }
        for p in [x, tmp, h, qkv, att, proj, ln, ff1, ff2, logitsBuf, mean, rstd] { p.deallocate() }
        weights.deallocate()
    }

    /// Forgets the cached tokens.
    public func reset() { count = 0 }

    /// Whether the cache holds `context` tokens (the next `append` needs a reset first).
    public var isFull: Bool { count == T }

    /// Feeds `token` at the next position and returns the logits for the token after it (V
    /// values, valid until the next call).
    @discardableResult
    public func append(_ token: Int32) -> UnsafeBufferPointer<Float> {
        precondition(count < T, "the cache holds the whole context (\(T)); reset and re-feed a shorter window")
        precondition(token >= 0 && Int(token) < V, "token \(token) outside the vocabulary (\(V))")
        let p = UnsafePointer(model.params.pointer), t = count
        embed(token, at: t, p)
        for l in 0..<L { block(l, at: t, p) }
        var final = UnsafePointer(x)
        if let w = model.lnfW, let b = model.lnfB {
            layerNormForward(ln, mean: mean, rstd: rstd, x, weight: p + w, bias: p + b, M: 1, C: C)
            final = UnsafePointer(ln)
        }
        if let out = model.adaptiveOutput {
            // Log-probabilities serve as logits: sampling only needs them up to a constant.
            let lp = out.logProbabilities(Array(UnsafeBufferPointer(start: final, count: C)))
            for v in 0..<V { logitsBuf[v] = Float(lp[v]) }
        } else {
            linearForward(logitsBuf, final, p + model.head, nil, M: 1, K: C, N: V)
        }
        count += 1
        return UnsafeBufferPointer(start: logitsBuf, count: V)
    }

    func embed(_ token: Int32, at t: Int, _ p: UnsafePointer<Float>) {
        let scale: Float = model.config.scaleEmbeddings ? Float(C).squareRoot() : 1
        var e = p + model.tokEmb + Int(token) * C
        if let input = model.adaptiveInput {
            var tok = token
            input.forward(tokens: &tok, M: 1, out: tmp)
            e = UnsafePointer(tmp)
        }
        let pos = model.posEmb.map { p + $0 + t * C } ?? UnsafePointer(model.posTable + t * C)
        for c in 0..<C { x[c] = e[c] * scale + pos[c] }
    }

    /// One block on the row x (updated in place), as `TransformerStack.blockForward` without dropout.
    func block(_ l: Int, at t: Int, _ p: UnsafePointer<Float>) {
        let w = model.stack.blockParams[l]
        let pre = model.config.norm == .pre
        var attnIn = UnsafePointer(x)
        if pre { norm(x, p + w.ln1w, p + w.ln1b); attnIn = UnsafePointer(ln) }
        linearForward(qkv, attnIn, p + w.qkvW, p + w.qkvB, M: 1, K: C, N: 3 * C)
        attend(l, at: t, R: p + w.R)
        linearForward(proj, att, p + w.projW, p + w.projB, M: 1, K: C, N: C)
        for c in 0..<C { h[c] = x[c] + proj[c] }
        if !pre { norm(h, p + w.ln1w, p + w.ln1b); h.update(from: ln, count: C) }
        var ffIn = UnsafePointer(h)
        if pre { norm(h, p + w.ln2w, p + w.ln2b); ffIn = UnsafePointer(ln) }
        linearForward(ff1, ffIn, p + w.fc1W, p + w.fc1B, M: 1, K: C, N: F)
        activationForward(model.config.activation, ff2, ff1, count: F)
        linearForward(tmp, ff2, p + w.fc2W, p + w.fc2B, M: 1, K: F, N: C)
        for c in 0..<C { x[c] = h[c] + tmp[c] }
        if !pre { norm(x, p + w.ln2w, p + w.ln2b); x.update(from: ln, count: C) }
    }

    /// ln = LayerNorm(v) of one row.
    func norm(_ v: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>) {
        layerNormForward(ln, mean: mean, rstd: rstd, v, weight: weight, bias: bias, M: 1, C: C)
    }

    /// Stores this token's key and value at t, then att = attention of its query over 0 ... t.
    func attend(_ l: Int, at t: Int, R: UnsafePointer<Float>) {
        let k = keys[l] + t * C, v = values[l] + t * C
        for c in 0..<C { v[c] = Double(qkv[2 * C + c]) }
        switch model.config.attention {
        case .softmax:
            for c in 0..<C { k[c] = Double(qkv[C + c]) }
            for hd in 0..<H { softmaxRow(l, head: hd, upTo: t) }
        case .fourier(let spec, _):
            for hd in 0..<H {
                for d in 0..<D {
                    let c = hd * D + d, r = Double(R[spec.rMode.index(head: hd, dim: d)])
                    k[c] = r * Double(qkv[C + c]); sinK[l][t * C + c] = sin(k[c]); cosK[l][t * C + c] = cos(k[c])
                }
                fourierRow(l, head: hd, upTo: t, R: R, spec: spec)
            }
        }
    }

    func softmaxRow(_ l: Int, head hd: Int, upTo t: Int) {
        let scale = 1 / Double(D).squareRoot(), o = hd * D
        var mx = -Double.infinity
        for j in 0...t {
            var s = 0.0
            for d in 0..<D { s += Double(qkv[o + d]) * keys[l][j * C + o + d] }
            weights[j] = s * scale; mx = max(mx, s * scale)
        }
        var sum = 0.0
        for j in 0...t { weights[j] = exp(weights[j] - mx); sum += weights[j] }
        mix(l, head: hd, upTo: t, denominator: sum)
    }

    /// W_j = Π_d sinc(R_d (q_d − k_jd))^p over the cached keys; A = W / (Σ W + eps).
    func fourierRow(_ l: Int, head hd: Int, upTo t: Int, R: UnsafePointer<Float>, spec: FourierSpec) {
        let o = hd * D
        var rq = [Double](repeating: 0, count: D), sq = rq, cq = rq
        for d in 0..<D {
            rq[d] = Double(R[spec.rMode.index(head: hd, dim: d)]) * Double(qkv[o + d])
            sq[d] = sin(rq[d]); cq[d] = cos(rq[d])
        }
        var sum = 0.0
        for j in 0...t {
            let base = j * C + o
            var y = 1.0
            for d in 0..<D {
                let u = rq[d] - keys[l][base + d]
                // Near u = 0 the identity's difference cancels; the series is exact there.
                y *= abs(u) < 1e-4 ? 1 - u * u / 6 : (sq[d] * cosK[l][base + d] - cq[d] * sinK[l][base + d]) / u
            }
            var wj = 1.0
            for _ in 0..<spec.p { wj *= y }
            weights[j] = wj; sum += wj
        }
        mix(l, head: hd, upTo: t, denominator: sum + Double(spec.eps))
    }

    /// att[head] = Σ_j weights[j] v_j / denominator.
    func mix(_ l: Int, head hd: Int, upTo t: Int, denominator: Double) {
        let o = hd * D
        var acc = [Double](repeating: 0, count: D)
        for j in 0...t where weights[j] != 0 {
            let vj = values[l] + j * C + o
            for d in 0..<D { acc[d] += weights[j] * vj[d] }
        }
        for d in 0..<D { att[o + d] = Float(acc[d] / denominator) }
    }
}
