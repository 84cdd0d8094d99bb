import Foundation
import FFKernels

// Adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs") and adaptive
// input embeddings (Baevski & Auli 2019, "Adaptive Input Representations for Neural Language
// Modeling"), written from the math.
//
// Letters used in shape comments: M rows (tokens), C d_model, V vocabulary, n tail clusters,
// c0 shortlist size (the first cutoff), H = c0 + n head outputs, r_k rows whose token falls in
// cluster k, s_k its size, d_k its dimension. Cluster 0 is the shortlist (the head's words);
// clusters 1...n are the tails.
//
// The vocabulary is cut into clusters by ascending cutoffs: cluster 0 = [0, cutoffs[0]),
// cluster k = [cutoffs[k-1], cutoffs[k]), and the last cluster ends at V. Cluster k lives in
// d_k = max(1, floor(C / divVal^k)) dimensions, so rare words get small vectors.
//
// The head scores the shortlist words and one logit per tail cluster; a tail scores its own
// words after projecting the hidden state down to d_k:
//   log p(w) = log p_head(w)                          for w in cluster 0,
//   log p(w) = log p_head(cluster k) + log p_k(w)     for w in cluster k >= 1.
// Training only evaluates a tail for the rows whose target falls in it.
//
// Wiring into a model such as LanguageModel: register the AdaptiveEmbedding where tok_emb is
// (first) and the AdaptiveSoftmax where lm_head is (after the blocks), so the layout keeps the
// order `gradientStages` relies on; with tying, the shared tables sit in the embedding stage,
// which backward completes last, so the softmax's earlier contributions are in by then. Create the
// flat buffers, `bind` both, then per step: `embedding.forward(tokens:M:out:)` (scale by sqrt(C)
// afterwards if the model does), ..., `softmax.forward(hidden:targets:M:lossScale:)`; in backward
// `softmax.backward(dhidden:)` into a zeroed buffer, ..., `embedding.backward(dout:)`.

/// The shape and options of an adaptive softmax and of the adaptive input embedding tied to it.
public struct AdaptiveSoftmaxConfig: Sendable, Equatable {
    /// Vocabulary size V.
    public var vocabSize: Int
    /// Model dimension C (the hidden state the softmax reads, the vector the embedding writes).
    public var dModel: Int
    /// Ascending cluster boundaries, each in 1..<V; empty gives a plain softmax over V words
    /// (e.g. [20000, 40000, 200000] for WikiText-103).
    public var cutoffs: [Int]
    /// Cluster k has dimension max(1, floor(C / divVal^k)) (1 keeps every cluster at C; the
    /// WikiText-103 setup uses 4).
    public var divVal: Float
    /// The softmax's word weights are the adaptive input's embedding tables (shortlist and
    /// tails), held once in the layout.
    public var tieWeights: Bool
    /// The softmax's tail projections (and the shortlist's, with `projectShortlist`) are the
    /// adaptive input's projections, used transposed. Needs `tieWeights`.
    public var tieProjections: Bool
    /// The adaptive input also projects the shortlist's embeddings through a [C, C] matrix
    /// (fairseq always does); without it cluster 0's vectors are used as they are. With
    /// `tieProjections` the softmax head applies the same matrix to the hidden state.
    public var projectShortlist: Bool

    public init(
        vocabSize: Int, dModel: Int, cutoffs: [Int], divVal: Float = 1, tieWeights: Bool = false,
        tieProjections: Bool = false, projectShortlist: Bool = false
    ) {
        self.vocabSize = vocabSize; self.dModel = dModel; self.cutoffs = cutoffs; self.divVal = divVal
        self.tieWeights = tieWeights; self.tieProjections = tieProjections; self.projectShortlist = projectShortlist
    }

    /// Tail clusters n.
    public var tailCount: Int { cutoffs.count }
    /// Clusters including the shortlist, n + 1.
    public var clusterCount: Int { cutoffs.count + 1 }
    /// Shortlist size c0.
    public var shortlistSize: Int { cutoffs.first ?? vocabSize }
    /// Head outputs H = c0 + n.
    public var headSize: Int { shortlistSize + tailCount }

    /// The token ids of cluster k (0 = shortlist).
    public func clusterRange(_ k: Int) -> Range<Int> {
        let lo = k == 0 ? 0 : cutoffs[k - 1]
        let hi = k < cutoffs.count ? cutoffs[k] : vocabSize
        return lo..<hi
    }

    /// d_k = max(1, floor(C / divVal^k)).
    public func clusterDim(_ k: Int) -> Int {
        // Repeated products of a small factor are exact in Double, so an exact quotient floors
        // to itself (pow in Float could land just below it).
        var d = 1.0
        for _ in 0..<k { d *= Double(divVal) }
        return max(1, Int((Double(dModel) / d).rounded(.down)))
    }

