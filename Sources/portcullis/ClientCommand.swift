import ArgumentParser
import Config
import Logging
import Proxy

struct ClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Accept plaintext locally and forward it over mTLS to a remote Portcullis (or any TLS server).",
        discussion: """
        For applications whose client library has no TLS (ZeroMQ, NSQ, Erlang distribution, …): they connect \
        to --listen in plaintext, and Portcullis opens TLS 1.3 to --target presenting --cert, verifies the \
        server's chain against --cacert and its identity — the target's host name by default \
        (--override-server-name changes it), or the --verify-* rules when given — and only then reads the \
        application's bytes. When the target is down the local connection is closed at once, so clients that \
        reconnect on their own (ZeroMQ, NSQ) do.
        """
    )

    @Option(help: "Local address to accept plaintext on (loopback unless --unsafe-listen).")
    var listen: String?
    @Option(help: "Remote TLS server, as HOST:PORT.")
    var target: String?
    @Option(help: "Client certificate chain to present (PEM).")
    var cert: String?
    @Option(help: "Private key for --cert (PEM; may be encrypted).")
    var key: String?
    @Option(name: .customLong("key-passphrase-file"), help: "File holding the passphrase of an encrypted --key.")
    var keyPassphraseFile: String?
    @Option(help: "CA certificates the server's certificate must chain to (PEM file or directory).")
    var cacert: String?

    @Option(name: .customLong("verify-cn"), help: "Accept a server whose subject CN matches (glob). Repeatable.")
    var verifyCN: [String] = []
    @Option(name: .customLong("verify-ou"), help: "Accept a server with a subject OU that matches (glob). Repeatable.")
    var verifyOU: [String] = []
    @Option(name: .customLong("verify-dns"), help: "Accept a server with a DNS SAN that matches (glob). Repeatable.")
    var verifyDNS: [String] = []
    @Option(name: .customLong("verify-uri"), help: "Accept a server with a URI SAN / SPIFFE ID that matches (glob). Repeatable.")
    var verifyURI: [String] = []
    @Option(name: .customLong("verify-ip"), help: "Accept a server with an IP SAN in this address or CIDR. Repeatable.")
    var verifyIP: [String] = []
    @Option(name: .customLong("verify-fingerprint"), help: "Accept the server certificate with this SHA-256 fingerprint. Repeatable.")
    var verifyFingerprint: [String] = []
    @Option(name: .customLong("verify-spki"), help: "Accept a server key with this SHA-256 SPKI pin. Repeatable.")
    var verifySPKI: [String] = []
    @Option(name: .customLong("override-server-name"), help: "Name to send as SNI and to verify (default: the --target host).")
    var overrideServerName: String?

    @Flag(name: .customLong("unsafe-listen"), help: "Allow a --listen address that is not on loopback.")
    var unsafeListen = false
    @Option(name: .customLong("min-tls"), help: "Lowest TLS version: 1.3 (default) or 1.2.")
    var minTLS: String?
    @Option(name: .customLong("handshake-timeout"), help: "Time allowed for the TLS handshake (default 10s).")
    var handshakeTimeout: String?
    @Option(name: .customLong("connect-timeout"), help: "Time allowed to connect to the target (default 10s).")
    var connectTimeout: String?
    @Option(name: .customLong("idle-timeout"), help: "Close connections idle this long (default 0 = never).")
    var idleTimeout: String?
    @Option(name: .customLong("close-timeout"), help: "After one side closes, how long the other may keep sending (default 60s).")
    var closeTimeout: String?
    @Option(name: .customLong("shutdown-timeout"), help: "On SIGTERM, how long open connections may drain (default 5m).")
    var shutdownTimeout: String?
    @Option(name: .customLong("max-concurrent-conns"), help: "Refuse connections beyond this many open ones (default 0 = unlimited).")
    var maxConcurrentConns: String?
    @Option(help: "Worker threads (default: number of CPUs).")
    var workers: String?
    @Flag(name: .customLong("no-session-tickets"), help: "Disable TLS session resumption.")
    var noSessionTickets = false
    @Option(name: .customLong("log-format"), help: "Log format: text (default) or json.")
    var logFormat: String?
    @Option(name: .customLong("log-level"), help: "Log level (default info).")
    var logLevel: String?

    func run() throws {
        var flags = ClientFlags()
        flags.listen = listen
        flags.target = target
        flags.cert = cert
        flags.key = key
        flags.keyPassphraseFile = keyPassphraseFile
        flags.cacert = cacert
        flags.verifyCN = verifyCN
        flags.verifyOU = verifyOU
        flags.verifyDNS = verifyDNS
        flags.verifyURI = verifyURI
        flags.verifyIP = verifyIP
        flags.verifyFingerprint = verifyFingerprint
        flags.verifySPKI = verifySPKI
        flags.overrideServerName = overrideServerName
        flags.unsafeListen = unsafeListen
        flags.minTLS = minTLS
        flags.handshakeTimeout = handshakeTimeout
        flags.connectTimeout = connectTimeout
        flags.idleTimeout = idleTimeout
        flags.closeTimeout = closeTimeout
        flags.shutdownTimeout = shutdownTimeout
        flags.maxConcurrentConns = maxConcurrentConns
        flags.workers = workers
        flags.logFormat = logFormat
        flags.logLevel = logLevel
        flags.sessionTickets = !noSessionTickets
        let file: PortcullisConfiguration
        do {
            file = try PortcullisConfiguration(clientFlags: flags)
        } catch {
            throw CommandFailure(message: "\(error)", code: 2)
        }
        let logger = bootstrapLogging(format: file.log.format, level: file.log.level)
        let configuration = RuntimeConfiguration(file, configPath: nil)
        try serve(configuration, logger: logger, reloadFrom: { configuration })
    }
}
