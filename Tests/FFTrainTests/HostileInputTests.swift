import FFKernels
import XCTest
@testable import FFTrain
import FFModel

/// Hostile files: every reader of other people's files answers mutated input with an error that
/// names the file, and never traps (a trap would kill this test process).
final class HostileInputTests: XCTestCase {
    let scratch = NSTemporaryDirectory() + "hostile-\(UUID().uuidString)"

    override func tearDown() { unlink(scratch) }

    func testSeedsAreAcceptedSoMutationsStartFromValidFiles() {
        for kind in HostileInput.Kind.allCases {
            for seed in HostileInput.seeds(kind) {
                XCTAssertNil(HostileInput.probe(kind, seed, scratch: scratch), "\(kind) seed rejected")
            }
        }
    }

    /// A fixed budget of seeded mutations per reader (the timed run is launch/fuzz.sh).
    func testMutatedInputsNeverTrapAndErrorsNameTheFile() {
        var rng = SplitMix64(seed: 20261129)
        var rejected = 0, total = 0
        for kind in HostileInput.Kind.allCases {
            let seeds = HostileInput.seeds(kind)
            for i in 0..<600 {
                let input = HostileInput.mutate(seeds[i % seeds.count], rng: &rng)
                total += 1
                if let err = HostileInput.probe(kind, input, scratch: scratch) {
                    rejected += 1
                    XCTAssertTrue(err.contains(scratch), "\(kind): error does not name the file: \(err)")
                }
            }
        }
        XCTAssertGreaterThan(rejected, total / 3, "the mutations should mostly produce invalid files")
    }

    /// Inputs kept from fuzzing (crashes once found, and interesting cases): each must be rejected
    /// or accepted cleanly. File names start with the reader's kind.
    func testRegressionCorpus() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("HostileCorpus").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix(".") && $0 != "README.md" }
        XCTAssertFalse(files.isEmpty)
        for f in files {
            guard let kind = HostileInput.Kind.allCases.first(where: { f.hasPrefix($0.rawValue + "-") }) else {
                XCTFail("\(f): name must start with a reader kind"); continue
            }
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f))
            if let err = HostileInput.probe(kind, data, scratch: scratch) {
                XCTAssertTrue(err.contains(scratch), "\(f): the error does not name the file: \(err)")
            }
        }
    }

    func testSpecificHostileSafetensorsHeaders() {
        func file(_ header: String, dataBytes: Int = 0, claimedLength: UInt64? = nil) -> Data {
            var d = Data()
            let h = Data(header.utf8)
            withUnsafeBytes(of: (claimedLength ?? UInt64(h.count)).littleEndian) { d.append(contentsOf: $0) }
            d.append(h); d.append(Data(repeating: 0, count: dataBytes))
            return d
        }
        let cases: [(Data, String)] = [
            (file("{}", claimedLength: UInt64.max), "header length"),
            (file(#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#, dataBytes: 16), "overflows"),
            (file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, dataBytes: 8), "do not fit"),
            (file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8000000000]}}"#, dataBytes: 8), "do not fit"),
            (file(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, dataBytes: 8), "negative"),
            (file(#"{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#, dataBytes: 8), "only F32"),
            (file("[1,2]"), "not a JSON object"),
        ]
        for (data, expected) in cases {
            let err = HostileInput.probe(.safetensors, data, scratch: scratch)
            XCTAssertTrue(err?.contains(expected) == true, "expected '\(expected)', got \(err ?? "accepted")")
        }
    }

    func testHostileTrainerStatesAreRefused() {
        let base = String(decoding: HostileInput.seeds(.trainerState)[0], as: UTF8.self)
        let cases = [("\"shards\":2", "\"shards\":-1", "out of range"),
                     ("\"model-00001-of-00002.safetensors\"", "\"..\\/..\\/etc\\/passwd\"", "not a plain name"),
                     ("\"step\":10", "\"step\":-5", "negative")]
        for (from, to, expected) in cases {
            XCTAssertTrue(base.contains(from), "seed lacks \(from): \(base)")
            let err = HostileInput.probe(.trainerState, Data(base.replacingOccurrences(of: from, with: to).utf8), scratch: scratch)
            XCTAssertTrue(err?.contains(expected) == true, "expected '\(expected)', got \(err ?? "accepted")")
        }
    }
}
