import Testing
import Config
import Policy
import Foundation

extension Files {
    /// Client flags that validate: the base every client error test changes one thing in.
    func validClientFlags() -> CommandLineFlags {
        CommandLineFlags(listen: "127.0.0.1:4150", target: "broker-1.internal:4443", cert: cert, key: key, cacert: ca)
    }
}

typealias ClientEdit = @Sendable (inout CommandLineFlags) -> Void

private let fingerprint = "sha256:" + String(repeating: "ab", count: 32)

@Suite("Client mode from flags")
struct ClientFlagsTests {
    let files: Files

    init() throws { files = try Files() }

    private func listener(_ edit: ClientEdit = { _ in }) throws -> ListenerSettings {
        var flags = files.validClientFlags()
        edit(&flags)
        let configuration = try PortcullisConfiguration(clientFlags: flags)
        #expect(configuration.listeners.count == 1)
        return try #require(configuration.listeners.first)
    }

    @Test func defaultsApplyWhenOnlyTheRequiredFlagsAreGiven() throws {
        let configuration = try PortcullisConfiguration(clientFlags: files.validClientFlags())
        #expect(configuration.log == LogSettings(format: .text, level: "info"))
        #expect(configuration.status == nil)
        #expect(configuration.workers == Validate.defaultWorkers)
        #expect(configuration.shutdownTimeoutMs == Timeouts.defaults.shutdown)
        let listener = try #require(configuration.listener(named: "client"))
        #expect(listener == ListenerSettings(
            name: "client", mode: .client, listen: ListenAddress(host: IPAddress("127.0.0.1")!, port: 4150),
            unsafeListen: false, target: .tcp(host: "broker-1.internal", port: 4443), unsafeTarget: false,
            tls: ListenerTLSSettings(certificatePath: files.cert, keyPath: files.key, caPath: files.ca),
            timeouts: .defaults, maxConnections: 0, reauthorize: true, closeAtCertExpiry: false,
            policy: AccessPolicy(rules: [], deny: [], allowAll: true),
            serverName: "broker-1.internal", verifyServerName: true))
    }

    @Test func everyFlagIsCarriedThrough() throws {
        var flags = files.validClientFlags()
        flags.listen = "0.0.0.0:0"
        flags.unsafeListen = true
        flags.target = "[2001:db8::5]:443"
        flags.keyPassphraseFile = files.passphrase
        flags.cacert = files.caDirectory
        flags.verifyURI = ["spiffe://example.org/ns/prod/sa/broker"]
        flags.overrideServerName = "Broker-1.Internal"
        flags.minTLS = "1.2"
        flags.handshakeTimeout = "250ms"
        flags.connectTimeout = "2s"
        flags.idleTimeout = "1m30s"
        flags.closeTimeout = "0"
        flags.shutdownTimeout = "1h"
        flags.maxConcurrentConns = "100"
        flags.workers = "3"
        flags.logFormat = "json"
        flags.logLevel = "debug"
        flags.sessionTickets = false
        let configuration = try PortcullisConfiguration(clientFlags: flags)
        #expect(configuration.log == LogSettings(format: .json, level: "debug"))
        #expect(configuration.workers == 3)
        #expect(configuration.shutdownTimeoutMs == 3_600_000)
        let listener = configuration.listeners[0]
        #expect(listener.listen.description == "0.0.0.0:0")
        #expect(listener.unsafeListen)
        #expect(listener.target == .tcp(host: "2001:db8::5", port: 443))
        #expect(listener.tls == ListenerTLSSettings(
            certificatePath: files.cert, keyPath: files.key, keyPassphrasePath: files.passphrase, caPath: files.caDirectory,
            minimumVersion: .tls12, sessionTickets: false))
        #expect(listener.timeouts == Timeouts(handshake: 250, connect: 2_000, idle: 90_000, close: 0, shutdown: 3_600_000))
        #expect(listener.maxConnections == 100)
        #expect(listener.serverName == "broker-1.internal")
        #expect(!listener.verifyServerName)
        #expect(listener.policy.rules.map(\.name) == ["uri=spiffe://example.org/ns/prod/sa/broker"])
    }

    @Test("loopback listen addresses need no --unsafe-listen", arguments: [
        ("127.0.0.1:4150", "127.0.0.1:4150"), ("localhost:4150", "127.0.0.1:4150"), ("127.9.8.7:1", "127.9.8.7:1"),
        ("[::1]:4150", "[::1]:4150"), ("127.0.0.1:0", "127.0.0.1:0"),
    ])
    func loopbackListen(written: String, expected: String) throws {
        let listener = try listener { $0.listen = written }
        #expect(listener.listen.description == expected)
        #expect(!listener.unsafeListen)
    }

    @Test("--unsafe-listen allows any listen address", arguments: [
        ("0.0.0.0:4150", "0.0.0.0:4150"), (":4150", "0.0.0.0:4150"), ("[::]:4150", "[::]:4150"), ("10.0.0.3:4150", "10.0.0.3:4150"),
    ])
    func unsafeListen(written: String, expected: String) throws {
        let listener = try listener { $0.listen = written; $0.unsafeListen = true }
        #expect(listener.listen.description == expected)
        #expect(listener.unsafeListen)
    }

    /// (target, --verify-dns, --verify-ip, --override-server-name) → (target, serverName, verifyServerName).
    static let serverNames: [(String, [String], [String], String?, TargetAddress, String, Bool)] = [
        ("broker-1.internal:4443", [], [], nil, .tcp(host: "broker-1.internal", port: 4443), "broker-1.internal", true),
        ("Broker-1.Internal:4443", [], [], nil, .tcp(host: "Broker-1.Internal", port: 4443), "broker-1.internal", true),
        ("10.0.0.5:4443", [], [], nil, .tcp(host: "10.0.0.5", port: 4443), "10.0.0.5", true),
        ("[2001:db8:0::0005]:4443", [], [], nil, .tcp(host: "2001:db8::5", port: 4443), "2001:db8::5", true),
        ("localhost:4443", [], [], nil, .tcp(host: "127.0.0.1", port: 4443), "localhost", true),
        ("broker:4443", [], [], nil, .tcp(host: "broker", port: 4443), "broker", true),
        // An IP target takes the first literal --verify-dns name as the server name (SNI cannot carry an address).
        ("10.0.0.5:4443", ["*.internal", "Broker-1.internal", "b2.internal"], [], nil, .tcp(host: "10.0.0.5", port: 4443), "broker-1.internal", false),
        ("10.0.0.5:4443", ["*.internal"], [], nil, .tcp(host: "10.0.0.5", port: 4443), "10.0.0.5", false),
        ("10.0.0.5:4443", [], ["10.0.0.5"], nil, .tcp(host: "10.0.0.5", port: 4443), "10.0.0.5", false),
        // A DNS target keeps its own name.
        ("lb.internal:4443", ["broker-1.internal"], [], nil, .tcp(host: "lb.internal", port: 4443), "lb.internal", false),
        ("lb.internal:4443", [], ["10.0.0.5"], nil, .tcp(host: "lb.internal", port: 4443), "lb.internal", false),
        // --override-server-name wins over everything.
        ("10.0.0.5:4443", ["broker-1.internal"], [], "broker.example.org", .tcp(host: "10.0.0.5", port: 4443), "broker.example.org", false),
        ("broker-1.internal:4443", [], [], "BROKER.example.org", .tcp(host: "broker-1.internal", port: 4443), "broker.example.org", true),
        ("broker-1.internal:4443", [], [], "2001:DB8::1", .tcp(host: "broker-1.internal", port: 4443), "2001:db8::1", true),
        ("broker-1.internal:4443", [], [], "10.0.0.9", .tcp(host: "broker-1.internal", port: 4443), "10.0.0.9", true),
    ]

    @Test("the server name defaults to the target's host", arguments: serverNames)
    func serverName(
        target: String, dns: [String], ip: [String], override: String?,
        expectedTarget: TargetAddress, expectedName: String, verifyName: Bool
    ) throws {
        let listener = try listener {
            $0.target = target
            $0.verifyDNS = dns
            $0.verifyIP = ip
            $0.overrideServerName = override
        }
        #expect(listener.target == expectedTarget)
        #expect(listener.serverName == expectedName)
        #expect(listener.verifyServerName == verifyName)
    }

    @Test func eachVerifyValueBecomesOneRuleInFlagOrderAndReplacesTheNameCheck() throws {
        let listener = try listener {
            $0.verifyCN = ["broker-1", "broker-2"]
            $0.verifyOU = ["brokers"]
            $0.verifyDNS = ["*.brokers.internal"]
            $0.verifyURI = ["spiffe://example.org/ns/prod/sa/broker"]
            $0.verifyIP = ["10.0.0.0/8"]
            $0.verifyFingerprint = ["SHA256:" + String(repeating: "AB", count: 32)]
            $0.verifySPKI = ["sha256:" + String(repeating: "cd", count: 32)]
        }
        #expect(listener.policy.rules.map(\.name) == [
            "cn=broker-1", "cn=broker-2", "ou=brokers", "dns=*.brokers.internal", "uri=spiffe://example.org/ns/prod/sa/broker",
            "ip=10.0.0.0/8", "fingerprint=" + fingerprint, "spki=sha256:" + String(repeating: "cd", count: 32),
        ])
        #expect(!listener.policy.allowAll)
        #expect(listener.policy.deny.isEmpty)
        #expect(!listener.verifyServerName)
        #expect(listener.serverName == "broker-1.internal")
        let server = PeerIdentity(subject: DistinguishedName([.init(type: "CN", value: "other")]), uris: ["spiffe://example.org/ns/prod/sa/broker"])
        #expect(listener.policy.evaluate(server).description
            == "allowed by rule 'uri=spiffe://example.org/ns/prod/sa/broker' (uri=spiffe://example.org/ns/prod/sa/broker)")
    }

    static let errors: [(String, ClientEdit)] = [
        ("--listen (config key listen) is required: give the local address to accept plaintext connections on, e.g. 127.0.0.1:4150", { $0.listen = nil }),
        ("--listen (config key listen): '0.0.0.0:4150' is not a loopback address (use --unsafe-listen to allow it)", { $0.listen = "0.0.0.0:4150" }),
        ("--listen (config key listen): ':4150' is not a loopback address (use --unsafe-listen to allow it)", { $0.listen = ":4150" }),
        ("--listen (config key listen): '[::]:4150' is not a loopback address (use --unsafe-listen to allow it)", { $0.listen = "[::]:4150" }),
        ("--listen (config key listen): '10.0.0.3:4150' is not a loopback address (use --unsafe-listen to allow it)", { $0.listen = "10.0.0.3:4150" }),
        ("--listen (config key listen): 'app.internal:4150' does not name an IP address: use an IP address, localhost, or :PORT for all interfaces",
         { $0.listen = "app.internal:4150" }),
        ("--listen (config key listen): '127.0.0.1:70000' has an invalid port: use 0-65535", { $0.listen = "127.0.0.1:70000"; $0.unsafeListen = true }),
        ("--target (config key target) is required: give the remote TLS server to connect to, e.g. broker-1.internal:4443", { $0.target = nil }),
        ("--target (config key target): 'unix:/run/app.sock' is a Unix socket: client mode connects to a remote TLS server; use HOST:PORT, e.g. broker-1.internal:4443",
         { $0.target = "unix:/run/app.sock" }),
        ("--target (config key target): 'broker-1.internal' has no port: use HOST:PORT, e.g. broker-1.internal:4443", { $0.target = "broker-1.internal" }),
        ("--target (config key target): 'broker-1.internal:0' has an invalid port: use 1-65535", { $0.target = "broker-1.internal:0" }),
        ("--target (config key target): ':4443' has no host: use e.g. broker-1.internal:4443", { $0.target = ":4443" }),
        ("--target (config key target): 'broker_1:4443' has an invalid host: use an IP address or a DNS name", { $0.target = "broker_1:4443" }),
        ("--target (config key target): '::1:4443' is ambiguous: put an IPv6 address in brackets, e.g. [::1]:8443", { $0.target = "::1:4443" }),
        ("--cert (config key tls.cert) is required: give the client certificate chain (PEM) that the server verifies", { $0.cert = nil }),
        ("--cert (config key tls.cert): '/nonexistent/client.pem': no such file", { $0.cert = "/nonexistent/client.pem" }),
        ("--key (config key tls.key) is required: give the private key (PEM) for --cert", { $0.key = nil }),
        ("--key (config key tls.key): '/nonexistent/client.key': no such file", { $0.key = "/nonexistent/client.key" }),
        ("--key-passphrase-file (config key tls.key-passphrase-file): '/nonexistent/pass': no such file", { $0.keyPassphraseFile = "/nonexistent/pass" }),
        ("--cacert (config key tls.cacert): '/nonexistent/ca.pem': no such file", { $0.cacert = "/nonexistent/ca.pem" }),
        ("--verify-cn (config key policy.rules[1].cn): 'a**b' is not a valid pattern: '**' only spans labels or path segments; use '*' here", { $0.verifyCN = ["ok", "a**b"] }),
        ("--verify-ou (config key policy.rules[0].ou): '' is not a valid pattern: the pattern is empty", { $0.verifyOU = [""] }),
        ("--verify-dns (config key policy.rules[0].dns): 'a..example.com' is not a valid pattern: it contains an empty label", { $0.verifyDNS = ["a..example.com"] }),
        ("--verify-uri (config key policy.rules[0].uri): '*spiffe' is not a valid pattern: the scheme must be literal", { $0.verifyURI = ["*spiffe"] }),
        ("--verify-ip (config key policy.rules[0].ip): '10.0.0.0/33' is not a valid IP address or CIDR range: the prefix length must be 0-32", { $0.verifyIP = ["10.0.0.0/33"] }),
        ("--verify-fingerprint (config key policy.rules[0].fingerprint): 'abc' is not a valid fingerprint: expected sha256: followed by 64 hex digits", { $0.verifyFingerprint = ["abc"] }),
        ("--verify-spki (config key policy.rules[0].spki): 'sha256:xyz' is not a valid fingerprint: expected sha256: followed by 64 hex digits", { $0.verifySPKI = ["sha256:xyz"] }),
        ("--override-server-name (config key tls.server-name): 'broker_1' is not a DNS name or IP address: use the name in the server's certificate, e.g. broker-1.internal",
         { $0.overrideServerName = "broker_1" }),
        ("--override-server-name (config key tls.server-name): '*.internal' is not a DNS name or IP address: use the name in the server's certificate, e.g. broker-1.internal",
         { $0.overrideServerName = "*.internal" }),
        ("--override-server-name (config key tls.server-name): '' is not a DNS name or IP address: use the name in the server's certificate, e.g. broker-1.internal",
         { $0.overrideServerName = "" }),
        ("--override-server-name (config key tls.server-name): '[::1]' is not a DNS name or IP address: use the name in the server's certificate, e.g. broker-1.internal",
         { $0.overrideServerName = "[::1]" }),
        ("--override-server-name (config key tls.server-name): 'broker-1.internal:4443' is not a DNS name or IP address: use the name in the server's certificate, e.g. broker-1.internal",
         { $0.overrideServerName = "broker-1.internal:4443" }),
        ("--min-tls (config key tls.min-version): '1.1' is not allowed: use 1.2 or 1.3", { $0.minTLS = "1.1" }),
        ("--handshake-timeout (config key timeouts.handshake): '0' must be greater than zero: use e.g. 10s", { $0.handshakeTimeout = "0" }),
        ("--connect-timeout (config key timeouts.connect): '0s' must be greater than zero: use e.g. 10s", { $0.connectTimeout = "0s" }),
        ("--idle-timeout (config key timeouts.idle): '10 sec' is not a duration: use e.g. 500ms, 10s, 5m, 1h", { $0.idleTimeout = "10 sec" }),
        ("--close-timeout (config key timeouts.close): '-1s' is not a duration: use e.g. 500ms, 10s, 5m, 1h", { $0.closeTimeout = "-1s" }),
        ("--shutdown-timeout (config key shutdown-timeout): '5' is not a duration: use e.g. 500ms, 10s, 5m, 1h", { $0.shutdownTimeout = "5" }),
        ("--max-concurrent-conns (config key max-connections): expected an integer, got 'lots': use 0 (unlimited) or a positive count", { $0.maxConcurrentConns = "lots" }),
        ("--workers (config key workers): '0' is out of range: use 1-256", { $0.workers = "0" }),
        ("--log-format (config key log.format): 'xml' is not a log format: use text or json", { $0.logFormat = "xml" }),
        ("--log-level (config key log.level): 'verbose' is not a log level: use trace, debug, info, notice, warning, error or critical", { $0.logLevel = "verbose" }),
    ]

    @Test("each bad client flag gets one exact line", arguments: errors)
    func flagError(message: String, edit: ClientEdit) {
        var flags = files.validClientFlags()
        edit(&flags)
        do {
            _ = try PortcullisConfiguration(clientFlags: flags)
            Issue.record("accepted; expected: \(message)")
        } catch {
            #expect(error.description == message)
            #expect(error.key.map { message.hasPrefix($0 + " ") } == true, "the key names the flag")
        }
    }

    @Test func theFirstProblemInFlagOrderIsReported() {
        var flags = files.validClientFlags()
        flags.logLevel = "loud"
        flags.idleTimeout = "soon"
        flags.overrideServerName = "a b"
        flags.verifySPKI = ["x"]
        flags.verifyCN = ["a**"]
        flags.cacert = "/nonexistent/ca.pem"
        flags.target = "unix:/x.sock"
        flags.listen = ":4150"
        let expected: [(String, String, ClientEdit)] = [
            ("--listen", "--listen (config key listen): ':4150' is not a loopback address (use --unsafe-listen to allow it)", { $0.listen = "127.0.0.1:4150" }),
            ("--target", "--target (config key target): 'unix:/x.sock' is a Unix socket: client mode connects to a remote TLS server; use HOST:PORT, e.g. broker-1.internal:4443",
             { $0.target = "b:1" }),
            ("--cacert", "--cacert (config key tls.cacert): '/nonexistent/ca.pem': no such file", { [ca = files.ca] in $0.cacert = ca }),
            ("--verify-cn", "--verify-cn (config key policy.rules[0].cn): 'a**' is not a valid pattern: '**' only spans labels or path segments; use '*' here", { $0.verifyCN = [] }),
            ("--verify-spki", "--verify-spki (config key policy.rules[0].spki): 'x' is not a valid fingerprint: expected sha256: followed by 64 hex digits", { $0.verifySPKI = [] }),
            ("--override-server-name", "--override-server-name (config key tls.server-name): 'a b' is not a DNS name or IP address: use the name in the server's certificate, e.g. broker-1.internal",
             { $0.overrideServerName = nil }),
            ("--idle-timeout", "--idle-timeout (config key timeouts.idle): 'soon' is not a duration: use e.g. 500ms, 10s, 5m, 1h", { $0.idleTimeout = nil }),
            ("--log-level", "--log-level (config key log.level): 'loud' is not a log level: use trace, debug, info, notice, warning, error or critical", { $0.logLevel = nil }),
        ]
        for (key, message, fix) in expected {
            #expect(throws: ConfigError(key: key, message: message)) { try PortcullisConfiguration(clientFlags: flags) }
            fix(&flags)
        }
        #expect(throws: Never.self) { try PortcullisConfiguration(clientFlags: flags) }
    }

    @Test func flagPathsBecomeAbsolute() throws {
        let listener = try listener { $0.cert = "/" + $0.cert!.split(separator: "/").joined(separator: "/./") }
        #expect(listener.tls.certificatePath == files.cert)
        #expect(listener.tls.caPath == files.ca)
    }

    @Test func serverFlagsKeepServerModeValues() throws {
        let listener = try PortcullisConfiguration(flags: files.validFlags()).listeners[0]
        #expect(listener.mode == .server)
        #expect(listener.serverName == nil)
        #expect(!listener.verifyServerName)
        #expect(!listener.unsafeListen)
    }

    @Test func theFlagsConfigurationDescribesItself() throws {
        let text = try PortcullisConfiguration(clientFlags: files.validClientFlags()).effectiveDescription()
        for line in [
            "  - name: client\n    mode: client\n    listen: 127.0.0.1:4150\n    unsafe-listen: false\n    target: broker-1.internal:4443\n    tls:\n",
            "      cacert: \(files.ca)\n      server-name: broker-1.internal\n      crl: none\n",
            "    policy:\n      allow-all: true\n      verify-server-name: true (the server's certificate must carry broker-1.internal)\n      deny: none\n      rules: none\n",
        ] {
            #expect(text.contains(line), "missing: \(line)")
        }
        #expect(!text.contains("unsafe-target"))
        #expect(!text.contains("proxy-protocol"))
    }
}

