import ArgumentParser
import Config

/// Flags that `server` and `client` share, with the same meaning and spelling.
struct SharedOptions: ParsableArguments {
    @Option(help: "Where to accept connections: HOST:PORT, unix:/path, or systemd:NAME (the sockets systemd passed with FileDescriptorName=NAME).")
    var listen: String?
    @Option(help: "Where to forward: HOST:PORT (server mode: loopback or unix:/path; client mode: the remote TLS server).")
    var target: String?
    @Option(help: "Our certificate chain (PEM).")
    var cert: String?
    @Option(help: "Private key for --cert (PEM; RSA, ECDSA or Ed25519; may be encrypted).")
    var key: String?
    @Option(name: .customLong("key-passphrase-file"), help: "File holding the passphrase of an encrypted --key.")
    var keyPassphraseFile: String?
    @Option(help: "Our key and certificate chain in one file, instead of --cert/--key: PKCS#12 (.p12/.pfx) or a combined PEM.")
    var keystore: String?
    @Option(name: .customLong("keystore-password-file"), help: "File holding the --keystore password (for a combined PEM: its key's passphrase).")
    var keystorePasswordFile: String?
    @Option(help: "The --keystore password itself (ghostunnel's flag). Local users can read it in the process list: prefer --keystore-password-file.")
    var storepass: String?
    @Option(help: "CA certificates the peer's certificate must chain to (PEM file, or a directory of them).")
    var cacert: String?

    @Option(name: .customLong("min-tls"), help: "Lowest TLS version accepted: 1.3 (default) or 1.2.")
    var minTLS: String?
    @Option(name: .customLong("handshake-timeout"), help: "Time allowed for the TLS handshake (default 10s).")
    var handshakeTimeout: String?
    @Option(name: .customLong("connect-timeout"), help: "Time allowed to connect to the target (default 10s).")
    var connectTimeout: String?
    @Option(name: .customLong("idle-timeout"), help: "Close connections idle this long in both directions (default 0 = never).")
    var idleTimeout: String?
    @Option(name: .customLong("close-timeout"), help: "After one side closes, how long the other may keep sending (default 60s; 1s when started as 'ghostunnel', as in ghostunnel).")
    var closeTimeout: String?
    @Option(name: .customLong("max-conn-lifetime"),
            help: "Close each connection this long after its accept, however busy (close_notify and FIN both ways; default 0 = never).")
    var maxConnLifetime: String?
    @Option(name: .customLong("shutdown-timeout"), help: "On SIGTERM, how long open connections may drain (default 5m).")
    var shutdownTimeout: String?
    @Option(name: .customLong("max-concurrent-conns"), help: "Accept at most this many open connections; more wait in the kernel's accept queue (default 0 = unlimited).")
    var maxConcurrentConns: String?
    @Option(help: "Worker threads, each with its own event loop (default: number of CPUs).")
    var workers: String?
    @Option(name: .customLong("cipher-suites"),
            help: "TLS 1.3 cipher suites, colon-separated, in order of preference (e.g. TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384; default: OpenSSL's).")
    var cipherSuites: String?
    @Option(help: "Key-exchange groups, colon-separated, in order of preference (e.g. X25519:P-256; default: OpenSSL's).")
    var groups: String?
    @Flag(name: .customLong("no-session-tickets"), help: "Disable TLS session resumption.")
    var noSessionTickets = false
    @Option(name: .customLong("log-format"), help: "Log format: text (default) or json.")
    var logFormat: String?
    @Option(name: .customLong("log-level"), help: "Log level: trace, debug, info (default), notice, warning, error, critical.")
    var logLevel: String?
    @Flag(name: .customLong("quiet-handshake-failures"),
          help: "Do not log failed handshakes of peers that sent no certificate (TCP health checks, port scanners); metrics still count them.")
    var quietHandshakeFailures = false
    @Flag(help: "Send log lines to the local syslog (/dev/log, ident portcullis, facility daemon) instead of stderr.")
    var syslog = false
    @Option(help: "Serve /healthz, /readyz, /status, /metrics and ghostunnel's /_status, /_metrics here: HOST:PORT or http://HOST:PORT (plain HTTP) or https://HOST:PORT (TLS with the listener's certificate) on loopback, unix:/path, or systemd:NAME (a socket systemd passed). Started as 'ghostunnel', a bare HOST:PORT is HTTPS, as in ghostunnel.")
    var status: String?
    @Option(name: .customLong("timed-reload"),
            help: "Also reload certificate, key and CA bundle every this long, as SIGHUP does (e.g. 1h; default: only on SIGHUP/SIGUSR1 or a file change).")
    var timedReload: String?
    @Flag(name: .customLong("unsafe-status"), help: "Allow a --status address that is not loopback.")
    var unsafeStatus = false

    /// The flags both modes share, as typed; each command adds its own.
    var flags: CommandLineFlags {
        var flags = CommandLineFlags()
        flags.listen = listen
        flags.target = target
        flags.cert = cert
        flags.key = key
        flags.keyPassphraseFile = keyPassphraseFile
        flags.keystore = keystore
        flags.keystorePasswordFile = keystorePasswordFile
        flags.storepass = storepass
        flags.cacert = cacert
        flags.minTLS = minTLS
        flags.handshakeTimeout = handshakeTimeout
        flags.connectTimeout = connectTimeout
        flags.idleTimeout = idleTimeout
        flags.closeTimeout = closeTimeout
        flags.maxConnLifetime = maxConnLifetime
        flags.shutdownTimeout = shutdownTimeout
        flags.maxConcurrentConns = maxConcurrentConns
        flags.workers = workers
        flags.logFormat = logFormat
        flags.logLevel = logLevel
        flags.sessionTickets = !noSessionTickets
        flags.cipherSuites = cipherSuites
        flags.groups = groups
        flags.quietHandshakeFailures = quietHandshakeFailures
        flags.syslog = syslog
        flags.status = status
        flags.unsafeStatus = unsafeStatus
        return flags
    }
}
