import Foundation
import FFDistributed
import FFFormats
import FFModel

extension Checkpoint {
    /// Every rank calls this at the same step; rank i writes shard i, rank 0 commits. `m` and `v`
    /// hold every element's moments, or under ZeRO-1 (`partitions[r]`: the elements rank r owns)
    /// this rank's only: each shard's writer then gathers its tensors' moments from their owners.
    public static func save(root: String, step: Int, state: TrainerState, layout: ParameterLayout,
                            params: FlatBuffer, m: FlatBuffer, v: FlatBuffer, ema: FlatBuffer? = nil,
                            partitions: [Range<Int>]?, comm: Communicator,
                            keepLast: Int, keepEvery: Int, afterShards: (() -> Void)? = nil) throws -> String {
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
        try agree(comm, "writing checkpoint shards in \(dir)") {
            for i in stride(from: comm.rank, to: n, by: comm.size) {
                let tensors = Array(layout.tensors[groups[i]])
                try Safetensors.write(tensors.map { view($0, params) }, metadata: ["format": "pt"],
                                      to: (dir as NSString).appendingPathComponent(modelFile(i, of: n)))
                try Safetensors.write(tensors.flatMap { t -> [Safetensors.Tensor] in
                    [view(t, shardM, base: stateBase, suffix: ".exp_avg"),
                     view(t, shardV, base: stateBase, suffix: ".exp_avg_sq")]
                        + (ema.map { [view(t, $0, suffix: ".ema")] } ?? [])
                }, metadata: ["format": "pt"], to: (dir as NSString).appendingPathComponent(optimizerFile(i, of: n)))
            }
        }
        afterShards?()
        try agree(comm, "committing checkpoint \(dir)") {
            guard comm.isRoot else { return }
            var weightMap: [String: String] = [:]
            for (i, g) in groups.enumerated() { for t in layout.tensors[g] { weightMap[t.name] = modelFile(i, of: n) } }
            let index: [String: Any] = ["metadata": ["total_size": layout.count * 4], "weight_map": weightMap]
            let indexData = try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys, .prettyPrinted])
            try writeAtomically(indexData,
                                to: (dir as NSString).appendingPathComponent(indexFile))
            var st = state
            st.files = [:]
            let files = try FileManager.default.contentsOfDirectory(atPath: dir)
            for f in files where f != stateFile && !f.contains(".tmp-") {
                st.files[f] = try SHA256.file((dir as NSString).appendingPathComponent(f))
            }
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try writeAtomically(try enc.encode(st), to: (dir as NSString).appendingPathComponent(stateFile))
            fsyncDirectory(dir)
            try writeAtomically(Data((folderName(step: step) + "\n").utf8),
                                to: (root as NSString).appendingPathComponent("latest"))
            fsyncDirectory(root)
            prune(root: root, keepLast: keepLast, keepEvery: keepEvery)
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
    static func gatherSlices(_ from: FlatBuffer, owned: [Range<Int>], into out: FlatBuffer, wanted: [Range<Int>],
                             comm: Communicator) throws {
        let me = comm.rank, mine = owned[me], want = wanted[me]
        func overlap(_ a: Range<Int>, _ b: Range<Int>) -> Range<Int> {
            let lo = max(a.lowerBound, b.lowerBound), hi = min(a.upperBound, b.upperBound)
            return lo < hi ? lo..<hi : lo..<lo
        }
        let send = wanted.map { overlap(mine, $0) }, recv = owned.map { overlap($0, want) }
        try comm.alltoallv(from.pointer, sendCounts: send.map(\.count),
                           sendOffsets: send.map { $0.isEmpty ? 0 : $0.lowerBound - mine.lowerBound },
                           out.pointer, recvCounts: recv.map(\.count),
                           recvOffsets: recv.map { $0.isEmpty ? 0 : $0.lowerBound - want.lowerBound })
    }
}
