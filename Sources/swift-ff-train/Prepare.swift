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

    @Option(
        name: .long,
        help: "Tokens per shard: SPLIT-000000.bin, SPLIT-000001.bin, ... (0: one SPLIT.bin per split).")
    var shardTokens: Int = 0

    @Option(name: .long, help: "Threads: chunks of the input encoded at once, written in file order.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("chunk-bytes"), help: .hidden)
    var chunkBytes: Int = 8 << 20

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
        guard shardTokens >= 0 else { throw ValidationError("--shard-tokens must be >= 0") }
        guard chunkBytes >= 1 else { throw ValidationError("--chunk-bytes must be >= 1") }
        guard (1...1024).contains(threads) else {
            throw ValidationError("--threads must be 1 ... 1024 (got \(threads))")
        }
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
            let kind = TokenizerKind(rawValue: tokenizer)!
            var tok = try Tokenizing(kind: kind, trainFile: files[0], options: self)
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            print("vocabulary: \(tok.vocab.size) tokens (\(kind.rawValue))")
            var lines: [String] = []
            for (split, file) in zip(["train", "valid", "test"], files) {
                let writer = ShardWriter(dir: output, split: split, shardTokens: shardTokens)
                var hist = [Int](repeating: 0, count: tok.vocab.size)
                try tok.encode(file: file, chunkBytes: chunkBytes, threads: threads) { ids in
                    for id in ids { hist[Int(id)] += 1 }
                    try writer.append(ids)
                }
                let paths = try writer.finish()
                if split == "train" && kind != .word { tok.vocab.counts = hist }  // counts of the training split
                lines.append(summary(split, hist, tok.vocab, writer, paths))
            }
            for l in lines { print(l) }  // after train: unigram figures need its counts
            try tok.vocab.write(to: (output as NSString).appendingPathComponent("vocab.json"))
            if shardTokens > 0 {
                let globs = "train: \"train-*.bin\", valid: \"valid-*.bin\", test: \"test-*.bin\""
                print("config: data: {dir: \(output), \(globs)}")
            }
        } catch {
            fail(error)
        }
    }

    /// One split's line: tokens, <unk> share, unigram perplexity under the training counts, shards.
    func summary(_ split: String, _ hist: [Int], _ v: Vocabulary, _ w: ShardWriter, _ paths: [String]) -> String {
        let n = max(w.total, 1), total = Double(v.counts.reduce(0, +))
        var nll = 0.0
        for (id, c) in hist.enumerated() where c > 0 { nll -= Double(c) * log(max(Double(v.counts[id]), 0.5) / total) }
        let unk = v.tokenizer == .word ? hist[1] : 0
        let all = (output as NSString).appendingPathComponent(w.pattern)
        let out = paths.count == 1 ? paths[0] : "\(paths.count) shards \(all)"
        return String(
            format: "%@: %d tokens, %.2f%% <unk>, unigram perplexity %.1f -> %@",
            split, w.total, 100 * Double(unk) / Double(n), exp(nll / Double(n)), out)
    }
}

/// A tokenizer and its vocabulary, encoding files chunk by chunk (memory bounded by the chunk and
/// one shard, whatever the corpus size).
struct Tokenizing {
    var vocab: Vocabulary
    let bpe: GPT2BPE?

    init(kind: TokenizerKind, trainFile: String, options o: Prepare) throws {
        switch kind {
        case .word:
            var counter = WordCounter()
            try forEachTextChunk(path: trainFile, chunkBytes: o.chunkBytes, cut: .afterNewline) { counter.add($0) }
            vocab = counter.vocabulary(minCount: o.minCount, maxSize: o.maxVocab)
            bpe = nil
        case .byte:
            vocab = Vocabulary.buildByte(trainText: "")
            bpe = nil
        case .gpt2:
            let ranked = try GPT2BPE.readRanks(path: o.bpeRanks)
            bpe = try GPT2BPE(ranked: ranked)
            vocab = Vocabulary.buildGPT2(ranked: ranked, trainIDs: [])
        }
    }

    /// Calls `body` with the tokens of consecutive chunks of `file`; together they are the tokens
    /// of the whole file (GPT-2: <|endoftext|> after each document, a heading line starting one).
    /// `threads` chunks are encoded at once and handed over in file order, so the output does not
    /// depend on the thread count; memory stays near `threads` chunks.
    func encode(file: String, chunkBytes: Int, threads: Int, _ body: ([Int32]) throws -> Void) throws {
        var batch: [String] = []
        func flush() throws {
            var encoded = [[Int32]](repeating: [], count: batch.count)
            encoded.withUnsafeMutableBufferPointer { out in
                DispatchQueue.concurrentPerform(iterations: batch.count) { i in out[i] = encodeChunk(batch[i]) }
            }
            for ids in encoded { try body(ids) }
            batch.removeAll(keepingCapacity: true)
        }
        let cut: TextCut = bpe == nil ? .afterNewline : .beforeNewlineAfterPrintable
        try forEachTextChunk(path: file, chunkBytes: chunkBytes, cut: cut) { chunk in
            batch.append(chunk)
            if batch.count >= threads { try flush() }
        }
        try flush()
        if let bpe { try body([bpe.endOfTextID]) }
    }

    /// The tokens of one chunk (GPT-2: <|endoftext|> between the documents inside it).
    func encodeChunk(_ chunk: String) -> [Int32] {
        guard let bpe else { return vocab.encode(chunk) }
        var ids: [Int32] = []
        for (k, doc) in GPT2BPE.documents(chunk).enumerated() {
            if k > 0 { ids.append(bpe.endOfTextID) }
            ids += bpe.encode(String(doc))
        }
        return ids
    }
}
