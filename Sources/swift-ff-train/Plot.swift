import FFAnalysis
import FFFormats
import ArgumentParser
import Foundation
import FFTrain

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Training loss and validation perplexity of one or more runs on one SVG chart.")

    @Argument(help: "Run folders or metrics.jsonl files (e.g. runs/lm-debug runs/lm-debug-softmax).") var runs: [String]
    @Option(name: .long, help: "Output SVG file.") var output: String = "curves.svg"
    @Option(name: .long, help: "Chart title.") var title: String = "swift-ff-train runs"

    func run() throws {
        do {
            let curves = try runs.map { r -> RunCurves in
                let isDir =
                    (try? FileManager.default.attributesOfItem(atPath: r)[.type] as? FileAttributeType)
                    == .typeDirectory
                let path = isDir ? (r as NSString).appendingPathComponent("metrics.jsonl") : r
                let name =
                    isDir
                    ? (r as NSString).lastPathComponent
                    : ((r as NSString).deletingLastPathComponent as NSString).lastPathComponent
                return try RunCurves.read(path, name: name)
            }
            try writeAtomically(Data(curvesSVG(curves, title: title).utf8), to: output)
            print("wrote \(output)")
        } catch { fail(error) }
    }
}
