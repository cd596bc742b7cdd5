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
        public var keystore = "--keystore"
        /// `--keystore-password-file`, or `--storepass` when the password was given on the command line.
        public var keystorePassword = "--keystore-password-file"
        public var caBundle = "--cacert"
        public var crl = "--crl"
        public var tls = "tls"
        public init() {}

        /// The setting a TLS setup error is about.
        func name(of item: TLSSetupError.Item) -> String {
            switch item {
            case .certificate: certificate
            case .key: key
            case .keyPassphrase: keyPassphrase
            case .keystore: keystore
            case .keystorePassword: keystorePassword
            case .caBundle: caBundle
            case .crl: crl
            case .other: tls
            }
        }
    }

    public enum Mode: Sendable { case server, client }

    /// Where the listener accepts: it binds TCP (`host` an IP literal) or a Unix socket, or adopts the sockets
    /// systemd passed under a `FileDescriptorName=`.
    public enum Listen: Sendable, Equatable, CustomStringConvertible {
        case tcp(host: String, port: UInt16)
        case unix(path: String)
        case systemd(name: String)

        /// `127.0.0.1:8443`, `[::1]:8443`, `unix:/run/p.sock`, `systemd:web`: also the key that matches a
        /// listener to inherited sockets and tells a reload whether the address changed.
        public var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path): "unix:" + path
            case .systemd(let name): "systemd:" + name
            }
        }
    }

    public var name = "server"
    /// Server: TLS in, plaintext to the target. Client: plaintext in, TLS (with our certificate) to the target.
    public var mode = Mode.server
    public var listen: Listen
    /// Client mode without `unsafe-listen`: a socket systemd passed must be on loopback or a Unix socket.
    public var allowsNonLoopbackListen = true
    public var target: Target
    public var tls: TLSConfiguration
    public var policy: AccessPolicy
    public var handshakeTimeoutMs: UInt64 = 10_000
    public var connectTimeoutMs: UInt64 = 10_000
    /// 0 = no idle timeout.
    public var idleTimeoutMs: UInt64 = 0
    public var closeTimeoutMs: UInt64 = 60_000
    /// 0 = no cap on a connection's lifetime.
    public var maxLifetimeMs: UInt64 = 0
    /// 0 = unlimited.
    public var maxConnections = 0
    /// After a reload that changes policy, CA or CRLs, close live connections that no longer pass.
    public var reauthorize = true
    /// Close each connection when its peer certificate's notAfter passes.
    public var closeAtCertExpiry = false
    /// Server mode: write a PROXY protocol v2 header (`ProxyProtocolHeader`) to the target before any client byte.
    public var proxyProtocolV2 = false
    public var names = SettingNames()

    public init(listen: Listen, target: Target, tls: TLSConfiguration, policy: AccessPolicy) {
        self.listen = listen
        self.target = target
        self.tls = tls
        self.policy = policy
    }

    public init(listenHost: String, listenPort: UInt16, target: Target, tls: TLSConfiguration, policy: AccessPolicy) {
        self.init(listen: .tcp(host: listenHost, port: listenPort), target: target, tls: tls, policy: policy)
    }

    var listenDescription: String { listen.description }

    var listensOnSystemd: Bool {
        if case .systemd = listen { return true }
        return false
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
    let maxLifetimeMs: UInt64
    let maxConnections: Int
    let closeAtCertExpiry: Bool
    let proxyProtocolV2: Bool
}

/// State of one listener that outlives its generations (counted across all workers): its open connections,
/// and the workers that stopped accepting because the listener is at `max-connections`.
///
/// At the limit a worker *holds* (ghostunnel's semaphore before `Accept`, HAProxy's `maxconn`): its listening
/// socket is not polled, so clients wait in the kernel's accept queue. It registers a waker with `hold`, and
/// the close that frees a slot (`release`, on any worker) wakes every holder. No wakeup is lost: a holder
/// publishes itself (`holders`) before it looks at `active` once more, and a releaser lowers `active` before it
/// looks at `holders`; with sequentially consistent operations at least one of the two sees the other's write.
final class ListenerCounters: Sendable {
    /// Open connections, plus a slot taken for an `accept` in progress.
    let active = Atomic<Int>(0)
    /// `waiting.count`, readable without the lock on every close.
    private let holders = Atomic<Int>(0)
    private let waiting = Mutex<[Int: @Sendable () -> Void]>([:])

    /// Takes a slot unless `limit` (> 0) connections are open.
    func acquire(limit: Int) -> Bool {
        guard limit > 0 else {
            active.add(1, ordering: .sequentiallyConsistent)
            return true
        }
        var current = active.load(ordering: .sequentiallyConsistent)
        while current < limit {
            let (exchanged, original) = active.compareExchange(expected: current, desired: current + 1,
                                                               ordering: .sequentiallyConsistent)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Gives a slot back and wakes the workers holding (each then polls again; one that finds the listener
    /// still full holds again).
    func release() {
        active.subtract(1, ordering: .sequentiallyConsistent)
        guard holders.load(ordering: .sequentiallyConsistent) > 0 else { return }
        let wakers = waiting.withLock { waiting in
            defer {
                waiting.removeAll()
                holders.store(0, ordering: .sequentiallyConsistent)
            }
            return Array(waiting.values)
        }
        for wake in wakers { wake() }
    }

    /// Worker `worker` holds until the next `release`, which calls `wake` (once).
    func hold(worker: Int, wake: @escaping @Sendable () -> Void) {
        waiting.withLock { waiting in
            waiting[worker] = wake
            holders.store(waiting.count, ordering: .sequentiallyConsistent)
        }
    }

    /// Worker `worker` no longer holds (it found a slot after all, or it is draining).
    func stopHolding(worker: Int) {
        waiting.withLock { waiting in
            guard waiting.removeValue(forKey: worker) != nil else { return }
            holders.store(waiting.count, ordering: .sequentiallyConsistent)
        }
    }

    /// Workers holding now (a gauge).
    var holdingWorkers: Int { holders.load(ordering: .relaxed) }
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
