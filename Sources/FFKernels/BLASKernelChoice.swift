import FFCore
import COpenBLAS
import Foundation

// OpenBLAS picks its kernel family once, when the library loads (or from OPENBLAS_CORETYPE), and
// releases older than the CPU often pick a slower family than one the CPU runs. The parts of the
// choice that need no child process live here, so that tests can reach them; the executable
// spawns one probe per candidate (each process loads the library afresh) and applies the winner.

/// A kernel family a CPU may run, with the /proc/cpuinfo flags it needs.
public struct BLASKernelCandidate: Sendable, Equatable {
    /// The name OPENBLAS_CORETYPE takes (and `openblas_get_corename` reports, in any case).
    public let name: String
    /// Every flag the family's instructions need.
    public let flags: Set<String>

    /// The families worth measuring on x86-64, oldest first. OpenBLAS ignores names it does not
    /// know, which the probe detects by comparing the name it loaded.
    public static let x86: [BLASKernelCandidate] = {
        let avx2: Set = ["avx2", "fma"]
        let avx512 = avx2.union(["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"])
        return [
            BLASKernelCandidate(name: "Haswell", flags: avx2),
            BLASKernelCandidate(name: "Zen", flags: avx2),
            BLASKernelCandidate(name: "SkylakeX", flags: avx512),
            BLASKernelCandidate(name: "Cooperlake", flags: avx512.union(["avx512_bf16"])),
            BLASKernelCandidate(
                name: "SapphireRapids",
                flags: avx512.union(["avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"])),
        ]
    }()

    /// The candidates whose flags the CPU has.
    public static func supported(by cpuFlags: Set<String>, among all: [BLASKernelCandidate] = x86) -> [String] {
        all.filter { $0.flags.isSubset(of: cpuFlags) }.map(\.name)
    }
}

/// What one candidate did in its probe process.
public struct BLASProbeResult: Codable, Sendable, Equatable {
    /// The family asked for.
    public var requested: String
    /// The family the library actually loaded (differs when it does not know `requested`).
    public var loaded: String
    /// sgemm GFLOP/s on one thread (0 when not measured).
    public var gflops: Double
    /// Worst error of the self-test products, relative to Σ_k |a_ik b_kj| per entry.
    public var selfTestError: Double

    public init(requested: String, loaded: String, gflops: Double, selfTestError: Double) {
        self.requested = requested
        self.loaded = loaded
        self.gflops = gflops
        self.selfTestError = selfTestError
    }

    /// Why the candidate cannot be used, or nil when it can.
    public var rejection: String? {
        if loaded.lowercased() != requested.lowercased() { return "the library loaded \(loaded) instead" }
        if !(selfTestError <= BLASSelfTest.tolerance) {
            return String(format: "self-test error %.2g > %.2g", selfTestError, BLASSelfTest.tolerance)
        }
        if !(gflops > 0) { return "no timing" }
        return nil
    }

    /// The fastest candidate that loaded what was asked and passed its self-test; `preferred`
    /// (the library's own pick, which needs no re-execution) unless another beats it by more than
    /// `margin`, a fraction within which timings on a shared machine do not tell families apart.
    public static func best(
        _ results: [BLASProbeResult], preferring preferred: String? = nil,
        margin: Double = 0.05
    ) -> BLASProbeResult? {
        let usable = results.filter { $0.rejection == nil }
        guard let fastest = usable.max(by: { $0.gflops < $1.gflops }) else { return nil }
        if let own = usable.first(where: { $0.requested.lowercased() == preferred?.lowercased() }),
            fastest.gflops <= own.gflops * (1 + margin)
        {
            return own
        }
        return fastest
    }

    /// One result per family from several rounds of probes: the best timing (contention only
    /// slows a round down), the worst self-test, and any round's failure to load the family.
    public static func merge(_ rounds: [BLASProbeResult]) -> BLASProbeResult? {
        guard var merged = rounds.first else { return nil }
        for r in rounds.dropFirst() {
            merged.gflops = max(merged.gflops, r.gflops)
            merged.selfTestError = max(merged.selfTestError, r.selfTestError)
            if r.loaded.lowercased() != r.requested.lowercased() { merged.loaded = r.loaded }
        }
        return merged
    }
}

/// A row-major sgemm, C(M,N) = op(A) · op(B), as the self-test calls it (the real one, or a broken
/// one in tests).
public typealias SgemmFunction = (
    _ transA: Bool, _ transB: Bool, _ M: Int, _ N: Int, _ K: Int,
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
    _ c: UnsafeMutablePointer<Float>
) -> Void

/// Products of awkward sizes in the three layouts the models use, checked against a float64 loop.
public enum BLASSelfTest {
    /// fp32 accumulation over K ≤ 300 terms stays well inside this; a wrong kernel is off by O(1).
    public static let tolerance = 1e-4
    /// The error recorded for a product with NaN or infinite entries, or none at all (JSON has no
    /// infinity).
    public static let failed = 1e300

    /// (transA, transB, M, N, K): sizes that are not multiples of any vector or block width.
    static let cases: [(Bool, Bool, Int, Int, Int)] = [
        (false, true, 67, 45, 131), (false, false, 37, 130, 61), (true, false, 29, 71, 257), (false, true, 1, 300, 9),
    ]

