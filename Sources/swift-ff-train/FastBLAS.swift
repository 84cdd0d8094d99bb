import Foundation
import FFKernels

/// OpenBLAS releases older than the CPU (Debian 12 ships 0.3.21) do not recognise newer Intel
/// cores and fall back to their generic "Prescott" SSE3 kernels: sgemm then runs ~4x slower
/// (measured here: 30 vs 137 GFLOP/s on one core). OpenBLAS reads OPENBLAS_CORETYPE only when the
/// library loads, so when it picked the fallback on a CPU with AVX-512 (or AVX2 + FMA) and the user
/// set nothing, we set the variable and re-execute ourselves once. A user's own setting always wins.
/// Exits with a clear message when this build's kernels need AVX2 + FMA and the CPU lacks them
/// (instead of dying on an illegal instruction later).
func checkCPUFeatures() {
    #if FF_AVX2
    guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    if !flags.isSuperset(of: ["avx2", "fma"]) {
        FileHandle.standardError.write(Data("error: this build of swift-ff-train needs a CPU with AVX2 and FMA (x86-64 from 2013 on); rebuild on this machine, or with FF_PORTABLE=1 swift build -c release\n".utf8))
        exit(1)
    }
    #if FF_AVX512
    if !flags.isSuperset(of: ["avx512f", "avx512vl", "avx512bw", "avx512dq"]) {
        FileHandle.standardError.write(Data("error: this build of swift-ff-train was made on a CPU with AVX-512 and this one lacks it; rebuild on this machine, or with FF_CPU=avx2 swift build -c release for both\n".utf8))
        exit(1)
    }
    #endif
    #endif
}

func ensureFastBLASKernels() {
    let env = ProcessInfo.processInfo.environment
    guard env["OPENBLAS_CORETYPE"] == nil, env["SWIFT_FF_TRAIN_NO_REEXEC"] == nil else { return }
    guard ["Prescott", "Core2", "Unknown"].contains(blasCoreName()) else { return }
    guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    let core: String
    if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]) { core = "SkylakeX" }
    else if flags.isSuperset(of: ["avx2", "fma"]) { core = "Haswell" }
    else { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv("SWIFT_FF_TRAIN_NO_REEXEC", "1", 1)
    let args = CommandLine.arguments
    var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
    cargs.append(nil)
    execv("/proc/self/exe", cargs)
    // execv returned: carry on with the slow kernels rather than fail.
}