// MARK: - Configuration file

/// A small valid client listener; the error table edits one thing in it. Line numbers as in the file:
private let clientLines = [
    "listeners:",                          // 1
    "  - name: nsqd",                      // 2
    "    mode: client",                    // 3
    "    listen: 127.0.0.1:4150",          // 4
    "    target: broker-1.internal:4443",  // 5
    "    tls:",                            // 6
    "      cert: client.pem",              // 7
    "      key: client.key",               // 8
    "      cacert: servers-ca.pem",        // 9
]

/// The same server listener as the server-mode tests' base file.
private let serverLines = [
    "listeners:",                          // 1
    "  - name: valkey",                    // 2
    "    listen: 0.0.0.0:6380",            // 3
    "    target: 127.0.0.1:6379",          // 4
    "    tls:",                            // 5
    "      cert: server.pem",              // 6
    "      key: server.key",               // 7
    "      cacert: ca.pem",                // 8
    "    policy:",                         // 9
    "      rules:",                        // 10
    "        - {name: ops, cn: \"ops-*\"}", // 11
]

private func set(_ n: Int, _ text: String) -> LinesEdit { { $0[n - 1] = text } }
private func insert(after n: Int, _ text: String) -> LinesEdit { { $0.insert(text, at: n) } }
private func remove(_ range: ClosedRange<Int>) -> LinesEdit { { $0.removeSubrange((range.lowerBound - 1)...(range.upperBound - 1)) } }
private func append(_ text: String) -> LinesEdit { { $0.append(text) } }
private func combine(_ edits: LinesEdit...) -> LinesEdit { { lines in for edit in edits { edit(&lines) } } }

