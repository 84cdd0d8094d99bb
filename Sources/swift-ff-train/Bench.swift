import FFCore
import ArgumentParser
import Foundation
import FFDistributed
import FFKernels
import FFModel
import FFTrain
import FFData

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (not tests): collectives and kernels, timed in this process.",
        subcommands: [
            BenchAllreduce.self, BenchAttention.self, BenchStep.self, BenchTokenizer.self, BenchBLAS.self,
            BenchHash.self,
        ])
}

/// Times a raw MPI_Allreduce of the model's gradient bytes next to the bucketed `GradientSync`
/// of the same buffer (run under mpirun), alternating the two round by round: on a shared
/// machine two figures taken minutes apart move with the load, a per-round ratio much less.
/// With `--floats` it times the raw allreduce at each size instead (to fit latency and bandwidth).
struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Raw MPI_Allreduce vs the trainer's bucketed gradient sync, same bytes (under mpirun).")

    @Option(name: .long, help: "The config whose model (and dist.bucket_mb, dist.zero1) to use.")
    var config: String

    @Option(name: .customLong("set"), help: "Override a config value: key.path=value (repeatable).")
    var overrides: [String] = []

    @Option(name: .long, help: "Timed repetitions per measurement (their mean is one measurement).")
    var repeats: Int = 10

    @Option(name: .long, help: "Rounds: one raw and one bucketed measurement each; medians are reported.")
    var rounds: Int = 9

    @Option(name: .long, parsing: .upToNextOption, help: "Sizes in floats: time the raw allreduce of each.")
    var floats: [Int] = []

    func run() throws {
        let comm = makeCommunicator()
        do {
            guard repeats >= 1, rounds >= 1 else { throw ValidationError("--repeats and --rounds must be >= 1") }
            let cfg = try TrainConfig.load(path: config, overrides: overrides)
            if floats.isEmpty { try compare(cfg, comm) } else { try sizes(comm) }
            (comm as? MPICommunicator)?.finalize()
        } catch {
            fail(error, rank: comm.size > 1 ? comm.rank : nil)
        }
    }

    /// Mean seconds of `body` over `repeats` calls after a barrier, averaged over ranks.
    func time(_ comm: Communicator, _ body: () throws -> Void) throws -> Double {
        try comm.barrier()
        let t0 = Date()
        for _ in 0..<repeats { try body() }
        var t = Date().timeIntervalSince(t0) / Double(repeats)
        try comm.allreduceSum(&t, count: 1)
        return t / Double(comm.size)
    }

    func raw(_ comm: Communicator, _ buffer: UnsafeMutablePointer<Float>, _ n: Int) throws {
        if let mpi = comm as? MPICommunicator {
            try mpi.rawAllreduceSum(buffer, count: n)
        } else {
            try comm.allreduceSum(buffer, count: n)
        }
    }

    func compare(_ cfg: TrainConfig, _ comm: Communicator) throws {
        let vocab = try dataVocabularySize(cfg)
        let model = LanguageModel(config: cfg.model.lmConfig(vocabSize: vocab), maxBatch: 1, threads: 1)
        let n = model.grads.count, bytes = Double(n * 4)
        let owners = cfg.dist.zero1 ? elementPartition(total: n, ranks: comm.size) : nil
        let sync = GradientSync(
            comm: comm, stages: model.gradientStages,
            bucketFloats: max(1, Int(cfg.dist.bucketMB * 262_144)), owners: owners)
        let g = model.grads.pointer
        let bucketed = {
            sync.begin(grads: g)
            for k in 0..<model.gradientStages.count { try sync.stageDone(k) }
            try sync.finish()
        }
        try raw(comm, g, n); try bucketed()  // warm-up
        var r: [Double] = [], b: [Double] = []
        for _ in 0..<rounds {
            r.append(try time(comm) { try raw(comm, g, n) })
            b.append(try time(comm, bucketed))
        }
        guard comm.isRoot else { return }
        let ratios = zip(r, b).map { $0 / $1 }.sorted()
        // Bus bandwidth of a ring allreduce: 2 (N-1)/N bytes per byte reduced.
        let factor = 2 * Double(comm.size - 1) / Double(max(comm.size, 1))
        let rm = median(r), bm = median(b)
        print(
            String(
                format: "allreduce of %d floats (%.2f MB), %d ranks, %d buckets (dist.bucket_mb %.2f%@), "
                    + "median of %d rounds x %d", n, bytes / 1e6, comm.size, sync.buckets.count, cfg.dist.bucketMB,
                owners == nil ? "" : ", ZeRO-1: reduced to owners", rounds, repeats))
        print(
            String(
                format: "raw MPI_Allreduce:      %8.3f ms  algbw %6.2f GB/s  busbw %6.2f GB/s",
                rm * 1e3, bytes / rm / 1e9, factor * bytes / rm / 1e9))
        print(
            String(
                format: "bucketed gradient sync: %8.3f ms  algbw %6.2f GB/s  busbw %6.2f GB/s",
                bm * 1e3, bytes / bm / 1e9, factor * bytes / bm / 1e9))
        print(
            String(
                format: "raw / bucketed time: %.3f (median of per-round ratios; min %.3f, max %.3f)",
                ratios[ratios.count / 2], ratios[0], ratios[ratios.count - 1]))
    }

    /// One line per size: the median over rounds of the raw allreduce's mean time.
    func sizes(_ comm: Communicator) throws {
        let largest = floats.max() ?? 1
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(largest, 1))
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 0, count: max(largest, 1))
        for n in floats {
            try raw(comm, buffer, n)
            var t: [Double] = []
            for _ in 0..<rounds { t.append(try time(comm) { try raw(comm, buffer, n) }) }
            if comm.isRoot {
                print(
                    String(
                        format: "{\"ranks\":%d,\"floats\":%d,\"bytes\":%d,\"seconds\":%.8f}",
                        comm.size, n, 4 * n, median(t)))
            }
        }
    }
}

