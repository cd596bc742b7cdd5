public import Policy
import Foundation

/// The `client` command's flags exactly as typed; nothing here is validated.
/// `PortcullisConfiguration(clientFlags:)` does that.
///
/// A client-mode listener accepts plaintext on loopback and forwards it over mutual TLS to `target`, a remote
/// TLS server (usually a server-mode Portcullis).
public struct ClientFlags: Sendable, Equatable {
    public var listen: String?
    public var target: String?
    public var cert: String?
    public var key: String?
    public var keyPassphraseFile: String?
    public var cacert: String?
    public var verifyCN: [String]
    public var verifyOU: [String]
    public var verifyDNS: [String]
    public var verifyURI: [String]
    public var verifyIP: [String]
    public var verifyFingerprint: [String]
    public var verifySPKI: [String]
    public var overrideServerName: String?
    public var unsafeListen: Bool
    public var minTLS: String?
    public var handshakeTimeout: String?
    public var connectTimeout: String?
    public var idleTimeout: String?
    public var closeTimeout: String?
    public var shutdownTimeout: String?
    public var maxConcurrentConns: String?
    public var workers: String?
    public var logFormat: String?
    public var logLevel: String?
    public var sessionTickets: Bool
    /// `--status`: where to serve health, readiness, status and metrics (nil: nowhere).
    public var status: String? = nil
    /// `--unsafe-status`: allow a `--status` address that is not loopback.
    public var unsafeStatus = false
    /// `--quiet-handshake-failures`: do not log handshake failures of peers that sent no certificate.
    public var quietHandshakeFailures = false
    /// `--cipher-suites`, `--groups`: TLS 1.3 suites and key-exchange groups offered, colon-separated.
    public var cipherSuites: String? = nil
    public var groups: String? = nil

    public init(
        listen: String? = nil, target: String? = nil,
        cert: String? = nil, key: String? = nil, keyPassphraseFile: String? = nil, cacert: String? = nil,
        verifyCN: [String] = [], verifyOU: [String] = [], verifyDNS: [String] = [], verifyURI: [String] = [],
        verifyIP: [String] = [], verifyFingerprint: [String] = [], verifySPKI: [String] = [],
        overrideServerName: String? = nil, unsafeListen: Bool = false, minTLS: String? = nil,
        handshakeTimeout: String? = nil, connectTimeout: String? = nil, idleTimeout: String? = nil,
        closeTimeout: String? = nil, shutdownTimeout: String? = nil,
        maxConcurrentConns: String? = nil, workers: String? = nil,
        logFormat: String? = nil, logLevel: String? = nil, sessionTickets: Bool = true
    ) {
        self.listen = listen
        self.target = target
        self.cert = cert
        self.key = key
        self.keyPassphraseFile = keyPassphraseFile
        self.cacert = cacert
        self.verifyCN = verifyCN
        self.verifyOU = verifyOU
        self.verifyDNS = verifyDNS
        self.verifyURI = verifyURI
        self.verifyIP = verifyIP
        self.verifyFingerprint = verifyFingerprint
        self.verifySPKI = verifySPKI
        self.overrideServerName = overrideServerName
        self.unsafeListen = unsafeListen
        self.minTLS = minTLS
        self.handshakeTimeout = handshakeTimeout
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.closeTimeout = closeTimeout
        self.shutdownTimeout = shutdownTimeout
        self.maxConcurrentConns = maxConcurrentConns
        self.workers = workers
        self.logFormat = logFormat
        self.logLevel = logLevel
        self.sessionTickets = sessionTickets
    }

