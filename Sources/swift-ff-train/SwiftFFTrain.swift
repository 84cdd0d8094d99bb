import FFFormats
import ArgumentParser
import Foundation
import FFData
import FFDistributed
import FFTrain

@main
struct SwiftFFTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swift-ff-train",
        abstract: "Train FourierFormer (and softmax) Transformers on CPUs, in one process or over MPI.",
        subcommands: [
            Train.self, Prepare.self, Eval.self, Generate.self, Analyze.self, Plot.self, Export.self, Inspect.self,
            Bench.self, Fuzz.self,
        ],
        defaultSubcommand: Train.self)

    static func main() {
        checkCPUFeatures()
        ensureFastBLASKernels()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

/// Prints to standard error and exits non-zero: the one way a command reports a failure. Under
/// MPI, ranks wait (briefly) for each other first, so that every rank's message gets out before
/// mpirun tears the job down.
func fail(_ error: Error, rank: Int? = nil, comm: Communicator? = nil) -> Never {
    let prefix = rank.map { "rank \($0): " } ?? ""
    FileHandle.standardError.write(Data("\(prefix)error: \(error)\n".utf8))
    (comm as? MPICommunicator)?.barrier(within: 2)
    exit(1)
}

/// MPI when started by mpirun (or another MPI launcher), else a world of one.
func makeCommunicator() -> Communicator {
    guard MPICommunicator.launchedByMPI else { return SingleProcess() }
    do { return try MPICommunicator() } catch { fail(error) }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", t / 60 % 60))m" }
    if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
    return "\(t)s"
}

/// "valid ppl 186.35" or "test top-1 91.20% top-5 99.80%": the headline figures of an evaluation.
func headline(_ r: EvalResult) -> String {
    if let top1 = r.top1, let top5 = r.top5 {
        return String(format: "%@ top-1 %.2f%% top-5 %.2f%%", r.split, 100 * top1, 100 * top5)
    }
    let bpb = r.bitsPerByte.map { String(format: " (%.4f bits/byte)", $0) } ?? ""
    return String(format: "%@ ppl %.2f", r.split, r.perplexity ?? .nan) + bpb
}

/// Byte-level runs: bits per byte of a step's loss is loss / ln 2 (set when training starts).
nonisolated(unsafe) var stepBitsPerNat: Double?

