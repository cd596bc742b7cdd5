import ArgumentParser
import Config
import Logging
import Policy
import Proxy
import TLS

struct ServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Terminate mTLS and forward authorized clients to a plaintext target on this host.",
        discussion: """
        Every client must present a certificate that chains to --cacert and matches at least one --allow-* \
        rule (or --allow-all). Rules are checked inside the TLS handshake: a refused client gets a TLS alert, \
        and the target never sees a connection from it. Globs: '*' matches within one DNS label or URI path \
        segment, '**' across them.

        Signals: SIGHUP reloads certificate, key and CA bundle; SIGTERM/SIGINT stop accepting and drain open \
        connections for up to --shutdown-timeout.
        """
    )

    @Option(help: "Address to accept TLS on, as HOST:PORT (e.g. 0.0.0.0:6380, [::]:6380).")
    var listen: String?

    @Option(help: "Plaintext target, as HOST:PORT on loopback or unix:/path/to.sock.")
    var target: String?

    @Option(help: "Server certificate chain (PEM).")
    var cert: String?

    @Option(help: "Private key for --cert (PEM; RSA, ECDSA or Ed25519; may be encrypted).")
    var key: String?

    @Option(name: .customLong("key-passphrase-file"), help: "File holding the passphrase of an encrypted --key.")
    var keyPassphraseFile: String?

    @Option(help: "CA certificates that client certificates must chain to (PEM file, or a directory of them).")
    var cacert: String?

    @Option(name: .customLong("allow-cn"), help: "Admit clients whose subject CN matches (glob). Repeatable.")
    var allowCN: [String] = []
    @Option(name: .customLong("allow-ou"), help: "Admit clients with a subject OU that matches (glob). Repeatable.")
    var allowOU: [String] = []
    @Option(name: .customLong("allow-o"), help: "Admit clients with a subject O that matches (glob). Repeatable.")
    var allowO: [String] = []
    @Option(name: .customLong("allow-dns"), help: "Admit clients with a DNS SAN that matches (glob). Repeatable.")
    var allowDNS: [String] = []
    @Option(name: .customLong("allow-uri"), help: "Admit clients with a URI SAN (e.g. a SPIFFE ID) that matches (glob). Repeatable.")
    var allowURI: [String] = []
    @Option(name: .customLong("allow-email"), help: "Admit clients with an email SAN that matches (glob). Repeatable.")
    var allowEmail: [String] = []
    @Option(name: .customLong("allow-ip"), help: "Admit clients with an IP SAN in this address or CIDR. Repeatable.")
    var allowIP: [String] = []
    @Option(name: .customLong("allow-fingerprint"), help: "Admit the client certificate with this SHA-256 fingerprint (sha256:HEX). Repeatable.")
    var allowFingerprint: [String] = []
    @Option(name: .customLong("allow-spki"), help: "Admit clients whose public key (SPKI) has this SHA-256 pin (sha256:HEX). Repeatable.")
    var allowSPKI: [String] = []
    @Flag(name: .customLong("allow-all"), help: "Admit every client whose certificate chains to --cacert.")
    var allowAll = false

    @Flag(name: .customLong("unsafe-target"), help: "Allow a target that is not on loopback.")
    var unsafeTarget = false

    @Option(name: .customLong("min-tls"), help: "Lowest TLS version accepted: 1.3 (default) or 1.2.")
    var minTLS: String?

    @Option(name: .customLong("handshake-timeout"), help: "Time allowed for the TLS handshake (default 10s).")
    var handshakeTimeout: String?
    @Option(name: .customLong("connect-timeout"), help: "Time allowed to connect to the target (default 10s).")
    var connectTimeout: String?
    @Option(name: .customLong("idle-timeout"), help: "Close connections idle this long in both directions (default 0 = never).")
    var idleTimeout: String?
    @Option(name: .customLong("close-timeout"), help: "After one side closes, how long the other may keep sending (default 60s).")
    var closeTimeout: String?
    @Option(name: .customLong("shutdown-timeout"), help: "On SIGTERM, how long open connections may drain (default 5m).")
    var shutdownTimeout: String?

    @Option(name: .customLong("max-concurrent-conns"), help: "Refuse connections beyond this many open ones (default 0 = unlimited).")
    var maxConcurrentConns: String?

    @Option(help: "Worker threads, each with its own event loop (default: number of CPUs).")
    var workers: String?

    @Flag(name: .customLong("no-session-tickets"), help: "Disable TLS session resumption.")
    var noSessionTickets = false

    @Option(name: .customLong("log-format"), help: "Log format: text (default) or json.")
    var logFormat: String?
    @Option(name: .customLong("log-level"), help: "Log level: trace, debug, info (default), notice, warning, error, critical.")
    var logLevel: String?

    func run() throws {
        var flags = ServerFlags()
        flags.listen = listen
        flags.target = target
        flags.cert = cert
        flags.key = key
        flags.keyPassphraseFile = keyPassphraseFile
        flags.cacert = cacert
        flags.allowCN = allowCN
        flags.allowOU = allowOU
        flags.allowO = allowO
        flags.allowDNS = allowDNS
        flags.allowURI = allowURI
        flags.allowEmail = allowEmail
        flags.allowIP = allowIP
        flags.allowFingerprint = allowFingerprint
        flags.allowSPKI = allowSPKI
        flags.allowAll = allowAll
        flags.unsafeTarget = unsafeTarget
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
            file = try PortcullisConfiguration(flags: flags)
        } catch {
            throw CommandFailure(message: "\(error)", code: 2)
        }
        let logger = bootstrapLogging(format: file.log.format, level: file.log.level)
        let configuration = RuntimeConfiguration(file, configPath: nil)
        // The command line cannot change while running: a reload re-reads the same files.
        try serve(configuration, logger: logger, reloadFrom: { configuration })
    }
}

/// Starts the runtime and serves until it stops; a non-zero exit code becomes the process's.
func serve(_ configuration: RuntimeConfiguration, logger: Logger,
           reloadFrom source: @escaping ServerRuntime.ConfigurationSource) throws {
    let runtime: ServerRuntime
    do {
        runtime = try ServerRuntime(configuration: configuration, logger: logger, reloadFrom: source)
    } catch {
        throw CommandFailure(message: error.description)
    }
    let code = runtime.run()
    if code != 0 { throw ExitCode(code) }
}

/// Installs the process-wide log handler and returns the root logger.
func bootstrapLogging(format: LogFormat, level: String) -> Logger {
    let style: LogStyle = format == .json ? .json : .text
    let logLevel = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in LineLogHandler(label: label, style: style, level: logLevel) }
    return Logger(label: "portcullis")
}
