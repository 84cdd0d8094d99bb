import FFCore
import Foundation
import CFastMath

// Fused Fourier attention, vectorised over keys: the lanes of an FV are `lanes` keys j (16 with
// AVX-512, else 8) of one query row i. Key-side tables are in blocks of `lanes` keys,
// (Tp / lanes, D, lanes) with Tp = T rounded up to `lanes`: dimension d of a block's keys is one
// vector load, and a block's D vectors are contiguous, so the inner loops read and update
// consecutive memory (a (D, Tp) layout touched D lines Tp floats apart per block).
// Query-side values are scalars broadcast across lanes.
// Padding keys (j >= T) and masked keys (j > i) get W = 0 by a lane mask.
//
// Query rows go in tiles of `rowTile`: their weight computations are independent dependency
// chains that the CPU overlaps (one row alone is bound by multiply latency), and the
// tile shares each dk/dv update. Rows past T in the last tile repeat row T−1 with zero weight in
// backward and are not written.
//
// Per tile and key block, forward forms W (`weights4`) and adds W·V with the block's keys as the
// reduction (`addWeightedValues`: outputs stay in registers). Backward forms W and psi
// (`weightsAndPsi4`), then G = g·v and dv, then dk and the dq accumulators (one vector per row
// and pair of dimensions, its half-vectors' lanes summed once per tile: one vector per
// dimension and row did not fit L1 beside psi). What each loop costs in vector operations, and
// how close to the FMA peak it runs, is in BENCHMARKS.md ("How the Fourier kernel spends its
// time").
// A head's rows of the (B, T, ·) tensors are a page apart: they are read, and backward's results
// added, in passes that only copy (see `load`), so that many misses are in flight.

/// Query rows per tile.
let rowTile = 4

/// Dimensions per reciprocal: a block's Π x stays within [1e-30, 1e30] wherever its W matters
/// (see `weights4`), and one reciprocal (with its range guard) is spread over 8 dimensions.
let dimBlock = 8

/// Per-worker scratch of the key-vectorised Fourier kernel, sized once for (T, D): O(T D), no
/// T x T buffer.
final class FourierScratch {
    let D: Int
    /// T rounded up to `lanes` (key blocks) and to `rowTile` (row tiles); D rounded up to `lanes`.
    let Tp: Int, Tr: Int, Dv: Int
    // Key side, blocked (Tp / lanes, D, lanes): R k, sin(R k), cos(R k), v (backward), and the
    // dk, dv accumulators (dk without its factor −R_d).
    let rk, sk, ck, v, dk, dv: UnsafeMutablePointer<Float>
    // Query side, row-major (T, D): R q, sin(R q), cos(R q).
    let rq, sq, cq: UnsafeMutablePointer<Float>
    // Rows as read from the (B, T, ·) tensors in one pass (see `load`): k (T, D) and v (Tp, Dv,
    // zero-padded: the forward's W·V reads it); backward's g (Tr, D, zero past T) and o (T, D).
    // After backward's tiles, o's rows hold dq, and k's and v's (at stride D) dk and dv.
    let kRows, vRows, gRows, oRows: UnsafeMutablePointer<Float>
    // Backward: c_i = g_i · o_i and 1 / S_i, interleaved (Tr, 2), 0 past T.
    let rowStats: UnsafeMutablePointer<Float>
    // Forward: one key block's weights of the tile's rows (rowTile, lanes); the rows' Σ_j W v_j
    // (rowTile, Dv).
    let weights, outputs: UnsafeMutablePointer<Float>
    // The tile's rows of rq, sq, cq (D, rowTile, 3), see `FourierTables.stageRows`.
    let qTile: UnsafeMutablePointer<Float>
    // Backward, per tile row: psi of the pairs (D vectors) and dq accumulators ((D + 1) / 2
    // vectors: two dimensions each, see `foldPair`); x of one block of dimensions (dimBlock
    // vectors) for `weightsAndPsi4`.
    let acc, psi, work: UnsafeMutablePointer<FV>
    // The lane sums of acc (rowTile, D rounded up to even); R_d (D); the keys' mean m_d (D).
    let sums, r, mean: UnsafeMutablePointer<Float>
    private let base: UnsafeMutablePointer<Float>, floatCount: Int
    private let vecs: UnsafeMutablePointer<FV>, vectorCount: Int

    init(T: Int, D: Int) {
        self.D = D
        Tp = (T + lanes - 1) / lanes * lanes; Tr = (T + rowTile - 1) / rowTile * rowTile
        Dv = (D + lanes - 1) / lanes * lanes
        let keySize = D * Tp, querySize = T * D
        floatCount =
            6 * keySize + 3 * querySize + (querySize + Tp * Dv + Tr * D + querySize) + 2 * Tr
            + rowTile * lanes + rowTile * Dv + rowTile * (D + 1) + 2 * D + 3 * rowTile * D
        base = .allocate(capacity: floatCount)
        base.initialize(repeating: 0, count: floatCount)
        var p = base
        func take(_ n: Int) -> UnsafeMutablePointer<Float> { defer { p += n }; return p }
        rk = take(keySize); sk = take(keySize); ck = take(keySize); v = take(keySize)
        dk = take(keySize); dv = take(keySize)
        rq = take(querySize); sq = take(querySize); cq = take(querySize)
        kRows = take(querySize); vRows = take(Tp * Dv); gRows = take(Tr * D); oRows = take(querySize)
        rowStats = take(2 * Tr)
        weights = take(rowTile * lanes); outputs = take(rowTile * Dv); qTile = take(3 * rowTile * D)
        sums = take(rowTile * (D + 1)); r = take(D); mean = take(D)
        precondition(p == base + floatCount)
        let pairs = (D + 1) / 2
        vectorCount = rowTile * (pairs + D + dimBlock)
        vecs = .allocate(capacity: vectorCount)
        vecs.initialize(repeating: FV(), count: vectorCount)
        acc = vecs; psi = acc + rowTile * pairs; work = psi + rowTile * D
    }

