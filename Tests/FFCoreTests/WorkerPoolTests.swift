import Foundation
import Synchronization
import XCTest

@testable import FFCore

/// parallelFor on the worker pool: every task once, on the worker the static split names, through
/// many back-to-back calls, nested calls, calls from several threads, and more workers than cores.
final class WorkerPoolTests: XCTestCase {
    /// Runs parallelFor and returns, per task, how often it ran and on which worker.
    private func record(_ count: Int, threads: Int) -> (runs: [Int], workers: [Int]) {
        let runs = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
        let workers = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
        defer { runs.deallocate(); workers.deallocate() }
        runs.initialize(repeating: 0)
        workers.initialize(repeating: -1)
        parallelFor(count, threads: threads) { t, w in
            runs[t] += 1; workers[t] = w
        }
        return (Array(runs), Array(workers))
    }

    func testEveryTaskRunsOnceOnItsStaticWorker() {
        for threads in [1, 2, 3, 8] {
            for count in [1, 2, 5, 64, 1000] {
                let (runs, workers) = record(count, threads: threads)
                let n = max(1, min(threads, count))
                XCTAssertEqual(runs, [Int](repeating: 1, count: count), "\(count) tasks on \(threads) threads")
                XCTAssertEqual(workers, (0..<count).map { $0 % n }, "\(count) tasks on \(threads) threads")
            }
        }
    }

    /// Short jobs back to back (the helpers catch each ticket while spinning), then jobs with
    /// pauses longer than the spin (the helpers sleep and must be woken).
    func testBackToBackAndAfterSleepingHelpers() {
        let sum = Atomic<Int>(0)
        for _ in 0..<20_000 {
            parallelFor(4, threads: 2) { t, _ in sum.add(t, ordering: .relaxed) }
        }
        XCTAssertEqual(sum.load(ordering: .relaxed), 20_000 * 6)
        for _ in 0..<5 {
            Thread.sleep(forTimeInterval: WorkerPool.spinSeconds * 4)
            let (runs, _) = record(10, threads: 3)
            XCTAssertEqual(runs, [Int](repeating: 1, count: 10))
        }
    }

    /// A parallelFor inside a worker finds the pool taken and runs on Dispatch instead.
    func testNestedCallsComplete() {
        let total = Atomic<Int>(0)
        parallelFor(4, threads: 2) { _, _ in
            parallelFor(8, threads: 2) { t, _ in total.add(t + 1, ordering: .relaxed) }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 4 * 36)
    }

    /// Callers on several threads at once: one gets the pool, the others Dispatch; none is lost.
    func testConcurrentCallersFromSeveralThreads() {
        let total = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<500 {
                parallelFor(6, threads: 3) { t, _ in total.add(t, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 4 * 500 * 15)
    }

    func testZeroAndCopySplitOverWorkers() {
        let n = 100_003
        var src = (0..<n).map { Float($0) }, dst = [Float](repeating: -1, count: n)
        parallelCopy(&dst, from: src, count: n, threads: 3)
        XCTAssertEqual(dst, src)
        parallelZero(&src, count: n - 1, threads: 3)
        XCTAssertEqual(src[..<(n - 1)].allSatisfy { $0 == 0 }, true)
        XCTAssertEqual(src[n - 1], Float(n - 1))
    }

    /// Tasks and pieces handed out as workers finish: each exactly once, whatever the thread count.
    func testDynamicTasksAndPiecesCoverEverythingOnce() {
        for threads in [1, 2, 3, 8] {
            for count in [1, 7, 1000, 100_003] {
                let runs = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
                defer { runs.deallocate() }
                runs.initialize(repeating: 0)
                // XCTest assertions stay on the test's thread; workers only record.
                let highestWorker = Atomic<Int>(0)
                parallelTasks(count, threads: threads) { t, w in
                    highestWorker.max(w, ordering: .relaxed)
                    runs[t] += 1
                }
                XCTAssertTrue(runs.allSatisfy { $0 == 1 }, "tasks: \(count) on \(threads) threads")
                XCTAssertLessThan(highestWorker.load(ordering: .relaxed), threads)
                runs.update(repeating: 0)
                parallelChunks(count, threads: threads, grain: 100) { r in
                    for i in r { runs[i] += 1 }
                }
                XCTAssertTrue(runs.allSatisfy { $0 == 1 }, "pieces: \(count) on \(threads) threads")
            }
        }
    }
}
