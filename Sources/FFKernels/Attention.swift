import Foundation
import CFastMath

// Shapes used in this file:
//   B batch, T sequence length, H heads, D head dimension, C = H * D model width.
//   qkv (B, T, 3C): q of head h at [b, t, h*D + d], k at [.., C + h*D + d], v at [.., 2C + h*D + d]
//   out (B, T, C):  head h at [b, t, h*D + d]
//   rowStat (B, H, T): what backward needs per query row (Fourier: S = Σ_j W + eps;
//                      softmax: log-sum-exp of the scaled scores)

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

    /// Which entry of R applies to (head, dimension).
    public func index(head: Int, dim: Int) -> Int {
        switch self {
        case .scalar: return 0
        case .perDim: return dim
        case .perHead: return head
        }
    }
}

/// Which implementation runs Fourier attention (same results within fp32 round-off).
public enum FourierKernel: String, Sendable, CaseIterable {
    /// The tuned SIMD kernel (FourierAttention.swift).
    case fused
    /// Loops straight from the formulas in fp32 (FourierPlain.swift): slower, written to be read.
    case plain
}

/// Generalised Fourier integral attention: W = Π_d sinc(R_d (q_d - k_d))^p, A = W / (Σ_j W + eps).
public struct FourierSpec: Sendable, Equatable {
    public var p: Int
    public var eps: Float
    public var rMode: RMode
    public var kernel: FourierKernel
    public init(p: Int = 4, eps: Float = 1e-6, rMode: RMode = .scalar, kernel: FourierKernel = .fused) {
        self.p = p; self.eps = eps; self.rMode = rMode; self.kernel = kernel
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

#if FF_AVX512
    typealias FV = SIMD16<Float>
    typealias FVBits = SIMD16<UInt32>
#else
    typealias FV = SIMD8<Float>
    typealias FVBits = SIMD8<UInt32>
#endif
/// Floats per kernel vector: 16 with AVX-512, else 8 (`FV`, used by the Fourier kernel and sinCos).
let lanes = FV.scalarCount

/// |x| per lane (a bit mask: no comparisons, which Swift's SIMD masks do not always vectorise).
@_transparent func magnitude(_ x: FV) -> FV {
    unsafeBitCast(unsafeBitCast(x, to: FVBits.self) & 0x7FFF_FFFF, to: FV.self)
}

/// 1/x per lane within a few ulp of the division for 2^-126 <= |x| <= 2^126 (callers mask
/// other lanes), from the hardware estimate and a Newton step (see CFastMath): a vector division
/// costs about 10 cycles of one port, this 3 cheap operations.
@_transparent func reciprocal(_ x: FV) -> FV {
    #if FF_AVX512
        ff_reciprocal16(x)
    #elseif FF_AVX2
        ff_reciprocal8(x)
    #else
        1 / x
    #endif
}

/// a · b − c per lane, one rounding.
@_transparent func multiplySubtract(_ a: FV, _ b: FV, _ c: FV) -> FV {
    #if FF_AVX512
        ff_fmsub16(a, b, c)
    #elseif FF_AVX2
        ff_fmsub8(a, b, c)
    #else
        (-c).addingProduct(a, b)
    #endif
}

/// One vector from two whose lanes are to be summed: its low half holds partial sums of a's
/// lanes, its high half of b's. Two accumulators then take one vector of memory.
@_transparent func foldPair(_ a: FV, _ b: FV) -> FV {
    #if FF_AVX512
        ff_fold_pair16(a, b)
    #else
        FV(lowHalf: a.lowHalf + a.highHalf, highHalf: b.lowHalf + b.highHalf)
    #endif
}

/// out[k] = the sum of half-vector k's lanes, for k < count: the sums of `foldPair`'s a and b.
@inline(__always) func halfLaneSums(_ v: UnsafePointer<FV>, count: Int, into out: UnsafeMutablePointer<Float>) {
    let p = UnsafeRawPointer(v).assumingMemoryBound(to: Float.self)
    #if FF_AVX512
        ff_lane_sums8(p, count, out)
    #else
        let h = lanes / 2
        for k in 0..<count {
            var s: Float = 0
            for l in 0..<h { s += p[k * h + l] }
            out[k] = s
        }
    #endif
}

/// Attention kernels, forward and backward, for Fourier (FourierAttention.swift: fused, never a
/// T x T matrix, backward recomputes the weights) and softmax (SoftmaxAttention.swift: GEMMs with
/// one T x T scratch per worker). Owns the per-worker workspaces, sized once for (T, D, threads);
/// calls allocate nothing once `reserve` has seen the largest shape.
public final class AttentionKernels {
    public let maxSeq: Int, headDim: Int, threads: Int
    /// Per (b, h) partial dR, reduced in a fixed order so results do not depend on threads.
    private(set) var dRPartial: UnsafeMutablePointer<Double>
    private var dRPartialCount: Int
    // Each kind's per-worker scratch is made on its first call (outside the parallel region), so
    // a Fourier model holds no T x T softmax scratch: its memory stays linear in T.
    private var fourierStore: [FourierScratch]?
    private var softmaxStore: [SoftmaxScratch]?

    public init(maxSeq: Int, headDim: Int, threads: Int) {
        self.maxSeq = maxSeq; self.headDim = headDim; self.threads = max(1, threads)
        dRPartialCount = 0
        dRPartial = .allocate(capacity: 1)
    }

    /// Per-worker scratch of the Fourier kernel.
    var fourierScratch: [FourierScratch] {
        if let s = fourierStore { return s }
        let s = (0..<threads).map { _ in FourierScratch(T: maxSeq, D: headDim) }
        fourierStore = s
        return s
    }

    /// Per-worker T x T scratch of the softmax kernels.
    var softmaxScratch: [SoftmaxScratch] {
        if let s = softmaxStore { return s }
        let s = (0..<threads).map { _ in SoftmaxScratch(T: maxSeq) }
        softmaxStore = s
        return s
    }

    deinit { dRPartial.deallocate() }

    func reserveDR(_ n: Int) {
        if n > dRPartialCount {
            dRPartial.deallocate()
            dRPartial = .allocate(capacity: n)
            dRPartialCount = n
        }
    }

    /// Bytes of workspace held.
    public var workspaceBytes: Int {
        let softmax = (softmaxStore?.count ?? 0) * 2 * maxSeq * maxSeq * 4
        return dRPartialCount * 8 + (fourierStore ?? []).reduce(0) { $0 + $1.bytes } + softmax
    }

    /// The kernel families a caller will run.
    public enum Family: Sendable { case fourier, softmax }

    /// Reserves what forward and backward of `family` need at this shape, so that the training
    /// step itself allocates nothing. (A call without it makes its scratch on first use.)
    public func reserve(_ s: AttentionShape, for family: Family) {
        precondition(s.seq <= maxSeq && s.headDim == headDim, "attention workspace too small")
        reserveDR(s.batch * s.heads * s.headDim)
        switch family {
        case .fourier: _ = fourierScratch
        case .softmax: _ = softmaxScratch
        }
    }
}

/// x^p for an even p >= 2 (p = 4 is two squarings).
@inline(__always) func power(_ x: Float, _ p: Int) -> Float {
    if p == 4 { let x2 = x * x; return x2 * x2 }
    var r: Float = 1
    for _ in 0..<p { r *= x }
    return r
}
