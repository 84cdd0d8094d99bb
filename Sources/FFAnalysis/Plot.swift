import FFFormats
import Foundation

/// One run's curves read from its metrics.jsonl.
public struct RunCurves: Sendable {
    public var name: String
    /// (step, training loss)
    public var loss: [(Int, Double)]
    /// (step, validation perplexity)
    public var validPerplexity: [(Int, Double)]

    /// Reads `path` (metrics.jsonl); `name` labels the run in charts.
    public static func read(_ path: String, name: String) throws -> RunCurves {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw FormatError(
                "\(path): cannot "
                    + "read metrics")
        }
        var c = RunCurves(name: name, loss: [], validPerplexity: [])
        for (n, line) in text.split(separator: "\n").enumerated() {
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw FormatError("\(path): line \(n + 1) is not a JSON object")
            }
            guard let step = o["step"] as? Int else { continue }
            if o["grad_norm"] != nil, let l = o["loss"] as? Double, l.isFinite { c.loss.append((step, l)) }
            if o["split"] as? String == "valid", let p = o["perplexity"] as? Double, p.isFinite {
                c.validPerplexity.append((step, p))
            }
        }
        return c
    }
}

/// Training loss and validation perplexity of several runs, as one SVG with two panels.
public func curvesSVG(_ runs: [RunCurves], title: String) -> String {
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    let pw = 420.0, ph = 260.0, left = 60.0, top = 40.0, gap = 80.0
    var svg =
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(left + 2 * pw + gap + 20))\" "
        + "height=\"\(Int(top + ph + 90))\" font-family=\"sans-serif\" font-size=\"11\">\n"
    svg +=
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"\(left)\" y=\"18\" "
        + "font-size=\"14\">\(title)</text>\n"
    func panel(_ x0: Double, _ label: String, _ series: [[(Int, Double)]], logY: Bool) {
        let pts = series.flatMap { $0 }
        guard !pts.isEmpty else { svg += "<text x=\"\(x0)\" y=\"\(top + 20)\">\(label): no data</text>\n"; return }
        let xMax = Double(pts.map { $0.0 }.max()!), xMin = Double(pts.map { $0.0 }.min()!)
        let f = { (v: Double) in logY ? log10(v) : v }
        let yMin = pts.map { f($0.1) }.min()!, yMax = pts.map { f($0.1) }.max()!
        let sx = { (x: Double) in x0 + (x - xMin) / max(xMax - xMin, 1) * pw }
        let sy = { (y: Double) in top + ph - (f(y) - yMin) / max(yMax - yMin, 1e-9) * ph }
        svg += "<rect x=\"\(x0)\" y=\"\(top)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#888\"/>\n"
        svg += "<text x=\"\(x0)\" y=\"\(top - 6)\">\(label)\(logY ? " (log scale)" : "")</text>\n"
        for k in 0...4 {
            let yv = yMin + (yMax - yMin) * Double(k) / 4, y = top + ph - Double(k) / 4 * ph
            let shown = logY ? pow(10, yv) : yv
            svg +=
                "<text x=\"\(x0 - 4)\" y=\"\(y + 4)\" "
                + "text-anchor=\"end\">\(String(format: shown >= 100 ? "%.0f" : "%.2f", shown))</text>\n"
            let xv = xMin + (xMax - xMin) * Double(k) / 4
            svg +=
                "<text x=\"\(x0 + Double(k) / 4 * pw)\" y=\"\(top + ph + 14)\" "
                + "text-anchor=\"middle\">\(Int(xv))</text>\n"
        }
        svg += "<text x=\"\(x0 + pw / 2)\" y=\"\(top + ph + 30)\" text-anchor=\"middle\">step</text>\n"
        for (i, s) in series.enumerated() where !s.isEmpty {
            let path = s.map { String(format: "%.1f,%.1f", sx(Double($0.0)), sy($0.1)) }.joined(separator: " ")
            svg +=
                "<polyline fill=\"none\" stroke=\"\(colors[i % colors.count])\" stroke-width=\"1.5\" "
                + "points=\"\(path)\"/>\n"
        }
    }
    panel(left, "training loss (nats/token)", runs.map { $0.loss }, logY: false)
    panel(left + pw + gap, "validation perplexity", runs.map { $0.validPerplexity }, logY: true)
    for (i, r) in runs.enumerated() {
        let y = top + ph + 50 + Double(i / 3) * 16, x = left + Double(i % 3) * 260
        svg +=
            "<rect x=\"\(x)\" y=\"\(y - 9)\" width=\"14\" height=\"4\" fill=\"\(colors[i % colors.count])\"/><text "
            + "x=\"\(x + 20)\" y=\"\(y - 4)\">\(r.name)</text>\n"
    }
    return svg + "</svg>\n"
}
