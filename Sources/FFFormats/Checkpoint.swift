import Foundation
import FFModel

/// What `trainer_state.json` records: enough to continue a run exactly, and the checksums that
/// prove the checkpoint's files are the ones written.
public struct TrainerState: Codable, Sendable, Equatable {
    public var formatVersion = 1
    /// Optimizer steps completed.
    public var step: Int
    public var epoch: Int
    /// Training samples consumed so far by all ranks (step × global batch).
    public var samplesSeen: Int
    public var globalBatch: Int
    public var worldSize: Int
    public var shards: Int
    /// The seed; every random stream is counter-based on (seed, step, sample), so it is the whole
    /// RNG state.
    public var seed: UInt64
    public var configHash: String
    public var modelConfig: String
    /// File name -> sha256 (hex) of every other file of the checkpoint.
    public var files: [String: String]
    /// The training recipe (`TrainConfig.recipe`) compared on resume; nil in checkpoints written
    /// before it was recorded.
    public var recipe: [String: String]? = nil

    public init(
        step: Int, epoch: Int, samplesSeen: Int, globalBatch: Int, worldSize: Int, shards: Int, seed: UInt64,
        configHash: String, modelConfig: String, files: [String: String], recipe: [String: String]? = nil
    ) {
        self.step = step; self.epoch = epoch; self.samplesSeen = samplesSeen; self.globalBatch = globalBatch
        self.worldSize = worldSize; self.shards = shards; self.seed = seed; self.configHash = configHash
        self.modelConfig = modelConfig; self.files = files; self.recipe = recipe
    }

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case step, epoch
        case samplesSeen = "samples_seen"
        case globalBatch = "global_batch"
        case worldSize = "world_size"
        case shards, seed
        case configHash = "config_hash"
        case modelConfig = "model_config"
        case files
        case recipe
    }
}

/// Sharded checkpoints in the Hugging Face layout:
/// `step-NNNNNNNN/model-0000i-of-0000N.safetensors`, `model.safetensors.index.json`,
/// `optimizer-0000i-of-0000N.safetensors` (AdamW `exp_avg`, `exp_avg_sq` of that shard's tensors),
/// `trainer_state.json` (written last: a folder without it was never committed), and `latest`.
public enum Checkpoint {
    public static let stateFile = "trainer_state.json"
    public static let indexFile = "model.safetensors.index.json"

    public static func folderName(step: Int) -> String { String(format: "step-%08d", step) }
    public static func modelFile(_ i: Int, of n: Int) -> String {
        String(format: "model-%05d-of-%05d.safetensors", i + 1, n)
    }
    public static func optimizerFile(_ i: Int, of n: Int) -> String {
        String(format: "optimizer-%05d-of-%05d.safetensors", i + 1, n)
    }

    /// Splits the tensors, in layout order, into `n` contiguous groups of about equal size; the
    /// same split serves checkpoint shards and ZeRO-1 partitions.
    public static func partition(_ layout: ParameterLayout, into n: Int) -> [Range<Int>] {
        // Greedy: each group takes tensors until it holds its fair share of what is left, so one
        // huge tensor (the embedding) does not leave the next groups nearly empty.
        var groups: [Range<Int>] = []
        var start = 0, acc = 0, left = layout.count
        for (i, t) in layout.tensors.enumerated() {
            acc += t.count
            let groupsLeft = n - groups.count
            let tensorsLeft = layout.tensors.count - i - 1
            if groupsLeft > 1 && (acc * groupsLeft >= left || tensorsLeft < groupsLeft) {
                groups.append(start..<(i + 1))
                start = i + 1; left -= acc; acc = 0
            }
        }
        groups.append(start..<layout.tensors.count)
        while groups.count < n { groups.append(layout.tensors.count..<layout.tensors.count) }
        return groups
    }

