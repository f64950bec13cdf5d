import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// Classic BPF socket filters (SO_ATTACH_FILTER) for the path prober's raw sockets.
///
/// A raw ICMP socket gets a copy of every ICMP packet of the host, and a raw TCP socket of
/// every TCP segment: beside `netprobe run`'s pings and handshakes, that would wake the
/// probe loop for each of their replies. The filters let the kernel keep only what a
/// trace can use: errors (time exceeded, unreachable, too big) and echo replies with the
/// trace's own identifier; TCP segments to the trace's reserved source ports.
///
/// Offsets: a raw IPv4 socket's filter sees the packet from the IP header, a raw IPv6
/// socket's from the transport header (Documentation/networking/filter.rst; raw(7), raw6).
enum SocketFilter {
    /// One classic BPF instruction (`struct sock_filter`, 8 bytes).
    struct Instruction {
        var code: UInt16
        var jumpIfTrue: UInt8
        var jumpIfFalse: UInt8
        var constant: UInt32
    }

    /// `struct sock_fprog`: instruction count, then a pointer (padded to 16 bytes on LP64).
    struct Program {
        var length: UInt16
        var instructions: UnsafeMutablePointer<Instruction>?
    }

    static let accept = Instruction(code: 0x06, jumpIfTrue: 0, jumpIfFalse: 0, constant: 0x40000)   // ret #262144
    static let reject = Instruction(code: 0x06, jumpIfTrue: 0, jumpIfFalse: 0, constant: 0)         // ret #0
    static let loadIPv4HeaderLength = Instruction(code: 0xb1, jumpIfTrue: 0, jumpIfFalse: 0, constant: 0)  // ldxb 4*([0]&0xf)

    static func load(byteAt offset: UInt32, afterHeader: Bool) -> Instruction {
        Instruction(code: afterHeader ? 0x50 : 0x30, jumpIfTrue: 0, jumpIfFalse: 0, constant: offset)  // ldb [x+k] / ldb [k]
    }

    static func load(halfwordAt offset: UInt32, afterHeader: Bool) -> Instruction {
        Instruction(code: afterHeader ? 0x48 : 0x28, jumpIfTrue: 0, jumpIfFalse: 0, constant: offset)  // ldh [x+k] / ldh [k]
    }

    static func jumpIfEqual(_ value: UInt32, true jumpIfTrue: UInt8, false jumpIfFalse: UInt8) -> Instruction {
        Instruction(code: 0x15, jumpIfTrue: jumpIfTrue, jumpIfFalse: jumpIfFalse, constant: value)      // jeq #k
    }

    /// Errors of any kind, and echo replies carrying `identifier`.
    static func icmp(family: AddressFamily, identifier: UInt16) -> [Instruction] {
        let v4 = family == .ipv4
        let (timeExceeded, unreachable, tooBig, echoReply): (UInt32, UInt32, UInt32, UInt32) = v4 ? (11, 3, 3, 0) : (3, 1, 2, 129)
        // (IPv4 "too big" is a destination unreachable code: type 3 once is enough; the
        // repeated test costs nothing and keeps one program shape.)
        return (v4 ? [loadIPv4HeaderLength] : []) + [
            load(byteAt: 0, afterHeader: v4),
            jumpIfEqual(timeExceeded, true: 5, false: 0),
            jumpIfEqual(unreachable, true: 4, false: 0),
            jumpIfEqual(tooBig, true: 3, false: 0),
            jumpIfEqual(echoReply, true: 0, false: 3),
            load(halfwordAt: 4, afterHeader: v4),
            jumpIfEqual(UInt32(identifier), true: 0, false: 1),
            accept,
            reject,
        ]
    }

    /// Segments to one of `ports` (the destination port).
    static func tcp(family: AddressFamily, ports: [UInt16]) -> [Instruction] {
        let v4 = family == .ipv4
        var program = (v4 ? [loadIPv4HeaderLength] : []) + [load(halfwordAt: 2, afterHeader: v4)]
        for (index, port) in ports.enumerated() {
            // Jump to `accept`, which follows every test and the final reject.
            program.append(jumpIfEqual(UInt32(port), true: UInt8(ports.count - index), false: 0))
        }
        return program + [reject, accept]
    }

    /// Attaches `program` to `fd`.
    static func attach(_ program: [Instruction], to fd: Int32) throws(SystemCallError) {
        precondition(MemoryLayout<Instruction>.size == 8 && MemoryLayout<Program>.size == 16, "sock_filter / sock_fprog layout")
        var instructions = program
        try instructions.withUnsafeMutableBufferPointer { (buffer) throws(SystemCallError) in
            var fprog = Program(length: UInt16(buffer.count), instructions: buffer.baseAddress)
            _ = try Posix.retryingEINTR("setsockopt(SO_ATTACH_FILTER)") {
                Glibc.setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, socklen_t(MemoryLayout<Program>.size))
            }
        }
    }
}
