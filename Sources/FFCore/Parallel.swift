import Dispatch

/// Runs `body(task, worker)` for task in 0..<count on `threads` workers. Worker w takes tasks
/// w, w + threads, ...: the split depends only on the counts, so results that are reduced per
/// task stay deterministic.
public func parallelFor(_ count: Int, threads: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for t in 0..<count { body(t, 0) }
        return
    }
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            var t = w
            while t < count { body(t, w); t += workers }
        }
    }
}

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