    /// The cluster of `token` (0 = shortlist).
    @inline(__always) public func cluster(of token: Int) -> Int {
        var k = 0
        while k < cutoffs.count && token >= cutoffs[k] { k += 1 }
        return k
    }

    /// Problems that make the configuration unusable, each a sentence naming the field.
    public func problems() -> [String] {
        var p: [String] = []
        if vocabSize < 2 { p.append("vocab size must be at least 2 (got \(vocabSize))") }
        if dModel < 1 { p.append("model.d_model must be at least 1 (got \(dModel))") }
        if let first = cutoffs.first, first < 1 {
            p.append("adaptive.cutoffs must be positive (got \(first) first): the shortlist cannot be empty")
        }
        for i in cutoffs.indices.dropFirst() where cutoffs[i] <= cutoffs[i - 1] {
            p.append("adaptive.cutoffs must be strictly ascending (got \(cutoffs[i - 1]) then \(cutoffs[i]))")
        }
        if let over = cutoffs.first(where: { $0 >= vocabSize }) {
            p.append("adaptive.cutoffs must each be below the vocabulary size \(vocabSize) (got \(over))")
        }
        if !(divVal >= 1) || !divVal.isFinite {
            p.append("adaptive.div_val must be a finite number >= 1 (got \(divVal))")
        }
        if tieProjections && !tieWeights {
            p.append(
                "adaptive.tie_projections needs adaptive.tie_weights: projections are shared only between tied "
                    + "tables")
        }
        return p
    }
}

/// Rows grouped by cluster with a stable counting sort: the rows of cluster 0 in their original
/// order, then those of cluster 1, and so on. Sized at init; `group` allocates nothing (the counts
/// are owned pointers rather than arrays, so a copy held elsewhere cannot force a copy-on-write).
final class RowPartition {
    let clusters: Int
    /// perm[i] = the original row of grouped row i (M).
    let perm: UnsafeMutablePointer<Int32>
    /// The cluster of each original row (M).
    private let key: UnsafeMutablePointer<Int32>
    /// Rows in cluster k (clusters), and the first grouped row of cluster k (clusters + 1, the last = M).
    let count: UnsafeMutablePointer<Int>
    let start: UnsafeMutablePointer<Int>

    init(clusters: Int, maxRows: Int) {
        self.clusters = clusters
        perm = .allocate(capacity: max(maxRows, 1))
        key = .allocate(capacity: max(maxRows, 1))
        count = .allocate(capacity: clusters)
        count.initialize(repeating: 0, count: clusters)
        start = .allocate(capacity: clusters + 1)
        start.initialize(repeating: 0, count: clusters + 1)
    }

    deinit { perm.deallocate(); key.deallocate(); count.deallocate(); start.deallocate() }

    func group(M: Int, clusterOf: (Int) -> Int) {
        for k in 0..<clusters { count[k] = 0 }
        for m in 0..<M {
            let k = clusterOf(m)
            key[m] = Int32(k)
            count[k] += 1
        }
        start[0] = 0
        for k in 0..<clusters { start[k + 1] = start[k] + count[k] }
        // Reuse `count` as the fill cursor, then restore it from `start`.
        for k in 0..<clusters { count[k] = start[k] }
        for m in 0..<M {
            let k = Int(key[m])
            perm[count[k]] = Int32(m)
            count[k] += 1
        }
        for k in 0..<clusters { count[k] = start[k + 1] - start[k] }
    }
}

/// How a cluster's input reaches its word weights.
enum ClusterProjection: Equatable {
    /// The cluster reads the C-dimensional input directly (d_k = C).
    case none
    /// Its own weight P (d_k, C): z = x · Pᵀ (an nn.Linear(C, d_k)).
    case own(Int)
    /// The adaptive input's projection P (C, d_k), used transposed: z = x · P.
    case shared(Int)
}

/// Adaptive input embedding: token → its cluster's table row (d_k) → projected to C.
///
/// Tensors registered under `prefix` (default "adaptive_input"), for each cluster k in 0...n:
/// - `{prefix}.embeddings.{k}.weight` [s_k, d_k]: the table of cluster k (row = token - first
///   token of the cluster);
/// - `{prefix}.projections.{k}.weight` [C, d_k]: an nn.Linear(d_k, C) weight, out = row · Pᵀ.
///   Present for every tail, and for k = 0 only with `projectShortlist` (d_0 = C, so the
///   shortlist needs none).
///
/// Scratch for up to `maxRows` tokens is allocated at init; `forward` and `backward` allocate
/// nothing. Call `bind(params:grads:)` once the flat buffers of the layout exist.
public final class AdaptiveEmbedding {
    public let config: AdaptiveSoftmaxConfig
    public let maxRows: Int
    /// The tensors this object added to the layout, in order.
    public let registered: [TensorInfo]
    /// Offset of cluster k's table (s_k, d_k).
    let tables: [Int]
    /// Offset of cluster k's projection (C, d_k), nil when unprojected.
    let projections: [Int?]
    let dims: [Int]
    public private(set) var params: FlatBuffer?
    public private(set) var grads: FlatBuffer?