    deinit { base.deallocate(); vecs.deallocate() }

    var bytes: Int { floatCount * 4 + vectorCount * MemoryLayout<FV>.stride }

    /// Where key t's dimension d is in a key-side table.
    @inline(__always) func keyIndex(_ d: Int, _ t: Int) -> Int { (t / lanes * D + d) * lanes + t % lanes }

    /// Fills the tables for head (b, h) from qkv (B, T, 3C), with R_d in `r`; v is row-major in
    /// `vRows` (the forward's), and key-blocked in `v` for the backward. Queries and keys
    /// are stored as R_d (x − m_d), m_d the keys' mean: u = R_d (q − k) is unchanged, the table
    /// angles are smaller, and backward's dR (from Σ_i rq·dq-sums − Σ_j rk·dk-sums) cancels less.
    func load(_ qkv: UnsafePointer<Float>, _ s: AttentionShape, b: Int, h: Int, forward: Bool) {
        let C = s.width, T = s.seq
        // One pass that only copies the head's rows: they are a page apart (a cache and TLB miss
        // each), and a loop of loads and stores keeps many of them in flight.
        for t in 0..<T {
            let row = qkv + (b * T + t) * 3 * C + h * D
            rq.advanced(by: t * D).update(from: row, count: D)
            kRows.advanced(by: t * D).update(from: row + C, count: D)
            vRows.advanced(by: t * Dv).update(from: row + 2 * C, count: D)
            if forward { for d in D..<Dv { vRows[t * Dv + d] = 0 } }  // backward puts dv here at stride D
        }
        for d in 0..<D { mean[d] = 0 }
        for t in 0..<T { for d in 0..<D { mean[d] += kRows[t &* D &+ d] } }
        for d in 0..<D { mean[d] /= Float(T) }
        for t in 0..<T {
            let key = keyIndex(0, t)
            for d in 0..<D {
                rq[t &* D &+ d] = r[d] * (rq[t &* D &+ d] - mean[d])
                rk[key &+ d &* lanes] = r[d] * (kRows[t &* D &+ d] - mean[d])
            }
            if !forward { for d in 0..<D { v[key &+ d &* lanes] = vRows[t &* Dv &+ d] } }
        }
        // Keys past T have W = 0, and their v must be finite for 0 · v to be 0.
        for t in T..<Tp {
            for d in 0..<D {
                rk[keyIndex(d, t)] = 0
                if !forward { v[keyIndex(d, t)] = 0 }
            }
            if forward { for d in 0..<Dv { vRows[t * Dv + d] = 0 } }
        }
        sinCos(rq, sin: sq, cos: cq, count: T * D)
        sinCos(rk, sin: sk, cos: ck, count: D * Tp)
    }

    /// The tables as a value the inner loops use (methods on a class are not reliably inlined).
    var tables: FourierTables {
        FourierTables(D: D, rk: rk, sk: sk, ck: ck, v: v, rq: rq, sq: sq, cq: cq, qTile: qTile)
    }
}

/// The per-head tables of `FourierScratch`, and the per-pair arithmetic on them.
struct FourierTables {
    let D: Int
    let rk, sk, ck, v: UnsafeMutablePointer<Float>
    let rq, sq, cq: UnsafeMutablePointer<Float>
    /// The current tile's rows of rq, sq, cq, (D, rowTile, 3): see `stageRows`.
    let qTile: UnsafeMutablePointer<Float>

    /// Copies rq, sq, cq of rows i[r] into slot r of `qTile`. The per-pair loops then read a
    /// row's scalars at fixed offsets from one pointer: read from the (T, D) tables, 12 row
    /// pointers did not fit the integer registers beside the loop's own, and the backward's
    /// inner loop reloaded one from the stack before every broadcast.
    @inline(__always) func stageRows(_ i: SIMD4<Int>) {
        for d in 0..<D {
            for r in 0..<rowTile {
                let q = qTile + (d &* rowTile &+ r) &* 3, qi = i[r] &* D &+ d
                q[0] = rq[qi]; q[1] = sq[qi]; q[2] = cq[qi]
            }
        }
    }

    /// Dimension d of keys j0..<j0+lanes (j0 a multiple of `lanes`).
    @inline(__always) func keys(_ table: UnsafeMutablePointer<Float>, _ d: Int, _ j0: Int) -> FV {
        loadVector(table + (j0 &* D &+ d &* lanes))
    }

    /// table[d, j0..<j0+lanes] += a.
    @inline(__always) func addKeys(_ table: UnsafeMutablePointer<Float>, _ d: Int, _ j0: Int, _ a: FV) {
        let p = table + (j0 &* D &+ d &* lanes)
        storeVector(loadVector(p) + a, p)
    }

