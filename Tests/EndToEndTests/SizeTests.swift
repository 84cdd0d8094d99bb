import Foundation
import XCTest
import FFTrain

/// Sizes no machine here can hold are refused before anything is allocated.
final class SizeTests: XCTestCase {
    var h: Harness!
    override func setUpWithError() throws { h = try Harness() }
    override func tearDown() { h = nil }

    func testAHugeModelIsRefusedWithWhatItNeedsInsteadOfCrashing() throws {
        let cfg = try h.config(name: "huge")
        let o = try h.run([h.binary, "--config", cfg, "--set", "model.d_model=4000000"])
        XCTAssertEqual(o.status, 1, o.output)
        XCTAssertTrue(o.output.contains("\(cfg): this model and batch need "), o.output)
        XCTAssertTrue(o.output.contains("GB available"), o.output)
        // Under mpirun every rank says it, with the ranks that share the machine counted.
        let two = try h.mpirun(2, ["--config", cfg, "--set", "model.d_ff=100000000"])
        XCTAssertNotEqual(two.status, 0)
        for r in 0..<2 { XCTAssertTrue(two.output.contains("rank \(r): error: \(cfg): this model"), two.output) }
        XCTAssertTrue(two.output.contains("per rank x 2 ranks on this machine"), two.output)
    }

    func testAbsurdThreadCountsAreRefusedNamingTheKey() throws {
        let cfg = try h.config(name: "threads")
        let o = try h.run([h.binary, "--config", cfg, "--set", "train.threads=5000"])
        XCTAssertEqual(o.status, 1, o.output)
        XCTAssertTrue(o.output.contains("train.threads: 5000 is more than this machine can use"), o.output)
    }

    func testTheBudgetArithmetic() throws {
        XCTAssertNoThrow(try MemoryBudget.check(1e9, source: "c.yaml", available: 2e9))
        XCTAssertThrowsError(try MemoryBudget.check(3e9, source: "c.yaml", available: 2e9)) { e in
            XCTAssertTrue("\(e)".hasPrefix("c.yaml: this model and batch need 3.0 GB, 2.0 GB available"), "\(e)")
        }
        XCTAssertThrowsError(try MemoryBudget.check(3e9, source: "c.yaml", threadCopies: true, available: 2e9)) {
            XCTAssertTrue("\($0)".hasSuffix("or set train.thread_split: operations (the threads' copies of the model "
                + "take a gradient buffer each and a second set of activations)"), "\($0)")
        }
        XCTAssertNoThrow(try MemoryBudget.checkThreads(8, source: "c.yaml", cores: 2))
        XCTAssertThrowsError(try MemoryBudget.checkThreads(9, source: "c.yaml", cores: 2))
        XCTAssertThrowsError(try MemoryBudget.checkThreads(1025, source: "c.yaml", cores: 1000))
        XCTAssertNotNil(MemoryBudget.available(), "/proc/meminfo is readable here")
    }
}