private func parse(_ yaml: String, source: String = "/etc/portcullis/portcullis.yaml") throws(ConfigError) -> PortcullisConfiguration {
    try PortcullisConfiguration.parse(yaml: yaml, source: source, checkFiles: false)
}

private func problem(_ yaml: String) -> String? {
    do {
        _ = try PortcullisConfiguration.parse(yaml: yaml, source: "portcullis.yaml", checkFiles: false)
        return nil
    } catch {
        return error.description
    }
}

private let allKinds = Matcher.Kind.allCases.map(\.rawValue).joined(separator: ", ")
private let notAName = "is not a DNS name or IP address: use the name in the server's certificate, e.g. broker-1.internal"

@Suite("Client mode in the configuration file")
struct ClientFileTests {
    let files: Files

    init() throws { files = try Files() }

    static let clientErrors: [(LinesEdit, String)] = [
        // Listen and target.
        (set(4, "    listen: 0.0.0.0:4150"), "portcullis.yaml:4: listeners[0].listen: '0.0.0.0:4150' is not a loopback address (set unsafe-listen: true to allow it)"),
        (set(4, "    listen: \":4150\""), "portcullis.yaml:4: listeners[0].listen: ':4150' is not a loopback address (set unsafe-listen: true to allow it)"),
        (combine(set(4, "    listen: 10.0.0.3:4150"), insert(after: 4, "    unsafe-listen: false")),
         "portcullis.yaml:4: listeners[0].listen: '10.0.0.3:4150' is not a loopback address (set unsafe-listen: true to allow it)"),
        (combine(set(4, "    listen: 10.0.0.3:4150"), insert(after: 4, "    unsafe-listen: yes")),
         "portcullis.yaml:5: listeners[0].unsafe-listen: expected true or false, got 'yes'"),
        (remove(4...4), "portcullis.yaml:2: listeners[0]: missing required key 'listen': give the local address to accept plaintext connections on, e.g. 127.0.0.1:4150"),
        (remove(5...5), "portcullis.yaml:2: listeners[0]: missing required key 'target': give the remote TLS server to connect to, e.g. broker-1.internal:4443"),
        (set(5, "    target: unix:/run/broker.sock"),
         "portcullis.yaml:5: listeners[0].target: 'unix:/run/broker.sock' is a Unix socket: client mode connects to a remote TLS server; use HOST:PORT, e.g. broker-1.internal:4443"),
        (set(5, "    target: broker-1.internal"), "portcullis.yaml:5: listeners[0].target: 'broker-1.internal' has no port: use HOST:PORT, e.g. broker-1.internal:4443"),
        (set(5, "    target: broker-1.internal:65536"), "portcullis.yaml:5: listeners[0].target: 'broker-1.internal:65536' has an invalid port: use 1-65535"),
        (insert(after: 5, "    unsafe-target: true"),
         "portcullis.yaml:6: listeners[0].unsafe-target: applies to server mode only: in client mode the target is the remote TLS server and may be any address; remove it"),
        (insert(after: 5, "    unsafe-target: false"),
         "portcullis.yaml:6: listeners[0].unsafe-target: applies to server mode only: in client mode the target is the remote TLS server and may be any address; remove it"),

        // TLS.
        (remove(7...7), "portcullis.yaml:7: listeners[0].tls: missing required key 'cert': give the client certificate chain (PEM) that the server verifies"),
        (remove(8...8), "portcullis.yaml:7: listeners[0].tls: missing required key 'key': give the private key (PEM) for cert"),
        (append("      server-name: broker_1"), "portcullis.yaml:10: listeners[0].tls.server-name: 'broker_1' \(notAName)"),
        (append("      server-name: \"*.internal\""), "portcullis.yaml:10: listeners[0].tls.server-name: '*.internal' \(notAName)"),
        (append("      server-name: \"\""), "portcullis.yaml:10: listeners[0].tls.server-name: '' \(notAName)"),
        (append("      server-name: [a, b]"), "portcullis.yaml:10: listeners[0].tls.server-name: expected a string, got a list"),
        (append("      sni: broker"), "portcullis.yaml:10: listeners[0].tls.sni: unknown key (did you mean 'server-name'?)"),
        (append("      servername: broker"), "portcullis.yaml:10: listeners[0].tls.servername: unknown key (did you mean 'server-name'?)"),
        (append("      verify-server-name: true"), "portcullis.yaml:10: listeners[0].tls.verify-server-name: unknown key (it belongs under 'policy')"),
        (append("      crl-scope: all"),
         "portcullis.yaml:10: listeners[0].tls.crl-scope: 'all' is not a CRL scope: use chain (every certificate of the chain) or leaf (the server certificate only)"),

        // Keys in the wrong place.
        (append("    override-server-name: broker"), "portcullis.yaml:10: listeners[0].override-server-name: unknown key (use tls.server-name)"),
        (append("    server-name: broker"), "portcullis.yaml:10: listeners[0].server-name: unknown key (it belongs under 'tls')"),
        (append("    verify-server-name: false"), "portcullis.yaml:10: listeners[0].verify-server-name: unknown key (it belongs under 'policy')"),
        (append("    verify-dns: broker"), "portcullis.yaml:10: listeners[0].verify-dns: unknown key (write a rule under 'policy.rules', e.g. {name: broker, dns: …})"),
        (append("    policy: {verify-dns: broker}"), "portcullis.yaml:10: listeners[0].policy.verify-dns: unknown key (write a rule: rules: [{name: …, dns: …}])"),
        (append("    policy: {server-name: broker}"), "portcullis.yaml:10: listeners[0].policy.server-name: unknown key (it belongs under 'tls')"),
        (append("    policy: {verify-servername: true}"), "portcullis.yaml:10: listeners[0].policy.verify-servername: unknown key (did you mean 'verify-server-name'?)"),
        (insert(after: 0, "unsafe-listen: true"), "portcullis.yaml:1: unsafe-listen: unknown key (use status.unsafe-listen, or set it on a client-mode listener)"),

        // Mode.
        (set(3, "    mode: clients"), "portcullis.yaml:3: listeners[0].mode: 'clients' is not a mode: use server or client"),

        // Policy.
        (append("    policy: {verify-server-name: false}"),
         "portcullis.yaml:10: listeners[0].policy.verify-server-name: false without rules accepts every server whose certificate chains to tls.cacert: add rules, or set allow-all: true as well to mean it"),
        (append("    policy: {verify-server-name: false, rules: []}"),
         "portcullis.yaml:10: listeners[0].policy.verify-server-name: false without rules accepts every server whose certificate chains to tls.cacert: add rules, or set allow-all: true as well to mean it"),
        (append("    policy: {verify-server-name: maybe}"), "portcullis.yaml:10: listeners[0].policy.verify-server-name: expected true or false, got 'maybe'"),
        (append("    policy: {allow-all: true, rules: [{name: b, dns: b.internal}]}"),
         "portcullis.yaml:10: listeners[0].policy.allow-all: allow-all: true and rules are mutually exclusive: drop allow-all to accept only the servers that match a rule"),
        (append("    policy: {rules: [{name: b}]}"),
         "portcullis.yaml:10: listeners[0].policy.rules[0]: rule 'b' has no matchers: give at least one of \(allKinds), or remove the rule to verify only the server name"),
        (append("    policy: {rules: [{name: b, spiffe: \"https://x\"}]}"),
         "portcullis.yaml:10: listeners[0].policy.rules[0].spiffe: 'https://x' is not a valid pattern: a SPIFFE ID starts with spiffe://"),
        (append("    policy: {rules: [{dns: b.internal}]}"),
         "portcullis.yaml:10: listeners[0].policy.rules[0]: missing required key 'name': name the rule; decisions and the audit log cite it"),
    ]

