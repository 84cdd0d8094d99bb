import Foundation
import Yams

/// Reads a nested YAML mapping key by key, checking types, and remembers which keys were read so
/// that any key left over can be reported as unknown.
struct ConfigReader {
    let source: String
    private(set) var tree: [String: Any]
    private var used: Set<String> = []
    /// Required keys found missing; reported only after the unknown keys, because a misspelt
    /// key shows up as both and the misspelling is the useful message.
    private var missing: [ConfigError] = []

    init(source: String, tree: [String: Any]) { self.source = source; self.tree = tree }

    /// Parses YAML text; the top level must be a mapping.
    static func parse(yaml: String, source: String) throws -> [String: Any] {
        let any: Any?
        do {
            if let node = try Yams.compose(yaml: yaml) { try checkDuplicateKeys(node, path: "", source: source) }
            any = try Yams.load(yaml: yaml)
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError("\(source): not valid YAML: \(error)")
        }
        guard let dict = any as? [String: Any] else {
            throw ConfigError("\(source): the top level must be a mapping of sections (run, data, model, train)")
        }
        return dict
    }

    /// YAML parsers keep the last of two equal keys; a config that says a value twice is a
    /// mistake worth naming (with both lines), in block and flow mappings alike.
    static func checkDuplicateKeys(_ node: Node, path: String, source: String) throws {
        switch node {
        case .mapping(let mapping):
            var seen: [String: Int] = [:]
            for (key, value) in mapping {
                let name = key.string ?? "\(key)"
                let full = path.isEmpty ? name : path + "." + name
                let line = key.mark?.line ?? 0
                if let first = seen[name] {
                    throw ConfigError("\(source): duplicate key '\(full)' on lines \(first) and \(line)")
                }
                seen[name] = line
                try checkDuplicateKeys(value, path: full, source: source)
            }
        case .sequence(let seq):
            for item in seq { try checkDuplicateKeys(item, path: path, source: source) }
        case .scalar:
            break
        }
    }

    /// Applies `key.path=value` overrides; the value is parsed as a YAML scalar.
    static func applyOverrides(_ overrides: [String], to tree: inout [String: Any]) throws {
        for o in overrides {
            guard let eq = o.firstIndex(of: "="), eq != o.startIndex else {
                throw ConfigError("--set \(o): expected key.path=value")
            }
            let path = o[..<eq].split(separator: ".").map(String.init)
            let text = String(o[o.index(after: eq)...])
            let value: Any = (try? Yams.load(yaml: text)).flatMap { $0 } ?? text
            try set(&tree, path[...], value, full: String(o[..<eq]))
        }
    }

    private static func set(_ tree: inout [String: Any], _ path: ArraySlice<String>, _ value: Any, full: String) throws
    {
        guard let head = path.first else { return }
        if path.count == 1 { tree[head] = value; return }
        var sub: [String: Any]
        if let existing = tree[head] {
            guard let d = existing as? [String: Any] else {
                throw ConfigError("--set \(full): '\(head)' is a value, not a section")
            }
            sub = d
        } else {
            sub = [:]
        }
        try set(&sub, path.dropFirst(), value, full: full)
        tree[head] = sub
    }

    private func lookup(_ key: String) -> Any? {
        var node: Any? = tree
        for part in key.split(separator: ".") {
            guard let d = node as? [String: Any] else { return nil }
            node = d[String(part)]
        }
        return node
    }

    private mutating func raw(_ key: String) -> Any? {
        used.insert(key)
        return lookup(key)
    }

    /// Records a missing required key and lets parsing go on with `placeholder`, so that
    /// `finish` can report unknown keys first.
    private mutating func deferMissing<T>(_ key: String, _ what: String, placeholder: T) -> T {
        missing.append(ConfigError("\(source): \(key): missing (\(what) is required)"))
        return placeholder
    }

    /// Throws the first problem left: unknown keys (with the closest known key), then missing ones.
    func finish() throws {
        let unknown = unknownKeys()
        if !unknown.isEmpty {
            let named = unknown.map { key in
                "'\(key)'" + (suggestion(for: key).map { " (did you mean '\($0)'?)" } ?? "")
            }
            throw ConfigError("\(source): unknown key\(unknown.count > 1 ? "s" : "") " + named.joined(separator: ", "))
        }
        if let first = missing.first { throw first }
    }

    /// The known key closest to `key`: the same name in another section, else the nearest by
    /// edit distance (transpositions count once) when it is close enough to be a typo.
    func suggestion(for key: String) -> String? {
        let known = used.union(
            used.flatMap { k in
                k.split(separator: ".").indices.dropLast().map { k.split(separator: ".")[...$0].joined(separator: ".") }
            })
        let leaf = key.split(separator: ".").last.map(String.init) ?? key
        if let same = known.sorted().first(where: {
            $0.split(separator: ".").last.map(String.init) == leaf && $0 != key
        }) {
            return same
        }
        let scored = known.map { ($0, editDistance(Array(key), Array($0))) }.min { ($0.1, $0.0) < ($1.1, $1.0) }
        guard let (best, d) = scored, d <= max(1, min(3, leaf.count / 3)) else { return nil }
        return best
    }

