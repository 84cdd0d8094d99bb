import XCTest
@testable import FFTrain
import FFModel
import FFKernels

final class ConfigTests: XCTestCase {
    let base = """
        run: {name: t, dir: /tmp/x, seed: 7}
        data: {dir: /tmp/d}
        model:
          layers: 2
          d_model: 32
          heads: 4
          d_ff: 64
          context: 16
          attention: {kind: fourier, eps: 1.0e-6, r_mode: per_head, r_init: 1.5}
        train: {steps: 10, batch_size: 4, lr: 1.0e-3}
        """

    func parse(_ yaml: String, _ overrides: [String] = []) throws -> TrainConfig {
        var tree = try ConfigReader.parse(yaml: yaml, source: "c.yaml")
        try ConfigReader.applyOverrides(overrides, to: &tree)
        return try TrainConfig.parse(tree: tree, source: "c.yaml")
    }

    func assertError(_ yaml: String, _ overrides: [String] = [], contains: String, line: UInt = #line) {
        XCTAssertThrowsError(try parse(yaml, overrides), line: line) { e in
            XCTAssertTrue("\(e)".contains(contains), "message was: \(e)", line: line)
            XCTAssertTrue(
                "\(e)".hasPrefix("c.yaml") || "\(e)".hasPrefix("--set"), "message names the file: \(e)",
                line: line)
        }
    }

    func testParsesValuesDefaultsAndOverrides() throws {
        let c = try parse(base, ["train.steps=25", "model.attention.kind=softmax", "run.seed=3"])
        XCTAssertEqual(c.train.steps, 25)
        XCTAssertEqual(c.model.attention, .softmax)
        XCTAssertEqual(c.run.seed, 3)
        XCTAssertEqual(c.model.norm, .post)
        XCTAssertEqual(c.train.gradAccum, 1)
        let f = try parse(base)
        XCTAssertEqual(f.model.attention, .fourier(.init(p: 4, eps: 1e-6, rMode: .perHead), rInit: 1.5))
    }

    func testFourierKernelChoice() throws {
        func kernel(_ c: TrainConfig) -> FourierKernel? {
            if case .fourier(let spec, _) = c.model.attention { return spec.kernel }
            return nil
        }
        XCTAssertEqual(kernel(try parse(base)), .fused)
        XCTAssertEqual(kernel(try parse(base, ["model.attention.kernel=plain"])), .plain)
        assertError(base, ["model.attention.kernel=fast"], contains: "'fast' is not one of fused, plain")
    }

    let vit = """
        run: {name: v, dir: /tmp/x}
        data: {dir: /usr/share/datasets/fashion-mnist, valid_holdout: 100}
        model: {kind: vit, patch: 7, layers: 2, d_model: 32, heads: 2, d_ff: 64}
        augment: {crop_padding: 2, flip: true, mixup: 0.8, cutmix: 1.0, erase: 0.25, label_smoothing: 0.1}
        train: {steps: 10, batch_size: 8, lr: 1.0e-3, ema: 0.99}
        """

    func testAdaptiveOutputConfig() throws {
        let c = try parse(
            base,
            [
                "model.output=adaptive", "model.adaptive.cutoffs=[2000, 4000]",
                "model.adaptive.div_val=2",
            ])
        XCTAssertEqual(c.model.adaptive, .init(cutoffs: [2000, 4000], divVal: 2, tieProjections: true))
        let lm = c.model.lmConfig(vocabSize: 5000)
        XCTAssertEqual(lm.adaptive?.tieWeights, true, "tie_embeddings ties the adaptive input and output")
        XCTAssertEqual(lm.problems(), [])
        XCTAssertTrue(c.model.lmConfig(vocabSize: 3000).problems().contains { $0.hasPrefix("model.adaptive:") })
        XCTAssertNil(try parse(base).model.adaptive)
    }

    func testViTConfigDefaultsFollowDeiT() throws {
        let c = try parse(vit)
        XCTAssertEqual(c.model.kind, .vit)
        XCTAssertEqual(c.model.norm, .pre)
        XCTAssertEqual(c.model.activation, .gelu)
        XCTAssertEqual(c.model.dropPath, 0.1)
        XCTAssertEqual(c.model.dropout, 0)
        XCTAssertEqual(c.model.attention, .fourier(FourierSpec(), rInit: 1.0), "the paper's DeiT R init")
        XCTAssertEqual(c.data.train, "train-images-idx3-ubyte.gz")
        XCTAssertEqual(c.data.testLabels, "t10k-labels-idx1-ubyte.gz")
        XCTAssertEqual(c.augment.cutmix, 1.0)
        XCTAssertEqual(c.train.ema, 0.99)
        XCTAssertEqual(try parse(vit, ["model.attention.kind=softmax"]).model.attention, .softmax)
    }

