import Testing
import Config
import Policy
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Throwaway PEM-named files (contents do not matter here: Config only checks that they can be read).
final class Files: Sendable {
    let directory: String
    var cert: String { directory + "/server.pem" }
    var key: String { directory + "/server.key" }
    var passphrase: String { directory + "/passphrase.txt" }
    var ca: String { directory + "/ca.pem" }
    var caDirectory: String { directory + "/ca.d" }

    init() throws {
        directory = NSTemporaryDirectory() + "portcullis-config-tests-" + UUID().uuidString
        let manager = FileManager.default
        try manager.createDirectory(atPath: directory + "/ca.d", withIntermediateDirectories: true)
        for path in [directory + "/server.pem", directory + "/server.key", directory + "/passphrase.txt", directory + "/ca.pem"] {
            #expect(manager.createFile(atPath: path, contents: Data("test\n".utf8)))
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Flags that validate: the base every error test changes one thing in.
    func validFlags() -> CommandLineFlags {
        CommandLineFlags(listen: ":8443", target: "127.0.0.1:6379", cert: cert, key: key, cacert: ca, allowCN: ["app-1"])
    }
}

typealias Edit = @Sendable (inout CommandLineFlags) -> Void

@Suite("Server mode from flags")
struct ServerFlagsTests {
    let files: Files

    init() throws { files = try Files() }

    private func configuration(_ edit: Edit = { _ in }) throws -> PortcullisConfiguration {
        var flags = files.validFlags()
        edit(&flags)
        return try PortcullisConfiguration(flags: flags)
    }

    @Test func defaultsApplyWhenOnlyTheRequiredFlagsAreGiven() throws {
        let configuration = try configuration()
        let listener = configuration.listeners[0]
        #expect(listener.name == "server")
        #expect(listener.mode == .server)
        #expect(listener.listen == ListenAddress(host: IPAddress("0.0.0.0")!, port: 8443))
        #expect(listener.target == .tcp(host: "127.0.0.1", port: 6379))
        #expect(listener.tls == ListenerTLSSettings(certificatePath: files.cert, keyPath: files.key, caPath: files.ca))
        #expect(listener.tls.minimumVersion == .tls13)
        #expect(listener.timeouts == Timeouts(handshake: 10_000, connect: 10_000, idle: 0, close: 60_000, shutdown: 300_000))
        #expect(listener.timeouts == .defaults)
        #expect(configuration.shutdownTimeoutMs == 300_000)
        #expect(listener.maxConnections == 0)
        #expect(configuration.workers == Validate.defaultWorkers)
        #expect((1...256).contains(configuration.workers))
        #expect(configuration.log == LogSettings(format: .text, level: "info", quietHandshakeFailures: false))
        #expect(configuration.status == nil)
        #expect(listener.tls.sessionTickets)
        #expect(listener.tls.sessionTicketCount == 1)
        #expect(configuration.sessionCacheSize == 20_000)
        #expect(listener.tls.cipherSuites == nil && listener.tls.groups == nil)
        #expect(listener.policy.rules.map(\.name) == ["cn=app-1"])
        #expect(!listener.policy.allowAll)
        #expect(listener.proxyProtocol == .off)
        #expect(!listener.unsafeTarget)
        #expect(listener.reauthorize && !listener.closeAtCertExpiry)
    }

    @Test func everyFlagIsCarriedThrough() throws {
        let configuration = try configuration { flags in
            flags.listen = "[::1]:0"
            flags.target = "unix:/run/app.sock"
            flags.keyPassphraseFile = self.files.passphrase
            flags.cacert = self.files.caDirectory
            flags.minTLS = "1.2"
            flags.handshakeTimeout = "250ms"
            flags.connectTimeout = "2s"
            flags.idleTimeout = "1m30s"
            flags.closeTimeout = "0"
            flags.shutdownTimeout = "1h"
            flags.maxConcurrentConns = "10000"
            flags.workers = "3"
            flags.logFormat = "json"
            flags.logLevel = "debug"
            flags.sessionTickets = false
            flags.proxyProtocol = "v2"
            flags.cipherSuites = "tls_aes_128_gcm_sha256"
            flags.groups = "x25519:P-256"
            flags.sessionCacheSize = "1000"
        }
        let listener = configuration.listeners[0]
        #expect(listener.listen.description == "[::1]:0")
        #expect(listener.target == .unix(path: "/run/app.sock"))
        #expect(listener.tls.keyPassphrasePath == files.passphrase)
        #expect(listener.tls.caPath == files.caDirectory)
        #expect(listener.tls.minimumVersion == .tls12)
        #expect(listener.timeouts == Timeouts(handshake: 250, connect: 2_000, idle: 90_000, close: 0, shutdown: 3_600_000))
        #expect(configuration.shutdownTimeoutMs == 3_600_000)
        #expect(listener.maxConnections == 10_000)
        #expect(configuration.workers == 3)
        #expect(configuration.log.format == .json)
        #expect(configuration.log.level == "debug")
        #expect(!listener.tls.sessionTickets)
        #expect(listener.proxyProtocol == .v2)
        #expect(listener.tls.cipherSuites == "TLS_AES_128_GCM_SHA256")
        #expect(listener.tls.groups == "X25519:P-256")
        #expect(configuration.sessionCacheSize == 1_000)
    }

    @Test func sessionTicketCountIsCarriedThrough() throws {
        #expect(try configuration { $0.sessionTicketCount = "3" }.listeners[0].tls.sessionTicketCount == 3)
    }

    @Test("--proxy-protocol takes v2 or off; off is the default", arguments: [
        (nil, ProxyProtocolVersion.off), ("off", .off), ("v2", .v2),
    ] as [(String?, ProxyProtocolVersion)])
    func proxyProtocolValues(value: String?, expected: ProxyProtocolVersion) throws {
        #expect(try configuration { $0.proxyProtocol = value }.listeners[0].proxyProtocol == expected)
    }

    @Test func unsafeTargetAllowsANonLoopbackBackend() throws {
        let listener = try configuration { $0.target = "10.0.0.5:6379"; $0.unsafeTarget = true }.listeners[0]
        #expect(listener.target == .tcp(host: "10.0.0.5", port: 6379))
        #expect(listener.unsafeTarget)
    }

    @Test func eachAllowValueBecomesOneRuleInFlagOrder() throws {
        let policy = try configuration { flags in
            flags.allowCN = ["app-1", "app-2"]
            flags.allowOU = ["payments"]
            flags.allowO = ["Example"]
            flags.allowDNS = ["*.internal"]
            flags.allowURI = ["spiffe://example.org/ns/prod/*"]
            flags.allowEmail = ["*@example.com"]
            flags.allowIP = ["10.0.0.0/8"]
            flags.allowFingerprint = ["SHA256:" + String(repeating: "AB", count: 32)]
            flags.allowSPKI = ["sha256:" + String(repeating: "cd", count: 32)]
        }.listeners[0].policy
        #expect(policy.rules.map(\.name) == [
            "cn=app-1", "cn=app-2", "ou=payments", "o=Example", "dns=*.internal", "uri=spiffe://example.org/ns/prod/*",
            "email=*@example.com", "ip=10.0.0.0/8", "fingerprint=sha256:" + String(repeating: "ab", count: 32),
            "spki=sha256:" + String(repeating: "cd", count: 32),
        ])
        #expect(policy.rules.allSatisfy { $0.matchers.count == 1 })
        let client = PeerIdentity(subject: DistinguishedName([.init(type: "CN", value: "app-2")]))
        #expect(policy.evaluate(client).description == "allowed by rule 'cn=app-2' (cn=app-2)")
    }

