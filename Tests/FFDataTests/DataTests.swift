import FFCore
import XCTest
@testable import FFData

final class DataTests: XCTestCase {
    var dir: String!

    override func setUp() {
        dir = NSTemporaryDirectory() + "ffdata-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testShardRoundTripNarrowAndWide() throws {
        for tokens in [[Int32](arrayLiteral: 0, 5, 65535, 7), [0, 70000, 3, Int32.max]] {
            let p = dir + "/s.bin"
            try writeTokenShard(tokens, to: p)
            let s = try TokenShard(path: p)
            XCTAssertEqual(s.version, tokens.contains { $0 > 65535 } ? 2 : 1)
            XCTAssertEqual((0..<s.count).map { s[$0] }, tokens)
        }
    }

    func testShardErrorsNameTheFileAndTheProblem() throws {
        let p = dir + "/bad.bin"
        try writeTokenShard([1, 2, 3, 4], to: p)
        // Truncated: the header promises more tokens than the file holds.
        let data = FileManager.default.contents(atPath: p)!
        try data.prefix(data.count - 2).write(to: URL(fileURLWithPath: p))
        XCTAssertThrowsError(try TokenShard(path: p)) { e in
            XCTAssertTrue("\(e)".contains(p) && "\(e)".contains("header says 4 tokens"), "\(e)")
        }
        // Wrong magic.
        var bytes = [UInt8](data); bytes[0] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        XCTAssertThrowsError(try TokenShard(path: p)) { e in XCTAssertTrue("\(e)".contains("bad magic"), "\(e)") }
        // Short file and missing file.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: p))
        XCTAssertThrowsError(try TokenShard(path: p)) { e in XCTAssertTrue("\(e)".contains("shorter than"), "\(e)") }
        XCTAssertThrowsError(try TokenShard(path: dir + "/none.bin")) { e in
            XCTAssertTrue("\(e)".contains("none.bin"), "\(e)")
        }
    }

    func testWordVocabularyFollowsWikiTextConventions() {
        let train = " = Title = \n the cat sat on the mat \n the dog <unk> \n"
        let v = Vocabulary.buildWord(trainText: train, minCount: 2, maxSize: nil)
        XCTAssertEqual(Array(v.tokens.prefix(2)), ["<eos>", "<unk>"])
        XCTAssertEqual(v.tokens[2], "the")  // most frequent first
        XCTAssertEqual(v.tokens.count, 4)  // "=" (2x), "the" (3x); the rest are rare
        XCTAssertEqual(v.counts[1], 7)  // <unk>: Title cat sat on mat dog <unk>
        let ids = v.encode(" the zebra = \n")
        XCTAssertEqual(ids, [2, 1, Int32(v.tokens.firstIndex(of: "=")!), 0])
        // Counts: 3 lines of <eos>, "the" 3, "=" 2, everything else <unk> (incl. the literal <unk>).
        XCTAssertEqual(v.counts[0], 3)
        XCTAssertEqual(v.counts.reduce(0, +), 3 + 12)  // 12 words, 3 lines
        let capped = Vocabulary.buildWord(trainText: train, minCount: 1, maxSize: 3)
        XCTAssertEqual(capped.tokens, ["<eos>", "<unk>", "the"])
    }

    func testByteVocabularyRoundTrips() {
        let text = "héllo\nwörld"
        let v = Vocabulary.buildByte(trainText: text)
        XCTAssertEqual(v.size, 256)
        XCTAssertEqual(v.decode(v.encode(text)), text)
    }

    func testPrepareShardsLoaderRoundTripTokensExactly() throws {
        let text = (0..<200).map { i in " word\(i % 37) and word\((i * 7) % 11) , again \n" }.joined()
        let v = Vocabulary.buildWord(trainText: text, minCount: 1, maxSize: nil)
        let ids = v.encode(text)
        try writeTokenShard(ids, to: dir + "/train.bin")
        try v.write(to: dir + "/vocab.json")
        let back = try Vocabulary.read(from: dir + "/vocab.json")
        XCTAssertEqual(back, v)
        let shard = try TokenShard(path: dir + "/train.bin")
        let ds = try LMDataset(shard: shard, context: 16)
        var seen: [Int32] = []
        var inp = [Int32](repeating: 0, count: 16), tgt = inp
        for i in 0..<ds.evalCount {
            ds.evalSample(i, inputs: &inp, targets: &tgt)
            if i == 0 { seen.append(inp[0]) }
            seen += tgt.filter { $0 >= 0 }
            XCTAssertEqual(Array(inp[1...]).prefix(while: { _ in true }).count, 15)
        }
        XCTAssertEqual(seen, ids, "every token comes back, in order, each once")
        XCTAssertEqual(back.decode(Array(ids.prefix(6))), "word0 and word0 , again\n")
    }

    func testSamplerVisitsEverySampleOncePerEpoch() {
        let s = EpochSampler(count: 103, seed: 42, globalBatch: 10)
        XCTAssertEqual(s.stepsPerEpoch, 10)  // 3 dropped per epoch
        for epoch in 0..<3 {
            let o = s.order(epoch: epoch)
            XCTAssertEqual(o.sorted(), Array(0..<103))
            var used: [Int] = []
            for step in (epoch * 10)..<((epoch + 1) * 10) {
                let (e, off) = s.position(ofStep: step)
                XCTAssertEqual(e, epoch)
                used += o[off..<(off + 10)]
            }
            XCTAssertEqual(Set(used).count, 100)
        }
        XCTAssertNotEqual(s.order(epoch: 0), s.order(epoch: 1))
        XCTAssertEqual(s.order(epoch: 2), EpochSampler(count: 103, seed: 42, globalBatch: 10).order(epoch: 2))
    }
}

final class SlidingWindowTests: XCTestCase {
    func testEveryTokenIsScoredOnceForAnyStride() throws {
        let path = NSTemporaryDirectory() + "sw-\(UUID().uuidString).bin"
        defer { unlink(path) }
        let tokens = (0..<203).map { Int32($0) }
        try writeTokenShard(tokens, to: path)
        let ds = try LMDataset(shard: try TokenShard(path: path), context: 16)
        for stride in [1, 3, 8, 15, 16] {
            var scored: [Int32] = []
            var inp = [Int32](repeating: 0, count: 16), tgt = inp
            for w in 0..<ds.windowCount(stride: stride) {
                ds.windowSample(w, stride: stride, inputs: &inp, targets: &tgt)
                for t in 0..<16 where tgt[t] >= 0 {
                    scored.append(tgt[t])
                    XCTAssertEqual(tgt[t], inp[t] + 1, "target follows its input")
                    if w > 0 {
                        XCTAssertGreaterThanOrEqual(
                            t, 16 - stride,
                            "a later window scores only its last "
                                + "stride tokens")
                    }
                }
            }
            XCTAssertEqual(scored, Array(tokens.dropFirst()), "stride \(stride)")
        }
        XCTAssertEqual(ds.windowCount(stride: 16), ds.evalCount)
    }
}
