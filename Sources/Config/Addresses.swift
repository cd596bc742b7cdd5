public import Policy

/// Where a listener accepts connections: an IP literal and a port (0 asks the kernel for a free one), a Unix
/// stream socket it binds, or the sockets systemd passed under a `FileDescriptorName=`.
public enum ListenAddress: Sendable, Equatable, CustomStringConvertible {
    /// `host` is the canonical IP literal without brackets: `0.0.0.0`, `127.0.0.1`, `::1`.
    case tcp(host: String, port: UInt16)
    /// An absolute path (at most 107 bytes).
    case unix(path: String)
    /// The name systemd passed the sockets under (`FileDescriptorName=` of the .socket unit).
    case systemd(name: String)

    public init(host: IPAddress, port: UInt16) {
        self = .tcp(host: host.description, port: port)
    }

    /// A TCP address on 127.0.0.0/8 or ::1. A Unix socket or systemd's sockets are not judged here.
    public var isLoopback: Bool {
        if case .tcp(let host, _) = self { return isLoopbackHost(host) }
        return false
    }

    /// A TCP address that is not loopback: what client mode refuses without `unsafe-listen`. A Unix socket is
    /// local by nature; systemd's sockets are checked when they are adopted.
    public var isNetworkFacing: Bool {
        if case .tcp = self { return !isLoopback }
        return false
    }

    /// `0.0.0.0:8443`, `[::1]:8443`, `unix:/run/p.sock`, `systemd:portcullis`.
    public var description: String {
        switch self {
        case .tcp(let host, let port): formatHostPort(host, port)
        case .unix(let path): "unix:" + path
        case .systemd(let name): "systemd:" + name
        }
    }
}

func formatHostPort(_ host: String, _ port: UInt16) -> String {
    TargetAddress.hostPort(host, port)
}

func isLoopbackHost(_ host: String) -> Bool {
    IPAddress(host)?.isLoopback ?? false
}

/// Longest Unix socket path: `sun_path` is 108 bytes on Linux, including the terminating NUL.
let maximumSocketPathLength = 107