    private let partition: RowPartition
    private let arena = Arena()
    private let tokensBuf: UnsafeMutablePointer<Int32>  // (M) tokens of the last forward
    /// Σ_k r_k d_k <= M·C: table rows of projected clusters, grouped.
    private let gathered: UnsafeMutablePointer<Float>
    private let dGathered: UnsafeMutablePointer<Float>  // same layout as `gathered`
    /// (M, C) grouped rows: projection outputs, then dout in backward.
    private let projected: UnsafeMutablePointer<Float>
    private var gatheredOffset: [Int]  // (n + 1) where cluster k starts in `gathered`
    private var lastRows = -1

    /// Registers the tables and projections in `layout` under `prefix`.
    public init(
        config: AdaptiveSoftmaxConfig, layout: inout ParameterLayout, prefix: String = "adaptive_input",
        maxRows: Int
    ) {
        precondition(config.problems().isEmpty, config.problems().joined(separator: "; "))
        precondition(maxRows >= 1, "maxRows must be at least 1 (got \(maxRows))")
        self.config = config
        self.maxRows = maxRows
        let C = config.dModel, K = config.clusterCount
        var reg: [TensorInfo] = [], tabs: [Int] = [], projs: [Int?] = [], ds: [Int] = []
        for k in 0..<K {
            let d = config.clusterDim(k), s = config.clusterRange(k).count
            let t = layout.add("\(prefix).embeddings.\(k).weight", [s, d], decays: true)
            reg.append(t); tabs.append(t.offset); ds.append(d)
            if k > 0 || config.projectShortlist {
                let pt = layout.add("\(prefix).projections.\(k).weight", [C, d], decays: true)
                reg.append(pt); projs.append(pt.offset)
            } else {
                projs.append(nil)
            }
        }
        registered = reg; tables = tabs; projections = projs; dims = ds
        partition = RowPartition(clusters: K, maxRows: maxRows)
        gatheredOffset = [Int](repeating: 0, count: K)
        let hTok = arena.reserve(maxRows), hG = arena.reserve(maxRows * C), hdG = arena.reserve(maxRows * C)
        let hP = arena.reserve(maxRows * C)
        arena.commit()
        // Int32 shares Float storage (same size), as in LanguageModel.
        tokensBuf = UnsafeMutableRawPointer(arena.pointer(hTok)).assumingMemoryBound(to: Int32.self)
        gathered = arena.pointer(hG); dGathered = arena.pointer(hdG); projected = arena.pointer(hP)
    }

    /// Uses `params` and `grads` (flat buffers of the layout passed to init) from now on.
    public func bind(params: FlatBuffer, grads: FlatBuffer) {
        let end = registered.map { $0.range.upperBound }.max() ?? 0
        precondition(
            params.count == grads.count && params.count >= end,
            "buffers of \(params.count)/\(grads.count) floats do not hold this embedding's tensors (need "
                + "\(end))")
        self.params = params; self.grads = grads
    }

    /// Bytes held for scratch (parameters and gradients excluded).
    public var scratchBytes: Int { arena.floats * 4 + maxRows * 8 }

    /// out (M, C) = the embedding of tokens (M), every token in 0..<V. Keeps what backward needs.
    public func forward(tokens: UnsafePointer<Int32>, M: Int, out: UnsafeMutablePointer<Float>) {
        precondition(M >= 0 && M <= maxRows, "\(M) rows exceed the embedding's allocation \(maxRows)")
        guard let params else { preconditionFailure("AdaptiveEmbedding used before bind(params:grads:)") }
        let C = config.dModel, V = config.vocabSize, p = params.pointer
        tokensBuf.update(from: tokens, count: M)
        partition.group(M: M) { m in
            let t = Int(tokens[m])
            precondition(t >= 0 && t < V, "token \(t) outside the vocabulary (\(V))")
            return config.cluster(of: t)
        }
        let perm = partition.perm
        var goff = 0
        for k in 0..<config.clusterCount {
            let r = partition.count[k], s = partition.start[k], d = dims[k]
            let lo = config.clusterRange(k).lowerBound, table = p + tables[k]
            gatheredOffset[k] = goff
            guard r > 0 else { continue }
            if let proj = projections[k] {
                // Gather the cluster's table rows, one GEMM up to C, scatter back to row order.
                let g = gathered + goff
                for i in 0..<r {
                    let tok = Int(tokens[Int(perm[s + i])])
                    (g + i * d).update(from: table + (tok - lo) * d, count: d)
                }
                let y = projected + s * C
                linearForward(y, g, p + proj, nil, M: r, K: d, N: C)
                for i in 0..<r { (out + Int(perm[s + i]) * C).update(from: y + i * C, count: C) }
                goff += r * d
            } else {
                for i in 0..<r {
                    let m = Int(perm[s + i])
                    (out + m * C).update(from: table + (Int(tokens[m]) - lo) * C, count: C)
                }
            }
        }
        lastRows = M
    }

