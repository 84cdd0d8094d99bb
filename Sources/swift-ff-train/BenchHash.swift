import ArgumentParser
import Foundation
import FFFormats

/// SHA-256 of one file as checkpoints compute it (`FileDigest`), in MB/s on this thread.
struct BenchHash: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash",
        abstract: "SHA-256 of a file as checkpoints compute it: MB/s (the file is read once first, to the page cache).")

    @Argument(help: "The file to hash.") var file: String
    @Option(name: .long, help: "Timed repetitions.") var repeats = 3

    func run() throws {
        do {
            let bytes = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
            var digest = ""
            let seconds = try medianSeconds(repeats: repeats) { digest = try FileDigest.sha256(file: file) }
            print(
                String(
                    format: "{\"implementation\":\"swift-crypto\",\"bytes\":%d,\"seconds\":%.3f,\"mb_per_s\":%.1f,"
                        + "\"sha256\":\"%@\"}", bytes, seconds, Double(bytes) / seconds / 1e6, digest))
        } catch { fail(error) }
    }
}
