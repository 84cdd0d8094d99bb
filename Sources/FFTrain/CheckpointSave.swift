import Foundation
import FFDistributed
import FFFormats
import FFModel

extension Checkpoint {
    /// Every rank calls this at the same step; rank i writes shard i, rank 0 commits.
    public static func save(root: String, step: Int, state: TrainerState, layout: ParameterLayout,
                            params: FlatBuffer, m: FlatBuffer, v: FlatBuffer, ema: FlatBuffer? = nil, stateBase: Int, comm: Communicator,
                            keepLast: Int, keepEvery: Int, afterShards: (() -> Void)? = nil) throws -> String {
        let dir = (root as NSString).appendingPathComponent(folderName(step: step))
        let n = state.shards
        try agree(comm, "creating checkpoint folder \(dir)") {
            if comm.isRoot { try prepareFolder(dir) }
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        let groups = partition(layout, into: n)
        try agree(comm, "writing checkpoint shards in \(dir)") {
            for i in stride(from: comm.rank, to: n, by: comm.size) {
                let tensors = Array(layout.tensors[groups[i]])
                try Safetensors.write(tensors.map { view($0, params) }, metadata: ["format": "pt"],
                                      to: (dir as NSString).appendingPathComponent(modelFile(i, of: n)))
                try Safetensors.write(tensors.flatMap { t -> [Safetensors.Tensor] in
                    [view(t, m, base: stateBase, suffix: ".exp_avg"), view(t, v, base: stateBase, suffix: ".exp_avg_sq")]
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
            try writeAtomically(try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys, .prettyPrinted]),
                                to: (dir as NSString).appendingPathComponent(indexFile))
            var st = state
            st.files = [:]
            for f in try FileManager.default.contentsOfDirectory(atPath: dir) where f != stateFile && !f.contains(".tmp-") {
                st.files[f] = try SHA256.file((dir as NSString).appendingPathComponent(f))
            }
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try writeAtomically(try enc.encode(st), to: (dir as NSString).appendingPathComponent(stateFile))
            fsyncDirectory(dir)
            try writeAtomically(Data((folderName(step: step) + "\n").utf8), to: (root as NSString).appendingPathComponent("latest"))
            fsyncDirectory(root)
            prune(root: root, keepLast: keepLast, keepEvery: keepEvery)
        }
        return dir
    }

}