    /// Accumulates into the bound gradients the tables' and projections' gradients, given dout
    /// (M, C), the gradient of the preceding forward's output.
    public func backward(dout: UnsafePointer<Float>) {
        precondition(lastRows >= 0, "backward needs a preceding forward")
        guard let params, let grads else { preconditionFailure("AdaptiveEmbedding used before bind(params:grads:)") }
        let C = config.dModel, p = params.pointer, g = grads.pointer, perm = partition.perm
        for k in 0..<config.clusterCount {
            let r = partition.count[k], s = partition.start[k], d = dims[k]
            let lo = config.clusterRange(k).lowerBound, gTable = g + tables[k]
            guard r > 0 else { continue }
            if let proj = projections[k] {
                let dy = projected + s * C
                for i in 0..<r { (dy + i * C).update(from: dout + Int(perm[s + i]) * C, count: C) }
                let dg = dGathered + gatheredOffset[k]
                dg.update(repeating: 0, count: r * d)
                linearBackward(
                    dinp: dg, dweight: g + proj, dbias: nil, dout: dy, inp: gathered + gatheredOffset[k],
                    weight: p + proj, M: r, K: d, N: C)
                for i in 0..<r {
                    let row = gTable + (Int(tokensBuf[Int(perm[s + i])]) - lo) * d, src = dg + i * d
                    for j in 0..<d { row[j] += src[j] }
                }
            } else {
                for i in 0..<r {
                    let m = Int(perm[s + i])
                    let row = gTable + (Int(tokensBuf[m]) - lo) * C, src = dout + m * C
                    for c in 0..<C { row[c] += src[c] }
                }
            }
        }
    }

    /// The embedding (C) of one token, computed in Double from the bound parameters (analysis and
    /// tests; allocates).
    public func embedding(of token: Int) -> [Double] {
        precondition(
            token >= 0 && token < config.vocabSize,
            "token \(token) outside the vocabulary "
                + "(\(config.vocabSize))")
        guard let params else { preconditionFailure("AdaptiveEmbedding used before bind(params:grads:)") }
        let C = config.dModel, p = params.pointer, k = config.cluster(of: token), d = dims[k]
        let row = p + tables[k] + (token - config.clusterRange(k).lowerBound) * d
        guard let proj = projections[k] else { return (0..<C).map { Double(row[$0]) } }
        return (0..<C).map { c in
            var s = 0.0
            for j in 0..<d { s += Double(p[proj + c * d + j]) * Double(row[j]) }
            return s
        }
    }
}

/// Adaptive softmax: the negative log-likelihood of targets under the clustered softmax above,
/// with an explicit backward.
///
/// Tensors registered under `prefix` (default "adaptive_softmax"), untied:
/// - `{prefix}.head.weight` [c0 + n, C]: rows 0..<c0 score the shortlist words, row c0 + i
///   scores tail cluster i + 1 (PyTorch's AdaptiveLogSoftmaxWithLoss head, no bias);
/// - `{prefix}.tail.{i}.proj.weight` [d_{i+1}, C]: nn.Linear(C, d_{i+1}), for i in 0..<n;
/// - `{prefix}.tail.{i}.out.weight` [s_{i+1}, d_{i+1}]: nn.Linear(d_{i+1}, s_{i+1}).
///
/// Tied to an `AdaptiveEmbedding` (`tieWeights`), the word weights are its tables, which the
/// layout holds once: the shortlist rows are `embeddings.0.weight` and tail i's out weight is
/// `embeddings.{i+1}.weight`; only the cluster rows of the head are the softmax's own:
/// - `{prefix}.head.clusters.weight` [n, C] (absent when n = 0).
/// With `tieProjections` the tail projections are the embedding's `projections.{i+1}.weight`
/// [C, d] used transposed (z = x · P), and with `projectShortlist` the shortlist logits read
/// x · `projections.0.weight` too; otherwise each tail keeps its own `tail.{i}.proj.weight`.
/// Both objects accumulate into the same gradient entries.
///
/// Memory: the head's logits (M, H) are kept from forward to backward. A tail's logits are
/// scored `tailChunk` rows at a time and scored again in backward, so the tails need
/// tailChunk · max s_k floats rather than maxRows · max s_k (every row may fall in the largest
/// tail: 2.6 GB for WikiText-103 at 4096 rows). The tails' inputs are projected to d_k first, so
/// the second scoring costs little next to the head. All scratch is allocated at init; `forward`
/// and `backward` allocate nothing. Call `bind(params:grads:)` once the flat buffers exist.
public final class AdaptiveSoftmax {
    public let config: AdaptiveSoftmaxConfig
    public let maxRows: Int
    /// Rows of a tail scored at once.
    public let tailChunk: Int
    public let threads: Int
    /// The tensors this object added to the layout, in order (tied ones are the embedding's).
    public let registered: [TensorInfo]
    /// The embedding whose tables this softmax shares, when tied.
    public let tiedEmbedding: AdaptiveEmbedding?
    /// Offset of cluster k's word weights (s_k, d_k); for k = 0 the shortlist rows (c0, d_0 = C).
    let outWeights: [Int]
    let projections: [ClusterProjection]
    /// Offset of the head's cluster rows (n, C).
    let clusterWeight: Int
    let dims: [Int]
    public private(set) var params: FlatBuffer?
    public private(set) var grads: FlatBuffer?