    @Test func aRepeatedAllowValueIsOneRule() throws {
        let policy = try configuration { $0.allowCN = ["app-1", "app-1"]; $0.allowFingerprint = ["sha256:" + String(repeating: "ab", count: 32), "SHA256:" + String(repeating: "AB", count: 32)] }.listeners[0].policy
        #expect(policy.rules.map(\.name) == ["cn=app-1", "fingerprint=sha256:" + String(repeating: "ab", count: 32)])
    }

    @Test func allowAllBuildsAnAllowAllPolicy() throws {
        let policy = try configuration { $0.allowCN = []; $0.allowAll = true }.listeners[0].policy
        #expect(policy.allowAll)
        #expect(policy.rules.isEmpty)
    }

    @Test func aCADirectoryIsAccepted() throws {
        #expect(try configuration { $0.cacert = self.files.caDirectory }.listeners[0].tls.caPath == files.caDirectory)
    }

    @Test func unsafeStatusWithoutStatusIsIgnored() throws {
        #expect(try configuration { $0.unsafeStatus = true }.status == nil)
    }

    static let errors: [(String, Edit)] = [
        ("--listen (config key listen) is required: give the address to accept TLS connections on, e.g. 0.0.0.0:8443", { $0.listen = nil }),
        ("--listen (config key listen): '0.0.0.0:70000' has an invalid port: use 0-65535", { $0.listen = "0.0.0.0:70000" }),
        ("--target (config key target) is required: give the backend to forward to, e.g. 127.0.0.1:6379 or unix:/run/app.sock", { $0.target = nil }),
        ("--target (config key target): '10.0.0.5:6379' is not a loopback address (use --unsafe-target to allow it)", { $0.target = "10.0.0.5:6379" }),
        ("--target (config key target): 'db.internal:5432' is not a loopback address (use --unsafe-target to allow it)", { $0.target = "db.internal:5432" }),
        ("--cert (config key tls.cert) is required: give the server certificate chain (PEM) that clients verify", { $0.cert = nil }),
        ("--cert (config key tls.cert): '/nonexistent/server.pem': no such file", { $0.cert = "/nonexistent/server.pem" }),
        ("--cert (config key tls.cert): '' is empty: give a path, absolute or relative to the working directory", { $0.cert = "" }),
        ("--cert (config key tls.cert): '/tmp': is a directory, not a file", { $0.cert = "/tmp" }),
        ("--key (config key tls.key) is required: give the private key (PEM) for --cert", { $0.key = nil }),
        ("--key (config key tls.key): '/nonexistent/server.key': no such file", { $0.key = "/nonexistent/server.key" }),
        ("--key-passphrase-file (config key tls.key-passphrase-file): '/nonexistent/pass': no such file", { $0.keyPassphraseFile = "/nonexistent/pass" }),
        ("--cacert (config key tls.cacert) is required: server mode verifies every client certificate against it", { $0.cacert = nil }),
        ("--cacert (config key tls.cacert): '/nonexistent/ca.pem': no such file", { $0.cacert = "/nonexistent/ca.pem" }),
        ("--allow-cn (config key policy.rules[1].cn): 'a**b' is not a valid pattern: '**' only spans labels or path segments; use '*' here", { $0.allowCN = ["ok", "a**b"] }),
        ("--allow-ou (config key policy.rules[1].ou): '' is not a valid pattern: the pattern is empty", { $0.allowOU = [""] }),
        ("--allow-dns (config key policy.rules[1].dns): 'a..example.com' is not a valid pattern: it contains an empty label", { $0.allowDNS = ["a..example.com"] }),
        ("--allow-uri (config key policy.rules[1].uri): '*spiffe' is not a valid pattern: the scheme must be literal", { $0.allowURI = ["*spiffe"] }),
        ("--allow-email (config key policy.rules[1].email): 'example.com' is not a valid pattern: an email pattern needs an '@', e.g. '*@example.com'", { $0.allowEmail = ["example.com"] }),
        ("--allow-ip (config key policy.rules[1].ip): '10.0.0.0/33' is not a valid IP address or CIDR range: the prefix length must be 0-32", { $0.allowIP = ["10.0.0.0/33"] }),
        ("--allow-fingerprint (config key policy.rules[1].fingerprint): 'abc' is not a valid fingerprint: expected sha256: followed by 64 hex digits", { $0.allowFingerprint = ["abc"] }),
        ("--cipher-suites (config key tls.cipher-suites): 'TLS_RSA_WITH_AES_128_CBC_SHA' is not a TLS 1.3 cipher suite: use TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_CCM_SHA256, TLS_AES_128_CCM_8_SHA256",
         { $0.cipherSuites = "TLS_RSA_WITH_AES_128_CBC_SHA" }),
        ("--groups (config key tls.groups): 'brainpoolP256r1' is not a supported group: use X25519, X448, P-256, P-384, P-521", { $0.groups = "brainpoolP256r1" }),
        ("--session-ticket-count (config key tls.session-ticket-count): '17' is out of range: use 1 (the default) to 16, or 0 to send none", { $0.sessionTicketCount = "17" }),
        ("--session-ticket-count and --no-session-tickets are mutually exclusive: drop one of them",
         { $0.sessionTicketCount = "2"; $0.sessionTickets = false }),
        ("--session-cache-size (config key session-cache-size): '0' is out of range: use 1-10000000 (to turn resumption off, use --no-session-tickets)", { $0.sessionCacheSize = "0" }),
        ("--allow-spki (config key policy.rules[1].spki): 'sha256:xyz' is not a valid fingerprint: expected sha256: followed by 64 hex digits", { $0.allowSPKI = ["sha256:xyz"] }),
        ("no access rule given: add --allow-cn/--allow-ou/--allow-dns/--allow-uri/… to admit clients, or --allow-all to admit every client whose certificate chains to --cacert",
         { $0.allowCN = [] }),
        ("--allow-all and --allow-cn 'app-1' are mutually exclusive: drop --allow-all to admit only the listed clients", { $0.allowAll = true }),
        ("--allow-all and --allow-uri 'spiffe://x/y' are mutually exclusive: drop --allow-all to admit only the listed clients",
         { $0.allowCN = []; $0.allowURI = ["spiffe://x/y"]; $0.allowAll = true }),
        ("--min-tls (config key tls.min-version): '1.1' is not allowed: use 1.2 or 1.3", { $0.minTLS = "1.1" }),
        ("--min-tls (config key tls.min-version): 'TLSv1.3' is not a TLS version: use 1.2 or 1.3", { $0.minTLS = "TLSv1.3" }),
        ("--handshake-timeout (config key timeouts.handshake): '0' must be greater than zero: use e.g. 10s", { $0.handshakeTimeout = "0" }),
        ("--connect-timeout (config key timeouts.connect): '0s' must be greater than zero: use e.g. 10s", { $0.connectTimeout = "0s" }),
        ("--idle-timeout (config key timeouts.idle): '10 sec' is not a duration: use e.g. 500ms, 10s, 5m, 1h", { $0.idleTimeout = "10 sec" }),
        ("--close-timeout (config key timeouts.close): '-1s' is not a duration: use e.g. 500ms, 10s, 5m, 1h", { $0.closeTimeout = "-1s" }),
        ("--shutdown-timeout (config key shutdown-timeout): '5' is not a duration: use e.g. 500ms, 10s, 5m, 1h", { $0.shutdownTimeout = "5" }),
        ("--max-concurrent-conns (config key max-connections): expected an integer, got 'lots': use 0 (unlimited) or a positive count", { $0.maxConcurrentConns = "lots" }),
        ("--workers (config key workers): '0' is out of range: use 1-256", { $0.workers = "0" }),
        ("--workers (config key workers): '257' is out of range: use 1-256", { $0.workers = "257" }),
        ("--log-format (config key log.format): 'xml' is not a log format: use text or json", { $0.logFormat = "xml" }),
        ("--log-level (config key log.level): 'verbose' is not a log level: use trace, debug, info, notice, warning, error or critical", { $0.logLevel = "verbose" }),
        ("--proxy-protocol (config key proxy-protocol): 'v1' is not a PROXY protocol version: use v2 (send a PROXY v2 header to the target) or off (the default)",
         { $0.proxyProtocol = "v1" }),
        ("--proxy-protocol (config key proxy-protocol): '' is not a PROXY protocol version: use v2 (send a PROXY v2 header to the target) or off (the default)",
         { $0.proxyProtocol = "" }),
        ("--proxy-protocol (config key proxy-protocol): 'on' is not a PROXY protocol version: use v2 (send a PROXY v2 header to the target) or off (the default)",
         { $0.proxyProtocol = "on" }),
    ]

