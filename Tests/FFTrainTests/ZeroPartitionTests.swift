import FFDistributed
import FFModel
import XCTest

/// ZeRO-1's pieces without MPI: equal element partitions, buckets cut at their boundaries, and
/// AdamW over ranges that cut tensors.
final class ZeroPartitionTests: XCTestCase {
    func testElementPartitionIsContiguousEqualAndAligned() {
        for total in [0, 5, 100, 17_345, 1_000_003] {
            for ranks in 1...9 {
                let p = elementPartition(total: total, ranks: ranks)
                XCTAssertEqual(p.count, ranks)
                XCTAssertEqual(p.first?.lowerBound, 0)
                XCTAssertEqual(p.last?.upperBound, total)
                for k in 1..<ranks { XCTAssertEqual(p[k].lowerBound, p[k - 1].upperBound) }
                for r in p.dropLast() { XCTAssertEqual(r.upperBound % 16, 0) }
                for r in p { XCTAssertLessThanOrEqual(abs(r.count - total / ranks), 16, "\(total) / \(ranks): \(p)") }
            }
        }
    }

    /// Stages as a model's backward completes them: from the end of the buffer down, one huge
    /// last stage (the embedding).
    let stages = [900..<1000, 700..<900, 650..<700, 0..<650]

    func testBucketsCoverTheBufferAndAreReadyWhenTheirLastStageIsDone() {
        for bucket in [1, 30, 100, 256, 5000] {
            for owners in [nil, elementPartition(total: 1000, ranks: 3), elementPartition(total: 1000, ranks: 7)] {
                let b = GradientSync(
                    comm: SingleProcess(), stages: stages, bucketFloats: bucket,
                    owners: owners
                ).buckets
                XCTAssertEqual(b.first?.range.upperBound, 1000)
                XCTAssertEqual(b.last?.range.lowerBound, 0)
                for k in 1..<b.count { XCTAssertEqual(b[k].range.upperBound, b[k - 1].range.lowerBound) }
                for x in b {
                    XCTAssertLessThanOrEqual(x.range.count, bucket)
                    // Ready: every stage touching the bucket is done by its last stage, not earlier.
                    let touching = stages.indices.filter { stages[$0].overlaps(x.range) }
                    XCTAssertEqual(x.lastStage, touching.max())
                    if let owners {
                        XCTAssertEqual(x.owner.map { owners[$0].contains(x.range.lowerBound) }, true)
                        XCTAssertEqual(x.owner.map { owners[$0].upperBound >= x.range.upperBound }, true, "\(x)")
                    } else {
                        XCTAssertNil(x.owner)
                    }
                }
            }
        }
        // The embedding stage is split: buckets of 256 cut it into 3 pieces sent together.
        let b = GradientSync(comm: SingleProcess(), stages: stages, bucketFloats: 256).buckets
        XCTAssertEqual(b.filter { $0.lastStage == 3 }.count, 3)
    }

    func testAdamWOverRangesThatCutTensorsEqualsWholeTensors() {
        var layout = ParameterLayout()
        for (i, n) in [37, 5, 64, 3, 91].enumerated() { layout.add("t\(i)", [n], decays: i % 2 == 0) }
        let n = layout.count
        func buffers() -> (FlatBuffer, FlatBuffer, FlatBuffer, FlatBuffer) {
            let p = FlatBuffer(count: n), g = FlatBuffer(count: n), m = FlatBuffer(count: n), v = FlatBuffer(count: n)
            for i in 0..<n { p[i] = sin(Float(i)); g[i] = cos(Float(3 * i)) }
            return (p, g, m, v)
        }
        let opt = AdamW(beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1)
        let (p, g, m, v) = buffers()
        for t in 1...3 {
            opt.update(layout: layout, params: p, grads: g, m: m, v: v, lr: 0.01, step: t, gradScale: 0.7)
        }
        for ranks in [2, 3, 7] {
            let (q, h, _, _) = buffers()
            let parts = elementPartition(total: n, ranks: ranks, align: 1)
            let moments = parts.map { (FlatBuffer(count: $0.count), FlatBuffer(count: $0.count)) }
            for t in 1...3 {
                for (r, part) in parts.enumerated() {
                    opt.update(
                        layout: layout, elements: part, params: q.pointer, grads: h.pointer + part.lowerBound,
                        m: moments[r].0.pointer, v: moments[r].1.pointer, base: part.lowerBound,
                        lr: 0.01, step: t, gradScale: 0.7)
                }
            }
            for i in 0..<n { XCTAssertEqual(q[i], p[i], "element \(i), \(ranks) pieces") }
            for (r, part) in parts.enumerated() {
                for i in part {
                    XCTAssertEqual(moments[r].0[i - part.lowerBound], m[i])
                    XCTAssertEqual(moments[r].1[i - part.lowerBound], v[i])
                }
            }
        }
    }
}
