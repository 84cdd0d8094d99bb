import FFModel
import Foundation

/// Measures of a layer's attention maps: the questions the paper asks of FourierFormer.
public enum AttentionStats {
    /// Mean over pairs of heads of the mean over query rows of ‖A_h[i,:] − A_h'[i,:]‖₂: the paper's
    /// redundancy measure (higher = heads attend differently = less redundant). maps: H maps (T x T).
    public static func meanPairwiseHeadDistance(_ maps: [[Double]], T: Int) -> Double {
        let H = maps.count
        guard H > 1 else { return 0 }
        var total = 0.0, pairs = 0
        for a in 0..<H {
            for b in (a + 1)..<H {
                var rows = 0.0
                for i in 0..<T {
                    var s = 0.0
                    for j in 0..<T { let d = maps[a][i * T + j] - maps[b][i * T + j]; s += d * d }
                    rows += s.squareRoot()
                }
                total += rows / Double(T); pairs += 1
            }
        }
        return total / Double(pairs)
    }

    /// Mean over rows of the entropy −Σ_j A_ij log A_ij (nats) of one map, each row normalised to
    /// sum 1 first (a collapsed Fourier row, Σ_j A ≈ 0, counts as its normalised shape).
    public static func meanRowEntropy(_ map: [Double], T: Int) -> Double {
        var total = 0.0
        for i in 0..<T {
            var s = 0.0
            for j in 0..<T { s += map[i * T + j] }
            guard s > 0 else { continue }
            var e = 0.0
            for j in 0..<T { let p = map[i * T + j] / s; if p > 0 { e -= p * log(p) } }
            total += e
        }
        return total / Double(T)
    }

    /// (mean Σ_j A_ij, fraction of rows whose Σ_j W fell below eps, i.e. Σ_j A_ij < 1/2).
    public static func rowHealth(_ map: [Double], T: Int) -> (meanRowSum: Double, collapsed: Double) {
        var sum = 0.0, collapsed = 0
        for i in 0..<T {
            var s = 0.0
            for j in 0..<T { s += map[i * T + j] }
            sum += s
            if s < 0.5 { collapsed += 1 }
        }
        return (sum / Double(T), Double(collapsed) / Double(T))
    }
}

/// The analysis of one checkpoint on one split, written as JSON by `swift-ff-train analyze`.
public struct AttentionReport: Codable, Sendable {
    public struct Head: Codable, Sendable {
        public var entropy: Double
        public var meanRowSum: Double
        public var collapsedRows: Double
        public init(entropy: Double, meanRowSum: Double, collapsedRows: Double) {
            self.entropy = entropy; self.meanRowSum = meanRowSum; self.collapsedRows = collapsedRows
        }
        enum CodingKeys: String, CodingKey {
            case entropy
            case meanRowSum = "mean_row_sum"
            case collapsedRows = "collapsed_rows"
        }
    }
    public struct Layer: Codable, Sendable {
        public var layer: Int
        public var meanPairwiseHeadDistance: Double
        public var heads: [Head]
        public var r: [Float]
        public init(layer: Int, meanPairwiseHeadDistance: Double, heads: [Head], r: [Float]) {
            self.layer = layer; self.meanPairwiseHeadDistance = meanPairwiseHeadDistance; self.heads = heads; self.r = r
        }
        enum CodingKeys: String, CodingKey {
            case layer, heads
            case r = "R"
            case meanPairwiseHeadDistance = "mean_pairwise_head_distance"
        }
    }
    public var attention: String
    public var split: String
    public var sequences: Int
    public var layers: [Layer]

    public init(attention: String, split: String, sequences: Int, layers: [Layer]) {
        self.attention = attention; self.split = split; self.sequences = sequences; self.layers = layers
    }
}

extension AttentionReport {
    /// Averages the attention statistics per layer and head over the `samples` sequences (segments or
    /// images) the stack last ran forward; `onMaps(layer, maps)` sees the first sequence's maps.
    public static func measure(
        stack: TransformerStack, params: FlatBuffer, samples n: Int, attention: String,
        split: String, onMaps: (Int, [[Double]]) -> Void = { _, _ in }
    ) -> AttentionReport {
        let p = params.pointer
        let T = stack.config.seq, H = stack.config.heads, L = stack.config.layers
        var layers: [AttentionReport.Layer] = []
        for l in 0..<L {
            var heads = [AttentionReport.Head](repeating: .init(entropy: 0, meanRowSum: 0, collapsedRows: 0), count: H)
            var distance = 0.0
            for b in 0..<n {
                let maps = stack.attentionMaps(layer: l, sample: b, params: p)
                if b == 0 { onMaps(l, maps) }
                distance += AttentionStats.meanPairwiseHeadDistance(maps, T: T) / Double(n)
                for h in 0..<H {
                    let health = AttentionStats.rowHealth(maps[h], T: T)
                    heads[h].entropy += AttentionStats.meanRowEntropy(maps[h], T: T) / Double(n)
                    heads[h].meanRowSum += health.meanRowSum / Double(n)
                    heads[h].collapsedRows += health.collapsed / Double(n)
                }
            }
            layers.append(
                .init(
                    layer: l, meanPairwiseHeadDistance: distance, heads: heads,
                    r: stack.rValues(layer: l, params: p)))
        }
        return AttentionReport(attention: attention, split: split, sequences: n, layers: layers)
    }
}

