/// Where a connection goes: a TCP host and port, or a Unix socket. The one address type of a target (server
/// mode: the plaintext backend; client mode: the remote TLS server) and of the status endpoint, from the
/// configuration to the runtime; the runtime resolves a host name when it builds a generation.
public enum TargetAddress: Sendable, Hashable, CustomStringConvertible {
    /// An IP literal (canonical, no brackets) or a host name, and a port.
    case tcp(host: String, port: UInt16)
    /// An absolute Unix socket path.
    case unix(path: String)

    /// 127.0.0.0/8, ::1, or a Unix socket. A host name never counts (it could resolve anywhere).
    public var isLoopback: Bool {
        switch self {
        case .unix: true
        case .tcp(let host, _): IPAddress(host)?.isLoopback ?? false
        }
    }

    /// `127.0.0.1:6379`, `[::1]:6379`, `unix:/run/app.sock`.
    public var description: String {
        switch self {
        case .tcp(let host, let port): TargetAddress.hostPort(host, port)
        case .unix(let path): "unix:" + path
        }
    }

    /// `HOST:PORT`, with an IPv6 literal in brackets.
    public static func hostPort(_ host: String, _ port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

extension IPAddress {
    /// 127.0.0.0/8 or ::1.
    public var isLoopback: Bool {
        if isIPv4 { return bytes[0] == 127 }
        return bytes == [UInt8](repeating: 0, count: 15) + [1]
    }
}
