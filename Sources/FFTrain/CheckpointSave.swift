import Foundation
import FFDistributed
import FFFormats
import FFModel

extension Checkpoint {
    /// Every rank calls this at the same step; rank i writes shard i (and i + size, ...) and hashes
    /// what it wrote; rank 0 commits once it has every shard's digest and can see every file. `m`
    /// and `v` hold every element's moments, or under ZeRO-1 (`partitions[r]`: the elements rank r
    /// owns) this rank's only: each shard's writer then gathers its tensors' moments from their owners.
    public static func save(
        root: String, step: Int, state: TrainerState, layout: ParameterLayout,
        params: FlatBuffer, m: FlatBuffer, v: FlatBuffer, ema: FlatBuffer? = nil,
        partitions: [Range<Int>]?, comm: Communicator,
        keepLast: Int, keepEvery: Int, afterShards: (() -> Void)? = nil
    ) throws -> String {
        let dir = (root as NSString).appendingPathComponent(folderName(step: step))
        let n = state.shards
        try agree(comm, "creating checkpoint folder \(dir)") {
            if comm.isRoot { try prepareFolder(dir) }
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        let groups = partition(layout, into: n)
        var (shardM, shardV, stateBase) = (m, v, 0)
        if let partitions {
            precondition(n == comm.size, "a ZeRO-1 checkpoint has one shard per rank")
            let mine = elements(of: groups[comm.rank], layout)
            shardM = FlatBuffer(count: mine.count)
            shardV = FlatBuffer(count: mine.count)
            stateBase = mine.lowerBound
            let shards = groups.map { elements(of: $0, layout) }
            for (from, to) in [(m, shardM), (v, shardV)] {
                try gatherSlices(from, owned: partitions, into: to, wanted: shards, comm: comm)
            }
        }
        let written = try agree(comm, "writing checkpoint shards in \(dir)") { () -> ShardReport in
            var report = ShardReport(rank: comm.rank, host: hostName(), files: [:])
            for i in stride(from: comm.rank, to: n, by: comm.size) {
                let tensors = Array(layout.tensors[groups[i]])
                try Safetensors.write(
                    tensors.map { view($0, params) }, metadata: ["format": "pt"],
                    to: (dir as NSString).appendingPathComponent(modelFile(i, of: n)))
                try Safetensors.write(
                    tensors.flatMap { t -> [Safetensors.Tensor] in
                        [
                            view(t, shardM, base: stateBase, suffix: ".exp_avg"),
                            view(t, shardV, base: stateBase, suffix: ".exp_avg_sq"),
                        ]
                            + (ema.map { [view(t, $0, suffix: ".ema")] } ?? [])
                    }, metadata: ["format": "pt"], to: (dir as NSString).appendingPathComponent(optimizerFile(i, of: n))
                )
                // Each rank hashes its own shards, so the checksums of N shards take the time of one.
                for f in [modelFile(i, of: n), optimizerFile(i, of: n)] {
                    report.files[f] = try ShardReport.File(of: (dir as NSString).appendingPathComponent(f))
                }
            }
            return report
        }
        afterShards?()
        let reports = try gatherReports(written, comm: comm)
        // Rank 0 decides; every rank stops with the same message when the folder is not shared.
        let problem = try broadcastText(comm.isRoot ? unseenShards(dir, reports, shards: n) : nil, comm: comm)
        if let problem { throw CheckpointError(problem) }
        try agree(comm, "committing checkpoint \(dir)") {
            guard comm.isRoot else { return }
            try commit(
                dir: dir, root: root, step: step, state: state, layout: layout, groups: groups,
                reports: reports, keepLast: keepLast, keepEvery: keepEvery)
        }
        return dir
    }

    /// The elements of the tensors `group` (empty for an empty group).
    static func elements(of group: Range<Int>, _ layout: ParameterLayout) -> Range<Int> {
        guard let first = group.first, let last = group.last else { return 0..<0 }
        return layout.tensors[first].offset..<layout.tensors[last].range.upperBound
    }

    /// One exchange that gives rank r the elements `wanted[r]` of a buffer split by `owned`
    /// (rank j holds `owned[j]`, from its first element on in `from`): every owner sends each
    /// rank the overlap of its own range with that rank's wanted one.
    static func gatherSlices(
        _ from: FlatBuffer, owned: [Range<Int>], into out: FlatBuffer, wanted: [Range<Int>],
        comm: Communicator
    ) throws {
        let me = comm.rank, mine = owned[me], want = wanted[me]
        func overlap(_ a: Range<Int>, _ b: Range<Int>) -> Range<Int> {
            let lo = max(a.lowerBound, b.lowerBound), hi = min(a.upperBound, b.upperBound)
            return lo < hi ? lo..<hi : lo..<lo
        }
        let send = wanted.map { overlap(mine, $0) }, recv = owned.map { overlap($0, want) }
        try comm.alltoallv(
            from.pointer, sendCounts: send.map(\.count),
            sendOffsets: send.map { $0.isEmpty ? 0 : $0.lowerBound - mine.lowerBound },
            out.pointer, recvCounts: recv.map(\.count),
            recvOffsets: recv.map { $0.isEmpty ? 0 : $0.lowerBound - want.lowerBound })
    }

    /// Rank 0: the index, then `trainer_state.json` with every file's checksum, then `latest`.
    static func commit(
        dir: String, root: String, step: Int, state: TrainerState, layout: ParameterLayout,
        groups: [Range<Int>], reports: [ShardReport], keepLast: Int, keepEvery: Int
    ) throws {
        let n = state.shards
        var weightMap: [String: String] = [:]
        for (i, g) in groups.enumerated() { for t in layout.tensors[g] { weightMap[t.name] = modelFile(i, of: n) } }
        let index: [String: Any] = ["metadata": ["total_size": layout.count * 4], "weight_map": weightMap]
        let indexPath = (dir as NSString).appendingPathComponent(indexFile)
        try writeAtomically(
            try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys, .prettyPrinted]),
            to: indexPath)
        var st = state
        st.files = [indexFile: try FileDigest.sha256(file: indexPath)]
        for r in reports { for (f, e) in r.files { st.files[f] = e.sha256 } }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(st), to: (dir as NSString).appendingPathComponent(stateFile))
        fsyncDirectory(dir)
        try writeAtomically(
            Data((folderName(step: step) + "\n").utf8),
            to: (root as NSString).appendingPathComponent("latest"))
        fsyncDirectory(root)
        prune(root: root, keepLast: keepLast, keepEvery: keepEvery)
    }

    /// Rank 0's check before it commits: every shard of the checkpoint was reported by some rank,
    /// and rank 0 sees each reported file with the size its writer reported. A file missing or of
    /// another size means the ranks do not share this folder (each host wrote into its own disk).
    /// Returns the message to stop with, or nil. A miss is checked again after a pause, for a
    /// network file system whose attribute cache lags.
    static func unseenShards(_ dir: String, _ reports: [ShardReport], shards n: Int) -> String? {
        func problems() -> [String] {
            reports.compactMap { r -> String? in
                let bad = r.files.sorted { $0.key < $1.key }.compactMap { f, e -> String? in
                    let path = (dir as NSString).appendingPathComponent(f)
                    guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int else {
                        return "\(f) (missing)"
                    }
                    return size == e.bytes ? nil : "\(f) (\(size) bytes here, \(e.bytes) written)"
                }
                return bad.isEmpty ? nil : "rank \(r.rank) on host \(r.host): " + bad.joined(separator: ", ")
            }
        }
        let expected = Set((0..<n).flatMap { [modelFile($0, of: n), optimizerFile($0, of: n)] })
        let unreported = expected.subtracting(reports.flatMap { $0.files.keys }).sorted()
        var seen = problems()
        if !seen.isEmpty { usleep(2_000_000); seen = problems() }
        guard !seen.isEmpty || !unreported.isEmpty else { return nil }
        let host0 = reports.first { $0.rank == 0 }?.host ?? hostName()
        var text = "checkpoint folder \(dir): "
        if !seen.isEmpty {
            text +=
                "rank 0 on host \(host0) cannot see the shard files other ranks wrote there: "
                + seen.joined(separator: "; ") + ". Checkpoints need a file system that every host shares "
                + "(NFS, Lustre, ...) for the run folder; this one is not shared between these hosts"
        }
        if !unreported.isEmpty {
            text += (seen.isEmpty ? "" : "; ") + "no rank wrote " + unreported.joined(separator: ", ")
        }
        return text + ". Nothing was committed."
    }
}