/// The vocabulary size of a config's data (the model's shape depends on it).
func dataVocabularySize(_ cfg: TrainConfig) throws -> Int {
    try Vocabulary.read(from: cfg.dataPath("vocab.json")).size
}

/// The middle value of a non-empty sample (the upper one of an even count).
func median(_ x: [Double]) -> Double { x.sorted()[x.count / 2] }

/// Median of the timings of `body` after one warm-up run.
func medianSeconds(repeats: Int, _ body: () throws -> Void) rethrows -> Double {
    try body()
    var t: [Double] = []
    for _ in 0..<max(repeats, 1) {
        let t0 = Date()
        try body()
        t.append(Date().timeIntervalSince(t0))
    }
    return median(t)
}

/// Peak resident memory of this process so far (VmHWM), in MB.
func peakRSSMegabytes() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return .nan }
    return kb / 1024
}

/// sgemm GFLOP/s on (n x n) · (n x n), this process, this thread count: the MFU yardstick.
func measuredSgemmGFLOPs(n: Int = 1024, repeats: Int = 5) -> Double {
    let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
    var c = [Float](repeating: 0, count: n * n)
    let t = medianSeconds(repeats: repeats) {
        sgemm(transA: false, transB: false, M: n, N: n, K: n, alpha: 1, a, lda: n, b, ldb: n, beta: 0, &c, ldc: n)
    }
    return 2 * Double(n * n * n) / t / 1e9
}

/// `"key":value` with the value formatted by `format` (a printf format for one Double).
func json(_ key: String, _ value: Double, _ format: String) -> String {
    "\"\(key)\":" + (value.isFinite ? String(format: format, value) : "null")
}

