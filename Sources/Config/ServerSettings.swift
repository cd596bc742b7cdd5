public import Policy

/// The `server` command's flags exactly as typed; nothing here is validated. `ServerSettings(flags:)` does that.
public struct ServerFlags: Sendable, Equatable {
    public var listen: String?
    public var target: String?
    public var cert: String?
    public var key: String?
    public var keyPassphraseFile: String?
    public var cacert: String?
    public var allowCN: [String]
    public var allowOU: [String]
    public var allowO: [String]
    public var allowDNS: [String]
    public var allowURI: [String]
    public var allowEmail: [String]
    public var allowIP: [String]
    public var allowFingerprint: [String]
    public var allowSPKI: [String]
    public var allowAll: Bool
    public var unsafeTarget: Bool
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
    public var proxyProtocol: String?
    /// `--cipher-suites`, `--groups`: TLS 1.3 suites and key-exchange groups, colon-separated.
    public var cipherSuites: String? = nil
    public var groups: String? = nil
    /// `--session-ticket-count`, `--session-cache-size`.
    public var sessionTicketCount: String? = nil
    public var sessionCacheSize: String? = nil

    public init(
        listen: String? = nil, target: String? = nil,
        cert: String? = nil, key: String? = nil, keyPassphraseFile: String? = nil, cacert: String? = nil,
        allowCN: [String] = [], allowOU: [String] = [], allowO: [String] = [], allowDNS: [String] = [],
        allowURI: [String] = [], allowEmail: [String] = [], allowIP: [String] = [],
        allowFingerprint: [String] = [], allowSPKI: [String] = [], allowAll: Bool = false,
        unsafeTarget: Bool = false, minTLS: String? = nil,
        handshakeTimeout: String? = nil, connectTimeout: String? = nil, idleTimeout: String? = nil,
        closeTimeout: String? = nil, shutdownTimeout: String? = nil,
        maxConcurrentConns: String? = nil, workers: String? = nil,
        logFormat: String? = nil, logLevel: String? = nil, sessionTickets: Bool = true,
        proxyProtocol: String? = nil
    ) {
        self.listen = listen
        self.target = target
        self.cert = cert
        self.key = key
        self.keyPassphraseFile = keyPassphraseFile
        self.cacert = cacert
        self.allowCN = allowCN
        self.allowOU = allowOU
        self.allowO = allowO
        self.allowDNS = allowDNS
        self.allowURI = allowURI
        self.allowEmail = allowEmail
        self.allowIP = allowIP
        self.allowFingerprint = allowFingerprint
        self.allowSPKI = allowSPKI
        self.allowAll = allowAll
        self.unsafeTarget = unsafeTarget
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
        self.proxyProtocol = proxyProtocol
    }

    /// The flag spellings the messages use; the command line should declare the same names.
    public enum Name {
        public static let listen = "--listen"
        public static let target = "--target"
        public static let unsafeTarget = "--unsafe-target"
        public static let cert = "--cert"
        public static let key = "--key"
        public static let keyPassphraseFile = "--key-passphrase-file"
        public static let cacert = "--cacert"
        public static let allowCN = "--allow-cn"
        public static let allowOU = "--allow-ou"
        public static let allowO = "--allow-o"
        public static let allowDNS = "--allow-dns"
        public static let allowURI = "--allow-uri"
        public static let allowEmail = "--allow-email"
        public static let allowIP = "--allow-ip"
        public static let allowFingerprint = "--allow-fingerprint"
        public static let allowSPKI = "--allow-spki"
        public static let allowAll = "--allow-all"
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
        public static let proxyProtocol = "--proxy-protocol"
        public static let cipherSuites = "--cipher-suites"
        public static let groups = "--groups"
        public static let sessionTicketCount = "--session-ticket-count"
        public static let sessionCacheSize = "--session-cache-size"
        public static let noSessionTickets = "--no-session-tickets"
    }

