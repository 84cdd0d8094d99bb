import FFTestSupport
import XCTest
@testable import FFKernels

/// The parts of the OpenBLAS kernel choice that run in one process: which families a CPU may run,
/// the self-test that vets a family, the pick of the fastest and the per-machine cache. (Nothing
/// here sets OPENBLAS_CORETYPE: the probes that do run as child processes of the executable.)
final class BLASKernelChoiceTests: XCTestCase {
    func testCandidatesFollowTheCPUFlags() {
        let avx2: Set = ["sse4_2", "avx", "avx2", "fma"]
        XCTAssertEqual(BLASKernelCandidate.supported(by: avx2), ["Haswell", "Zen"])
        let zen5 = avx2.union(["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"])
        XCTAssertEqual(BLASKernelCandidate.supported(by: zen5), ["Haswell", "Zen", "SkylakeX", "Cooperlake"])
        XCTAssertEqual(BLASKernelCandidate.supported(by: ["sse2"]), [])
    }

    func testLibrarySgemmPassesTheSelfTest() {
        let error = BLASSelfTest.error()
        XCTAssertLessThan(error, BLASSelfTest.tolerance)
        XCTAssertGreaterThan(error, 0, "an fp32 product of these sizes cannot be exact")
    }

    /// A kernel that gets one entry of one product slightly wrong, or returns NaN, is caught.
    func testBrokenProductsFailTheSelfTest() {
        let offByOnePercent: SgemmFunction = { tA, tB, M, N, K, a, b, c in
            BLASSelfTest.library(tA, tB, M, N, K, a, b, c)
            if M == 37 { c[5 * N + 3] *= 1.01; c[5 * N + 3] += 0.01 }
        }
        XCTAssertGreaterThan(BLASSelfTest.error(of: offByOnePercent), BLASSelfTest.tolerance)
        let nan: SgemmFunction = { tA, tB, M, N, K, a, b, c in
            BLASSelfTest.library(tA, tB, M, N, K, a, b, c)
            c[0] = .nan
        }
        XCTAssertEqual(BLASSelfTest.error(of: nan), BLASSelfTest.failed)
        let untouched: SgemmFunction = { _, _, _, _, _, _, _, _ in }
        XCTAssertEqual(BLASSelfTest.error(of: untouched), BLASSelfTest.failed)
    }

    func testTheFastestPassingCandidateWins() {
        let broken = BLASSelfTest.error(of: { tA, tB, M, N, K, a, b, c in
            BLASSelfTest.library(tA, tB, M, N, K, a, b, c)
            c[0] += 1
        })
        let results = [
            BLASProbeResult(requested: "Haswell", loaded: "Haswell", gflops: 96, selfTestError: 1e-7),
            BLASProbeResult(requested: "Zen", loaded: "Zen", gflops: 120, selfTestError: 2e-7),
            BLASProbeResult(requested: "SkylakeX", loaded: "SkylakeX", gflops: 210, selfTestError: broken),
            BLASProbeResult(requested: "Cooperlake", loaded: "Haswell", gflops: 150, selfTestError: 1e-7),
        ]
        XCTAssertEqual(BLASProbeResult.best(results)?.requested, "Zen")
        XCTAssertNotNil(results[2].rejection)
        XCTAssertEqual(results[3].rejection, "the library loaded Haswell instead")
        XCTAssertNil(BLASProbeResult.best(Array(results[2...])))
        let caseOnly = BLASProbeResult(requested: "SKYLAKEX", loaded: "SkylakeX", gflops: 1, selfTestError: 0)
        XCTAssertNil(caseOnly.rejection)
    }

