public import Policy

/// One command-line flag of `server` or `client` and the configuration-file key it sets.
///
/// The command line is not validated on its own: its flags are written onto the same key tree a file has
/// (`FlagTable`), and `ConfigReader` walks that tree. A problem names the flag and its key:
/// `--handshake-timeout (config key timeouts.handshake): '0' must be greater than zero: use e.g. 10s`.
public struct ConfigFlag: Sendable, Equatable, CustomStringConvertible {
    /// Where the key lives: at the top of the file, or in the one listener the command line describes.
    public enum Scope: Sendable, Equatable { case process, listener }

    /// How the flag's values become the key's.
    public enum Form: Sendable, Equatable {
        /// `--workers 4` → `workers: 4`.
        case value
        /// A switch that writes a fixed value: `--allow-all` → `policy.allow-all: true`,
        /// `--no-session-tickets` → `tls.session-tickets: false`.
        case fixed(String)
        /// Repeatable; each value is one rule of `key` (`policy.rules`) named `KIND=VALUE`:
        /// `--allow-cn app-1` → `{name: cn=app-1, cn: app-1}`.
        case rule(Matcher.Kind)
    }

    /// `--handshake-timeout`.
    public let name: String
    /// Dotted, below `scope`: `timeouts.handshake`, `workers`, `policy.rules`.
    public let key: String
    public let scope: Scope
    public let form: Form
    /// The modes whose command accepts the flag.
    public let modes: [ListenerMode]

    init(_ name: String, _ key: String, _ scope: Scope = .listener, _ form: Form = .value,
         modes: [ListenerMode] = [.server, .client]) {
        self.name = name
        self.key = key
        self.scope = scope
        self.form = form
        self.modes = modes
    }

    /// The key as a file writes it for listener `index`: `listeners[0].timeouts.handshake`, `workers`.
    func path(listener index: Int = 0) -> String {
        scope == .process ? key : "listeners[\(index)].\(key)"
    }

    /// `--handshake-timeout (config key timeouts.handshake)`: how messages name it.
    public var description: String { "\(name) (config key \(key))" }
}

/// The flag ↔ key table of `portcullis server` and `portcullis client`, in the order problems are reported
/// (the first problem in this order is the one shown).
public enum FlagTable {
    public static let listen = ConfigFlag("--listen", "listen")
    public static let unsafeListen = ConfigFlag("--unsafe-listen", "unsafe-listen", .listener, .fixed("true"), modes: [.client])
    public static let target = ConfigFlag("--target", "target")
    public static let unsafeTarget = ConfigFlag("--unsafe-target", "unsafe-target", .listener, .fixed("true"), modes: [.server])
    public static let cert = ConfigFlag("--cert", "tls.cert")
    public static let key = ConfigFlag("--key", "tls.key")
    public static let keyPassphraseFile = ConfigFlag("--key-passphrase-file", "tls.key-passphrase-file")
    public static let keystore = ConfigFlag("--keystore", "tls.keystore")
    public static let keystorePasswordFile = ConfigFlag("--keystore-password-file", "tls.keystore-password-file")
    /// ghostunnel's: the password itself. A file cannot write this key (`keystore-password-file` instead).
    public static let storepass = ConfigFlag("--storepass", "tls.storepass")
    public static let disableAuthentication = ConfigFlag("--disable-authentication", "tls.disable-authentication", .listener, .fixed("true"), modes: [.client])
    public static let cacert = ConfigFlag("--cacert", "tls.cacert")

    public static let allowCN = allow("cn", .cn)
    public static let allowOU = allow("ou", .ou)
    public static let allowO = allow("o", .o)
    public static let allowDNS = allow("dns", .dns)
    public static let allowURI = allow("uri", .uri)
    public static let allowEmail = allow("email", .email)
    public static let allowIP = allow("ip", .ip)
    public static let allowFingerprint = allow("fingerprint", .certificateSHA256)
    public static let allowSPKI = allow("spki", .spkiSHA256)
    public static let allowAll = ConfigFlag("--allow-all", "policy.allow-all", .listener, .fixed("true"), modes: [.server])

    public static let verifyCN = verify("cn", .cn)
    public static let verifyOU = verify("ou", .ou)
    public static let verifyDNS = verify("dns", .dns)
    public static let verifyURI = verify("uri", .uri)
    public static let verifyIP = verify("ip", .ip)
    public static let verifyFingerprint = verify("fingerprint", .certificateSHA256)
    public static let verifySPKI = verify("spki", .spkiSHA256)
    public static let overrideServerName = ConfigFlag("--override-server-name", "tls.server-name", modes: [.client])

