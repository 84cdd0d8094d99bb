import Foundation

extension Checkpoint {
    /// The folder `latest` names, checked to be a plain folder name inside `root` (nil: no file).
    public static func latestName(root: String) throws -> String? {
        let file = (root as NSString).appendingPathComponent("latest")
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, !name.contains("/"), name != ".", name != "..", !name.contains("\0") else {
            throw CheckpointError(
                "\(file): names '\(name)', not a folder inside \(root); latest must be a plain "
                    + "folder "
                    + "name such as step-00000500 (fix or delete it)")
        }
        return name
    }

    /// The committed folder `latest` names under `root`; throws when `latest` points elsewhere.
    public static func resolveLatest(root: String) throws -> String? {
        guard let name = try latestName(root: root) else { return nil }
        let p = (root as NSString).appendingPathComponent(name)
        return FileManager.default.fileExists(atPath: (p as NSString).appendingPathComponent(stateFile)) ? p : nil
    }

    /// Why a committed folder cannot be resumed from (nil: its state parses and every checksum holds).
    static func damage(_ dir: String) -> String? {
        do {
            let state = try readState(dir)
            try verify(dir, state)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Renames `dir` to `dir.SUFFIX` (or `dir.SUFFIX-2`, ...), so nothing is overwritten or lost.
    /// The new name is no `step-N` folder: pruning and scanning leave it alone.
    @discardableResult
    public static func setAside(_ dir: String, suffix: String) throws -> String {
        var target = "\(dir).\(suffix)", k = 2
        while FileManager.default.fileExists(atPath: target) { target = "\(dir).\(suffix)-\(k)"; k += 1 }
        do { try FileManager.default.moveItem(atPath: dir, toPath: target) } catch {
            throw CheckpointError("\(dir): cannot move it aside to \(target) (\(error.localizedDescription))")
        }
        return target
    }

    /// The `step-N` folders under `root`, newest first.
    static func stepFolders(root: String) -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("step-"), let s = Int(name.dropFirst(5)) else { return nil }
            return (s, (root as NSString).appendingPathComponent(name))
        }.sorted { $0.0 > $1.0 }
    }

    /// Picks the newest committed checkpoint under `root` whose state and checksums verify, by
    /// scanning the folders (`latest` is only checked, not trusted). Uncommitted folders are
    /// removed; damaged ones newer than the pick are moved aside as `step-N.damaged`. Throws when
    /// committed checkpoints exist but none verifies: a fresh start would then lose them.
    public static func selectNewest(root: String) throws -> (folder: String?, notes: [String]) {
        let latest = try latestName(root: root)
        var notes: [String] = [], damaged: [(String, String)] = []
        var chosen: String?
        for (_, path) in stepFolders(root: root) {
            let name = (path as NSString).lastPathComponent
            guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(stateFile)) else {
                // No trainer_state.json: a save that never committed (it is written last).
                try? FileManager.default.removeItem(atPath: path)
                notes.append("warning: skipped \(name): no \(stateFile) (a save that never committed); removed it")
                continue
            }
            if chosen != nil { continue }
            if let why = damage(path) { damaged.append((path, why)); continue }
            chosen = path
        }
        guard let chosen else {
            if damaged.isEmpty { return (nil, notes) }
            throw CheckpointError(
                "\(root): no committed checkpoint verifies ("
                    + damaged.map {
                        "\(($0.0 as NSString).lastPathComponent): \($0.1)"
                    }.joined(separator: "; ")
                    + "); refusing to start fresh over them: repair them, or pass --resume fresh to move them aside")
        }
        for (path, why) in damaged {
            let moved = try setAside(path, suffix: "damaged")
            notes.append("warning: skipped \((path as NSString).lastPathComponent): \(why); moved it to \(moved)")
        }
        if let latest, latest != (chosen as NSString).lastPathComponent {
            notes.append("note: \(root)/latest names \(latest); resuming from the newest verified checkpoint instead")
        }
        return (chosen, notes)
    }

    /// Moves committed checkpoints newer than `step` aside (as `step-N.superseded`), so that a
    /// run resumed from an older checkpoint never writes into a committed folder.
    public static func supersede(root: String, after step: Int) throws -> [String] {
        try stepFolders(root: root).filter { $0.step > step }.map { (_, path) in
            let moved = try setAside(path, suffix: "superseded")
            return "warning: \((path as NSString).lastPathComponent) is newer than the checkpoint resumed from; "
                + "moved it to \(moved)"
        }
    }
}