    private func bad(_ key: String, _ v: Any, _ expected: String) -> ConfigError {
        ConfigError("\(source): \(key): expected \(expected), got '\(v)'")
    }

    mutating func int(_ key: String, _ def: Int? = nil, min: Int? = nil) throws -> Int {
        guard let v = raw(key) else {
            guard let def else { return deferMissing(key, "an integer", placeholder: min ?? 1) }
            return def
        }
        let i: Int
        if let x = v as? Int {
            i = x
        } else if let d = v as? Double, d == d.rounded(), abs(d) < 1e15 {
            i = Int(d)
        } else {
            throw bad(key, v, "an integer")
        }
        if let min, i < min { throw ConfigError("\(source): \(key): must be at least \(min), got \(i)") }
        return i
    }

    mutating func optionalInt(_ key: String) throws -> Int? {
        lookup(key) == nil ? (used.insert(key), nil).1 : try int(key)
    }

    mutating func double(_ key: String, _ def: Double? = nil, min: Double? = nil, max: Double? = nil) throws -> Double {
        guard let v = raw(key) else {
            guard let def else { return deferMissing(key, "a number", placeholder: min ?? 0) }
            return def
        }
        let d: Double
        if let x = v as? Double {
            d = x
        } else if let x = v as? Int {
            d = Double(x)
        } else if let s = v as? String, let x = Double(s) {
            d = x  // YAML 1.1 reads 1e-6 as a string
        } else {
            throw bad(key, v, "a number")
        }
        guard d.isFinite else { throw bad(key, v, "a finite number") }
        if let min, d < min { throw ConfigError("\(source): \(key): must be at least \(min), got \(d)") }
        if let max, d > max { throw ConfigError("\(source): \(key): must be at most \(max), got \(d)") }
        return d
    }

    mutating func float(_ key: String, _ def: Float? = nil, min: Double? = nil, max: Double? = nil) throws -> Float {
        Float(try double(key, def.map(Double.init), min: min, max: max))
    }

    /// A list of numbers, or nil when the key is absent.
    mutating func floats(_ key: String, min: Double? = nil) throws -> [Float]? {
        guard let v = raw(key) else { return nil }
        guard let list = v as? [Any], !list.isEmpty else {
            throw bad(key, v, "a list of numbers, e.g. [0.5, 0.5, 0.5]")
        }
        return try list.map { x in
            let d: Double
            if let y = x as? Double {
                d = y
            } else if let y = x as? Int {
                d = Double(y)
            } else if let s = x as? String, let y = Double(s) {
                d = y
            } else {
                throw bad(key, v, "a list of numbers")
            }
            if let min, !(d >= min) {
                throw ConfigError(
                    "\(source): \(key): every entry must be at least \(min), got "
                        + "\(d)")
            }
            return Float(d)
        }
    }

    mutating func bool(_ key: String, _ def: Bool) throws -> Bool {
        guard let v = raw(key) else { return def }
        guard let b = v as? Bool else { throw bad(key, v, "true or false") }
        return b
    }

    mutating func string(_ key: String, _ def: String? = nil) throws -> String {
        guard let v = raw(key) else {
            guard let def else { return deferMissing(key, "a string", placeholder: "") }
            return def
        }
        if let s = v as? String { return s }
        if v is Int || v is Double { return "\(v)" }
        throw bad(key, v, "a string")
    }

    /// A string or a non-empty list of strings (e.g. token shards: names or glob patterns).
    mutating func strings(_ key: String, _ def: [String]) throws -> [String] {
        guard let v = raw(key) else { return def }
        if let s = v as? String { return [s] }
        guard let list = v as? [Any], !list.isEmpty, list.allSatisfy({ $0 is String }) else {
            throw bad(key, v, "a file name, a glob pattern or a list of them")
        }
        return list.map { $0 as! String }
    }

    mutating func choice<E: RawRepresentable & CaseIterable>(_ key: String, _ def: E) throws -> E
    where E.RawValue == String {
        let s = try string(key, def.rawValue)
        guard let e = E(rawValue: s) else {
            throw ConfigError(
                "\(source): \(key): '\(s)' is not one of "
                    + "\(E.allCases.map { $0.rawValue }.joined(separator: ", "))")
        }
        return e
    }

    /// Every key in the tree that nobody read, as dotted paths.
    func unknownKeys() -> [String] {
        var out: [String] = []
        func walk(_ d: [String: Any], _ prefix: String) {
            for (k, v) in d {
                let path = prefix.isEmpty ? k : prefix + "." + k
                if used.contains(path) { continue }
                if let sub = v as? [String: Any], used.contains(where: { $0.hasPrefix(path + ".") }) {
                    walk(sub, path)
                } else {
                    out.append(path)
                }
            }
        }
        walk(tree, "")
        return out.sorted()
    }
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions each cost 1.
func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { d[i][0] = i }
    for j in 0...b.count { d[0][j] = j }
    for i in 1...a.count {
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
        }
    }
    return d[a.count][b.count]
}
