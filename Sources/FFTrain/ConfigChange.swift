import Foundation

/// A JSON value, decoded strictly (a bool stays a bool), for comparing model configs.
enum JSONValue: Decodable, Equatable {
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// The value as a user reads it; numbers at float precision (configs hold floats).
    var text: String {
        switch self {
        case .bool(let b): return "\(b)"
        case .number(let d):
            if d == d.rounded(), abs(d) < 1e15 { return "\(Int(d))" }
            return "\(Float(d))"
        case .string(let s): return s
        case .array(let a): return "[" + a.map(\.text).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { "\($0): \(o[$0]!.text)" }.joined(separator: ", ") + "}"
        case .null: return "null"
        }
    }

    /// Dotted keys to values, objects flattened.
    func flattened(_ prefix: String) -> [String: String] {
        guard case .object(let o) = self else { return [prefix: text] }
        var out: [String: String] = [:]
        for (k, v) in o { out.merge(v.flattened(prefix + "." + k)) { a, _ in a } }
        return out
    }
}

/// Differences between the config a checkpoint was trained with and the one resuming it.
public struct ConfigChanges: Sendable {
    /// Keys that change the model (its shape, attention, data normalisation): never continued.
    public var model: [String] = []
    /// Keys of the training recipe: continued only with `--allow-config-change`.
    public var recipe: [String] = []
    /// Changes allowed silently but worth a line (train.steps growing, R's initial value).
    public var notes: [String] = []

    /// Model keys that do not change the model once trained: R is in the weights, init_std only
    /// acts at initialisation.
    static let ignoredModelKeys: Set<String> = ["model.attention.r_init", "model.attention.r_target", "model.init_std"]
    /// Model keys that belong to the recipe (regularisation), not to the model's function.
    static let recipeModelKeys: Set<String> = ["model.dropout", "model.drop_path"]

    /// Compares the checkpoint's model JSON and recipe with the current ones; `old.recipe` nil
    /// (a checkpoint written before recipes were recorded) compares the model only.
    static func between(
        oldModel: String, newModel: String, oldRecipe: [String: String]?,
        newRecipe: [String: String]
    ) -> ConfigChanges {
        var c = ConfigChanges()
        let decode = { (s: String) in
            (try? JSONDecoder().decode(JSONValue.self, from: Data(s.utf8)))?.flattened("model") ?? [:]
        }
        for (key, old, new) in differences(decode(oldModel), decode(newModel)) {
            if ignoredModelKeys.contains(key) { continue }
            let change = "\(key): \(old) -> \(new)"
            if recipeModelKeys.contains(key) { c.recipe.append(change) } else { c.model.append(change) }
        }
        guard let oldRecipe else {
            c.notes.append(
                "note: the checkpoint predates recorded training settings: train.* and augment.* "
                    + "were not compared")
            return c
        }
        for (key, old, new) in differences(oldRecipe, newRecipe) {
            if key == "train.steps", let o = Int(old), let n = Int(new), n > o {
                c.notes.append(
                    "note: train.steps \(o) -> \(n): the learning-rate schedule is recomputed for \(n) steps")
                continue
            }
            c.recipe.append("\(key): \(old) -> \(new)")
        }
        return c
    }

    static func differences(_ a: [String: String], _ b: [String: String]) -> [(String, String, String)] {
        Set(a.keys).union(b.keys).sorted().compactMap { k in
            a[k] == b[k] ? nil : (k, a[k] ?? "(absent)", b[k] ?? "(absent)")
        }
    }
}

extension TrainConfig {
    /// The training recipe as dotted keys and values (recorded in every checkpoint, compared on
    /// resume). Settings that do not change the result (threads, logging, evaluation cadence,
    /// checkpointing, the data folder's location) are left out; so is grad_accum, which changes
    /// the arithmetic only to rounding, like the world size.
    public var recipe: [String: String] {
        let t = train
        var r: [String: String] = [
            "train.steps": "\(t.steps)", "train.batch_size": "\(t.batchSize)", "train.lr": "\(t.lr)",
            "train.min_lr": "\(t.minLR)", "train.warmup_steps": "\(t.warmupSteps)",
            "train.schedule": t.schedule.rawValue, "train.weight_decay": "\(t.weightDecay)",
            "train.beta1": "\(t.beta1)", "train.beta2": "\(t.beta2)", "train.adam_eps": "\(t.adamEps)",
            "train.grad_clip": "\(t.gradClip)", "train.ema": "\(t.ema)",
        ]
        if model.kind == .vit {
            let a = augment
            for (k, v) in [
                ("crop_padding", "\(a.cropPadding)"), ("flip", "\(a.flip)"), ("mixup", "\(a.mixup)"),
                ("cutmix", "\(a.cutmix)"), ("mix_prob", "\(a.mixProb)"), ("switch_prob", "\(a.switchProb)"),
                ("erase", "\(a.erase)"), ("label_smoothing", "\(a.labelSmoothing)"),
            ] {
                r["augment." + k] = v
            }
        }
        return r
    }
}
