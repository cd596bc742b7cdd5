import CSystemShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The local syslog socket (`/dev/log`: rsyslog, syslog-ng or journald), connected at creation so a missing
/// daemon is an error at startup rather than lines lost later. Safe to use from every thread: one datagram per
/// call is atomic, and the descriptor is swapped under a lock when the daemon restarts.
public final class SyslogSocket: Sendable {
    public let path: String
    private let descriptor: Mutex<Int32>

    public init(path: String = "/dev/log") throws(SystemError) {
        self.path = path
        descriptor = Mutex(try SyslogSocket.connect(path))
    }

    deinit {
        descriptor.withLock { fd in _ = Glibc.close(fd) }
    }

    private static func connect(_ path: String) throws(SystemError) -> Int32 {
        let fd = pc_unix_dgram_socket()
        if fd < 0 { throw SystemError(code: fd, operation: "socket(AF_UNIX, SOCK_DGRAM)") }
        let rc = pc_unix_dgram_connect(fd, path)
        if rc != 0 {
            _ = Glibc.close(fd)
            throw SystemError(code: rc, operation: "connect to '\(path)'")
        }
        return fd
    }

    /// Sends one message without blocking. A daemon that restarted (the old socket refuses) is reconnected
    /// once. Returns the error when the message could not be sent (a full queue: EAGAIN).
    public func send(_ message: [UInt8]) -> SystemError? {
        descriptor.withLock { fd -> SystemError? in
            var rc = message.withUnsafeBytes { pc_send_nonblocking(fd, $0.baseAddress, $0.count) }
            if rc == -ECONNREFUSED || rc == -ENOTCONN {
                guard let fresh = try? SyslogSocket.connect(path) else {
                    return SystemError(code: rc, operation: "send to '\(path)'")
                }
                _ = Glibc.close(fd)
                fd = fresh
                rc = message.withUnsafeBytes { pc_send_nonblocking(fd, $0.baseAddress, $0.count) }
            }
            return rc == 0 ? nil : SystemError(code: rc, operation: "send to '\(path)'")
        }
    }
}