/// Attention maps as an SVG heat map: the heads of one layer side by side, each averaged down to
/// at most 64 x 64 cells (darker = more weight).
public func attentionHeatmapSVG(_ maps: [[Double]], T: Int, title: String) -> String {
    let cells = min(T, 64), f = Double(T) / Double(cells), size = 4, gap = 12
    let width = maps.count * (cells * size + gap) + gap, height = cells * size + 40
    var svg =
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" "
        + "font-family=\"sans-serif\" font-size=\"11\">\n"
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"\(gap)\" y=\"14\">\(title)</text>\n"
    for (h, m) in maps.enumerated() {
        let x0 = gap + h * (cells * size + gap)
        svg += "<text x=\"\(x0)\" y=\"32\">head \(h)</text>\n"
        var peak = 1e-12
        var pooled = [Double](repeating: 0, count: cells * cells)
        for i in 0..<T { for j in 0..<T { pooled[Int(Double(i) / f) * cells + Int(Double(j) / f)] += m[i * T + j] } }
        for v in pooled { peak = max(peak, v) }
        for r in 0..<cells {
            // Cells under 1e-4 of the peak would be drawn white anyway: leaving them out keeps files small.
            for c in 0..<cells where pooled[r * cells + c] > 1e-4 * peak {
                let shade = Int(255 * (1 - (pooled[r * cells + c] / peak).squareRoot()))
                svg +=
                    "<rect x=\"\(x0 + c * size)\" y=\"\(36 + r * size)\" width=\"\(size)\" height=\"\(size)\" "
                    + "fill=\"rgb(\(shade),\(shade),255)\"/>\n"
            }
        }
    }
    return svg + "</svg>\n"
}

/// The per-layer figures of a report as SVG bar charts, one panel per figure: head distance
/// (redundancy; higher = less redundant), entropy, mean Σ_j A, collapsed rows, and mean R
/// (Fourier only). Every bar is labelled with its value.
public func attentionBarChartSVG(_ report: AttentionReport, title: String) -> String {
    func mean(_ l: AttentionReport.Layer, _ f: (AttentionReport.Head) -> Double) -> Double {
        l.heads.reduce(0) { $0 + f($1) } / Double(max(l.heads.count, 1))
    }
    var panels: [(String, [Double])] = [
        ("head distance", report.layers.map(\.meanPairwiseHeadDistance)),
        ("entropy (nats)", report.layers.map { mean($0, \.entropy) }),
        ("mean row-sum of A", report.layers.map { mean($0, \.meanRowSum) }),
        ("collapsed rows", report.layers.map { mean($0, \.collapsedRows) }),
    ]
    if report.layers.allSatisfy({ !$0.r.isEmpty }) {
        panels.append(("mean R", report.layers.map { Double($0.r.reduce(0, +)) / Double($0.r.count) }))
    }
    let L = report.layers.count, bar = 22, gap = 8, plotH = 120, panelW = L * (bar + gap) + gap, margin = 16
    let width = panels.count * (panelW + margin) + margin, height = plotH + 80
    var svg =
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" "
        + "font-family=\"sans-serif\" font-size=\"10\">\n"
    svg +=
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"\(margin)\" y=\"14\" "
        + "font-size=\"12\">\(title)</text>\n"
    for (p, (name, values)) in panels.enumerated() {
        let x0 = margin + p * (panelW + margin), top = 50
        let peak = max(values.max() ?? 0, 1e-12)
        svg += "<text x=\"\(x0)\" y=\"32\">\(name)</text>\n"
        svg +=
            "<line x1=\"\(x0)\" y1=\"\(top + plotH)\" x2=\"\(x0 + panelW)\" y2=\"\(top + plotH)\" "
            + "stroke=\"black\"/>\n"
        for (l, v) in values.enumerated() {
            let h = max(0, Int(Double(plotH) * v / peak)), x = x0 + gap + l * (bar + gap)
            svg += "<rect x=\"\(x)\" y=\"\(top + plotH - h)\" width=\"\(bar)\" height=\"\(h)\" fill=\"steelblue\"/>\n"
            svg += "<text x=\"\(x)\" y=\"\(top + plotH - h - 3)\">\(String(format: "%.2f", v))</text>\n"
            svg += "<text x=\"\(x + 6)\" y=\"\(top + plotH + 12)\">L\(l)</text>\n"
        }
    }
    return svg + "</svg>\n"
}