    @Test("each client-mode problem is one exact line", arguments: clientErrors)
    func clientError(edit: LinesEdit, message: String) {
        var lines = clientLines
        edit(&lines)
        #expect(problem(lines.joined(separator: "\n") + "\n") == message)
    }

    static let serverErrors: [(LinesEdit, String)] = [
        (insert(after: 3, "    unsafe-listen: true"),
         "portcullis.yaml:4: listeners[0].unsafe-listen: applies to client mode only: a server-mode listener accepts TLS on any address; remove it"),
        (insert(after: 3, "    unsafe-listen: false"),
         "portcullis.yaml:4: listeners[0].unsafe-listen: applies to client mode only: a server-mode listener accepts TLS on any address; remove it"),
        (combine(insert(after: 2, "    mode: server"), insert(after: 4, "    unsafe-listen: true")),
         "portcullis.yaml:5: listeners[0].unsafe-listen: applies to client mode only: a server-mode listener accepts TLS on any address; remove it"),
        (insert(after: 8, "      server-name: valkey.internal"),
         "portcullis.yaml:9: listeners[0].tls.server-name: applies to client mode only: it is the name a client-mode listener expects from the server; remove it"),
        (insert(after: 9, "      verify-server-name: true"),
         "portcullis.yaml:10: listeners[0].policy.verify-server-name: applies to client mode only: a server-mode listener judges clients by its rules; remove it"),
        (insert(after: 4, "    verify-cn: app"), "portcullis.yaml:5: listeners[0].verify-cn: unknown key (write a rule under 'policy.rules', e.g. {name: broker, cn: …})"),
    ]

