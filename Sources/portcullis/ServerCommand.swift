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

        Signals: SIGHUP or SIGUSR1 — or any change to those files on disk — reloads certificate, key and CA bundle; \
        SIGTERM/SIGINT stop accepting and drain open \
        connections for up to --shutdown-timeout; SIGUSR2 restarts without refusing a connection (a new \
        process of this binary takes over the listening sockets, then this one drains and exits).

        systemd: Type=notify (READY, RELOADING, STOPPING, WATCHDOG over NOTIFY_SOCKET) and socket activation \
        (LISTEN_FDS, matched by FileDescriptorName= or address); see examples/systemd.
        """
    )

    @OptionGroup var shared: SharedOptions
    @OptionGroup var privileges: PrivilegeOptions

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
    @Option(name: .customLong("proxy-protocol"), help: "Send the target a PROXY protocol header first: v2 (client address and TLS identity) or off (default).")
    var proxyProtocol: String?
    @Option(name: .customLong("session-ticket-count"),
            help: "TLS 1.3 session tickets sent after each handshake (default 1; 0 sends none). More help only clients that open several connections at once and never reuse a ticket.")
    var sessionTicketCount: String?
    @Option(name: .customLong("session-cache-size"),
            help: "Resumable sessions kept in memory for all listeners (default 20000); the least recently used go first.")
    var sessionCacheSize: String?
    @Option(name: .customLong("max-handshakes"),
            help: "TLS handshakes in progress per worker (default 1024; 0 = unlimited). At the limit a new connection closes the oldest handshake.")
    var maxHandshakes: String?
    @Option(name: .customLong("max-handshakes-per-source"),
            help: "Handshakes in progress per worker from one client address; more are refused (default 0 = off: NAT puts many clients behind one address).")
    var maxHandshakesPerSource: String?
    @Option(name: .customLong("max-handshake-rate-per-source"),
            help: "New connections per second per worker from one client address; more are refused (default 0 = off).")
    var maxHandshakeRatePerSource: String?

    func run() throws {
        var flags = shared.flags
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
        flags.proxyProtocol = proxyProtocol
        flags.sessionTicketCount = sessionTicketCount
        flags.sessionCacheSize = sessionCacheSize
        flags.maxHandshakes = maxHandshakes
        flags.maxHandshakesPerSource = maxHandshakesPerSource
        flags.maxHandshakeRatePerSource = maxHandshakeRatePerSource
        try serveCommandLine(flags, mode: .server, privileges: privileges, timedReload: shared.timedReload)
    }
}

/// Validates a `server` or `client` command line as the configuration file it stands for, then serves it.
func serveCommandLine(_ flags: CommandLineFlags, mode: ListenerMode, privileges: PrivilegeOptions, timedReload: String?) throws {
    let file: PortcullisConfiguration
    var reloadEvery: UInt64 = 0
    do {
        if let timedReload { reloadEvery = try Validate.positiveDuration(timedReload, key: "--timed-reload") }
        file = mode == .server ? try PortcullisConfiguration(flags: flags) : try PortcullisConfiguration(clientFlags: flags)
    } catch {
        throw CommandFailure(message: "\(error)", code: 2)
    }
    let logger = try bootstrapLogging(format: file.log.format, level: file.log.level, syslog: file.log.syslog,
                                      syslogSetting: "--syslog (config key log.syslog)")
    if flags.storepass != nil {
        // Accepted for ghostunnel's unit files; the password itself is never logged.
        logger.warning("keystore password given on the command line (--storepass): local users can read it in /proc/PID/cmdline and ps", metadata: [
            "fix": "put the password in a file readable only by this user and pass --keystore-password-file FILE instead",
        ])
    }
    let configuration = RuntimeConfiguration(file, configPath: nil)
    // The command line cannot change while running: a reload re-reads the same files.
    try serve(configuration, privileges: privileges, logger: logger, reloadFrom: { configuration }, timedReload: reloadEvery)
}

/// Starts the runtime and serves until it stops; a non-zero exit code becomes the process's.
///
/// Privileges are dropped between binding (and loading keys) in `ServerRuntime.init` and serving in `run()`:
/// ports below 1024 and root-only key files work, and no connection is ever handled as root (unless
/// `--allow-root`). Reloads then re-read files as the unprivileged user.
func serve(_ configuration: RuntimeConfiguration, privileges: PrivilegeOptions, logger: Logger,
           reloadFrom source: @escaping ServerRuntime.ConfigurationSource, timedReload: UInt64 = 0) throws {
    let drop = try PrivilegeDrop.plan(privileges)
    let runtime: ServerRuntime
    do {
        runtime = try ServerRuntime(configuration: configuration, logger: logger, reloadFrom: source)
    } catch {
        throw CommandFailure(message: error.description)
    }
    // After a successful start only: a startup error stays the one line it is.
    runtime.timedReloadMilliseconds = timedReload
    warnAboutReadableKeys(configuration, logger: logger)
    try drop?.apply(logger: logger, socketFiles: runtime.ownedSocketFiles)
    let code = runtime.run()
    if code != 0 { throw ExitCode(code) }
}

/// Installs the process-wide log handler and returns the root logger. With `syslog`, `/dev/log` must accept
/// a connection now (ghostunnel fails its start the same way); `syslogSetting` names the flag or key.
func bootstrapLogging(format: LogFormat, level: String, syslog: Bool = false, syslogSetting: String = "--syslog") throws -> Logger {
    let style: LogStyle = format == .json ? .json : .text
    let logLevel = Logger.Level(rawValue: level) ?? .info
    let destination: LogDestination
    do {
        destination = syslog ? try LogDestination.localSyslog() : .stderr
    } catch {
        throw CommandFailure(message: "\(syslogSetting): cannot reach the local syslog: \(error) (start rsyslog or journald, or log to stderr without it)", code: 1)
    }
    LoggingSystem.bootstrap { label in LineLogHandler(label: label, style: style, level: logLevel, destination: destination) }
    return Logger(label: "portcullis")
}
