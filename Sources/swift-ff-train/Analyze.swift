import FFAnalysis
import FFFormats
import ArgumentParser
import Foundation
import FFTrain

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Per layer and head: head redundancy (mean pairwise distance of attention maps), entropy, row-sum "
            + "health, learned R; JSON plus SVG heat maps.")

    @Option(name: .long, help: "The YAML config the weights were trained with.") var config: String
    @Option(name: .customLong("set"), help: "Override a config value: key.path=value (repeatable).") var overrides:
        [String] = []
    @Option(name: .long, help: "Weights (safetensors); default: RUN_DIR/model.safetensors.") var weights: String?
    @Option(name: .long, help: "valid, test or train.") var split = "valid"
    @Option(name: .long, help: "Segments to average over (at most the micro-batch).") var sequences = 8
    @Option(name: .long, help: "Output folder; default: RUN_DIR/analysis.") var output: String?

    func run() throws {
        do {
            guard ["valid", "test", "train"].contains(split) else {
                throw ValidationError(
                    "--split must be valid, "
                        + "test or train")
            }
            let cfg = try TrainConfig.load(path: config, overrides: overrides)
            let trainer = try Trainer(config: cfg)
            try trainer.loadWeights(
                from: weights ?? (cfg.runDirectory as NSString).appendingPathComponent("model.safetensors"))
            let out = output ?? (cfg.runDirectory as NSString).appendingPathComponent("analysis")
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let report = try trainer.analyzeAttention(split: split, sequences: sequences) { layer, maps in
                let what = cfg.model.kind == .lm ? "segment 0" : "image 0 (token 0 is the class token)"
                let svg = attentionHeatmapSVG(
                    maps, T: trainer.workload.stack.config.seq,
                    title: "\(cfg.run.name): layer \(layer), \(split) \(what) "
                        + "(\(cfg.model.attention.name))")
                try? writeAtomically(
                    Data(svg.utf8), to: (out as NSString).appendingPathComponent("attention-layer\(layer).svg"))
            }
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try writeAtomically(try enc.encode(report), to: (out as NSString).appendingPathComponent("analysis.json"))
            let bars = attentionBarChartSVG(
                report,
                title: "\(cfg.run.name): per layer, \(split) "
                    + "(\(cfg.model.attention.name))")
            try writeAtomically(Data(bars.utf8), to: (out as NSString).appendingPathComponent("layers.svg"))
            print("layer | head distance | entropy (mean over heads) | row-sum | collapsed rows | R")
            for l in report.layers {
                let H = Double(l.heads.count)
                print(
                    String(
                        format: "%5d | %13.4f | %25.3f | %7.3f | %14.3f | %@", l.layer, l.meanPairwiseHeadDistance,
                        l.heads.reduce(0) { $0 + $1.entropy } / H, l.heads.reduce(0) { $0 + $1.meanRowSum } / H,
                        l.heads.reduce(0) { $0 + $1.collapsedRows } / H,
                        l.r.map { String(format: "%.3f", $0) }.joined(separator: ",")))
            }
            print("wrote \(out)/analysis.json, layers.svg (bar charts per layer) and attention-layer*.svg (heat maps)")
        } catch { fail(error) }
    }
}
