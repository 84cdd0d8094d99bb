import CZlib
import Foundation

/// An IDX array (the MNIST file format): a big-endian header — two zero bytes, the element type,
/// the number of dimensions — then each dimension as a big-endian uint32, then the elements in
/// row-major order, big-endian. Files may be gzipped. Element types read here: 0x08 unsigned byte
/// (pixels, and labels of up to 256 classes), 0x0B int16 and 0x0C int32 (labels of more classes,
/// e.g. ImageNet's 1000).
public struct IDXArray: Sendable {
    public var dims: [Int]
    /// 0x08, 0x0B or 0x0C.
    public var type: UInt8
    /// The elements, row-major, as stored (big-endian for the wider types).
    public var bytes: Data

    static let elementBytes: [UInt8: Int] = [0x08: 1, 0x0B: 2, 0x0C: 4]

    public init(dims: [Int], bytes: Data, type: UInt8 = 0x08) {
        precondition(IDXArray.elementBytes[type] != nil, "IDX element type \(type) not supported")
        precondition(
            dims.reduce(1, *) * IDXArray.elementBytes[type]! == bytes.count,
            "IDX dims \(dims) do not match \(bytes.count) bytes")
        self.dims = dims
        self.type = type
        self.bytes = bytes
    }

    /// Int32 labels written big-endian as type 0x0C.
    public init(labels: [Int32]) {
        var d = Data(capacity: labels.count * 4)
        for x in labels { withUnsafeBytes(of: x.bigEndian) { d.append(contentsOf: $0) } }
        self.init(dims: [labels.count], bytes: d, type: 0x0C)
    }

    /// The elements as integers (any element type).
    public func integers() -> [Int] {
        let b = [UInt8](bytes)
        switch type {
        case 0x0B:
            return stride(from: 0, to: b.count, by: 2).map { i in
                Int(Int16(bitPattern: UInt16(b[i]) << 8 | UInt16(b[i + 1])))
            }
        case 0x0C:
            return stride(from: 0, to: b.count, by: 4).map { i in
                let word = UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
                return Int(Int32(bitPattern: word))
            }
        default: return b.map { Int($0) }
        }
    }

    /// Reads an IDX file, gzipped (detected by its magic bytes) or not; uncompressed files are
    /// memory-mapped, so large datasets are paged in on demand.
    public static func read(path: String) throws -> IDXArray {
        let raw: Data
        do { raw = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw DataError(path, "cannot read: \(error.localizedDescription)")
        }
        let data = raw.starts(with: [0x1F, 0x8B]) ? try gunzip(raw, path: path) : raw
        return try parse(data, path: path)
    }

    /// Decodes an IDX byte string; `path` names it in errors.
    public static func parse(_ data: Data, path: String) throws -> IDXArray {
        guard data.count >= 4 else { throw DataError(path, "\(data.count) bytes: too short for an IDX header") }
        let h = [UInt8](data.prefix(4))
        guard h[0] == 0, h[1] == 0 else {
            let magic = String(format: "%02x %02x", h[0], h[1])
            throw DataError(path, "not an IDX file (magic bytes \(magic), expected 00 00)")
        }
        guard let width = elementBytes[h[2]] else {
            throw DataError(
                path,
                String(
                    format: "IDX element type 0x%02x is not supported "
                        + "(0x08 unsigned byte, 0x0B int16, 0x0C int32)", h[2]))
        }
        let n = Int(h[3])
        guard (1...4).contains(n) else { throw DataError(path, "IDX with \(n) dimensions (expected 1 to 4)") }
        guard data.count >= 4 + 4 * n else { throw DataError(path, "truncated IDX header (\(data.count) bytes)") }
        var dims: [Int] = []
        var total = width
        for i in 0..<n {
            let o = data.startIndex + 4 + 4 * i
            let d = data[o..<(o + 4)].reduce(0) { $0 << 8 | Int($1) }
            guard d > 0 else { throw DataError(path, "IDX dimension \(i) is 0") }
            let (t, overflow) = total.multipliedReportingOverflow(by: d)
            guard !overflow, t <= 1 << 40 else { throw DataError(path, "IDX dimensions \(dims + [d]) are too large") }
            total = t
            dims.append(d)
        }
        let body = 4 + 4 * n
        guard data.count - body == total else {
            throw DataError(
                path,
                "IDX dimensions \(dims) need \(total) bytes of data, the file has \(data.count - body)")
        }
        return IDXArray(dims: dims, bytes: data.subdata(in: (data.startIndex + body)..<data.endIndex), type: h[2])
    }

    /// The file's bytes (header and elements).
    public func encoded() -> Data {
        var d = Data([0, 0, type, UInt8(dims.count)])
        for x in dims {
            d.append(contentsOf: [UInt8(x >> 24 & 0xFF), UInt8(x >> 16 & 0xFF), UInt8(x >> 8 & 0xFF), UInt8(x & 0xFF)])
        }
        d.append(bytes)
        return d
    }

    /// Writes the array atomically, gzipped when `gzip` is true.
    public func write(to path: String, gzip: Bool = false) throws {
        let data = gzip ? try IDXArray.gzip(encoded(), path: path) : encoded()
        do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw DataError(path, "cannot write: \(error.localizedDescription)")
        }
    }

    static func gunzip(_ input: Data, path: String) throws -> Data {
        var out = Data()
        var stream = z_stream()
        guard cz_inflate_init_gzip(&stream) == Z_OK else { throw DataError(path, "zlib: cannot start inflating") }
        defer { inflateEnd(&stream) }
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        try input.withUnsafeBytes { (src: UnsafeRawBufferPointer) in
            stream.next_in = UnsafeMutablePointer(mutating: src.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(src.count)
            while true {
                let status = buffer.withUnsafeMutableBufferPointer { b -> Int32 in
                    stream.next_out = b.baseAddress
                    stream.avail_out = uInt(chunk)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                out.append(contentsOf: buffer[0..<(chunk - Int(stream.avail_out))])
                if status == Z_STREAM_END {
                    // Concatenated gzip members decode as one stream (as gzip -d does).
                    if stream.avail_in == 0 { return }
                    inflateReset(&stream)
                    continue
                }
                guard status == Z_OK else {
                    let why = stream.msg.map { String(cString: $0) } ?? "status \(status)"
                    throw DataError(path, "corrupt gzip data: \(why)")
                }
                if stream.avail_in == 0 && stream.avail_out != 0 { throw DataError(path, "truncated gzip data") }
            }
        }
        return out
    }

    /// `input` gzipped (`path` names the destination in errors).
    public static func gzip(_ input: Data, path: String) throws -> Data {
        var stream = z_stream()
        guard cz_deflate_init_gzip(&stream) == Z_OK else { throw DataError(path, "zlib: cannot start deflating") }
        defer { deflateEnd(&stream) }
        var out = Data()
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        input.withUnsafeBytes { (src: UnsafeRawBufferPointer) in
            stream.next_in = UnsafeMutablePointer(mutating: src.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(src.count)
            var status: Int32 = Z_OK
            while status != Z_STREAM_END {
                status = buffer.withUnsafeMutableBufferPointer { b -> Int32 in
                    stream.next_out = b.baseAddress
                    stream.avail_out = uInt(chunk)
                    return deflate(&stream, Z_FINISH)
                }
                out.append(contentsOf: buffer[0..<(chunk - Int(stream.avail_out))])
            }
        }
        return out
    }
}
