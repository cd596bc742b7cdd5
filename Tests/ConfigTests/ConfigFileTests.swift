import Testing
import Config
import Policy
import Foundation

/// A small valid file; the error table edits one thing in it. Line numbers as in the file:
private let baseLines = [
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

typealias LinesEdit = @Sendable (inout [String]) -> Void

/// Replaces 1-based line `n`.
private func set(_ n: Int, _ text: String) -> LinesEdit { { $0[n - 1] = text } }
/// Inserts `text` after 1-based line `n` (0: at the top), so it becomes line `n + 1`.
private func insert(after n: Int, _ text: String) -> LinesEdit { { $0.insert(text, at: n) } }
private func remove(_ range: ClosedRange<Int>) -> LinesEdit { { $0.removeSubrange((range.lowerBound - 1)...(range.upperBound - 1)) } }
private func append(_ text: String) -> LinesEdit { { $0.append(text) } }
private func combine(_ edits: LinesEdit...) -> LinesEdit { { lines in for edit in edits { edit(&lines) } } }

private func parse(_ yaml: String, checkFiles: Bool = false) throws(ConfigError) -> PortcullisConfiguration {
    try PortcullisConfiguration.parse(yaml: yaml, source: "portcullis.yaml", checkFiles: checkFiles)
}

private func problem(_ yaml: String, checkFiles: Bool = false, source: String = "portcullis.yaml") -> String? {
    do {
        _ = try PortcullisConfiguration.parse(yaml: yaml, source: source, checkFiles: checkFiles)
        return nil
    } catch {
        return error.description
    }
}

private let allKinds = Matcher.Kind.allCases.map(\.rawValue).joined(separator: ", ")
private let listenerKeyList = "name, mode, listen, unsafe-listen, target, unsafe-target, proxy-protocol, tls, timeouts, max-connections, reauthorize, close-at-cert-expiry, policy"

@Suite("Configuration file")
struct ConfigFileTests {
    let files: Files

    init() throws { files = try Files() }

    // MARK: Errors

    static let errors: [(LinesEdit, String)] = [
        // Unknown keys, with the closest known key or where the setting lives.
        (set(6, "      certt: server.pem"), "portcullis.yaml:6: listeners[0].tls.certt: unknown key (did you mean 'cert'?)"),
        (set(8, "      cacrt: ca.pem"), "portcullis.yaml:8: listeners[0].tls.cacrt: unknown key (did you mean 'cacert'?)"),
        (set(9, "    polcy:"), "portcullis.yaml:9: listeners[0].polcy: unknown key (did you mean 'policy'?)"),
        (set(10, "      rule:"), "portcullis.yaml:10: listeners[0].policy.rule: unknown key (did you mean 'rules'?)"),
        (insert(after: 4, "    Target: x"), "portcullis.yaml:5: listeners[0].Target: unknown key (did you mean 'target'?)"),
        (insert(after: 4, "    maxConnections: 5"), "portcullis.yaml:5: listeners[0].maxConnections: unknown key (did you mean 'max-connections'?)"),
        (insert(after: 4, "    colour: blue"), "portcullis.yaml:5: listeners[0].colour: unknown key: use one of \(listenerKeyList)"),
        (insert(after: 4, "    handshake-timeout: 5s"), "portcullis.yaml:5: listeners[0].handshake-timeout: unknown key (use timeouts.handshake)"),
        (insert(after: 4, "    cacert: ca.pem"), "portcullis.yaml:5: listeners[0].cacert: unknown key (it belongs under 'tls')"),
        (insert(after: 4, "    allow-cn: app"), "portcullis.yaml:5: listeners[0].allow-cn: unknown key (write a rule under 'policy.rules', e.g. {name: app, cn: …})"),
        (insert(after: 0, "listen: :8443"), "portcullis.yaml:1: listen: unknown key (it belongs to a listener: put it under 'listeners')"),
        (append("    timeouts: {shutdown: 1m}"), "portcullis.yaml:12: listeners[0].timeouts.shutdown: unknown key (it is process-wide: set the top-level shutdown-timeout)"),
        (set(11, "        - {name: ops, spiffe-id: \"spiffe://x/y\"}"), "portcullis.yaml:11: listeners[0].policy.rules[0].spiffe-id: unknown key (did you mean 'spiffe'?)"),

        // Wrong types.
        (append("    max-connections: lots"), "portcullis.yaml:12: listeners[0].max-connections: expected an integer, got 'lots': use 0 (unlimited) or a positive count"),
        (append("    max-connections: 1.5"), "portcullis.yaml:12: listeners[0].max-connections: expected an integer, got '1.5': use 0 (unlimited) or a positive count"),
        (append("    max-connections: -1"), "portcullis.yaml:12: listeners[0].max-connections: '-1' is out of range: use 0 (unlimited) or a positive count"),
        (append("    reauthorize: maybe"), "portcullis.yaml:12: listeners[0].reauthorize: expected true or false, got 'maybe'"),
        (append("    close-at-cert-expiry: [true]"), "portcullis.yaml:12: listeners[0].close-at-cert-expiry: expected a string, got a list"),
        (combine(remove(6...8), set(5, "    tls: server.pem")), "portcullis.yaml:5: listeners[0].tls: expected a mapping, got 'server.pem'"),
        (set(11, "        - {name: ops, cn: [a, b]}"),
         "portcullis.yaml:11: listeners[0].policy.rules[0].cn: expected a string, got a list: all matchers of a rule must hold, so write one rule per alternative"),
        (combine(remove(11...11), set(10, "      rules: {name: ops, cn: x}")), "portcullis.yaml:10: listeners[0].policy.rules: expected a list, got a mapping: start each entry with '- '"),
        (combine(remove(11...11), set(10, "      rules: [[x]]")), "portcullis.yaml:10: listeners[0].policy.rules[0]: expected a mapping, got a list"),
        (insert(after: 8, "      crl: [{a: b}]"), "portcullis.yaml:9: listeners[0].tls.crl[0]: expected a path, got a mapping"),

        // Duplicate keys, anywhere.
        (insert(after: 8, "      cert: again.pem"), "portcullis.yaml:9: listeners[0].tls.cert: duplicate key (first on line 6): remove one"),
        (set(11, "        - {name: ops, cn: a, cn: b}"), "portcullis.yaml:11: listeners[0].policy.rules[0].cn: duplicate key (first on line 11): remove one"),
        (append("listeners: []"), "portcullis.yaml:12: listeners: duplicate key (first on line 1): remove one"),

        // Missing and empty values.
        (remove(4...4), "portcullis.yaml:2: listeners[0]: missing required key 'target': give the backend to forward to, e.g. 127.0.0.1:6379 or unix:/run/app.sock"),
        (set(2, "  - mode: server"), "portcullis.yaml:2: listeners[0]: missing required key 'name': name the listener; logs, metrics and 'check --listener' use it"),
        (remove(5...8), "portcullis.yaml:2: listeners[0]: missing required key 'tls': give at least cert, key and cacert"),
        (remove(8...8), "portcullis.yaml:6: listeners[0].tls: missing required key 'cacert': server mode verifies every client certificate against it"),
        (set(6, "      cert:"), "portcullis.yaml:6: listeners[0].tls.cert: has no value: give the server certificate chain (PEM) that clients verify"),
        (set(6, "      cert: \"\""), "portcullis.yaml:6: listeners[0].tls.cert: '' is empty: give a path, absolute or relative to the configuration file"),
        (set(11, "        - {name: ops, cn: }"), "portcullis.yaml:11: listeners[0].policy.rules[0].cn: has no value: give a pattern"),

        // Values.
        (set(3, "    listen: 0.0.0.0:70000"), "portcullis.yaml:3: listeners[0].listen: '0.0.0.0:70000' has an invalid port: use 0-65535"),
        (set(4, "    target: 10.0.0.5:6379"), "portcullis.yaml:4: listeners[0].target: '10.0.0.5:6379' is not a loopback address (set unsafe-target: true to allow it)"),
        (combine(set(4, "    target: 10.0.0.5:6379"), insert(after: 4, "    unsafe-target: false")),
         "portcullis.yaml:4: listeners[0].target: '10.0.0.5:6379' is not a loopback address (set unsafe-target: true to allow it)"),
        (combine(set(4, "    target: 10.0.0.5:6379"), insert(after: 4, "    unsafe-target: yes")),
         "portcullis.yaml:5: listeners[0].unsafe-target: expected true or false, got 'yes'"),
        (set(4, "    target: \"evil\\n:80\""), "portcullis.yaml:4: listeners[0].target: 'evil\\n:80' has an invalid host: use an IP address or a DNS name"),
        (set(4, "    target: unix:run/app.sock"), "portcullis.yaml:4: listeners[0].target: 'unix:run/app.sock' is not an absolute socket path: use unix:/path/to/socket"),
        (set(2, "  - name: my listener"), "portcullis.yaml:2: listeners[0].name: 'my listener' is not a valid listener name: use 1-64 letters, digits, '.', '_' or '-'"),
        (insert(after: 2, "    mode: client"), "portcullis.yaml:4: listeners[0].listen: '0.0.0.0:6380' is not a loopback address (set unsafe-listen: true to allow it)"),
        (insert(after: 2, "    mode: proxy"), "portcullis.yaml:3: listeners[0].mode: 'proxy' is not a mode: use server or client"),
        (insert(after: 4, "    proxy-protocol: v1"),
         "portcullis.yaml:5: listeners[0].proxy-protocol: 'v1' is not a PROXY protocol version: use v2 (send a PROXY v2 header to the target) or off (the default)"),
        (insert(after: 4, "    proxy-protocol: true"),
         "portcullis.yaml:5: listeners[0].proxy-protocol: 'true' is not a PROXY protocol version: use v2 (send a PROXY v2 header to the target) or off (the default)"),
        (insert(after: 4, "    proxy-protocol: V2"),
         "portcullis.yaml:5: listeners[0].proxy-protocol: 'V2' is not a PROXY protocol version: use v2 (send a PROXY v2 header to the target) or off (the default)"),
        (insert(after: 4, "    proxy-protocol: [v2]"), "portcullis.yaml:5: listeners[0].proxy-protocol: expected a string, got a list"),
        (insert(after: 4, "    send-proxy-v2: true"), "portcullis.yaml:5: listeners[0].send-proxy-v2: unknown key (use proxy-protocol: v2)"),
        (combine(set(3, "    listen: 127.0.0.1:4150"), insert(after: 2, "    mode: client"), insert(after: 5, "    proxy-protocol: v2")),
         "portcullis.yaml:6: listeners[0].proxy-protocol: applies to server mode only: in client mode the target is a remote TLS server, which expects a TLS handshake, not a PROXY header; remove it"),
        (combine(set(3, "    listen: 127.0.0.1:4150"), insert(after: 2, "    mode: client"), insert(after: 5, "    proxy-protocol: \"off\"")),
         "portcullis.yaml:6: listeners[0].proxy-protocol: applies to server mode only: in client mode the target is a remote TLS server, which expects a TLS handshake, not a PROXY header; remove it"),
        (insert(after: 8, "      min-version: 1.1"), "portcullis.yaml:9: listeners[0].tls.min-version: '1.1' is not allowed: use 1.2 or 1.3"),
        (insert(after: 8, "      min-version: 1.30"), "portcullis.yaml:9: listeners[0].tls.min-version: '1.30' is not a TLS version: use 1.2 or 1.3"),
        (insert(after: 8, "      cipher-suites: TLS_AES_128_GCM_SHA256:TLS_RSA_WITH_AES_128_CBC_SHA"),
         "portcullis.yaml:9: listeners[0].tls.cipher-suites: 'TLS_RSA_WITH_AES_128_CBC_SHA' is not a TLS 1.3 cipher suite: use TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_CCM_SHA256, TLS_AES_128_CCM_8_SHA256"),
        (insert(after: 8, "      cipher-suites: TLS_AES_128_GCM_SHA256::TLS_AES_256_GCM_SHA384"),
         "portcullis.yaml:9: listeners[0].tls.cipher-suites: 'TLS_AES_128_GCM_SHA256::TLS_AES_256_GCM_SHA384' has an empty entry: separate cipher suites with a single ':', e.g. TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"),
        (insert(after: 8, "      groups: X25519:brainpoolP256r1"),
         "portcullis.yaml:9: listeners[0].tls.groups: 'brainpoolP256r1' is not a supported group: use X25519, X448, P-256, P-384, P-521"),
        (insert(after: 8, "      groups: P-256:prime256v1"), "portcullis.yaml:9: listeners[0].tls.groups: 'prime256v1' is listed twice: remove one"),
        (insert(after: 8, "      crl-scope: all"),
         "portcullis.yaml:9: listeners[0].tls.crl-scope: 'all' is not a CRL scope: use chain (every certificate of the chain) or leaf (the client certificate only)"),
        (insert(after: 8, "      crl-expired: ignore"),
         "portcullis.yaml:9: listeners[0].tls.crl-expired: 'ignore' is not a CRL expiry policy: use reject (fail closed) or warn (accept and log)"),
        (append("    timeouts: {idle: 10 sec}"), "portcullis.yaml:12: listeners[0].timeouts.idle: '10 sec' is not a duration: use e.g. 500ms, 10s, 5m, 1h"),
        (append("    timeouts: {handshake: 0s}"), "portcullis.yaml:12: listeners[0].timeouts.handshake: '0s' must be greater than zero: use e.g. 10s"),
        (insert(after: 0, "workers: 0"), "portcullis.yaml:1: workers: '0' is out of range: use 1-256"),
        (insert(after: 0, "session-cache-size: 0"),
         "portcullis.yaml:1: session-cache-size: '0' is out of range: use 1-10000000 (to turn resumption off, set session-tickets: false)"),
        (insert(after: 8, "      session-ticket-count: 17"),
         "portcullis.yaml:9: listeners[0].tls.session-ticket-count: '17' is out of range: use 1 (the default) to 16, or 0 to send none"),
        (insert(after: 8, "      session-ticket-count: two"), "portcullis.yaml:9: listeners[0].tls.session-ticket-count: expected an integer, got 'two': use 1 (the default) to 16, or 0 to send none"),
        (combine(insert(after: 8, "      session-tickets: false"), insert(after: 8, "      session-ticket-count: 2")),
         "portcullis.yaml:9: listeners[0].tls.session-ticket-count: tickets are off (session-tickets: false): remove one of the two"),
        (combine(set(3, "    listen: 127.0.0.1:4150"), insert(after: 2, "    mode: client"), insert(after: 9, "      session-ticket-count: 1")),
         "portcullis.yaml:10: listeners[0].tls.session-ticket-count: applies to server mode only: tickets are what a server sends; a client-mode listener resumes with the ones it receives; remove it"),
        (insert(after: 0, "shutdown-timeout: 5"), "portcullis.yaml:1: shutdown-timeout: '5' is not a duration: use e.g. 500ms, 10s, 5m, 1h"),
        (insert(after: 0, "log: {format: xml}"), "portcullis.yaml:1: log.format: 'xml' is not a log format: use text or json"),
        (insert(after: 0, "log: {level: verbose}"), "portcullis.yaml:1: log.level: 'verbose' is not a log level: use trace, debug, info, notice, warning, error or critical"),
        (insert(after: 0, "status: {listen: 0.0.0.0:9100}"), "portcullis.yaml:1: status.listen: '0.0.0.0:9100' is not a loopback address (use status.unsafe-listen: true to allow it)"),
        (insert(after: 0, "status: {unsafe-listen: true}"), "portcullis.yaml:1: status: missing required key 'listen': give the address for health and metrics, e.g. 127.0.0.1:9100"),

        // Policy.
        (set(11, "        - {name: ops, uri: \"*spiffe\"}"), "portcullis.yaml:11: listeners[0].policy.rules[0].uri: '*spiffe' is not a valid pattern: the scheme must be literal"),
        (set(11, "        - {name: ops, ip: 10.0.0.0/33}"), "portcullis.yaml:11: listeners[0].policy.rules[0].ip: '10.0.0.0/33' is not a valid IP address or CIDR range: the prefix length must be 0-32"),
        (set(11, "        - {cn: \"ops-*\"}"), "portcullis.yaml:11: listeners[0].policy.rules[0]: missing required key 'name': name the rule; decisions and the audit log cite it"),
        (set(11, "        - {name: ops}"), "portcullis.yaml:11: listeners[0].policy.rules[0]: rule 'ops' has no matchers: give at least one of \(allKinds), or set policy.allow-all: true to admit every verified client"),
        (insert(after: 9, "      deny: [{}]"), "portcullis.yaml:10: listeners[0].policy.deny[0]: the entry has no matchers: give at least one of \(allKinds)"),
        (append("        - {name: ops, ou: ops}"), "portcullis.yaml:12: listeners[0].policy.rules[1].name: duplicate rule name 'ops' (first on line 11): give each rule its own name"),
        (insert(after: 9, "      deny: [{name: ops, cn: x}]"), "portcullis.yaml:12: listeners[0].policy.rules[0].name: duplicate rule name 'ops' (first on line 10): give each rule its own name"),
        (insert(after: 9, "      allow-all: true"),
         "portcullis.yaml:10: listeners[0].policy.allow-all: allow-all: true and rules are mutually exclusive: drop allow-all to admit only the clients that match a rule"),
        (combine(remove(10...11), set(9, "    policy: {allow-all: false}")),
         "portcullis.yaml:9: listeners[0].policy: no access rule given: add rules (e.g. rules: [{name: ops, cn: \"ops-*\"}]) or allow-all: true to admit every client whose certificate chains to tls.cacert"),
        (combine(remove(11...11), set(10, "      rules: []")),
         "portcullis.yaml:10: listeners[0].policy: no access rule given: add rules (e.g. rules: [{name: ops, cn: \"ops-*\"}]) or allow-all: true to admit every client whose certificate chains to tls.cacert"),
        (remove(9...11),
         "portcullis.yaml:2: listeners[0].policy: no access rule given: add rules (e.g. rules: [{name: ops, cn: \"ops-*\"}]) or allow-all: true to admit every client whose certificate chains to tls.cacert"),

        // Across listeners.
        (append("  - {name: valkey, listen: \":6381\", target: \"127.0.0.1:6379\", tls: {cert: a, key: b, cacert: c}, policy: {allow-all: true}}"),
         "portcullis.yaml:12: listeners[1].name: duplicate listener name 'valkey' (first on line 2): give each listener its own name"),
        (append("  - {name: other, listen: \"0.0.0.0:6380\", target: \"127.0.0.1:6379\", tls: {cert: a, key: b, cacert: c}, policy: {allow-all: true}}"),
         "portcullis.yaml:12: listeners[1].listen: '0.0.0.0:6380' is already used by listener 'valkey' (line 3): give each listener its own address"),
        (append("  - {name: other, listen: \"[::]:6380\", target: \"127.0.0.1:6379\", tls: {cert: a, key: b, cacert: c}, policy: {allow-all: true}}"),
         "portcullis.yaml:12: listeners[1].listen: '[::]:6380' overlaps listener 'valkey' on '0.0.0.0:6380' (line 3): a wildcard address takes the port on every interface; use another port"),
        (insert(after: 0, "status: {listen: 127.0.0.1:6380}"),
         "portcullis.yaml:4: listeners[0].listen: '0.0.0.0:6380' overlaps status.listen on '127.0.0.1:6380' (line 1): a wildcard address takes the port on every interface; use another port"),

        // Whole-file problems.
        ({ $0 = ["workers: 2"] }, "portcullis.yaml:1: missing required key 'listeners': add at least one listener (see docs/CONFIG.md)"),
        ({ $0 = ["listeners: []"] }, "portcullis.yaml:1: listeners: is empty: add at least one listener (see docs/CONFIG.md)"),
        ({ $0 = ["listeners:"] }, "portcullis.yaml:1: listeners: has no value: add at least one listener (see docs/CONFIG.md)"),
        ({ $0 = ["- a"] }, "portcullis.yaml:1: expected a mapping of settings at the top level, got a list"),
        ({ $0 = [] }, "portcullis.yaml:1: the file is empty: add a 'listeners' list (see docs/CONFIG.md)"),
        ({ $0 = ["# only a comment", "---"] }, "portcullis.yaml:1: the file is empty: add a 'listeners' list (see docs/CONFIG.md)"),
        (set(7, "      key server.key"), "portcullis.yaml:8: YAML syntax error: could not find expected ':' (while scanning a simple key on line 7)"),
        (set(11, "        - {name: ops, cn: \"ops-*\""), "portcullis.yaml:12: YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping on line 11)"),
        (set(6, "\tcert: server.pem"), "portcullis.yaml:6: YAML syntax error: found character that cannot start any token (while scanning for the next token on line 6)"),
    ]

    @Test("each problem is one exact line with file, line and key path", arguments: errors)
    func fileError(edit: LinesEdit, message: String) {
        var lines = baseLines
        edit(&lines)
        #expect(problem(lines.joined(separator: "\n") + "\n") == message)
    }

    @Test func theBaseFileIsValid() throws {
        let configuration = try parse(baseLines.joined(separator: "\n"))
        #expect(configuration.listeners.map(\.name) == ["valkey"])
    }

    @Test func theFirstProblemInTheFileIsReported() {
        var lines = baseLines
        lines[10] = "        - {name: ops, uri: \"*spiffe\"}"  // line 11
        lines[3] = "    target: 10.0.0.5:6379"  // line 4
        lines.append("    max-connections: lots")  // line 12
        #expect(problem(lines.joined(separator: "\n"))?.hasPrefix("portcullis.yaml:4: listeners[0].target:") == true)
        lines[3] = "    target: 127.0.0.1:6379"
        #expect(problem(lines.joined(separator: "\n"))?.hasPrefix("portcullis.yaml:11: listeners[0].policy.rules[0].uri:") == true)
        lines[10] = "        - {name: ops, uri: \"spiffe://x/*\"}"
        #expect(problem(lines.joined(separator: "\n"))?.hasPrefix("portcullis.yaml:12: listeners[0].max-connections:") == true)
    }

    @Test func errorsInALaterListenerNameItsIndex() {
        let yaml = baseLines.joined(separator: "\n") + "\n" + """
              - name: second
                listen: :6381
                target: 127.0.0.1:6379
                tls: {cert: a.pem, key: a.key, cacert: ca.pem}
                policy:
                  rules:
                    - {name: a, cn: a}
                    - {name: b, uri: "*spiffe"}
            """
        #expect(problem(yaml) == "portcullis.yaml:19: listeners[1].policy.rules[1].uri: '*spiffe' is not a valid pattern: the scheme must be literal")
    }

    @Test func theErrorKeyIsTheKeyPath() {
        var lines = baseLines
        lines[10] = "        - {name: ops, uri: \"*spiffe\"}"
        #expect(throws: ConfigError(
            key: "listeners[0].policy.rules[0].uri",
            message: "portcullis.yaml:11: listeners[0].policy.rules[0].uri: '*spiffe' is not a valid pattern: the scheme must be literal")) {
            try parse(lines.joined(separator: "\n"))
        }
    }

    @Test func missingAndUnreadableFilesNameTheResolvedPath() {
        let source = files.directory + "/portcullis.yaml"
        var lines = baseLines
        lines[5] = "      cert: certs/missing.pem"
        #expect(problem(lines.joined(separator: "\n"), checkFiles: true, source: source)
            == "\(source):6: listeners[0].tls.cert: '\(files.directory)/certs/missing.pem': no such file")
        lines[5] = "      cert: ca.d"
        #expect(problem(lines.joined(separator: "\n"), checkFiles: true, source: source)
            == "\(source):6: listeners[0].tls.cert: '\(files.directory)/ca.d': is a directory, not a file")
        lines[5] = "      cert: server.pem"
        lines[7] = "      cacert: ca.d"  // a directory is fine for cacert
        #expect(problem(lines.joined(separator: "\n"), checkFiles: true, source: source) == nil)
    }

    @Test func loadReportsAnUnreadableFile() {
        #expect(throws: ConfigError(key: nil, message: "/nonexistent/portcullis.yaml: cannot read the configuration file: no such file")) {
            try PortcullisConfiguration.load(path: "/nonexistent/portcullis.yaml")
        }
    }

    // MARK: Values and defaults

    @Test func defaultsFillEverythingNotWritten() throws {
        let configuration = try parse(baseLines.joined(separator: "\n"))
        #expect(configuration.log == LogSettings(format: .text, level: "info"))
        #expect(configuration.status == nil)
        #expect(configuration.workers == Validate.defaultWorkers)
        #expect(configuration.shutdownTimeoutMs == 300_000)
        #expect(configuration.sessionCacheSize == 20_000)
        let listener = try #require(configuration.listeners.first)
        #expect(listener.mode == .server)
        #expect(listener.listen.description == "0.0.0.0:6380")
        #expect(listener.target == .tcp(host: "127.0.0.1", port: 6379))
        #expect(!listener.unsafeTarget)
        #expect(listener.proxyProtocol == .off)
        let directory = FileManager.default.currentDirectoryPath
        #expect(listener.tls == ListenerTLSSettings(
            certificatePath: directory + "/server.pem", keyPath: directory + "/server.key", keyPassphrasePath: nil,
            caPath: directory + "/ca.pem", crlPaths: [], crlScope: .chain, crlExpired: .reject, minimumVersion: .tls13,
            cipherSuites: nil, groups: nil, sessionTickets: true))
        #expect(listener.timeouts == Timeouts.defaults)
        #expect(listener.maxConnections == 0)
        #expect(listener.reauthorize)
        #expect(!listener.closeAtCertExpiry)
        #expect(listener.policy == AccessPolicy(rules: [try AccessRule(name: "ops", matchers: [Matcher(kind: .cn, value: "ops-*")])]))
    }

    @Test func everyKeyIsCarriedThrough() throws {
        try Data("x".utf8).write(to: URL(fileURLWithPath: files.directory + "/clients.crl"))
        let yaml = """
            log: {format: json, level: debug}
            status: {listen: "[::1]:9100"}
            workers: 3
            shutdown-timeout: 1m30s
            session-cache-size: 500
            listeners:
              - name: valkey
                mode: server
                listen: 0.0.0.0:6380
                target: 10.0.0.5:6379
                unsafe-target: true
                proxy-protocol: v2
                tls:
                  cert: server.pem
                  key: server.key
                  key-passphrase-file: passphrase.txt
                  cacert: ca.d
                  crl: [clients.crl]
                  crl-scope: leaf
                  crl-expired: warn
                  min-version: "1.2"
                  cipher-suites: tls_aes_128_gcm_sha256:TLS_AES_256_GCM_SHA384
                  groups: x25519:secp384r1
                  session-tickets: false
                timeouts: {handshake: 250ms, connect: 2s, idle: 1h, close: 0}
                max-connections: 10_000
                reauthorize: false
                close-at-cert-expiry: true
                policy:
                  deny:
                    - {cn: "compromised-*"}
                    - {name: leaked, serial: "0A:1B"}
                  rules:
                    - {name: payments-workers, ou: payments, uri: "spiffe://example.org/ns/prod/*"}
                    - {name: ops, cn: "ops-*"}
            """
        let configuration = try PortcullisConfiguration.parse(yaml: yaml, source: files.directory + "/portcullis.yaml")
        #expect(configuration.log == LogSettings(format: .json, level: "debug"))
        #expect(configuration.status == StatusSettings(listen: .tcp(host: "::1", port: 9100), unsafeListen: false))
        #expect(configuration.workers == 3)
        #expect(configuration.shutdownTimeoutMs == 90_000)
        #expect(configuration.sessionCacheSize == 500)
        let listener = try #require(configuration.listener(named: "valkey"))
        #expect(listener.target == .tcp(host: "10.0.0.5", port: 6379))
        #expect(listener.unsafeTarget)
        #expect(listener.proxyProtocol == .v2)
        let d = files.directory
        #expect(listener.tls == ListenerTLSSettings(
            certificatePath: d + "/server.pem", keyPath: d + "/server.key", keyPassphrasePath: d + "/passphrase.txt",
            caPath: d + "/ca.d", crlPaths: [d + "/clients.crl"], crlScope: .leaf, crlExpired: .warn, minimumVersion: .tls12,
            cipherSuites: "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", groups: "X25519:P-384", sessionTickets: false))
        #expect(listener.timeouts == Timeouts(handshake: 250, connect: 2_000, idle: 3_600_000, close: 0, shutdown: 90_000))
        #expect(listener.maxConnections == 10_000)
        #expect(!listener.reauthorize)
        #expect(listener.closeAtCertExpiry)
        #expect(listener.policy.deny.map(\.name) == ["cn=compromised-*", "leaked"])
        #expect(listener.policy.rules.map(\.description) == [
            "'payments-workers' (ou=payments AND uri=spiffe://example.org/ns/prod/*)", "'ops' (cn=ops-*)",
        ])
        let worker = PeerIdentity(subject: DistinguishedName([.init(type: "OU", value: "payments")]), uris: ["spiffe://example.org/ns/prod/w1"])
        #expect(listener.policy.evaluate(worker).description
            == "allowed by rule 'payments-workers' (ou=payments AND uri=spiffe://example.org/ns/prod/*)")
    }

    @Test("relative paths start at the file's directory", arguments: [
        ("server.pem", "/srv/p/conf/server.pem"), ("./server.pem", "/srv/p/conf/server.pem"),
        ("sub/../server.pem", "/srv/p/conf/server.pem"), ("certs//server.pem", "/srv/p/conf/certs/server.pem"),
        ("../up.pem", "/srv/p/up.pem"), ("/etc/p/server.pem", "/etc/p/server.pem"), ("/etc/./p/../server.pem", "/etc/server.pem"),
    ])
    func relativePaths(written: String, expected: String) throws {
        var lines = baseLines
        lines[5] = "      cert: \(written)"
        let configuration = try PortcullisConfiguration.parse(
            yaml: lines.joined(separator: "\n"), source: "/srv/p/conf/portcullis.yaml", checkFiles: false)
        #expect(configuration.listeners[0].tls.certificatePath == expected)
    }

    @Test func loadResolvesPathsAgainstTheFilesDirectory() throws {
        let path = files.directory + "/portcullis.yaml"
        try Data(baseLines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: path))
        let configuration = try PortcullisConfiguration.load(path: path)
        #expect(configuration.listeners[0].tls.certificatePath == files.cert)
        #expect(configuration.listeners[0].tls.caPath == files.ca)
    }

    @Test("min-version reads the same quoted or as a YAML number", arguments: [
        ("1.3", TLSVersion.tls13), ("\"1.3\"", .tls13), ("'1.3'", .tls13), ("1.2", .tls12), ("\"1.2\"", .tls12),
    ])
    func minimumVersion(written: String, expected: TLSVersion) throws {
        var lines = baseLines
        lines.insert("      min-version: \(written)", at: 8)
        #expect(try parse(lines.joined(separator: "\n")).listeners[0].tls.minimumVersion == expected)
    }

    @Test("crl is a path or a list of paths", arguments: [
        ("crl: a.crl", ["/x/a.crl"]), ("crl: [a.crl]", ["/x/a.crl"]), ("crl: [a.crl, /b.crl]", ["/x/a.crl", "/b.crl"]),
        ("crl: []", []), ("crl:", []), ("crl:\n        - a.crl\n        - b.crl", ["/x/a.crl", "/x/b.crl"]),
    ])
    func crlForms(written: String, expected: [String]) throws {
        var lines = baseLines
        lines.insert("      \(written)", at: 8)
        let configuration = try PortcullisConfiguration.parse(yaml: lines.joined(separator: "\n"), source: "/x/p.yaml", checkFiles: false)
        #expect(configuration.listeners[0].tls.crlPaths == expected)
    }

    @Test func cipherSuitesAndGroupsMayBeLists() throws {
        var lines = baseLines
        lines.insert("      cipher-suites: [TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256]", at: 8)
        lines.insert("      groups: [X25519, prime256v1]", at: 8)
        let tls = try parse(lines.joined(separator: "\n")).listeners[0].tls
        #expect(tls.cipherSuites == "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256")
        #expect(tls.groups == "X25519:P-256")
    }

    @Test func statusTakesLoopbackUnixOrAnUnsafeAddress() throws {
        func status(_ text: String) throws -> StatusSettings? {
            try parse(text + "\n" + baseLines.joined(separator: "\n")).status
        }
        #expect(try status("status: {listen: localhost:9100}") == StatusSettings(listen: .tcp(host: "127.0.0.1", port: 9100)))
        #expect(try status("status: {listen: unix:/run/p.sock}") == StatusSettings(listen: .unix(path: "/run/p.sock")))
        #expect(try status("status: {listen: \":9100\", unsafe-listen: true}") == StatusSettings(listen: .tcp(host: "0.0.0.0", port: 9100), unsafeListen: true))
        #expect(try status("status:") == nil)
    }

    @Test func statusAddressForms() throws {
        func parse(_ text: String, unsafe: Bool = false) throws(ConfigError) -> (ListenAddress, ListenAddress?, Bool) {
            let parsed = try Validate.statusAddress(text, key: "--status", allowNonLoopback: unsafe, unsafeKey: "--unsafe-status")
            return (parsed.endpoint, parsed.address, parsed.https)
        }
        let plain = try parse("127.0.0.1:9100")
        #expect(plain.0 == .tcp(host: "127.0.0.1", port: 9100) && plain.1 == .tcp(host: "127.0.0.1", port: 9100) && !plain.2)
        let http = try parse("http://localhost:9100")
        #expect(http.0 == .tcp(host: "127.0.0.1", port: 9100) && !http.2)
        let https = try parse("https://127.0.0.1:9100")
        #expect(https.0 == .tcp(host: "127.0.0.1", port: 9100) && https.1 == .tcp(host: "127.0.0.1", port: 9100) && https.2)
        let v6 = try parse("https://[::1]:9100/")
        #expect(v6.0 == .tcp(host: "::1", port: 9100) && v6.2)
        let unix = try parse("unix:/run/portcullis/status.sock")
        #expect(unix.0 == .unix(path: "/run/portcullis/status.sock") && unix.1 == .unix(path: "/run/portcullis/status.sock") && !unix.2)
        let activated = try parse("systemd:status")
        #expect(activated.0 == .systemd(name: "status") && activated.1 == .systemd(name: "status") && !activated.2)
        #expect(try parse("https://systemd:status").2)
        #expect(throws: ConfigError.self) { try parse("systemd:") }
        #expect(try parse("https://0.0.0.0:9100", unsafe: true).2)
        #expect(throws: ConfigError(key: "--status", message: "--status 'https://0.0.0.0:9100' is not a loopback address (use --unsafe-status to allow it)")) {
            try parse("https://0.0.0.0:9100")
        }
        #expect(throws: ConfigError(key: "--status", message: "--status 'https://unix:/run/s.sock' is a Unix socket, which takes no scheme: use unix:/path (served as plain HTTP; file permissions guard it)")) {
            try parse("https://unix:/run/s.sock")
        }
        #expect(throws: ConfigError(key: "--status", message: "--status 'ftp://127.0.0.1:9100' has scheme 'ftp': use HOST:PORT or http://HOST:PORT (plain HTTP), https://HOST:PORT (TLS), unix:/path or systemd:NAME")) {
            try parse("ftp://127.0.0.1:9100")
        }
        #expect(throws: ConfigError.self) { try parse("https://") }
        #expect(StatusSettings(listen: .tcp(host: "::1", port: 9100), https: true).listenDescription == "https://[::1]:9100")
    }

    @Test func syslogFromFlagsAndFile() throws {
        var flags = files.validFlags()
        #expect(try !PortcullisConfiguration(flags: flags).log.syslog)
        flags.syslog = true
        #expect(try PortcullisConfiguration(flags: flags).log.syslog)
        #expect(try parse("log: {syslog: true}\n" + baseLines.joined(separator: "\n")).log.syslog)
        #expect(try !parse("log: {syslog: false}\n" + baseLines.joined(separator: "\n")).log.syslog)
        #expect(throws: ConfigError.self) { try parse("log: {syslog: daemon}\n" + baseLines.joined(separator: "\n")) }
    }

    @Test func statusSchemeFromAFile() throws {
        let configuration = try parse("status: {listen: \"https://localhost:9100\"}\n" + baseLines.joined(separator: "\n"))
        #expect(configuration.status == StatusSettings(listen: .tcp(host: "127.0.0.1", port: 9100), https: true))
        #expect(configuration.effectiveDescription().contains("  listen: https://127.0.0.1:9100\n"))
    }

    @Test func statusAndQuietFromFlags() throws {
        var flags = files.validFlags()
        flags.status = "localhost:9100"
        flags.quietHandshakeFailures = true
        let configuration = try PortcullisConfiguration(flags: flags)
        #expect(configuration.status == StatusSettings(listen: .tcp(host: "127.0.0.1", port: 9100)))
        #expect(configuration.log.quietHandshakeFailures)
        flags.status = "unix:/run/portcullis/status.sock"
        #expect(try PortcullisConfiguration(flags: flags).status == StatusSettings(listen: .unix(path: "/run/portcullis/status.sock")))
        flags.status = "0.0.0.0:9100"
        #expect(throws: ConfigError(key: "--status", message: "--status (config key status.listen): '0.0.0.0:9100' is not a loopback address (use --unsafe-status to allow it)")) {
            try PortcullisConfiguration(flags: flags)
        }
        flags.unsafeStatus = true
        #expect(try PortcullisConfiguration(flags: flags).status == StatusSettings(listen: .tcp(host: "0.0.0.0", port: 9100), unsafeListen: true))
        flags.status = "unix:relative.sock"
        #expect(throws: ConfigError.self) { try PortcullisConfiguration(flags: flags) }
        var client = files.validClientFlags()
        client.status = "127.0.0.1:9101"
        #expect(try PortcullisConfiguration(clientFlags: client).status == StatusSettings(listen: .tcp(host: "127.0.0.1", port: 9101)))
    }

    @Test func mergeKeysShareSettingsAndWrittenKeysWin() throws {
        let yaml = """
            x-tls: &tls {cert: shared.pem, key: shared.key, cacert: ca.pem, min-version: "1.2"}
            listeners:
              - name: a
                listen: :7001
                target: 127.0.0.1:6379
                tls: {<<: *tls, cert: a.pem}
                policy: {allow-all: true}
              - name: b
                listen: :7002
                target: 127.0.0.1:6379
                tls: *tls
                policy: {allow-all: true}
            """
        let configuration = try PortcullisConfiguration.parse(yaml: yaml, source: "/x/p.yaml", checkFiles: false)
        #expect(configuration.listeners.map(\.tls.certificatePath) == ["/x/a.pem", "/x/shared.pem"])
        #expect(configuration.listeners.map(\.tls.minimumVersion) == [.tls12, .tls12])
        #expect(configuration.listeners.allSatisfy { $0.policy.allowAll })
    }

    @Test func portZeroMayRepeatAndDistinctHostsShareAPort() throws {
        let yaml = """
            listeners:
              - {name: a, listen: "127.0.0.1:0", target: "127.0.0.1:1", tls: {cert: c, key: k, cacert: ca}, policy: {allow-all: true}}
              - {name: b, listen: "127.0.0.1:0", target: "127.0.0.1:1", tls: {cert: c, key: k, cacert: ca}, policy: {allow-all: true}}
              - {name: c, listen: "127.0.0.1:7000", target: "127.0.0.1:1", tls: {cert: c, key: k, cacert: ca}, policy: {allow-all: true}}
              - {name: d, listen: "127.0.0.2:7000", target: "127.0.0.1:1", tls: {cert: c, key: k, cacert: ca}, policy: {allow-all: true}}
            """
        #expect(try parse(yaml).listeners.count == 4)
    }

    // MARK: Flags

    @Test func theSameListenerFromFlagsAndFromAFileIsEqual() throws {
        var flags = files.validFlags()
        flags.allowOU = ["payments"]
        let fromFlags = try PortcullisConfiguration(flags: flags)
        let yaml = """
            listeners:
              - name: server
                listen: ":8443"
                target: 127.0.0.1:6379
                tls: {cert: \(files.cert), key: \(files.key), cacert: \(files.ca)}
                policy:
                  rules:
                    - {name: cn=app-1, cn: app-1}
                    - {name: ou=payments, ou: payments}
            """
        let fromFile = try PortcullisConfiguration.parse(yaml: yaml, source: files.directory + "/p.yaml")
        #expect(fromFile.listeners == fromFlags.listeners)
        #expect(fromFile == fromFlags)
    }

    @Test func everyServerFlagHasAnEquivalentKey() throws {
        var flags = files.validFlags()
        flags.listen = "[::1]:0"
        flags.target = "10.1.2.3:6379"
        flags.unsafeTarget = true
        flags.keyPassphraseFile = files.passphrase
        flags.cacert = files.caDirectory
        flags.allowCN = []
        flags.allowAll = true
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
        flags.quietHandshakeFailures = true
        flags.syslog = true
        flags.status = "https://[::1]:9100"
        flags.proxyProtocol = "v2"
        let yaml = """
            log: {format: json, level: debug, quiet-handshake-failures: true, syslog: true}
            status: {listen: "https://[::1]:9100"}
            workers: 3
            shutdown-timeout: 1h
            listeners:
              - name: server
                listen: "[::1]:0"
                target: 10.1.2.3:6379
                unsafe-target: true
                proxy-protocol: v2
                tls:
                  cert: \(files.cert)
                  key: \(files.key)
                  key-passphrase-file: \(files.passphrase)
                  cacert: \(files.caDirectory)
                  min-version: 1.2
                  session-tickets: false
                timeouts: {handshake: 250ms, connect: 2s, idle: 1m30s, close: 0}
                max-connections: 10000
                policy: {allow-all: true}
            """
        let fromFile = try PortcullisConfiguration.parse(yaml: yaml, source: files.directory + "/p.yaml")
        #expect(fromFile == (try PortcullisConfiguration(flags: flags)))
    }

    @Test func flagPathsBecomeAbsolute() throws {
        var flags = files.validFlags()
        let directory = FileManager.default.currentDirectoryPath
        flags.cert = "/" + files.cert.split(separator: "/").joined(separator: "/./")
        let listener = try PortcullisConfiguration(flags: flags).listeners[0]
        #expect(listener.tls.certificatePath == files.cert)
        #expect(listener.tls.caPath?.hasPrefix("/") == true)
        #expect(!directory.isEmpty)
    }

    @Test func flagErrorsKeepTheirFlagMessages() {
        var flags = files.validFlags()
        flags.target = "10.0.0.5:6379"
        #expect(throws: ConfigError(key: "--target", message: "--target (config key target): '10.0.0.5:6379' is not a loopback address (use --unsafe-target to allow it)")) {
            try PortcullisConfiguration(flags: flags)
        }
    }

    // MARK: Effective configuration

    static let documentedKeys = [
        "log", "format", "level", "status", "workers", "shutdown-timeout", "listeners", "name", "mode", "listen", "target",
        "unsafe-target", "proxy-protocol", "tls", "cert", "key", "key-passphrase-file", "cacert", "crl", "crl-scope", "crl-expired",
        "min-version", "cipher-suites", "groups", "session-tickets", "session-ticket-count", "session-cache-size",
        "timeouts", "handshake", "connect", "idle", "close", "max-lifetime",
        "max-connections", "reauthorize", "close-at-cert-expiry", "policy", "allow-all", "deny", "rules",
    ]

    private func fullConfiguration() throws -> PortcullisConfiguration {
        let yaml = """
            status: {listen: 127.0.0.1:9100}
            listeners:
              - name: valkey
                listen: 0.0.0.0:6380
                target: unix:/run/valkey.sock
                tls:
                  cert: server.pem
                  key: server.key
                  cacert: ca.pem
                  crl: [clients.crl]
                  groups: X25519:P-256
                policy:
                  deny:
                    - {cn: "compromised-*"}
                  rules:
                    - {name: payments-workers, ou: payments, uri: "spiffe://example.org/ns/prod/*"}
                    - {name: pinned, fingerprint: "SHA256:\(String(repeating: "AB", count: 32))", serial: "0a:1b", ip: "10.0.0.0/8"}
                    - {name: "odd 'name'", cn: "o'brien-*"}
              - name: admin
                listen: 127.0.0.1:9443
                target: 127.0.0.1:8080
                proxy-protocol: v2
                tls: {cert: server.pem, key: server.key, cacert: ca.pem}
                timeouts: {idle: 15m}
                policy: {allow-all: true}
            """
        return try PortcullisConfiguration.parse(yaml: yaml, source: "/etc/portcullis/portcullis.yaml", checkFiles: false)
    }

    @Test("the effective description lists every key", arguments: documentedKeys)
    func effectiveDescriptionHasKey(key: String) throws {
        let text = try fullConfiguration().effectiveDescription()
        #expect(text.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix(key + ":") || $0.contains("- " + key + ":") })
        #expect(try fullConfiguration().effectiveJSON().contains("\"\(key)\": "))
    }

    @Test func effectiveDescriptionShowsValuesDefaultsAndRuleConditions() throws {
        let text = try fullConfiguration().effectiveDescription()
        for line in [
            "status:\n  listen: 127.0.0.1:9100",
            "workers: \(Validate.defaultWorkers)",
            "shutdown-timeout: 5m",
            "  - name: valkey",
            "    target: unix:/run/valkey.sock\n    unsafe-target: false\n    proxy-protocol: off\n    tls:",
            "    target: 127.0.0.1:8080\n    unsafe-target: false\n    proxy-protocol: v2 (a PROXY v2 header precedes each connection's bytes)",
            "      cert: /etc/portcullis/server.pem",
            "      key-passphrase-file: none (the key is not encrypted)",
            "      crl:\n        - /etc/portcullis/clients.crl",
            "      crl-scope: chain",
            "      crl-expired: reject",
            "      min-version: 1.3",
            "      cipher-suites: OpenSSL default",
            "      groups: X25519:P-256",
            "      handshake: 10s\n      connect: 10s\n      idle: 0s (off)\n      close: 1m",
            "    max-connections: 0 (unlimited)",
            "    reauthorize: true",
            "    close-at-cert-expiry: false",
            "      deny:\n        - cn=compromised-*: cn=compromised-*",
            "        - payments-workers: ou=payments AND uri=spiffe://example.org/ns/prod/*",
            "        - pinned: fingerprint=sha256:\(String(repeating: "ab", count: 32)) AND serial=a1b AND ip=10.0.0.0/8",
            "        - odd \\'name\\': cn=o\\'brien-*",
            "      idle: 15m",
            "      allow-all: true\n      deny: none\n      rules: none",
        ] {
            #expect(text.contains(line + "\n"), "missing: \(line)")
        }
    }

    @Test func effectiveJSONIsAConfigurationThatValidatesToTheSameSettings() throws {
        let configuration = try fullConfiguration()
        let json = configuration.effectiveJSON()
        #expect(json.hasPrefix("{\n  \"log\": {\n    \"format\": \"text\",\n    \"level\": \"info\",\n    \"quiet-handshake-failures\": false,\n    \"syslog\": false\n  },\n  \"status\": {"))
        #expect(json.contains("\"key-passphrase-file\": null,"))
        let again = try PortcullisConfiguration.parse(yaml: json, source: "/etc/portcullis/portcullis.yaml", checkFiles: false)
        #expect(again == configuration)
        #expect(again.effectiveJSON() == json)
    }

    @Test func effectiveJSONIsValidJSON() throws {
        let json = try fullConfiguration().effectiveJSON()
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let listeners = try #require(object?["listeners"] as? [[String: Any]])
        #expect(listeners.count == 2)
        #expect(object?["status"] is [String: Any])
        #expect((listeners[1]["policy"] as? [String: Any])?["allow-all"] as? Bool == true)
        #expect(listeners[0]["proxy-protocol"] as? String == "off")
        #expect(listeners[1]["proxy-protocol"] as? String == "v2")
    }

    @Test func flagsConfigurationDescribesItself() throws {
        let text = try PortcullisConfiguration(flags: files.validFlags()).effectiveDescription()
        #expect(text.contains("  - name: server\n"))
        #expect(text.contains("        - cn=app-1: cn=app-1\n"))
        #expect(text.contains("status: none (no status endpoint)\n"))
    }

    // MARK: Examples

    @Test func everyExampleParses() throws {
        let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let examples = root.appendingPathComponent("examples").path
        let enumerator = try #require(FileManager.default.enumerator(atPath: examples))
        var found: [String] = []
        while let relative = enumerator.nextObject() as? String {
            guard relative.hasSuffix(".yaml") || relative.hasSuffix(".yml") else { continue }
            if relative.hasPrefix("prometheus/") { continue }  // Prometheus's own files, not Portcullis configurations
            // Kubernetes objects; the configuration in the ConfigMap is checked by tests/e2e/test_rotation_recipes.py.
            if relative.hasPrefix("kubernetes/") { continue }
            let path = examples + "/" + relative
            found.append(relative)
            let text = try String(contentsOfFile: path, encoding: .utf8)
            do {
                let configuration = try PortcullisConfiguration.parse(yaml: text, source: path, checkFiles: false)
                #expect(!configuration.listeners.isEmpty)
                // portcullis.yaml is the server side, portcullis-client.yaml the client side of the pair.
                let name = (relative as NSString).lastPathComponent
                if name == "portcullis.yaml" || name == "portcullis-client.yaml" {
                    let mode: ListenerMode = name == "portcullis-client.yaml" ? .client : .server
                    #expect(configuration.listeners.allSatisfy { $0.mode == mode }, "\(relative)")
                }
            } catch {
                Issue.record("\(error)")
            }
        }
        #expect(found.count >= 10, "found only \(found.sorted())")
        for system in ["valkey", "nsq", "rocketmq", "zeromq", "erlang", "generic"] {
            #expect(found.contains("\(system)/portcullis.yaml"))
        }
        for system in ["valkey", "nsq", "zeromq", "erlang"] {
            #expect(found.contains("\(system)/portcullis-client.yaml"))
        }
    }
}