    private let partition: RowPartition
    private let arena = Arena()
    private let x, dx: UnsafeMutablePointer<Float>  // (M, C) hidden rows grouped by target cluster, and their gradient
    private let zHead: UnsafeMutablePointer<Float>  // (M, C) projected input of the shortlist (projectShortlist, tied)
    private let zTail: UnsafeMutablePointer<Float>  // Σ_k r_k d_k <= M·C: projected inputs of the tails, grouped
    private let dz: UnsafeMutablePointer<Float>  // <= (M, C) the gradient of one cluster's z
    private let headLogits: UnsafeMutablePointer<Float>  // (M, H), dlogits after a training forward
    private let tailLogits: UnsafeMutablePointer<Float>  // (tailChunk, max s_k) one chunk of a tail
    private let headTargets, tailTargets: UnsafeMutablePointer<Int32>  // (M) grouped
    private let rowLoss: UnsafeMutablePointer<Double>  // (M)
    private let zOffset: UnsafeMutablePointer<Int>  // (n + 1) where cluster k starts in zTail
    private var lastRows = 0
    private var lastScale: Float?

    /// Rows per cluster in the last forward (cluster 0 also counts ignored rows; allocates).
    public var lastClusterRows: [Int] { Array(UnsafeBufferPointer(start: partition.count, count: config.clusterCount)) }

    /// Registers the softmax's own tensors in `layout` under `prefix`. With `config.tieWeights`,
    /// `tiedTo` must be the embedding built from the same config (registered earlier in the same
    /// layout and bound to the same buffers). `tailChunk` defaults to min(maxRows, 256).
    public init(
        config: AdaptiveSoftmaxConfig, layout: inout ParameterLayout, prefix: String = "adaptive_softmax",
        maxRows: Int, tailChunk: Int? = nil, threads: Int = 1, tiedTo embedding: AdaptiveEmbedding? = nil
    ) {
        precondition(config.problems().isEmpty, config.problems().joined(separator: "; "))
        precondition(maxRows >= 1, "maxRows must be at least 1 (got \(maxRows))")
        precondition((tailChunk ?? 1) >= 1, "tailChunk must be at least 1 (got \(tailChunk ?? 0))")
        precondition(
            config.tieWeights == (embedding != nil),
            config.tieWeights
                ? "tieWeights needs the AdaptiveEmbedding to tie to"
                : "an embedding was given "
                    + "but tieWeights is off")
        if let embedding {
            precondition(embedding.config == config, "the tied embedding was built from a different config")
        }
        self.config = config
        self.maxRows = maxRows
        self.tailChunk = min(tailChunk ?? 256, maxRows)
        self.threads = max(1, threads)
        tiedEmbedding = embedding
        let C = config.dModel, n = config.tailCount, c0 = config.shortlistSize, K = config.clusterCount
        dims = (0..<K).map { config.clusterDim($0) }
        var reg: [TensorInfo] = [], outs: [Int] = [], projs: [ClusterProjection] = []
        if let embedding {
            outs.append(embedding.tables[0])
            if config.tieProjections, let shared = embedding.projections[0] {
                projs.append(.shared(shared))
            } else {
                projs.append(.none)
            }
            if n > 0 {
                let t = layout.add("\(prefix).head.clusters.weight", [n, C], decays: true)
                reg.append(t); clusterWeight = t.offset
            } else {
                clusterWeight = 0
            }
        } else {
            let t = layout.add("\(prefix).head.weight", [c0 + n, C], decays: true)
            reg.append(t); outs.append(t.offset); projs.append(.none)
            clusterWeight = t.offset + c0 * C
        }
        for i in 0..<n {
            let k = i + 1, d = dims[k], s = config.clusterRange(k).count
            if let embedding, config.tieProjections, let shared = embedding.projections[k] {
                projs.append(.shared(shared))
            } else {
                let t = layout.add("\(prefix).tail.\(i).proj.weight", [d, C], decays: true)
                reg.append(t); projs.append(.own(t.offset))
            }
            if let embedding {
                outs.append(embedding.tables[k])
            } else {
                let t = layout.add("\(prefix).tail.\(i).out.weight", [s, d], decays: true)
                reg.append(t); outs.append(t.offset)
            }
        }
        registered = reg; outWeights = outs; projections = projs

        partition = RowPartition(clusters: K, maxRows: maxRows)
        zOffset = .allocate(capacity: K)
        zOffset.initialize(repeating: 0, count: K)
        let maxTail = (1..<K).map { config.clusterRange($0).count }.max() ?? 0
        let a = arena
        let hx = a.reserve(maxRows * C), hdx = a.reserve(maxRows * C)
        let hzh = a.reserve(projs[0] == .none ? 0 : maxRows * C), hzt = a.reserve(n > 0 ? maxRows * C : 0)
        let hdz = a.reserve(maxRows * C)
        let hhl = a.reserve(maxRows * config.headSize), htl = a.reserve(self.tailChunk * maxTail)
        let hht = a.reserve(maxRows), htt = a.reserve(maxRows)
        a.commit()
        x = a.pointer(hx); dx = a.pointer(hdx); zHead = a.pointer(hzh); zTail = a.pointer(hzt); dz = a.pointer(hdz)
        headLogits = a.pointer(hhl); tailLogits = a.pointer(htl)
        headTargets = UnsafeMutableRawPointer(a.pointer(hht)).assumingMemoryBound(to: Int32.self)
        tailTargets = UnsafeMutableRawPointer(a.pointer(htt)).assumingMemoryBound(to: Int32.self)
        rowLoss = .allocate(capacity: maxRows)
    }