    /// The `--allow-*` flags in order, with the matcher kind each builds.
    public var allowFlags: [(name: String, kind: Matcher.Kind, values: [String])] {
        [
            (Name.allowCN, .cn, allowCN), (Name.allowOU, .ou, allowOU), (Name.allowO, .o, allowO),
            (Name.allowDNS, .dns, allowDNS), (Name.allowURI, .uri, allowURI), (Name.allowEmail, .email, allowEmail),
            (Name.allowIP, .ip, allowIP), (Name.allowFingerprint, .certificateSHA256, allowFingerprint),
            (Name.allowSPKI, .spkiSHA256, allowSPKI),
        ]
    }
}

public enum TLSVersion: String, Sendable, Equatable, CustomStringConvertible {
    case tls12 = "1.2"
    case tls13 = "1.3"
    public var description: String { "TLS " + rawValue }
}

public enum LogFormat: String, Sendable, Equatable {
    case text
    case json
}

/// Certificate, key and CA locations; each was checked to exist and be readable when validated.
public struct TLSFiles: Sendable, Equatable {
    public var certificatePath: String
    public var keyPath: String
    public var keyPassphrasePath: String?
    /// A PEM bundle file or a hashed CA directory.
    public var caPath: String

    public init(certificatePath: String, keyPath: String, keyPassphrasePath: String? = nil, caPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.keyPassphrasePath = keyPassphrasePath
        self.caPath = caPath
    }
}

/// Connection deadlines in milliseconds; 0 switches off `idle` and `close` (no half-close wait).
public struct Timeouts: Sendable, Equatable {
    public var handshake: UInt64
    public var connect: UInt64
    public var idle: UInt64
    public var close: UInt64
    public var shutdown: UInt64

    public init(handshake: UInt64, connect: UInt64, idle: UInt64, close: UInt64, shutdown: UInt64) {
        self.handshake = handshake
        self.connect = connect
        self.idle = idle
        self.close = close
        self.shutdown = shutdown
    }

    /// handshake 10s, connect 10s, idle off, close 60s, shutdown 5m.
    public static let defaults = Timeouts(handshake: 10_000, connect: 10_000, idle: 0, close: 60_000, shutdown: 300_000)
}

/// A validated server listener: everything the proxy needs, nothing left to parse.
public struct ServerSettings: Sendable, Equatable {
    public var name: String
    public var listen: ListenAddress
    public var target: TargetAddress
    public var tls: TLSFiles
    public var minTLSVersion: TLSVersion
    public var policy: AccessPolicy
    public var timeouts: Timeouts
    /// 0 = unlimited.
    public var maxConnections: Int
    public var workers: Int
    public var logFormat: LogFormat
    /// One of `Validate.logLevels`.
    public var logLevel: String
    public var sessionTickets: Bool
    public var sessionTicketCount = ListenerTLSSettings.defaultSessionTicketCount
    public var sessionCacheSize = PortcullisConfiguration.defaultSessionCacheSize
    public var cipherSuites: String?
    public var groups: String?
    public var proxyProtocol: ProxyProtocolVersion

    public init(
        name: String, listen: ListenAddress, target: TargetAddress, tls: TLSFiles,
        minTLSVersion: TLSVersion = .tls13, policy: AccessPolicy, timeouts: Timeouts = .defaults,
        maxConnections: Int = 0, workers: Int = Validate.defaultWorkers,
        logFormat: LogFormat = .text, logLevel: String = "info", sessionTickets: Bool = true,
        proxyProtocol: ProxyProtocolVersion = .off
    ) {
        self.name = name
        self.listen = listen
        self.target = target
        self.tls = tls
        self.minTLSVersion = minTLSVersion
        self.policy = policy
        self.timeouts = timeouts
        self.maxConnections = maxConnections
        self.workers = workers
        self.logFormat = logFormat
        self.logLevel = logLevel
        self.sessionTickets = sessionTickets
        self.proxyProtocol = proxyProtocol
    }