/// What one rank wrote into a checkpoint folder: file name -> size and sha256, and its host.
struct ShardReport: Codable {
    struct File: Codable {
        var bytes: Int
        var sha256: String
        init(of path: String) throws {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            bytes = attributes[.size] as? Int ?? -1
            sha256 = try FileDigest.sha256(file: path)
        }
    }
    var rank: Int
    var host: String
    var files: [String: File]
}

/// Every rank's report, on every rank (rank order): one allgather of JSON padded to the longest.
func gatherReports(_ mine: ShardReport, comm: Communicator) throws -> [ShardReport] {
    guard comm.size > 1 else { return [mine] }
    let data = try JSONEncoder().encode(mine)
    var lengths = [Double](repeating: 0, count: comm.size)
    lengths[comm.rank] = Double(data.count)
    try comm.allreduceSum(&lengths, count: comm.size)
    let width = Int(lengths.max() ?? 0)
    // Spaces pad each report: JSON allows trailing white space.
    var all = [UInt8](repeating: 0x20, count: width * comm.size)
    all.replaceSubrange((comm.rank * width)..<(comm.rank * width + data.count), with: data)
    try all.withUnsafeMutableBytes { try comm.allgather(bytes: $0.baseAddress!, count: width) }
    return try (0..<comm.size).map { r in
        try JSONDecoder().decode(ShardReport.self, from: Data(all[(r * width)..<((r + 1) * width)]))
    }
}

/// Rank 0's optional text, on every rank.
func broadcastText(_ text: String?, comm: Communicator) throws -> String? {
    guard comm.size > 1 else { return text }
    var bytes = Array((text ?? "").utf8)
    var lengths = [Double(comm.isRoot ? bytes.count : 0)]
    try comm.allreduceSum(&lengths, count: 1)
    let n = Int(lengths[0])
    guard n > 0 else { return nil }
    if !comm.isRoot { bytes = [UInt8](repeating: 0, count: n) }
    try bytes.withUnsafeMutableBytes { try comm.broadcast(bytes: $0.baseAddress!, count: n, root: 0) }
    return String(decoding: bytes, as: UTF8.self)
}

/// This machine's host name, as `gethostname` gives it.
func hostName() -> String {
    var name = [CChar](repeating: 0, count: 256)
    gethostname(&name, name.count)
    return String(cString: name)
}