/// Forward + backward of one fused attention call on random data.
struct BenchAttention: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Fused attention forward+backward: time, pair-dims/s, memory.",
        discussion: """
            With --kind both the two kernels alternate call by call for --rounds rounds, and the \
            Fourier / softmax ratio is reported per round (median, min, max): a ratio of timings \
            taken seconds apart moves with whatever else the machine is doing.
            """)

    @Option var kind: String = "both"
    @Option var batch = 8
    @Option var heads = 8
    @Option var seq = 256
    @Option var dim = 16
    @Flag var causal = false
    @Option(help: "Threads of our kernels and of BLAS (the softmax GEMMs).") var threads = 1
    @Option(help: "Timed calls of a single --kind (the median is reported).") var repeats = 3
    @Option(help: "Rounds of --kind both: one Fourier and one softmax call each.") var rounds = 9
    @Option(help: "Standard deviation of q and k (v is N(0, 1)).") var std: Double = 0.25
    @Option(name: .customLong("r-init")) var rInit: Float = 2.0
    @Option(
        name: .customLong("r-mode"),
        help: "How R is shared (scalar, per_dim, per_head); R_k = r-init (1 + k / 10).")
    var rMode: String = "scalar"
    @Option(help: "Fourier kernel: fused or plain (model.attention.kernel).") var kernel: String = "fused"
    @Flag(help: "Print a hash of the Fourier kernel's outputs and gradients from one call on fresh buffers.")
    var checksum = false

    func run() throws {
        guard kind == "fourier" || kind == "softmax" || kind == "both" else {
            throw ValidationError("--kind must be fourier, softmax or both")
        }
        guard rounds >= 1, repeats >= 1 else { throw ValidationError("--rounds and --repeats must be >= 1") }
        // The softmax kernel's GEMMs run on as many BLAS threads as ours (OpenBLAS defaults to
        // every core, and a 1-thread comparison must not give it two).
        setBLASThreads(threads)
        let B = batch, T = seq, H = heads, D = dim, C = H * D
        var rng = SplitMix64(seed: 1)
        var qkv = [Float](repeating: 0, count: B * T * 3 * C)
        for i in qkv.indices { qkv[i] = Float(rng.nextNormal() * ((i / C) % 3 == 2 ? 1 : std)) }
        let g = (0..<(B * T * C)).map { _ in Float(rng.nextNormal()) }
        var out = [Float](repeating: 0, count: B * T * C), stat = [Float](repeating: 0, count: B * H * T)
        var dqkv = [Float](repeating: 0, count: qkv.count), dR = [Float](repeating: 0, count: max(H, D))
        let shape = AttentionShape(batch: B, seq: T, heads: H, headDim: D, causal: causal)
        let pairs = Double(B * H) * (causal ? Double(T * (T + 1) / 2) : Double(T * T))
        let kinds = kind == "both" ? ["fourier", "softmax"] : [kind]
        // One kernels object per kind, so workspace_mb is that kernel's own.
        var kernels: [String: AttentionKernels] = [:]
        for k in kinds {
            let a = AttentionKernels(maxSeq: T, headDim: D, threads: threads)
            a.reserve(shape, for: k == "fourier" ? .fourier : .softmax)
            kernels[k] = a
        }
        guard let mode = RMode(rawValue: rMode) else {
            throw ValidationError("--r-mode must be scalar, per_dim or per_head")
        }
        let R: [Float] = (0..<mode.count(heads: H, headDim: D)).map { rInit * (1 + Float($0) / 10) }
        guard let fourierKernel = FourierKernel(rawValue: kernel) else {
            throw ValidationError("--kernel must be fused or plain")
        }
        let spec = FourierSpec(rMode: mode, kernel: fourierKernel)
        if checksum { return printChecksum(qkv: qkv, g: g, R: R, spec: spec, shape: shape) }
        /// (forward, backward) seconds of one call of kind k; its process CPU seconds into `cpu`.
        var cpu: [String: [Double]] = [:]
        func call(_ k: String) -> (Double, Double) {
            let a = kernels[k]!
            let c0 = processCPUSeconds()
            defer { cpu[k, default: []].append(processCPUSeconds() - c0) }
            let t0 = Date()
            if k == "fourier" {
                a.fourierForward(out: &out, rowSum: &stat, qkv: qkv, R: R, spec: spec, shape: shape)
            } else {
                a.softmaxForward(out: &out, rowLSE: &stat, qkv: qkv, shape: shape)
            }
            let t1 = Date()
            if k == "fourier" {
                a.fourierBackward(
                    dqkv: &dqkv, dR: &dR, dout: g, out: out, qkv: qkv, R: R, rowSum: stat,
                    spec: spec, shape: shape)
            } else {
                a.softmaxBackward(dqkv: &dqkv, dout: g, out: out, qkv: qkv, rowLSE: stat, shape: shape)
            }
            return (t1.timeIntervalSince(t0), Date().timeIntervalSince(t1))
        }
        var times: [String: [(Double, Double)]] = [:]
        var rowSums: [String: Double] = [:]
        for k in kinds {
            _ = call(k)  // warm-up, and the row sums of its forward
            cpu[k] = []
            rowSums[k] = k == "fourier" ? stat.reduce(0.0) { $0 + Double(($1 - 1e-6) / $1) } / Double(stat.count) : 1
        }
        for _ in 0..<(kinds.count == 2 ? rounds : repeats) {
            for k in kinds { times[k, default: []].append(call(k)) }
        }
        report(kinds: kinds, kernels: kernels, times: times, cpu: cpu, rowSums: rowSums, pairs: pairs)
    }

    /// One JSON line per kind, and the per-round ratio when both ran.
    func report(kinds: [String], kernels: [String: AttentionKernels], times: [String: [(Double, Double)]],
                cpu: [String: [Double]], rowSums: [String: Double], pairs: Double) {
        // The yardsticks, measured after the timings: the core's FMA peak (per core-second) and
        // what sgemm reaches on this process's threads (wall clock, as the kernels' own times).
        let peak = FMAThroughput.measure(), sgemmGFLOPs = measuredSgemmGFLOPs()
        for k in kinds {
            var fields = [
                "\"kind\":\"\(k)\"", "\"kernel\":\"\(k == "fourier" ? kernel : "gemm")\"",
                json("workspace_mb", Double(kernels[k]!.workspaceBytes) / 1e6, "%.2f"),
                json("peak_rss_mb", peakRSSMegabytes(), "%.1f"),
                json("attn_row_sum_mean", rowSums[k]!, "%.4f"),
            ]
            fields += timingFields(times[k]!, cpu: cpu[k]!, pairs: pairs, peak: peak, sgemmGFLOPs: sgemmGFLOPs)
            print("{" + fields.joined(separator: ",") + "}")
        }
        if let f = times["fourier"], let s = times["softmax"] { printRatio(f, s) }
    }

    /// Shape, times, pair-dims/s and MFU of one kind's calls, as JSON fields.
    func timingFields(
        _ t: [(Double, Double)], cpu: [Double], pairs: Double, peak: FMAThroughput,
        sgemmGFLOPs: Double
    ) -> [String] {
        let fwd = median(t.map(\.0)), bwd = median(t.map(\.1)), total = median(t.map { $0.0 + $0.1 })
        // Model FLOPs as for a softmax layer (QK^T and AV: 2 · 2 D per visible pair forward,
        // twice that backward), the same count for both kinds, as `bench step` counts them.
        let modelGFLOPs = 12 * pairs * Double(dim) / total / 1e9
        // Per core-second of CPU time: on a shared machine the wall clock also counts the
        // time the kernel's threads wait for a core. The MFU against the hardware is taken so.
        let cpuSeconds = median(cpu), cpuGFLOPs = 12 * pairs * Double(dim) / cpuSeconds / 1e9
        return [
            "\"batch\":\(batch)", "\"heads\":\(heads)", "\"seq\":\(seq)", "\"dim\":\(dim)", "\"causal\":\(causal)",
            "\"threads\":\(threads)", "\"calls\":\(t.count)", json("seconds_fwd", fwd, "%.6f"),
            json("seconds_bwd", bwd, "%.6f"), json("seconds_fwd_bwd", total, "%.6f"),
            json("pair_dims_per_s", pairs * Double(dim) / total, "%.4g"),
            json("cpu_seconds_fwd_bwd", cpuSeconds, "%.6f"),
            json("pair_dims_per_cpu_s", pairs * Double(dim) / cpuSeconds, "%.4g"),
            json("model_gflops", modelGFLOPs, "%.2f"), json("fma_probe_gflops", peak.gflops, "%.2f"),
            json("sgemm_gflops", sgemmGFLOPs, "%.2f"), json("mfu_hw", cpuGFLOPs / peak.gflops, "%.4f"),
            json("mfu_sgemm", modelGFLOPs / sgemmGFLOPs, "%.4f"),
        ]
    }

    /// The per-round Fourier / softmax time ratios of `--kind both`.
    func printRatio(_ f: [(Double, Double)], _ s: [(Double, Double)]) {
        let ratios = zip(f, s).map { ($0.0 + $0.1) / ($1.0 + $1.1) }.sorted()
        let mid = ratios[ratios.count / 2], low = ratios[0], high = ratios[ratios.count - 1]
        print(
            "{\"ratio\":\"fourier/softmax\",\"dim\":\(dim),\"rounds\":\(ratios.count),"
                + [
                    json("median", mid, "%.3f"), json("min", low, "%.3f"),
                    json("max", high, "%.3f"),
                ].joined(separator: ",")
                + ",\"rounds_at_most_3\":\(ratios.filter { $0 <= 3 }.count)}")
        print(
            String(
                format: "fourier / softmax fwd+bwd time: %.2fx (median of %d alternating rounds, %.2f–%.2f)",
                mid, ratios.count, low, high))
    }

    /// A hash of the bits of O, S, dqkv and dR from one Fourier call on fresh buffers: equal
    /// hashes mean bit-identical results (a change that must not alter them can be checked so).
    func printChecksum(qkv: [Float], g: [Float], R: [Float], spec: FourierSpec, shape: AttentionShape) {
        let n = shape.batch * shape.seq * shape.width
        var o = [Float](repeating: 0, count: n), st = [Float](repeating: 0, count: n / shape.headDim)
        var dq = [Float](repeating: 0, count: qkv.count), dr = [Float](repeating: 0, count: R.count)
        let a = AttentionKernels(maxSeq: shape.seq, headDim: shape.headDim, threads: threads)
        a.fourierForward(out: &o, rowSum: &st, qkv: qkv, R: R, spec: spec, shape: shape)
        a.fourierBackward(
            dqkv: &dq, dR: &dr, dout: g, out: o, qkv: qkv, R: R, rowSum: st, spec: spec,
            shape: shape)
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for x in o + st + dq + dr { hash = (hash ^ UInt64(x.bitPattern)) &* 0x100_0000_01b3 }
        print(
            String(
                format: "{\"checksum\":\"%016llx\",\"dim\":%d,\"r_mode\":\"%@\"}",
                hash, shape.headDim, rMode))
    }
}

