import Foundation
import FFAnalysis
import FFKernels
import FFModel

/// The data-dependent R initialisation (`model.attention.r_init: auto`).
///
/// For small u, log sinc u ≈ −u²/6, so a pair's kernel weight is
/// W_ij ≈ exp(−(p/6)·R²·‖q_i − k_j‖²): R sets the kernel's bandwidth against the spread of q − k,
/// as the bandwidth of a Gaussian kernel is set against the median pairwise distance. Each
/// layer's R is chosen so that the median query/key pair of the first `samples` training samples
/// gets weight `target`: R = sqrt(6·ln(1/target) / (p · median ‖q − k‖²)). Layers are set
/// first to last, since a layer's q and k depend on the R of the layers below it.
///
/// Every sample runs alone (batch 1, evaluation mode), so every rank, whatever the world size,
/// computes the same R from the same bits. The result lives in the parameters, so a resumed run
/// keeps it and never calibrates again.
public struct RCalibration: Sendable, Equatable {
    /// Kernel weight of the median query/key pair at the start (0 < target < 1).
    public var target: Double
    /// Training samples the median is taken over.
    public var samples: Int

    public init(target: Double, samples: Int = 8) {
        self.target = target; self.samples = samples
    }

    /// The default `target`, chosen by the multi-seed study in docs/study/: language models
    /// start wide (their q and k spread far during training), vision transformers sharper.
    public static func defaultTarget(lm: Bool) -> Double { lm ? 0.97 : 0.7 }

    /// R for a layer whose query/key pairs have median squared distance `median`.
    public func r(medianSquaredDistance median: Double, p: Int) -> Float {
        Float((6 * log(1 / target) / (Double(p) * max(median, 1e-12))).squareRoot())
    }

    /// Sets every layer's R in `workload`'s parameters; returns them, one per layer.
    func apply(to workload: Workload) throws -> [Float] {
        let stack = workload.stack
        guard case .fourier(let spec, _) = stack.config.attention else { return [] }
        let c = stack.config, T = c.seq, H = c.heads, D = c.headDim, C = c.dModel
        let n = min(samples, workload.trainCount)
        let params = workload.params.pointer
        var chosen: [Float] = []
        for l in 0..<c.layers {
            var d2: [Double] = []
            for s in 0..<n {
                _ = try workload.analysisForward(split: "train", first: s, samples: 1)
                let qkv = stack.lastQKV(layer: l)
                samplePairs(T: T, causal: c.causal, perAxis: 64) { i, j in
                    for h in 0..<H {
                        let qi = qkv + i * 3 * C + h * D, kj = qkv + j * 3 * C + C + h * D
                        var sum = 0.0
                        for d in 0..<D { let x = Double(qi[d] - kj[d]); sum += x * x }
                        d2.append(sum)
                    }
                }
            }
            d2.sort()
            let r = self.r(medianSquaredDistance: quantile(d2, 0.5), p: spec.p)
            let offset = stack.rOffset(layer: l)!
            let count = spec.rMode.count(heads: H, headDim: D)
            (params + offset).update(repeating: r, count: count)
            chosen.append(r)
        }
        return chosen
    }
}
