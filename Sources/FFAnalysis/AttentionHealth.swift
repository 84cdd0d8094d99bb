import Foundation
import FFKernels
import FFModel

/// What decides whether a Fourier attention layer's rows stay alive, measured on the last
/// forward pass: R, the size of q and k, the distribution of the kernel's arguments
/// u = R·|q_d − k_d|, and the row sums. A row collapses when Σ_j W falls below eps: then
/// Σ_j A < ½ and the layer passes almost nothing on for that query.
public struct LayerHealth: Codable, Sendable, Equatable {
    public var layer: Int
    /// Mean of the layer's R entries.
    public var r: Double
    /// Root mean square of ‖q‖ and ‖k‖ per head (over rows and heads).
    public var qNorm: Double, kNorm: Double
    /// 10th, 50th and 90th percentiles of u = R·|q_d − k_d| over sampled pairs and dimensions.
    public var u10: Double, u50: Double, u90: Double
    /// Mean Σ_j A over rows, and the fraction of rows with Σ_j W < eps (Σ_j A < ½).
    public var rowSum: Double, collapsed: Double

    enum CodingKeys: String, CodingKey {
        case layer, r, u10, u50, u90, collapsed
        case qNorm = "q_norm"
        case kNorm = "k_norm"
        case rowSum = "row_sum"
    }

    /// Every layer's health after a forward pass of `stack` (empty for softmax attention).
    public static func measure(_ stack: TransformerStack, params: UnsafePointer<Float>) -> [LayerHealth] {
        guard case .fourier(let spec, _) = stack.config.attention else { return [] }
        let c = stack.config, B = stack.lastBatchSize, T = c.seq, H = c.heads, D = c.headDim, C = c.dModel
        return (0..<c.layers).map { l in
            let qkv = stack.lastQKV(layer: l), stat = stack.lastRowStat(layer: l)
            let R = stack.rValues(layer: l, params: params)
            var q2 = 0.0, k2 = 0.0
            for row in 0..<(B * T) {
                for h in 0..<H {
                    for d in 0..<D {
                        let q = Double(qkv[row * 3 * C + h * D + d]), k = Double(qkv[row * 3 * C + C + h * D + d])
                        q2 += q * q; k2 += k * k
                    }
                }
            }
            // Every `stride`-th row and key: at most 32 of each (a ViT's 50 tokens: every other).
            let stride = (T + 31) / 32
            var us: [Double] = []
            us.reserveCapacity(min(B, 2) * 32 * 32 * H * D)
            for b in 0..<min(B, 2) {
                samplePairs(T: T, causal: c.causal, stride: stride) { i, j in
                    for h in 0..<H {
                        let qi = qkv + (b * T + i) * 3 * C + h * D, kj = qkv + (b * T + j) * 3 * C + C + h * D
                        for d in 0..<D {
                            let r = Double(R[spec.rMode.index(head: h, dim: d)])
                            us.append(r * abs(Double(qi[d] - kj[d])))
                        }
                    }
                }
            }
            // By selection, not a sort: this runs on rank 0 at every logged step while the other
            // ranks wait.
            let u = quantiles(&us, [0.1, 0.5, 0.9])
            var sumA = 0.0, dead = 0
            let rows = B * H * T
            for i in 0..<rows {
                let S = Double(stat[i]), w = S - Double(spec.eps)
                sumA += S > 0 ? w / S : 0
                if w < Double(spec.eps) { dead += 1 }
            }
            return LayerHealth(
                layer: l, r: R.reduce(0.0) { $0 + Double($1) } / Double(R.count),
                qNorm: (q2 / Double(B * T * H)).squareRoot(),
                kNorm: (k2 / Double(B * T * H)).squareRoot(),
                u10: u[0], u50: u[1], u90: u[2],
                rowSum: sumA / Double(rows), collapsed: Double(dead) / Double(rows))
        }
    }
}

/// Calls `body(i, j)` for a grid of about `perAxis`² query/key pairs of a T × T map (only j ≤ i
/// when causal): every pair when T ≤ perAxis, else evenly strided rows and keys.
public func samplePairs(T: Int, causal: Bool, perAxis: Int, _ body: (Int, Int) -> Void) {
    samplePairs(T: T, causal: causal, stride: max(1, T / perAxis), body)
}

