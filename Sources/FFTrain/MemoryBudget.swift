import Foundation

/// What a model needs in memory, estimated from its config before anything is allocated, and
/// what the machine has: an absurd size is refused with a message instead of a crash in malloc.
public enum MemoryBudget {
    /// A lower bound on the bytes one rank holds for training: parameters, gradients, AdamW
    /// moments (and the weight average), the main activations of a micro-batch and the logits.
    /// In Double, so that absurd sizes cannot overflow. `tokens`: positions per sample;
    /// `outputs`: vocabulary or classes; `inputs`: floats per token entering the first layer
    /// (the patch window for a ViT; 0 for an LM, whose embedding is counted in `outputs`);
    /// `outputRows`: rows of logits held at once (all positions unless the output works by blocks).
    /// Threads that split the samples (`train.thread_split`) add a gradient buffer each and
    /// activations for the micro-batch once more (the model's own stay for evaluation).
    public static func estimate(
        _ config: TrainConfig, microBatch: Int, tokens: Int, outputs: Int,
        inputs: Int = 0, outputRows: Int? = nil
    ) -> Double {
        let m = config.model
        let (c, f, l) = (Double(m.dModel), Double(m.dFF), Double(m.layers))
        let perLayer = 4 * c * c + 2 * c * f + 9 * c + f
        let embeddings = Double(outputs) * c * (m.tieEmbeddings ? 1 : 2) + Double(tokens) * c + Double(inputs) * c
        let parameters = l * perLayer + embeddings
        let replicas = config.train.splitsSamples(microBatch: microBatch) ? Double(config.train.threads) : 0
        let copies = 4.0 + (config.train.ema > 0 ? 2 : 0) + replicas
        let positions = Double(microBatch) * Double(tokens)
        let logits = Double(outputRows ?? microBatch * tokens) * Double(outputs)
        let activations = (positions * l * (8 * c + 2 * f) + logits) * (replicas > 0 ? 2 : 1)
        let attention = m.attention == .softmax ? Double(config.train.threads) * Double(tokens) * Double(tokens) : 0
        return 4 * (copies * parameters + activations + attention)
    }

    /// Bytes this process may still use: MemAvailable, capped by the cgroup's limit (v2 or v1)
    /// minus its usage. Nil when neither can be read.
    public static func available() -> Double? {
        var best: Double?
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
            let kb = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
        {
            best = kb * 1024
        }
        let cgroups = [
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        ]
        for (limitFile, usageFile) in cgroups {
            guard let limit = number(limitFile), limit < 1e18 else { continue }
            let left = max(0, limit - (number(usageFile) ?? 0))
            best = min(best ?? left, left)
        }
        return best
    }

    static func number(_ path: String) -> Double? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
            Double($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// Ranks of this job on this machine (they share its memory).
    static var localRanks: Int {
        Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
    }

    /// Refuses a model whose estimate exceeds what the machine has left. `threadCopies`: the
    /// threads train copies of the model (`TrainConfig.Train.splitsSamples`), which the message
    /// then names as a saving.
    public static func check(
        _ bytes: Double, source: String, threadCopies: Bool = false, available: Double? = available()
    ) throws {
        guard let available else { return }
        let ranks = localRanks
        let need = bytes * Double(ranks)
        guard need > available else { return }
        let gb = { (x: Double) in String(format: x < 1e13 ? "%.1f" : "%.3g", x / 1e9) }
        let who = ranks > 1 ? " (\(gb(bytes)) GB per rank x \(ranks) ranks on this machine)" : ""
        let copies =
            threadCopies
            ? ", or set train.thread_split: operations (the threads' copies of the model take a gradient "
                + "buffer each and a second set of activations)"
            : ""
        throw ConfigError(
            "\(source): this model and batch need \(gb(need)) GB\(who), \(gb(available)) GB available; "
                + "reduce model.d_model, model.d_ff, model.layers, the context or train.batch_size\(copies)")
    }

    /// Refuses thread counts no machine here can use (a typo such as 2000 for 2).
    public static func checkThreads(
        _ threads: Int, source: String,
        cores: Int = ProcessInfo.processInfo.activeProcessorCount
    ) throws {
        let limit = min(1024, 4 * max(cores, 1))
        guard threads > limit else { return }
        throw ConfigError(
            "\(source): train.threads: \(threads) is more than this machine can use "
                + "(at most \(limit): 4 x its \(cores) cores, and never above 1024)")
    }
}