    @Test("each bad flag gets one exact line", arguments: errors)
    func flagError(message: String, edit: Edit) {
        var flags = files.validFlags()
        edit(&flags)
        do {
            _ = try PortcullisConfiguration(flags: flags)
            Issue.record("accepted; expected: \(message)")
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func theFirstProblemInFlagOrderIsReported() {
        var flags = files.validFlags()
        flags.workers = "0"
        flags.idleTimeout = "soon"
        flags.minTLS = "1.0"
        flags.cacert = nil
        flags.target = "10.9.9.9:1"
        #expect(throws: ConfigError(key: "--target", message: "--target (config key target): '10.9.9.9:1' is not a loopback address (use --unsafe-target to allow it)")) {
            try PortcullisConfiguration(flags: flags)
        }
        flags.target = "127.0.0.1:1"
        #expect(throws: ConfigError(key: "--cacert", message: "--cacert (config key tls.cacert) is required: server mode verifies every client certificate against it")) {
            try PortcullisConfiguration(flags: flags)
        }
        flags.cacert = files.ca
        #expect(throws: ConfigError(key: "--min-tls", message: "--min-tls (config key tls.min-version): '1.0' is not allowed: use 1.2 or 1.3")) {
            try PortcullisConfiguration(flags: flags)
        }
        flags.minTLS = nil
        #expect(throws: ConfigError(key: "--idle-timeout", message: "--idle-timeout (config key timeouts.idle): 'soon' is not a duration: use e.g. 500ms, 10s, 5m, 1h")) {
            try PortcullisConfiguration(flags: flags)
        }
    }

    @Test(.enabled(if: getuid() != 0, "root reads every file"))
    func unreadableFileIsPermissionDenied() throws {
        chmod(files.key, 0)
        var flags = files.validFlags()
        flags.key = files.key
        #expect(throws: ConfigError(key: "--key", message: "--key (config key tls.key): '\(files.key)': permission denied")) {
            try PortcullisConfiguration(flags: flags)
        }
    }

    @Test func configErrorsAreOneLineEvenForHostileValues() {
        var flags = files.validFlags()
        flags.target = "evil\n:80"
        #expect(throws: ConfigError(key: "--target", message: "--target (config key target): 'evil\\n:80' has an invalid host: use an IP address or a DNS name")) {
            try PortcullisConfiguration(flags: flags)
        }
    }
}
