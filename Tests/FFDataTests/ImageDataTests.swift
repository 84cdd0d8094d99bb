import FFCore
import XCTest
@testable import FFData

/// Where `apt-get install dataset-fashion-mnist` puts the real data (launch/setup.sh installs it).
let fashionDir = "/usr/share/datasets/fashion-mnist"

final class ImageDataTests: XCTestCase {
    var dir: String!

    override func setUp() {
        dir = NSTemporaryDirectory() + "ffimg-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func randomBytes(_ n: Int, seed: UInt64) -> Data {
        var rng = SplitMix64(seed: seed)
        return Data((0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    }

    func testIDXRoundTripPlainAndGzipped() throws {
        for dims in [[7], [5, 3, 4], [2, 6, 6, 3]] {
            let a = IDXArray(dims: dims, bytes: randomBytes(dims.reduce(1, *), seed: UInt64(dims.count)))
            for gz in [false, true] {
                let path = dir + "/a-\(dims.count)-\(gz).idx" + (gz ? ".gz" : "")
                try a.write(to: path, gzip: gz)
                let raw = try Data(contentsOf: URL(fileURLWithPath: path))
                XCTAssertEqual(Array(raw.prefix(2)), gz ? [0x1F, 0x8B] : [0, 0])
                let b = try IDXArray.read(path: path)
                XCTAssertEqual(b.dims, dims)
                XCTAssertEqual(b.bytes, a.bytes)
            }
        }
        // Wide labels (ImageNet's 1000 classes do not fit a byte): int32, big-endian.
        let labels: [Int32] = [0, 999, 65_536, 7]
        try IDXArray(labels: labels).write(to: dir + "/labels.gz", gzip: true)
        let back = try IDXArray.read(path: dir + "/labels.gz")
        XCTAssertEqual(back.type, 0x0C)
        XCTAssertEqual(back.integers(), labels.map(Int.init))
        XCTAssertEqual(Array(back.encoded().prefix(12)), [0, 0, 0x0C, 1, 0, 0, 0, 4, 0, 0, 0, 0])
        // The header layout, byte for byte: magic 0x00000803, then big-endian dims.
        let h = IDXArray(dims: [2, 300, 1], bytes: Data(count: 600)).encoded().prefix(16)
        XCTAssertEqual(Array(h), [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 1, 44, 0, 0, 0, 1])
    }

    func testIDXErrorsNameTheFile() throws {
        let good = IDXArray(dims: [4, 2], bytes: Data(count: 8)).encoded()
        var cases: [(String, Data, String)] = [
            ("magic", Data([1, 0]) + good.dropFirst(2), "not an IDX file"),
            ("type", Data([0, 0, 0x0D]) + good.dropFirst(3), "element type 0x0d"),
            ("short", good.dropLast(3), "need 8 bytes"),
            ("header", good.prefix(6), "truncated IDX header"),
        ]
        var gz = try IDXArray.gzip(good, path: "x")
        gz[gz.count / 2] ^= 0xFF
        cases.append(("corrupt.gz", gz, "gzip"))
        cases.append(("cut.gz", try IDXArray.gzip(good, path: "x").prefix(12), "gzip"))
        for (name, bytes, message) in cases {
            let path = dir + "/" + name
            try bytes.write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try IDXArray.read(path: path), name) { e in
                XCTAssertTrue("\(e)".contains(path) && "\(e)".contains(message), "\(name): \(e)")
            }
        }
        // Images and labels that disagree.
        try IDXArray(dims: [3, 2, 2], bytes: Data(count: 12)).write(to: dir + "/im")
        try IDXArray(dims: [4], bytes: Data(count: 4)).write(to: dir + "/lb")
        XCTAssertThrowsError(try ImageDataset(images: dir + "/im", labels: dir + "/lb")) { e in
            XCTAssertTrue("\(e)".contains("4 labels for the 3 images"), "\(e)")
        }
    }

    /// The real dataset from the Debian package: sizes, balanced labels, pixel statistics.
    func testFashionMNISTFromTheDebianPackage() throws {
        let train = try ImageDataset(
            images: fashionDir + "/train-images-idx3-ubyte.gz", labels: fashionDir + "/train-labels-idx1-ubyte.gz")
        let test = try ImageDataset(
            images: fashionDir + "/t10k-images-idx3-ubyte.gz", labels: fashionDir + "/t10k-labels-idx1-ubyte.gz")
        XCTAssertEqual([train.count, train.height, train.width, train.channels], [60000, 28, 28, 1])
        XCTAssertEqual(test.count, 10000)
        XCTAssertEqual(train.labelRange, 10)
        var perClass = [Int](repeating: 0, count: 10)
        for i in 0..<train.count { perClass[train.label(i)] += 1 }
        XCTAssertEqual(perClass, [Int](repeating: 6000, count: 10))
        let (mean, std) = train.channelStatistics(Array(0..<train.count))
        XCTAssertEqual(mean[0], 0.2860, accuracy: 1e-3)
        XCTAssertEqual(std[0], 0.3530, accuracy: 1e-3)
    }

    func makePipeline(_ aug: Augmentation, seed: UInt64 = 7) throws -> (ImagePipeline, ImageDataset) {
        let n = 40, s = 12
        var rng = SplitMix64(seed: 3)
        try IDXArray(dims: [n, s, s, 3], bytes: randomBytes(n * s * s * 3, seed: 11)).write(
            to: dir + "/im.gz", gzip: true)
        try IDXArray(dims: [n], bytes: Data((0..<n).map { _ in UInt8(rng.nextInt(below: 5)) })).write(to: dir + "/lb")
        let data = try ImageDataset(images: dir + "/im.gz", labels: dir + "/lb")
        let p = ImagePipeline(
            data: data, classes: 5, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3], augment: aug,
            seed: seed, partnerPool: Array(0..<n))
        return (p, data)
    }

