import FFFormats
import Foundation
import FFTestSupport
import XCTest
import FFTrain

/// `--resume`: the newest verified checkpoint is found by scanning, damaged ones are skipped and
/// kept, committed folders are never written into or silently abandoned, finished runs stay
/// finished, and config changes are named.
final class ResumeTests: XCTestCase {
    var h: Harness!
    override func setUpWithError() throws { h = try Harness() }
    override func tearDown() { h = nil }

    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// Checkpoints every 2 steps, a crash in step 7, `latest` deleted: `--resume auto` still
    /// continues from step 6 and ends bit-identical to the uninterrupted 8-step run.
    func testDeletedLatestStillResumesFromTheNewestCommittedCheckpoint() throws {
        ok(try h.mpirun(2, ["--config", try h.config(name: "full", steps: 8, checkpointEvery: 2)]))
        let cfg = try h.config(name: "cut", steps: 8, checkpointEvery: 2)
        let crash = try h.mpirun(2, ["--config", cfg, "--debug-kill-rank", "1", "--debug-kill-step", "7"])
        XCTAssertNotEqual(crash.status, 0, crash.output)
        try FileManager.default.removeItem(atPath: h.checkpoints("cut") + "/latest")
        let resumed = try h.mpirun(2, ["--config", cfg, "--resume", "auto"])
        ok(resumed)
        XCTAssertTrue(resumed.output.contains("step-00000006 at step 6"), resumed.output)
        XCTAssertEqual(try h.weights("cut"), try h.weights("full"), "bit-identical to the uninterrupted run")
    }

