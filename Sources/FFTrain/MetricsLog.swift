import FFFormats
import Foundation

/// `metrics.jsonl`: one JSON object per line, appended and flushed as the run goes.
final class MetricsLog {
    let handle: FileHandle
    let path: String
    let encoder: JSONEncoder

    /// Starts a new file, or with `append` continues an existing one (a resumed run).
    init(path: String, append: Bool = false) throws {
        self.path = path
        let exists = FileManager.default.fileExists(atPath: path)
        if !(append && exists) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw FormatError("\(path): cannot create the metrics file")
            }
        }
        guard let h = FileHandle(forWritingAtPath: path) else {
            throw FormatError(
                "\(path): cannot open the metrics "
                    + "file")
        }
        if append { h.seekToEndOfFile() }
        handle = h
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    }

    deinit { try? handle.close() }

    func append<T: Encodable>(_ record: T) throws {
        var line = try encoder.encode(record)
        line.append(0x0A)
        do { try handle.write(contentsOf: line) } catch {
            throw FormatError("\(path): cannot append metrics: \(error)")
        }
    }
}
