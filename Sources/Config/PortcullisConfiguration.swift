public import Policy
import Foundation

/// Everything one Portcullis process runs: global settings and any number of listeners, validated.
///
/// Built from a YAML file (`load(path:)`, `parse(yaml:source:checkFiles:)`; keys in docs/CONFIG.md) or from
/// the `server` command's flags (`init(flags:)`) or the `client` command's (`init(clientFlags:)`), which are
/// mapped onto the same keys (`FlagTable`) and validated by the same reader. Every file path in it is absolute.
public struct PortcullisConfiguration: Sendable, Equatable {
    public var log: LogSettings
    /// The status endpoint (health and metrics); `nil` when there is none.
    public var status: StatusSettings?
    public var workers: Int
    /// How long a graceful shutdown waits for open connections.
    public var shutdownTimeoutMs: UInt64
    /// How many resumable TLS sessions the process keeps for its server-mode listeners (key
    /// `session-cache-size`); the least recently used go first.
    public var sessionCacheSize: Int
    /// Limits on handshakes in progress (key `limits`).
    public var handshakeLimits: HandshakeLimits
    /// At least one; names and listen addresses are unique.
    public var listeners: [ListenerSettings]

    public static let defaultSessionCacheSize = 20_000

    public init(
        log: LogSettings = LogSettings(), status: StatusSettings? = nil, workers: Int = Validate.defaultWorkers,
        shutdownTimeoutMs: UInt64 = Timeouts.defaults.shutdown,
        sessionCacheSize: Int = PortcullisConfiguration.defaultSessionCacheSize,
        handshakeLimits: HandshakeLimits = HandshakeLimits(), listeners: [ListenerSettings]
    ) {
        self.log = log
        self.status = status
        self.workers = workers
        self.shutdownTimeoutMs = shutdownTimeoutMs
        self.sessionCacheSize = sessionCacheSize
        self.handshakeLimits = handshakeLimits
        self.listeners = listeners
    }

    /// The listener called `name`, for `check --listener NAME`.
    public func listener(named name: String) -> ListenerSettings? {
        listeners.first { $0.name == name }
    }

    /// Reads and validates a configuration file. Every problem is one line that starts with `path` and the line
    /// number: `portcullis.yaml:14: listeners[1].policy.rules[0].uri: '*spiffe' is not a valid pattern: …`.
    /// Relative paths inside the file are resolved against the file's directory.
    public static func load(path: String) throws(ConfigError) -> PortcullisConfiguration {
        if let problem = Validate.unreadable(path, allowDirectory: false) {
            throw ConfigError(key: nil, message: "\(escapedForLog(path)): cannot read the configuration file: \(problem)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(key: nil, message: "\(escapedForLog(path)): cannot read the configuration file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(key: nil, message: "\(escapedForLog(path)): the configuration file is not UTF-8 text: save it as UTF-8")
        }
        return try parse(yaml: text, source: path)
    }

    /// Validates YAML text. `source` names it in messages and is taken as its path: relative paths inside
    /// are resolved against `source`'s directory (the working directory when it has none).
    /// With `checkFiles: false` the referenced files need not exist (for examples and templates).
    public static func parse(yaml: String, source: String, checkFiles: Bool = true) throws(ConfigError) -> PortcullisConfiguration {
        let directory = parentDirectory(of: absolutePath(source, relativeTo: FileManager.default.currentDirectoryPath))
        let reader = ConfigReader(source: source, baseDirectory: directory, checkFiles: checkFiles)
        return try reader.read(yaml)
    }

    /// The `server` command's flags as a one-listener configuration named `server`. The flags are written onto
    /// the key tree of a configuration file (`FlagTable`) and validated by the same reader, so a problem is the
    /// file's message naming the flag: `--idle-timeout (config key timeouts.idle): '10 sec' is not a duration: …`;
    /// the first in `FlagTable` order is reported. Relative paths start at the working directory.
    public init(flags: CommandLineFlags) throws(ConfigError) {
        self = try Self.validate(KeyTree(mode: .server, given: flags.given))
    }

    /// The `client` command's flags as a one-listener configuration named `client` in client mode, validated
    /// like `init(flags:)`. Each `--verify-KIND VALUE` is one rule named `KIND=VALUE`; with none, the server
    /// certificate must carry the server name (`--override-server-name`, else the target's host).
    public init(clientFlags flags: CommandLineFlags) throws(ConfigError) {
        self = try Self.validate(KeyTree(mode: .client, given: flags.given))
    }

    /// The configuration file that `flags` stand for.
    public static func equivalentYAML(flags: CommandLineFlags) -> String {
        KeyTree(mode: .server, given: flags.given).yaml
    }

    /// The configuration file that the client-mode `flags` stand for.
    public static func equivalentYAML(clientFlags flags: CommandLineFlags) -> String {
        KeyTree(mode: .client, given: flags.given).yaml
    }

    private static func validate(_ tree: KeyTree) throws(ConfigError) -> PortcullisConfiguration {
        try ConfigReader(flags: tree, baseDirectory: FileManager.default.currentDirectoryPath).readFlags()
    }
}

public struct LogSettings: Sendable, Equatable {
    public var format: LogFormat
    /// One of `Validate.logLevels`.
    public var level: String
    /// Do not log handshake failures of peers that presented no certificate (TCP health checks, scanners);
    /// they are still counted in the metrics.
    public var quietHandshakeFailures: Bool

