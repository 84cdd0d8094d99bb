// Coverage-guided fuzzing of the readers of other people's files with libFuzzer. Not part of the
// package (libFuzzer brings its own main): launch/fuzz.sh builds FFFuzz with
// `--sanitize fuzzer --sanitize address` into .build-fuzz and links this file against it.
//
// Input layout: byte 0 chooses the reader (its value modulo the number of kinds, in the order of
// HostileInput.Kind.allCases: 0 safetensors, 1 trainer_state, 2 index, 3 vocabulary, 4 token_shard,
// 5 idx), the remaining bytes are the file. A reader that throws is the expected outcome; a trap,
// an AddressSanitizer report, a timeout, an allocation past -rss_limit_mb, or an error that does
// not name the file is a finding.
import FFFuzz
import Foundation

/// The file path readers that take a path are given; one per process so parallel jobs do not
/// overwrite each other's input.
private let scratch = NSTemporaryDirectory() + "ff-readers-fuzz-\(getpid()).bin"

/// Called by libFuzzer once before fuzzing. With FF_FUZZ_WRITE_SEEDS=DIR it writes HostileInput's
/// valid example files, prefixed with their selector byte, into DIR: they cover the IDX reader,
/// which the regression corpus has no files for, and start every reader from an accepted file.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(
    _ argc: UnsafeMutablePointer<CInt>?,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?
)
    -> CInt
{
    guard let dir = ProcessInfo.processInfo.environment["FF_FUZZ_WRITE_SEEDS"] else { return 0 }
    for (selector, kind) in HostileInput.Kind.allCases.enumerated() {
        for (i, seed) in HostileInput.seeds(kind).enumerated() {
            let path = "\(dir)/builtin-\(kind.rawValue)-\(i).bin"
            _ = FileManager.default.createFile(atPath: path, contents: Data([UInt8(selector)]) + seed)
        }
    }
    return 0
}

/// Called by libFuzzer for every input; returns 0 (the input may be added to the corpus).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let bytes, size > 0 else { return 0 }
    let kinds = HostileInput.Kind.allCases
    let kind = kinds[Int(bytes[0]) % kinds.count]
    let file = Data(bytes: bytes + 1, count: size - 1)
    if let error = HostileInput.probe(kind, file, scratch: scratch), !error.contains(scratch) {
        // The suite holds every reader to naming the file in its errors (HostileInputTests), so
        // an error that does not is a finding too: stop here and let libFuzzer keep the input.
        fatalError("\(kind.rawValue): the error does not name the file: \(error)")
    }
    return 0
}
