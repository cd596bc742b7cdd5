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
        to --listen in plaintext, and Portcullis opens TLS 1.3 to --target presenting --cert (or --keystore; \
        nothing with --disable-authentication), verifies the server's chain against --cacert (without it: the \
        system trust store, SSL_CERT_FILE/SSL_CERT_DIR honoured) and its identity — the target's host name by default \
        (--override-server-name changes it), or the --verify-* rules when given — and only then reads the \
        application's bytes. When the target is down the local connection is closed at once, so clients that \
        reconnect on their own (ZeroMQ, NSQ) do.

        Signals: SIGHUP or SIGUSR1 — or any change to --cert, --key or --cacert on disk — reloads them; \
        SIGTERM/SIGINT drain; SIGUSR2 restarts without refusing a connection.
        """
    )

    @OptionGroup var shared: SharedOptions
    @OptionGroup var privileges: PrivilegeOptions

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
    @Flag(name: .customLong("disable-authentication"),
          help: "Present no client certificate (for servers that do not ask for one); the server is still verified.")
    var disableAuthentication = false
    func run() throws {
        var flags = shared.flags
        flags.verifyCN = verifyCN
        flags.verifyOU = verifyOU
        flags.verifyDNS = verifyDNS
        flags.verifyURI = verifyURI
        flags.verifyIP = verifyIP
        flags.verifyFingerprint = verifyFingerprint
        flags.verifySPKI = verifySPKI
        flags.overrideServerName = overrideServerName
        flags.unsafeListen = unsafeListen
        flags.disableAuthentication = disableAuthentication
        try serveCommandLine(flags, mode: .client, privileges: privileges, timedReload: shared.timedReload)
    }
}
