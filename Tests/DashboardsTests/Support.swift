import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A temporary folder removed when the value goes away.
final class TemporaryFolder {
    let url: URL
    var path: String { url.path }

    init(_ prefix: String) throws {
        url = try TestEnvironment.temporaryDirectory(prefix)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

struct ProcessResult {
    var status: Int32
    var standardOutput: String
    var standardError: String
}

/// The netprobe binary built next to the test bundle, run as a child process.
enum NetprobeProcess {
    static var path: String {
        TestEnvironment.builtExecutable("netprobe")
    }

    /// Runs netprobe with `arguments` to completion (at most `timeout` seconds).
    static func run(_ arguments: [String], timeout: TimeInterval = 60) throws -> ProcessResult {
        try runProgram([path] + arguments, timeout: timeout)
    }

    /// Runs any program; output goes to files, so a chatty child never blocks on a pipe.
    static func runProgram(_ arguments: [String], timeout: TimeInterval = 60, until stop: (() -> Bool)? = nil) throws -> ProcessResult {
        let folder = try TemporaryFolder("netprobe-output")
        let outputURL = folder.url.appendingPathComponent("stdout")
        let errorURL = folder.url.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = try FileHandle(forWritingTo: outputURL)
        process.standardError = try FileHandle(forWritingTo: errorURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        TestEnvironment.eventually(within: timeout) { !process.isRunning }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            XCTFail("\(arguments.joined(separator: " ")) ran past \(timeout) s")
        }
        process.waitUntilExit()
        return ProcessResult(status: process.terminationStatus,
                             standardOutput: (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "",
                             standardError: (try? String(contentsOf: errorURL, encoding: .utf8)) ?? "")
    }

    static func requireRoot() throws {
        guard geteuid() == 0 else {
            if TestEnvironment.isCI { XCTFail("CI must run the tests as root") }
            throw XCTSkip("needs root (raw ICMP sockets, a private mount namespace for resolv.conf); CI runs as root")
        }
    }
}

/// A listening TCP socket on a loopback address; the kernel completes handshakes itself.
final class LoopbackListener {
    let descriptor: Int32
    let port: UInt16

    /// - Parameters:
    ///   - ipv6: listen on ::1 instead of 127.0.0.1.
    ///   - port: the port, 0 for any free one.
    init(ipv6: Bool, port: UInt16 = 0) throws {
        let descriptor = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(.EMFILE) }
        self.descriptor = descriptor
        var result: Int32
        if ipv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_addr = in6addr_loopback
            address.sin6_port = port.bigEndian
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = port.bigEndian
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard result == 0, listen(descriptor, 4096) == 0 else {
            close(descriptor)
            throw POSIXError(.EADDRINUSE)
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        self.port = withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) }
    }

    deinit { close(descriptor) }
}
