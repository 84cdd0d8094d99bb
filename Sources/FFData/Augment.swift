import Foundation
import FFCore

/// Training-time image augmentation (DeiT's recipe, minus RandAugment) and label smoothing.
public struct Augmentation: Sendable, Equatable {
    /// Random crop of the image padded by this many zero pixels on each side (0: off).
    public var cropPadding = 0
    /// Horizontal flip with probability 1/2.
    public var flip = false
    /// Beta(α, α) parameter of mixup (0: off).
    public var mixup: Float = 0
    /// Beta(α, α) parameter of cutmix (0: off).
    public var cutmix: Float = 0
    /// Probability that a sample is mixed at all (when mixup or cutmix is on).
    public var mixProb: Float = 1
    /// With both on: probability of cutmix rather than mixup.
    public var switchProb: Float = 0.5
    /// Random erasing probability (a rectangle of 2–33% of the image filled with noise).
    public var erase: Float = 0
    /// Label smoothing ε: targets are (1 − ε)·onehot + ε/K.
    public var labelSmoothing: Float = 0

    public init() {}

    public var mixes: Bool { mixup > 0 || cutmix > 0 }
}

/// Turns dataset images into normalised (Ch, H, W) floats and class-probability targets.
///
/// Every random choice for training sample i in epoch e comes from a stream keyed by
/// (seed, e, i), and the partner of a mixed sample is drawn from that stream too (not from the
/// rest of the batch), so the pixels and the target of a sample are the same on any number of
/// ranks, in any micro-batch, and after a resume.
public final class ImagePipeline {
    public let data: ImageDataset
    public let classes: Int
    public let mean: [Float], std: [Float]
    public let augment: Augmentation
    public let seed: UInt64
    /// Dataset indices a mixing partner is drawn from (the training split).
    public let partnerPool: [Int]
    /// Scratch for a mixing partner's pixels.
    let partner: UnsafeMutablePointer<Float>

    public init(
        data: ImageDataset, classes: Int, mean: [Float], std: [Float], augment: Augmentation,
        seed: UInt64, partnerPool: [Int]
    ) {
        precondition(mean.count == data.channels && std.count == data.channels)
        self.data = data; self.classes = classes; self.mean = mean; self.std = std
        self.augment = augment; self.seed = seed; self.partnerPool = partnerPool
        partner = .allocate(capacity: data.channels * data.height * data.width)
    }

    deinit { partner.deallocate() }

    /// Floats per image (Ch·H·W).
    public var imageFloats: Int { data.channels * data.height * data.width }

    /// Image `i` as in evaluation: normalised, not augmented; target one-hot.
    public func evalSample(_ i: Int, pixels: UnsafeMutablePointer<Float>, target: UnsafeMutablePointer<Float>) {
        load(i, into: pixels, dy: 0, dx: 0, flip: false)
        normalise(pixels)
        target.update(repeating: 0, count: classes)
        target[data.label(i)] = 1
    }

    /// Training sample `i` (a dataset index) of `epoch`: augmented, mixed, erased, normalised;
    /// target smoothed and mixed.
    public func trainSample(
        _ i: Int, epoch: Int, pixels: UnsafeMutablePointer<Float>,
        target: UnsafeMutablePointer<Float>
    ) {
        let a = augment
        var rng = SplitMix64(seed: SplitMix64.key(seed, UInt64(epoch), UInt64(i)) ^ 0xA06_7E47)
        geometric(i, epoch: epoch, into: pixels)
        smoothedLabel(data.label(i), weight: 1, into: target, accumulate: false)
        if a.mixes && rng.nextFloat() < a.mixProb {
            let j = partnerPool[rng.nextInt(below: partnerPool.count)]
            geometric(j, epoch: epoch, into: partner)
            let useCutmix = a.cutmix > 0 && (a.mixup == 0 || rng.nextFloat() < a.switchProb)
            var lam = Float(beta(Double(useCutmix ? a.cutmix : a.mixup), &rng))
            let H = data.height, W = data.width, Ch = data.channels
            if useCutmix {
                // A box of area ≈ (1 − λ) from the partner; λ is then the exact kept fraction.
                let r = (1 - lam).squareRoot()
                let ch = Int(Float(H) * r), cw = Int(Float(W) * r)
                let cy = rng.nextInt(below: H), cx = rng.nextInt(below: W)
                let y0 = max(cy - ch / 2, 0), y1 = min(cy + ch / 2, H)
                let x0 = max(cx - cw / 2, 0), x1 = min(cx + cw / 2, W)
                for c in 0..<Ch {
                    for y in y0..<y1 {
                        let o = (c * H + y) * W
                        for x in x0..<x1 { pixels[o + x] = partner[o + x] }
                    }
                }
                lam = 1 - Float((y1 - y0) * (x1 - x0)) / Float(H * W)
            } else {
                for k in 0..<imageFloats { pixels[k] = lam * pixels[k] + (1 - lam) * partner[k] }
            }
            for k in 0..<classes { target[k] *= lam }
            smoothedLabel(data.label(j), weight: 1 - lam, into: target, accumulate: true)
        }
        normalise(pixels)
        if a.erase > 0 && rng.nextFloat() < a.erase { erase(pixels, &rng) }
    }

