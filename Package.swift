// swift-tools-version: 6.0
import PackageDescription

import Foundation

// Our SIMD kernels are compiled for the vector unit of the machine that builds them, like
// -march=native: AVX-512 (Skylake-SP and later: the Fourier kernel then runs 16 keys per
// vector in 32 registers), else AVX2 + FMA (Haswell, 2013, and later). The binary checks the CPU at start and says
// how to rebuild if it runs elsewhere.
// FF_CPU=avx2 caps the level (a binary for a mixed cluster); FF_CPU=avx512 builds the AVX-512
// kernels on a machine without them (a binary for other nodes); FF_PORTABLE=1 builds for
// baseline x86-64.
enum VectorLevel { case portable, avx2, avx512 }
func vectorLevel() -> VectorLevel {
    #if arch(x86_64)
        let env = Context.environment
        if env["FF_PORTABLE"] != nil { return .portable }
        let flags =
            (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("flags") }?
            .split(separator: " ").map(String.init) ?? []
        let avx512 = Set(flags).isSuperset(of: ["avx512f", "avx512vl", "avx512bw", "avx512dq"])
        if env["FF_CPU"] == "avx512" { return .avx512 }  // for other machines: it will not run here
        return avx512 && env["FF_CPU"] != "avx2" ? .avx512 : .avx2
    #else
        return .portable
    #endif
}
let level = vectorLevel()
let defines: [SwiftSetting] =
    switch level {
    case .portable: []
    case .avx2: [.define("FF_AVX2")]
    case .avx512: [.define("FF_AVX2"), .define("FF_AVX512")]
    }
let simd: [SwiftSetting] =
    switch level {
    case .portable: []
    case .avx2: [.unsafeFlags(["-target-cpu", "haswell"])] + defines
    case .avx512: [.unsafeFlags(["-target-cpu", "skylake-avx512"])] + defines
    }

// BLAS provider. Default: Debian's libopenblas-dev (pkg-config openblas). FF_BLAS=scipy-openblas
// builds against the current OpenBLAS of the PyPI wheel scipy-openblas32 (launch/setup.sh installs
// it), found in FF_BLAS_LIBDIR or by asking python3, and runs it from there (rpath).
func scipyOpenBLASLibDir() -> String {
    if let dir = Context.environment["FF_BLAS_LIBDIR"] { return dir }
    let python = Process()
    python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    python.arguments = ["python3", "-c", "import scipy_openblas32; print(scipy_openblas32.get_lib_dir())"]
    let pipe = Pipe()
    python.standardOutput = pipe
    try? python.run()
    python.waitUntilExit()
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    let dir = out.trimmingCharacters(in: .whitespacesAndNewlines)
    guard python.terminationStatus == 0, !dir.isEmpty else {
        fatalError(
            "FF_BLAS=scipy-openblas: python3 cannot import scipy_openblas32; "
                + "run FF_BLAS=scipy-openblas bash launch/setup.sh, or set FF_BLAS_LIBDIR")
    }
    return dir
}
let scipyBLASDir: String? = Context.environment["FF_BLAS"] == "scipy-openblas" ? scipyOpenBLASLibDir() : nil
let blasTarget: Target =
    scipyBLASDir == nil
    ? .systemLibrary(
        name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
        providers: [.apt(["libopenblas-dev"])])
    : .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS/scipy-openblas")
let blasLinking: [LinkerSetting] =
    scipyBLASDir.map {
        [.unsafeFlags(["-L\($0)", "-Xlinker", "-rpath", "-Xlinker", $0])]
    } ?? []

// The module graph (README, "Architecture"); every module imports only what it declares here.
//   swift-ff-train -> FFTrain, FFFuzz
//   FFTrain    -> FFAnalysis, FFFormats, FFDistributed, FFData, FFModel  (the loop and collectives)
//   FFAnalysis -> FFFormats, FFModel     (attention health and maps, SVG charts)
//   FFFormats  -> FFModel, Crypto        (safetensors, checkpoint layout and verification; no MPI)
//   FFFuzz     -> FFFormats, FFData      (hostile-input probes of every reader)
//   FFModel    -> FFKernels -> FFCore    (layers and models; SIMD kernels on OpenBLAS)
//   FFData     -> FFCore, CZlib          (datasets, tokenizers)
//   FFDistributed -> CMPI                (the Communicator over MPI)
//   FFCore: random streams, epoch orders, the thread pool
let package = Package(
    name: "swift-ff-train",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "swift-ff-train", targets: ["swift-ff-train"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        blasTarget,
        .systemLibrary(
            name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(
            name: "CMPI", path: "CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]),
        // Vector instructions Swift has no spelling for (reciprocal estimates, fused multiply-
        // subtract, cross-lane shuffles) and the flush-to-zero switch: static inline functions.
        .target(name: "CFastMath"),
        .target(name: "FFCore"),
        .target(
            name: "FFKernels", dependencies: ["FFCore", "COpenBLAS", "CFastMath"], swiftSettings: simd,
            linkerSettings: blasLinking),
        .target(name: "FFModel", dependencies: ["FFCore", "FFKernels"], swiftSettings: simd),
        .target(name: "FFData", dependencies: ["FFCore", "CZlib"]),
        .target(name: "FFDistributed", dependencies: ["CMPI"]),
        .target(
            name: "FFFormats",
            dependencies: [
                "FFCore", "FFKernels", "FFModel", .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .target(name: "FFAnalysis", dependencies: ["FFKernels", "FFModel", "FFFormats"]),
        .target(
            name: "FFTrain",
            dependencies: [
                "FFCore", "FFKernels", "FFModel", "FFData", "FFDistributed", "FFFormats", "FFAnalysis", "Yams",
            ]),
        .target(name: "FFFuzz", dependencies: ["FFCore", "FFData", "FFFormats"]),
        .executableTarget(
            name: "swift-ff-train",
            dependencies: [
                "FFCore", "FFKernels", "FFModel", "FFData", "FFDistributed", "FFFormats", "FFAnalysis", "FFTrain",
                "FFFuzz", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ], swiftSettings: defines),
        // Helpers shared by the test targets (numerics, child processes, mpirun): no XCTest in it.
        .target(name: "FFTestSupport", dependencies: ["FFCore"], path: "Tests/TestSupport"),
        .testTarget(name: "FFCoreTests", dependencies: ["FFCore"]),
        .testTarget(name: "FFKernelsTests", dependencies: ["FFCore", "FFKernels", "FFTestSupport"]),
        .testTarget(name: "FFModelTests", dependencies: ["FFCore", "FFKernels", "FFModel", "FFTestSupport"]),
        .testTarget(name: "FFDataTests", dependencies: ["FFCore", "FFData", "FFTestSupport"]),
        .testTarget(
            name: "FFTrainTests",
            dependencies: [
                "FFCore", "FFKernels", "FFModel", "FFData", "FFFormats", "FFAnalysis", "FFTrain", "FFFuzz",
                "FFDistributed", "FFTestSupport",
            ], exclude: ["HostileCorpus"]),
        // Runs the built executable under real `mpirun` (never MPI_Init in the test process).
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "FFCore", "FFKernels", "FFModel", "FFData", "FFFormats", "FFTrain", "FFTestSupport",
            ]),
    ],
    // Kernels hand raw buffers to worker threads that own disjoint ranges; Swift 6's strict
    // checking cannot see that, so the package builds in the Swift 5 language mode.
    swiftLanguageModes: [.v5]
)