    /// Never writes into a committed checkpoint; clears what a save that never committed left.
    public static func prepareFolder(_ dir: String) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: (dir as NSString).appendingPathComponent(stateFile)) {
            throw CheckpointError(
                "\(dir): already a committed checkpoint; refusing to write into it "
                    + "(resume from it, or move it aside)")
        }
        if fm.fileExists(atPath: dir) { try fm.removeItem(atPath: dir) }
    }

    /// Tensor `t` of a buffer that holds the elements from `base` on.
    public static func view(
        _ t: TensorInfo, _ buf: FlatBuffer, base: Int = 0, suffix: String = ""
    ) -> Safetensors.Tensor {
        precondition(
            t.offset - base >= 0 && t.offset - base + t.count <= buf.count,
            "tensor \(t.name) outside the "
                + "buffer")
        return Safetensors.Tensor(
            name: t.name + suffix, shape: t.shape,
            data: UnsafeBufferPointer(start: buf.pointer + t.offset - base, count: t.count))
    }

    /// Committed checkpoint folders under `root`, oldest first.
    public static func committed(root: String) -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("step-"), let s = Int(name.dropFirst(5)) else { return nil }
            let p = (root as NSString).appendingPathComponent(name)
            return FileManager.default.fileExists(atPath: (p as NSString).appendingPathComponent(stateFile))
                ? (s, p) : nil
        }.sorted { $0.0 < $1.0 }
    }

    /// Removes uncommitted folders, and committed ones beyond the newest `keepLast` except every
    /// `keepEvery`-th step (0: none kept for that reason).
    public static func prune(root: String, keepLast: Int, keepEvery: Int) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        let done = committed(root: root)
        let keep = Set(done.suffix(max(keepLast, 1)).map { $0.step })
        for name in names where name.hasPrefix("step-") {
            let p = (root as NSString).appendingPathComponent(name)
            guard let s = Int(name.dropFirst(5)) else { continue }
            let isCommitted = done.contains { $0.step == s }
            if isCommitted && (keep.contains(s) || (keepEvery > 0 && s % keepEvery == 0)) { continue }
            if !isCommitted && s >= (done.last?.step ?? -1) { continue }  // may be in progress elsewhere
            try? FileManager.default.removeItem(atPath: p)
        }
    }

    /// Removes folders that were never committed (no trainer_state.json): left by a crash mid-save.
    public static func cleanUncommitted(root: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        for name in names where name.hasPrefix("step-") {
            let p = (root as NSString).appendingPathComponent(name)
            if !FileManager.default.fileExists(atPath: (p as NSString).appendingPathComponent(stateFile)) {
                try? FileManager.default.removeItem(atPath: p)
            }
        }
    }

    /// Reads and verifies a checkpoint folder: the state, every file's checksum, then the weights and
    /// optimizer moments by tensor name into the given buffers (any number of shards).
    /// `m` and `v` hold the optimizer state of the elements `owned` (all, or a ZeRO-1 partition,
    /// which may start and end inside tensors): each moment tensor's overlap with it is kept, the
    /// rest is checked but not kept.
    public static func load(
        _ dir: String, layout: ParameterLayout, params: FlatBuffer, m: FlatBuffer?, v: FlatBuffer?,
        ema: FlatBuffer? = nil, owned: Range<Int>? = nil
    ) throws -> TrainerState {
        let owned = owned ?? 0..<layout.count
        let state = try readState(dir)
        try verify(dir, state)
        try checkIndex(dir, state, layout: layout)
        var seen = Set<String>()
        for i in 0..<state.shards {
            for (file, isOptimizer) in [
                (modelFile(i, of: state.shards), false), (optimizerFile(i, of: state.shards), true),
            ] {
                if isOptimizer && m == nil { continue }
                let path = (dir as NSString).appendingPathComponent(file)
                let (tensors, _) = try Safetensors.read(path: path)
                for (name, t) in tensors.sorted(by: { $0.key < $1.key }) {
                    var base = name, target = params, full = !isOptimizer
                    if isOptimizer {
                        if name.hasSuffix(".ema") {
                            // The weight average is replicated: every rank keeps all of it.
                            base = String(name.dropLast(4)); full = true
                            guard let ema else { seen.insert(name); continue }
                            target = ema
                        } else if name.hasSuffix(".exp_avg_sq") {
                            base = String(name.dropLast(11)); target = v!
                        } else if name.hasSuffix(".exp_avg") {
                            base = String(name.dropLast(8)); target = m!
                        } else {
                            throw CheckpointError("\(path): unexpected tensor '\(name)' in an optimizer shard")
                        }
                    }
                    guard let info = layout[base] else {
                        throw CheckpointError(
                            "\(path): tensor '\(base)' is not part of this model (does the config "
                                + "match the checkpoint?)")
                    }
                    guard info.shape == t.shape else {
                        throw CheckpointError(
                            "\(path): tensor '\(base)' has shape \(t.shape), this model needs "
                                + "\(info.shape)")
                    }
                    seen.insert(name)
                    let lo = full ? info.offset : max(info.offset, owned.lowerBound)
                    let hi = full ? info.offset + info.count : min(info.offset + info.count, owned.upperBound)
                    guard lo < hi else { continue }
                    let at = full ? lo : lo - owned.lowerBound
                    t.values.withUnsafeBufferPointer {
                        (target.pointer + at).update(from: $0.baseAddress! + (lo - info.offset), count: hi - lo)
                    }
                }
            }
        }
        for t in layout.tensors {
            for name in [t.name] + (m == nil ? [] : [t.name + ".exp_avg", t.name + ".exp_avg_sq"])
                + (ema == nil ? [] : [t.name + ".ema"])
            where !seen.contains(name) {
                throw CheckpointError("\(dir): tensor '\(name)' missing from the checkpoint (does the config match?)")
            }
        }
        return state
    }

    /// Reads `trainer_state.json` and checks every field a reader relies on (it may come from
    /// someone else: sizes are bounded, file names must be plain names inside the folder).
    public static func readState(_ dir: String) throws -> TrainerState {
        let path = (dir as NSString).appendingPathComponent(stateFile)
        let attrs = try? FileManager.default.attributesOfItem(atPath: path)
        guard let size = attrs?[.size] as? Int else {
            throw CheckpointError(
                "\(dir): not a committed checkpoint (no "
                    + "\(stateFile))")
        }
        guard size <= 64 << 20 else { throw FormatError("\(path): \(size) bytes, too large for a trainer state") }
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError("\(path): cannot read") }
        return try parseState(data, path: path)
    }

    /// Decodes and validates a trainer state (`path` names it in errors).
    public static func parseState(_ data: Data, path: String) throws -> TrainerState {
        try checkStateFields(data, path: path)
        let state: TrainerState
        do { state = try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw FormatError("\(path): unreadable trainer state: \(error)")
        }
        func bad(_ m: String) -> FormatError { FormatError("\(path): invalid trainer state: \(m)") }
        guard state.formatVersion == 1 else { throw bad("format_version \(state.formatVersion), this build reads 1") }
        guard state.step >= 0, state.epoch >= 0, state.samplesSeen >= 0 else {
            throw bad(
                "negative step, epoch or "
                    + "samples_seen")
        }
        guard (1...1_000_000).contains(state.globalBatch) else {
            throw bad(
                "global_batch \(state.globalBatch) out of "
                    + "range")
        }
        guard (1...100_000).contains(state.worldSize), (1...100_000).contains(state.shards) else {
            throw bad("world_size \(state.worldSize) / shards \(state.shards) out of range")
        }
        for name in state.files.keys {
            guard !name.isEmpty, !name.contains("/"), name != ".", name != "..", !name.contains("\0") else {
                throw bad("file name '\(name)' is not a plain name inside the checkpoint folder")
            }
        }
        return state
    }

    /// Integer fields of a trainer state and their ranges (2^53: the integers a double holds).
    static let stateIntegers: [(key: String, low: Double, high: Double, range: String)] = [
        ("format_version", 0, 0x1p53, "0 ... 2^53"), ("step", 0, 0x1p53, "0 ... 2^53"),
        ("epoch", 0, 0x1p53, "0 ... 2^53"), ("samples_seen", 0, 0x1p53, "0 ... 2^53"),
        ("global_batch", 1, 1e6, "1 ... 1000000"), ("world_size", 1, 1e5, "1 ... 100000"),
        ("shards", 1, 1e5, "1 ... 100000"), ("seed", 0, 0x1p64 - 2048, "0 ... 2^64 - 2048"),
    ]

    /// Names the field of a trainer state that is absent, of the wrong type or out of range
    /// (the decoder would only say that the JSON is invalid).
    static func checkStateFields(_ data: Data, path: String) throws {
        func bad(_ m: String) -> FormatError { FormatError("\(path): invalid trainer state: \(m)") }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw FormatError("\(path): unreadable trainer state: not a JSON object")
        }
        for f in stateIntegers {
            guard let v = obj[f.key] else { throw bad("\(f.key) missing") }
            guard let n = v as? NSNumber, !(v is String) else { throw bad("\(f.key): expected an integer, got \(v)") }
            let d = n.doubleValue
            let text = rawNumber(data, key: f.key) ?? "\(d)"
            guard d >= f.low && d <= f.high else {
                throw FormatError("\(path): \(f.key): \(text) is out of range (\(f.range))")
            }
            guard d == d.rounded() else { throw FormatError("\(path): \(f.key): \(text) is not an integer") }
        }
        for key in ["config_hash", "model_config", "files"] where obj[key] == nil { throw bad("\(key) missing") }
    }

    /// The number as written after `"key":` (for messages: JSON parsers round 1e30 to 1e+30).
    static func rawNumber(_ data: Data, key: String) -> String? {
        let text = String(decoding: data.prefix(1 << 20), as: UTF8.self)
        guard let r = text.range(of: "\"\(key)\"\\s*:\\s*-?[0-9][0-9.eE+-]*", options: .regularExpression) else {
            return nil
        }
        return text[r].split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces)
    }

    /// Checks `model.safetensors.index.json`: every tensor of the model is mapped to one of this
    /// checkpoint's model shards.
    static func checkIndex(_ dir: String, _ state: TrainerState, layout: ParameterLayout) throws {
        let path = (dir as NSString).appendingPathComponent(indexFile)
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError("\(path): missing") }
        let map = try parseIndex(data, path: path, shards: state.shards)
        for t in layout.tensors where map[t.name] == nil {
            throw FormatError(
                "\(path): weight_map has no entry for '\(t.name)' (does the config match the checkpoint?)")
        }
    }

    /// Decodes an index file's weight_map, accepting only this checkpoint's shard names.
    public static func parseIndex(_ data: Data, path: String, shards: Int) throws -> [String: String] {
        guard data.count <= 64 << 20,
            let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let map = obj["weight_map"] as? [String: String]
        else {
            throw FormatError("\(path): not a safetensors index (a JSON object with a weight_map of strings)")
        }
        let allowed = Set((0..<min(shards, 100_000)).map { modelFile($0, of: shards) })
        for (tensor, file) in map where !allowed.contains(file) {
            throw FormatError(
                "\(path): tensor '\(tensor)' maps to '\(file)', not one of this checkpoint's \(shards) "
                    + "model shards")
        }
        return map
    }

    /// Checks that every file the state lists exists and has its recorded sha256.
    public static func verify(_ dir: String, _ state: TrainerState) throws {
        for (file, sum) in state.files.sorted(by: { $0.key < $1.key }) {
            let path = (dir as NSString).appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: path) else {
                throw CheckpointError("\(path): missing (listed in \(stateFile))")
            }
            let actual = try FileDigest.sha256(file: path)
            guard actual == sum else {
                throw CheckpointError(
                    "\(path): checksum mismatch: sha256 \(actual), \(stateFile) records \(sum); the "
                        + "file is corrupt or was changed")
            }
        }
        for i in 0..<state.shards where state.files[modelFile(i, of: state.shards)] == nil {
            throw CheckpointError("\(dir): \(stateFile) does not list \(modelFile(i, of: state.shards))")
        }
    }
}

