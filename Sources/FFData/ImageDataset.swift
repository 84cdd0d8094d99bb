import Foundation

/// Labelled images from a pair of IDX files: images as (N, H, W) grey or (N, H, W, Ch)
/// channels-last unsigned bytes (what MNIST and Fashion-MNIST ship, and what a converter writes
/// for colour datasets), labels as (N) unsigned bytes, int16 or int32 (more than 256 classes).
public struct ImageDataset: Sendable {
    public let imagesPath: String
    public let count: Int
    public let height: Int, width: Int, channels: Int
    let pixels: Data
    let labels: [Int32]

    public init(images: String, labels: String) throws {
        let im = try IDXArray.read(path: images)
        let lb = try IDXArray.read(path: labels)
        guard im.dims.count == 3 || im.dims.count == 4 else {
            throw DataError(
                images,
                "IDX images must have 3 dimensions (N, H, W) or 4 (N, H, W, channels); "
                    + "this one has \(im.dims)")
        }
        guard lb.dims.count == 1 else {
            throw DataError(labels, "IDX labels must have 1 dimension (N); this one has \(lb.dims)")
        }
        guard im.type == 0x08 else { throw DataError(images, "IDX images must hold unsigned bytes (type 0x08)") }
        guard lb.dims[0] == im.dims[0] else {
            throw DataError(labels, "\(lb.dims[0]) labels for the \(im.dims[0]) images of \(images)")
        }
        imagesPath = images
        count = im.dims[0]; height = im.dims[1]; width = im.dims[2]
        channels = im.dims.count == 4 ? im.dims[3] : 1
        pixels = im.bytes
        let values = lb.integers()
        if let bad = values.first(where: { $0 < 0 }) { throw DataError(labels, "holds the negative label \(bad)") }
        self.labels = values.map { Int32($0) }
    }

    /// The label of image `i`.
    public func label(_ i: Int) -> Int { Int(labels[i]) }

    /// The largest label + 1.
    public var labelRange: Int { Int(labels.max() ?? 0) + 1 }

    /// Calls `body` with image `i`'s bytes, (H, W, Ch) row-major.
    @inline(__always)
    func withImage<R>(_ i: Int, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        pixels.withUnsafeBytes { raw in
            body(raw.bindMemory(to: UInt8.self).baseAddress! + i * height * width * channels)
        }
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1], over `indices`.
    public func channelStatistics(_ indices: [Int]) -> (mean: [Float], std: [Float]) {
        let hw = height * width, Ch = channels
        var sum = [Double](repeating: 0, count: Ch), sq = [Double](repeating: 0, count: Ch)
        for i in indices {
            withImage(i) { px in
                for c in 0..<Ch {
                    var s = 0, q = 0
                    for k in 0..<hw { let v = Int(px[k * Ch + c]); s += v; q += v * v }
                    sum[c] += Double(s); sq[c] += Double(q)
                }
            }
        }
        let n = Double(indices.count * hw)
        let mean = (0..<Ch).map { sum[$0] / n / 255 }
        let std = (0..<Ch).map { c in max((sq[c] / n / 65025 - mean[c] * mean[c]).squareRoot(), 1e-6) }
        return (mean.map(Float.init), std.map(Float.init))
    }
}