extension Validate {
    /// Parses `IPv4:PORT`, `[IPv6]:PORT`, `localhost:PORT` (→ 127.0.0.1) or `:PORT` (→ 0.0.0.0), port 0-65535;
    /// `unix:/absolute/path`; or `systemd:NAME` (a `FileDescriptorName=`: 1-255 printable ASCII bytes, no ':').
    public static func listenAddress(_ value: String, key: String) throws(ConfigError) -> ListenAddress {
        if value.hasPrefix("unix:") {
            return .unix(path: try socketPath(value, key: key))
        }
        if value.hasPrefix("systemd:") {
            let name = value.dropFirst(8)
            // systemd's own rule for FileDescriptorName= (LISTEN_FDNAMES is colon-separated).
            guard (1...255).contains(name.utf8.count), name.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != 58 }) else {
                throw .invalid(key, value, "is not a socket name: use systemd:NAME with NAME as in the .socket unit's FileDescriptorName= (1-255 printable characters, no ':' or space)")
            }
            return .systemd(name: String(name))
        }
        if value.hasPrefix("launchd:") {
            throw .invalid(key, value, "is a launchd socket, which exists on macOS only: on Linux use systemd:NAME (socket activation) or unix:/path")
        }
        let (host, port) = try splitHostPort(value, key: key, portRange: 0...65535, example: "0.0.0.0:8443 or :8443")
        if host.isEmpty { return ListenAddress(host: IPAddress("0.0.0.0")!, port: port) }
        if host.lowercased() == "localhost" { return ListenAddress(host: IPAddress("127.0.0.1")!, port: port) }
        guard let address = IPAddress(host) else {
            throw .invalid(key, value, "does not name an IP address: use an IP address, localhost, or :PORT for all interfaces")
        }
        return ListenAddress(host: address, port: port)
    }

    /// A listen address that must be loopback (127.0.0.0/8, ::1, `localhost`) unless `allowNonLoopback`; the
    /// message names `unsafeKey`: `--listen '0.0.0.0:4150' is not a loopback address (use --unsafe-listen to allow it)`.
    public static func loopbackListenAddress(
        _ value: String, key: String, allowNonLoopback: Bool, unsafeKey: String
    ) throws(ConfigError) -> ListenAddress {
        let address = try listenAddress(value, key: key)
        guard case .tcp = address else {
            throw .invalid(key, value, "is not HOST:PORT or unix:/path: use e.g. 127.0.0.1:9100")
        }
        if !allowNonLoopback && !address.isLoopback {
            throw .invalid(key, value, "is not a loopback address (use \(unsafeKey) to allow it)")
        }
        return address
    }

    /// The status endpoint's address: `HOST:PORT` or `http://HOST:PORT` (plain HTTP), `https://HOST:PORT` (HTTPS
    /// with the listener's certificate), on loopback (anywhere with `allowNonLoopback`; the message names
    /// `unsafeKey`), `unix:/absolute/path`, or `systemd:NAME` (the socket systemd passed under that
    /// `FileDescriptorName=`, plain or `https://`). Returns the endpoint, the address it occupies (for conflict
    /// checks), and whether it is served over TLS.
    public static func statusAddress(
        _ value: String, key: String, allowNonLoopback: Bool, unsafeKey: String
    ) throws(ConfigError) -> (endpoint: ListenAddress, address: ListenAddress?, https: Bool) {
        var rest = value
        var https = false
        if rest.hasPrefix("https://") {
            rest.removeFirst("https://".count)
            https = true
        } else if rest.hasPrefix("http://") {
            rest.removeFirst("http://".count)
        } else if let scheme = rest.range(of: "://") {
            throw .invalid(key, value, "has scheme '\(rest[..<scheme.lowerBound])': use HOST:PORT or http://HOST:PORT (plain HTTP), https://HOST:PORT (TLS), unix:/path or systemd:NAME")
        }
        if rest.hasSuffix("/") { rest.removeLast() }
        if rest.hasPrefix("unix:") {
            if rest != value {
                throw .invalid(key, value, "is a Unix socket, which takes no scheme: use unix:/path (served as plain HTTP; file permissions guard it)")
            }
            let path = try socketPath(rest, key: key)
            return (.unix(path: path), .unix(path: path), false)
        }
        if rest.hasPrefix("systemd:") {
            let address = try listenAddress(rest, key: key)
            return (address, address, https)
        }
        do {
            let address = try loopbackListenAddress(rest, key: key, allowNonLoopback: allowNonLoopback, unsafeKey: unsafeKey)
            return (address, address, https)
        } catch {
            // Quote what was written, scheme included.
            throw ConfigError(key: error.key, message: error.message.replacing(singleQuoted(rest), with: singleQuoted(value), maxReplacements: 1))
        }
    }

    /// Parses `HOST:PORT` (port 1-65535; `localhost` → 127.0.0.1) or `unix:/absolute/path`.
    ///
    /// A TCP target that is not loopback is refused unless `allowNonLoopback`; the message names `unsafeKey`.
    public static func targetAddress(
        _ value: String, key: String, allowNonLoopback: Bool, unsafeKey: String
    ) throws(ConfigError) -> TargetAddress {
        if value.hasPrefix("unix:") {
            return .unix(path: try socketPath(value, key: key))
        }
        let target = try tcpTarget(value, key: key, example: "127.0.0.1:6379 or unix:/path/to/socket", exampleHost: "127.0.0.1").target
        if !allowNonLoopback && !target.isLoopback {
            throw .invalid(key, value, "is not a loopback address (use \(unsafeKey) to allow it)")
        }
        return target
    }

    /// The path of `unix:/absolute/path`: absolute, no NUL, at most 107 bytes (`sun_path`).
    private static func socketPath(_ value: String, key: String) throws(ConfigError) -> String {
        let path = String(value.dropFirst(5))
        guard path.hasPrefix("/") else {
            throw .invalid(key, value, "is not an absolute socket path: use unix:/path/to/socket")
        }
        guard !path.utf8.contains(0) else { throw .invalid(key, value, "contains a NUL character") }
        guard path.utf8.count <= maximumSocketPathLength else {
            throw .invalid(key, value, "is too long: a socket path is at most \(maximumSocketPathLength) bytes")
        }
        return path
    }

    /// Parses a client-mode target, the remote TLS server: `HOST:PORT` with a DNS name or an IP literal
    /// (`[v6]:PORT`), port 1-65535, anywhere on the network; `localhost` → 127.0.0.1. A Unix socket is refused.
    ///
    /// `serverName` is the name to send as SNI and verify when none is given: the host as written, lowercased
    /// (`localhost` stays `localhost`), or the canonical IP literal.
    public static func remoteTarget(_ value: String, key: String) throws(ConfigError) -> (target: TargetAddress, serverName: String) {
        if value.hasPrefix("unix:") {
            throw .invalid(key, value, "is a Unix socket: client mode connects to a remote TLS server; use HOST:PORT, e.g. broker-1.internal:4443")
        }
        return try tcpTarget(value, key: key, example: "broker-1.internal:4443", exampleHost: "broker-1.internal")
    }

    /// The name a client-mode listener sends as SNI and expects in the server certificate: a DNS name
    /// (lowercased) or an IP literal (canonical, without brackets).
    public static func serverName(_ value: String, key: String) throws(ConfigError) -> String {
        if let address = IPAddress(value) { return address.description }
        guard isHostName(value) else {
            throw .invalid(key, value, "is not a DNS name or IP address: use the name in the server's certificate, e.g. broker-1.internal")
        }
        return value.lowercased()
    }

    /// `HOST:PORT` → a TCP target, and the host as a server name (see `remoteTarget`).
    private static func tcpTarget(
        _ value: String, key: String, example: String, exampleHost: String
    ) throws(ConfigError) -> (target: TargetAddress, serverName: String) {
        let (host, port) = try splitHostPort(value, key: key, portRange: 1...65535, example: example)
        if host.isEmpty {
            throw .invalid(key, value, "has no host: use e.g. \(exampleHost):\(port)")
        } else if host.lowercased() == "localhost" {
            return (.tcp(host: "127.0.0.1", port: port), "localhost")
        } else if let address = IPAddress(host) {
            return (.tcp(host: address.description, port: port), address.description)
        } else if isHostName(host) {
            return (.tcp(host: host, port: port), host.lowercased())
        } else {
            throw .invalid(key, value, "has an invalid host: use an IP address or a DNS name")
        }
    }

    /// Splits `host:port` / `[v6]:port`; the host comes back without brackets and may be empty.
    private static func splitHostPort(
        _ value: String, key: String, portRange: ClosedRange<Int>, example: String
    ) throws(ConfigError) -> (host: String, port: UInt16) {
        let host: Substring
        let port: Substring
        if value.hasPrefix("[") {
            guard let close = value.firstIndex(of: "]") else {
                throw .invalid(key, value, "has no closing ']': use e.g. [::1]:8443")
            }
            host = value[value.index(after: value.startIndex)..<close]
            let rest = value[value.index(after: close)...]
            guard rest.hasPrefix(":"), rest.count > 1 else { throw .invalid(key, value, "has no port: use HOST:PORT, e.g. \(example)") }
            port = rest.dropFirst()
            guard let address = IPAddress(String(host)), !address.isIPv4 else {
                throw .invalid(key, value, "has brackets around something that is not an IPv6 address")
            }
        } else {
            guard let colon = value.lastIndex(of: ":"), value.index(after: colon) < value.endIndex else {
                throw .invalid(key, value, "has no port: use HOST:PORT, e.g. \(example)")
            }
            host = value[..<colon]
            port = value[value.index(after: colon)...]
            if host.contains(":") {
                throw .invalid(key, value, "is ambiguous: put an IPv6 address in brackets, e.g. [::1]:8443")
            }
        }
        guard port.utf8.count <= 5, port.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let number = Int(port),
              portRange.contains(number)
        else {
            throw .invalid(key, value, "has an invalid port: use \(portRange.lowerBound)-\(portRange.upperBound)")
        }
        return (String(host), UInt16(number))
    }

    /// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, not all-numeric.
    static func isHostName(_ host: String) -> Bool {
        guard host.utf8.count <= 253 else { return false }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        let valid = labels.allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { byte in
                    (byte >= 48 && byte <= 57) || (byte | 0x20 >= 97 && byte | 0x20 <= 122) || byte == 45
                }
        }
        return valid && !host.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || $0 == 46 }
    }
}
