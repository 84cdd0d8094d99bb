import Foundation
import FFKernels

/// Exits with a clear message when this build's kernels need AVX2 + FMA (or AVX-512) and the CPU
/// lacks them, instead of dying on an illegal instruction later.
func checkCPUFeatures() {
    #if FF_AVX2
        let flags = CPUInfo.flags
        guard !flags.isEmpty else { return }
        if !flags.isSuperset(of: ["avx2", "fma"]) {
            FileHandle.standardError.write(
                Data(
                    ("error: this build of swift-ff-train needs a CPU with AVX2 and FMA "
                        + "(x86-64 from 2013 on); rebuild on this machine, or with FF_PORTABLE=1 swift build -c "
                            + "release\n")
                        .utf8))
            exit(1)
        }
        #if FF_AVX512
            if !flags.isSuperset(of: ["avx512f", "avx512vl", "avx512bw", "avx512dq"]) {
                FileHandle.standardError.write(
                    Data(
                        ("error: this build of swift-ff-train was made on a CPU with AVX-512 and "
                            + "this one lacks it; rebuild on this machine, or with FF_CPU=avx2 swift build -c release "
                            + "for both\n").utf8))
                exit(1)
            }
        #endif
    #endif
}

/// The CPU as /proc/cpuinfo describes its first core.
enum CPUInfo {
    static let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    static func field(_ name: String) -> String? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name) }),
            let colon = line.firstIndex(of: ":")
        else { return nil }
        return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    static let flags = Set((field("flags") ?? "").split(separator: " ").map(String.init))
    static let model = field("model name") ?? "unknown"
}

/// Environment variables of the kernel choice. OPENBLAS_CORETYPE is the user's (never changed
/// when set); the others pass the choice from one process of ours to the next.
enum BLASEnv {
    static let coretype = "OPENBLAS_CORETYPE"
    /// "library": keep OpenBLAS's own pick (no measurement, no cache); "measure": measure again
    /// and replace the cached choice; "auto" or unset: choose, from the cache when there is one.
    static let mode = "FF_BLAS_KERNELS"
    static let probe = "SWIFT_FF_TRAIN_BLAS_PROBE"
    static let report = "SWIFT_FF_TRAIN_BLAS_REPORT"
    static let reexeced = "SWIFT_FF_TRAIN_NO_REEXEC"
}

/// Makes OpenBLAS run the fastest kernel family this CPU supports, measured once per machine and
/// library, and says in one line on standard error (rank 0) what it runs.
///
/// OpenBLAS reads OPENBLAS_CORETYPE only when the library loads, so each candidate is measured in
/// a child process of this executable and the winner is applied by setting the variable and
/// re-executing once. A user's own OPENBLAS_CORETYPE always wins. The choice is cached in
/// $XDG_CACHE_HOME/swift-ff-train (default ~/.cache/swift-ff-train) under a hash of the CPU model
/// and flags and the library's path and version.
func ensureFastBLASKernels() {
    let env = ProcessInfo.processInfo.environment
    if env[BLASEnv.probe] != nil { runBLASProbe() }
    if let line = env[BLASEnv.report] {
        unsetenv(BLASEnv.report)
        reportBLAS(line)
        return
    }
    guard needsFastBLAS(CommandLine.arguments) else { return }
    if let user = env[BLASEnv.coretype] {
        if env[BLASEnv.reexeced] == nil {
            reportBLAS(
                "kernels \(blasCoreName()) (\(BLASEnv.coretype)=\(user) set in the environment: "
                    + "selection skipped)")
        }
        return
    }
    if env[BLASEnv.reexeced] != nil { return }
    if env[BLASEnv.mode] == "library" {
        reportBLAS("kernels \(blasCoreName()), OpenBLAS's own pick (\(BLASEnv.mode)=library)")
        return
    }
    let candidates = BLASKernelCandidate.supported(by: CPUInfo.flags)
    guard !candidates.isEmpty else { return }
    let key = BLASKernelCache.key(
        cpuModel: CPUInfo.model, cpuFlags: CPUInfo.flags, library: BLASLibrary.path,
        version: BLASLibrary.config)
    let directory = blasCacheDirectory(env)
    var source = "cached"
    var cache = env[BLASEnv.mode] == "measure" ? nil : cachedChoice(directory: directory, key: key, env: env)
    if cache == nil {
        let results = probeBLASKernels(candidates)
        guard let best = BLASProbeResult.best(results, preferring: blasCoreName()) else {
            let why = results.map { "\($0.requested): \($0.rejection ?? "?")" }.joined(separator: "; ")
            reportBLAS("kernels \(blasCoreName()), OpenBLAS's own pick: no candidate passed (\(why))")
            return
        }
        cache = BLASKernelCache(key: key, kernels: best.requested, results: results)
        source = "measured"
        do { try cache?.save(directory: directory) } catch { source += ", not cached: \(error.localizedDescription)" }
    }
    guard let cache else { return }
    let line = describe(cache, source: source, path: BLASKernelCache.path(directory: directory, key: key))
    guard cache.kernels.lowercased() != blasCoreName().lowercased() else { return reportBLAS(line) }
    setenv(BLASEnv.coretype, cache.kernels, 1)
    setenv(BLASEnv.reexeced, "1", 1)
    setenv(BLASEnv.report, line, 1)
    let args = CommandLine.arguments
    var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
    cargs.append(nil)
    execv("/proc/self/exe", cargs)
    // execv returned: carry on with the library's own kernels rather than fail.
    let reason = String(cString: strerror(errno))
    unsetenv(BLASEnv.coretype)
    unsetenv(BLASEnv.report)
    reportBLAS("kernels \(blasCoreName()): re-executing with \(cache.kernels) failed (\(reason))")
}

