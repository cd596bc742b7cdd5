import Policy

/// The `server` command's flags exactly as typed; nothing here is validated. `PortcullisConfiguration(flags:)`
/// writes them onto the key tree of a configuration file (`FlagTable`) and validates that.
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

    /// Each flag with its values (none: not given), for `KeyTree`.
    var given: [(ConfigFlag, [String])] {
        typealias T = FlagTable
        func one(_ value: String?) -> [String] { value.map { [$0] } ?? [] }
        func on(_ set: Bool) -> [String] { set ? [""] : [] }
        return [
            (T.listen, one(listen)), (T.target, one(target)), (T.unsafeTarget, on(unsafeTarget)),
            (T.cert, one(cert)), (T.key, one(key)), (T.keyPassphraseFile, one(keyPassphraseFile)), (T.cacert, one(cacert)),
            (T.allowCN, allowCN), (T.allowOU, allowOU), (T.allowO, allowO), (T.allowDNS, allowDNS), (T.allowURI, allowURI),
            (T.allowEmail, allowEmail), (T.allowIP, allowIP), (T.allowFingerprint, allowFingerprint), (T.allowSPKI, allowSPKI),
            (T.allowAll, on(allowAll)), (T.minTLS, one(minTLS)),
            (T.handshakeTimeout, one(handshakeTimeout)), (T.connectTimeout, one(connectTimeout)),
            (T.idleTimeout, one(idleTimeout)), (T.closeTimeout, one(closeTimeout)), (T.shutdownTimeout, one(shutdownTimeout)),
            (T.maxConcurrentConns, one(maxConcurrentConns)), (T.workers, one(workers)),
            (T.logFormat, one(logFormat)), (T.logLevel, one(logLevel)), (T.quietHandshakeFailures, on(quietHandshakeFailures)),
            (T.cipherSuites, one(cipherSuites)), (T.groups, one(groups)), (T.noSessionTickets, on(!sessionTickets)),
            (T.sessionTicketCount, one(sessionTicketCount)), (T.sessionCacheSize, one(sessionCacheSize)),
            (T.proxyProtocol, one(proxyProtocol)), (T.status, one(status)), (T.unsafeStatus, on(unsafeStatus && status != nil)),
        ]
    }
}