/// Progress lines for rank 0.
func printEvent(_ e: TrainEvent) {
    switch e {
    case .started(let s):
        print(
            "swift-ff-train: \(s.attention) attention, \(s.parameters) parameters, \(s.data), \(s.worldSize) "
                + "rank(s) x \(s.threadLayout), \(s.steps) steps x \(s.unitsPerStep) \(s.unit); "
                + "run folder \(s.runDirectory)")
        let mb = { (b: [Int]) in b.map { String(format: "%.1f", Double($0) / 1e6) }.joined(separator: ", ") }
        print(
            "memory per rank (MB): \(mb(s.memoryPerRank)) in all, of which AdamW moments "
                + "\(mb(s.optimizerBytesPerRank))\(s.zero1 ? " (ZeRO-1 partitions)" : "")")
    case .step(let m):
        let health = m.attentionRowSum.map { String(format: "%.3f", $0) }.joined(separator: ",")
        let rate =
            m.imagesPerSecond.map { String(format: "%.1f img/s", $0) }
            ?? String(format: "%.0f tok/s", m.tokensPerSecond ?? .nan)
        print(
            String(
                format: "step %5d/%d | loss %.4f | lr %.2e | grad %.3f | %@ | %@ elapsed, ETA %@ | attn row-sum %@",
                m.step, m.steps, m.loss, m.lr, m.gradNorm, rate,
                formatDuration(m.elapsedSeconds), formatDuration(m.etaSeconds), health)
                + (stepBitsPerNat.map { String(format: " | %.4f bits/byte", m.loss * $0) } ?? ""))
    case .evaluated(let r):
        var line: String
        if let top1 = r.top1, let top5 = r.top5 {
            line = String(
                format: "eval step %d | %@ loss %.4f | top-1 %.2f%% | top-5 %.2f%% (%d images)", r.step, r.split,
                r.loss,
                100 * top1, 100 * top5, r.images ?? 0)
        } else {
            line = String(
                format: "eval step %d | %@ loss %.4f | %@ perplexity %.2f (%d tokens)", r.step, r.split, r.loss,
                r.split,
                r.perplexity ?? .nan, r.tokens ?? 0)
        }
        if r.ema == true { line += " | EMA weights" }
        if let s = r.stride { line += " | stride \(s)" }
        if let b = r.bitsPerByte { line += String(format: " | %.4f bits/byte", b) }
        if let u = r.unigramPerplexity { line += String(format: " | unigram perplexity %.2f", u) }
        print(line)
    case .skipped(let step, let reason):
        print("warning: step \(step): \(reason)")
    case .calibrated(let r):
        print(
            "R set from the data (r_init: auto), per layer: "
                + r.map { String(format: "%.3f", $0) }.joined(separator: ", "))
    case .sampled(let s):
        print("sample step \(s.step): \(s.prompt)\(s.text)")
    case .collapse(let c):
        print("warning: step \(c.step): \(c.message)")
    case .checkpointed(let path, let seconds, let bytes):
        print(String(format: "checkpoint %@ committed: %.1f MB in %.2f s", path, Double(bytes) / 1e6, seconds))
    case .finished(let s):
        var parts = [s.attention] + ([s.valid].compactMap { $0 } + [s.test]).map(headline)
        if let u = s.test.unigramPerplexity { parts.append(String(format: "unigram test ppl %.2f", u)) }
        if let r = s.imagesPerSecond { parts.append(String(format: "%.1f img/s", r)) }
        if let r = s.tokensPerSecond { parts.append(String(format: "%.0f tok/s", r)) }
        parts += [formatDuration(s.wallSeconds), "weights \(s.weightsPath)"]
        print("done: " + parts.joined(separator: " | "))
    }
    fflush(stdout)
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model from a YAML config (the default command).")

    @Option(name: .long, help: "The YAML config file.")
    var config: String

    @Option(name: .customLong("set"), help: "Override a config value: key.path=value (repeatable).")
    var overrides: [String] = []

    @Option(
        name: .long,
        help: ArgumentHelp(
            "'auto': continue from the run's newest verified checkpoint (or start fresh if there is none); "
                + "'fresh': start over, moving existing checkpoints aside; or a checkpoint folder."))
    var resume: String?

    @Flag(
        name: .customLong("allow-config-change"),
        help: "Resume although the training recipe (learning rate, schedule, dropout, ...) changed.")
    var allowConfigChange = false

    @Option(name: .customLong("debug-kill-rank"), help: .hidden) var debugKillRank: Int?
    @Option(name: .customLong("debug-kill-step"), help: .hidden) var debugKillSteps: [Int] = []
    /// With it, each kill step fires once only (a file PATH.stepN marks it), so a restarted job
    /// that runs the step again survives it.
    @Option(name: .customLong("debug-kill-marker"), help: .hidden) var debugKillMarker: String?
    @Option(name: .customLong("debug-stall-rank"), help: .hidden) var debugStallRank: Int?
    @Option(name: .customLong("debug-stall-step"), help: .hidden) var debugStallStep: Int = 1
    @Option(name: .customLong("debug-stall-seconds"), help: .hidden) var debugStallSeconds: Double = 3600
    /// Where the stall happens: `step` (its start), `backward` (after the forward passes) or
    /// `collective` (right after entering the step's first collective).
    @Option(name: .customLong("debug-stall-at"), help: .hidden) var debugStallAt = "step"
    @Option(name: .customLong("debug-log-samples"), help: .hidden) var debugLogSamples: String?
    @Option(name: .customLong("debug-kill-in-checkpoint"), help: .hidden) var debugKillInCheckpoint: Int?
    @Option(name: .customLong("debug-stop-at-step"), help: .hidden) var debugStopAtStep: Int?
    @Option(name: .customLong("debug-nan-rank"), help: .hidden) var debugNaNRank: Int?
    @Option(name: .customLong("debug-nan-steps"), help: .hidden) var debugNaNSteps: [Int] = []

    func run() throws {
        let comm = makeCommunicator()
        let mpi = comm as? MPICommunicator
        let rank = comm.size > 1 ? comm.rank : nil
        do {
            let cfg = try agree(comm, "reading the config") { try TrainConfig.load(path: config, overrides: overrides) }
            try checkSameConfig(comm, cfg)
            mpi?.watchdogSeconds = cfg.dist.watchdogSeconds
            if let mpi {
                // In the run folder, which every host must share for checkpoints anyway.
                let folder = (cfg.runDirectory as NSString).appendingPathComponent("heartbeats")
                try agree(comm, "creating the watchdog's heartbeat folder") { try mpi.publishHeartbeats(in: folder) }
            }
            let trainer = try agree(comm, "start-up") { try Trainer(config: cfg, comm: comm) }
            let lm = trainer.workload as? LanguageModelWorkload
            stepBitsPerNat = lm?.vocab.tokenizer == .byte ? 1 / log(2) : nil
            if comm.isRoot, let lm { try keepVocabulary(lm.vocab, in: cfg.runDirectory) }
            if try startOrResume(trainer, cfg, comm) { mpi?.finalize(); return }
            installStopHandlers()
            trainer.stopRequested = { stopSignal != 0 }
            var currentStep = 0
            mpi?.where_ = { "step \(currentStep)" }
            let (killRank, killStep, stallRank, stallStep, stallSeconds, stopAt) =
                (
                    debugKillRank, debugKillSteps.isEmpty ? [1] : debugKillSteps, debugStallRank, debugStallStep,
                    debugStallSeconds, debugStopAtStep
                )
            let stallAt = debugStallAt, marker = debugKillMarker
            if comm.rank == stallRank && stallAt == "collective" {
                var stalled = false
                mpi?.afterEnter = { _ in
                    if currentStep == stallStep && !stalled { stalled = true; stall(stallSeconds) }
                }
            }
            trainer.beforeStep = { step in
                currentStep = step
                if comm.rank == killRank && killStep.contains(step) && firstKill(marker, step) { raise(SIGKILL) }
                if comm.rank == stallRank && step == stallStep && stallAt == "step" { stall(stallSeconds) }
                // As if the last rank alone got SIGTERM during this step: the vote stops every rank.
                if step == stopAt && comm.rank == comm.size - 1 { stopSignal = 1 }
            }
            if let nanRank = debugNaNRank {
                // A NaN in one rank's gradient, as an overflow in its backward would leave.
                let steps = Set(debugNaNSteps)
                trainer.beforeBackward = { step in
                    if comm.rank == nanRank && steps.contains(step) { trainer.workload.grads[0] = .nan }
                }
            }
            if comm.rank == stallRank && stallAt == "backward" {
                let previous = trainer.beforeBackward
                trainer.beforeBackward = { step in
                    previous?(step)
                    if step == stallStep { stall(stallSeconds) }
                }
            }
            if let step = debugKillInCheckpoint {
                // Dies after the shards of that step's checkpoint are written, before the commit.
                trainer.checkpointHook = { s in if s == step && comm.isRoot { raise(SIGKILL) } }
            }
            if let prefix = debugLogSamples {
                // One line per micro-step: "step epoch sample sample ...", one file per rank.
                let path = "\(prefix).rank\(comm.rank)"
                FileManager.default.createFile(atPath: path, contents: nil)
                let handle = FileHandle(forWritingAtPath: path)
                trainer.onSamples = { step, epoch, samples in
                    handle?.write(
                        Data(("\(step) \(epoch) " + samples.map(String.init).joined(separator: " ") + "\n").utf8))
                }
            }
            do {
                try trainer.run(onEvent: comm.isRoot ? printEvent : { _ in })
            } catch let stopped as TrainingStopped {
                if comm.isRoot { print("swift-ff-train: \(stopped)") }
            }
            mpi?.finalize()
        } catch {
            fail(error, rank: rank, comm: comm)
        }
    }
}

