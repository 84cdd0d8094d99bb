import CMPI
import Foundation

/// A failed MPI call: which call, on which rank, and MPI's own message.
public struct MPIError: Error, CustomStringConvertible {
    public let call: String
    public let rank: Int
    public let code: Int32
    public let message: String
    public var description: String { "rank \(rank): \(call) failed (\(code)): \(message)" }
}

/// Open MPI behind the `Communicator` protocol.
///
/// Every blocking collective is issued non-blocking and waited on with a watchdog: if it has not
/// completed within `watchdogSeconds`, the rank prints which collective, at which step, and which
/// ranks (with their hosts) hold it up, then aborts the whole job (exit code 3). The view of the
/// ranks on its own node comes from a shared-memory window in which every rank publishes how many
/// collectives it has entered and when it last polled one it waits in, so it can be read even when
/// the other rank is stuck or dead; ranks on other nodes publish the same slots as heartbeat files
/// in a shared folder (`publishHeartbeats(in:)`, see `HeartbeatBoard` for why). Neither depends on
/// the stuck collective. A rank that waits is a victim however far behind it is (it may wait for
/// the stalled rank to relay an earlier collective); the culprit is the rank that does not poll.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    let world: MPI_Comm
    /// Seconds a collective may take before the watchdog aborts the job.
    public var watchdogSeconds: Double = 300
    /// Describes where the caller is (e.g. "step 12"), for watchdog messages.
    public var where_: () -> String = { "" }

    // Node-local progress board: each node rank's three slots hold the number of collectives it
    // has entered, the monotonic time (ms) it last polled one it waits in (0: not waiting), and,
    // once its watchdog fired, 1 + the world rank it named (0: none); `board` is this rank's.
    var nodeComm: MPI_Comm? = nil
    var board: UnsafeMutablePointer<Int64>? = nil
    /// Every node rank's slots, by node rank.
    var slots: [UnsafeMutablePointer<Int64>] = []
    var boardWindow: MPI_Win? = nil
    var nodeWorldRanks: [Int32] = []
    var nodeRank = 0
    var entered: Int64 = 0
    /// Called right after entering a collective, with its number (fault injection in tests).
    public var afterEnter: ((Int64) -> Void)?
    /// Every rank's host name, by world rank.
    public private(set) var hostNames: [String] = []
    /// Rank 0's random number, the same on every rank: marks this job's heartbeat files.
    var jobToken: UInt64 = 0
    var heartbeats: HeartbeatBoard?

    /// True when this process was started by mpirun / an MPI launcher.
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_RANK"] != nil
    }

    public init() throws {
        // Open MPI's non-blocking allreduce (libnbc) defaults to a binomial reduce + broadcast
        // below 4 ranks, which moves every byte twice; Rabenseifner's reduce-scatter + allgather
        // moves each once, as the blocking allreduce does. Its non-blocking reduce (ZeRO-1's
        // buckets) defaults to a segmented chain that ran 2-4x slower than a binomial tree on
        // shared memory (BENCHMARKS.md). A value the user set wins.
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", 0)
        setenv("OMPI_MCA_coll_libnbc_ireduce_algorithm", "2", 0)
        var provided: Int32 = 0
        let rc = MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided)
        world = cmpi_comm_world()
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(world, &r)
        MPI_Comm_size(world, &s)
        rank = Int(r); size = Int(s)
        try check(rc, "MPI_Init_thread")
        try check(MPI_Comm_set_errhandler(world, cmpi_errors_return()), "MPI_Comm_set_errhandler")
        try setUpBoard()
        try shareHostNames()
    }

    deinit { finalize() }

    private var finalized = false
    /// Ends MPI use in this process (idempotent).
    public func finalize() {
        guard !finalized else { return }
        finalized = true
        heartbeats?.stop()
        heartbeats = nil
        if boardWindow != nil { MPI_Win_free(&boardWindow) }
        if nodeComm != nil { MPI_Comm_free(&nodeComm) }
        MPI_Finalize()
    }

    /// Ends the whole job from this rank (every process of it exits with `code`).
    public func abort(code: Int32) -> Never {
        MPI_Abort(world, code)
        exit(code)
    }

    func check(_ rc: Int32, _ call: String) throws {
        guard rc != MPI_SUCCESS else { return }
        var buf = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var len: Int32 = 0
        MPI_Error_string(rc, &buf, &len)
        throw MPIError(call: call, rank: rank, code: rc, message: String(cString: buf))
    }

    private func setUpBoard() throws {
        var node: MPI_Comm? = nil
        try check(
            MPI_Comm_split_type(world, cmpi_comm_type_shared(), Int32(rank), cmpi_info_null(), &node),
            "MPI_Comm_split_type")
        nodeComm = node
        var nr: Int32 = 0, ns: Int32 = 0
        MPI_Comm_rank(node, &nr); MPI_Comm_size(node, &ns)
        nodeRank = Int(nr)
        var base: UnsafeMutableRawPointer? = nil
        var win: MPI_Win? = nil
        try check(
            MPI_Win_allocate_shared(
                MPI_Aint(3 * MemoryLayout<Int64>.size), Int32(MemoryLayout<Int64>.size),
                cmpi_info_null(), node, &base, &win),
            "MPI_Win_allocate_shared")
        boardWindow = win
        // Each node rank's own segment, asked for one by one: Open MPI may pad segments, so
        // slot 0's address plus an offset is not another rank's segment.
        slots = try (0..<Int(ns)).map { i in
            var size: MPI_Aint = 0, disp: Int32 = 0
            var at: UnsafeMutableRawPointer? = nil
            try check(MPI_Win_shared_query(win, Int32(i), &size, &disp, &at), "MPI_Win_shared_query")
            return at!.assumingMemoryBound(to: Int64.self)
        }
        board = slots[nodeRank]
        for k in 0..<3 { board?[k] = 0 }
        var me = Int32(rank)
        nodeWorldRanks = [Int32](repeating: 0, count: Int(ns))
        try check(MPI_Allgather(&me, 1, cmpi_int32(), &nodeWorldRanks, 1, cmpi_int32(), node), "MPI_Allgather")
        MPI_Barrier(node)
    }

    /// Every rank learns every rank's host name (for watchdog messages) and rank 0's job token.
    private func shareHostNames() throws {
        let width = 64
        var mine = [UInt8](repeating: 0, count: width)
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        let bytes = Array(String(cString: name).utf8.prefix(width - 1))
        mine.replaceSubrange(0..<bytes.count, with: bytes)
        var all = [UInt8](repeating: 0, count: width * size)
        try check(
            MPI_Allgather(&mine, Int32(width), cmpi_uint8(), &all, Int32(width), cmpi_uint8(), world),
            "MPI_Allgather")
        hostNames = (0..<size).map { r in
            let slice = all[(r * width)..<((r + 1) * width)].prefix { $0 != 0 }
            return String(decoding: slice, as: UTF8.self)
        }
        jobToken = rank == 0 ? UInt64.random(in: 1...UInt64.max) : 0
        try check(MPI_Bcast(&jobToken, 1, cmpi_int64(), 0, world), "MPI_Bcast")
    }

    /// Starts publishing this rank's watchdog slots as a heartbeat file in `folder`, which must be
    /// the same folder, on a file system every host sees, on every rank (the run folder's
    /// `heartbeats`). Without it, a watchdog can judge only the ranks on its own node.
    public func publishHeartbeats(in folder: String) throws {
        guard heartbeats == nil, let board else { return }
        let hb = HeartbeatBoard(
            folder: folder, rank: rank, size: size, host: hostNames[rank], token: jobToken,
            slots: board)
        try hb.start()
        heartbeats = hb
    }

    /// Marks entry into a collective on the progress board.
    private func enter() {
        entered += 1
        if let board {
            let p = board
            // A plain store is visible to the readers' plain loads on the same node (x86/arm64 TSO or
            // eventual visibility); the watchdog only needs an approximate, eventual picture.
            p.pointee = entered
        }
        afterEnter?(entered)
    }

    /// Milliseconds of the monotonic clock, which every process on the node shares.
    static func nowMillis() -> Int64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Int64(t.tv_sec) * 1000 + Int64(t.tv_nsec) / 1_000_000
    }

    /// Publishes that this rank is polling a collective it waits in (or, with 0, no longer).
    private func heartbeat(_ millis: Int64) {
        board?[1] = millis
    }

    /// Waits for `request` with the watchdog.
    private func wait(_ request: inout MPI_Request?, _ what: @autoclosure () -> String) throws {
        var one = [request]
        try waitAll(&one, what())
        request = one[0]
    }

    /// Waits for all of `requests` with the watchdog, testing them together: Open MPI's
    /// non-blocking collectives progress only inside MPI calls, and a schedule of several rounds
    /// (Rabenseifner's, a binomial tree) advances one round per test on each rank, so the first
    /// half second polls back to back (yielding the core, which matters when ranks outnumber
    /// cores); after that the poll backs off to at most 1 ms between tests.
    private func waitAll(_ requests: inout [MPI_Request?], _ what: @autoclosure () -> String) throws {
        guard !requests.isEmpty else { return }
        let start = Date()
        var done: Int32 = 0
        var sleepMicros: UInt32 = 0
        defer { heartbeat(0) }
        while true {
            heartbeat(Self.nowMillis())
            try check(
                MPI_Testall(Int32(requests.count), &requests, &done, cmpi_statuses_ignore()),
                "MPI_Testall(\(what()))")
            if done != 0 { return }
            let elapsed = Date().timeIntervalSince(start)
            if elapsed > watchdogSeconds { watchdogFire(what(), elapsed) }
            if elapsed < 0.5 {
                sched_yield()
            } else {
                sleepMicros = min(max(sleepMicros * 2, 10), 1_000)
                usleep(sleepMicros)
            }
        }
    }

    /// A plain blocking MPI_Allreduce (no watchdog): the yardstick for benchmarks.
    public func rawAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try check(
            MPI_Allreduce(cmpi_in_place(), buffer, Int32(count), cmpi_float(), cmpi_sum(), world),
            "MPI_Allreduce")
    }

    private func watchdogFire(_ what: String, _ elapsed: Double) -> Never {
        let msg =
            "rank \(rank): watchdog: collective \(what) at \(where_()) did not complete within "
            + "\(String(format: "%.0f", watchdogSeconds)) s; \(verdict()). Aborting the job.\n"
        FileHandle.standardError.write(Data(msg.utf8))
        abort(code: 3)
    }

    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        enter()
        var req: MPI_Request? = nil
        try check(
            MPI_Iallreduce(cmpi_in_place(), buffer, Int32(count), cmpi_float(), cmpi_sum(), world, &req),
            "MPI_Iallreduce")
        try wait(&req, "allreduce(\(count) floats)")
    }

    public func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws {
        enter()
        var req: MPI_Request? = nil
        try check(
            MPI_Iallreduce(cmpi_in_place(), buffer, Int32(count), cmpi_double(), cmpi_sum(), world, &req),
            "MPI_Iallreduce")
        try wait(&req, "allreduce(\(count) doubles)")
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        try broadcast(bytes: UnsafeMutableRawPointer(buffer), count: count * 4, root: root)
    }

    public func broadcast(bytes: UnsafeMutableRawPointer, count: Int, root: Int) throws {
        enter()
        var req: MPI_Request? = nil
        try check(MPI_Ibcast(bytes, Int32(count), cmpi_uint8(), Int32(root), world, &req), "MPI_Ibcast")
        try wait(&req, "broadcast(\(count) bytes)")
    }

    public func allgather(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws {
        enter()
        var req: MPI_Request? = nil
        let c = counts.map { Int32($0) }
        var displs: [Int32] = []
        var off: Int32 = 0
        for x in c { displs.append(off); off += x }
        try check(
            MPI_Iallgatherv(cmpi_in_place(), 0, cmpi_float(), buffer, c, displs, cmpi_float(), world, &req),
            "MPI_Iallgatherv")
        try wait(&req, "allgather(\(counts.reduce(0, +)) floats)")
    }

    public func alltoallv(
        _ send: UnsafePointer<Float>, sendCounts: [Int], sendOffsets: [Int],
        _ recv: UnsafeMutablePointer<Float>, recvCounts: [Int], recvOffsets: [Int]
    ) throws {
        enter()
        var req: MPI_Request? = nil
        let sc = sendCounts.map { Int32($0) }, sd = sendOffsets.map { Int32($0) }
        let rc = recvCounts.map { Int32($0) }, rd = recvOffsets.map { Int32($0) }
        try check(MPI_Ialltoallv(send, sc, sd, cmpi_float(), recv, rc, rd, cmpi_float(), world, &req), "MPI_Ialltoallv")
        try wait(&req, "alltoallv(\(recvCounts.reduce(0, +)) floats)")
    }

    public func allgather(bytes buffer: UnsafeMutableRawPointer, count: Int) throws {
        enter()
        var req: MPI_Request? = nil
        try check(
            MPI_Iallgather(cmpi_in_place(), 0, cmpi_uint8(), buffer, Int32(count), cmpi_uint8(), world, &req),
            "MPI_Iallgather")
        try wait(&req, "allgather(\(count * size) bytes)")
    }

    /// A barrier that gives up after `seconds` instead of aborting: lets every rank finish
    /// printing its error before any exits (mpirun kills the others when one exits non-zero).
    /// Returns whether all ranks arrived.
    @discardableResult
    public func barrier(within seconds: Double) -> Bool {
        var req: MPI_Request? = nil
        guard MPI_Ibarrier(world, &req) == MPI_SUCCESS else { return false }
        let start = Date()
        var done: Int32 = 0
        while Date().timeIntervalSince(start) < seconds {
            guard MPI_Test(&req, &done, cmpi_status_ignore()) == MPI_SUCCESS else { return false }
            if done != 0 { return true }
            usleep(1000)
        }
        return false
    }

    public func barrier() throws {
        enter()
        var req: MPI_Request? = nil
        try check(MPI_Ibarrier(world, &req), "MPI_Ibarrier")
        try wait(&req, "barrier")
    }

    // MARK: Non-blocking gradient buckets

    var pending: [MPI_Request?] = []

    public func startAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        enter()
        var req: MPI_Request? = nil
        try check(
            MPI_Iallreduce(cmpi_in_place(), buffer, Int32(count), cmpi_float(), cmpi_sum(), world, &req),
            "MPI_Iallreduce")
        pending.append(req)
    }

    public func startReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        enter()
        var req: MPI_Request? = nil
        // The root sums in place; the others' buffers are the send side only.
        let send: UnsafeRawPointer? = rank == root ? UnsafeRawPointer(cmpi_in_place()) : UnsafeRawPointer(buffer)
        try check(
            MPI_Ireduce(send, buffer, Int32(count), cmpi_float(), cmpi_sum(), Int32(root), world, &req),
            "MPI_Ireduce")
        pending.append(req)
    }

    public func progressPending() throws {
        guard !pending.isEmpty else { return }
        var flag: Int32 = 0
        try check(MPI_Testall(Int32(pending.count), &pending, &flag, cmpi_statuses_ignore()), "MPI_Testall")
    }

    public func waitPending(_ what: @autoclosure () -> String) throws {
        try waitAll(&pending, what())
        pending.removeAll(keepingCapacity: true)
    }
}
