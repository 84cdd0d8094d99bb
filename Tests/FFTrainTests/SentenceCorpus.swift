import FFCore
import Foundation
import FFData
import FFKernels

/// A small word-level corpus with structure a model can learn (repeated sentences with a few
/// variants), written as prepare would: vocab.json and train/valid/test token shards in `dir`.
/// valid and test are the first and last `heldOut` tokens of the training text.
func writeSentenceCorpus(to dir: String, sentences: Int, seed: UInt64, heldOut: Int) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var lines: [String] = []
    var rng = SplitMix64(seed: seed)
    let subjects = ["the cat", "a dog", "the old man", "my sister"], verbs = ["sees", "likes", "finds"]
    for _ in 0..<sentences {
        lines.append(" \(subjects[rng.nextInt(below: 4)]) \(verbs[rng.nextInt(below: 3)]) the red ball . ")
    }
    let text = lines.joined(separator: "\n") + "\n"
    let vocab = Vocabulary.buildWord(trainText: text, minCount: 1, maxSize: nil)
    try vocab.write(to: dir + "/vocab.json")
    let ids = vocab.encode(text)
    try writeTokenShard(ids, to: dir + "/train.bin")
    try writeTokenShard(Array(ids.prefix(heldOut)), to: dir + "/valid.bin")
    try writeTokenShard(Array(ids.suffix(heldOut)), to: dir + "/test.bin")
}
