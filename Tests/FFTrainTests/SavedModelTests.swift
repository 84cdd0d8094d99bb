import FFFormats
import XCTest
@testable import FFTrain
import FFModel
import FFKernels

final class SavedModelTests: XCTestCase {
    func config(_ model: String) throws -> TrainConfig {
        let yaml = """
            run: {name: t, dir: /tmp/x, seed: 7}
            data: {dir: /tmp/d}
            model: {\(model)}
            train: {steps: 10, batch_size: 4, lr: 1.0e-3}
            """
        return try TrainConfig.parse(tree: try ConfigReader.parse(yaml: yaml, source: "c.yaml"), source: "c.yaml")
    }

    /// The model JSON that weights and checkpoints carry rebuilds the same model (dropout off).
    func testModelJSONRoundTrips() throws {
        let models = [
            "layers: 2, d_model: 32, heads: 4, d_ff: 64, context: 16, attention: {kind: fourier, r_mode: per_dim, p: 2}",
            "layers: 1, d_model: 16, heads: 2, d_ff: 8, context: 8, norm: pre, positions: learned, activation: gelu, "
                + "tie_embeddings: false, scale_embeddings: false, attention: {kind: softmax}",
            "layers: 1, d_model: 16, heads: 2, d_ff: 8, context: 8, output: adaptive, adaptive: {cutoffs: [20, 40], "
                + "div_val: 2}",
        ]
        for m in models {
            let cfg = try config(m)
            var want = cfg.model.lmConfig(vocabSize: 60)
            let got = try LMConfig(modelJSON: cfg.modelJSON(outputs: 60), source: "w.safetensors")
            want.dropout = 0
            if case .fourier(let s, _) = want.attention { want.attention = .fourier(s, rInit: 1) }
            var g = got
            if case .fourier(let s, _) = g.attention { g.attention = .fourier(s, rInit: 1) }
            g.initStd = want.initStd
            XCTAssertEqual(g, want, m)
        }
        XCTAssertThrowsError(try LMConfig(modelJSON: "{\"kind\": \"vit\"}", source: "w.safetensors")) { e in
            XCTAssertTrue("\(e)".contains("w.safetensors") && "\(e)".contains("not a language model"), "\(e)")
        }
    }

    func testLocateNamesWhatIsMissing() {
        XCTAssertThrowsError(try SavedModel.locate("/nonexistent/run")) { e in
            XCTAssertTrue("\(e)".contains("/nonexistent/run"), "\(e)")
        }
        let dir = NSTemporaryDirectory() + "empty-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try SavedModel.locate(dir)) { e in
            XCTAssertTrue("\(e)".contains(dir) && "\(e)".contains("no model.safetensors"), "\(e)")
        }
    }
}
