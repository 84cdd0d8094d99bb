import FFFormats
import XCTest
@testable import FFTrain
import FFModel

final class CheckpointUnitTests: XCTestCase {
    func testPruneKeepsTheNewestAndEveryMthAndDropsOldUncommitted() throws {
        let root = NSTemporaryDirectory() + "ffck-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        for s in 1...8 {
            let d = root + "/" + Checkpoint.folderName(step: s)
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            if s != 2 && s != 9 { FileManager.default.createFile(atPath: d + "/trainer_state.json", contents: Data()) }
        }
        // An uncommitted folder newer than every committed one may still be being written: kept.
        try FileManager.default.createDirectory(
            atPath: root + "/" + Checkpoint.folderName(step: 9), withIntermediateDirectories: true)
        Checkpoint.prune(root: root, keepLast: 3, keepEvery: 4)
        let left = try FileManager.default.contentsOfDirectory(atPath: root).sorted()
        XCTAssertEqual(left, [4, 6, 7, 8, 9].map { Checkpoint.folderName(step: $0) })
    }

    func testPartitionIsContiguousBalancedAndCoversEveryTensor() {
        var layout = ParameterLayout()
        for (i, n) in [100, 10, 10, 50, 50, 5, 5, 70].enumerated() { layout.add("t\(i)", [n], decays: true) }
        for n in 1...10 {
            let g = Checkpoint.partition(layout, into: n)
            XCTAssertEqual(g.count, n)
            XCTAssertEqual(g.first?.lowerBound, 0)
            XCTAssertEqual(g.last?.upperBound, layout.tensors.count)
            for k in 1..<n { XCTAssertEqual(g[k].lowerBound, g[k - 1].upperBound) }
            if n <= layout.tensors.count { XCTAssertTrue(g.allSatisfy { !$0.isEmpty }, "\(n): \(g)") }
        }
    }

    func testSHA256OfFilesKnownAnswers() throws {
        let dir = NSTemporaryDirectory() + "digest-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func digest(_ data: Data, chunk: Int = 4 << 20) throws -> String {
            let path = dir + "/f"
            try data.write(to: URL(fileURLWithPath: path))
            return try FileDigest.sha256(file: path, chunkBytes: chunk)
        }
        XCTAssertEqual(try digest(Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(try digest(Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(
            FileDigest.sha256(Data("abc".utf8)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // 1,000,000 x "a", read in pieces that do not divide it (nor the 64-byte block).
        let million = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        XCTAssertEqual(try digest(Data(repeating: 0x61, count: 1_000_000), chunk: 999), million)
        XCTAssertEqual(try digest(Data(repeating: 0x61, count: 1_000_000)), million)
        XCTAssertThrowsError(try FileDigest.sha256(file: dir + "/missing")) { e in
            XCTAssertTrue("\(e)".contains("/missing: cannot open to checksum"), "\(e)")
        }
    }
}