    /// W of the staged query rows r = 0..<4 (`stageRows`) and keys j0..<j0+lanes (0 where
    /// j >= e[r]), the 4 rows interleaved so that their multiply chains overlap and share the
    /// key-side loads.
    ///
    /// Y = Π_d sinc u_d takes one reciprocal per block of `dimBlock` dimensions: with x_d = u_d sin u_d
    /// and root_d = sin u_d, sinc u_d = root_d² / x_d (small |u|: x_d = 1, root_d = √sinc u_d),
    /// so a block's product is (Π root)² / Π x. Backward's `weightsAndPsi4` forms Y from the same
    /// `sincFactors` and operations, so forward and backward weights are bit-identical (dR sums
    /// terms that cancel only if they are). Where Π x leaves [1e-30, 1e30] the block's sinc product is below 1e-21
    /// (each |sin u / u| <= |x| / 0.09 and <= 1 / |x|; 0.09^8 > 4e-9), so W is 0 there: Y is
    /// set to 0.
    /// The kernels run with denormals flushed to zero (a thread's MXCSR, see `fourierForward`).
    @inline(__always) func weights4(_ j0: Int, _ e: SIMD4<Int>, p: Int) -> (FV, FV, FV, FV) {
        let one = FV(repeating: 1)
        var y0 = one, y1 = one, y2 = one, y3 = one
        var d = 0
        while d < D {
            var n0 = one, n1 = one, n2 = one, n3 = one
            var x0 = one, x1 = one, x2 = one, x3 = one
            let end = Swift.min(d &+ dimBlock, D)
            while d < end {
                forwardTerms(self, 0, d, j0, &n0, &x0); forwardTerms(self, 1, d, j0, &n1, &x1)
                forwardTerms(self, 2, d, j0, &n2, &x2); forwardTerms(self, 3, d, j0, &n3, &x3)
                d &+= 1
            }
            y0 *= n0 * n0 * guardedReciprocal(x0); y1 *= n1 * n1 * guardedReciprocal(x1)
            y2 *= n2 * n2 * guardedReciprocal(x2); y3 *= n3 * n3 * guardedReciprocal(x3)
        }
        return (
            maskedPower(y0, p: p, j0: j0, jEnd: e[0]), maskedPower(y1, p: p, j0: j0, jEnd: e[1]),
            maskedPower(y2, p: p, j0: j0, jEnd: e[2]), maskedPower(y3, p: p, j0: j0, jEnd: e[3])
        )
    }

    /// `weights4` (bit-identical), and psi(u_d) = cot u_d − 1/u_d = psiNum_d / x_d of each pair
    /// into psi[r * D + d] for row r. The block's reciprocal 1/Π x serves psi too:
    /// 1/x_k = (Π_{l<k} x_l)(Π_{l>k} x_l) / Π x: psi first holds psiNum_k Π_{l<k} x_l, and
    /// `finishPsi` walks the block backwards with the suffix products. `work` is scratch for
    /// 4 · dimBlock vectors, one block's x per row (at D = 64 a D-long one pushes the tile out of
    /// L1). Stores bound this function, so the prefix products are not stored apart (a store and a
    /// load more per pair and dimension).
    /// Where the guard zeroes 1/Π x, psi is 0 too (W is).
    @inline(__always) func weightsAndPsi4(
        _ j0: Int, _ e: SIMD4<Int>, p: Int,
        psi: UnsafeMutablePointer<FV>,
        work: UnsafeMutablePointer<FV>
    ) -> (FV, FV, FV, FV) {
        let one = FV(repeating: 1)
        let xs = work  // one block of dimensions per row
        var y0 = one, y1 = one, y2 = one, y3 = one
        var d = 0
        while d < D {
            var n0 = one, n1 = one, n2 = one, n3 = one
            var x0 = one, x1 = one, x2 = one, x3 = one
            let start = d, end = Swift.min(d &+ dimBlock, D)
            while d < end {
                psiTerms(self, 0, d, j0, k: d, w: d &- start, &n0, &x0, psi: psi, xs: xs)
                psiTerms(self, 1, d, j0, k: D &+ d, w: dimBlock &+ d &- start, &n1, &x1, psi: psi, xs: xs)
                psiTerms(self, 2, d, j0, k: 2 &* D &+ d, w: 2 &* dimBlock &+ d &- start, &n2, &x2, psi: psi, xs: xs)
                psiTerms(self, 3, d, j0, k: 3 &* D &+ d, w: 3 &* dimBlock &+ d &- start, &n3, &x3, psi: psi, xs: xs)
                d &+= 1
            }
            let r0 = guardedReciprocal(x0), r1 = guardedReciprocal(x1)
            let r2 = guardedReciprocal(x2), r3 = guardedReciprocal(x3)
            y0 *= n0 * n0 * r0; y1 *= n1 * n1 * r1; y2 *= n2 * n2 * r2; y3 *= n3 * n3 * r3
            finishPsi(r0, psiFrom: start, workFrom: 0, count: end &- start, psi: psi, xs: xs)
            finishPsi(r1, psiFrom: D &+ start, workFrom: dimBlock, count: end &- start, psi: psi, xs: xs)
            finishPsi(r2, psiFrom: 2 &* D &+ start, workFrom: 2 &* dimBlock, count: end &- start, psi: psi, xs: xs)
            finishPsi(r3, psiFrom: 3 &* D &+ start, workFrom: 3 &* dimBlock, count: end &- start, psi: psi, xs: xs)
        }
        return (
            maskedPower(y0, p: p, j0: j0, jEnd: e[0]), maskedPower(y1, p: p, j0: j0, jEnd: e[1]),
            maskedPower(y2, p: p, j0: j0, jEnd: e[2]), maskedPower(y3, p: p, j0: j0, jEnd: e[3])
        )
    }
}

