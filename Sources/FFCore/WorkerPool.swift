import Foundation
import Synchronization

/// Helper threads that run `parallelFor`'s workers 1..<n while the caller runs worker 0.
///
/// A training step calls `parallelFor` a few hundred times, often for loops of tens of
/// microseconds. Dispatch parks its threads after every job, and waking one costs a system call and
/// tens of microseconds before it starts: a large share of such a loop. Here a helper spins on the
/// job counter for a while after each job (`spinSeconds`, yielding the core after the first
/// `pureSpinSeconds`) and only then sleeps on a condition, so back-to-back loops start at once
/// and an idle process still sleeps.
///
/// One job at a time: a call made while a job runs (from inside a worker, or from another thread)
/// is handed to Dispatch instead.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    /// How long an idle helper spins before it sleeps: longer than the serial stretches between
    /// the loops of a step, shorter than anything a person would notice as a busy core.
    static let spinSeconds = 0.005
    /// The first part of the spin, in which the helper does not yield the core.
    static let pureSpinSeconds = 0.00005

    /// (job number << 16) | workers of the job, published after `job` is set.
    private let ticket = Atomic<Int>(0)
    /// Helpers of the current job that have not finished it.
    private let pending = Atomic<Int>(0)
    /// Helpers asleep on `wake`.
    private let sleepers = Atomic<Int>(0)
    /// A caller owns the pool.
    private let busy = Atomic<Bool>(false)
    private let wake = NSCondition()
    /// The current job's body (worker index); valid while `pending` > 0 for its ticket.
    nonisolated(unsafe) private var job: ((Int) -> Void)?
    /// Helper threads started so far; only the owner of `busy` starts more.
    nonisolated(unsafe) private var helpers = 0

    /// Runs body(w) for w in 0..<workers, w = 0 on the calling thread; false when the pool is
    /// taken (the caller then runs the job some other way).
    func run(workers: Int, _ body: (Int) -> Void) -> Bool {
        guard workers < 1 << 16,
            busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else { return false }
        defer { busy.store(false, ordering: .releasing) }
        let current = ticket.load(ordering: .relaxed)
        while helpers < workers - 1 { startHelper(helpers + 1, seen: current); helpers += 1 }
        withoutActuallyEscaping(body) { body in
            job = body
            pending.store(workers - 1, ordering: .relaxed)
            let next = ((current >> 16) + 1) << 16 | workers
            ticket.store(next, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                wake.lock()
                wake.broadcast()
                wake.unlock()
            }
            body(0)
            waitUntil { pending.load(ordering: .acquiring) == 0 }
            job = nil
        }
        return true
    }

    /// Spins on `done`, then yields the core between checks (a helper may be waiting for it).
    private func waitUntil(_ done: () -> Bool) {
        var spins = 0
        while !done() {
            spins += 1
            if spins > 20_000 { sched_yield() }
        }
    }

    /// `seen`: the last ticket before the helper exists (it may start after the next is out).
    private func startHelper(_ index: Int, seen: Int) {
        let thread = Thread { [unowned self] in self.helperLoop(index, seen: seen) }
        thread.name = "ff-worker-\(index)"
        thread.start()
    }

    private func helperLoop(_ index: Int, seen first: Int) {
        var seen = first
        while true {
            seen = nextTicket(after: seen)
            guard index < seen & 0xFFFF else { continue }  // not needed for this job
            job!(index)
            pending.subtract(1, ordering: .releasing)
        }
    }

    /// Waits for a ticket other than `seen`: spinning first, then asleep.
    private func nextTicket(after seen: Int) -> Int {
        let start = DispatchTime.now().uptimeNanoseconds
        var spins = 0, yielding = false
        while true {
            let t = ticket.load(ordering: .acquiring)
            if t != seen { return t }
            // After a short pure spin, give the core to any other runnable thread (another rank
            // on an oversubscribed node) between checks.
            if yielding { sched_yield() }
            spins += 1
            if spins & 255 == 0 {
                let waited = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
                if waited > Self.spinSeconds { break }
                yielding = waited > Self.pureSpinSeconds
            }
        }
        wake.lock()
        sleepers.add(1, ordering: .sequentiallyConsistent)
        var t = ticket.load(ordering: .sequentiallyConsistent)
        while t == seen {
            wake.wait()
            t = ticket.load(ordering: .sequentiallyConsistent)
        }
        sleepers.subtract(1, ordering: .sequentiallyConsistent)
        wake.unlock()
        return t
    }
}
