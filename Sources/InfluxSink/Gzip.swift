import CZlib
import Foundation

/// gzip (RFC 1952) through zlib; Foundation has no encoder on Linux.
enum Gzip {
    /// Compresses `input` into one gzip member.
    /// - Throws: `InfluxSinkError.invalidConfiguration` if zlib fails (out of memory).
    static func compress(_ input: [UInt8]) throws -> Data {
        var stream = z_stream()
        // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
        guard CZlib_deflateInit2(&stream, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK else {
            throw InfluxSinkError.invalidConfiguration("zlib: deflateInit2 failed")
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 32)
        var input = input
        let status = input.withUnsafeMutableBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                stream.next_in = source.baseAddress
                stream.avail_in = uInt(source.count)
                stream.next_out = destination.baseAddress
                stream.avail_out = uInt(destination.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else {
            throw InfluxSinkError.invalidConfiguration("zlib: deflate returned \(status)")
        }
        return Data(output[0..<Int(stream.total_out)])
    }
}