    /// Send log lines to the local syslog (`/dev/log`, facility daemon) instead of stderr (key `syslog`).
    public var syslog: Bool

    public init(format: LogFormat = .text, level: String = "info", quietHandshakeFailures: Bool = false, syslog: Bool = false) {
        self.format = format
        self.level = level
        self.quietHandshakeFailures = quietHandshakeFailures
        self.syslog = syslog
    }
}

/// Where the status endpoint (health, metrics) listens.
public struct StatusSettings: Sendable, Equatable {
    /// `127.0.0.1:9100`, `[::1]:9100`, `unix:/run/portcullis/status.sock` (IP literals canonical) or
    /// `systemd:NAME` (a socket the service manager passed). Loopback or a Unix socket unless `unsafeListen`.
    public var listen: ListenAddress
    /// Allows a non-loopback `listen` (key `unsafe-listen`).
    public var unsafeListen: Bool
    /// Served over TLS with the first listener's certificate (`listen: https://HOST:PORT`); no client
    /// certificate is asked for, as in ghostunnel.
    public var https: Bool

    public init(listen: ListenAddress, unsafeListen: Bool = false, https: Bool = false) {
        self.listen = listen
        self.unsafeListen = unsafeListen
        self.https = https
    }

    /// `listen` as written back: `https://HOST:PORT` when served over TLS.
    public var listenDescription: String { (https ? "https://" : "") + listen.description }
}

/// What a server-mode listener sends to its target before the client's bytes (key `proxy-protocol`).
public enum ProxyProtocolVersion: String, Sendable, Equatable {
    /// Nothing: the target sees only the client's bytes (the default; most backends parse no header).
    case off
    /// A PROXY protocol v2 header with the client's address and TLS facts (see README, "PROXY protocol v2").
    case v2
}

public enum ListenerMode: String, Sendable, Equatable {
    /// Accepts mutual TLS and forwards plaintext to the target.
    case server
    /// Accepts plaintext (on loopback) and forwards it over mutual TLS to the target, a remote TLS server whose
    /// certificate is verified against `tls.caPath` and judged by `serverName`/`verifyServerName` and `policy`.
    case client
}

/// One validated listener.
public struct ListenerSettings: Sendable, Equatable {
    /// Letters, digits, `.`, `_`, `-`; unique in the configuration.
    public var name: String
    public var mode: ListenerMode
    public var listen: ListenAddress
    /// Client mode: `listen` may be a non-loopback address (key `unsafe-listen`). Always `false` in server mode.
    public var unsafeListen: Bool
    /// Server mode: the plaintext backend. Client mode: the remote TLS server, always `.tcp` (a DNS name or an
    /// IP literal, anywhere).
    public var target: TargetAddress
    /// Server mode: the target may be a non-loopback address (key `unsafe-target`). Always `false` in client mode.
    public var unsafeTarget: Bool
    /// Server mode: a PROXY protocol header goes to the target first (key `proxy-protocol`). Always `.off` in
    /// client mode, whose target is a TLS server.
    public var proxyProtocol: ProxyProtocolVersion
    public var tls: ListenerTLSSettings
    /// Connection deadlines. `shutdown` is the configuration's `shutdownTimeoutMs` (a process-wide setting).
    public var timeouts: Timeouts
    /// 0 = unlimited.
    public var maxConnections: Int
    /// After a reload, close live connections whose identity no longer passes the policy, CA or CRLs.
    public var reauthorize: Bool
    /// Close a connection when its peer certificate's notAfter passes.
    public var closeAtCertExpiry: Bool
    /// Server mode: which clients may connect. Client mode: which server certificates are accepted; with no
    /// rules it is `allowAll` and `verifyServerName` does the judging.
    public var policy: AccessPolicy
    /// Client mode: the name sent as SNI (when it is a DNS name) and, with `verifyServerName`, required in the
    /// server certificate (DNS or IP SAN). Always set in client mode (default: the target's host); `nil` in
    /// server mode.
    public var serverName: String?
    /// Client mode: the server certificate must carry `serverName` (a DNS SAN, or an IP SAN for an IP literal),
    /// in addition to `policy`. `true` when no rules were given, `false` when rules replace the name check
    /// (key `policy.verify-server-name` overrides). Always `false` in server mode.
    public var verifyServerName: Bool

