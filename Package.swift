// swift-tools-version: 6.0
import PackageDescription

import Foundation

// Our SIMD kernels are compiled for the vector unit of the machine that builds them, like
// -march=native: AVX-512 (Skylake-SP and later: the Fourier kernel then runs 16 keys per
// vector in 32 registers, measured ~1.4x faster than AVX2), else AVX2 + FMA (Haswell, 2013, and
// later). The binary checks the CPU at start and says how to rebuild if it runs elsewhere.
// FF_CPU=avx2 caps the level (a binary for a mixed cluster); FF_PORTABLE=1 builds for baseline
// x86-64.
enum VectorLevel { case portable, avx2, avx512 }
func vectorLevel() -> VectorLevel {
    #if arch(x86_64)
    let env = Context.environment
    if env["FF_PORTABLE"] != nil { return .portable }
    let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
        .split(separator: "\n").first { $0.hasPrefix("flags") }?
        .split(separator: " ").map(String.init) ?? []
    let avx512 = Set(flags).isSuperset(of: ["avx512f", "avx512vl", "avx512bw", "avx512dq"])
    return avx512 && env["FF_CPU"] != "avx2" ? .avx512 : .avx2
    #else
    return .portable
    #endif
}
let level = vectorLevel()
let defines: [SwiftSetting] = switch level {
case .portable: []
case .avx2: [.define("FF_AVX2")]
case .avx512: [.define("FF_AVX2"), .define("FF_AVX512")]
}
let simd: [SwiftSetting] = switch level {
case .portable: []
case .avx2: [.unsafeFlags(["-target-cpu", "haswell"])] + defines
case .avx512: [.unsafeFlags(["-target-cpu", "skylake-avx512"])] + defines
}

// Dependencies point one way:
//   swift-ff-train -> FFTrain -> {FFDistributed, FFData, FFModel} -> FFKernels -> {COpenBLAS, CFastMath}
//   FFDistributed -> CMPI, FFData -> CZlib (gzipped IDX images)
let package = Package(
    name: "swift-ff-train",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "swift-ff-train", targets: ["swift-ff-train"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CMPI", path: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        // Vector instructions Swift has no spelling for (reciprocal estimates, fused multiply-
        // subtract, cross-lane shuffles) and the flush-to-zero switch: static inline functions.
        .target(name: "CFastMath"),
        .target(name: "FFKernels", dependencies: ["COpenBLAS", "CFastMath"], swiftSettings: simd),
        .target(name: "FFModel", dependencies: ["FFKernels"], swiftSettings: simd),
        .target(name: "FFData", dependencies: ["FFKernels", "CZlib"], swiftSettings: simd),
        .target(name: "FFDistributed", dependencies: ["CMPI"]),
        .target(name: "FFTrain", dependencies: ["FFModel", "FFData", "FFDistributed", "Yams"]),
        .executableTarget(name: "swift-ff-train", dependencies: [
            "FFTrain", "FFData", "FFModel",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: defines),
        .testTarget(name: "FFKernelsTests", dependencies: ["FFKernels"]),
        .testTarget(name: "FFModelTests", dependencies: ["FFModel", "FFKernels"]),
        .testTarget(name: "FFDataTests", dependencies: ["FFData", "FFKernels"]),
        .testTarget(name: "FFTrainTests", dependencies: ["FFTrain", "FFModel", "FFData"],
                    exclude: ["HostileCorpus"]),
        // Runs the built executable under real `mpirun` (never MPI_Init in the test process).
        .testTarget(name: "EndToEndTests", dependencies: ["FFTrain", "FFData", "FFModel"]),
    ],
    // Kernels hand raw buffers to worker threads that own disjoint ranges; Swift 6's strict
    // checking cannot see that, so the package builds in the Swift 5 language mode.
    swiftLanguageModes: [.v5]
)