    func testViTConfigErrorsAreNamed() throws {
        // Keys of the other kind are unknown, not silently ignored.
        assertError(vit, ["model.context=16"], contains: "unknown key 'model.context'")
        assertError(base, ["augment.flip=true"], contains: "unknown key 'augment'")
        assertError(base, ["model.patch=4"], contains: "unknown key 'model.patch'")
        assertError(vit, ["model.kind=cnn"], contains: "model.kind: 'cnn' is not one of lm, vit")
        assertError(vit, ["augment.mix_prob=2"], contains: "augment.mix_prob: must be at most 1")
        assertError(vit, ["data.valid=v.gz", "data.valid_labels=l.gz"], contains: "data.valid and data.valid_holdout")
        assertError(vit, ["data.mean=[0.1, 0.2]", "data.std=[0.3]"], contains: "data.mean has 2 entries, data.std 1")
        assertError(vit, ["data.std=[0]"], contains: "data.std: every entry must be at least")
        // Needs the data: the patch must divide the 28-pixel images.
        XCTAssertThrowsError(try Trainer(config: try parse(vit, ["model.patch=5"]))) { e in
            XCTAssertTrue("\(e)".contains("model.patch (5) must divide the image size (28)"), "\(e)")
        }
        XCTAssertThrowsError(try Trainer(config: try parse(vit, ["model.patch_window=8"]))) { e in
            XCTAssertTrue("\(e)".contains("model.patch_window (8) must be model.patch (7) plus an even number"), "\(e)")
        }
    }

    func testUnknownKeysAreNamed() {
        assertError(base, ["train.dmodel=3"], contains: "unknown key 'train.dmodel'")
        assertError(base, ["model.attention.rmode=scalar"], contains: "'model.attention.rmode'")
        assertError(base + "\nextra: 1", contains: "'extra'")
    }

    /// A misspelt required key is reported as unknown, with the key meant, not as "missing".
    func testMisspeltKeysNameTheClosestValidKey() {
        let misspelt = base.replacingOccurrences(of: "batch_size: 4", with: "batch_szie: 4")
        assertError(misspelt, contains: "unknown key 'train.batch_szie' (did you mean 'train.batch_size'?)")
        assertError(base, ["model.attention.rmode=scalar"], contains: "(did you mean 'model.attention.r_mode'?)")
        assertError(
            base, ["train.dropout=0.2"],
            contains: "unknown key 'train.dropout' (did you mean 'model.dropout'?)")
        assertError(base, ["trian.threads=2"], contains: "(did you mean 'train'?)")
        assertError("run: {name: t}", contains: "data.dir: missing")
    }

    /// Duplicate keys are named with both lines, in block and flow mappings, nested or not.
    func testDuplicateKeysAreNamedWithBothLines() {
        assertError(base + "\ntrain: {steps: 3}", contains: "duplicate key 'train' on lines 10 and 11")
        let nested = base.replacingOccurrences(of: "  d_ff: 64\n", with: "  d_ff: 64\n  heads: 8\n")
        assertError(nested, contains: "duplicate key 'model.heads' on lines 6 and 8")
        let flow = base.replacingOccurrences(of: "lr: 1.0e-3}", with: "lr: 1.0e-3, steps: 20}")
        assertError(flow, contains: "duplicate key 'train.steps' on lines 10 and 10")
        let inner = base.replacingOccurrences(of: "kind: fourier, eps", with: "kind: fourier, kind: softmax, eps")
        assertError(inner, contains: "duplicate key 'model.attention.kind'")
    }

    func testBadValuesAreNamed() {
        assertError(base, ["model.heads=5"], contains: "model.heads (5) must divide model.d_model (32)")
        assertError(base, ["model.layers=two"], contains: "model.layers: expected an integer, got 'two'")
        assertError(base, ["model.norm=middle"], contains: "model.norm: 'middle' is not one of pre, post")
        assertError(base, ["model.attention.p=3"], contains: "model.attention.p must be even")
        assertError(base, ["train.batch_size=6", "train.grad_accum=4"], contains: "divisible by train.grad_accum")
        assertError(base, ["model.output=adaptive"], contains: "model.output: adaptive needs model.adaptive.cutoffs")
        assertError(base, ["model.output=sampled"], contains: "model.output: 'sampled' is not one of full, adaptive")
        assertError(base, ["model.dropout=1.5"], contains: "model.dropout: must be at most")
        assertError(base, ["train.steps=0"], contains: "train.steps: must be at least 1")
        assertError(
            base, ["train.thread_split=heads"],
            contains: "train.thread_split: 'heads' is not one of auto, samples, operations")
        assertError("run: {name: t}", contains: "data.dir: missing")
        assertError("- a\n- b", contains: "top level must be a mapping")
    }

    func testShippedConfigsParse() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let dir = root.appendingPathComponent("configs").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }
        XCTAssertGreaterThanOrEqual(files.count, 6)
        for f in files {
            XCTAssertNoThrow(try TrainConfig.load(path: dir + "/" + f), f)
        }
    }
}