    func sample(_ p: ImagePipeline, _ i: Int, epoch: Int) -> ([Float], [Float]) {
        var px = [Float](repeating: .nan, count: p.imageFloats), t = [Float](repeating: .nan, count: p.classes)
        p.trainSample(i, epoch: epoch, pixels: &px, target: &t)
        return (px, t)
    }

    /// Same seed, epoch and sample -> the same pixels and target, from any pipeline instance (as on
    /// another rank, or after a resume) and whatever was drawn before; another epoch -> different.
    func testAugmentationIsDeterministicPerSeedEpochAndSample() throws {
        var aug = Augmentation()
        aug.cropPadding = 2; aug.flip = true; aug.mixup = 0.8; aug.cutmix = 1.0; aug.erase = 0.5;
        aug.labelSmoothing = 0.1
        let (a, _) = try makePipeline(aug)
        let (b, _) = try makePipeline(aug)
        let (c, _) = try makePipeline(aug, seed: 8)
        var sameAcrossEpochs = 0, sameAcrossSeeds = 0
        for i in [0, 5, 39] {
            let x = sample(a, i, epoch: 3)
            for j in (0..<10).reversed() { _ = sample(b, j, epoch: 1) }  // other draws in between
            XCTAssertEqual(x.0, sample(b, i, epoch: 3).0)
            XCTAssertEqual(x.1, sample(b, i, epoch: 3).1)
            XCTAssertEqual(x.1.reduce(0, +), 1, accuracy: 1e-5, "a target is a distribution")
            XCTAssertFalse(x.0.contains { $0.isNaN })
            if sample(a, i, epoch: 4).0 == x.0 { sameAcrossEpochs += 1 }
            if sample(c, i, epoch: 3).0 == x.0 { sameAcrossSeeds += 1 }
        }
        XCTAssertEqual(sameAcrossEpochs, 0)
        XCTAssertEqual(sameAcrossSeeds, 0)
    }

    func testEvaluationIsPlainNormalisationWithOneHotTargets() throws {
        var aug = Augmentation()
        aug.cropPadding = 3; aug.flip = true; aug.erase = 1; aug.labelSmoothing = 0.2
        let (p, data) = try makePipeline(aug)
        var px = [Float](repeating: 0, count: p.imageFloats), t = [Float](repeating: 0, count: 5)
        p.evalSample(9, pixels: &px, target: &t)
        XCTAssertEqual(t.firstIndex(of: 1), data.label(9))
        XCTAssertEqual(t.reduce(0, +), 1)
        data.withImage(9) { raw in
            // Pixel (c, y, x) of the (H, W, C) bytes, normalised.
            for (c, y, x) in [(0, 0, 0), (2, 5, 7), (1, 11, 3)] {
                let want = (Float(raw[(y * 12 + x) * 3 + c]) / 255 - p.mean[c]) / p.std[c]
                XCTAssertEqual(px[(c * 12 + y) * 12 + x], want, accuracy: 1e-5)
            }
        }
        // Training with smoothing only: target (1 − ε) + ε/K on the label, ε/K elsewhere.
        var smooth = Augmentation()
        smooth.labelSmoothing = 0.2
        let (q, _) = try makePipeline(smooth)
        let (x, target) = sample(q, 9, epoch: 0)
        XCTAssertEqual(x, px, "no augmentation configured: training pixels equal evaluation pixels")
        XCTAssertEqual(target[data.label(9)], 0.84, accuracy: 1e-6)
        XCTAssertEqual(target.filter { abs($0 - 0.04) < 1e-6 }.count, 4)
    }

    /// Mixup gives soft targets over two labels; flips mirror the image exactly.
    func testMixupMixesTargetsAndFlipMirrors() throws {
        var mix = Augmentation()
        mix.mixup = 1
        let (m, _) = try makePipeline(mix)
        var mixed = 0
        for i in 0..<40 {
            let (_, t) = sample(m, i, epoch: 0)
            XCTAssertEqual(t.reduce(0, +), 1, accuracy: 1e-5)
            if t.filter({ $0 > 0 }).count == 2 { mixed += 1 }
        }
        XCTAssertGreaterThan(mixed, 10, "most samples mix two different labels")
        var flip = Augmentation()
        flip.flip = true
        let (f, _) = try makePipeline(flip)
        var px = [Float](repeating: 0, count: f.imageFloats), t = [Float](repeating: 0, count: 5)
        var flipped = 0
        for i in 0..<40 {
            f.evalSample(i, pixels: &px, target: &t)
            let (x, _) = sample(f, i, epoch: 2)
            if x == px { continue }
            flipped += 1
            for c in 0..<3 {
                for y in 0..<12 {
                    for xx in 0..<12 {
                        XCTAssertEqual(x[(c * 12 + y) * 12 + xx], px[(c * 12 + y) * 12 + 11 - xx])
                    }
                }
            }
        }
        XCTAssertTrue((8...32).contains(flipped), "about half flipped: \(flipped)")
    }
}