/// Calls `body(i, j)` for every `stride`-th query row i and key j of a T × T map (only j ≤ i when
/// causal).
public func samplePairs(T: Int, causal: Bool, stride: Int, _ body: (Int, Int) -> Void) {
    for i in Swift.stride(from: 0, to: T, by: stride) {
        for j in Swift.stride(from: 0, through: causal ? i : T - 1, by: stride) { body(i, j) }
    }
}

/// The q-quantiles of `values` (nearest rank, as `quantile` gives them from the sorted values;
/// NaN when empty) by selection: O(n) each where a sort is O(n log n). Reorders `values`.
public func quantiles(_ values: inout [Double], _ qs: [Double]) -> [Double] {
    guard !values.isEmpty else { return qs.map { _ in .nan } }
    return qs.map { q in kthSmallest(&values, min(values.count - 1, Int(q * Double(values.count)))) }
}

/// The k-th smallest value (from 0), by quickselect with a three-way partition (runs of equal
/// values stay linear) around a median-of-three pivot; reorders `a`.
func kthSmallest(_ a: inout [Double], _ k: Int) -> Double {
    a.withUnsafeMutableBufferPointer { p in
        var lo = 0, hi = p.count - 1
        while lo < hi {
            let x = p[lo], y = p[lo + (hi - lo) / 2], z = p[hi]
            let pivot = max(min(x, y), min(max(x, y), z))
            // [lo, lt) < pivot, [lt, i) == pivot, (gt, hi] > pivot.
            var lt = lo, i = lo, gt = hi
            while i <= gt {
                if p[i] < pivot {
                    p.swapAt(lt, i); lt += 1; i += 1
                } else if p[i] > pivot {
                    p.swapAt(i, gt); gt -= 1
                } else {
                    i += 1
                }
            }
            if k < lt { hi = lt - 1 } else if k > gt { lo = gt + 1 } else { return pivot }
        }
        return p[k]
    }
}

/// The q-quantile of sorted values (nearest rank; NaN when empty).
public func quantile(_ sorted: [Double], _ q: Double) -> Double {
    sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(q * Double(sorted.count)))]
}

/// Watches each layer's mean row-sum of A at the logged steps and raises one alarm per layer when
/// it has stayed below `threshold` for `patience` logged steps in a row.
public struct CollapseAlarm {
    public let threshold: Double, patience: Int
    var lowSince: [Int?], lowCount: [Int], fired: [Bool]

    public init(layers: Int, threshold: Double, patience: Int) {
        self.threshold = threshold; self.patience = patience
        lowSince = Array(repeating: nil, count: layers)
        lowCount = Array(repeating: 0, count: layers)
        fired = Array(repeating: false, count: layers)
    }

    /// Feeds the row sums of a logged step; returns the layers that raise their alarm now.
    public mutating func observe(step: Int, rowSums: [Double]) -> [Collapse] {
        guard threshold > 0 else { return [] }
        var out: [Collapse] = []
        for (l, s) in rowSums.enumerated() where l < fired.count {
            if s < threshold {
                if lowSince[l] == nil { lowSince[l] = step }
                lowCount[l] += 1
                if lowCount[l] >= patience && !fired[l] {
                    fired[l] = true
                    out.append(Collapse(step: step, layer: l, rowSum: s, since: lowSince[l]!, threshold: threshold))
                }
            } else {
                lowSince[l] = nil; lowCount[l] = 0
            }
        }
        return out
    }
}

/// A layer whose attention rows have collapsed (a line of `metrics.jsonl`).
public struct Collapse: Codable, Sendable, Equatable {
    public var step: Int, layer: Int
    public var rowSum: Double
    /// The first logged step of the low streak.
    public var since: Int
    public var threshold: Double
    public var alarm = "attention_collapse"

    enum CodingKeys: String, CodingKey {
        case step, layer, since, threshold, alarm
        case rowSum = "row_sum"
    }

    /// The one-line warning the command line prints.
    public var message: String {
        String(
            format: "attention layer %d is collapsing: mean row-sum of A %.3f < %.2f at every logged step "
                + "since step %d (Σ_j W has fallen below eps in most rows, so they pass almost nothing on). "
                + "Remedy: model.attention.r_init: auto, or a smaller r_init, or a lower train.lr",
            layer, rowSum, threshold, since)
    }
}