    /// The library's own sgemm.
    public static let library: SgemmFunction = { tA, tB, M, N, K, a, b, c in
        sgemm(
            transA: tA, transB: tB, M: M, N: N, K: K, alpha: 1, a, lda: tA ? M : K, b, ldb: tB ? K : N,
            beta: 0, c, ldc: N)
    }

    /// The worst relative error of `gemm` over the cases (NaN counts as infinite).
    public static func error(of gemm: SgemmFunction = library) -> Double {
        var rng = SplitMix64(seed: 0xB1A5)
        var worst = 0.0
        for (tA, tB, M, N, K) in cases {
            let a = (0..<(M * K)).map { _ in Float(rng.nextDouble() * 2 - 1) }
            let b = (0..<(K * N)).map { _ in Float(rng.nextDouble() * 2 - 1) }
            var c = [Float](repeating: .nan, count: M * N)
            a.withUnsafeBufferPointer { ap in
                b.withUnsafeBufferPointer { bp in
                    c.withUnsafeMutableBufferPointer {
                        gemm(tA, tB, M, N, K, ap.baseAddress!, bp.baseAddress!, $0.baseAddress!)
                    }
                }
            }
            for i in 0..<M {
                for j in 0..<N {
                    var exact = 0.0, scale = 0.0
                    for k in 0..<K {
                        let x = Double(a[tA ? k * M + i : i * K + k]) * Double(b[tB ? j * K + k : k * N + j])
                        exact += x
                        scale += abs(x)
                    }
                    let e = abs(Double(c[i * N + j]) - exact) / max(scale, 1e-30)
                    worst = e.isFinite ? max(worst, e) : failed
                }
            }
        }
        return worst
    }
}

/// sgemm GFLOP/s of this process on one thread: the best of `repeats` products (n x n)·(n x n)
/// after one warm-up, so that a moment of contention does not decide the choice.
public func sgemmGFLOPs(n: Int = 768, repeats: Int = 5) -> Double {
    let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
    var c = [Float](repeating: 0, count: n * n)
    var best = Double.infinity
    for r in 0...repeats {
        let t0 = DispatchTime.now().uptimeNanoseconds
        sgemm(transA: false, transB: false, M: n, N: n, K: n, alpha: 1, a, lda: n, b, ldb: n, beta: 0, &c, ldc: n)
        let t = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        if r > 0 { best = min(best, t) }
    }
    return 2 * Double(n * n * n) / best / 1e9
}

/// The choice made on one machine, kept between runs (one JSON file per cache key).
public struct BLASKernelCache: Codable, Sendable, Equatable {
    /// Hash of the CPU model and flags and the library's path and version: any change misses.
    public var key: String
    /// The winning family.
    public var kernels: String
    /// Every probe, the rejected ones included.
    public var results: [BLASProbeResult]

    public init(key: String, kernels: String, results: [BLASProbeResult]) {
        self.key = key
        self.kernels = kernels
        self.results = results
    }

    /// A stable key (FNV-1a, 64 bits, hex) of what decides the choice.
    public static func key(cpuModel: String, cpuFlags: Set<String>, library: String, version: String) -> String {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        let text = [cpuModel, cpuFlags.sorted().joined(separator: " "), library, version].joined(separator: "\n")
        for byte in text.utf8 {
            h = (h ^ UInt64(byte)) &* 0x0100_0000_01B3
        }
        return String(h, radix: 16)
    }

    /// The file for `key` under `directory`.
    public static func path(directory: String, key: String) -> String { "\(directory)/blas-\(key).json" }

    /// The cached choice for `key`, or nil when there is none, it is unreadable or it was made for
    /// another key (a stale or foreign file is measured again, never trusted).
    public static func load(directory: String, key: String) -> BLASKernelCache? {
        guard let data = FileManager.default.contents(atPath: path(directory: directory, key: key)),
            let cache = try? JSONDecoder().decode(BLASKernelCache.self, from: data),
            cache.key == key, cache.results.contains(where: { $0.requested == cache.kernels && $0.rejection == nil })
        else { return nil }
        return cache
    }

    /// Writes the file whole or not at all: a temporary file in the same directory, then rename,
    /// so that ranks starting together never read half a file.
    public func save(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let final = Self.path(directory: directory, key: key)
        let temporary = final + ".tmp-\(getpid())"
        try encoder.encode(self).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, final) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "rename to \(final): \(reason)"])
        }
    }
}

/// The loaded OpenBLAS: its build string (version and options) and the file it was loaded from.
public enum BLASLibrary {
    /// `openblas_get_config()`, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64".
    public static var config: String {
        guard let p = openblas_get_config() else { return "unknown" }
        return String(cString: p).trimmingCharacters(in: .whitespaces)
    }

    /// The shared object this process mapped for OpenBLAS, from /proc/self/maps.
    public static var path: String {
        // Read to the end: procfs files report size 0, and a one-shot read stops after a page.
        guard let file = FileHandle(forReadingAtPath: "/proc/self/maps") else { return "unknown" }
        let data = file.readDataToEndOfFile()
        let maps = String(decoding: data, as: UTF8.self)
        for line in maps.split(separator: "\n") {
            guard let slash = line.firstIndex(of: "/") else { continue }
            let file = String(line[slash...])
            if file.lowercased().contains("openblas") { return file }
        }
        return "unknown"
    }
}