    @Test("client-only keys in a server listener are one exact line", arguments: serverErrors)
    func serverError(edit: LinesEdit, message: String) {
        var lines = serverLines
        edit(&lines)
        #expect(problem(lines.joined(separator: "\n") + "\n") == message)
    }

    @Test func theClientBaseFileIsValidWithDefaults() throws {
        let configuration = try parse(clientLines.joined(separator: "\n"))
        let listener = try #require(configuration.listener(named: "nsqd"))
        #expect(listener == ListenerSettings(
            name: "nsqd", mode: .client, listen: ListenAddress(host: IPAddress("127.0.0.1")!, port: 4150), unsafeListen: false,
            target: .tcp(host: "broker-1.internal", port: 4443), unsafeTarget: false,
            tls: ListenerTLSSettings(
                certificatePath: "/etc/portcullis/client.pem", keyPath: "/etc/portcullis/client.key",
                caPath: "/etc/portcullis/servers-ca.pem"),
            timeouts: .defaults, policy: AccessPolicy(rules: [], deny: [], allowAll: true),
            serverName: "broker-1.internal", verifyServerName: true))
    }

    @Test func everyClientKeyIsCarriedThrough() throws {
        let yaml = """
            listeners:
              - name: broker
                mode: client
                listen: 0.0.0.0:4150
                unsafe-listen: true
                target: 10.0.0.21:4443
                tls:
                  cert: client.pem
                  key: client.key
                  key-passphrase-file: pass.txt
                  cacert: servers-ca.pem
                  server-name: Broker-1.Internal
                  crl: servers.crl
                  crl-scope: leaf
                  crl-expired: warn
                  min-version: 1.2
                  cipher-suites: TLS_AES_256_GCM_SHA384
                  groups: X25519
                  session-tickets: false
                timeouts: {handshake: 1s, connect: 2s, idle: 3s, close: 4s}
                max-connections: 7
                reauthorize: false
                close-at-cert-expiry: true
                policy:
                  verify-server-name: true
                  deny: [{name: old, serial: "0a"}]
                  rules: [{name: brokers, spiffe: "spiffe://example.org/ns/prod/sa/broker"}]
            """
        let listener = try parse(yaml, source: "/srv/p.yaml").listeners[0]
        #expect(listener.mode == .client)
        #expect(listener.listen.description == "0.0.0.0:4150")
        #expect(listener.unsafeListen)
        #expect(listener.target == .tcp(host: "10.0.0.21", port: 4443))
        #expect(!listener.unsafeTarget)
        #expect(listener.tls == ListenerTLSSettings(
            certificatePath: "/srv/client.pem", keyPath: "/srv/client.key", keyPassphrasePath: "/srv/pass.txt",
            caPath: "/srv/servers-ca.pem", crlPaths: ["/srv/servers.crl"], crlScope: .leaf, crlExpired: .warn,
            minimumVersion: .tls12, cipherSuites: "TLS_AES_256_GCM_SHA384", groups: "X25519", sessionTickets: false))
        #expect(listener.serverName == "broker-1.internal")
        #expect(listener.timeouts == Timeouts(handshake: 1_000, connect: 2_000, idle: 3_000, close: 4_000, shutdown: 300_000))
        #expect(listener.maxConnections == 7)
        #expect(!listener.reauthorize)
        #expect(listener.closeAtCertExpiry)
        #expect(listener.verifyServerName)
        #expect(listener.policy.rules.map(\.description) == ["'brokers' (spiffe=spiffe://example.org/ns/prod/sa/broker)"])
        #expect(listener.policy.deny.map(\.name) == ["old"])
        #expect(!listener.policy.allowAll)
    }

    /// (the policy as written, or nil for none) → (allow-all, rule names, deny names, verify-server-name).
    static let policies: [(String?, Bool, [String], [String], Bool)] = [
        (nil, true, [], [], true),
        ("policy:", true, [], [], true),
        ("policy: {}", true, [], [], true),
        ("policy: {rules: []}", true, [], [], true),
        ("policy: {allow-all: true}", true, [], [], true),
        ("policy: {allow-all: false}", true, [], [], true),
        ("policy: {verify-server-name: true}", true, [], [], true),
        ("policy: {allow-all: true, verify-server-name: false}", true, [], [], false),
        ("policy: {deny: [{cn: old-broker}]}", true, [], ["cn=old-broker"], true),
        ("policy: {rules: [{name: b, dns: broker-1.internal}]}", false, ["b"], [], false),
        ("policy: {rules: [{name: b, uri: \"spiffe://example.org/*\"}], verify-server-name: false}", false, ["b"], [], false),
        ("policy: {rules: [{name: b, ou: brokers}], verify-server-name: true}", false, ["b"], [], true),
    ]

    @Test("policy in client mode is optional and decides the name check", arguments: policies)
    func clientPolicy(written: String?, allowAll: Bool, rules: [String], deny: [String], verify: Bool) throws {
        var lines = clientLines
        if let written { lines.append("    " + written) }
        let listener = try parse(lines.joined(separator: "\n")).listeners[0]
        #expect(listener.policy.allowAll == allowAll)
        #expect(listener.policy.rules.map(\.name) == rules)
        #expect(listener.policy.deny.map(\.name) == deny)
        #expect(listener.verifyServerName == verify)
        #expect(listener.serverName == "broker-1.internal")
    }

    /// (target, server-name as written or nil, rules) → the server name.
    static let serverNames: [(String, String?, String, String)] = [
        ("broker-1.internal:4443", nil, "[]", "broker-1.internal"),
        ("BROKER-1.internal:4443", nil, "[]", "broker-1.internal"),
        ("localhost:4443", nil, "[]", "localhost"),
        ("10.0.0.21:4443", nil, "[]", "10.0.0.21"),
        ("\"[fd00::0021]:4443\"", nil, "[]", "fd00::21"),
        ("10.0.0.21:4443", nil, "[{name: a, cn: x}, {name: b, dns: \"*.internal\"}, {name: c, ou: y, dns: Nsqd-1.internal}]", "nsqd-1.internal"),
        ("lb.internal:4443", nil, "[{name: c, dns: nsqd-1.internal}]", "lb.internal"),
        ("10.0.0.21:4443", "nsqd-1.example.org", "[{name: c, dns: nsqd-1.internal}]", "nsqd-1.example.org"),
        ("broker-1.internal:4443", "10.0.0.21", "[]", "10.0.0.21"),
        ("broker-1.internal:4443", "\"::ffff:10.0.0.21\"", "[]", "::ffff:10.0.0.21"),
    ]

    @Test("tls.server-name, or else the target's host", arguments: serverNames)
    func serverName(target: String, written: String?, rules: String, expected: String) throws {
        var lines = clientLines
        lines[4] = "    target: \(target)"
        if let written { lines.append("      server-name: \(written)") }
        lines.append("    policy: {rules: \(rules)}")
        #expect(try parse(lines.joined(separator: "\n")).listeners[0].serverName == expected)
    }

    @Test func serverAndClientListenersLiveInOneFile() throws {
        let yaml = """
            status: {listen: 127.0.0.1:9100}
            x-tls: &tls {cert: node.pem, key: node.key, cacert: mesh-ca.pem}
            listeners:
              - name: valkey-in
                listen: 0.0.0.0:6380
                target: 127.0.0.1:6379
                tls: *tls
                policy: {rules: [{name: apps, ou: apps}]}
              - name: valkey-out
                mode: client
                listen: 127.0.0.1:16379
                target: valkey-2.internal:6380
                tls: *tls
              - name: nsq-out
                mode: client
                listen: localhost:4150
                target: 10.0.0.21:4150
                tls: {<<: *tls, server-name: nsqd-1.internal}
                policy: {rules: [{name: nsqd, ou: nsqd}]}
            """
        let configuration = try parse(yaml)
        #expect(configuration.listeners.map(\.mode) == [.server, .client, .client])
        #expect(configuration.listeners.map(\.serverName) == [nil, "valkey-2.internal", "nsqd-1.internal"])
        #expect(configuration.listeners.map(\.verifyServerName) == [false, true, false])
        #expect(configuration.listeners.map(\.unsafeListen) == [false, false, false])
        #expect(configuration.listeners.map(\.listen.description) == ["0.0.0.0:6380", "127.0.0.1:16379", "127.0.0.1:4150"])
        #expect(configuration.listeners.map(\.tls.caPath) == Array(repeating: "/etc/portcullis/mesh-ca.pem", count: 3))
    }

    @Test func listenersOfBothModesShareOneAddressSpace() {
        let yaml = """
            listeners:
              - {name: in, listen: "0.0.0.0:6380", target: "127.0.0.1:6379", tls: {cert: c, key: k, cacert: ca}, policy: {allow-all: true}}
              - {name: out, mode: client, listen: "127.0.0.1:6380", target: "b.internal:6380", tls: {cert: c, key: k, cacert: ca}}
            """
        #expect(problem(yaml) == "portcullis.yaml:3: listeners[1].listen: '127.0.0.1:6380' overlaps listener 'in' on '0.0.0.0:6380' (line 2): a wildcard address takes the port on every interface; use another port")
    }

    // MARK: Flags and files

    @Test func theSameClientFromFlagsAndFromAFileIsEqual() throws {
        let fromFlags = try PortcullisConfiguration(clientFlags: files.validClientFlags())
        let yaml = """
            listeners:
              - name: client
                mode: client
                listen: 127.0.0.1:4150
                target: broker-1.internal:4443
                tls: {cert: \(files.cert), key: \(files.key), cacert: \(files.ca)}
            """
        let fromFile = try PortcullisConfiguration.parse(yaml: yaml, source: files.directory + "/p.yaml")
        #expect(fromFile == fromFlags)
    }

    @Test func everyClientFlagHasAnEquivalentKey() throws {
        var flags = files.validClientFlags()
        flags.listen = ":4150"
        flags.unsafeListen = true
        flags.target = "10.0.0.21:4443"
        flags.keyPassphraseFile = files.passphrase
        flags.cacert = files.caDirectory
        flags.verifyCN = ["broker-*"]
        flags.verifyOU = ["brokers"]
        flags.verifyDNS = ["*.internal", "broker-1.internal"]
        flags.verifyURI = ["spiffe://example.org/ns/prod/sa/broker"]
        flags.verifyIP = ["10.0.0.0/8"]
        flags.verifyFingerprint = [fingerprint]
        flags.verifySPKI = [fingerprint]
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
        let yaml = """
            log: {format: json, level: debug}
            workers: 3
            shutdown-timeout: 1h
            listeners:
              - name: client
                mode: client
                listen: ":4150"
                unsafe-listen: true
                target: 10.0.0.21:4443
                tls:
                  cert: \(files.cert)
                  key: \(files.key)
                  key-passphrase-file: \(files.passphrase)
                  cacert: \(files.caDirectory)
                  min-version: 1.2
                  session-tickets: false
                timeouts: {handshake: 250ms, connect: 2s, idle: 1m30s, close: 0}
                max-connections: 10000
                policy:
                  rules:
                    - {name: cn=broker-*, cn: broker-*}
                    - {name: ou=brokers, ou: brokers}
                    - {name: dns=*.internal, dns: "*.internal"}
                    - {name: dns=broker-1.internal, dns: broker-1.internal}
                    - {name: uri=spiffe://example.org/ns/prod/sa/broker, uri: "spiffe://example.org/ns/prod/sa/broker"}
                    - {name: ip=10.0.0.0/8, ip: 10.0.0.0/8}
                    - {name: "fingerprint=\(fingerprint)", fingerprint: "\(fingerprint)"}
                    - {name: "spki=\(fingerprint)", spki: "\(fingerprint)"}
            """
        let fromFile = try PortcullisConfiguration.parse(yaml: yaml, source: files.directory + "/p.yaml")
        let fromFlags = try PortcullisConfiguration(clientFlags: flags)
        #expect(fromFile == fromFlags)
        #expect(fromFile.listeners[0].serverName == "broker-1.internal")
        #expect(!fromFile.listeners[0].verifyServerName)

        flags.overrideServerName = "broker.example.org"
        let withName = yaml.replacingOccurrences(of: "      session-tickets: false", with: "      session-tickets: false\n      server-name: broker.example.org")
        #expect(try PortcullisConfiguration.parse(yaml: withName, source: files.directory + "/p.yaml")
            == (try PortcullisConfiguration(clientFlags: flags)))
    }

    // MARK: Effective configuration

    private func mixedConfiguration() throws -> PortcullisConfiguration {
        let yaml = """
            listeners:
              - name: valkey
                listen: 0.0.0.0:6380
                target: 127.0.0.1:6379
                tls: {cert: server.pem, key: server.key, cacert: clients-ca.pem}
                policy: {allow-all: true}
              - name: to-broker
                mode: client
                listen: 127.0.0.1:4150
                target: broker-1.internal:4443
                tls: {cert: client.pem, key: client.key, cacert: servers-ca.pem, crl: servers.crl}
              - name: to-nsqd
                mode: client
                listen: "[::]:4151"
                unsafe-listen: true
                target: 10.0.0.21:4150
                tls: {cert: client.pem, key: client.key, cacert: servers-ca.pem, server-name: nsqd-1.internal}
                policy:
                  deny: [{cn: old}]
                  rules: [{name: nsqd, spiffe: "spiffe://example.org/ns/nsq/sa/nsqd"}]
              - name: to-erlang
                mode: client
                listen: 127.0.0.1:9107
                target: node7.internal:9100
                tls: {cert: client.pem, key: client.key, cacert: servers-ca.pem}
                policy: {verify-server-name: true, rules: [{name: cluster, ou: erlang-cluster}]}
              - name: to-anything
                mode: client
                listen: 127.0.0.1:9108
                target: 10.0.0.22:9100
                tls: {cert: client.pem, key: client.key, cacert: servers-ca.pem}
                policy: {allow-all: true, verify-server-name: false}
            """
        return try parse(yaml)
    }

    @Test func effectiveJSONOfClientListenersValidatesToTheSameSettings() throws {
        let configuration = try mixedConfiguration()
        let json = configuration.effectiveJSON()
        let again = try parse(json)
        #expect(again == configuration)
        #expect(again.effectiveJSON() == json)
        let flags = try PortcullisConfiguration(clientFlags: files.validClientFlags())
        #expect(try parse(flags.effectiveJSON()) == flags)
    }

    @Test func effectiveJSONHasTheKeysOfEachModeOnly() throws {
        let json = try mixedConfiguration().effectiveJSON()
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let listeners = try #require(object?["listeners"] as? [[String: Any]])
        #expect(listeners.map { $0["mode"] as? String } == ["server", "client", "client", "client", "client"])
        let server = listeners[0]
        #expect(server["unsafe-target"] as? Bool == false)
        #expect(server["proxy-protocol"] as? String == "off")
        #expect(server["unsafe-listen"] == nil)
        #expect((server["tls"] as? [String: Any])?["server-name"] == nil)
        #expect((server["policy"] as? [String: Any])?["verify-server-name"] == nil)
        for client in listeners.dropFirst() {
            #expect(client["unsafe-target"] == nil)
            #expect(client["proxy-protocol"] == nil)
            #expect(client["unsafe-listen"] is Bool)
            #expect((client["tls"] as? [String: Any])?["server-name"] is String)
            #expect((client["policy"] as? [String: Any])?["verify-server-name"] is Bool)
        }
        #expect(json.contains("\"listen\": \"[::]:4151\",\n      \"unsafe-listen\": true,\n      \"target\": \"10.0.0.21:4150\",\n"))
        #expect(json.contains("\"cacert\": \"/etc/portcullis/servers-ca.pem\",\n        \"server-name\": \"nsqd-1.internal\",\n        \"crl\": []"))
        #expect(json.contains("\"allow-all\": true,\n        \"verify-server-name\": true,\n        \"deny\": [],"))
    }

    @Test func effectiveDescriptionShowsTheModeTheServerNameAndTheNameCheck() throws {
        let text = try mixedConfiguration().effectiveDescription()
        for line in [
            "  - name: valkey\n    mode: server\n    listen: 0.0.0.0:6380\n    target: 127.0.0.1:6379\n    unsafe-target: false\n    proxy-protocol: off\n",
            "  - name: to-broker\n    mode: client\n    listen: 127.0.0.1:4150\n    unsafe-listen: false\n    target: broker-1.internal:4443\n    tls:\n",
            "      cacert: /etc/portcullis/servers-ca.pem\n      server-name: broker-1.internal\n      crl:\n        - /etc/portcullis/servers.crl\n",
            "      allow-all: true\n      verify-server-name: true (the server's certificate must carry broker-1.internal)\n      deny: none\n      rules: none\n",
            "    listen: [::]:4151\n    unsafe-listen: true\n",
            "      server-name: nsqd-1.internal\n",
            "      allow-all: false\n      verify-server-name: false (the rules alone judge the server)\n      deny:\n        - cn=old: cn=old\n      rules:\n        - nsqd: spiffe=spiffe://example.org/ns/nsq/sa/nsqd\n",
            "      allow-all: false\n      verify-server-name: true (the server's certificate must carry node7.internal)\n",
            "      server-name: 10.0.0.22\n",
            "      allow-all: true\n      verify-server-name: false (the rules alone judge the server)\n",
        ] {
            #expect(text.contains(line), "missing: \(line)")
        }
        let serverPart = try #require(text.components(separatedBy: "  - name: to-broker").first)
        #expect(!serverPart.contains("server-name"))
        #expect(!serverPart.contains("unsafe-listen"))
    }
}