    /// The crop and flip of sample `i` in `epoch` (its own stream, so a sample looks the same as a
    /// partner as it does on its own).
    private func geometric(_ i: Int, epoch: Int, into out: UnsafeMutablePointer<Float>) {
        let pad = augment.cropPadding
        var rng = SplitMix64(seed: SplitMix64.key(seed, UInt64(epoch), UInt64(i)) ^ 0x6E0_3E7C)
        let dy = pad > 0 ? rng.nextInt(below: 2 * pad + 1) - pad : 0
        let dx = pad > 0 ? rng.nextInt(below: 2 * pad + 1) - pad : 0
        let flip = augment.flip && rng.nextFloat() < 0.5
        load(i, into: out, dy: dy, dx: dx, flip: flip)
    }

    /// out(c, y, x) = image(y + dy, x' + dx, c) / 255 with x' = flip ? W − 1 − x : x, 0 outside.
    private func load(_ i: Int, into out: UnsafeMutablePointer<Float>, dy: Int, dx: Int, flip: Bool) {
        let H = data.height, W = data.width, Ch = data.channels
        data.withImage(i) { px in
            for c in 0..<Ch {
                for y in 0..<H {
                    let sy = y + dy
                    let row = out + (c * H + y) * W
                    guard sy >= 0 && sy < H else { row.update(repeating: 0, count: W); continue }
                    for x in 0..<W {
                        let sx = (flip ? W - 1 - x : x) + dx
                        row[x] = sx >= 0 && sx < W ? Float(px[(sy * W + sx) * Ch + c]) * (1 / 255) : 0
                    }
                }
            }
        }
    }

    private func normalise(_ p: UnsafeMutablePointer<Float>) {
        let hw = data.height * data.width
        for c in 0..<data.channels {
            let m = mean[c], s = 1 / std[c], q = p + c * hw
            for k in 0..<hw { q[k] = (q[k] - m) * s }
        }
    }

    private func smoothedLabel(_ label: Int, weight: Float, into t: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let eps = augment.labelSmoothing
        let off = weight * eps / Float(classes), on = weight * (1 - eps) + off
        for k in 0..<classes {
            let v = k == label ? on : off
            t[k] = accumulate ? t[k] + v : v
        }
    }

    /// Random erasing (Zhong et al.): a rectangle of 2–33% of the area, aspect ratio in
    /// [0.3, 3.3] (log-uniform), filled with N(0, 1) noise in normalised units; 10 tries to fit.
    private func erase(_ p: UnsafeMutablePointer<Float>, _ rng: inout SplitMix64) {
        let H = data.height, W = data.width
        for _ in 0..<10 {
            let area = Double(H * W) * (0.02 + rng.nextDouble() * (1.0 / 3 - 0.02))
            let ratio = exp(log(0.3) + rng.nextDouble() * (log(3.3) - log(0.3)))
            let h = Int((area * ratio).squareRoot().rounded()), w = Int((area / ratio).squareRoot().rounded())
            guard h >= 1, w >= 1, h < H, w < W else { continue }
            let y0 = rng.nextInt(below: H - h + 1), x0 = rng.nextInt(below: W - w + 1)
            for c in 0..<data.channels {
                for y in y0..<(y0 + h) {
                    let row = p + (c * H + y) * W
                    for x in x0..<(x0 + w) { row[x] = Float(rng.nextNormal()) }
                }
            }
            return
        }
    }
}

/// A Beta(α, α) draw from two Gamma(α) draws.
func beta(_ alpha: Double, _ rng: inout SplitMix64) -> Double {
    let x = gamma(alpha, &rng), y = gamma(alpha, &rng)
    return x + y > 0 ? x / (x + y) : 0.5
}

/// A Gamma(k, 1) draw (Marsaglia and Tsang; for k < 1, Gamma(k + 1) · U^(1/k)).
func gamma(_ k: Double, _ rng: inout SplitMix64) -> Double {
    if k < 1 { return gamma(k + 1, &rng) * pow(max(rng.nextDouble(), 1e-300), 1 / k) }
    let d = k - 1.0 / 3, c = 1 / (9 * d).squareRoot()
    while true {
        var x = 0.0, v = 0.0
        repeat { x = rng.nextNormal(); v = 1 + c * x } while v <= 0
        v = v * v * v
        let u = rng.nextDouble()
        if u < 1 - 0.0331 * x * x * x * x || log(max(u, 1e-300)) < 0.5 * x * x + d * (1 - v + log(v)) { return d * v }
    }
}