// The per-pair arithmetic: free functions because only @_transparent is reliably inlined into
// the tiled loops (plain @inline(__always) calls were left as calls there).

/// u = R_d (q_id − k_jd) and sin u, cos u of the query in slot i of `qTile` and keys
/// j0..<j0+lanes, by the angle-difference identity from the tables.
@_transparent func pair(_ t: FourierTables, _ i: Int, _ d: Int, _ j0: Int) -> (u: FV, s: FV, c: FV) {
    let q = t.qTile + (d &* rowTile &+ i) &* 3
    let sqd = FV(repeating: q[1]), cqd = FV(repeating: q[2])
    let skd = t.keys(t.sk, d, j0), ckd = t.keys(t.ck, d, j0)
    return (
        FV(repeating: q[0]) - t.keys(t.rk, d, j0),
        multiplySubtract(sqd, ckd, cqd * skd), (cqd * ckd).addingProduct(sqd, skd)
    )
}

/// The sinc factors of u (and sin u): sinc u = root² / x with x = u sin u, root = sin u, on the
/// regular lanes (|u| >= 0.3); the others take series (x = 1, root = √sinc u), where the closed
/// forms cancel in fp32. Elsewhere |x| <= |u| and root² / x = sin u / u. x is returned as
/// u sin u on every lane with the mask of the regular ones: the forward multiplies it into its
/// product under the mask (one masked multiply; a select of 1 cost a multiply, a masked move and
/// a copy). Forward and backward both take root and x from here, so their weights are
/// bit-identical.
@_transparent func sincFactors(_ u: FV, _ su: FV) -> (root: FV, x: FV, u2: FV, regular: SIMDMask<FVBits.MaskStorage>) {
    let u2 = u * u
    let regular = u2 .>= 0.09
    return (su.replacing(with: rootSincSeries(u2), where: .!regular), u * su, u2, regular)
}

/// The forward's factors of dimension d for query i and keys j0..<j0+lanes (`sincFactors`).
@_transparent func forwardFactors(
    _ t: FourierTables, _ i: Int, _ d: Int, _ j0: Int
)
    -> (root: FV, x: FV, u2: FV, regular: SIMDMask<FVBits.MaskStorage>)
{
    let (u, su, _) = pair(t, i, d, j0)
    return sincFactors(u, su)
}

/// One row's forward factors of dimension d into the block products; x enters only on the
/// regular lanes (elsewhere it is 1).
@_transparent func forwardTerms(
    _ t: FourierTables, _ i: Int, _ d: Int, _ j0: Int, _ root: inout FV,
    _ prod: inout FV
) {
    let f = forwardFactors(t, i, d, j0)
    root *= f.root
    prod = prod.replacing(with: prod * f.x, where: f.regular)
}

/// The backward's factors of dimension d for query i and keys j0..<j0+lanes: root, x (1 on the
/// series lanes) and psi u = cot u − 1/u = psiNum / x (psiNum = psi u by its series there).
@_transparent func factors(_ t: FourierTables, _ i: Int, _ d: Int, _ j0: Int) -> (root: FV, x: FV, psiNum: FV) {
    let (u, su, cu) = pair(t, i, d, j0)
    let f = sincFactors(u, su), small = .!f.regular
    return (
        f.root, f.x.replacing(with: FV(repeating: 1), where: small),
        multiplySubtract(u, cu, su).replacing(with: psiSeries(u, f.u2), where: small)
    )
}

/// One row's factors of dimension d into the block products; psiNum times the running product
/// of x (Π_{l<d} x_l within the block) into slot k of psi, and x into slot w of xs.
@_transparent func psiTerms(
    _ t: FourierTables, _ i: Int, _ d: Int, _ j0: Int, k: Int, w: Int, _ root: inout FV,
    _ prod: inout FV, psi: UnsafeMutablePointer<FV>, xs: UnsafeMutablePointer<FV>
) {
    let f = factors(t, i, d, j0)
    root *= f.root
    psi[k] = f.psiNum * prod
    xs[w] = f.x
    prod *= f.x
}

/// √(sin(u)/u) by its series in u² to u⁴: truncation < 3.1e-8 relative for |u| < 0.3, below
/// the closed form's error at the switch (table round-off ~6e-8 over |sin u| >= 0.29).
@_transparent func rootSincSeries(_ u2: FV) -> FV {
    let t1 = FV(repeating: -1.0 / 12).addingProduct(u2, FV(repeating: 1.0 / 1440))
    return FV(repeating: 1).addingProduct(u2, t1)
}

/// psi(u) = d/du log|sinc u| = cot u − 1/u by its series in u (truncation < 1e-9 for |u| < 0.3).
@_transparent func psiSeries(_ u: FV, _ u2: FV) -> FV {
    let t2 = FV(repeating: -1.0 / 45).addingProduct(u2, FV(repeating: -2.0 / 945))
    let t1 = FV(repeating: -1.0 / 3).addingProduct(u2, t2)
    return u * t1
}

