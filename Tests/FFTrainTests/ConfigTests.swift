import XCTest
@testable import FFTrain
import FFModel

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
            XCTAssertTrue("\(e)".hasPrefix("c.yaml") || "\(e)".hasPrefix("--set"), "message names the file: \(e)", line: line)
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

    func testUnknownKeysAreNamed() {
        assertError(base, ["train.dmodel=3"], contains: "unknown key 'train.dmodel'")
        assertError(base, ["model.attention.rmode=scalar"], contains: "'model.attention.rmode'")
        assertError(base + "\nextra: 1", contains: "'extra'")
    }

    func testBadValuesAreNamed() {
        assertError(base, ["model.heads=5"], contains: "model.heads (5) must divide model.d_model (32)")
        assertError(base, ["model.layers=two"], contains: "model.layers: expected an integer, got 'two'")
        assertError(base, ["model.norm=middle"], contains: "model.norm: 'middle' is not one of pre, post")
        assertError(base, ["model.attention.p=3"], contains: "model.attention.p must be even")
        assertError(base, ["train.batch_size=6", "train.grad_accum=4"], contains: "divisible by train.grad_accum")
        assertError(base, ["model.output=adaptive"], contains: "not built yet")
        assertError(base, ["model.dropout=1.5"], contains: "model.dropout: must be at most")
        assertError(base, ["train.steps=0"], contains: "train.steps: must be at least 1")
        assertError("run: {name: t}", contains: "data.dir: missing")
        assertError("- a\n- b", contains: "top level must be a mapping")
    }

    func testShippedConfigsParse() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("configs").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }
        XCTAssertGreaterThanOrEqual(files.count, 6)
        for f in files {
            XCTAssertNoThrow(try TrainConfig.load(path: dir + "/" + f), f)
        }
    }
}
