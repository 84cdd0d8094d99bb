import FFCore
import Foundation
import FFData
import FFFormats

/// The readers of files that come from other people, and a mutation generator to throw bad
/// bytes at them: every reader must answer with an error naming the file, never trap or hang.
public enum HostileInput {
    public enum Kind: String, CaseIterable, Sendable {
        case safetensors, trainerState = "trainer_state", index, vocabulary, tokenShard = "token_shard", idx
    }

    /// Runs the reader for `kind` on `data` (written to `scratch` for readers that take a path).
    /// Returns nil when the input was accepted, else the error's text.
    public static func probe(_ kind: Kind, _ data: Data, scratch: String) -> String? {
        do {
            switch kind {
            case .trainerState: _ = try Checkpoint.parseState(data, path: scratch)
            case .index: _ = try Checkpoint.parseIndex(data, path: scratch, shards: 2)
            case .safetensors, .vocabulary, .tokenShard, .idx:
                guard FileManager.default.createFile(atPath: scratch, contents: data) else {
                    return "cannot write "
                        + "\(scratch)"
                }
                switch kind {
                case .safetensors: _ = try Safetensors.read(path: scratch)
                case .vocabulary:
                    let v = try Vocabulary.read(from: scratch)
                    _ = v.encode("the <unk> x\n")
                case .tokenShard:
                    let s = try TokenShard(path: scratch)
                    if s.count > 0 { _ = s[s.count - 1]; _ = s.maxToken() }
                case .idx:
                    let a = try IDXArray.read(path: scratch)
                    _ = a.integers().last
                default: break
                }
            }
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Small valid examples of each kind: where mutation starts.
    public static func seeds(_ kind: Kind) -> [Data] {
        switch kind {
        case .safetensors:
            let tmp = NSTemporaryDirectory() + "seed-\(UUID().uuidString).safetensors"
            defer { unlink(tmp) }
            let values: [Float] = [1, 2, 3, 4, 5, 6, -1, 0.5]
            try? values.withUnsafeBufferPointer { b in
                try Safetensors.write(
                    [
                        .init(name: "a.weight", shape: [2, 3], data: UnsafeBufferPointer(rebasing: b[0..<6])),
                        .init(name: "b", shape: [2], data: UnsafeBufferPointer(rebasing: b[6..<8])),
                    ],
                    metadata: ["format": "pt"], to: tmp)
            }
            return [FileManager.default.contents(atPath: tmp) ?? Data()]
        case .trainerState:
            let st = TrainerState(
                step: 10, epoch: 0, samplesSeen: 80, globalBatch: 8, worldSize: 2, shards: 2, seed: 5,
                configHash: "abc", modelConfig: "{}",
                files: ["model-00001-of-00002.safetensors": String(repeating: "0", count: 64)])
            return [(try? JSONEncoder().encode(st)) ?? Data()]
        case .index:
            return [
                Data(
                    (#"{"metadata": {"total_size": 32}, "weight_map": "#
                        + #"{"a.weight": "model-00001-of-00002.safetensors", "#
                        + #""b": "model-00002-of-00002.safetensors"}}"#)
                        .utf8)
            ]
        case .vocabulary:
            let v = Vocabulary.buildWord(trainText: "the cat sat\nthe dog\n", minCount: 1, maxSize: nil)
            return [(try? JSONEncoder().encode(v)) ?? Data()]
        case .tokenShard:
            let tmp = NSTemporaryDirectory() + "seed-\(UUID().uuidString).bin"
            defer { unlink(tmp) }
            try? writeTokenShard([1, 2, 3, 65535], to: tmp)
            let narrow = FileManager.default.contents(atPath: tmp) ?? Data()
            try? writeTokenShard([1, 70000], to: tmp)
            return [narrow, FileManager.default.contents(atPath: tmp) ?? Data()]
        case .idx:
            let images = IDXArray(dims: [2, 3, 3], bytes: Data((0..<18).map { UInt8($0 * 13) }))
            let labels = IDXArray(labels: [3, 999])
            return [images.encoded(), labels.encoded(), (try? IDXArray.gzip(images.encoded(), path: "seed")) ?? Data()]
        }
    }

    private static let interestingBytes: [UInt8] = [0, 1, 0x7F, 0x80, 0xFF, 0x22, 0x5B, 0x7B, 0x2D, 0x39]
    private static let interestingNumbers = [
        "-1", "0", "4294967296", "9223372036854775807", "-9223372036854775808",
        "99999999999999999999999", "1e308", "-0", "1.5", "null", "\"x\"", "[]", "{}",
    ]

    /// One mutation (or a few stacked) of `data`.
    public static func mutate(_ data: Data, rng: inout SplitMix64) -> Data {
        var b = [UInt8](data)
        let rounds = 1 + rng.nextInt(below: 3)
        for _ in 0..<rounds {
            switch rng.nextInt(below: 9) {
            case 0 where !b.isEmpty:  // flip a bit
                let i = rng.nextInt(below: b.count); b[i] ^= UInt8(1 << rng.nextInt(below: 8))
            case 1 where !b.isEmpty:  // an interesting byte
                b[rng.nextInt(below: b.count)] = interestingBytes[rng.nextInt(below: interestingBytes.count)]
            case 2 where !b.isEmpty:  // truncate
                b.removeLast(1 + rng.nextInt(below: b.count))
            case 3:  // append junk
                for _ in 0..<(1 + rng.nextInt(below: 64)) { b.append(UInt8(truncatingIfNeeded: rng.next())) }
            case 4 where b.count >= 8:  // a little-endian 64/32-bit field set to an extreme
                let i = rng.nextInt(below: b.count - 7)
                let v: UInt64 = [0, 1, UInt64(Int32.max), UInt64(UInt32.max), UInt64(Int64.max), UInt64.max, 1 << 40][
                    rng.nextInt(below: 7)]
                for k in 0..<(rng.nextInt(below: 2) == 0 ? 4 : 8) {
                    b[i + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k)))
                }
            case 5 where !b.isEmpty:  // replace a run of digits (inside JSON) with an extreme token
                let digits = b.indices.filter { b[$0] >= 0x30 && b[$0] <= 0x39 }
                guard let start = digits.isEmpty ? nil : digits[rng.nextInt(below: digits.count)] else { break }
                var end = start
                while end < b.count && ((b[end] >= 0x30 && b[end] <= 0x39) || b[end] == 0x2E) { end += 1 }
                b.replaceSubrange(
                    start..<end, with: Array(interestingNumbers[rng.nextInt(below: interestingNumbers.count)].utf8))
            case 6 where b.count > 2:  // duplicate a chunk
                let i = rng.nextInt(below: b.count), n = min(1 + rng.nextInt(below: 32), b.count - i)
                b.insert(contentsOf: b[i..<(i + n)], at: rng.nextInt(below: b.count))
            case 7 where b.count > 2:  // delete a chunk
                let i = rng.nextInt(below: b.count), n = min(1 + rng.nextInt(below: 32), b.count - i)
                b.removeSubrange(i..<(i + n))
            default:  // deep nesting, for JSON parsers
                if rng.nextInt(below: 4) == 0 {
                    b = Array(String(repeating: "[", count: 1 + rng.nextInt(below: 5000)).utf8) + b
                }
            }
        }
        return Data(b)
    }
}
