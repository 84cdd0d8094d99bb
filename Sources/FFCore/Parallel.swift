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
