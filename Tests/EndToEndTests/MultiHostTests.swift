import Foundation
import FFTestSupport
import XCTest

/// Several hosts on one machine: `launch/multihost.sh` makes each a network namespace with its
/// own hostname and address, and the job crosses them over TCP as it would across nodes.
final class MultiHostTests: XCTestCase {
    var h: Harness!
    var script = ""

    override func setUpWithError() throws {
        h = try Harness()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        script = root.appendingPathComponent("launch/multihost.sh").path
        guard getuid() == 0 else { throw XCTSkip("multi-host tests need root to create network namespaces") }
        for tool in ["/usr/sbin/ip", "/usr/bin/unshare"] where !FileManager.default.isExecutableFile(atPath: tool) {
            throw XCTSkip("multi-host tests need \(tool) (iproute2, util-linux)")
        }
    }

    override func tearDown() { h = nil }

    /// `hosts` namespaces with `perHost` ranks each; hosts other than host 0 get a private,
    /// empty `privateDir` when one is given.
    func hosts(
        _ hosts: Int, _ perHost: Int, _ args: [String], privateDir: String? = nil,
        timeout: Double = 240
    ) throws -> Harness.Outcome {
        let isolate = privateDir.map { ["-P", $0] } ?? []
        return try h.run(
            ["SWIFT_FF_TRAIN=\(h.binary)", "bash", script, "-H", "\(hosts)", "-n", "\(perHost)"]
                + isolate + ["--"] + args, timeout: timeout)
    }

    func testTwoHostsOfTwoRanksEqualOneRank() throws {
        let one = try h.config(name: "one")
        ok(try h.run([h.binary, "--config", one]))
        let four = try h.config(name: "four")
        let o = try hosts(2, 2, ["--config", four])
        ok(o)
        XCTAssertTrue(o.output.contains("4 rank(s)"), o.output)
        XCTAssertLessThan(relL2(try h.weights("four"), try h.weights("one")), 1e-5)
    }

    func testRankKilledOnTheRemoteHostEndsTheJob() throws {
        let cfg = try h.config(name: "killed", steps: 50, watchdog: 10)
        // Ranks 2 and 3 live on the second host.
        let o = try hosts(2, 2, ["--config", cfg, "--debug-kill-rank", "3", "--debug-kill-step", "3"], timeout: 120)
        XCTAssertFalse(o.timedOut, o.output)
        XCTAssertNotEqual(o.status, 0)
        XCTAssertTrue(o.output.contains("-h1"), "the message names the remote host:\n\(o.output)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.dir + "/runs/killed/summary.json"))
    }

    /// The last rank, on the second host, stalls in step 4. Every watchdog report names it with
    /// its host and names no rank that only waits; rank 0, on the first host, sees it only through
    /// its heartbeat file, since the shared-memory board ends at the node.
    func testRankStalledOnTheRemoteHostIsNamedWithItsHost() throws {
        for (perHost, stalled) in [(1, 1), (2, 3)] {
            let name = "stall-\(perHost)"
            let cfg = try h.config(name: name, steps: 50, watchdog: 3)
            let stall = [
                "--debug-stall-rank", "\(stalled)", "--debug-stall-step", "4", "--debug-stall-at", "backward",
                "--debug-stall-seconds", "120",
            ]
            let o = try hosts(2, perHost, ["--config", cfg] + stall, timeout: 120)
            XCTAssertFalse(o.timedOut, o.output)
            XCTAssertNotEqual(o.status, 0, o.output)
            let reports = o.output.split(separator: "\n").filter { $0.contains("watchdog: collective") }
            XCTAssertFalse(reports.isEmpty, "no watchdog report:\n\(o.output)")
            if perHost == 1 {
                XCTAssertTrue(reports.contains { $0.hasPrefix("rank 0: watchdog") }, o.output)
            }
            for line in reports {
                XCTAssertTrue(line.contains("at step 4"), String(line))
                XCTAssertTrue(line.contains("waiting for rank(s) \(stalled) (on host "), String(line))
                XCTAssertTrue(line.contains("-h1"), "names the stalled rank's host: \(line)")
                for innocent in 0..<(2 * perHost) where innocent != stalled {
                    XCTAssertFalse(
                        line.contains("rank(s) \(innocent) (") || line.contains(", \(innocent) ("),
                        "names rank \(innocent): \(line)")
                }
            }
        }
    }

    /// The second host writes its shards into a run folder of its own (a private tmpfs): rank 0
    /// cannot see them, and every rank stops with one message naming the folder, the rank and
    /// host whose files are missing, and the shared file system checkpoints need. Nothing is
    /// committed.
    func testCheckpointInAFolderTheHostsDoNotShareStopsEveryRank() throws {
        let cfg = try h.config(name: "unshared", steps: 6, checkpointEvery: 3)
        let o = try hosts(2, 1, ["--config", cfg], privateDir: h.dir + "/runs", timeout: 120)
        failed(o, "Checkpoints need a file system that every host shares")
        let folder = h.checkpoints("unshared") + "/step-00000003"
        for r in 0..<2 {
            XCTAssertTrue(o.output.contains("rank \(r): error: checkpoint folder \(folder): rank 0 on host "), o.output)
        }
        XCTAssertTrue(
            o.output.contains(
                "-h1: model-00002-of-00002.safetensors (missing), "
                    + "optimizer-00002-of-00002.safetensors (missing)"), o.output)
        XCTAssertTrue(o.output.contains("Nothing was committed."), o.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/trainer_state.json"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.checkpoints("unshared") + "/latest"))
    }

    func testCheckpointWrittenOnTwoHostsResumesOnOneAndOnThree() throws {
        let full = try h.config(name: "full", batch: 12, checkpointEvery: 10)
        ok(try h.run([h.binary, "--config", full]))
        let reference = try h.weights("full")
        for (name, resume) in [("to1", 1), ("to3", 3)] {
            let cfg = try h.config(name: name, batch: 12, checkpointEvery: 10)
            ok(try hosts(2, 1, ["--config", cfg, "--debug-stop-at-step", "10"]))
            ok(
                resume == 1
                    ? try h.run([h.binary, "--config", cfg, "--resume", "auto"])
                    : try hosts(3, 1, ["--config", cfg, "--resume", "auto"]))
            XCTAssertLessThan(relL2(try h.weights(name), reference), 1e-5, "2 hosts -> \(resume)")
        }
    }
}
