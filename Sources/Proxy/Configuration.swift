public import Policy
public import TLS
import EventLoop
import Synchronization

/// Everything the runtime needs to serve one server-mode listener, already validated by `Config`.
public struct ListenerConfiguration: Sendable {
    /// The target's address: the one type `Config` validates (`Policy.TargetAddress`).
    public typealias Target = TargetAddress

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
        public var tls = "tls"
        public init() {}
    }

    public enum Mode: Sendable { case server, client }

    public var name = "server"
    /// Server: TLS in, plaintext to the target. Client: plaintext in, TLS (with our certificate) to the target.
    public var mode = Mode.server
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
    /// 0 = unlimited.
    public var maxConnections = 0
    /// After a reload that changes policy, CA or CRLs, close live connections that no longer pass.
    public var reauthorize = true
    /// Close each connection when its peer certificate's notAfter passes.
    public var closeAtCertExpiry = false
    /// Server mode: write a PROXY protocol v2 header (`ProxyProtocolHeader`) to the target before any client byte.
    public var proxyProtocolV2 = false
    public var names = SettingNames()

    public init(listenHost: String, listenPort: UInt16, target: Target, tls: TLSConfiguration, policy: AccessPolicy) {
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.target = target
        self.tls = tls
        self.policy = policy
    }

    var listenDescription: String {
        listenHost.contains(":") ? "[\(listenHost)]:\(listenPort)" : "\(listenHost):\(listenPort)"
    }
}

/// The whole process: its listeners and process-wide settings.
public struct RuntimeConfiguration: Sendable {
    public var listeners: [ListenerConfiguration]
    public var workers = 1
    public var shutdownTimeoutMs: UInt64 = 300_000
    /// Resumable TLS sessions kept for all server-mode listeners (one store per process).
    public var sessionCacheSize = 20_000
    /// Per worker; 0 turns a limit off (see `Worker.admitHandshake`).
    public struct HandshakeLimits: Sendable, Equatable {
        public var inProgress: Int
        public var perSource: Int
        public var ratePerSource: Int
        public init(inProgress: Int = 1024, perSource: Int = 0, ratePerSource: Int = 0) {
            self.inProgress = inProgress
            self.perSource = perSource
            self.ratePerSource = ratePerSource
        }
    }
    public var handshakeLimits = HandshakeLimits()
    /// Files whose change on disk triggers a reload (config file, certificates, keys, CAs, CRLs).
    public var watchedFiles: [String] = []
    /// The health/metrics endpoint, if any; `statusSettingName` names it in errors (`--status`, `status.listen`).
    public var status: StatusEndpoint?
    public var statusSettingName = "--status"
    /// Serve the status endpoint over TLS with a listener's certificate (`https://HOST:PORT`).
    public var statusHTTPS = false
    /// Reported by `/status` and the `portcullis_build_info` metric.
    public var version = "unknown"
    /// Do not log handshake failures of peers that presented no certificate (TCP health checks, scanners).
    public var quietHandshakeFailures = false

    public init(listeners: [ListenerConfiguration]) {
        self.listeners = listeners
    }
}

/// A startup failure, as one line that names the setting, quotes the value and says the fix.
public struct StartupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Where the target is, resolved when a generation is built.
enum BackendTarget: Sendable {
    case tcp(SocketAddress)
    case unix(String)
}

/// Per-listener settings the data path reads, frozen into each generation.
struct ListenerRuntimeSettings: Sendable {
    let name: String
    let mode: Relay.Mode
    let target: BackendTarget
    let targetDescription: String
    let handshakeTimeoutMs: UInt64
    let connectTimeoutMs: UInt64
    let idleTimeoutMs: UInt64
    let closeTimeoutMs: UInt64
    let maxConnections: Int
    let closeAtCertExpiry: Bool
    let proxyProtocolV2: Bool
}

/// State of one listener that outlives its generations (counted across all workers).
final class ListenerCounters: Sendable {
    let active = Atomic<Int>(0)
}

/// One immutable configuration generation of a listener: the TLS context (certificate, key, CA, CRLs,
/// policy) and settings. Workers hand the current generation to *new* connections; live connections keep
/// theirs (and are re-checked against a newer one when `reauthorize` is on).
final class Generation: Sendable {
    let number: UInt64
    let tls: TLSContext
    let settings: ListenerRuntimeSettings
    let counters: ListenerCounters

    init(number: UInt64, tls: TLSContext, settings: ListenerRuntimeSettings, counters: ListenerCounters) {
        self.number = number
        self.tls = tls
        self.settings = settings
        self.counters = counters
    }
}

/// Versions of the C libraries in use, for `portcullis version` and bug reports.
public var libraryVersions: String {
    "libuv \(EventLoop.libuvVersion), \(TLS.openSSLVersion)"
}