extension Train {
    /// Settles the start (fresh, or which checkpoint) and prints what rank 0 decided; true when
    /// the run is already complete and there is nothing to do.
    func startOrResume(_ trainer: Trainer, _ cfg: TrainConfig, _ comm: Communicator) throws -> Bool {
        let t0 = Date()
        let outcome = try agree(comm, "resuming") {
            try trainer.resume(ResumeRequest(resume), allowConfigChange: allowConfigChange)
        }
        guard comm.isRoot else { return outcome.finished }
        for note in outcome.notes { print(note) }
        if outcome.finished {
            print(
                "swift-ff-train: run \(cfg.runDirectory) is complete (\(cfg.train.steps) steps, summary.json "
                    + "written); nothing to do. Raise train.steps to train further.")
        } else if let dir = outcome.folder {
            print(
                String(
                    format: "resuming from %@ at step %d (verified and loaded in %.2f s)", dir, trainer.startStep,
                    Date().timeIntervalSince(t0)))
        } else if resume == "auto" {
            print("no committed checkpoint under \(cfg.checkpointDirectory): starting fresh")
        }
        fflush(stdout)
        return outcome.finished
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Valid and test perplexity (language models) or loss, "
            + "top-1 and top-5 (images) of saved weights.")

    @Option(name: .long, help: "The YAML config the weights were trained with.")
    var config: String