    /// The library's own pick stays unless another family is clearly faster (no re-execution for noise).
    func testTheLibrarysOwnPickWinsTiesWithinTheMargin() {
        let results = [
            BLASProbeResult(requested: "Haswell", loaded: "Haswell", gflops: 100, selfTestError: 1e-7),
            BLASProbeResult(requested: "Zen", loaded: "Zen", gflops: 97, selfTestError: 1e-7),
        ]
        XCTAssertEqual(BLASProbeResult.best(results, preferring: "Zen")?.requested, "Zen")
        XCTAssertEqual(BLASProbeResult.best(results, preferring: "Zen", margin: 0.01)?.requested, "Haswell")
        XCTAssertEqual(BLASProbeResult.best(results, preferring: "Prescott")?.requested, "Haswell")
    }

    /// Rounds of one family: the best timing, the worst self-test, any failure to load.
    func testRoundsMergeToBestTimingAndWorstOutcome() {
        let rounds = [
            BLASProbeResult(requested: "SkylakeX", loaded: "SkylakeX", gflops: 150, selfTestError: 1e-7),
            BLASProbeResult(requested: "SkylakeX", loaded: "SkylakeX", gflops: 190, selfTestError: 3e-7),
            BLASProbeResult(
                requested: "SkylakeX", loaded: "probe exited with status 4", gflops: 0,
                selfTestError: BLASSelfTest.failed),
        ]
        let merged = BLASProbeResult.merge(Array(rounds[..<2]))
        XCTAssertEqual(merged?.gflops, 190)
        XCTAssertEqual(merged?.selfTestError, 3e-7)
        XCTAssertNil(merged?.rejection)
        XCTAssertNotNil(BLASProbeResult.merge(rounds)?.rejection)
    }

    func testCacheRoundTripAndMisses() throws {
        let dir = NSTemporaryDirectory() + "ff-blas-cache-\(getpid())-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = BLASKernelCache.key(
            cpuModel: "AMD EPYC", cpuFlags: ["avx2", "fma"],
            library: "/lib/libopenblas.so.0", version: "OpenBLAS 0.3.21")
        XCTAssertNil(BLASKernelCache.load(directory: dir, key: key))
        let cache = BLASKernelCache(
            key: key, kernels: "Zen",
            results: [
                BLASProbeResult(requested: "Haswell", loaded: "Haswell", gflops: 61.5, selfTestError: 3e-8),
                BLASProbeResult(requested: "Zen", loaded: "Zen", gflops: 64.25, selfTestError: 3e-8),
                BLASProbeResult(
                    requested: "SkylakeX", loaded: "probe exited with status 4", gflops: 0,
                    selfTestError: BLASSelfTest.failed),
            ])
        try cache.save(directory: dir)
        XCTAssertEqual(BLASKernelCache.load(directory: dir, key: key), cache)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["blas-\(key).json"])

        let other = BLASKernelCache.key(
            cpuModel: "AMD EPYC", cpuFlags: ["avx2", "fma"],
            library: "/lib/libopenblas.so.0", version: "OpenBLAS 0.3.34")
        XCTAssertNotEqual(other, key)
        XCTAssertNil(BLASKernelCache.load(directory: dir, key: other))
        // A file under the right name that records another key, or a choice that failed, is not trusted.
        try FileManager.default.copyItem(
            atPath: BLASKernelCache.path(directory: dir, key: key),
            toPath: BLASKernelCache.path(directory: dir, key: other))
        XCTAssertNil(BLASKernelCache.load(directory: dir, key: other))
        var lying = cache
        lying.kernels = "SkylakeX"
        try lying.save(directory: dir)
        XCTAssertNil(BLASKernelCache.load(directory: dir, key: key))
        try Data("{\"key\":".utf8).write(to: URL(fileURLWithPath: BLASKernelCache.path(directory: dir, key: key)))
        XCTAssertNil(BLASKernelCache.load(directory: dir, key: key))
    }

    func testTheLoadedLibraryDescribesItself() {
        XCTAssertTrue(BLASLibrary.config.contains("OpenBLAS"), BLASLibrary.config)
        XCTAssertTrue(BLASLibrary.path.contains("openblas"), BLASLibrary.path)
    }
}
