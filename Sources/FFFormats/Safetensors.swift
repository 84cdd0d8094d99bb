import Foundation

/// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
/// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}, padded
/// with spaces to a multiple of 8), then the tensor bytes; offsets are relative to the data start.
public enum Safetensors {
    /// One float32 tensor to write.
    public struct Tensor {
        public var name: String
        public var shape: [Int]
        public var data: UnsafeBufferPointer<Float>
        public init(name: String, shape: [Int], data: UnsafeBufferPointer<Float>) {
            self.name = name; self.shape = shape; self.data = data
        }
    }

    /// Writes the tensors to `path` atomically (temporary file, fsync, rename).
    public static func write(_ tensors: [Tensor], metadata: [String: String] = [:], to path: String) throws {
        var header: [String: Any] = [:]
        var offset = 0
        for t in tensors {
            precondition(t.shape.reduce(1, *) == t.data.count, "shape/data mismatch for \(t.name)")
            let bytes = t.data.count * 4
            header[t.name] =
                ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for t in tensors { out.append(UnsafeBufferPointer(start: t.data.baseAddress, count: t.data.count)) }
        try writeAtomically(out, to: path)
    }

    /// Reads every F32 tensor of a file: name -> (shape, values). Every offset is checked against
    /// the file size.
    public static func read(
        path: String
    ) throws -> (tensors: [String: (shape: [Int], values: [Float])], metadata: [String: String]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FormatError("\(path): cannot read safetensors file")
        }
        func fail(_ m: String) -> FormatError { FormatError("\(path): not a valid safetensors file: \(m)") }
        guard data.count >= 8 else { throw fail("\(data.count) bytes, shorter than the 8-byte header length") }
        let n = data.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n <= UInt64(data.count - 8), n <= 100_000_000 else {
            throw fail(
                "header length \(n) exceeds the file "
                    + "(\(data.count) bytes)")
        }
        let dataStart = 8 + Int(n)
        guard let obj = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<dataStart)) as? [String: Any]
        else {
            throw fail("header is not a JSON object")
        }
        var tensors: [String: (shape: [Int], values: [Float])] = [:]
        var metadata: [String: String] = [:]
        var spans: [(name: String, begin: Int, end: Int)] = []
        for (name, v) in obj {
            if name == "__metadata__" {
                guard let m = v as? [String: Any], m.values.allSatisfy({ $0 is String }) else {
                    throw fail("__metadata__ must be a map of strings to strings")
                }
                metadata = m.mapValues { $0 as! String }
                continue
            }
            guard let d = v as? [String: Any], let dtype = d["dtype"] as? String, let shape = d["shape"] as? [Int],
                let offs = d["data_offsets"] as? [Int], offs.count == 2
            else {
                throw fail(
                    "tensor '\(name)' has a "
                        + "malformed entry")
            }
            guard dtype == "F32" else { throw fail("tensor '\(name)' has dtype \(dtype); only F32 is read") }
            var count = 1
            for s in shape {
                guard s >= 0 else { throw fail("tensor '\(name)' has a negative dimension") }
                let (m, o) = count.multipliedReportingOverflow(by: s)
                guard !o else { throw fail("tensor '\(name)' shape overflows") }
                count = m
            }
            let (b, e) = (offs[0], offs[1])
            let (bytes, overflow) = count.multipliedReportingOverflow(by: 4)
            guard !overflow, b >= 0, e >= b, e <= data.count - dataStart, e - b == bytes else {
                throw fail("tensor '\(name)' offsets [\(b), \(e)] do not fit its shape \(shape) or the file")
            }
            spans.append((name, b, e))
            let values = data.subdata(in: (dataStart + b)..<(dataStart + e)).withUnsafeBytes { raw in
                (0..<count).map {
                    Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
                }
            }
            tensors[name] = (shape, values)
        }
        try checkCoverage(spans, dataBytes: data.count - dataStart, fail: fail)
        return (tensors, metadata)
    }

    /// As the reference library requires: the tensors' byte ranges, in order, follow each other
    /// with no gap or overlap and end exactly where the file does.
    static func checkCoverage(
        _ spans: [(name: String, begin: Int, end: Int)], dataBytes: Int,
        fail: (String) -> FormatError
    ) throws {
        var at = 0, previous = "the start of the data"
        for s in spans.sorted(by: { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }) {
            if s.begin > at {
                throw fail(
                    "tensor '\(s.name)' starts at byte \(s.begin), leaving a gap after "
                        + "\(previous) (\(at))")
            }
            if s.begin < at {
                throw fail(
                    "tensor '\(s.name)' starts at byte \(s.begin), overlapping \(previous) (ends "
                        + "at \(at))")
            }
            at = s.end; previous = "'\(s.name)'"
        }
        guard at == dataBytes else {
            throw fail("the tensors cover \(at) bytes of data, the file holds \(dataBytes)")
        }
    }
}

/// Writes `data` to a temporary file beside `path`, fsyncs it, then renames it into place, so a
/// reader sees the old file or the whole new one. On any failure (a full disk, say) the temporary
/// file is removed and the error names the path and the system's reason.
public func writeAtomically(_ data: Data, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw FormatError("\(path): cannot create (\(String(cString: strerror(errno))))") }
    func failure(_ what: String) -> FormatError {
        let reason = String(cString: strerror(errno))
        close(fd); unlink(tmp)
        return FormatError("\(path): \(what) (\(reason))")
    }
    let ok = data.withUnsafeBytes { raw -> Bool in
        var off = 0
        while off < raw.count {
            let n = write(fd, raw.baseAddress! + off, raw.count - off)
            if n < 0 { if errno == EINTR { continue }; return false }
            off += n
        }
        return true
    }
    guard ok else { throw failure("cannot write \(data.count) bytes") }
    guard fsync(fd) == 0 else { throw failure("cannot fsync") }
    close(fd)
    guard rename(tmp, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(tmp)
        throw FormatError("\(path): cannot rename into place (\(reason))")
    }
}