    deinit { rowLoss.deallocate(); zOffset.deallocate() }

    /// Uses `params` and `grads` (flat buffers of the layout passed to init) from now on.
    public func bind(params: FlatBuffer, grads: FlatBuffer) {
        var end = registered.map { $0.range.upperBound }.max() ?? 0
        if let e = tiedEmbedding {
            end = max(end, e.registered.map { $0.range.upperBound }.max() ?? 0)
            if let ep = e.params, let eg = e.grads {
                precondition(ep === params && eg === grads, "the tied embedding is bound to other buffers")
            }
        }
        precondition(
            params.count == grads.count && params.count >= end,
            "buffers of \(params.count)/\(grads.count) floats do not hold this softmax's tensors (need \(end))")
        self.params = params; self.grads = grads
    }

    /// Bytes held for scratch (parameters and gradients excluded).
    public var scratchBytes: Int { arena.floats * 4 + maxRows * 8 }

    /// Returns the summed negative log-likelihood (nats, in Double) of targets (M) given hidden
    /// (M, C); a target < 0 is ignored. With a `lossScale`, keeps what the following `backward`
    /// needs for the gradient of `lossScale * loss`; with nil, only evaluates.
    public func forward(
        hidden: UnsafePointer<Float>, targets: UnsafePointer<Int32>, M: Int, lossScale: Float?
    ) -> Double {
        precondition(M >= 0 && M <= maxRows, "\(M) rows exceed the softmax's allocation \(maxRows)")
        guard let params else { preconditionFailure("AdaptiveSoftmax used before bind(params:grads:)") }
        let C = config.dModel, V = config.vocabSize, H = config.headSize, c0 = config.shortlistSize
        let n = config.tailCount, p = params.pointer
        lastRows = M
        lastScale = lossScale

        // Group rows by the cluster of their target (ignored rows go with the shortlist), so each
        // tail reads one contiguous block of x.
        partition.group(M: M) { m in
            let t = Int(targets[m])
            precondition(t < V, "target \(t) outside the vocabulary (\(V))")
            return t < 0 ? 0 : config.cluster(of: t)
        }
        let perm = partition.perm
        for i in 0..<M {
            let m = Int(perm[i]), t = Int(targets[m])
            (x + i * C).update(from: hidden + m * C, count: C)
            if t < c0 {
                headTargets[i] = t < 0 ? -1 : Int32(t)
            } else {
                let k = config.cluster(of: t)
                headTargets[i] = Int32(c0 + k - 1)
                tailTargets[i] = Int32(t - config.clusterRange(k).lowerBound)
            }
        }
        guard M > 0 else { return 0 }

        // Head over every row: shortlist words, then one logit per tail cluster. In training the
        // logits become dlogits here, as crossEntropy fuses its backward.
        let inp0 = project(0, x: x, rows: M, z: zHead, p: p)
        score(0, inp: inp0, rows: M, logits: headLogits, ld: H, p: p)
        if n > 0 {
            sgemm(
                threads: threads, transA: false, transB: true, M: M, N: n, K: C, alpha: 1, x, lda: C, p + clusterWeight,
                ldb: C,
                beta: 0, headLogits + c0, ldc: H)
        }
        var loss = crossEntropy(
            logits: headLogits, targets: headTargets, M: M, V: H, dscale: lossScale,
            rowLoss: rowLoss, threads: threads)

        // Each tail over its own rows only; the logits of a chunk are dropped after its loss.
        var zoff = 0
        for k in 1..<config.clusterCount {
            let r = partition.count[k], s = partition.start[k], size = config.clusterRange(k).count
            zOffset[k] = zoff
            guard r > 0 else { continue }
            let inp = project(k, x: x + s * C, rows: r, z: zTail + zoff, p: p), d = dims[k]
            var done = 0
            while done < r {
                let rc = min(tailChunk, r - done)
                score(k, inp: inp + done * d, rows: rc, logits: tailLogits, ld: size, p: p)
                loss += crossEntropy(
                    logits: tailLogits, targets: tailTargets + s + done, M: rc, V: size, dscale: nil,
                    rowLoss: rowLoss + s + done, threads: threads)
                done += rc
            }
            zoff += r * d
        }
        return loss
    }

