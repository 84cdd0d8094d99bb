import FFFuzz
import FFCore
import FFKernels
import ArgumentParser
import Foundation
import FFModel
import FFTrain

/// Mutation fuzzing of the readers of other people's files (driven by launch/fuzz.sh).
struct Fuzz: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Throw mutated files at the checkpoint, safetensors, vocabulary and shard readers.",
        discussion: "Before each probe the input is written to OUT/current-KIND.bin, so a crash leaves it behind.",
        shouldDisplay: false)

    @Option(name: .long, help: "Seconds to run.") var seconds: Double = 60
    @Option(name: .long, help: "Working folder (current inputs, new corpus entries).") var out: String
    @Option(name: .long, help: "Corpus folder to seed from as well (files named KIND-*).") var corpus: String?
    @Option(name: .long, help: "Random seed.") var seed: UInt64 = 1

    func run() throws {
        try FileManager.default.createDirectory(atPath: out + "/new", withIntermediateDirectories: true)
        var seeds: [HostileInput.Kind: [Data]] = [:]
        for k in HostileInput.Kind.allCases { seeds[k] = HostileInput.seeds(k) }
        if let corpus, let files = try? FileManager.default.contentsOfDirectory(atPath: corpus) {
            for f in files {
                guard let k = HostileInput.Kind.allCases.first(where: { f.hasPrefix($0.rawValue + "-") }),
                    let d = FileManager.default.contents(atPath: corpus + "/" + f)
                else { continue }
                seeds[k, default: []].append(d)
            }
        }
        var rng = SplitMix64(seed: seed)
        let scratch = out + "/scratch.bin"
        let start = Date()
        var count = 0, accepted = 0
        var seenErrors = Set<String>()
        while Date().timeIntervalSince(start) < seconds {
            let kind = HostileInput.Kind.allCases[rng.nextInt(below: HostileInput.Kind.allCases.count)]
            let pool = seeds[kind]!
            let input = HostileInput.mutate(pool[rng.nextInt(below: pool.count)], rng: &rng)
            let current = out + "/current-\(kind.rawValue).bin"
            FileManager.default.createFile(atPath: current, contents: input)
            let result = HostileInput.probe(kind, input, scratch: scratch)
            count += 1
            // Novelty by error class (the message without file names and numbers): keep the first
            // input of each class as a corpus entry and a seed for further mutation.
            let cls =
                kind.rawValue + ":"
                + (result.map {
                    $0.replacingOccurrences(of: scratch, with: "")
                        .components(separatedBy: CharacterSet.decimalDigits).joined().prefix(80)
                }.map(String.init) ?? "accepted")
            if result == nil { accepted += 1 }
            if seenErrors.insert(cls).inserted && input.count < 4096 {
                FileManager.default.createFile(
                    atPath: out + "/new/\(kind.rawValue)-\(seenErrors.count).bin", contents: input)
                seeds[kind]!.append(input)
            }
            if count % 20000 == 0 { print("\(count) inputs, \(seenErrors.count) distinct outcomes"); fflush(stdout) }
        }
        for k in HostileInput.Kind.allCases { unlink(out + "/current-\(k.rawValue).bin") }
        print(
            "fuzz: \(count) inputs in \(Int(seconds)) s, \(accepted) accepted, \(seenErrors.count) distinct "
                + "outcomes, 0 crashes")
    }
}
