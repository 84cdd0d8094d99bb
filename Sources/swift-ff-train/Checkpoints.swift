import FFFormats
import ArgumentParser
import Foundation
import FFTrain

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Consolidate a checkpoint into one model.safetensors + config.json (loads in PyTorch).")

    @Argument(
        help: ArgumentHelp(
            "A checkpoint folder (runs/NAME/checkpoints/step-NNNNNNNN) or a run's checkpoints "
                + "folder (its latest)."))
    var checkpoint: String

    @Option(name: .long, help: "Output folder.")
    var output: String

    @Flag(name: .long, help: "Export the exponential moving average of the weights (runs with train.ema > 0).")
    var ema = false

    func run() throws {
        do {
            let dir = try Checkpoint.resolveLatest(root: checkpoint) ?? checkpoint
            try Checkpoint.export(dir, to: output, averaged: ema)
            print("exported \(dir) -> \(output)/model.safetensors, \(output)/config.json")
        } catch { fail(error) }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Summarise a checkpoint and verify its checksums.")

    @Argument(help: "A checkpoint folder, or a run's checkpoints folder (its latest).")
    var checkpoint: String

    @Flag(name: .long, help: "List every tensor.")
    var tensors = false

    func run() throws {
        do {
            let dir = try Checkpoint.resolveLatest(root: checkpoint) ?? checkpoint
            let s = try Checkpoint.inspect(dir)
            let st = s.state
            print("\(dir)")
            print(
                "step \(st.step), epoch \(st.epoch), \(st.samplesSeen) samples seen, global batch "
                    + "\(st.globalBatch), written by \(st.worldSize) rank(s) in \(st.shards) shard(s), seed \(st.seed)")
            print("\(s.tensors.count) tensors, \(s.parameters) parameters")
            var bad = 0
            for f in s.files {
                print(
                    String(
                        format: "  %-44@ %12d bytes  %@", f.name as NSString, f.bytes,
                        f.checksumOK ? "sha256 ok" : "CHECKSUM MISMATCH OR MISSING"))
                if !f.checksumOK { bad += 1 }
            }
            if tensors { for t in s.tensors { print("  \(t.name) \(t.shape) in \(t.file)") } }
            if bad > 0 { fail(CheckpointError("\(dir): \(bad) file(s) failed verification")) }
        } catch { fail(error) }
    }
}