    public static let minTLS = ConfigFlag("--min-tls", "tls.min-version")
    public static let handshakeTimeout = ConfigFlag("--handshake-timeout", "timeouts.handshake")
    public static let connectTimeout = ConfigFlag("--connect-timeout", "timeouts.connect")
    public static let idleTimeout = ConfigFlag("--idle-timeout", "timeouts.idle")
    public static let closeTimeout = ConfigFlag("--close-timeout", "timeouts.close")
    public static let maxConnLifetime = ConfigFlag("--max-conn-lifetime", "timeouts.max-lifetime")
    public static let shutdownTimeout = ConfigFlag("--shutdown-timeout", "shutdown-timeout", .process)
    public static let maxConcurrentConns = ConfigFlag("--max-concurrent-conns", "max-connections")
    public static let workers = ConfigFlag("--workers", "workers", .process)
    public static let logFormat = ConfigFlag("--log-format", "log.format", .process)
    public static let logLevel = ConfigFlag("--log-level", "log.level", .process)
    public static let quietHandshakeFailures = ConfigFlag("--quiet-handshake-failures", "log.quiet-handshake-failures", .process, .fixed("true"))
    public static let syslog = ConfigFlag("--syslog", "log.syslog", .process, .fixed("true"))
    public static let cipherSuites = ConfigFlag("--cipher-suites", "tls.cipher-suites")
    public static let groups = ConfigFlag("--groups", "tls.groups")
    public static let noSessionTickets = ConfigFlag("--no-session-tickets", "tls.session-tickets", .listener, .fixed("false"))
    public static let sessionTicketCount = ConfigFlag("--session-ticket-count", "tls.session-ticket-count", modes: [.server])
    public static let sessionCacheSize = ConfigFlag("--session-cache-size", "session-cache-size", .process, modes: [.server])
    public static let proxyProtocol = ConfigFlag("--proxy-protocol", "proxy-protocol", modes: [.server])
    public static let maxHandshakes = ConfigFlag("--max-handshakes", "limits.handshakes", .process, modes: [.server])
    public static let maxHandshakesPerSource = ConfigFlag("--max-handshakes-per-source", "limits.handshakes-per-source", .process, modes: [.server])
    public static let maxHandshakeRatePerSource = ConfigFlag("--max-handshake-rate-per-source", "limits.handshake-rate-per-source", .process, modes: [.server])
    public static let status = ConfigFlag("--status", "status.listen", .process)
    public static let unsafeStatus = ConfigFlag("--unsafe-status", "status.unsafe-listen", .process, .fixed("true"))

    /// Every flag, in reporting order.
    public static let all: [ConfigFlag] = [
        listen, unsafeListen, target, unsafeTarget, cert, key, keyPassphraseFile, keystore, keystorePasswordFile, storepass,
        disableAuthentication, cacert,
        allowCN, allowOU, allowO, allowDNS, allowURI, allowEmail, allowIP, allowFingerprint, allowSPKI, allowAll,
        verifyCN, verifyOU, verifyDNS, verifyURI, verifyIP, verifyFingerprint, verifySPKI, overrideServerName,
        minTLS, handshakeTimeout, connectTimeout, idleTimeout, closeTimeout, maxConnLifetime, shutdownTimeout,
        maxConcurrentConns,
        workers, logFormat, logLevel, quietHandshakeFailures, syslog, cipherSuites, groups, noSessionTickets,
        sessionTicketCount, sessionCacheSize, proxyProtocol, maxHandshakes, maxHandshakesPerSource,
        maxHandshakeRatePerSource, status, unsafeStatus,
    ]

    /// The flags of one command (`server`: `.server`, `client`: `.client`), in reporting order.
    public static func flags(for mode: ListenerMode) -> [ConfigFlag] {
        all.filter { $0.modes.contains(mode) }
    }

    /// The flag that sets `key` (a key below its scope, `timeouts.idle`), for `mode`'s command.
    public static func flag(forKey key: String, mode: ListenerMode) -> ConfigFlag? {
        flags(for: mode).first { $0.key == key }
    }

    private static func allow(_ name: String, _ kind: Matcher.Kind) -> ConfigFlag {
        ConfigFlag("--allow-" + name, "policy.rules", .listener, .rule(kind), modes: [.server])
    }

    private static func verify(_ name: String, _ kind: Matcher.Kind) -> ConfigFlag {
        ConfigFlag("--verify-" + name, "policy.rules", .listener, .rule(kind), modes: [.client])
    }
}