    /// The newest checkpoint damaged (a bit flip in a shard): skipped with a warning naming it and
    /// why, kept under another name, and the run continues from the one before.
    func testDamagedNewestCheckpointFallsBackToTheOneBeforeAndIsKept() throws {
        ok(try h.run([h.binary, "--config", try h.config(name: "full", steps: 8, checkpointEvery: 2)]))
        let cfg = try h.config(name: "cut", steps: 8, checkpointEvery: 2)
        ok(try h.run([h.binary, "--config", cfg, "--debug-stop-at-step", "6"]))
        let six = h.checkpoints("cut") + "/step-00000006"
        var bytes = [UInt8](FileManager.default.contents(atPath: six + "/model-00001-of-00001.safetensors")!)
        bytes[bytes.count - 5] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: six + "/model-00001-of-00001.safetensors"))
        let resumed = try h.run([h.binary, "--config", cfg, "--resume", "auto"])
        ok(resumed)
        XCTAssertTrue(resumed.output.contains("warning: skipped step-00000006:"), resumed.output)
        XCTAssertTrue(resumed.output.contains("checksum mismatch"), resumed.output)
        XCTAssertTrue(resumed.output.contains("step-00000004 at step 4"), resumed.output)
        XCTAssertTrue(exists(six + ".damaged/trainer_state.json"), "the damaged checkpoint is kept aside")
        XCTAssertEqual(try h.weights("cut"), try h.weights("full"))
    }

    func testLatestPointingOutsideTheCheckpointsFolderIsRefused() throws {
        let cfg = try h.config(name: "out", steps: 4, checkpointEvery: 2)
        ok(try h.run([h.binary, "--config", cfg, "--debug-stop-at-step", "2"]))
        try "../../other-run/checkpoints/step-00000002\n".write(
            toFile: h.checkpoints("out") + "/latest",
            atomically: true, encoding: .utf8)
        let o = try h.run([h.binary, "--config", cfg, "--resume", "auto"])
        failed(o, "latest: names '../../other-run/checkpoints/step-00000002', not a folder inside")
        failed(try h.run([h.binary, "inspect", h.checkpoints("out")]), "not a folder inside")
    }

    /// Without `--resume`, committed checkpoints stop the start; `--resume fresh` moves them
    /// aside (nothing is deleted) and trains from step 0.
    func testFreshStartOverCommittedCheckpointsIsRefusedUnlessForcedAndThenKeepsThem() throws {
        let cfg = try h.config(name: "f", steps: 4, checkpointEvery: 2)
        ok(try h.run([h.binary, "--config", cfg, "--debug-stop-at-step", "2"]))
        failed(try h.run([h.binary, "--config", cfg]), "holds committed checkpoints (newest step-00000002)")
        let fresh = try h.run([h.binary, "--config", cfg, "--resume", "fresh"])
        ok(fresh)
        XCTAssertTrue(fresh.output.contains("--resume fresh: moved"), fresh.output)
        let runDir = h.dir + "/runs/f"
        let aside = try FileManager.default.contentsOfDirectory(atPath: runDir).filter {
            $0.hasPrefix("checkpoints.before-fresh-")
        }
        XCTAssertEqual(aside.count, 1)
        XCTAssertTrue(exists(runDir + "/" + aside[0] + "/step-00000002/trainer_state.json"))
        XCTAssertTrue(exists(h.checkpoints("f") + "/step-00000004/trainer_state.json"))
    }

    /// A finished run stays finished (exit 0, files untouched); raising train.steps continues it.
    func testFinishedRunIsReportedCompleteAndRaisingStepsContinuesIt() throws {
        let cfg = try h.config(name: "done", steps: 4, checkpointEvery: 2)
        ok(try h.run([h.binary, "--config", cfg]))
        let run = h.dir + "/runs/done"
        let summary = FileManager.default.contents(atPath: run + "/summary.json")
        let weights = FileManager.default.contents(atPath: run + "/model.safetensors")
        let again = try h.run([h.binary, "--config", cfg, "--resume", "auto"])
        ok(again)
        XCTAssertTrue(again.output.contains("is complete"), again.output)
        XCTAssertEqual(FileManager.default.contents(atPath: run + "/summary.json"), summary)
        XCTAssertEqual(FileManager.default.contents(atPath: run + "/model.safetensors"), weights)
        let more = try h.run([h.binary, "--config", cfg, "--resume", "auto", "--set", "train.steps=6"])
        ok(more)
        XCTAssertTrue(more.output.contains("note: train.steps 4 -> 6"), more.output)
        XCTAssertTrue(more.output.contains("at step 4"), more.output)
        let text = try String(contentsOfFile: run + "/summary.json", encoding: .utf8)
        XCTAssertTrue(text.contains("\"steps\" : 6"), text)
    }

    /// The final checkpoint written but the run killed before its summary: resuming evaluates and
    /// writes summary.json (final_train_loss absent: no step ran in this process).
    func testResumeAtTheFinalStepWithoutSummaryFinishesTheRun() throws {
        let cfg = try h.config(name: "last", steps: 4, checkpointEvery: 2)
        ok(try h.run([h.binary, "--config", cfg]))
        try FileManager.default.removeItem(atPath: h.dir + "/runs/last/summary.json")
        let o = try h.run([h.binary, "--config", cfg, "--resume", "auto"])
        ok(o)
        XCTAssertTrue(o.output.contains("at step 4"), o.output)
        XCTAssertTrue(exists(h.dir + "/runs/last/summary.json"))
    }

    func testConfigChangesOnResumeAreNamedAndModelChangesRefused() throws {
        let cfg = try h.config(name: "cc", steps: 6, checkpointEvery: 2)
        ok(try h.run([h.binary, "--config", cfg, "--debug-stop-at-step", "2"]))
        let p = try h.run([
            h.binary, "--config", cfg, "--resume", "auto", "--set", "model.attention.p=6",
            "--set", "model.layers=3", "--allow-config-change",
        ])
        failed(p, "the config changes the model this checkpoint holds: model.attention.p: 4 -> 6")
        XCTAssertTrue(p.output.contains("model.layers: 2 -> 3"), p.output)
        let lr = try h.run([h.binary, "--config", cfg, "--resume", "auto", "--set", "train.lr=0.001"])
        failed(lr, "the config changes the training recipe: train.lr: 0.003 -> 0.001; pass --allow-config-change")
        // R's initial value is in the weights: changing r_init is no change at all.
        let allowed = try h.run([
            h.binary, "--config", cfg, "--resume", "auto", "--set", "train.lr=0.001",
            "--set", "model.attention.r_init=1.5", "--allow-config-change",
        ])
        ok(allowed)
        XCTAssertTrue(
            allowed.output.contains("warning: continuing with a changed recipe: train.lr: 0.003 -> 0.001"),
            allowed.output)
    }
}