    @Option(name: .customLong("set"), help: "Override a config value: key.path=value (repeatable).")
    var overrides: [String] = []

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Weights: a .safetensors file, a checkpoint folder, or a run folder "
                + "(default: the run's model.safetensors)."))
    var weights: String?

    @Option(name: .long, help: "Sliding-window stride (default: the context, i.e. independent segments).")
    var stride: Int?

    func run() throws {
        do {
            let cfg = try TrainConfig.load(path: config, overrides: overrides)
            let trainer = try Trainer(config: cfg)
            let saved = try SavedModel.locate(
                weights ?? (cfg.runDirectory as NSString).appendingPathComponent("model.safetensors"))
            try saved.load(layout: trainer.workload.layout, params: trainer.workload.params, ema: trainer.ema)
            if stride != nil && cfg.model.kind != .lm {
                throw ConfigError("--stride applies to language models (model.kind: lm)")
            }
            if let stride, stride < 1 || stride > cfg.model.context {
                throw ConfigError("--stride \(stride) must be between 1 and the context (\(cfg.model.context))")
            }
            if saved.step == nil {
                print(
                    "note: \(saved.path): the training step is unknown (no summary.json beside "
                        + "it); eval step 0")
            }
            for r in try trainer.evaluateSplits(step: saved.step ?? 0, stride: stride) { printEvent(.evaluated(r)) }
        } catch {
            fail(error)
        }
    }
}

/// Whether a debug kill at `step` fires: always without a marker, else once (the marker file
/// records it).
func firstKill(_ marker: String?, _ step: Int) -> Bool {
    guard let marker else { return true }
    let path = "\(marker).step\(step)"
    if FileManager.default.fileExists(atPath: path) { return false }
    return FileManager.default.createFile(atPath: path, contents: nil)
}

/// Hangs this process (fault injection), at most 4000 s, through signals (a hung rank stays hung
/// when the job's abort sends SIGTERM, which the stop handler catches).
func stall(_ seconds: Double) {
    let end = Date().addingTimeInterval(min(seconds, 4000))
    while Date() < end { usleep(UInt32(min(end.timeIntervalSinceNow, 1) * 1_000_000) + 1) }
}

/// Set by SIGTERM/SIGINT (what schedulers send before they pre-empt); the trainer polls it.
nonisolated(unsafe) var stopSignal: sig_atomic_t = 0

func installStopHandlers() {
    signal(SIGTERM) { _ in stopSignal = 1 }
    signal(SIGINT) { _ in stopSignal = 1 }
}
