import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// An unbound AF_UNIX datagram socket that sends to one address ("/path" or "@abstract"), never blocking.
/// Owns its descriptor; closed in `deinit`.
public final class UnixDatagramSender {
    private let fd: Int32
    public let address: String

    public init(address: String) throws(SystemError) {
        let fd = pc_unix_dgram_socket()
        if fd < 0 { throw SystemError(code: fd, operation: "socket(AF_UNIX, SOCK_DGRAM)") }
        self.fd = fd
        self.address = address
    }

    deinit {
        _ = Glibc.close(fd)
    }

    /// Sends one datagram; returns the error instead of throwing (callers treat it as non-fatal).
    public func send(_ message: String) -> SystemError? {
        var bytes = Array(message.utf8)
        let rc = bytes.withUnsafeMutableBytes { pc_unix_dgram_send(fd, address, $0.baseAddress, $0.count) }
        return rc == 0 ? nil : SystemError(code: rc, operation: "send to '\(address)'")
    }
}