/// Commands that spend their time in sgemm; the others (prepare, plot, inspect, ...) start at once.
func needsFastBLAS(_ args: [String]) -> Bool {
    guard args.count > 1 else { return false }
    let first = args[1]
    if ["-h", "--help", "help", "--version", "--experimental-dump-help"].contains(first) { return false }
    if first.hasPrefix("-") { return !args.contains("--help") && !args.contains("-h") }
    guard ["train", "eval", "generate", "analyze", "bench"].contains(first) else { return false }
    if first == "bench" { return args.count > 2 && ["step", "attention"].contains(args[2]) }
    return !args.contains("--help") && !args.contains("-h")
}

func blasCacheDirectory(_ env: [String: String]) -> String {
    let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.cache")
    return base + "/swift-ff-train"
}

/// The cached choice; local ranks other than 0 first wait a while for rank 0 to write it, so that
/// the ranks of a job do not all measure at once on the same cores.
func cachedChoice(directory: String, key: String, env: [String: String]) -> BLASKernelCache? {
    let localRank = Int(env["OMPI_COMM_WORLD_LOCAL_RANK"] ?? env["SLURM_LOCALID"] ?? "0") ?? 0
    let deadline = Date().addingTimeInterval(localRank > 0 ? 30 : 0)
    repeat {
        if let cache = BLASKernelCache.load(directory: directory, key: key) { return cache }
        if localRank > 0 { usleep(200_000) }
    } while Date() < deadline
    return nil
}

func describe(_ cache: BLASKernelCache, source: String, path: String) -> String {
    let all = cache.results.map { r in
        r.rejection.map { "\(r.requested) rejected: \($0)" } ?? String(format: "%@ %.1f", r.requested, r.gflops)
    }.joined(separator: ", ")
    let best = cache.results.first { $0.requested == cache.kernels }?.gflops ?? .nan
    return String(
        format: "kernels %@, %.1f GFLOP/s sgemm on one thread (%@ %@; %@)",
        cache.kernels, best, source, path, all)
}

func reportBLAS(_ line: String) {
    let env = ProcessInfo.processInfo.environment
    let rank = env["OMPI_COMM_WORLD_RANK"] ?? env["PMI_RANK"] ?? env["PMIX_RANK"] ?? env["SLURM_PROCID"] ?? "0"
    guard rank == "0" else { return }
    FileHandle.standardError.write(Data("BLAS: \(BLASLibrary.config): \(line)\n".utf8))
}

/// The child side: measures the kernels this process loaded and prints one JSON object.
func runBLASProbe() -> Never {
    setBLASThreads(1)
    let env = ProcessInfo.processInfo.environment
    let loaded = blasCoreName()
    let requested = env[BLASEnv.coretype] ?? loaded
    let error = BLASSelfTest.error()
    let ok = loaded.lowercased() == requested.lowercased()
    let result = BLASProbeResult(
        requested: requested, loaded: loaded, gflops: ok ? sgemmGFLOPs() : 0,
        selfTestError: error)
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    FileHandle.standardOutput.write((try? encoder.encode(result)) ?? Data())
    FileHandle.standardOutput.write(Data("\n".utf8))
    exit(0)
}

/// Probes every candidate (nil: the library's own pick) in `rounds` interleaved rounds, so that a
/// burst of load on a shared machine slows one round of each rather than all rounds of one.
func probeBLASKernels(_ candidates: [String?], rounds: Int = 3) -> [BLASProbeResult] {
    var all = [[BLASProbeResult]](repeating: [], count: candidates.count)
    for _ in 0..<rounds {
        for (i, name) in candidates.enumerated() { all[i].append(probeBLASKernel(name)) }
    }
    return all.compactMap(BLASProbeResult.merge)
}

/// One probe process with OPENBLAS_CORETYPE=`name` (unset when nil).
func probeBLASKernel(_ name: String?) -> BLASProbeResult {
    var env = ProcessInfo.processInfo.environment
    env[BLASEnv.probe] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"
    env[BLASEnv.report] = nil
    env[BLASEnv.coretype] = name
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
    process.arguments = ["probe"]
    process.environment = env
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    let failed = { (why: String) in
        BLASProbeResult(requested: name ?? "?", loaded: why, gflops: 0, selfTestError: BLASSelfTest.failed)
    }
    do { try process.run() } catch { return failed("not started: \(error.localizedDescription)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0, let r = try? JSONDecoder().decode(BLASProbeResult.self, from: data) else {
        return failed("probe exited with status \(process.terminationStatus)")
    }
    return r
}
