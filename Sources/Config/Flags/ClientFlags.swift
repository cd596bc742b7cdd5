import Policy

/// The `client` command's flags exactly as typed; nothing here is validated.
/// `PortcullisConfiguration(clientFlags:)` validates them as a configuration file's key tree (`FlagTable`).
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

    /// Each flag with its values (none: not given), for `KeyTree`.
    var given: [(ConfigFlag, [String])] {
        typealias T = FlagTable
        func one(_ value: String?) -> [String] { value.map { [$0] } ?? [] }
        func on(_ set: Bool) -> [String] { set ? [""] : [] }
        return [
            (T.listen, one(listen)), (T.unsafeListen, on(unsafeListen)), (T.target, one(target)),
            (T.cert, one(cert)), (T.key, one(key)), (T.keyPassphraseFile, one(keyPassphraseFile)), (T.cacert, one(cacert)),
            (T.verifyCN, verifyCN), (T.verifyOU, verifyOU), (T.verifyDNS, verifyDNS), (T.verifyURI, verifyURI),
            (T.verifyIP, verifyIP), (T.verifyFingerprint, verifyFingerprint), (T.verifySPKI, verifySPKI),
            (T.overrideServerName, one(overrideServerName)), (T.minTLS, one(minTLS)),
            (T.handshakeTimeout, one(handshakeTimeout)), (T.connectTimeout, one(connectTimeout)),
            (T.idleTimeout, one(idleTimeout)), (T.closeTimeout, one(closeTimeout)), (T.shutdownTimeout, one(shutdownTimeout)),
            (T.maxConcurrentConns, one(maxConcurrentConns)), (T.workers, one(workers)),
            (T.logFormat, one(logFormat)), (T.logLevel, one(logLevel)), (T.quietHandshakeFailures, on(quietHandshakeFailures)),
            (T.cipherSuites, one(cipherSuites)), (T.groups, one(groups)), (T.noSessionTickets, on(!sessionTickets)),
            (T.status, one(status)), (T.unsafeStatus, on(unsafeStatus && status != nil)),
        ]
    }
}
