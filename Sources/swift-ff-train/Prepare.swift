import ArgumentParser
import Foundation
import FFData

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn UTF-8 text (train/valid/test) into token shards and a vocabulary.",
        discussion: """
        The input folder holds one file per split, named wiki.SPLIT.tokens (WikiText-103 as it \
        comes), SPLIT.tokens or SPLIT.txt. The output folder receives vocab.json and \
        train.bin, valid.bin, test.bin. The vocabulary is built from the training split only. \
        --tokenizer gpt2 uses GPT-2's byte-level BPE from a ranks file (launch/fetch-gpt2-ranks.sh) \
        and puts <|endoftext|> after every document (a WikiText top-level heading starts one).
        """)

    @Option(name: .long, help: "Folder with the train/valid/test text files.")
    var input: String

    @Option(name: .long, help: "Folder for vocab.json and the .bin shards.")
    var output: String

    @Option(name: .long, help: "word (WikiText conventions), byte, or gpt2 (GPT-2's BPE).")
    var tokenizer: String = "word"

    @Option(name: .long, help: "gpt2: the tiktoken ranks file (launch/fetch-gpt2-ranks.sh writes it).")
    var bpeRanks: String = "data/gpt2/gpt2.tiktoken"

    @Option(name: .long, help: "Word tokenizer: words seen fewer times in train become <unk>.")
    var minCount: Int = 1

    @Option(name: .long, help: "Word tokenizer: at most this many tokens, specials included.")
    var maxVocab: Int?

    func validate() throws {
        guard TokenizerKind(rawValue: tokenizer) != nil else {
            throw ValidationError("--tokenizer must be word, byte or gpt2 (got '\(tokenizer)')")
        }
        guard minCount >= 1 else { throw ValidationError("--min-count must be at least 1") }
        if let maxVocab, maxVocab < 3 { throw ValidationError("--max-vocab must be at least 3") }
    }

    func findSplit(_ split: String) throws -> String {
        for name in ["wiki.\(split).tokens", "\(split).tokens", "\(split).txt"] {
            let p = (input as NSString).appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: p) { return p }
        }
        throw DataError(input, "no \(split) split: expected wiki.\(split).tokens, \(split).tokens or \(split).txt")
    }

    func run() throws {
        do {
            let files = try ["train", "valid", "test"].map { try findSplit($0) }
            var texts: [String] = []
            for f in files {
                guard let data = FileManager.default.contents(atPath: f) else { throw DataError(f, "cannot read") }
                guard let s = String(data: data, encoding: .utf8) else { throw DataError(f, "is not valid UTF-8") }
                texts.append(s)
            }
            let kind = TokenizerKind(rawValue: tokenizer)!
            let (vocab, splitIDs) = try buildVocabulary(kind, texts)
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            print("vocabulary: \(vocab.size) tokens (\(kind.rawValue))")
            for (split, ids) in zip(["train", "valid", "test"], splitIDs) {
                let path = (output as NSString).appendingPathComponent("\(split).bin")
                try writeTokenShard(ids, to: path)
                let unk = kind == .word ? ids.filter { $0 == 1 }.count : 0
                print(String(format: "%@: %d tokens, %.2f%% <unk>, unigram perplexity %.1f -> %@",
                             split, ids.count, 100 * Double(unk) / Double(max(ids.count, 1)),
                             vocab.unigramPerplexity(ids), path))
            }
            try vocab.write(to: (output as NSString).appendingPathComponent("vocab.json"))
        } catch {
            fail(error)
        }
    }

    /// The vocabulary and every split's tokens.
    func buildVocabulary(_ kind: TokenizerKind, _ texts: [String]) throws -> (Vocabulary, [[Int32]]) {
        switch kind {
        case .word, .byte:
            let vocab = kind == .word
                ? Vocabulary.buildWord(trainText: texts[0], minCount: minCount, maxSize: maxVocab)
                : Vocabulary.buildByte(trainText: texts[0])
            return (vocab, texts.map(vocab.encode))
        case .gpt2:
            let ranked = try GPT2BPE.readRanks(path: bpeRanks)
            let bpe = try GPT2BPE(ranked: ranked)
            let ids = texts.map(bpe.encodeDocuments)
            return (Vocabulary.buildGPT2(ranked: ranked, trainIDs: ids[0]), ids)
        }
    }
}