    public init(
        name: String, mode: ListenerMode = .server, listen: ListenAddress, unsafeListen: Bool = false,
        target: TargetAddress, unsafeTarget: Bool = false, proxyProtocol: ProxyProtocolVersion = .off,
        tls: ListenerTLSSettings, timeouts: Timeouts = .defaults,
        maxConnections: Int = 0, reauthorize: Bool = true, closeAtCertExpiry: Bool = false, policy: AccessPolicy,
        serverName: String? = nil, verifyServerName: Bool = false
    ) {
        self.name = name
        self.mode = mode
        self.listen = listen
        self.unsafeListen = unsafeListen
        self.target = target
        self.unsafeTarget = unsafeTarget
        self.proxyProtocol = proxyProtocol
        self.tls = tls
        self.timeouts = timeouts
        self.maxConnections = maxConnections
        self.reauthorize = reauthorize
        self.closeAtCertExpiry = closeAtCertExpiry
        self.policy = policy
        self.serverName = serverName
        self.verifyServerName = verifyServerName
    }
}

/// A listener's certificate, trust and protocol settings; every path absolute and readable when validated.
public struct ListenerTLSSettings: Sendable, Equatable {
    /// Our certificate chain and key (PEM): both set, or both `nil` when `keystorePath` holds them, or when a
    /// client-mode listener presents no certificate (`disableAuthentication`).
    public var certificatePath: String?
    public var keyPath: String?
    public var keyPassphrasePath: String?
    /// Our key and chain in one file (key `keystore`, `--keystore`): PKCS#12 or a combined PEM.
    public var keystorePath: String?
    /// The keystore's password: a file (key `keystore-password-file`), or given on the command line
    /// (`--storepass`, never in a file). At most one is set, and only with `keystorePath`.
    public var keystorePasswordPath: String?
    public var keystorePassword: Secret?
    /// Client mode: present no certificate (key `disable-authentication`, `--disable-authentication`).
    public var disableAuthentication: Bool
    /// A PEM bundle file or a hashed CA directory. `nil` in client mode only: the system trust store.
    public var caPath: String?
    /// CRL files, PEM (one or more CRLs each) or DER.
    public var crlPaths: [String]
    public var crlScope: CRLScope
    public var crlExpired: CRLExpiredPolicy
    public var minimumVersion: TLSVersion
    /// TLS 1.3 suites in OpenSSL's list syntax (`TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384`), canonical
    /// spelling; `nil` = OpenSSL's default.
    public var cipherSuites: String?
    /// Key-exchange groups (`X25519:P-256`), canonical names; `nil` = OpenSSL's default.
    public var groups: String?
    public var sessionTickets: Bool
    /// Server mode: TLS 1.3 session tickets sent after each handshake (key `session-ticket-count`).
    public var sessionTicketCount: Int

    public static let defaultSessionTicketCount = 1

    public init(
        certificatePath: String?, keyPath: String?, keyPassphrasePath: String? = nil,
        keystorePath: String? = nil, keystorePasswordPath: String? = nil, keystorePassword: Secret? = nil,
        disableAuthentication: Bool = false, caPath: String?,
        crlPaths: [String] = [], crlScope: CRLScope = .chain, crlExpired: CRLExpiredPolicy = .reject,
        minimumVersion: TLSVersion = .tls13, cipherSuites: String? = nil, groups: String? = nil,
        sessionTickets: Bool = true, sessionTicketCount: Int = ListenerTLSSettings.defaultSessionTicketCount
    ) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.keyPassphrasePath = keyPassphrasePath
        self.keystorePath = keystorePath
        self.keystorePasswordPath = keystorePasswordPath
        self.keystorePassword = keystorePassword
        self.disableAuthentication = disableAuthentication
        self.caPath = caPath
        self.crlPaths = crlPaths
        self.crlScope = crlScope
        self.crlExpired = crlExpired
        self.minimumVersion = minimumVersion
        self.cipherSuites = cipherSuites
        self.groups = groups
        self.sessionTickets = sessionTickets
        self.sessionTicketCount = sessionTicketCount
    }
}

// MARK: Paths

/// `path` made absolute against `directory` and normalized lexically (`.`, `..`, repeated `/`); symbolic links
/// are left alone.
func absolutePath(_ path: String, relativeTo directory: String) -> String {
    let joined = path.hasPrefix("/") ? path : directory + "/" + path
    var parts: [Substring] = []
    for part in joined.split(separator: "/", omittingEmptySubsequences: true) {
        switch part {
        case ".": continue
        case "..": if !parts.isEmpty { parts.removeLast() }
        default: parts.append(part)
        }
    }
    return "/" + parts.joined(separator: "/")
}

/// The directory part of an absolute path (`/` for `/x`).
func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
    return String(path[..<slash])
}
