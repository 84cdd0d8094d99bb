import FFCore
import XCTest
import FFKernels
@testable import FFModel

/// The ViT's gradient against finite differences, with drop-path and dropout on.
final class VisionTransformerTests: XCTestCase {
    func tinyConfig(_ attention: AttentionKind) -> ViTConfig {
        // 8x8 images of 2 channels, 4x4 patches: 4 patches + the class token.
        var c = ViTConfig(imageSize: 8, channels: 2, patch: 4, classes: 5, layers: 2, dModel: 16, heads: 2, dFF: 24)
        c.attention = attention
        c.initStd = 0.15
        c.dropPath = 0.5
        c.dropout = 0.1
        return c
    }

    func checkGradient(_ config: ViTConfig, file: StaticString = #filePath, line: UInt = #line) {
        let B = 3
        let model = VisionTransformer(config: config, maxBatch: B, threads: 2)
        model.initialize(seed: 3)
        var rng = SplitMix64(seed: 21)
        let S = config.imageSize
        let images = (0..<(B * config.channels * S * S)).map { _ in Float(rng.nextNormal()) }
        var targets = [Float](repeating: 0, count: B * config.classes)
        for b in 0..<B {
            // A mixed, smoothed target per image.
            for k in 0..<config.classes { targets[b * config.classes + k] = 0.1 / Float(config.classes) }
            targets[b * config.classes + b] += 0.6
            targets[b * config.classes + (b + 2) % config.classes] += 0.3
        }
        // Keys chosen so that drop-path drops some branches and keeps others.
        let keys: [UInt64] = [1, 2, 3]
        func loss() -> Double {
            keys.withUnsafeBufferPointer { k in
                model.forward(
                    images: images, targets: targets, batch: B, mode: .train(lossScale: 0, dropoutKeys: k.baseAddress!))
            }
        }
        model.grads.zero()
        _ = keys.withUnsafeBufferPointer { k in
            model.forward(
                images: images, targets: targets, batch: B, mode: .train(lossScale: 1, dropoutKeys: k.baseAddress!))
        }
        model.backward()
        let idx = sampleIndices(model.layout, &rng) { $0.hasSuffix("attn.R") || $0 == "cls_token" }
        assertGradientMatchesFiniteDifferences(model, at: idx, loss: loss, file: file, line: line)
    }

    func testFourierGradientEveryRMode() {
        for mode in RMode.allCases {
            checkGradient(tinyConfig(.fourier(FourierSpec(p: 4, eps: 1e-6, rMode: mode), rInit: 1.0)))
        }
    }

    func testSoftmaxGradient() {
        checkGradient(tinyConfig(.softmax))
    }

    /// Drop-path drops whole branches per image: with rate ~1 in the last layer, that layer's
    /// weights get no gradient from the images it dropped, and evaluation ignores drop-path.
    func testDropPathIsPerImageAndOffInEvaluation() {
        var c = tinyConfig(.softmax)
        c.dropout = 0
        let model = VisionTransformer(config: c, maxBatch: 2, threads: 1)
        model.initialize(seed: 1)
        let n = 2 * c.channels * c.imageSize * c.imageSize
        let images = (0..<n).map { Float($0 % 7) * 0.1 }
        let targets = [Float](repeating: 0.2, count: 2 * c.classes)
        let e1 = model.forward(images: images, targets: targets, batch: 2, mode: .eval)
        let e2 = model.forward(images: images, targets: targets, batch: 2, mode: .eval)
        XCTAssertEqual(e1, e2)
        // A training forward differs from evaluation: a kept branch is scaled by 1/(1 − rate), a
        // dropped one removed.
        var differs = 0
        for key in UInt64(0)..<16 {
            let keys: [UInt64] = [key, key + 100]
            let t = keys.withUnsafeBufferPointer { k in
                model.forward(
                    images: images, targets: targets, batch: 2, mode: .train(lossScale: 0, dropoutKeys: k.baseAddress!))
            }
            if abs(t - e1) > 1e-6 { differs += 1 }
        }
        XCTAssertGreaterThan(differs, 0)
    }

    /// Overlapping windows (W = 8 around 4 × 4 patches, padding 2): the gradient, windows that
    /// reach past every border included.
    func testOverlappingPatchWindowGradient() {
        var c = tinyConfig(.fourier(FourierSpec(p: 4, eps: 1e-6, rMode: .perHead), rInit: 1.0))
        c.patchWindow = 8
        checkGradient(c)
    }

    /// The unfolded-window GEMM equals PyTorch's Conv2d(kernel W, stride P, padding (W − P) / 2),
    /// written out here as the plain sum.
    func testPatchWindowIsAPaddedStridedConvolution() {
        var c = tinyConfig(.softmax)
        c.imageSize = 12; c.patch = 4; c.patchWindow = 6  // 3 × 3 patches, padding 1
        let B = 2, S = c.imageSize, Ch = c.channels, W = c.patchWindow, P = c.patch, G = c.patchesPerSide
        let model = VisionTransformer(config: c, maxBatch: B, threads: 1)
        model.initialize(seed: 5)
        var rng = SplitMix64(seed: 8)
        let images = (0..<(B * Ch * S * S)).map { _ in Float(rng.nextNormal()) }
        let targets = [Float](repeating: 1 / Float(c.classes), count: B * c.classes)
        _ = model.forward(images: images, targets: targets, batch: B, mode: .eval)
        let p = model.params.pointer
        let weight = p + model.layout["patch_embed.proj.weight"]!.offset,
            bias = p + model.layout["patch_embed.proj.bias"]!.offset
        var worst = 0.0
        for b in 0..<B {
            for gy in 0..<G {
                for gx in 0..<G {
                    for o in 0..<c.dModel {
                        var sum = Double(bias[o])
                        for ch in 0..<Ch {
                            for y in 0..<W {
                                for x in 0..<W {
                                    let sy = gy * P - 1 + y, sx = gx * P - 1 + x
                                    guard (0..<S).contains(sy), (0..<S).contains(sx) else { continue }
                                    sum +=
                                        Double(weight[((o * Ch + ch) * W + y) * W + x])
                                        * Double(images[((b * Ch + ch) * S + sy) * S + sx])
                                }
                            }
                        }
                        let got = Double(model.patchOut[(b * c.patches + gy * G + gx) * c.dModel + o])
                        worst = max(worst, abs(got - sum))
                    }
                }
            }
        }
        XCTAssertLessThan(worst, 1e-4)
    }
}
