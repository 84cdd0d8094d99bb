import FFCore
import XCTest
import FFKernels
@testable import FFModel

/// Checks `model.grads` (already holding the analytic gradient of `loss`) against central finite
/// differences of `loss` at `indices`, Richardson-extrapolated: fp32 forces large steps, and the
/// extrapolation cancels their h² error. Fails on a relative L2 error above 1e-2 and names the
/// worst tensor.
func assertGradientMatchesFiniteDifferences(
    _ model: TrainableModel, at indices: [Int], loss: () -> Double,
    file: StaticString = #filePath, line: UInt = #line
) {
    var num = 0.0, den = 0.0, worst = (0.0, "")
    func central(_ i: Int, _ h: Float) -> Double {
        let old = model.params[i]
        model.params[i] = old + h; let lp = loss()
        model.params[i] = old - h; let lm = loss()
        model.params[i] = old
        return (lp - lm) / Double((old + h) - (old - h))
    }
    for i in indices {
        let fd = (4 * central(i, 5e-3) - central(i, 1e-2)) / 3, an = Double(model.grads[i])
        num += (fd - an) * (fd - an); den += fd * fd
        let e = abs(fd - an) / max(abs(fd), 1e-2)
        if e > worst.0 { worst = (e, model.layout.tensors.first { $0.range.contains(i) }!.name) }
    }
    let rel = (num / max(den, 1e-30)).squareRoot()
    XCTAssertLessThan(rel, 1e-2, "gradient mismatch, worst \(worst)", file: file, line: line)
    XCTAssertGreaterThan(den, 0, file: file, line: line)
}

/// Three random entries of every tensor, plus every entry of the tensors `whole` selects.
func sampleIndices(_ layout: ParameterLayout, _ rng: inout SplitMix64, whole: (String) -> Bool) -> [Int] {
    var idx: [Int] = []
    for t in layout.tensors {
        if whole(t.name) {
            idx += Array(t.range)
        } else {
            for _ in 0..<3 { idx.append(t.offset + rng.nextInt(below: t.count)) }
        }
    }
    return idx
}
