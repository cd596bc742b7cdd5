public import Policy
public import TLS
import EventLoop

/// Everything the runtime needs to serve one server-mode listener, already validated by `Config`.
public struct ProxyConfiguration: Sendable {
    public enum Target: Sendable, CustomStringConvertible {
        case tcp(host: String, port: UInt16)
        case unix(path: String)

        public var description: String {
            switch self {
            case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path): return "unix:\(path)"
            }
        }
    }

    /// How the user named each setting, for error messages (`--cert` on the command line,
    /// `listeners[0].tls.cert` in a file).
    public struct SettingNames: Sendable {
        public var listen = "--listen"
        public var target = "--target"
        public var certificate = "--cert"
        public var key = "--key"
        public var keyPassphrase = "--key-passphrase-file"
        public var caBundle = "--cacert"
        public var crl = "--crl"
        public init() {}
    }

    public var name = "server"
    public var listenHost: String
    public var listenPort: UInt16
    public var target: Target
    public var tls: TLSConfiguration
    public var policy: AccessPolicy
    public var handshakeTimeoutMs: UInt64 = 10_000
    public var connectTimeoutMs: UInt64 = 10_000
    /// 0 = no idle timeout.
    public var idleTimeoutMs: UInt64 = 0
    public var closeTimeoutMs: UInt64 = 60_000
    public var shutdownTimeoutMs: UInt64 = 300_000
    /// 0 = unlimited.
    public var maxConnections = 0
    public var workers = 1
    public var names = SettingNames()

    public init(listenHost: String, listenPort: UInt16, target: Target, tls: TLSConfiguration, policy: AccessPolicy) {
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.target = target
        self.tls = tls
        self.policy = policy
    }
}

/// A startup failure, as one line that names the setting, quotes the value and says the fix.
public struct StartupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Where the target is, resolved once at startup.
enum BackendTarget: Sendable {
    case tcp(SocketAddress)
    case unix(String)
}

/// Per-listener settings the data path reads, frozen into each generation.
struct ListenerRuntimeSettings: Sendable {
    let name: String
    let target: BackendTarget
    let targetDescription: String
    let handshakeTimeoutMs: UInt64
    let connectTimeoutMs: UInt64
    let idleTimeoutMs: UInt64
    let closeTimeoutMs: UInt64
    let maxConnections: Int
}

/// One immutable configuration generation: the TLS context (certificate, key, CA, policy) and settings.
/// Workers swap the generation they hand to *new* connections; live connections keep theirs.
final class Generation: Sendable {
    let number: Int
    let tls: TLSContext
    let settings: ListenerRuntimeSettings

    init(number: Int, tls: TLSContext, settings: ListenerRuntimeSettings) {
        self.number = number
        self.tls = tls
        self.settings = settings
    }
}

/// Versions of the C libraries in use, for `portcullis version` and bug reports.
public var libraryVersions: String {
    "libuv \(EventLoop.libuvVersion), \(TLS.openSSLVersion)"
}