/// 1 / prod on lanes with 1e-30 <= |prod| <= 1e30, 0 on the others (NaN stays NaN).
@_transparent func guardedReciprocal(_ prod: FV) -> FV {
    let size = magnitude(prod)
    return reciprocal(prod).replacing(with: FV(), where: (size .< 1e-30) .| (size .> 1e30))
}

/// psi[first + k] = psiNum / x_k for k in 0..<n, from the guarded 1 / Π x over the block and
/// psi's prefix products (see `weightsAndPsi4`).
@_transparent func finishPsi(
    _ inverse: FV, psiFrom first: Int, workFrom wFirst: Int, count n: Int,
    psi: UnsafeMutablePointer<FV>, xs: UnsafeMutablePointer<FV>
) {
    var after = inverse
    var k = n
    while k > 0 {
        k &-= 1
        psi[first &+ k] *= after
        after *= xs[wFirst &+ k]  // now Π_{l>=k} x_l / Π x
    }
}

/// Whether every lane of x (>= 0) is 0, by halving sums: SIMD's == is a generic lane loop here.
@_transparent func allZero(_ x: FV) -> Bool {
    #if FF_AVX512
        let a = x.lowHalf + x.highHalf
    #else
        let a = x
    #endif
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1] == 0
}

/// W = y^p (p even, >= 2, checked by the config) on lanes j0 + l < jEnd, 0 on the others.
@_transparent func maskedPower(_ y: FV, p: Int, j0: Int, jEnd: Int) -> FV {
    let y2 = y * y
    var w = y2
    for _ in 1..<(p / 2) { w *= y2 }
    var lane = FV()
    for l in 0..<lanes { lane[l] = Float(l) }
    lane += Float(j0)
    w.replace(with: FV(), where: lane .>= Float(jEnd))
    return w
}

@_transparent func storeVector(_ x: FV, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: x, as: FV.self)
}

@_transparent func loadVector(_ p: UnsafePointer<Float>) -> FV {
    UnsafeRawPointer(p).loadUnaligned(as: FV.self)
}

/// dst[0..<n] += src[0..<n], by vectors.
@inline(__always) func addRow(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ n: Int) {
    var d = 0
    while d &+ lanes <= n {
        storeVector(loadVector(dst + d) + loadVector(src + d), dst + d)
        d &+= lanes
    }
    while d < n { dst[d] += src[d]; d &+= 1 }
}

/// outputs[r, :] += Σ_l weights[r, l] · values[l, :] for the tile's rows r and one block of
/// `lanes` keys l; rows are `width` floats (a multiple of `lanes`). The forward's W·V with keys as
/// the reduction: each output vector stays in a register across the block's keys, and the weights
/// are broadcast from memory (lanes over keys kept every output in memory: 4 loads and 4 stores
/// per 4 FMAs, and a lane sum per output at the end).
@inline(__always) func addWeightedValues(
    _ outputs: UnsafeMutablePointer<Float>, weights: UnsafePointer<Float>,
    values: UnsafePointer<Float>, width: Int
) {
    var c = 0
    // Two vectors of columns at a time: 8 accumulation chains, enough to cover the FMA latency.
    while c &+ 2 &* lanes <= width {
        var a0 = loadVector(outputs + c), a1 = loadVector(outputs + (width &+ c))
        var a2 = loadVector(outputs + (2 &* width &+ c)), a3 = loadVector(outputs + (3 &* width &+ c))
        var b0 = loadVector(outputs + (c &+ lanes)), b1 = loadVector(outputs + (width &+ c &+ lanes))
        var b2 = loadVector(outputs + (2 &* width &+ c &+ lanes)), b3 = loadVector(outputs + (3 &* width &+ c &+ lanes))
        for l in 0..<lanes {
            let v = values + (l &* width &+ c)
            let va = loadVector(v), vb = loadVector(v + lanes)
            let w0 = FV(repeating: weights[l]), w1 = FV(repeating: weights[lanes &+ l])
            let w2 = FV(repeating: weights[2 &* lanes &+ l]), w3 = FV(repeating: weights[3 &* lanes &+ l])
            a0 = a0.addingProduct(w0, va); a1 = a1.addingProduct(w1, va)
            a2 = a2.addingProduct(w2, va); a3 = a3.addingProduct(w3, va)
            b0 = b0.addingProduct(w0, vb); b1 = b1.addingProduct(w1, vb)
            b2 = b2.addingProduct(w2, vb); b3 = b3.addingProduct(w3, vb)
        }
        storeVector(a0, outputs + c); storeVector(a1, outputs + (width &+ c))
        storeVector(a2, outputs + (2 &* width &+ c)); storeVector(a3, outputs + (3 &* width &+ c))
        storeVector(b0, outputs + (c &+ lanes)); storeVector(b1, outputs + (width &+ c &+ lanes))
        storeVector(b2, outputs + (2 &* width &+ c &+ lanes)); storeVector(b3, outputs + (3 &* width &+ c &+ lanes))
        c &+= 2 &* lanes
    }
    if c < width {
        var a0 = loadVector(outputs + c), a1 = loadVector(outputs + (width &+ c))
        var a2 = loadVector(outputs + (2 &* width &+ c)), a3 = loadVector(outputs + (3 &* width &+ c))
        for l in 0..<lanes {
            let va = loadVector(values + (l &* width &+ c))
            a0 = a0.addingProduct(FV(repeating: weights[l]), va)
            a1 = a1.addingProduct(FV(repeating: weights[lanes &+ l]), va)
            a2 = a2.addingProduct(FV(repeating: weights[2 &* lanes &+ l]), va)
            a3 = a3.addingProduct(FV(repeating: weights[3 &* lanes &+ l]), va)
        }
        storeVector(a0, outputs + c); storeVector(a1, outputs + (width &+ c))
        storeVector(a2, outputs + (2 &* width &+ c)); storeVector(a3, outputs + (3 &* width &+ c))
    }
}

