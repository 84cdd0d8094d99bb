import Crypto
import Foundation

/// SHA-256 checksums of checkpoint files, through swift-crypto (CryptoKit on Apple platforms,
/// BoringSSL's SHA-extension and vector assembly elsewhere): a maintained, audited implementation
/// instead of one of our own.
public enum FileDigest {
    /// The hex SHA-256 of a file's bytes, streamed in pieces of `chunkBytes` so that memory stays
    /// flat for a shard of any size.
    public static func sha256(file path: String, chunkBytes: Int = 4 << 20) throws -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw FormatError("\(path): cannot open to checksum (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 64)
        defer { buffer.deallocate() }
        var hasher = SHA256()
        while true {
            let n = read(fd, buffer.baseAddress, chunkBytes)
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError("\(path): read failed while checksumming (\(String(cString: strerror(errno))))")
            }
            if n == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return hex(hasher.finalize())
    }

    /// The hex SHA-256 of bytes in memory.
    public static func sha256(_ data: Data) -> String { hex(SHA256.hash(data: data)) }

    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
