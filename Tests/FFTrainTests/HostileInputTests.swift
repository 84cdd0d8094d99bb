import FFFuzz
import FFFormats
import FFCore
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
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("HostileCorpus")
            .path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter {
            !$0.hasPrefix(".") && $0 != "README.md"
        }
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
            (
                file(#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#, dataBytes: 16),
                "overflows"
            ),
            (file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, dataBytes: 8), "do not fit"),
            (file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8000000000]}}"#, dataBytes: 8), "do not fit"),
            (file(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, dataBytes: 8), "negative"),
            (file(#"{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#, dataBytes: 8), "only F32"),
            (file("[1,2]"), "not a JSON object"),
            // The reference library's rules: contiguous, in order, covering the data exactly.
            (file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, dataBytes: 8), "leaving a gap"),
            (
                file(
                    #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    dataBytes: 8), "overlapping"
            ),
            (
                file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, dataBytes: 8),
                "cover 4 bytes of data, the file holds 8"
            ),
            (
                file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"n":1}}"#, dataBytes: 4),
                "__metadata__ must be a map of strings to strings"
            ),
            (
                file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":[]}"#, dataBytes: 4),
                "__metadata__ must be"
            ),
        ]
        for (data, expected) in cases {
            let err = HostileInput.probe(.safetensors, data, scratch: scratch)
            XCTAssertTrue(err?.contains(expected) == true, "expected '\(expected)', got \(err ?? "accepted")")
        }
    }

    func testHostileTrainerStatesAreRefused() {
        let base = String(decoding: HostileInput.seeds(.trainerState)[0], as: UTF8.self)
        let cases = [
            ("\"shards\":2", "\"shards\":-1", "out of range"),
            ("\"model-00001-of-00002.safetensors\"", "\"..\\/..\\/etc\\/passwd\"", "not a plain name"),
            ("\"step\":10", "\"step\":-5", "step: -5 is out of range (0 ... 2^53)"),
            ("\"step\":10", "\"step\":1e30", "trainer_state.json: step: 1e30 is out of range (0 ... 2^53)"),
            ("\"step\":10", "\"step\":2.5", "step: 2.5 is not an integer"),
            ("\"step\":10", "\"step\":\"ten\"", "step: expected an integer"),
            ("\"global_batch\":8", "\"global_batch\":0", "global_batch: 0 is out of range (1 ... 1000000)"),
            ("\"seed\":5", "\"seed\":1e20", "seed: 1e20 is out of range"),
        ]
        let path = scratch + "/trainer_state.json"
        for (from, to, expected) in cases {
            XCTAssertTrue(base.contains(from), "seed lacks \(from): \(base)")
            let err = HostileInput.probe(
                .trainerState, Data(base.replacingOccurrences(of: from, with: to).utf8), scratch: path)
            XCTAssertTrue(err?.contains(expected) == true, "expected '\(expected)', got \(err ?? "accepted")")
        }
        // A key removed from the parsed object: the seed's key order is not fixed, so no text
        // replacement can remove one with its comma.
        var object = try! JSONSerialization.jsonObject(with: Data(base.utf8)) as! [String: Any]
        XCTAssertNotNil(object.removeValue(forKey: "step"), "seed lacks step: \(base)")
        let err = HostileInput.probe(
            .trainerState, try! JSONSerialization.data(withJSONObject: object), scratch: path)
        XCTAssertTrue(err?.contains("step missing") == true, "expected 'step missing', got \(err ?? "accepted")")
    }
}
