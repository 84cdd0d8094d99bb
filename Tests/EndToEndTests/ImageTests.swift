import Foundation
import FFTestSupport
import XCTest
import FFData
import FFTrain

/// The ViT through the real binary on real Fashion-MNIST images (a subset written as IDX): data
/// parallelism and resume at another world size, with every augmentation, drop-path and EMA on.
final class ImageTests: XCTestCase {
    var h: Harness!
    override func setUpWithError() throws { h = try Harness() }
    override func tearDown() { h = nil }

    /// 512 training and 256 test images of the Debian package's Fashion-MNIST, as IDX files.
    func writeImages() throws -> String {
        let dir = h.dir + "/fashion"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (split, n, gz) in [("train", 512, true), ("t10k", 256, false)] {
            let images = try IDXArray.read(path: "/usr/share/datasets/fashion-mnist/\(split)-images-idx3-ubyte.gz")
            let labels = try IDXArray.read(path: "/usr/share/datasets/fashion-mnist/\(split)-labels-idx1-ubyte.gz")
            try IDXArray(dims: [n, 28, 28], bytes: images.bytes.prefix(n * 784)).write(
                to: "\(dir)/\(split)-images", gzip: gz)
            try IDXArray(dims: [n], bytes: labels.bytes.prefix(n)).write(to: "\(dir)/\(split)-labels", gzip: gz)
        }
        return dir
    }

    func config(_ name: String, data: String, attention: String = "fourier", checkpointEvery: Int = 0) throws -> String
    {
        let yaml = """
            run: {name: \(name), dir: \(h.dir)/runs, seed: 3}
            data: {dir: \(data), train: train-images, train_labels: train-labels, test: t10k-images, test_labels: t10k-labels, valid_holdout: 64}
            model: {kind: vit, patch: 7, layers: 2, d_model: 32, heads: 2, d_ff: 64, drop_path: 0.2, attention: {kind: \(attention)}}
            augment: {crop_padding: 2, flip: true, mixup: 0.8, cutmix: 1.0, erase: 0.25, label_smoothing: 0.1}
            train: {steps: 12, batch_size: 16, lr: 2.0e-3, warmup_steps: 2, grad_clip: 1.0, ema: 0.9, threads: 1, log_every: 1}
            dist: {bucket_mb: 0.01}
            checkpoint: {every: \(checkpointEvery), keep_last: 5}
            """
        let path = "\(h.dir)/\(name).yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testTwoRanksEqualOneRankAndReportAccuracy() throws {
        let data = try writeImages()
        for attention in ["fourier", "softmax"] {
            let one = try h.run([
                h.binary, "--config", try config("one-\(attention)", data: data, attention: attention),
            ])
            ok(one)
            ok(try h.mpirun(2, ["--config", try config("two-\(attention)", data: data, attention: attention)]))
            let d = relL2(try h.weights("two-\(attention)"), try h.weights("one-\(attention)"))
            XCTAssertLessThan(d, 1e-5, "\(attention): 2 ranks vs 1 rank after 12 steps")
            XCTAssertGreaterThan(d, 0)
            XCTAssertTrue(one.output.contains("top-1") && one.output.contains("img/s"), one.output)
            // The summary: valid (the 64 held out) and test, top-1/top-5, a 10 x 10 confusion matrix.
            let summary =
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: "\(h.dir)/runs/one-\(attention)/summary.json")))
                as! [String: Any]
            let test = summary["test"] as! [String: Any], valid = summary["valid"] as! [String: Any]
            XCTAssertEqual(test["images"] as? Int, 256)
            XCTAssertEqual(valid["images"] as? Int, 64)
            let top1 = test["top1"] as! Double, top5 = test["top5"] as! Double
            XCTAssertTrue(0 <= top1 && top1 <= top5 && top5 <= 1, "\(top1) \(top5)")
            let confusion = test["confusion"] as! [[Int]]
            XCTAssertEqual(confusion.count, 10)
            XCTAssertEqual(confusion.flatMap { $0 }.reduce(0, +), 256)
            XCTAssertEqual(Double((0..<10).map { confusion[$0][$0] }.reduce(0, +)) / 256, top1, accuracy: 1e-9)
        }
    }

    /// Stopped on 2 ranks, resumed on 1: the same weights (and weight average) as the run that
    /// never stopped, so augmentation, drop-path and EMA all continue exactly.
    func testResumeOnOtherWorldSizeMatchesTheUninterruptedRun() throws {
        let data = try writeImages()
        ok(try h.run([h.binary, "--config", try config("full", data: data)]))
        let cfg = try config("cut", data: data, checkpointEvery: 6)
        ok(try h.mpirun(2, ["--config", cfg, "--debug-stop-at-step", "6"]))
        let ckpt = try FileManager.default.contentsOfDirectory(atPath: h.checkpoints("cut") + "/step-00000006")
        XCTAssertTrue(ckpt.contains("optimizer-00001-of-00002.safetensors"))
        ok(try h.run([h.binary, "--config", cfg, "--resume", "auto"]))
        XCTAssertLessThan(relL2(try h.weights("cut"), try h.weights("full")), 1e-5)
    }
}
