import Foundation
import CFastMath

/// The peak fp32 multiply-add rate of one core of this machine at this build's vector width:
/// the hardware's ceiling, against which a kernel's FLOPs give its MFU (sgemm's rate is what a
/// tuned library reaches, and sits below it).
public struct FMAThroughput: Sendable {
    /// Floats per vector FMA in the probe (8 with AVX2, 16 with AVX-512, 4 on baseline x86-64).
    public let lanes: Int
    /// Lane multiply-adds per second on the calling thread.
    public let laneFMAsPerSecond: Double
    /// 2 FLOPs per lane multiply-add, in GFLOP/s.
    public var gflops: Double { 2 * laneFMAsPerSecond / 1e9 }

    /// Runs the probe on the calling thread: `repeats` timed runs of about `seconds` of CPU time
    /// each after a warm-up (which also lets the clock settle); returns the fastest, since
    /// anything else the machine does can only slow a run down.
    public static func measure(seconds: Double = 0.02, repeats: Int = 5) -> FMAThroughput {
        #if arch(x86_64)
            #if FF_AVX512
                let (width, chains, probe) = (16, 16, ff_fma_probe16)
            #elseif FF_AVX2
                let (width, chains, probe) = (8, 12, ff_fma_probe8)
            #else
                let (width, chains, probe) = (4, 12, ff_fma_probe4)
            #endif
            // Timed in this thread's CPU time: on a shared machine the wall clock also counts the
            // time the thread waits for the core, which says nothing about the core's peak.
            func time(_ rounds: Int) -> Double {
                let t0 = threadCPUSeconds()
                blackHole(probe(rounds))
                return threadCPUSeconds() - t0
            }
            var rounds = 1 << 16
            while time(rounds) < seconds / 4 { rounds *= 2 }
            rounds = max(1, Int(Double(rounds) * seconds / max(time(rounds), 1e-9)))
            let best = (0..<max(repeats, 1)).map { _ in time(rounds) }.min()!
            return FMAThroughput(lanes: width, laneFMAsPerSecond: Double(rounds * chains * width) / best)
        #else
            return FMAThroughput(lanes: 1, laneFMAsPerSecond: .nan)
        #endif
    }
}

/// CPU time of the calling thread, in seconds.
func threadCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + 1e-9 * Double(t.tv_nsec)
}

/// CPU time of this process (all threads), in seconds: what a kernel costs in core-seconds,
/// whatever else the machine runs meanwhile.
public func processCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + 1e-9 * Double(t.tv_nsec)
}

/// Keeps a value alive so that the work producing it is not optimised away.
@inline(never) func blackHole(_ x: Float) { if x.isNaN { print("", terminator: "") } }
