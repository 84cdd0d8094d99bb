import Foundation
import Synchronization

/// Runs `body(task, worker)` for task in 0..<count on `threads` workers. Worker w takes tasks
/// w, w + threads, ...: the split depends only on the counts, so results that are reduced per
/// task stay deterministic.
///
/// Worker 0 is the calling thread; the others come from `WorkerPool`, or from Dispatch when the
/// pool is busy (a nested call, another thread) or `FF_WORKERS=dispatch` is set.
public func parallelFor(_ count: Int, threads: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for t in 0..<count { body(t, 0) }
        return
    }
    func worker(_ w: Int) {
        var t = w
        while t < count { body(t, w); t += workers }
    }
    if workerPoolEnabled && WorkerPool.shared.run(workers: workers, worker) { return }
    withoutActuallyEscaping(worker) { worker in
        DispatchQueue.concurrentPerform(iterations: workers, execute: worker)
    }
}

/// Runs `body(task, worker)` for task in 0..<count on `threads` workers, each worker taking the
/// next task as it finishes one, so a worker that a busy core slows down takes fewer. For tasks
/// whose results do not depend on which worker runs them (`worker` only picks its scratch).
public func parallelTasks(_ count: Int, threads: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for t in 0..<count { body(t, 0) }
        return
    }
    let next = Atomic<Int>(0)
    parallelFor(workers, threads: workers) { _, w in
        while true {
            let task = next.add(1, ordering: .relaxed).oldValue
            if task >= count { return }
            body(task, w)
        }
    }
}

/// `FF_WORKERS=dispatch` runs every parallel loop on Dispatch's threads instead of the pool's (to
/// compare the two).
let workerPoolEnabled = ProcessInfo.processInfo.environment["FF_WORKERS"] != "dispatch"

/// Runs `body` on contiguous, near-equal slices of 0..<count, one per worker, in parallel. Fewer
/// workers take part when a slice would hold under `grain` items: a dispatch costs microseconds,
/// so small loops stay on the calling thread. Element-wise work and per-row work give the same
/// bits for any thread count, since each item is computed exactly as in a serial loop.
public func parallelRanges(_ count: Int, threads: Int, grain: Int, _ body: (Range<Int>) -> Void) {
    let workers = max(1, min(threads, count / max(grain, 1)))
    if workers == 1 {
        if count > 0 { body(0..<count) }
        return
    }
    parallelFor(workers, threads: workers) { w, _ in body((w * count / workers)..<((w + 1) * count / workers)) }
}

/// Runs `body` on contiguous pieces of 0..<count, up to four per worker, each worker taking the
/// next piece as it finishes one: a worker that a busy core or a cold cache slows down does less,
/// where a fixed split waits for it at the end of every loop. Fewer workers take part when a
/// worker would get under `grain` items. For row-wise and element-wise work, whose items do not
/// depend on which worker computes them (the same bits for any thread count and any order).
public func parallelChunks(_ count: Int, threads: Int, grain: Int, _ body: (Range<Int>) -> Void) {
    let workers = max(1, min(threads, count / max(grain, 1)))
    if workers == 1 {
        if count > 0 { body(0..<count) }
        return
    }
    let pieces = max(workers, min(4 * workers, count / max(grain / 2, 1)))
    parallelTasks(pieces, threads: workers) { piece, _ in
        body((piece * count / pieces)..<((piece + 1) * count / pieces))
    }
}

/// Element-wise passes below this many floats per worker stay on one thread.
public let memoryPassGrain = 16_384

/// p[0..<n] = 0, split over `threads` workers. Between two products a pass over memory on one core
/// leaves the other cores idle; two cores also move more bytes per second than one.
public func parallelZero(_ p: UnsafeMutablePointer<Float>, count n: Int, threads: Int) {
    parallelChunks(n, threads: threads, grain: memoryPassGrain) { r in
        (p + r.lowerBound).update(repeating: 0, count: r.count)
    }
}

/// dst[0..<n] = src[0..<n] (not overlapping), split over `threads` workers.
public func parallelCopy(
    _ dst: UnsafeMutablePointer<Float>, from src: UnsafePointer<Float>, count n: Int, threads: Int
) {
    parallelChunks(n, threads: threads, grain: memoryPassGrain) { r in
        (dst + r.lowerBound).update(from: src + r.lowerBound, count: r.count)
    }
}