/// fsync on a directory, so a rename inside it survives a power cut.
public func fsyncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
}

extension Checkpoint {
    /// A checkpoint's summary for `inspect`.
    public struct Summary: Sendable {
        public var state: TrainerState
        public var tensors: [(name: String, shape: [Int], file: String)]
        public var parameters: Int
        public var files: [(name: String, bytes: Int, checksumOK: Bool)]
    }

    /// Reads a checkpoint's state and index, and checks every file's checksum (without throwing
    /// on a mismatch: the summary says which file is bad).
    public static func inspect(_ dir: String) throws -> Summary {
        let state = try readState(dir)
        var files: [(String, Int, Bool)] = []
        for (f, sum) in state.files.sorted(by: { $0.key < $1.key }) {
            let p = (dir as NSString).appendingPathComponent(f)
            let size = (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? -1
            let ok = size >= 0 && (try? FileDigest.sha256(file: p)) == sum
            files.append((f, size, ok))
        }
        var tensors: [(String, [Int], String)] = []
        var parameters = 0
        for i in 0..<state.shards {
            let f = modelFile(i, of: state.shards)
            let p = (dir as NSString).appendingPathComponent(f)
            guard let (t, _) = try? Safetensors.read(path: p) else { continue }
            for (name, x) in t.sorted(by: { $0.key < $1.key }) {
                tensors.append((name, x.shape, f)); parameters += x.values.count
            }
        }
        return Summary(state: state, tensors: tensors, parameters: parameters, files: files)
    }

    /// Writes `out/model.safetensors` (every tensor of the checkpoint in one file) and
    /// `out/config.json` (the model configuration), after verifying the checksums.
    public static func export(_ dir: String, to out: String, averaged: Bool = false) throws {
        let state = try readState(dir)
        try verify(dir, state)
        var names: [String] = [], shapes: [[Int]] = [], values: [Float] = [], offsets: [Int] = []
        for i in 0..<state.shards {
            // The weight average (EMA) lives beside the AdamW moments, as NAME.ema.
            let file = averaged ? optimizerFile(i, of: state.shards) : modelFile(i, of: state.shards)
            let (t, _) = try Safetensors.read(path: (dir as NSString).appendingPathComponent(file))
            for (name, x) in t.sorted(by: { $0.key < $1.key }) where !averaged || name.hasSuffix(".ema") {
                names.append(averaged ? String(name.dropLast(4)) : name)
                shapes.append(x.shape); offsets.append(values.count); values += x.values
            }
        }
        if averaged && names.isEmpty {
            throw CheckpointError("\(dir): no weight average in this checkpoint (the run had train.ema: 0)")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try values.withUnsafeBufferPointer { buf in
            let tensors = names.indices.map { k in
                Safetensors.Tensor(
                    name: names[k], shape: shapes[k],
                    data: UnsafeBufferPointer(rebasing: buf[offsets[k]..<(offsets[k] + shapes[k].reduce(1, *))]))
            }
            try Safetensors.write(
                tensors, metadata: ["format": "pt", "config": state.modelConfig],
                to: (out as NSString).appendingPathComponent("model.safetensors"))
        }
        try writeAtomically(Data(state.modelConfig.utf8), to: (out as NSString).appendingPathComponent("config.json"))
    }
}