    /// Validates the `server` flags in flag order and reports the first problem.
    public init(flags: ServerFlags) throws(ConfigError) {
        typealias Name = ServerFlags.Name
        name = "server"

        guard let listenValue = flags.listen else {
            throw .missing(Name.listen, "give the address to accept TLS connections on, e.g. 0.0.0.0:8443")
        }
        listen = try Validate.listenAddress(listenValue, key: Name.listen)

        guard let targetValue = flags.target else {
            throw .missing(Name.target, "give the backend to forward to, e.g. 127.0.0.1:6379 or unix:/run/app.sock")
        }
        target = try Validate.targetAddress(
            targetValue, key: Name.target, allowNonLoopback: flags.unsafeTarget, unsafeKey: Name.unsafeTarget)

        guard let cert = flags.cert else {
            throw .missing(Name.cert, "give the server certificate chain (PEM) that clients verify")
        }
        try Validate.readablePath(cert, key: Name.cert)
        guard let key = flags.key else { throw .missing(Name.key, "give the private key (PEM) for --cert") }
        try Validate.readablePath(key, key: Name.key)
        if let passphrase = flags.keyPassphraseFile { try Validate.readablePath(passphrase, key: Name.keyPassphraseFile) }
        guard let cacert = flags.cacert else {
            throw .missing(Name.cacert, "server mode verifies every client certificate against it")
        }
        try Validate.readablePath(cacert, key: Name.cacert, allowDirectory: true)
        tls = TLSFiles(certificatePath: cert, keyPath: key, keyPassphrasePath: flags.keyPassphraseFile, caPath: cacert)

        var rules: [AccessRule] = []
        var firstRule: (flag: String, value: String)?
        for (flag, kind, values) in flags.allowFlags {
            rules += try Validate.accessRules(values, kind: kind, key: flag)
            if firstRule == nil, let value = values.first { firstRule = (flag, value) }
        }
        if flags.allowAll, let (flag, value) = firstRule {
            throw ConfigError(
                key: Name.allowAll,
                message: "\(Name.allowAll) and \(flag) \(singleQuoted(value)) are mutually exclusive: drop \(Name.allowAll) to admit only the listed clients")
        }
        if !flags.allowAll && rules.isEmpty {
            throw ConfigError(
                key: nil,
                message: "no access rule given: add --allow-cn/--allow-ou/--allow-dns/--allow-uri/… to admit clients, or --allow-all to admit every client whose certificate chains to --cacert")
        }
        policy = AccessPolicy(rules: rules, allowAll: flags.allowAll)

        minTLSVersion = try flags.minTLS.map { v throws(ConfigError) in try Validate.tlsVersion(v, key: Name.minTLS) } ?? .tls13

        let defaults = Timeouts.defaults
        timeouts = Timeouts(
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

        maxConnections = try flags.maxConcurrentConns.map { v throws(ConfigError) in
            try Validate.integer(v, key: Name.maxConcurrentConns, in: 0...Int(Int32.max), hint: "use 0 (unlimited) or a positive count")
        } ?? 0
        workers = try flags.workers.map { v throws(ConfigError) in
            try Validate.integer(v, key: Name.workers, in: 1...256, hint: "use 1-256")
        } ?? Validate.defaultWorkers
        logFormat = try flags.logFormat.map { v throws(ConfigError) in try Validate.logFormat(v, key: Name.logFormat) } ?? .text
        logLevel = try flags.logLevel.map { v throws(ConfigError) in try Validate.logLevel(v, key: Name.logLevel) } ?? "info"
        cipherSuites = try flags.cipherSuites.map { v throws(ConfigError) in try Validate.cipherSuites(v, key: Name.cipherSuites) }
        groups = try flags.groups.map { v throws(ConfigError) in try Validate.groups(v, key: Name.groups) }
        sessionTickets = flags.sessionTickets
        if let count = flags.sessionTicketCount {
            guard flags.sessionTickets else {
                throw ConfigError(key: Name.sessionTicketCount,
                                  message: "\(Name.sessionTicketCount) and \(Name.noSessionTickets) are mutually exclusive: drop one of them")
            }
            sessionTicketCount = try Validate.sessionTicketCount(count, key: Name.sessionTicketCount)
        }
        if let size = flags.sessionCacheSize {
            sessionCacheSize = try Validate.sessionCacheSize(size, key: Name.sessionCacheSize)
        }
        proxyProtocol = try flags.proxyProtocol.map { v throws(ConfigError) in
            try Validate.proxyProtocol(v, key: Name.proxyProtocol)
        } ?? .off
    }
}