/// Training steps of a config's model on its data: tokens/s and MFU against sgemm measured here
/// and against the core's FMA peak (`FMAThroughput`).
struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "step",
        abstract: "Training steps of a config: tokens/s, model GFLOP/s, MFU vs in-process sgemm and vs the FMA peak.")

    @Option var config: String
    @Option(name: .customLong("set")) var overrides: [String] = []
    @Option var steps = 10

    func run() throws {
        do {
            // A benchmark must not touch the user's runs: its run folder is a temporary one.
            let scratch = NSTemporaryDirectory() + "swift-ff-train-bench-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let quiet = ["train.eval_every=0", "train.log_every=1000000", "run.dir=\(scratch)", "checkpoint.every=0"]
            var cfg = try TrainConfig.load(path: config, overrides: overrides + quiet)
            cfg.train.steps = steps + 2
            let trainer = try Trainer(config: cfg)
            guard let lm = trainer.workload as? LanguageModelWorkload else {
                throw ValidationError(
                    "bench step measures language-model configs; "
                        + "image runs report images/s in their progress lines")
            }
            let m = cfg.model
            let T = m.context, C = m.dModel, F = m.dFF, L = m.layers, V = lm.vocab.size
            // Matmul FLOPs per token, forward: 2 x weights touched (qkv, proj, fc1, fc2, head);
            // attention: QK^T and AV, 2 x 2 x C per visible key (T+1)/2 on average (causal).
            let weights = Double(L * (4 * C * C + 2 * C * F) + V * C)
            let attn = Double(L) * 4 * Double(C) * Double(T + 1) / 2
            let flopsPerToken = 3 * (2 * weights + attn)  // backward = 2 x forward
            // Each timed step is followed by a short sgemm probe (outside the step's time), and
            // the MFU is taken per step against the probe next to it: the machine's speed moves
            // within a run, and one sgemm figure taken apart from the steps moves the MFU with it.
            var times: [Double] = [], peaks: [Double] = [], probes: [Double] = [], cpuTimes: [Double] = []
            var last = Date(), lastCPU = processCPUSeconds()
            let tokensPerStep = Double(cfg.train.batchSize * T)
            trainer.beforeStep = { step in
                let now = Date(), nowCPU = processCPUSeconds()
                if step > 3 {
                    times.append(now.timeIntervalSince(last))
                    cpuTimes.append(nowCPU - lastCPU)
                    peaks.append(measuredSgemmGFLOPs(repeats: 2))
                    probes.append(FMAThroughput.measure(seconds: 0.005, repeats: 3).gflops)
                }
                last = Date(); lastCPU = processCPUSeconds()
            }
            _ = try? trainer.run()
            let stepSec = median(times), peak = median(peaks)
            let achieved = flopsPerToken * tokensPerStep / stepSec / 1e9
            let mfu = median(zip(times, peaks).map { flopsPerToken * tokensPerStep / $0 / 1e9 / $1 })
            // Against the hardware: FLOPs per core-second of the step's CPU time (the wall clock
            // also counts waits for a core on a shared machine) over the FMA probe beside it.
            let mfuHW = median(zip(cpuTimes, probes).map { flopsPerToken * tokensPerStep / $0 / 1e9 / $1 })
            let fields: [String] = [
                "\"config\":\"\(config)\"", "\"parameters\":\(trainer.workload.params.count)",
                "\"attention\":\"\(m.attention.name)\"", "\"threads\":\(cfg.train.threads)",
                "\"batch\":\(cfg.train.batchSize)", "\"context\":\(T)",
                json("tokens_per_s", tokensPerStep / stepSec, "%.1f"),
                json("step_seconds", stepSec, "%.4f"), json("model_gflops", achieved, "%.2f"),
                json("sgemm_gflops", peak, "%.2f"), json("mfu", mfu, "%.3f"),
                json("fma_probe_gflops", median(probes), "%.2f"), json("mfu_hw", mfuHW, "%.3f"),
                "\"blas_core\":\"\(blasCoreName())\"",
                // This process's VmHWM, what the trainer counts it holds, and the step per CPU second.
                json("peak_rss_mb", peakRSSMegabytes(), "%.1f"),
                json("estimate_mb", Double(trainer.memoryBytes) / 1e6, "%.1f"),
                json("cpu_step_seconds", median(cpuTimes), "%.4f"),
                json("model_gflops_cpu", flopsPerToken * tokensPerStep / median(cpuTimes) / 1e9, "%.2f"),
            ]
            print("{" + fields.joined(separator: ",") + "}")
        } catch { fail(error) }
    }
}

/// sgemm of every kernel family this CPU supports, each in its own process (OpenBLAS reads
/// OPENBLAS_CORETYPE only when it loads), next to the library's own pick.
struct BenchBLAS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blas",
        abstract: "sgemm GFLOP/s (one thread) and the self-test of each OpenBLAS kernel family this CPU supports.")

    func run() throws {
        let candidates: [String?] = [nil] + BLASKernelCandidate.supported(by: CPUInfo.flags)
        for r in probeBLASKernels(candidates) {
            let status = r.rejection.map { "\"rejected: \($0)\"" } ?? "\"ok\""
            print(
                String(
                    format: "{\"provider\":\"%@\",\"library\":\"%@\",\"kernels\":\"%@\",\"loaded\":\"%@\","
                        + "\"gflops\":%.2f,\"self_test_error\":%.3g,\"status\":%@}",
                    BLASLibrary.config, BLASLibrary.path, r.requested, r.loaded, r.gflops, r.selfTestError,
                    status))
        }
    }
}