    /// Accumulates dhidden (M, C) and the bound parameter gradients of `lossScale * loss` from the
    /// preceding training forward. Consumes that forward's saved state.
    public func backward(dhidden: UnsafeMutablePointer<Float>) {
        guard let scale = lastScale else { preconditionFailure("backward needs a preceding forward with a lossScale") }
        lastScale = nil
        guard let params, let grads else { preconditionFailure("AdaptiveSoftmax used before bind(params:grads:)") }
        let M = lastRows, C = config.dModel, H = config.headSize, c0 = config.shortlistSize, n = config.tailCount
        let p = params.pointer, g = grads.pointer
        guard M > 0 else { return }
        dx.update(repeating: 0, count: M * C)

        // Head: headLogits hold dlogits (M, H).
        let inp0 = projections[0] == .none ? UnsafePointer(x) : UnsafePointer(zHead)
        scoreBackward(
            0, dlogits: headLogits, ld: H, inp: inp0, rows: M, dinp: projections[0] == .none ? dx : dz, p: p, g: g)
        projectBackward(0, x: x, rows: M, dz: dz, dx: dx, p: p, g: g)
        if n > 0 {
            let dl = headLogits + c0  // (M, n), row stride H
            sgemm(
                threads: threads, transA: true, transB: false, M: n, N: C, K: M, alpha: 1, dl, lda: H, x, ldb: C,
                beta: 1, g + clusterWeight, ldc: C)
            sgemm(
                threads: threads, transA: false, transB: false, M: M, N: C, K: n, alpha: 1, dl, lda: H,
                p + clusterWeight, ldb: C,
                beta: 1, dx, ldc: C)
        }

        // Tails: score each chunk again, turn it into dlogits, and push it through.
        for k in 1..<config.clusterCount {
            let r = partition.count[k], s = partition.start[k], size = config.clusterRange(k).count, d = dims[k]
            guard r > 0 else { continue }
            let xk = x + s * C, dxk = dx + s * C
            let projected = projections[k] != .none
            let inp = projected ? UnsafePointer(zTail + zOffset[k]) : UnsafePointer(xk)
            var done = 0
            while done < r {
                let rc = min(tailChunk, r - done)
                score(k, inp: inp + done * d, rows: rc, logits: tailLogits, ld: size, p: p)
                _ = crossEntropy(
                    logits: tailLogits, targets: tailTargets + s + done, M: rc, V: size, dscale: scale,
                    rowLoss: rowLoss + s + done, threads: threads)
                scoreBackward(
                    k, dlogits: tailLogits, ld: size, inp: inp + done * d, rows: rc,
                    dinp: projected ? dz + done * d : dxk + done * C, p: p, g: g)
                done += rc
            }
            projectBackward(k, x: xk, rows: r, dz: dz, dx: dxk, p: p, g: g)
        }

        // Scatter the grouped rows back to the caller's order.
        let perm = partition.perm
        for i in 0..<M {
            let dst = dhidden + Int(perm[i]) * C, src = dx + i * C
            for c in 0..<C { dst[c] += src[c] }
        }
    }

    /// Cluster k's input for x (r, C): x itself, or z (r, d_k) = its projection, written to `z`.
    private func project(
        _ k: Int, x: UnsafePointer<Float>, rows r: Int, z: UnsafeMutablePointer<Float>,
        p: UnsafeMutablePointer<Float>
    ) -> UnsafePointer<Float> {
        let C = config.dModel, d = dims[k]
        switch projections[k] {
        case .none:
            return x
        case .own(let P):  // P (d, C): z = x · Pᵀ
            sgemm(
                threads: threads, transA: false, transB: true, M: r, N: d, K: C, alpha: 1, x, lda: C, p + P, ldb: C,
                beta: 0, z, ldc: d)
        case .shared(let P):  // P (C, d): z = x · P
            sgemm(
                threads: threads, transA: false, transB: false, M: r, N: d, K: C, alpha: 1, x, lda: C, p + P, ldb: d,
                beta: 0, z, ldc: d)
        }
        return UnsafePointer(z)
    }

    /// logits (r, s_k), row stride `ld` = inp (r, d_k) · Outᵀ.
    private func score(
        _ k: Int, inp: UnsafePointer<Float>, rows r: Int, logits: UnsafeMutablePointer<Float>, ld: Int,
        p: UnsafeMutablePointer<Float>
    ) {
        let d = dims[k], s = config.clusterRange(k).count
        sgemm(
            threads: threads, transA: false, transB: true, M: r, N: s, K: d, alpha: 1, inp, lda: d, p + outWeights[k],
            ldb: d,
            beta: 0, logits, ldc: ld)
    }

