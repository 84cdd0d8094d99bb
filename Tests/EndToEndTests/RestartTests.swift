import Foundation
import XCTest
import FFTrain

/// launch/run-with-restarts.sh: a job whose rank dies is relaunched with --resume auto from the
/// newest verified checkpoint, and ends where the uninterrupted run does.
final class RestartTests: XCTestCase {
    var h: Harness!
    override func setUpWithError() throws { h = try Harness() }
    override func tearDown() { h = nil }

    var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("launch/run-with-restarts.sh").path
    }

    func testARankKilledTwiceIsRestartedTwiceAndEndsEqualToTheUninterruptedRun() throws {
        let full = try h.mpirun(2, ["--config", try h.config(name: "full", steps: 10, checkpointEvery: 2)])
        XCTAssertEqual(full.status, 0, full.output)
        let cfg = try h.config(name: "flaky", steps: 10, watchdog: 20, checkpointEvery: 2)
        let logs = h.dir + "/restart-logs"
        // Rank 1 dies in step 3 and, after the restart from step 2, in step 7; each kill fires once.
        let o = try h.run(
            [
                "bash", script, "-n", "2", "--max-restarts", "3", "--log-dir", logs, "--bin", h.binary,
                "--", "--config", cfg, "--debug-kill-rank", "1", "--debug-kill-step", "3",
                "--debug-kill-step", "7", "--debug-kill-marker", h.dir + "/kill",
            ], timeout: 300)
        XCTAssertFalse(o.timedOut, o.output)
        XCTAssertEqual(o.status, 0, o.output)
        let log = try String(contentsOfFile: logs + "/restarts.log", encoding: .utf8)
        XCTAssertTrue(log.contains("restart 1 of 3 after exit status"), log)
        XCTAssertTrue(log.contains("restart 2 of 3 after exit status"), log)
        XCTAssertFalse(log.contains("restart 3 of 3"), log)
        XCTAssertTrue(log.contains("cause:") && log.contains("signal 9"), log)
        XCTAssertTrue(log.contains("finished after 2 restart(s) on 2 rank(s)"), log)
        XCTAssertTrue(o.output.contains("step-00000002 at step 2"), o.output)
        XCTAssertTrue(o.output.contains("step-00000006 at step 6"), o.output)
        XCTAssertEqual(try h.weights("flaky"), try h.weights("full"), "bit-identical to the uninterrupted run")
    }

    func testRestartsStopAtTheLimitWithTheCause() throws {
        let cfg = try h.config(name: "always", steps: 10, checkpointEvery: 2)
        let o = try h.run(
            [
                "bash", script, "-n", "2", "--max-restarts", "1", "--log-dir", h.dir + "/l", "--bin", h.binary,
                "--", "--config", cfg, "--debug-kill-rank", "0", "--debug-kill-step", "3",
            ], timeout: 200)
        XCTAssertNotEqual(o.status, 0, o.output)
        let log = try String(contentsOfFile: h.dir + "/l/restarts.log", encoding: .utf8)
        XCTAssertTrue(log.contains("restart 1 of 1"), log)
        XCTAssertTrue(log.contains("no restarts left (1)"), log)
    }

    /// 3 ranks do not divide a batch of 8: the launcher steps down to 2 without spending a
    /// restart; a bad config fails once and is not restarted.
    func testRankCountStepsDownToDivideTheBatchAndStartUpErrorsAreNotRestarted() throws {
        let cfg = try h.config(name: "three", steps: 4, batch: 8)
        let o = try h.run(
            ["bash", script, "-n", "3", "--log-dir", h.dir + "/a", "--bin", h.binary, "--", "--config", cfg],
            timeout: 200)
        XCTAssertEqual(o.status, 0, o.output)
        let log = try String(contentsOfFile: h.dir + "/a/restarts.log", encoding: .utf8)
        XCTAssertTrue(log.contains("3 ranks do not divide the global batch: trying 2"), log)
        XCTAssertTrue(log.contains("finished after 0 restart(s) on 2 rank(s)"), log)
        let bad = try h.run(
            [
                "bash", script, "-n", "2", "--log-dir", h.dir + "/b", "--bin", h.binary, "--",
                "--config", h.dir + "/none.yaml",
            ], timeout: 100)
        XCTAssertNotEqual(bad.status, 0)
        let badLog = try String(contentsOfFile: h.dir + "/b/restarts.log", encoding: .utf8)
        XCTAssertTrue(badLog.contains("failed before training started"), badLog)
        XCTAssertFalse(badLog.contains("restart 1"), badLog)
    }
}