/// Query rows i0..<i0 + rows of one tile as the kernels index them: rows past T repeat row T − 1
/// (their results are not written, and backward gives them zero weight), and row r's keys end at
/// e[r] (i + 1 when causal, else T).
struct RowTile {
    let i0: Int, rows: Int
    let i: SIMD4<Int>, e: SIMD4<Int>

    init(_ i0: Int, T: Int, causal: Bool) {
        self.i0 = i0
        rows = Swift.min(rowTile, T - i0)
        i = SIMD4(i0, Swift.min(i0 + 1, T - 1), Swift.min(i0 + 2, T - 1), Swift.min(i0 + 3, T - 1))
        e = causal ? i &+ 1 : SIMD4(repeating: T)
    }

    /// Where the tile's keys end: its last row's end, the largest.
    var keyEnd: Int { e[3] }
}

extension FourierScratch {
    /// Backward's per-head staging after `load`: g and o rows copied in one pass (as in `load`),
    /// c_i = g_i · o_i and 1 / S_i into `rowStats` (0 for the rows past T that the last tile
    /// repeats, so they add nothing), and the dk, dv accumulators zeroed.
    /// - Parameter rowSum: (T) this head's S_i from the forward.
    func stageGradients(
        dout: UnsafePointer<Float>, out: UnsafePointer<Float>, rowSum: UnsafePointer<Float>,
        _ s: AttentionShape, b: Int, h: Int
    ) {
        let T = s.seq, C = s.width
        for i in 0..<T {
            gRows.advanced(by: i * D).update(from: dout + (b * T + i) * C + h * D, count: D)
            oRows.advanced(by: i * D).update(from: out + (b * T + i) * C + h * D, count: D)
        }
        for i in 0..<T {
            var dot: Float = 0
            for d in 0..<D { dot += gRows[i &* D &+ d] * oRows[i &* D &+ d] }
            rowStats[2 * i] = dot
            rowStats[2 * i + 1] = 1 / rowSum[i]
        }
        for i in T..<Tr {
            for d in 0..<D { gRows[i * D + d] = 0 }
            rowStats[2 * i] = 0; rowStats[2 * i + 1] = 0
        }
        dk.update(repeating: 0, count: D * Tp)
        dv.update(repeating: 0, count: D * Tp)
    }

    /// dq_i = R_d Σ_j zp_ijd of the tile's rows, from the lane sums of their accumulators, into
    /// `oRows` (o is no longer needed); adds the rows' share of dR_d R_d (see `writeGradients`).
    func writeQueryGradients(_ tile: RowTile, dR: UnsafeMutablePointer<Double>) {
        let pairs = (D + 1) / 2
        halfLaneSums(acc, count: tile.rows * 2 * pairs, into: sums)
        for r in 0..<tile.rows {
            let i = tile.i0 + r
            for d in 0..<D {
                let a = sums[r * 2 * pairs + d]
                oRows[i * D + d] = a * self.r[d]
                dR[d] += Double(a) * Double(rq[i * D + d])
            }
        }
    }

    /// dk_j = −R_d Σ_i zp_ijd and dv_j row-major (into the staging rows of k and v, free since
    /// `load`), then one pass adds dq, dk, dv to the head's rows of dqkv (B, T, 3C). Finishes this
    /// head's dR_d: dR_d R_d = Σ_ij zp_ijd (rq_id − rk_jd) = Σ_i rq_id Σ_j zp_ijd − Σ_j rk_jd Σ_i
    /// zp_ijd, the row sums being dq's and the column sums dk's, both summed in fp64.
    func writeGradients(
        _ dqkv: UnsafeMutablePointer<Float>, _ s: AttentionShape, b: Int, h: Int,
        dR: UnsafeMutablePointer<Double>
    ) {
        let T = s.seq, C = s.width
        let dkRows = kRows, dvRows = vRows, dqRows = oRows
        for j in 0..<T {
            let key = keyIndex(0, j)
            for d in 0..<D {
                let k = key &+ d &* lanes
                dkRows[j &* D &+ d] = -dk[k] * r[d]
                dvRows[j &* D &+ d] = dv[k]
                dR[d] -= Double(dk[k]) * Double(rk[k])
            }
        }
        for i in 0..<T {
            let row = dqkv + (b * T + i) * 3 * C + h * D
            addRow(row, dqRows + i * D, D)
            addRow(row + C, dkRows + i * D, D)
            addRow(row + 2 * C, dvRows + i * D, D)
        }
        // At R_d = 0 exactly, u = 0 and psi(0) = 0: the term is 0 (and 0/0 must not be).
        for d in 0..<D { dR[d] = r[d] != 0 ? dR[d] / Double(r[d]) : 0 }
    }
}

