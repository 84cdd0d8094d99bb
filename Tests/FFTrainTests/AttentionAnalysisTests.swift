import FFAnalysis
import XCTest
@testable import FFTrain

final class AttentionAnalysisTests: XCTestCase {
    func causalUniform(_ T: Int) -> [Double] {
        var a = [Double](repeating: 0, count: T * T)
        for i in 0..<T { for j in 0...i { a[i * T + j] = 1 / Double(i + 1) } }
        return a
    }

    func testIdenticalHeadsHaveZeroDistanceAndDisjointOnesTheMost() {
        let T = 6
        let u = causalUniform(T)
        XCTAssertEqual(AttentionStats.meanPairwiseHeadDistance([u, u, u], T: T), 0)
        // Head 0 attends to the first token, head 1 to the current one: rows differ by
        // sqrt(2) except row 0 (both attend to token 0).
        var first = [Double](repeating: 0, count: T * T), diag = first
        for i in 0..<T { first[i * T] = 1; diag[i * T + i] = 1 }
        XCTAssertEqual(
            AttentionStats.meanPairwiseHeadDistance([first, diag], T: T), 2.0.squareRoot() * 5 / 6, accuracy: 1e-12)
        XCTAssertGreaterThan(
            AttentionStats.meanPairwiseHeadDistance([first, diag], T: T),
            AttentionStats.meanPairwiseHeadDistance([first, u], T: T))
    }

    func testEntropyAndRowHealth() {
        let T = 4
        let u = causalUniform(T)
        XCTAssertEqual(
            AttentionStats.meanRowEntropy(u, T: T), (0 + log(2.0) + log(3.0) + log(4.0)) / 4, accuracy: 1e-12)
        var collapsed = u
        for j in 0..<T { collapsed[3 * T + j] *= 0.01 }  // row 3: Σ_j A = 0.01 (Σ W far below eps)
        let h = AttentionStats.rowHealth(collapsed, T: T)
        XCTAssertEqual(h.collapsed, 0.25)
        XCTAssertEqual(h.meanRowSum, (3 + 0.01) / 4, accuracy: 1e-12)
        XCTAssertEqual(
            AttentionStats.meanRowEntropy(collapsed, T: T), AttentionStats.meanRowEntropy(u, T: T), accuracy: 1e-12)
    }

    func testBarChartHasOneBarPerLayerInEveryPanel() {
        let head = AttentionReport.Head(entropy: 1.5, meanRowSum: 0.5, collapsedRows: 0.25)
        let layers = (0..<3).map {
            AttentionReport.Layer(
                layer: $0, meanPairwiseHeadDistance: 0.1 * Double($0 + 1), heads: [head, head], r: [2, 1])
        }
        let fourier = attentionBarChartSVG(
            AttentionReport(attention: "fourier", split: "valid", sequences: 2, layers: layers), title: "t")
        XCTAssertTrue(fourier.hasPrefix("<svg") && fourier.contains("head distance") && fourier.contains("mean R"))
        XCTAssertEqual(fourier.components(separatedBy: "fill=\"steelblue\"").count - 1, 5 * 3, "5 panels x 3 layers")
        XCTAssertTrue(fourier.contains(">0.30<") && fourier.contains(">1.50<"), "bars carry their values")
        let softmax = attentionBarChartSVG(
            AttentionReport(
                attention: "softmax", split: "valid", sequences: 2,
                layers: layers.map {
                    var l = $0; l.r = []; return l
                }), title: "t")
        XCTAssertEqual(softmax.components(separatedBy: "fill=\"steelblue\"").count - 1, 4 * 3, "no R panel for softmax")
    }

    func testHeatmapIsAnSVGWithOnePanelPerHead() {
        let svg = attentionHeatmapSVG([causalUniform(8), causalUniform(8)], T: 8, title: "t")
        XCTAssertTrue(svg.hasPrefix("<svg"))
        XCTAssertTrue(svg.contains("head 0") && svg.contains("head 1"))
        XCTAssertEqual(svg.components(separatedBy: "<rect").count - 2, 2 * 36, "36 lower-triangle cells per head")
        var sparse = [Double](repeating: 0, count: 64)
        sparse[0] = 1; sparse[9] = 1e-9
        XCTAssertEqual(
            attentionHeatmapSVG([sparse], T: 8, title: "t").components(separatedBy: "<rect").count - 2, 1,
            "negligible cells are not drawn")
    }
}

extension TrainerTests {
    func testAnalysisOfATrainedModelCoversEveryLayerAndHead() throws {
        for kind in ["fourier", "softmax"] {
            let trainer = try Trainer(
                config: try config(["train.steps=5", "model.attention.kind=\(kind)", "run.name=a\(kind)"]))
            try trainer.run()
            var seen: [Int] = []
            let r = try trainer.analyzeAttention(split: "valid", sequences: 4) { l, maps in
                seen.append(l)
                XCTAssertEqual(maps.count, 4)
                XCTAssertEqual(maps[0].count, 16 * 16)
            }
            XCTAssertEqual(seen, [0, 1])
            XCTAssertEqual(r.layers.count, 2)
            XCTAssertEqual(r.layers[0].heads.count, 4)
            XCTAssertEqual(r.layers[0].r.count, kind == "fourier" ? 1 : 0)
            for l in r.layers {
                XCTAssertGreaterThan(l.meanPairwiseHeadDistance, 0)
                for h in l.heads {
                    XCTAssertTrue(h.entropy > 0 && h.entropy < log(16.0))
                    if kind == "softmax" { XCTAssertEqual(h.meanRowSum, 1, accuracy: 1e-9) }
                }
            }
        }
    }
}

final class PlotTests: XCTestCase {
    func testCurvesFromMetricsAndTheirChart() throws {
        let path = NSTemporaryDirectory() + "m-\(UUID().uuidString).jsonl"
        defer { unlink(path) }
        let lines = [
            #"{"step":1,"loss":9.5,"grad_norm":1.0,"lr":0.1}"#, #"{"step":2,"loss":8.0,"grad_norm":1.0,"lr":0.1}"#,
            #"{"step":2,"split":"valid","loss":8.1,"perplexity":3300.0,"tokens":10}"#,
            #"{"step":2,"split":"test","loss":8.2,"perplexity":3640.0,"tokens":10}"#,
            #"{"step":3,"skipped":true,"reason":"nonfinite"}"#,
        ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let c = try RunCurves.read(path, name: "run")
        XCTAssertEqual(c.loss.map { $0.0 }, [1, 2])
        XCTAssertEqual(c.validPerplexity.map { $0.1 }, [3300])
        let svg = curvesSVG([c, c], title: "t")
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 4, "2 runs x 2 panels")
        try "not json\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunCurves.read(path, name: "x")) { XCTAssertTrue("\($0)".contains("line 1"), "\($0)") }
    }
}
