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

    /// `hosts` namespaces with `perHost` ranks each.
    func hosts(_ hosts: Int, _ perHost: Int, _ args: [String], timeout: Double = 240) throws -> Harness.Outcome {
        try h.run(["SWIFT_FF_TRAIN=\(h.binary)", "bash", script, "-H", "\(hosts)", "-n", "\(perHost)", "--"] + args,
                  timeout: timeout)
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

    func testCheckpointWrittenOnTwoHostsResumesOnOneAndOnThree() throws {
        let full = try h.config(name: "full", batch: 12, checkpointEvery: 10)
        ok(try h.run([h.binary, "--config", full]))
        let reference = try h.weights("full")
        for (name, resume) in [("to1", 1), ("to3", 3)] {
            let cfg = try h.config(name: name, batch: 12, checkpointEvery: 10)
            ok(try hosts(2, 1, ["--config", cfg, "--debug-stop-at-step", "10"]))
            ok(resume == 1 ? try h.run([h.binary, "--config", cfg, "--resume", "auto"])
                           : try hosts(3, 1, ["--config", cfg, "--resume", "auto"]))
            XCTAssertLessThan(relL2(try h.weights(name), reference), 1e-5, "2 hosts -> \(resume)")
        }
    }
}