/// The forward's work on one row tile: Σ_j W v_j of its rows into `f.outputs` (rowTile, Dv), and
/// their Σ_j W returned. Key blocks whose weights are all 0 skip the W·V.
func forwardTile(_ t: FourierTables, _ f: FourierScratch, _ tile: RowTile, p: Int) -> SIMD4<Float> {
    f.outputs.update(repeating: 0, count: rowTile * f.Dv)
    t.stageRows(tile.i)
    var sum0 = FV(), sum1 = FV(), sum2 = FV(), sum3 = FV()
    var j0 = 0
    while j0 < tile.keyEnd {
        let (w0, w1, w2, w3) = t.weights4(j0, tile.e, p: p)
        sum0 += w0; sum1 += w1; sum2 += w2; sum3 += w3
        if !allZero(w0 + w1 + w2 + w3) {
            storeVector(w0, f.weights); storeVector(w1, f.weights + lanes)
            storeVector(w2, f.weights + 2 * lanes); storeVector(w3, f.weights + 3 * lanes)
            addWeightedValues(f.outputs, weights: f.weights, values: f.vRows + j0 * f.Dv, width: f.Dv)
        }
        j0 += lanes
    }
    return SIMD4(sum0.sum(), sum1.sum(), sum2.sum(), sum3.sum())
}

/// The backward's work on one row tile, key block by key block: W and psi (`weightsAndPsi4`),
/// A = W / S, then `valueGradients` (G = g · v, dv) and `keyQueryGradients` (dk, and the dq
/// accumulators `f.acc`, zeroed here).
func backwardTile(_ t: FourierTables, _ f: FourierScratch, _ tile: RowTile, spec: FourierSpec) {
    let D = t.D, pf = Float(spec.p), i0 = tile.i0
    let stats = f.rowStats
    let c = SIMD4<Float>(stats[2 * i0], stats[2 * i0 + 2], stats[2 * i0 + 4], stats[2 * i0 + 6])
    let invS = SIMD4<Float>(stats[2 * i0 + 1], stats[2 * i0 + 3], stats[2 * i0 + 5], stats[2 * i0 + 7])
    let g = f.gRows + i0 * D
    f.acc.update(repeating: FV(), count: rowTile * ((D + 1) / 2))
    t.stageRows(tile.i)
    var j0 = 0
    while j0 < tile.keyEnd {
        defer { j0 += lanes }
        let (w0, w1, w2, w3) = t.weightsAndPsi4(j0, tile.e, p: spec.p, psi: f.psi, work: f.work)
        if allZero(w0 + w1 + w2 + w3) { continue }
        let a0 = w0 * invS[0], a1 = w1 * invS[1], a2 = w2 * invS[2], a3 = w3 * invS[3]
        let (G0, G1, G2, G3) = valueGradients(t, dv: f.dv, g: g, j0, a0, a1, a2, a3)
        // dL/d log W_ij = p A_ij (G_ij − c_i); then ∂ log W / ∂u_d = p psi(u_d).
        let z0 = pf * a0 * (G0 - c[0]), z1 = pf * a1 * (G1 - c[1])
        let z2 = pf * a2 * (G2 - c[2]), z3 = pf * a3 * (G3 - c[3])
        keyQueryGradients(t, dk: f.dk, acc: f.acc, psi: f.psi, j0, z0, z1, z2, z3)
    }
}

/// G_r = g_r · v_j per lane for the tile's rows r (g: (rowTile, D)), returned; and
/// dv_j += Σ_r A_rj g_r for keys j0..<j0 + lanes.
@inline(__always) func valueGradients(
    _ t: FourierTables, dv: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
    _ j0: Int, _ a0: FV, _ a1: FV, _ a2: FV, _ a3: FV
) -> (FV, FV, FV, FV) {
    let D = t.D
    var G0 = FV(), G1 = FV(), G2 = FV(), G3 = FV()
    for d in 0..<D {
        let vd = t.keys(t.v, d, j0)
        let g0 = FV(repeating: g[d]), g1 = FV(repeating: g[D &+ d])
        let g2 = FV(repeating: g[2 &* D &+ d]), g3 = FV(repeating: g[3 &* D &+ d])
        G0 = G0.addingProduct(g0, vd); G1 = G1.addingProduct(g1, vd)
        G2 = G2.addingProduct(g2, vd); G3 = G3.addingProduct(g3, vd)
        t.addKeys(dv, d, j0, (a0 * g0).addingProduct(a1, g1).addingProduct(a2, g2).addingProduct(a3, g3))
    }
    return (G0, G1, G2, G3)
}

