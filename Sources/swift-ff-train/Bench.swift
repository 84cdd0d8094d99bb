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
        subcommands: [BenchAllreduce.self])
}

/// Times a raw MPI_Allreduce of the model's gradient bytes next to the bucketed `GradientSync`
/// of the same buffer (run under mpirun).
struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "allreduce",
        abstract: "Raw MPI_Allreduce vs the trainer's bucketed gradient sync, same bytes (under mpirun).")

    @Option(name: .long, help: "The config whose model (and dist.bucket_mb) to use.")
    var config: String

    @Option(name: .customLong("set"), help: "Override a config value: key.path=value (repeatable).")
    var overrides: [String] = []

    @Option(name: .long, help: "Timed repetitions.")
    var repeats: Int = 20

    func run() throws {
        let comm = makeCommunicator()
        do {
            let cfg = try TrainConfig.load(path: config, overrides: overrides)
            let vocab = try dataVocabularySize(cfg)
            let model = LanguageModel(config: cfg.model.lmConfig(vocabSize: vocab), maxBatch: 1, threads: 1)
            let n = model.grads.count
            let bytes = Double(n * 4)
            let sync = GradientSync(comm: comm, stages: model.gradientStages, bucketFloats: max(1, Int(cfg.dist.bucketMB * 262_144)))
            func time(_ body: () throws -> Void) throws -> Double {
                try body() // warm-up
                try comm.barrier()
                let t0 = Date()
                for _ in 0..<repeats { try body() }
                var t = Date().timeIntervalSince(t0) / Double(repeats)
                try comm.allreduceSum(&t, count: 1)
                return t / Double(comm.size)
            }
            let mpi = comm as? MPICommunicator
            let raw = try time {
                if let mpi { try mpi.rawAllreduceSum(model.grads.pointer, count: n) } else { try comm.allreduceSum(model.grads.pointer, count: n) }
            }
            let bucketed = try time {
                sync.begin(grads: model.grads.pointer)
                for k in 0..<model.gradientStages.count { try sync.stageDone(k) }
                try sync.finish()
            }
            if comm.isRoot {
                // Bus bandwidth of a ring allreduce: 2 (N-1)/N bytes per byte reduced.
                let factor = 2 * Double(comm.size - 1) / Double(max(comm.size, 1))
                print(String(format: "allreduce of %d floats (%.2f MB), %d ranks, %d buckets of %.2f MB", n, bytes / 1e6, comm.size, sync.buckets.count, cfg.dist.bucketMB))
                print(String(format: "raw MPI_Allreduce:      %8.3f ms  algbw %6.2f GB/s  busbw %6.2f GB/s", raw * 1e3, bytes / raw / 1e9, factor * bytes / raw / 1e9))
                print(String(format: "bucketed gradient sync: %8.3f ms  algbw %6.2f GB/s  busbw %6.2f GB/s", bucketed * 1e3, bytes / bucketed / 1e9, factor * bytes / bucketed / 1e9))
            }
            (comm as? MPICommunicator)?.finalize()
        } catch {
            fail(error, rank: comm.size > 1 ? comm.rank : nil)
        }
    }
}

/// The vocabulary size of a config's data (the model's shape depends on it).
func dataVocabularySize(_ cfg: TrainConfig) throws -> Int {
    try Vocabulary.read(from: cfg.dataPath("vocab.json")).size
}
