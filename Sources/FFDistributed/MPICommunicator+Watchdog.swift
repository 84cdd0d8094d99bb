import Foundation

/// The watchdog's verdict: which ranks of the whole job hold a collective up, with their hosts.
/// Ranks on this node are read from the shared-memory board, ranks on other nodes from their
/// heartbeat files; neither goes through MPI, which is what is stuck.
extension MPICommunicator {
    /// Another rank as the watchdog sees it.
    enum Seen {
        /// Polls the collective it waits in: a victim.
        case waiting(rank: Int, detail: String)
        /// Does not poll (computing, frozen or dead): holds the collective up.
        case stalled(rank: Int, detail: String)
        /// Cannot be judged (no heartbeat to read).
        case unknown(rank: Int, detail: String)
    }

    /// The first verdict stands: once a rank has aborted the job, the stalled rank may wake (the
    /// abort's SIGTERM ends a sleep) and look like it waits, so later watchdogs repeat the rank the
    /// first one named, found on the board (this node) or in a heartbeat file (other nodes).
    func verdict() -> String {
        let remote = (0..<size).filter { $0 != rank && !nodeWorldRanks.contains(Int32($0)) }
        let before = heartbeats.map { hb in remote.compactMap { hb.read($0) } } ?? []
        for (i, slot) in slots.enumerated() where i != nodeRank && slot[2] > 0 {
            return named(Int(slot[2] - 1), by: Int(nodeWorldRanks[i]))
        }
        if let b = before.first(where: { $0.named > 0 }) { return named(Int(b.named - 1), by: b.rank) }
        let seen = (localRanks() + remoteRanks(remote, before)).sorted { rankOf($0) < rankOf($1) }
        var stalled: [String] = [], waiting: [String] = [], unknown: [String] = []
        for s in seen {
            switch s {
            case .stalled(let r, let d): stalled.append("\(r) (on \(host(r)), \(d))")
            case .waiting(let r, let d): waiting.append("\(r) (on \(host(r)), \(d))")
            case .unknown(let r, let d): unknown.append("\(r) (on \(host(r)), \(d))")
            }
        }
        let culprits = seen.compactMap { s -> Int? in
            if case .stalled(let r, _) = s { return r }; return nil
        }
        if let first = culprits.first {
            board?[2] = Int64(first) + 1
            heartbeats?.publish()
            return "waiting for rank(s) " + stalled.joined(separator: ", ")
        }
        var text =
            "no rank is known to be stalled ("
            + (waiting.isEmpty ? "no other rank waits" : "waiting: " + waiting.joined(separator: ", ")) + ")"
        if !unknown.isEmpty { text += "; cannot judge rank(s) " + unknown.joined(separator: ", ") }
        return text
    }

    func host(_ r: Int) -> String { r < hostNames.count ? "host \(hostNames[r])" : "an unknown host" }

    private func rankOf(_ s: Seen) -> Int {
        switch s {
        case .waiting(let r, _), .stalled(let r, _), .unknown(let r, _): return r
        }
    }

    private func named(_ culprit: Int, by reporter: Int) -> String {
        "waiting for rank(s) \(culprit) (on \(host(culprit)); named by rank \(reporter)'s watchdog, which fired first)"
    }

    /// What a rank that does not poll was doing, from the collectives it entered.
    private func stalledDetail(entered n: Int64) -> String {
        n < entered
            ? "entered \(n) of my \(entered) collectives, not waiting in one"
            : "inside collective \(n) but not progressing it"
    }

    /// The other ranks on this node, from the shared-memory board: a rank waits when it polled
    /// within the last second (the node shares one monotonic clock).
    private func localRanks() -> [Seen] {
        let now = Self.nowMillis()
        return nodeWorldRanks.enumerated().filter { $0.offset != nodeRank }.map { i, wr in
            let n = slots[i][0], poll = slots[i][1]
            if poll > 0 && now - poll < 1000 {
                return .waiting(rank: Int(wr), detail: "waiting in its collective \(n)")
            }
            return .stalled(rank: Int(wr), detail: stalledDetail(entered: n))
        }
    }

    /// The ranks on other nodes, from their heartbeat files read `before` and again a window
    /// later: clocks of different hosts are not compared, only whether a rank's poll time and its
    /// publisher's beat moved.
    private func remoteRanks(_ remote: [Int], _ before: [HeartbeatBoard.Beat]) -> [Seen] {
        guard !remote.isEmpty else { return [] }
        guard let hb = heartbeats else {
            return remote.map {
                .unknown(rank: $0, detail: "no heartbeat folder, so ranks on other nodes are not seen")
            }
        }
        usleep(UInt32(HeartbeatBoard.window * 1_000_000))
        return remote.map { r in
            guard let b = hb.read(r) else {
                return .unknown(rank: r, detail: "no heartbeat file in \(hb.folder): does its host share this folder?")
            }
            guard let a = before.first(where: { $0.rank == r }) else {
                return .unknown(rank: r, detail: "its heartbeat file appeared only now")
            }
            if b.beat == a.beat {
                return .stalled(rank: r, detail: "its heartbeat stopped: the process is dead or frozen")
            }
            if b.poll > 0 && b.poll != a.poll {
                return .waiting(rank: r, detail: "waiting in its collective \(b.entered)")
            }
            return .stalled(rank: r, detail: stalledDetail(entered: b.entered))
        }
    }
}