/// zp_rjd = z_r psi_rd (psi: (rowTile, D) vectors) for keys j0..<j0 + lanes: dk_j += Σ_r zp_rjd
/// per lane, and each row's dq accumulators take a pair of dimensions per vector (`foldPair`):
/// one vector per dimension and row is 16 KB at D = 64 with AVX-512, and with psi it no longer
/// fits L1 beside the key tables.
@inline(__always) func keyQueryGradients(
    _ t: FourierTables, dk: UnsafeMutablePointer<Float>,
    acc: UnsafeMutablePointer<FV>, psi: UnsafeMutablePointer<FV>,
    _ j0: Int, _ z0: FV, _ z1: FV, _ z2: FV, _ z3: FV
) {
    let D = t.D, pairs = (D + 1) / 2
    var d = 0, k = 0
    while d < D {
        let e = d &+ 1, second = e < D
        let ta0 = z0 * psi[d], ta1 = z1 * psi[D &+ d], ta2 = z2 * psi[2 &* D &+ d], ta3 = z3 * psi[3 &* D &+ d]
        var tb0 = FV(), tb1 = FV(), tb2 = FV(), tb3 = FV()
        if second {
            tb0 = z0 * psi[e]; tb1 = z1 * psi[D &+ e]; tb2 = z2 * psi[2 &* D &+ e]; tb3 = z3 * psi[3 &* D &+ e]
            t.addKeys(dk, e, j0, (tb0 + tb1) + (tb2 + tb3))
        }
        t.addKeys(dk, d, j0, (ta0 + ta1) + (ta2 + ta3))
        acc[k] += foldPair(ta0, tb0); acc[pairs &+ k] += foldPair(ta1, tb1)
        acc[2 &* pairs &+ k] += foldPair(ta2, tb2); acc[3 &* pairs &+ k] += foldPair(ta3, tb3)
        d &+= 2; k &+= 1
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

    /// Forward of Fourier attention (by `spec.kernel`: this file's fused kernel or the plain one).
    /// - Parameters:
    ///   - out: (B, T, C) attention output, overwritten.
    ///   - rowSum: (B, H, T) receives S_i = Σ_j W_ij + eps for backward and health metrics.
    ///   - qkv: (B, T, 3C); R: the layer's R (1, D or H entries by `spec.rMode`).
    public func fourierForward(
        out: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Float>,
        qkv: UnsafePointer<Float>, R: UnsafePointer<Float>,
        spec: FourierSpec, shape s: AttentionShape
    ) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        if spec.kernel == .plain {
            return plainFourierForward(out: out, rowSum: rowSum, qkv: qkv, R: R, spec: spec, shape: s)
        }
        let T = s.seq, C = s.width, D = s.headDim
        let scratch = fourierScratch
        parallelTasks(s.batch * s.heads, threads: threads) { task, w in
            // Sinc products reach subnormals, ~100 cycles per operand; W = Y^4 below 1e-38 is
            // nothing against eps, so this thread flushes them to 0 while it runs the head.
            let fpMode = ff_flush_denormals()
            defer { ff_restore_fp_mode(fpMode) }
            let b = task / s.heads, h = task % s.heads
            let f = scratch[w]
            fillR(f.r, R, mode: spec.rMode, h: h, D: D)
            f.load(qkv, s, b: b, h: h, forward: true)
            for i0 in stride(from: 0, to: T, by: rowTile) {
                let tile = RowTile(i0, T: T, causal: s.causal)
                let weightSums = forwardTile(f.tables, f, tile, p: spec.p)
                for r in 0..<tile.rows {
                    let i = i0 + r
                    let S = weightSums[r] + spec.eps
                    rowSum[task * T + i] = S
                    let inv = S > 0 ? 1 / S : 0
                    let o = out + (b * T + i) * C + h * D
                    for d in 0..<D { o[d] = f.outputs[r * f.Dv + d] * inv }
                }
            }
        }
    }

    /// Backward of Fourier attention (by `spec.kernel`). Accumulates into dqkv (B, T, 3C) and dR
    /// (entries of R).
    /// - Parameters:
    ///   - dout: (B, T, C) gradient of the output; out: (B, T, C) the forward output.
    ///   - rowSum: (B, H, T) saved by the forward.
    public func fourierBackward(
        dqkv: UnsafeMutablePointer<Float>, dR: UnsafeMutablePointer<Float>,
        dout: UnsafePointer<Float>, out: UnsafePointer<Float>,
        qkv: UnsafePointer<Float>, R: UnsafePointer<Float>,
        rowSum: UnsafePointer<Float>, spec: FourierSpec, shape s: AttentionShape
    ) {
        precondition(s.seq <= maxSeq && s.headDim == headDim)
        if spec.kernel == .plain {
            return plainFourierBackward(
                dqkv: dqkv, dR: dR, dout: dout, out: out, qkv: qkv, R: R,
                rowSum: rowSum, spec: spec, shape: s)
        }
        let T = s.seq, D = s.headDim
        let tasks = s.batch * s.heads
        reserveDR(tasks * D)
        let partial = dRPartial
        let scratch = fourierScratch
        parallelTasks(tasks, threads: threads) { task, w in
            let fpMode = ff_flush_denormals()  // as in forward, and W must equal forward's
            defer { ff_restore_fp_mode(fpMode) }
            let b = task / s.heads, h = task % s.heads
            let f = scratch[w]
            fillR(f.r, R, mode: spec.rMode, h: h, D: D)
            f.load(qkv, s, b: b, h: h, forward: false)
            f.stageGradients(dout: dout, out: out, rowSum: rowSum + task * T, s, b: b, h: h)
            let dRTask = partial + task * D
            for d in 0..<D { dRTask[d] = 0 }
            for i0 in stride(from: 0, to: T, by: rowTile) {
                let tile = RowTile(i0, T: T, causal: s.causal)
                backwardTile(f.tables, f, tile, spec: spec)
                f.writeQueryGradients(tile, dR: dRTask)
            }
            f.writeGradients(dqkv, s, b: b, h: h, dR: dRTask)
        }
        reduceDR(dR, partial: partial, spec: spec, shape: s)
    }
}