    /// The flag spellings the messages use; the command line should declare the same names.
    public enum Name {
        public static let listen = "--listen"
        public static let target = "--target"
        public static let unsafeListen = "--unsafe-listen"
        public static let cert = "--cert"
        public static let key = "--key"
        public static let keyPassphraseFile = "--key-passphrase-file"
        public static let cacert = "--cacert"
        public static let verifyCN = "--verify-cn"
        public static let verifyOU = "--verify-ou"
        public static let verifyDNS = "--verify-dns"
        public static let verifyURI = "--verify-uri"
        public static let verifyIP = "--verify-ip"
        public static let verifyFingerprint = "--verify-fingerprint"
        public static let verifySPKI = "--verify-spki"
        public static let overrideServerName = "--override-server-name"
        public static let cipherSuites = "--cipher-suites"
        public static let groups = "--groups"
        public static let minTLS = "--min-tls"
        public static let handshakeTimeout = "--handshake-timeout"
        public static let connectTimeout = "--connect-timeout"
        public static let idleTimeout = "--idle-timeout"
        public static let closeTimeout = "--close-timeout"
        public static let shutdownTimeout = "--shutdown-timeout"
        public static let maxConcurrentConns = "--max-concurrent-conns"
        public static let workers = "--workers"
        public static let logFormat = "--log-format"
        public static let logLevel = "--log-level"
        public static let status = "--status"
        public static let unsafeStatus = "--unsafe-status"
    }

    /// The `--verify-*` flags in order, with the matcher kind each builds.
    public var verifyFlags: [(name: String, kind: Matcher.Kind, values: [String])] {
        [
            (Name.verifyCN, .cn, verifyCN), (Name.verifyOU, .ou, verifyOU), (Name.verifyDNS, .dns, verifyDNS),
            (Name.verifyURI, .uri, verifyURI), (Name.verifyIP, .ip, verifyIP),
            (Name.verifyFingerprint, .certificateSHA256, verifyFingerprint), (Name.verifySPKI, .spkiSHA256, verifySPKI),
        ]
    }
}

