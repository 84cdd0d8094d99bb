import Foundation

/// Heartbeat files in a folder that every host of the job sees: how a watchdog judges ranks on
/// other nodes, whose shared-memory board it cannot read.
///
/// Why files in a shared folder and not a TCP side channel to rank 0: the run folder must be on a
/// file system every node shares anyway (every rank writes checkpoint shards there and rank 0
/// commits them), so the folder adds no port, address, firewall rule or listener thread, and
/// reading it depends on no other rank being alive — a side channel through rank 0 goes blind
/// exactly when rank 0 is the rank that hangs or dies. On a node that does not see the folder the
/// watchdog still says so (no heartbeat from that rank), and the checkpoint save stops with a
/// clear message about the file system anyway.
///
/// A publisher thread writes this rank's file, not the rank's main thread: the main thread only
/// stores counters in memory (the shared-memory board slots), so publishing costs the training
/// step nothing, and a rank stalled in computation still publishes that it is alive and not
/// polling a collective. A rank whose file stops changing is dead or frozen. The reader needs no
/// synchronised clocks across hosts: it samples every file twice, `window` seconds apart, and
/// judges by what changed.
final class HeartbeatBoard {
    /// One rank's published state.
    struct Beat: Equatable {
        var rank: Int
        var host: String
        /// Collectives entered.
        var entered: Int64
        /// The rank's own monotonic milliseconds when it last polled a collective (0: not waiting).
        var poll: Int64
        /// 1 + the world rank this rank's watchdog named (0: none).
        var named: Int64
        /// Incremented by every publication.
        var beat: Int64
    }

    let folder: String
    let rank: Int
    let size: Int
    let host: String
    /// Identifies this job: files left by an earlier job in the same folder are ignored.
    let token: UInt64
    /// Seconds between publications, and between the reader's two samples.
    static let interval = 0.5
    static let window = 2.0
    private let slots: UnsafeMutablePointer<Int64>
    private var beats: Int64 = 0
    private let stopLock = NSCondition()
    private var stopping = false
    private var running = false

    /// `slots` is this rank's three board slots (entered, poll, named), read by the publisher.
    init(folder: String, rank: Int, size: Int, host: String, token: UInt64, slots: UnsafeMutablePointer<Int64>) {
        self.folder = folder; self.rank = rank; self.size = size; self.host = host; self.token = token
        self.slots = slots
    }

    func path(_ r: Int) -> String { (folder as NSString).appendingPathComponent(String(format: "rank-%06d", r)) }

    /// Creates the folder and starts publishing every `interval` seconds until `stop()`.
    func start() throws {
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw MPIError(call: "heartbeat folder \(folder)", rank: rank, code: 0, message: "\(error)")
        }
        publish()
        running = true
        let thread = Thread { [self] in
            stopLock.lock()
            while !stopping {
                _ = stopLock.wait(until: Date().addingTimeInterval(Self.interval))
                if !stopping { publish() }
            }
            running = false
            stopLock.broadcast()
            stopLock.unlock()
        }
        thread.name = "heartbeat"
        thread.start()
    }

    /// Stops the publisher (waiting for it) and removes this rank's file.
    func stop() {
        stopLock.lock()
        stopping = true
        stopLock.broadcast()
        while running { stopLock.wait() }
        stopLock.unlock()
        unlink(path(rank))
        rmdir(folder)  // succeeds once the last rank's file is gone
    }

    /// Writes this rank's file in place (a fixed-size record, so a reader never sees it empty).
    /// Open, write, close each time: on NFS, close is what makes the data visible to other hosts.
    func publish() {
        beats += 1
        var line =
            "ff-heartbeat token=\(String(token, radix: 16)) rank=\(rank) host=\(host) entered=\(slots[0]) "
            + "poll=\(slots[1]) named=\(slots[2]) beat=\(beats)"
        line = line.padding(toLength: 255, withPad: " ", startingAt: 0) + "\n"
        let fd = open(path(rank), O_WRONLY | O_CREAT, 0o644)
        guard fd >= 0 else { return }
        _ = line.utf8CString.withUnsafeBufferPointer { pwrite(fd, $0.baseAddress, 256, 0) }
        close(fd)
    }

    /// Rank `r`'s current beat, or nil when its file is missing, unreadable or from another job.
    func read(_ r: Int) -> Beat? {
        guard let data = FileManager.default.contents(atPath: path(r)),
            let text = String(data: data, encoding: .utf8), text.hasPrefix("ff-heartbeat ")
        else { return nil }
        var fields: [String: String] = [:]
        for part in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
        }
        guard fields["token"] == String(token, radix: 16), fields["rank"] == String(r), let host = fields["host"],
            let entered = fields["entered"].flatMap({ Int64($0) }), let poll = fields["poll"].flatMap({ Int64($0) }),
            let named = fields["named"].flatMap({ Int64($0) }), let beat = fields["beat"].flatMap({ Int64($0) })
        else { return nil }
        return Beat(rank: r, host: host, entered: entered, poll: poll, named: named, beat: beat)
    }
}
