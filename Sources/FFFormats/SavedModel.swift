import Foundation
import FFKernels
import FFModel

/// Trained weights wherever they are: a safetensors file (a run's `model.safetensors`, an export),
/// a checkpoint folder, a run's checkpoints folder (its latest), or a run folder (its final
/// weights, else its latest checkpoint). Knows the model config and the step they were trained to.
public struct SavedModel: Sendable {
    public enum Source: Sendable, Equatable {
        case file(String)
        case checkpoint(String)
    }
    public let source: Source
    /// The model section as JSON (`Trainer.modelJSON`), from the file's metadata or the
    /// checkpoint's trainer state.
    public let modelJSON: String
    /// Optimizer steps the weights were trained to, when known.
    public let step: Int?

    /// Finds the weights at `path`; errors name the path and what was expected there.
    public static func locate(_ path: String) throws -> SavedModel {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw FormatError(
                "\(path): no such file or folder (expected weights: a run folder, a checkpoint or "
                    + "a .safetensors file)")
        }
        guard isDir.boolValue else { return try file(path) }
        let join = { (name: String) in (path as NSString).appendingPathComponent(name) }
        if FileManager.default.fileExists(atPath: join(Checkpoint.stateFile)) { return try checkpoint(path) }
        let final = join("model.safetensors")
        if FileManager.default.fileExists(atPath: final) { return try file(final) }
        for root in [join("checkpoints"), path] {
            if let dir = try? Checkpoint.resolveLatest(root: root) { return try checkpoint(dir) }
        }
        throw FormatError("\(path): holds no model.safetensors, trainer_state.json or committed checkpoint")
    }

    static func file(_ path: String) throws -> SavedModel {
        let meta = try Safetensors.read(path: path).metadata
        guard let json = meta["config"] else {
            throw FormatError("\(path): no model config in the safetensors metadata (not written by swift-ff-train?)")
        }
        var step = meta["step"].flatMap { Int($0) }
        if step == nil {
            // A run's final weights sit beside its summary.json, which records the steps.
            let folder = (path as NSString).deletingLastPathComponent
            let summary = (folder as NSString).appendingPathComponent("summary.json")
            if let data = FileManager.default.contents(atPath: summary),
                let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            {
                step = obj["steps"] as? Int
            }
        }
        return SavedModel(source: .file(path), modelJSON: json, step: step)
    }

    static func checkpoint(_ dir: String) throws -> SavedModel {
        let state = try Checkpoint.readState(dir)
        return SavedModel(source: .checkpoint(dir), modelJSON: state.modelConfig, step: state.step)
    }

    /// Fills `params` (and `ema`, the weight average, when given and the checkpoint has one;
    /// otherwise it gets a copy of the weights) by tensor name; shapes must match `layout`.
    public func load(layout: ParameterLayout, params: FlatBuffer, ema: FlatBuffer? = nil) throws {
        switch source {
        case .file(let path):
            let (tensors, _) = try Safetensors.read(path: path)
            for t in layout.tensors {
                guard let (shape, values) = tensors[t.name] else {
                    throw FormatError("\(path): tensor '\(t.name)' missing (does the config match the weights?)")
                }
                guard shape == t.shape else {
                    throw FormatError("\(path): tensor '\(t.name)' has shape \(shape), the model needs \(t.shape)")
                }
                values.withUnsafeBufferPointer {
                    (params.pointer + t.offset).update(from: $0.baseAddress!, count: t.count)
                }
            }
            ema?.pointer.update(from: params.pointer, count: params.count)
        case .checkpoint(let dir):
            // The average sits beside the AdamW moments; read them (then drop them) only to reach it.
            let moments = ema.map { _ in (FlatBuffer(count: layout.count), FlatBuffer(count: layout.count)) }
            _ = try Checkpoint.load(dir, layout: layout, params: params, m: moments?.0, v: moments?.1, ema: ema)
        }
    }

    /// Where the weights are, for messages.
    public var path: String {
        switch source {
        case .file(let p), .checkpoint(let p): return p
        }
    }
}

extension LMConfig {
    /// The language model described by `Trainer.modelJSON` (what safetensors metadata and
    /// checkpoints carry). `source` names the origin in errors.
    public init(modelJSON: String, source: String) throws {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(modelJSON.utf8)) as? [String: Any] else {
            throw FormatError("\(source): the model config is not a JSON object")
        }
        func int(_ k: String) throws -> Int {
            guard let v = obj[k] as? Int else { throw FormatError("\(source): model config lacks integer '\(k)'") }
            return v
        }
        guard (obj["kind"] as? String) == "lm" else {
            throw FormatError("\(source): not a language model (kind \(obj["kind"] ?? "missing"))")
        }
        self.init(
            vocabSize: try int("vocab_size"), layers: try int("layers"), dModel: try int("d_model"),
            heads: try int("heads"), dFF: try int("d_ff"), context: try int("context"))
        norm = NormPlacement(rawValue: obj["norm"] as? String ?? "") ?? .post
        positions = PositionKind(rawValue: obj["positions"] as? String ?? "") ?? .sinusoidal
        activation = Activation(rawValue: obj["activation"] as? String ?? "") ?? .relu
        tieEmbeddings = obj["tie_embeddings"] as? Bool ?? true
        scaleEmbeddings = obj["scale_embeddings"] as? Bool ?? true
        dropout = 0
        if (obj["output"] as? String) == "adaptive" {
            guard let a = obj["adaptive"] as? [String: Any], let cutoffs = a["cutoffs"] as? [Int] else {
                throw FormatError("\(source): an adaptive output without adaptive.cutoffs")
            }
            adaptive = AdaptiveSoftmaxConfig(
                vocabSize: vocabSize, dModel: dModel, cutoffs: cutoffs,
                divVal: Float(a["div_val"] as? Double ?? 1), tieWeights: tieEmbeddings,
                tieProjections: tieEmbeddings && (a["tie_projections"] as? Bool ?? true))
        }
        let a = obj["attention"] as? [String: Any] ?? [:]
        switch a["kind"] as? String {
        case "softmax": attention = .softmax
        case "fourier":
            let mode = RMode(rawValue: a["r_mode"] as? String ?? "scalar") ?? .scalar
            let spec = FourierSpec(p: a["p"] as? Int ?? 4, eps: Float(a["eps"] as? Double ?? 1e-6), rMode: mode)
            attention = .fourier(spec, rInit: Float(a["r_init"] as? Double ?? 1))  // R comes from the weights
        default: throw FormatError("\(source): model config has no attention kind")
        }
        if let p = problems().first { throw FormatError("\(source): \(p)") }
    }
}