    /// dOut (s_k, d_k) += dlogitsᵀ · inp, and the gradient of inp (r, d_k): accumulated into
    /// `dinp` when inp is x (unprojected), written to it when inp is a z.
    private func scoreBackward(
        _ k: Int, dlogits: UnsafePointer<Float>, ld: Int, inp: UnsafePointer<Float>, rows r: Int,
        dinp: UnsafeMutablePointer<Float>, p: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>
    ) {
        let d = dims[k], s = config.clusterRange(k).count, out = outWeights[k]
        sgemm(
            threads: threads, transA: true, transB: false, M: s, N: d, K: r, alpha: 1, dlogits, lda: ld, inp, ldb: d,
            beta: 1, g + out, ldc: d)
        sgemm(
            threads: threads, transA: false, transB: false, M: r, N: d, K: s, alpha: 1, dlogits, lda: ld, p + out,
            ldb: d,
            beta: projections[k] == .none ? 1 : 0, dinp, ldc: d)
    }

    /// Given dz (r, d_k), accumulates the projection's gradient and dx (r, C); nothing to do for
    /// an unprojected cluster.
    private func projectBackward(
        _ k: Int, x: UnsafePointer<Float>, rows r: Int, dz: UnsafePointer<Float>,
        dx: UnsafeMutablePointer<Float>, p: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>
    ) {
        let C = config.dModel, d = dims[k]
        switch projections[k] {
        case .none:
            break
        case .own(let P):  // z = x · Pᵀ, P (d, C)
            sgemm(
                threads: threads, transA: true, transB: false, M: d, N: C, K: r, alpha: 1, dz, lda: d, x, ldb: C,
                beta: 1, g + P, ldc: C)
            sgemm(
                threads: threads, transA: false, transB: false, M: r, N: C, K: d, alpha: 1, dz, lda: d, p + P, ldb: C,
                beta: 1, dx, ldc: C
            )
        case .shared(let P):  // z = x · P, P (C, d)
            sgemm(
                threads: threads, transA: true, transB: false, M: C, N: d, K: r, alpha: 1, x, lda: C, dz, ldb: d,
                beta: 1, g + P, ldc: d)
            sgemm(
                threads: threads, transA: false, transB: true, M: r, N: C, K: d, alpha: 1, dz, lda: d, p + P, ldb: d,
                beta: 1, dx, ldc: C)
        }
    }

    // MARK: Evaluation

    /// log p(w) for every word w of the vocabulary (V) given one hidden state (C), computed in
    /// Double from the bound parameters, straight from the definition (analysis and tests;
    /// allocates).
    public func logProbabilities(_ hidden: [Double]) -> [Double] {
        precondition(hidden.count == config.dModel, "hidden has \(hidden.count) entries, not d_model \(config.dModel)")
        guard let params else { preconditionFailure("AdaptiveSoftmax used before bind(params:grads:)") }
        let p = params.pointer, C = config.dModel, n = config.tailCount, c0 = config.shortlistSize

        func matVec(_ w: Int, rows: Int, cols: Int, transposed: Bool, _ v: [Double]) -> [Double] {
            // transposed: w is (cols, rows) and the result is wᵀ v.
            (0..<rows).map { i in
                var s = 0.0
                for j in 0..<cols { s += Double(transposed ? p[w + j * rows + i] : p[w + i * cols + j]) * v[j] }
                return s
            }
        }
        func logSoftmax(_ v: [Double]) -> [Double] {
            let mx = v.max() ?? 0
            let lse = mx + log(v.reduce(0) { $0 + exp($1 - mx) })
            return v.map { $0 - lse }
        }
        func scores(_ k: Int) -> [Double] {
            let d = dims[k], s = config.clusterRange(k).count
            var inp = hidden
            switch projections[k] {
            case .none: break
            case .own(let P): inp = matVec(P, rows: d, cols: C, transposed: false, hidden)
            case .shared(let P): inp = matVec(P, rows: d, cols: C, transposed: true, hidden)
            }
            return matVec(outWeights[k], rows: s, cols: d, transposed: false, inp)
        }
        let head = logSoftmax(scores(0) + matVec(clusterWeight, rows: n, cols: C, transposed: false, hidden))
        var out = Array(head[0..<c0])
        out.reserveCapacity(config.vocabSize)
        for k in 1..<config.clusterCount {
            out += logSoftmax(scores(k)).map { $0 + head[c0 + k - 1] }
        }
        return out
    }

    /// `logProbabilities` of a Float hidden state.
    public func logProbabilities(_ hidden: [Float]) -> [Double] { logProbabilities(hidden.map(Double.init)) }
}
