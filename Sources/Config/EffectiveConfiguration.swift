import Policy

/// What `portcullis check` prints: every setting with the value in force, defaults included.
extension PortcullisConfiguration {
    /// A YAML-like listing for people: one setting per line, paths absolute, durations in canonical form, each
    /// rule with its conditions (`payments-workers: ou=payments AND uri=spiffe://example.org/ns/prod/*`).
    /// Values are escaped so that every setting stays on its line.
    public func effectiveDescription() -> String {
        var lines: [String] = []
        func add(_ indent: Int, _ text: String) { lines.append(String(repeating: " ", count: indent) + text) }
        func value(_ text: String) -> String { escapedForLog(text) }

        add(0, "log:")
        add(2, "format: \(log.format.rawValue)")
        add(2, "level: \(log.level)")
        add(2, "quiet-handshake-failures: \(log.quietHandshakeFailures)")
        add(2, "syslog: \(log.syslog)")
        if let status {
            add(0, "status:")
            add(2, "listen: \(value(status.listenDescription))")
            add(2, "unsafe-listen: \(status.unsafeListen)")
        } else {
            add(0, "status: none (no status endpoint)")
        }
        add(0, "workers: \(workers)")
        add(0, "shutdown-timeout: \(formatDuration(shutdownTimeoutMs))")
        add(0, "session-cache-size: \(sessionCacheSize)")
        add(0, "limits:")
        add(2, "handshakes: \(handshakeLimits.inProgress)")
        add(2, "handshakes-per-source: \(handshakeLimits.perSource)")
        add(2, "handshake-rate-per-source: \(handshakeLimits.ratePerSource)")
        add(0, "listeners:")
        for listener in listeners {
            add(2, "- name: \(value(listener.name))")
            add(4, "mode: \(listener.mode.rawValue)")
            let client = listener.mode == .client
            add(4, "listen: \(listener.listen)")
            if client { add(4, "unsafe-listen: \(listener.unsafeListen)") }
            add(4, "target: \(value(listener.target.description))")
            if !client {
                add(4, "unsafe-target: \(listener.unsafeTarget)")
                let header = listener.proxyProtocol == .v2 ? " (a PROXY v2 header precedes each connection's bytes)" : ""
                add(4, "proxy-protocol: \(listener.proxyProtocol.rawValue)\(header)")
            }
            let tls = listener.tls
            add(4, "tls:")
            if let keystore = tls.keystorePath {
                add(6, "keystore: \(value(keystore))")
                if let passwordFile = tls.keystorePasswordPath {
                    add(6, "keystore-password-file: \(value(passwordFile))")
                } else if tls.keystorePassword != nil {
                    add(6, "keystore-password-file: none (the password was given with --storepass; not shown)")
                } else {
                    add(6, "keystore-password-file: none (the keystore has no password)")
                }
            } else if let certificate = tls.certificatePath, let key = tls.keyPath {
                add(6, "cert: \(value(certificate))")
                add(6, "key: \(value(key))")
                add(6, "key-passphrase-file: \(tls.keyPassphrasePath.map(value) ?? "none (the key is not encrypted)")")
            }
            if client { add(6, "disable-authentication: \(tls.disableAuthentication)\(tls.disableAuthentication ? " (no client certificate is presented)" : "")") }
            add(6, "cacert: \(tls.caPath.map(value) ?? "none (the system trust store: OpenSSL's default paths, or SSL_CERT_FILE/SSL_CERT_DIR)")")
            if client { add(6, "server-name: \(listener.serverName.map(value) ?? "none")") }
            if tls.crlPaths.isEmpty {
                add(6, "crl: none")
            } else {
                add(6, "crl:")
                for path in tls.crlPaths { add(8, "- \(value(path))") }
            }
            add(6, "crl-scope: \(tls.crlScope.configValue)")
            add(6, "crl-expired: \(tls.crlExpired.rawValue)")
            add(6, "min-version: \(tls.minimumVersion.configValue)")
            add(6, "cipher-suites: \(tls.cipherSuites ?? "OpenSSL default")")
            add(6, "groups: \(tls.groups ?? "OpenSSL default")")
            add(6, "session-tickets: \(tls.sessionTickets)")
            if !client { add(6, "session-ticket-count: \(tls.sessionTickets ? tls.sessionTicketCount : 0)") }
            let timeouts = listener.timeouts
            add(4, "timeouts:")
            add(6, "handshake: \(formatDuration(timeouts.handshake))")
            add(6, "connect: \(formatDuration(timeouts.connect))")
            add(6, "idle: \(formatDuration(timeouts.idle))\(timeouts.idle == 0 ? " (off)" : "")")
            add(6, "close: \(formatDuration(timeouts.close))\(timeouts.close == 0 ? " (no half-close wait)" : "")")
            add(6, "max-lifetime: \(formatDuration(timeouts.maxLifetime))\(timeouts.maxLifetime == 0 ? " (off)" : "")")
            add(4, "max-connections: \(listener.maxConnections)\(listener.maxConnections == 0 ? " (unlimited)" : "")")
            add(4, "reauthorize: \(listener.reauthorize)")
            add(4, "close-at-cert-expiry: \(listener.closeAtCertExpiry)")
            let policy = listener.policy
            add(4, "policy:")
            add(6, "allow-all: \(policy.allowAll)")
            if client {
                let check = listener.verifyServerName
                    ? " (the server's certificate must carry \(listener.serverName.map(value) ?? "the server name"))"
                    : " (the rules alone judge the server)"
                add(6, "verify-server-name: \(listener.verifyServerName)\(check)")
            }
            for (key, rules) in [("deny", policy.deny), ("rules", policy.rules)] {
                if rules.isEmpty {
                    add(6, "\(key): none")
                } else {
                    add(6, "\(key):")
                    for rule in rules { add(8, "- \(value(rule.name)): \(value(rule.conditions))") }
                }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The same settings as pretty JSON, keys in the order of docs/CONFIG.md and named as in the file, absent
    /// optional values as `null`. It is itself a valid configuration file (YAML includes JSON) that validates to
    /// an equal configuration.
    public func effectiveJSON() -> String {
        var out = ""
        configurationJSON.write(to: &out, indent: 0)
        return out + "\n"
    }

    private var configurationJSON: JSONValue {
        .object([
            ("log", .object([("format", .string(log.format.rawValue)), ("level", .string(log.level)),
                             ("quiet-handshake-failures", .bool(log.quietHandshakeFailures)), ("syslog", .bool(log.syslog))])),
            ("status", status.map { .object([("listen", .string($0.listenDescription)), ("unsafe-listen", .bool($0.unsafeListen))]) } ?? .null),
            ("workers", .integer(workers)),
            ("shutdown-timeout", .string(formatDuration(shutdownTimeoutMs))),
            ("session-cache-size", .integer(sessionCacheSize)),
            ("limits", .object([("handshakes", .integer(handshakeLimits.inProgress)),
                                ("handshakes-per-source", .integer(handshakeLimits.perSource)),
                                ("handshake-rate-per-source", .integer(handshakeLimits.ratePerSource))])),
            ("listeners", .array(listeners.map(\.json))),
        ])
    }
}

extension ListenerSettings {
    /// The keys of the other mode are left out: a file may not write them.
    fileprivate var json: JSONValue {
        let client = mode == .client
        func only(_ written: Bool, _ member: (String, JSONValue)) -> [(String, JSONValue)] { written ? [member] : [] }
        return .object([
            ("name", .string(name)),
            ("mode", .string(mode.rawValue)),
            ("listen", .string(listen.description)),
        ] + only(client, ("unsafe-listen", .bool(unsafeListen))) + [
            ("target", .string(target.description)),
        ] + only(!client, ("unsafe-target", .bool(unsafeTarget)))
          + only(!client, ("proxy-protocol", .string(proxyProtocol.rawValue))) + [
            ("tls", .object([
                ("cert", tls.certificatePath.map(JSONValue.string) ?? .null),
                ("key", tls.keyPath.map(JSONValue.string) ?? .null),
                ("key-passphrase-file", tls.keyPassphrasePath.map(JSONValue.string) ?? .null),
                ("keystore", tls.keystorePath.map(JSONValue.string) ?? .null),
                // A --storepass password is never shown; only that one was given.
                ("keystore-password-file", tls.keystorePasswordPath.map(JSONValue.string) ?? .null),
            ] + only(tls.keystorePassword != nil, ("storepass", .string("(hidden)")))
              + only(client, ("disable-authentication", .bool(tls.disableAuthentication))) + [
                ("cacert", tls.caPath.map(JSONValue.string) ?? .null),
            ] + only(client, ("server-name", serverName.map(JSONValue.string) ?? .null)) + [
                ("crl", .array(tls.crlPaths.map(JSONValue.string))),
                ("crl-scope", .string(tls.crlScope.configValue)),
                ("crl-expired", .string(tls.crlExpired.rawValue)),
                ("min-version", .string(tls.minimumVersion.configValue)),
                ("cipher-suites", tls.cipherSuites.map(JSONValue.string) ?? .null),
                ("groups", tls.groups.map(JSONValue.string) ?? .null),
                ("session-tickets", .bool(tls.sessionTickets)),
            ] + only(!client, ("session-ticket-count", .integer(tls.sessionTickets ? tls.sessionTicketCount : 0))))),
            ("timeouts", .object([
                ("handshake", .string(formatDuration(timeouts.handshake))),
                ("connect", .string(formatDuration(timeouts.connect))),
                ("idle", .string(formatDuration(timeouts.idle))),
                ("close", .string(formatDuration(timeouts.close))),
                ("max-lifetime", .string(formatDuration(timeouts.maxLifetime))),
            ])),
            ("max-connections", .integer(maxConnections)),
            ("reauthorize", .bool(reauthorize)),
            ("close-at-cert-expiry", .bool(closeAtCertExpiry)),
            ("policy", .object([
                ("allow-all", .bool(policy.allowAll)),
            ] + only(client, ("verify-server-name", .bool(verifyServerName))) + [
                ("deny", .array(policy.deny.map(\.json))),
                ("rules", .array(policy.rules.map(\.json))),
            ])),
        ])
    }
}

extension AccessRule {
    /// `{"name": "ops", "cn": "ops-*"}`: the rule as written in a file.
    fileprivate var json: JSONValue {
        .object([("name", .string(name))] + matchers.map { ($0.kind.rawValue, .string($0.value)) })
    }
}

/// `300000` → `5m`, `90500` → `1m30s500ms`, `0` → `0s`: the shortest form `Validate.duration` reads back.
func formatDuration(_ milliseconds: UInt64) -> String {
    guard milliseconds > 0 else { return "0s" }
    var text = ""
    var rest = milliseconds
    for (unit, suffix) in [(UInt64(3_600_000), "h"), (60_000, "m"), (1_000, "s"), (1, "ms")] where rest >= unit {
        text += "\(rest / unit)\(suffix)"
        rest %= unit
    }
    return text
}

/// Just enough JSON to print a configuration with its keys in a fixed order.
enum JSONValue {
    case string(String)
    case integer(Int)
    case bool(Bool)
    case null
    case array([JSONValue])
    case object([(String, JSONValue)])

    func write(to out: inout String, indent: Int) {
        let inner = String(repeating: "  ", count: indent + 1)
        let closing = String(repeating: "  ", count: indent)
        switch self {
        case .string(let text): out += jsonString(text)
        case .integer(let number): out += String(number)
        case .bool(let flag): out += flag ? "true" : "false"
        case .null: out += "null"
        case .array(let items):
            guard !items.isEmpty else { out += "[]"; return }
            out += "[\n"
            for (index, item) in items.enumerated() {
                out += inner
                item.write(to: &out, indent: indent + 1)
                out += index == items.count - 1 ? "\n" : ",\n"
            }
            out += closing + "]"
        case .object(let members):
            guard !members.isEmpty else { out += "{}"; return }
            out += "{\n"
            for (index, (key, value)) in members.enumerated() {
                out += inner + jsonString(key) + ": "
                value.write(to: &out, indent: indent + 1)
                out += index == members.count - 1 ? "\n" : ",\n"
            }
            out += closing + "}"
        }
    }
}
