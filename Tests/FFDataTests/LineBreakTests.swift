import XCTest
@testable import FFData

final class LineBreakTests: XCTestCase {
    func lines(_ s: String) -> [String] {
        var out: [String] = []
        s.enumerateLinesFast { out.append(String($0)) }
        return out
    }

    func testLinesSplitOnLFCRLFAndCR() {
        XCTAssertEqual(lines("a b c\r\nd"), ["a b c", "d"])
        XCTAssertEqual(lines("a\nb\r\nc\rd\r\n"), ["a", "b", "c", "d"])
        XCTAssertEqual(lines("a\r\n\r\nb"), ["a", "", "b"])
        XCTAssertEqual(lines("a\n\rb"), ["a", "", "b"])  // "\n" then a lone "\r": two breaks
        XCTAssertEqual(lines(""), [])
        XCTAssertEqual(lines("\r\n"), [""])
        XCTAssertEqual(lines("é\r\nü"), ["é", "ü"])
    }

    func testWordTokenizerHandlesCRLFFiles() {
        let unix = "the cat sat\nthe dog\n", dos = "the cat sat\r\nthe dog\r\n"
        let v = Vocabulary.buildWord(trainText: dos, minCount: 1, maxSize: nil)
        XCTAssertEqual(v, Vocabulary.buildWord(trainText: unix, minCount: 1, maxSize: nil))
        XCTAssertFalse(v.tokens.contains { $0.contains("\r") || $0.contains("\n") })
        let ids = v.encode("a b c\r\nd")
        XCTAssertEqual(ids.filter { $0 == 0 }.count, 2, "one <eos> per line")
        XCTAssertEqual(ids.count, 6)
        XCTAssertEqual(v.encode(dos), v.encode(unix))
        XCTAssertEqual(v.decode(v.encode(dos)), "the cat sat\nthe dog\n")
    }
}
