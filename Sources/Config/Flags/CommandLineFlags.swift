import Policy

/// The `server` or `client` command's flags exactly as typed; nothing here is validated.
/// `PortcullisConfiguration(flags:)` (server) and `init(clientFlags:)` write them onto the key tree of a
/// configuration file (`FlagTable`, `KeyTree`) and validate that, so flags and files share one validator and
/// one set of messages. A flag of the other mode is never set by the command line (the command has no such
/// option); setting one is a programming error (`KeyTree` stops).
public struct CommandLineFlags: Sendable, Equatable {
    // Both modes.
    public var listen: String?
    public var target: String?
    public var cert: String?
    public var key: String?
    public var keyPassphraseFile: String?
    /// `--keystore`, `--keystore-password-file`, `--storepass` (ghostunnel's: the password itself).
    public var keystore: String?
    public var keystorePasswordFile: String?
    public var storepass: String?
    public var cacert: String?
    public var minTLS: String?
    public var handshakeTimeout: String?
    public var connectTimeout: String?
    public var idleTimeout: String?
    public var closeTimeout: String?
    public var maxConnLifetime: String?
    public var shutdownTimeout: String?
    public var maxConcurrentConns: String?
    public var workers: String?
    public var logFormat: String?
    public var logLevel: String?
    /// `--no-session-tickets` clears it.
    public var sessionTickets = true
    /// `--status`: where to serve health, readiness, status and metrics (nil: nowhere).
    public var status: String?
    /// `--unsafe-status`: allow a `--status` address that is not loopback.
    public var unsafeStatus = false
    /// `--quiet-handshake-failures`: do not log handshake failures of peers that sent no certificate.
    public var quietHandshakeFailures = false
    /// `--syslog`: log to the local syslog instead of stderr.
    public var syslog = false
    /// `--cipher-suites`, `--groups`: TLS 1.3 suites and key-exchange groups, colon-separated.
    public var cipherSuites: String?
    public var groups: String?

    // Server mode: who is admitted, and what the target gets.
    public var allowCN: [String] = []
    public var allowOU: [String] = []
    public var allowO: [String] = []
    public var allowDNS: [String] = []
    public var allowURI: [String] = []
    public var allowEmail: [String] = []
    public var allowIP: [String] = []
    public var allowFingerprint: [String] = []
    public var allowSPKI: [String] = []
    public var allowAll = false
    public var unsafeTarget = false
    public var proxyProtocol: String?
    public var sessionTicketCount: String?
    public var sessionCacheSize: String?
    public var maxHandshakes: String?
    public var maxHandshakesPerSource: String?
    public var maxHandshakeRatePerSource: String?

    // Client mode: which server is accepted.
    public var verifyCN: [String] = []
    public var verifyOU: [String] = []
    public var verifyDNS: [String] = []
    public var verifyURI: [String] = []
    public var verifyIP: [String] = []
    public var verifyFingerprint: [String] = []
    public var verifySPKI: [String] = []
    public var overrideServerName: String?
    public var unsafeListen = false
    /// `--disable-authentication`: present no client certificate.
    public var disableAuthentication = false

    public init(listen: String? = nil, target: String? = nil, cert: String? = nil, key: String? = nil,
                cacert: String? = nil, allowCN: [String] = []) {
        self.listen = listen
        self.target = target
        self.cert = cert
        self.key = key
        self.cacert = cacert
        self.allowCN = allowCN
    }

    /// Each flag with its values (none: not given), in the order problems are reported, for `KeyTree`.
    var given: [(ConfigFlag, [String])] {
        typealias T = FlagTable
        func one(_ value: String?) -> [String] { value.map { [$0] } ?? [] }
        func on(_ set: Bool) -> [String] { set ? [""] : [] }
        return [
            (T.listen, one(listen)), (T.unsafeListen, on(unsafeListen)),
            (T.target, one(target)), (T.unsafeTarget, on(unsafeTarget)),
            (T.cert, one(cert)), (T.key, one(key)), (T.keyPassphraseFile, one(keyPassphraseFile)),
            (T.keystore, one(keystore)), (T.keystorePasswordFile, one(keystorePasswordFile)), (T.storepass, one(storepass)),
            (T.disableAuthentication, on(disableAuthentication)), (T.cacert, one(cacert)),
            (T.allowCN, allowCN), (T.allowOU, allowOU), (T.allowO, allowO), (T.allowDNS, allowDNS), (T.allowURI, allowURI),
            (T.allowEmail, allowEmail), (T.allowIP, allowIP), (T.allowFingerprint, allowFingerprint), (T.allowSPKI, allowSPKI),
            (T.allowAll, on(allowAll)),
            (T.verifyCN, verifyCN), (T.verifyOU, verifyOU), (T.verifyDNS, verifyDNS), (T.verifyURI, verifyURI),
            (T.verifyIP, verifyIP), (T.verifyFingerprint, verifyFingerprint), (T.verifySPKI, verifySPKI),
            (T.overrideServerName, one(overrideServerName)), (T.minTLS, one(minTLS)),
            (T.handshakeTimeout, one(handshakeTimeout)), (T.connectTimeout, one(connectTimeout)),
            (T.idleTimeout, one(idleTimeout)), (T.closeTimeout, one(closeTimeout)), (T.maxConnLifetime, one(maxConnLifetime)),
            (T.shutdownTimeout, one(shutdownTimeout)),
            (T.maxConcurrentConns, one(maxConcurrentConns)), (T.workers, one(workers)),
            (T.logFormat, one(logFormat)), (T.logLevel, one(logLevel)), (T.quietHandshakeFailures, on(quietHandshakeFailures)),
            (T.syslog, on(syslog)),
            (T.cipherSuites, one(cipherSuites)), (T.groups, one(groups)), (T.noSessionTickets, on(!sessionTickets)),
            (T.sessionTicketCount, one(sessionTicketCount)), (T.sessionCacheSize, one(sessionCacheSize)),
            (T.proxyProtocol, one(proxyProtocol)), (T.maxHandshakes, one(maxHandshakes)),
            (T.maxHandshakesPerSource, one(maxHandshakesPerSource)), (T.maxHandshakeRatePerSource, one(maxHandshakeRatePerSource)),
            (T.status, one(status)), (T.unsafeStatus, on(unsafeStatus && status != nil)),
        ]
    }
}
