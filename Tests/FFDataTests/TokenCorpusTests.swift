import XCTest
@testable import FFData

final class TokenCorpusTests: XCTestCase {
    var dir: String!

    override func setUp() {
        dir = NSTemporaryDirectory() + "ffcorpus-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testConcatenationAcrossShardsInNameOrder() throws {
        // Written out of order: the glob takes them by name.
        try writeTokenShard([7, 8], to: dir + "/train-000002.bin")
        try writeTokenShard([0, 1, 2], to: dir + "/train-000000.bin")
        try writeTokenShard([3, 4, 5, 6], to: dir + "/train-000001.bin")
        let c = try TokenCorpus(dir: dir, patterns: ["train-*.bin"])
        XCTAssertEqual(c.count, 9)
        XCTAssertEqual((0..<9).map { c[$0] }, [0, 1, 2, 3, 4, 5, 6, 7, 8])
        var out = [Int32](repeating: -1, count: 7)
        c.copy(from: 1, count: 7, into: &out)
        XCTAssertEqual(out, [1, 2, 3, 4, 5, 6, 7])
        XCTAssertEqual(c.maxToken(), 8)
        // A list of names in the order given, and a window that spans shards.
        let l = try TokenCorpus(dir: dir, patterns: ["train-000001.bin", "train-000000.bin"])
        XCTAssertEqual((0..<7).map { l[$0] }, [3, 4, 5, 6, 0, 1, 2])
        let ds = try LMDataset(corpus: c, context: 4)
        XCTAssertEqual(ds.count, 2)
        var x = [Int32](repeating: 0, count: 4), y = x
        ds.sample(1, inputs: &x, targets: &y)
        XCTAssertEqual(x, [4, 5, 6, 7]); XCTAssertEqual(y, [5, 6, 7, 8])
    }

    func testErrorsNameThePattern() {
        XCTAssertThrowsError(try TokenCorpus(dir: dir, patterns: ["none-*.bin"])) { e in
            XCTAssertTrue("\(e)".contains(dir + "/none-*.bin") && "\(e)".contains("matches no token shard"), "\(e)")
        }
        XCTAssertThrowsError(try TokenCorpus(dir: dir, patterns: ["missing.bin"])) { e in
            XCTAssertTrue("\(e)".contains(dir + "/missing.bin"), "\(e)")
        }
    }

    /// llm.c's shards (256 int32 header: magic 20240520, version 1, count; uint16 tokens) open as
    /// they are.
    func testLLMCShardOpens() throws {
        var bytes = [UInt8]()
        var header = [Int32](repeating: 0, count: 256)
        header[0] = 20240520; header[1] = 1; header[2] = 3
        for v in header { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        for t: UInt16 in [50256, 15496, 11] { withUnsafeBytes(of: t.littleEndian) { bytes += $0 } }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/fineweb_train_000001.bin"))
        let c = try TokenCorpus(dir: dir, patterns: ["fineweb_train_*.bin"])
        XCTAssertEqual((0..<3).map { c[$0] }, [50256, 15496, 11])
    }

    func testShardWriterAndChunkedReadingKeepEveryToken() throws {
        let w = ShardWriter(dir: dir, split: "train", shardTokens: 4)
        try w.append([1, 2, 3]); try w.append([4, 5, 6, 7, 8, 9])
        let paths = try w.finish()
        XCTAssertEqual(
            paths.map { ($0 as NSString).lastPathComponent },
            ["train-000000.bin", "train-000001.bin", "train-000002.bin"])
        let c = try TokenCorpus(dir: dir, patterns: [w.pattern])
        XCTAssertEqual((0..<c.count).map { c[$0] }, [1, 2, 3, 4, 5, 6, 7, 8, 9])

        let text = "ab cd\r\nef \u{00E9}t\u{00E9}\n\n = Head = \nx  y\nlast"
        try text.write(toFile: dir + "/t.txt", atomically: true, encoding: .utf8)
        for cut in [TextCut.afterNewline, .beforeNewlineAfterPrintable] {
            for size in [1, 2, 5, 100] {
                var chunks: [String] = []
                try forEachTextChunk(path: dir + "/t.txt", chunkBytes: size, cut: cut) { chunks.append($0) }
                XCTAssertEqual(chunks.joined(), text, "\(cut) \(size)")
                if cut == .beforeNewlineAfterPrintable {
                    XCTAssertTrue(chunks.dropFirst().allSatisfy { $0.utf8.first == 10 }, "\(chunks)")
                }
            }
        }
        try Data([0x61, 0xFF, 0x0A]).write(to: URL(fileURLWithPath: dir + "/bad.txt"))
        XCTAssertThrowsError(try forEachTextChunk(path: dir + "/bad.txt", chunkBytes: 10, cut: .afterNewline) { _ in })
        { e in
            XCTAssertTrue("\(e)".contains("bad.txt") && "\(e)".contains("not valid UTF-8"), "\(e)")
        }
    }
}