extension PortcullisConfiguration {
    /// The `client` command's flags as a one-listener configuration named `client` in client mode. Validates
    /// in flag order and reports the first problem; paths are made absolute against the working directory.
    /// The settings that have no flag take their defaults (no CRL, no status endpoint, `reauthorize` on).
    ///
    /// Each `--verify-KIND VALUE` is one rule named `KIND=VALUE`; any rule admits the server. With no
    /// `--verify-*` flag the server certificate must carry the server name instead (`verifyServerName`).
    /// The server name is `--override-server-name`, or else the default of `Validate.defaultServerName`.
    public init(clientFlags flags: ClientFlags) throws(ConfigError) {
        typealias Name = ClientFlags.Name
        let directory = FileManager.default.currentDirectoryPath
        func absolute(_ path: String) -> String { absolutePath(path, relativeTo: directory) }

        guard let listenValue = flags.listen else {
            throw .missing(Name.listen, "give the local address to accept plaintext connections on, e.g. 127.0.0.1:4150")
        }
        let listen = try Validate.loopbackListenAddress(
            listenValue, key: Name.listen, allowNonLoopback: flags.unsafeListen, unsafeKey: Name.unsafeListen)

        guard let targetValue = flags.target else {
            throw .missing(Name.target, "give the remote TLS server to connect to, e.g. broker-1.internal:4443")
        }
        let (target, targetName) = try Validate.remoteTarget(targetValue, key: Name.target)

        guard let cert = flags.cert else {
            throw .missing(Name.cert, "give the client certificate chain (PEM) that the server verifies")
        }
        try Validate.readablePath(cert, key: Name.cert)
        guard let key = flags.key else { throw .missing(Name.key, "give the private key (PEM) for --cert") }
        try Validate.readablePath(key, key: Name.key)
        if let passphrase = flags.keyPassphraseFile { try Validate.readablePath(passphrase, key: Name.keyPassphraseFile) }
        guard let cacert = flags.cacert else {
            throw .missing(Name.cacert, "client mode verifies the server's certificate against it")
        }
        try Validate.readablePath(cacert, key: Name.cacert, allowDirectory: true)

        var rules: [AccessRule] = []
        for (flag, kind, values) in flags.verifyFlags {
            rules += try Validate.accessRules(values, kind: kind, key: flag)
        }
        let serverName = try flags.overrideServerName.map { v throws(ConfigError) in
            try Validate.serverName(v, key: Name.overrideServerName)
        } ?? Validate.defaultServerName(targetName: targetName, rules: rules)

        let minimumVersion = try flags.minTLS.map { v throws(ConfigError) in try Validate.tlsVersion(v, key: Name.minTLS) } ?? .tls13
        let defaults = Timeouts.defaults
        let timeouts = Timeouts(
            handshake: try flags.handshakeTimeout.map { v throws(ConfigError) in
                try Validate.positiveDuration(v, key: Name.handshakeTimeout)
            } ?? defaults.handshake,
            connect: try flags.connectTimeout.map { v throws(ConfigError) in
                try Validate.positiveDuration(v, key: Name.connectTimeout)
            } ?? defaults.connect,
            idle: try flags.idleTimeout.map { v throws(ConfigError) in
                try Validate.duration(v, key: Name.idleTimeout)
            } ?? defaults.idle,
            close: try flags.closeTimeout.map { v throws(ConfigError) in
                try Validate.duration(v, key: Name.closeTimeout)
            } ?? defaults.close,
            shutdown: try flags.shutdownTimeout.map { v throws(ConfigError) in
                try Validate.duration(v, key: Name.shutdownTimeout)
            } ?? defaults.shutdown
        )
        let maxConnections = try flags.maxConcurrentConns.map { v throws(ConfigError) in
            try Validate.integer(v, key: Name.maxConcurrentConns, in: 0...Int(Int32.max), hint: "use 0 (unlimited) or a positive count")
        } ?? 0
        let workers = try flags.workers.map { v throws(ConfigError) in
            try Validate.integer(v, key: Name.workers, in: 1...256, hint: "use 1-256")
        } ?? Validate.defaultWorkers
        let logFormat = try flags.logFormat.map { v throws(ConfigError) in try Validate.logFormat(v, key: Name.logFormat) } ?? .text
        let logLevel = try flags.logLevel.map { v throws(ConfigError) in try Validate.logLevel(v, key: Name.logLevel) } ?? "info"
        let cipherSuites = try flags.cipherSuites.map { v throws(ConfigError) in try Validate.cipherSuites(v, key: Name.cipherSuites) }
        let groups = try flags.groups.map { v throws(ConfigError) in try Validate.groups(v, key: Name.groups) }

        let listener = ListenerSettings(
            name: "client",
            mode: .client,
            listen: listen,
            unsafeListen: flags.unsafeListen,
            target: target,
            tls: ListenerTLSSettings(
                certificatePath: absolute(cert),
                keyPath: absolute(key),
                keyPassphrasePath: flags.keyPassphraseFile.map(absolute),
                caPath: absolute(cacert),
                minimumVersion: minimumVersion,
                cipherSuites: cipherSuites,
                groups: groups,
                sessionTickets: flags.sessionTickets
            ),
            timeouts: timeouts,
            maxConnections: maxConnections,
            policy: rules.isEmpty ? AccessPolicy(allowAll: true) : AccessPolicy(rules: rules),
            serverName: serverName,
            verifyServerName: rules.isEmpty
        )
        self.init(
            log: LogSettings(format: logFormat, level: logLevel, quietHandshakeFailures: flags.quietHandshakeFailures),
            status: try StatusSettings.fromFlags(flags.status, unsafe: flags.unsafeStatus,
                                                 key: Name.status, unsafeKey: Name.unsafeStatus),
            workers: workers,
            shutdownTimeoutMs: timeouts.shutdown,
            listeners: [listener]
        )
    }
}

extension Validate {
    /// The server name of a client-mode listener that names none (`tls.server-name`, `--override-server-name`):
    ///
    /// - when the target's host is an IP literal and a rule checks a DNS name literally (`dns: broker-1.internal`,
    ///   `--verify-dns broker-1.internal`; the first such rule, no wildcard), that DNS name: an address cannot be
    ///   sent as SNI, and it is the name the server is expected to present;
    /// - otherwise `targetName`, the target's host as `remoteTarget` returns it (`localhost`, a lowercased DNS
    ///   name or an IP literal).
    public static func defaultServerName(targetName: String, rules: [AccessRule]) -> String {
        guard IPAddress(targetName) != nil else { return targetName }
        for rule in rules {
            for matcher in rule.matchers {
                if case .dns(let pattern) = matcher, pattern.isLiteral { return pattern.text.lowercased() }
            }
        }
        return targetName
    }
}
