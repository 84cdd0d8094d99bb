import XCTest
@testable import FFData

/// GPT-2 BPE against tiktoken, built offline from the same ranks file. Needs the ranks
/// (`bash launch/fetch-gpt2-ranks.sh data`), `pip install tiktoken`, and for the corpus cases
/// the text of `bash launch/fetch-data.sh data`; `launch/test.sh` sets all three up.
final class GPT2TokenizerTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let ranksPath = root + "/data/gpt2/gpt2.tiktoken"
    nonisolated(unsafe) static var cached: GPT2BPE?

    func tokenizer() throws -> GPT2BPE {
        if let t = Self.cached { return t }
        guard FileManager.default.fileExists(atPath: Self.ranksPath) else {
            throw XCTSkip("no \(Self.ranksPath): run `bash launch/fetch-gpt2-ranks.sh data` (or launch/test.sh)")
        }
        let t = try GPT2BPE(ranked: GPT2BPE.readRanks(path: Self.ranksPath))
        Self.cached = t
        return t
    }

    /// Runs launch/gpt2_reference.py; skips when python3 or tiktoken is missing.
    func referenceCases(corpora: [String], sampleBytes: Int) throws -> [(name: String, bytes: [UInt8], ids: [Int32])] {
        let out = NSTemporaryDirectory() + "gpt2-cases-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments =
            [
                "python3", Self.root + "/launch/gpt2_reference.py", "--ranks", Self.ranksPath, "--out", out,
                "--sample-bytes", String(sampleBytes),
            ] + corpora.flatMap { ["--corpus", $0] }
        let err = Pipe()
        p.standardError = err
        try p.run()
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        if msg.contains("No module named 'tiktoken'") {
            throw XCTSkip("tiktoken missing: `pip install tiktoken` (launch/test.sh does)")
        }
        guard p.terminationStatus == 0, let data = FileManager.default.contents(atPath: out) else {
            XCTFail("gpt2_reference.py failed: \(msg)"); return []
        }
        let obj = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return (obj["cases"] as! [[String: Any]]).map { c in
            (
                c["name"] as! String, [UInt8](Data(base64Encoded: c["bytes"] as! String)!),
                (c["ids"] as! [Int]).map { Int32($0) }
            )
        }
    }

    func check(_ cases: [(name: String, bytes: [UInt8], ids: [Int32])], _ bpe: GPT2BPE) {
        for c in cases {
            let text = String(decoding: c.bytes, as: UTF8.self)
            let ids = bpe.encode(text)
            if ids != c.ids {
                let at =
                    zip(ids, c.ids).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                    ?? min(ids.count, c.ids.count)
                XCTFail(
                    "\(c.name): \(ids.count) ids vs tiktoken's \(c.ids.count); first difference at \(at): "
                        + "\(Array(ids[at..<min(at + 5, ids.count)])) vs \(Array(c.ids[at..<min(at + 5, c.ids.count)]))"
                )
            }
            XCTAssertEqual(bpe.decodeBytes(ids), Array(text.utf8), "\(c.name): decode(encode(x)) != x")
        }
    }

    func testHostileTextMatchesTiktoken() throws {
        let bpe = try tokenizer()
        let cases = try referenceCases(corpora: [], sampleBytes: 0)
        XCTAssertGreaterThanOrEqual(cases.count, 10)
        check(cases, bpe)
    }

    func testCorporaMatchTiktoken() throws {
        let bpe = try tokenizer()
        let corpora = [Self.root + "/data/wiki/raw/wiki.train.tokens", Self.root + "/data/shakespeare/raw/train.txt"]
        for c in corpora where !FileManager.default.fileExists(atPath: c) {
            throw XCTSkip("no \(c): run `bash launch/fetch-data.sh data` (or launch/test.sh)")
        }
        let cases = try referenceCases(corpora: corpora, sampleBytes: 400_000)
        XCTAssertGreaterThan(cases.filter { $0.ids.count > 50_000 }.count, 1, "two corpus samples of real size")
        check(cases.filter { corpora.contains($0.name) }, bpe)
    }

    func testPretokenizerPieces() {
        func pieces(_ s: String) -> [String] {
            var out: [String] = []
            GPT2Pretokenizer.forEachPiece(s) { out.append(String(String.UnicodeScalarView($0))) }
            return out
        }
        XCTAssertEqual(pieces("Hello world's  end"), ["Hello", " world", "'s", " ", " end"])
        XCTAssertEqual(pieces("a   \n\nb"), ["a", "   \n", "\n", "b"])
        XCTAssertEqual(pieces("x  "), ["x", "  "])
        XCTAssertEqual(pieces("it'll 12ab ?!x"), ["it", "'ll", " 12", "ab", " ?!", "x"])
        XCTAssertEqual(pieces(""), [])
    }

    func testVocabularyRoundTripAndEndOfText() throws {
        let bpe = try tokenizer()
        let ranked = Array(bpe.tokenBytes.dropLast())
        let ids = bpe.encode("Hello there")
        let v = Vocabulary.buildGPT2(ranked: ranked, trainIDs: ids + [bpe.endOfTextID])
        XCTAssertEqual(v.size, 50257)
        XCTAssertEqual(v.tokens.last, "<|endoftext|>")
        XCTAssertEqual(v.counts[50256], 1)
        XCTAssertEqual(try v.gpt2().encode("Hello there"), ids)
        XCTAssertEqual(v.decode(ids), "Hello there")
        XCTAssertEqual(v.textBytesPerToken?[Int(ids[0])], 5)
        XCTAssertEqual(v.textBytesPerToken?[50256], 0)
    }

    func testDocumentsSplitAtTopLevelHeadings() {
        let text = " = A = \n intro\n = = S = = \n more\n = B = \nx\n"
        XCTAssertEqual(GPT2BPE.documents(text), [" = A = \n intro\n = = S = = \n more\n", " = B = \nx\n"])
        XCTAssertEqual(GPT2BPE.documents("plain\ntext"), ["plain\ntext"])
        XCTAssertEqual(GPT2BPE.documents(""), [""])
    }

    func testRanksFileErrorsNameTheFile() throws {
        let p = NSTemporaryDirectory() + "bad-ranks-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: p) }
        try "IQ== 0\nIg== 5\n".write(toFile: p, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try GPT2BPE.readRanks(path: p)) { e in
            XCTAssertTrue("\(e)".contains(p) && "\(e)".contains("rank 5"), "\(e)")
        }
        XCTAssertThrowsError(try GPT2BPE.readRanks(path: p + ".missing")) { e in
            XCTAssertTrue("\(e)".contains("fetch-gpt2-ranks"), "\(e)")
        }
    }
}
