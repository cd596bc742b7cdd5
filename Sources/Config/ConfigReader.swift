import Policy
import Yams

/// Turns the YAML node tree of a configuration file into a `PortcullisConfiguration`.
///
/// The tree is walked by hand (not `Codable`) so that every problem names its key path and line. Problems are
/// collected as the walk goes and the earliest in the file is thrown, as one line:
/// `portcullis.yaml:14: listeners[1].policy.rules[0].uri: '*spiffe' is not a valid pattern: …`.
/// A value that failed is left out of later checks, so one mistake never causes a second message.
final class ConfigReader {
    let source: String
    let baseDirectory: String
    let checkFiles: Bool
    private var problems: [(line: Int, column: Int, error: ConfigError)] = []

    init(source: String, baseDirectory: String, checkFiles: Bool) {
        self.source = source
        self.baseDirectory = baseDirectory
        self.checkFiles = checkFiles
    }

    func read(_ yaml: String) throws(ConfigError) -> PortcullisConfiguration {
        let root = try compose(yaml)
        guard let root, !isNull(root) else {
            throw ConfigError(key: nil, message: "\(location(line: 1)) the file is empty: add a 'listeners' list (see docs/CONFIG.md)")
        }
        let configuration = configuration(root)
        // The earliest problem in the file; among problems at one spot, the first reported.
        if let first = problems.indices.min(by: { (problems[$0].line, problems[$0].column, $0) < (problems[$1].line, problems[$1].column, $1) }) {
            throw problems[first].error
        }
        guard let configuration else { preconditionFailure("configuration file rejected without a reported problem") }
        return configuration
    }

    // MARK: Sections

    private static let topKeys = ["log", "status", "workers", "shutdown-timeout", "session-cache-size", "listeners"]
    private static let logKeys = ["format", "level", "quiet-handshake-failures"]
    private static let statusKeys = ["listen", "unsafe-listen"]
    private static let listenerKeys = [
        "name", "mode", "listen", "unsafe-listen", "target", "unsafe-target", "proxy-protocol", "tls", "timeouts",
        "max-connections", "reauthorize", "close-at-cert-expiry", "policy",
    ]
    private static let tlsKeys = [
        "cert", "key", "key-passphrase-file", "cacert", "server-name", "crl", "crl-scope", "crl-expired", "min-version",
        "cipher-suites", "groups", "session-tickets", "session-ticket-count",
    ]
    private static let timeoutKeys = ["handshake", "connect", "idle", "close"]
    private static let policyKeys = ["allow-all", "verify-server-name", "deny", "rules"]
    private static let ruleKeys = ["name"] + Matcher.Kind.allCases.map(\.rawValue)

    /// Unknown keys that users plausibly write, with where the setting really is.
    private static let topHints: [String: String] = {
        var hints = [
            "listener": "did you mean 'listeners'?",
            "log-format": "use log.format", "log-level": "use log.level",
            "shutdown": "use shutdown-timeout",
            "unsafe-listen": "use status.unsafe-listen, or set it on a client-mode listener",
        ]
        for key in listenerKeys + tlsKeys + timeoutKeys + policyKeys {
            hints[key] = hints[key] ?? "it belongs to a listener: put it under 'listeners'"
        }
        return hints
    }()

    private static let listenerHints: [String: String] = {
        var hints = [
            "backend": "use target", "unsafe-backend": "use unsafe-target",
            "handshake-timeout": "use timeouts.handshake", "connect-timeout": "use timeouts.connect",
            "idle-timeout": "use timeouts.idle", "close-timeout": "use timeouts.close",
            "shutdown-timeout": "it is process-wide: set it at the top level, not per listener",
            "max-concurrent-conns": "use max-connections", "min-tls": "use tls.min-version",
            "workers": "it is process-wide: set it at the top level, not per listener",
            "override-server-name": "use tls.server-name", "sni": "use tls.server-name",
            "send-proxy": "use proxy-protocol: v2", "send-proxy-v2": "use proxy-protocol: v2",
            "proxy-protocol-v2": "use proxy-protocol: v2",
        ]
        for key in tlsKeys { hints[key] = "it belongs under 'tls'" }
        for key in timeoutKeys { hints[key] = "it belongs under 'timeouts'" }
        for key in policyKeys { hints[key] = "it belongs under 'policy'" }
        for kind in Matcher.Kind.allCases {
            hints[kind.rawValue] = "matchers belong in a rule under 'policy.rules'"
            hints["allow-" + kind.rawValue] = "write a rule under 'policy.rules', e.g. {name: app, \(kind.rawValue): …}"
            hints["verify-" + kind.rawValue] = "write a rule under 'policy.rules', e.g. {name: broker, \(kind.rawValue): …}"
        }
        return hints
    }()

    private static let tlsHints = [
        "certificate": "did you mean 'cert'?", "private-key": "did you mean 'key'?",
        "ca": "did you mean 'cacert'?", "ca-file": "did you mean 'cacert'?", "cafile": "did you mean 'cacert'?",
        "crls": "did you mean 'crl'?", "min-tls": "did you mean 'min-version'?", "ciphers": "did you mean 'cipher-suites'?",
        "curves": "did you mean 'groups'?", "tickets": "did you mean 'session-tickets'?",
        "sni": "did you mean 'server-name'?", "override-server-name": "did you mean 'server-name'?",
        "verify-server-name": "it belongs under 'policy'",
    ]

    private static let timeoutHints = ["shutdown": "it is process-wide: set the top-level shutdown-timeout"]

    private static let policyHints: [String: String] = {
        var hints = ["allow": "did you mean 'rules'?", "allow-rules": "did you mean 'rules'?"]
        for kind in Matcher.Kind.allCases {
            hints[kind.rawValue] = "matchers belong in a rule: rules: [{name: …, \(kind.rawValue): …}]"
            hints["allow-" + kind.rawValue] = "write a rule: rules: [{name: …, \(kind.rawValue): …}]"
            hints["verify-" + kind.rawValue] = "write a rule: rules: [{name: …, \(kind.rawValue): …}]"
        }
        hints["server-name"] = "it belongs under 'tls'"
        return hints
    }()

    private static let ruleHints = [
        "spiffe-id": "did you mean 'spiffe'?", "spiffeid": "did you mean 'spiffe'?",
        "common-name": "did you mean 'cn'?", "organization": "did you mean 'o'?",
        "organizational-unit": "did you mean 'ou'?", "dns-name": "did you mean 'dns'?",
        "sha256": "did you mean 'fingerprint' or 'spki'?", "pin": "did you mean 'spki'?",
        "allow-all": "it belongs under 'policy', not in a rule",
    ]

    private func configuration(_ root: Node) -> PortcullisConfiguration? {
        guard let top = fields(root, path: "", known: Self.topKeys, hints: Self.topHints, extensions: true) else { return nil }
        var ok = true

        var log = LogSettings()
        if let section = optionalSection(top, "log", known: Self.logKeys) {
            if let (format, node) = string(section, "format") {
                if let value = validate(node, section.child("format"), { k throws(ConfigError) in try Validate.logFormat(format, key: k) }) {
                    log.format = value
                } else { ok = false }
            }
            if let (level, node) = string(section, "level") {
                if let value = validate(node, section.child("level"), { k throws(ConfigError) in try Validate.logLevel(level, key: k) }) {
                    log.level = value
                } else { ok = false }
            }
            if let quiet = bool(section, "quiet-handshake-failures") { log.quietHandshakeFailures = quiet }
        } else if top["log"] != nil && !isNull(top["log"]!.value) { ok = false }

        var status: StatusSettings?
        var statusAddress: (address: ListenAddress, node: Node)?
        if let section = optionalSection(top, "status", known: Self.statusKeys) {
            let unsafeListen = bool(section, "unsafe-listen") ?? false
            if let (text, node) = string(section, "listen", required: "give the address for health and metrics, e.g. 127.0.0.1:9100") {
                if let (listen, address) = statusListen(text, unsafe: unsafeListen, node: node, path: section.child("listen")) {
                    status = StatusSettings(listen: listen, unsafeListen: unsafeListen)
                    if let address { statusAddress = (address, node) }
                }
            }
            if status == nil { ok = false }
        } else if top["status"] != nil && !isNull(top["status"]!.value) { ok = false }

        let workers = integer(top, "workers", in: 1...256, hint: "use 1-256") ?? Validate.defaultWorkers
        let shutdown = duration(top, "shutdown-timeout", positive: false) ?? Timeouts.defaults.shutdown
        let sessionCacheSize = integer(top, "session-cache-size", in: 1...10_000_000,
                                       hint: "use 1-10000000 (to turn resumption off, set session-tickets: false)")
            ?? PortcullisConfiguration.defaultSessionCacheSize

        var listeners: [ListenerSettings] = []
        if let list = sequence(top, "listeners", required: "add at least one listener (see docs/CONFIG.md)") {
            if list.items.isEmpty {
                report(list.node, "listeners", "listeners: is empty: add at least one listener (see docs/CONFIG.md)")
            }
            var names: [String: Node] = [:]
            var bound: [(address: ListenAddress, node: Node, owner: String)] = []
            if let statusAddress { bound.append((statusAddress.address, statusAddress.node, "status.listen")) }
            for (index, item) in list.items.enumerated() {
                let path = "listeners[\(index)]"
                let parsed = listener(item, path: path, shutdownTimeout: shutdown)
                if let (name, node) = parsed.name {
                    if let first = names[name] {
                        report(node, path + ".name", "\(path).name: duplicate listener name \(singleQuoted(name)) (first on line \(line(first))): give each listener its own name")
                    } else {
                        names[name] = node
                    }
                }
                if let (address, node) = parsed.listen {
                    let owner = parsed.name.map { "listener " + singleQuoted($0.0) } ?? path
                    if let other = bound.first(where: { conflict($0.address, address) }) {
                        let problem = other.address == address
                            ? "is already used by \(other.owner) (line \(line(other.node))): give each listener its own address"
                            : "overlaps \(other.owner) on \(singleQuoted(other.address.description)) (line \(line(other.node))): a wildcard address takes the port on every interface; use another port"
                        report(node, path + ".listen", "\(path).listen: \(singleQuoted(address.description)) \(problem)")
                    } else {
                        bound.append((address, node, owner))
                    }
                }
                if let settings = parsed.settings { listeners.append(settings) } else { ok = false }
            }
        } else {
            ok = false
        }
        guard ok, problems.isEmpty else { return nil }
        return PortcullisConfiguration(log: log, status: status, workers: workers, shutdownTimeoutMs: shutdown,
                                       sessionCacheSize: sessionCacheSize, listeners: listeners)
    }

    /// The canonical status address and, for TCP, the address it binds.
    private func statusListen(_ text: String, unsafe: Bool, node: Node, path: String) -> (String, ListenAddress?)? {
        let parsed = validate(node, path) { k throws(ConfigError) in
            try Validate.statusAddress(text, key: k, allowNonLoopback: unsafe, unsafeKey: "status.unsafe-listen: true")
        }
        return parsed.map { ($0.canonical, $0.address) }
    }

    private struct ParsedListener {
        var settings: ListenerSettings?
        var name: (String, Node)?
        var listen: (ListenAddress, Node)?
    }

    private func listener(_ node: Node, path: String, shutdownTimeout: UInt64) -> ParsedListener {
        var parsed = ParsedListener()
        guard let f = fields(node, path: path, known: Self.listenerKeys, hints: Self.listenerHints) else { return parsed }
        var ok = true

        if let (name, nameNode) = string(f, "name", required: "name the listener; logs, metrics and 'check --listener' use it") {
            if name.isEmpty || name.utf8.count > 64 || !name.utf8.allSatisfy(isNameByte) {
                report(nameNode, f.child("name"), "\(f.child("name")): \(singleQuoted(name)) is not a valid listener name: use 1-64 letters, digits, '.', '_' or '-'")
            } else {
                parsed.name = (name, nameNode)
            }
        }

        var mode = ListenerMode.server
        if let (text, modeNode) = string(f, "mode") {
            if let value = ListenerMode(rawValue: text) {
                mode = value
            } else {
                // What else is required or allowed depends on the mode: the mode is the one problem to fix.
                report(modeNode, f.child("mode"), "\(f.child("mode")): \(singleQuoted(text)) is not a mode: use server or client")
                return parsed
            }
        } else if f["mode"] != nil && !isNull(f["mode"]!.value) {
            return parsed
        }
        let client = mode == .client

        // Keys of the other mode: one message, and the value is not looked at.
        if !client { onlyIn(.client, f, "unsafe-listen", why: "a server-mode listener accepts TLS on any address") }
        if client {
            onlyIn(.server, f, "unsafe-target", why: "in client mode the target is the remote TLS server and may be any address")
            onlyIn(.server, f, "proxy-protocol", why: "in client mode the target is a remote TLS server, which expects a TLS handshake, not a PROXY header")
        }
        let unsafeListen = client ? bool(f, "unsafe-listen") : nil
        let unsafeTarget = client ? nil : bool(f, "unsafe-target")
        var proxyProtocol = ProxyProtocolVersion.off
        if !client, let (text, node) = string(f, "proxy-protocol") {
            if let value = validate(node, f.child("proxy-protocol"), { k throws(ConfigError) in try Validate.proxyProtocol(text, key: k) }) {
                proxyProtocol = value
            } else { ok = false }
        } else if !client && !isAbsent(f, "proxy-protocol") { ok = false }

        let listenWhy = client
            ? "give the local address to accept plaintext connections on, e.g. 127.0.0.1:4150"
            : "give the address to accept TLS connections on, e.g. 0.0.0.0:8443"
        if let (text, listenNode) = string(f, "listen", required: listenWhy) {
            let key = f.child("listen")
            if let address = validate(listenNode, key, { k throws(ConfigError) in try Validate.listenAddress(text, key: k) }) {
                if client && !address.isLoopback && unsafeListen != true {
                    // With a malformed unsafe-listen, that key's own problem is the one to fix.
                    if unsafeListen == false || isAbsent(f, "unsafe-listen") {
                        report(listenNode, key, "\(key): \(singleQuoted(text)) is not a loopback address (set unsafe-listen: true to allow it)")
                    }
                } else {
                    parsed.listen = (address, listenNode)
                }
            }
        }

        var target: TargetAddress?
        var targetName: String?
        let targetWhy = client
            ? "give the remote TLS server to connect to, e.g. broker-1.internal:4443"
            : "give the backend to forward to, e.g. 127.0.0.1:6379 or unix:/run/app.sock"
        if let (text, targetNode) = string(f, "target", required: targetWhy) {
            let key = f.child("target")
            if client {
                if let (value, name) = validate(targetNode, key, { k throws(ConfigError) in try Validate.remoteTarget(text, key: k) }) {
                    target = value
                    targetName = name
                }
            } else if let value = validate(targetNode, key, { k throws(ConfigError) in
                try Validate.targetAddress(text, key: k, allowNonLoopback: true, unsafeKey: "unsafe-target")
            }) {
                if !value.isLoopback && unsafeTarget != true {
                    // With a malformed unsafe-target, that key's own problem is the one to fix.
                    if unsafeTarget == false || isAbsent(f, "unsafe-target") {
                        report(targetNode, key, "\(key): \(singleQuoted(text)) is not a loopback address (set unsafe-target: true to allow it)")
                    }
                } else {
                    target = value
                }
            }
        }

        var tls: ListenerTLSSettings?
        var writtenServerName: String??
        if let section = requiredSection(f, "tls", known: Self.tlsKeys, hints: Self.tlsHints, why: "give at least cert, key and cacert") {
            (tls, writtenServerName) = self.tls(section, mode: mode)
        }

        let defaults = Timeouts.defaults
        var timeouts = Timeouts(handshake: defaults.handshake, connect: defaults.connect, idle: defaults.idle,
                                close: defaults.close, shutdown: shutdownTimeout)
        if let section = optionalSection(f, "timeouts", known: Self.timeoutKeys, hints: Self.timeoutHints) {
            timeouts.handshake = duration(section, "handshake", positive: true) ?? timeouts.handshake
            timeouts.connect = duration(section, "connect", positive: true) ?? timeouts.connect
            timeouts.idle = duration(section, "idle", positive: false) ?? timeouts.idle
            timeouts.close = duration(section, "close", positive: false) ?? timeouts.close
        } else if f["timeouts"] != nil && !isNull(f["timeouts"]!.value) { ok = false }

        let maxConnections = integer(f, "max-connections", in: 0...Int(Int32.max), hint: "use 0 (unlimited) or a positive count") ?? 0
        let reauthorize = bool(f, "reauthorize") ?? true
        let closeAtCertExpiry = bool(f, "close-at-cert-expiry") ?? false
        let judged = self.policy(f, mode: mode)

        guard ok, let name = parsed.name?.0, let listen = parsed.listen?.0, let target, let tls, let judged,
              writtenServerName != .some(nil)
        else { return parsed }
        var serverName: String?
        if client, let targetName {
            serverName = (writtenServerName ?? nil) ?? Validate.defaultServerName(targetName: targetName, rules: judged.policy.rules)
        }
        parsed.settings = ListenerSettings(
            name: name, mode: mode, listen: listen, unsafeListen: unsafeListen ?? false, target: target,
            unsafeTarget: unsafeTarget ?? false, proxyProtocol: proxyProtocol, tls: tls, timeouts: timeouts, maxConnections: maxConnections,
            reauthorize: reauthorize, closeAtCertExpiry: closeAtCertExpiry, policy: judged.policy,
            serverName: serverName, verifyServerName: judged.verifyServerName)
        return parsed
    }

    /// Reports `f[name]`, when written with a value, as a key of `mode` only.
    private func onlyIn(_ mode: ListenerMode, _ f: Fields, _ name: String, why: String) {
        guard let entry = f[name], !isNull(entry.value) else { return }
        report(entry.value, f.child(name), "\(f.child(name)): applies to \(mode.rawValue) mode only: \(why); remove it")
    }

    /// The key is not written, or written without a value.
    private func isAbsent(_ f: Fields, _ name: String) -> Bool {
        f[name] == nil || isNull(f[name]!.value)
    }

    /// The TLS settings and, in client mode, `server-name` (`nil`: absent; `.some(nil)`: invalid, reported).
    private func tls(_ f: Fields, mode: ListenerMode) -> (ListenerTLSSettings?, String??) {
        let client = mode == .client
        let certificate = file(f, "cert", required: client
            ? "give the client certificate chain (PEM) that the server verifies"
            : "give the server certificate chain (PEM) that clients verify")
        let key = file(f, "key", required: "give the private key (PEM) for cert")
        let passphrase = file(f, "key-passphrase-file")
        let ca = file(f, "cacert", required: client
            ? "client mode verifies the server's certificate against it"
            : "server mode verifies every client certificate against it", allowDirectory: true)

        var crlPaths: [String] = []
        var crlOK = true
        if let entry = f["crl"], !isNull(entry.value) {
            switch entry.value {
            case .sequence(let list):
                for (index, item) in list.enumerated() {
                    let path = "\(f.child("crl"))[\(index)]"
                    if let text = scalarText(item, path: path, expected: "a path") {
                        if let resolved = resolve(text, node: item, path: path, allowDirectory: false) {
                            crlPaths.append(resolved)
                        } else { crlOK = false }
                    } else { crlOK = false }
                }
            default:
                if let text = scalarText(entry.value, path: f.child("crl"), expected: "a path or a list of paths"),
                   let resolved = resolve(text, node: entry.value, path: f.child("crl"), allowDirectory: false) {
                    crlPaths = [resolved]
                } else { crlOK = false }
            }
        }

        let scope = choice(f, "crl-scope", CRLScope.self, what: "a CRL scope", use: "use chain (every certificate of the chain) or leaf (the \(client ? "server" : "client") certificate only)")
        let expired = choice(f, "crl-expired", CRLExpiredPolicy.self, what: "a CRL expiry policy", use: "use reject (fail closed) or warn (accept and log)")

        var minimumVersion = TLSVersion.tls13
        var versionOK = true
        if let (text, node) = string(f, "min-version") {
            if let value = validate(node, f.child("min-version"), { k throws(ConfigError) in try Validate.tlsVersion(text, key: k) }) {
                minimumVersion = value
            } else { versionOK = false }
        }

        let suites = colonList(f, "cipher-suites") { text, k throws(ConfigError) in try Validate.cipherSuites(text, key: k) }
        let groups = colonList(f, "groups") { text, k throws(ConfigError) in try Validate.groups(text, key: k) }
        let sessionTickets = bool(f, "session-tickets") ?? true
        var ticketCount: Int?? = nil
        if client {
            onlyIn(.server, f, "session-ticket-count", why: "tickets are what a server sends; a client-mode listener resumes with the ones it receives")
        } else if !isAbsent(f, "session-ticket-count") {
            ticketCount = .some(integer(f, "session-ticket-count", in: 0...16, hint: "use 1 (the default) to 16, or 0 to send none"))
            if let count = ticketCount ?? nil, count > 0, !sessionTickets, let (_, node) = string(f, "session-ticket-count") {
                report(node, f.child("session-ticket-count"), "\(f.child("session-ticket-count")): tickets are off (session-tickets: false): remove one of the two")
                ticketCount = .some(nil)
            }
        }

        var serverName: String??
        if !client {
            onlyIn(.client, f, "server-name", why: "it is the name a client-mode listener expects from the server")
        } else if let (text, node) = string(f, "server-name") {
            serverName = .some(validate(node, f.child("server-name")) { k throws(ConfigError) in try Validate.serverName(text, key: k) })
        }

        guard let certificate, let key, let ca, passphrase != .some(nil), crlOK, versionOK,
              scope != .some(nil), expired != .some(nil), suites != .some(nil), groups != .some(nil), ticketCount != .some(nil)
        else { return (nil, serverName) }
        let settings = ListenerTLSSettings(
            certificatePath: certificate, keyPath: key, keyPassphrasePath: passphrase ?? nil, caPath: ca,
            crlPaths: crlPaths, crlScope: (scope ?? nil) ?? .chain, crlExpired: (expired ?? nil) ?? .reject,
            minimumVersion: minimumVersion, cipherSuites: suites ?? nil, groups: groups ?? nil,
            sessionTickets: sessionTickets,
            sessionTicketCount: (ticketCount ?? nil) ?? ListenerTLSSettings.defaultSessionTicketCount)
        return (settings, serverName)
    }

    /// `nil`: a problem was reported. Otherwise the policy, possibly without a problem reported yet for a rule that
    /// failed (then `problems` is not empty and the configuration is rejected anyway), and whether the server name
    /// is verified (client mode).
    ///
    /// Server mode needs rules or `allow-all: true`. Client mode needs neither: without rules the policy admits
    /// every server certificate (`allowAll`) and the server name is verified (`verify-server-name`, default `true`
    /// without rules and `false` with them). Turning the name check off without rules takes `allow-all: true` too.
    private func policy(_ listener: Fields, mode: ListenerMode) -> (policy: AccessPolicy, verifyServerName: Bool)? {
        let client = mode == .client
        let path = listener.child("policy")
        let emptyProblem = "\(path): no access rule given: add rules (e.g. rules: [{name: ops, cn: \"ops-*\"}]) or allow-all: true to admit every client whose certificate chains to tls.cacert"
        guard let entry = listener["policy"], !isNull(entry.value) else {
            if client { return (AccessPolicy(allowAll: true), true) }
            if !listener.rejectedKeys { report(listener.node, path, emptyProblem) }
            return nil
        }
        guard let f = fields(entry.value, path: path, known: Self.policyKeys, hints: Self.policyHints) else { return nil }
        let allowAll = bool(f, "allow-all")
        var verifyServerName: Bool?
        if client {
            verifyServerName = bool(f, "verify-server-name")
        } else {
            onlyIn(.client, f, "verify-server-name", why: "a server-mode listener judges clients by its rules")
        }
        // In file order, so that a repeated rule name is reported at its second appearance.
        var names: [String: Node] = [:]
        let deny: (written: Int, built: [AccessRule])?
        let rules: (written: Int, built: [AccessRule])?
        let noMatchersFix = client
            ? ", or remove the rule to verify only the server name"
            : ", or set policy.allow-all: true to admit every verified client"
        if (f.order.firstIndex(of: "deny") ?? .max) < (f.order.firstIndex(of: "rules") ?? .max) {
            deny = self.rules(f, "deny", requireName: false, names: &names, noMatchersFix: noMatchersFix)
            rules = self.rules(f, "rules", requireName: true, names: &names, noMatchersFix: noMatchersFix)
        } else {
            rules = self.rules(f, "rules", requireName: true, names: &names, noMatchersFix: noMatchersFix)
            deny = self.rules(f, "deny", requireName: false, names: &names, noMatchersFix: noMatchersFix)
        }
        guard let deny, let rules else { return nil }

        if allowAll == true && rules.written > 0 {
            let fix = client ? "accept only the servers that match a rule" : "admit only the clients that match a rule"
            report(f["allow-all"]!.value, f.child("allow-all"), "\(f.child("allow-all")): allow-all: true and rules are mutually exclusive: drop allow-all to \(fix)")
            return nil
        }
        if allowAll == nil && !isAbsent(f, "allow-all") { return nil }
        if verifyServerName == nil && client && !isAbsent(f, "verify-server-name") { return nil }
        if client {
            if rules.written > 0 {
                return (AccessPolicy(rules: rules.built, deny: deny.built), verifyServerName ?? false)
            }
            if verifyServerName == false && allowAll != true {
                let node = f["verify-server-name"]!.value
                report(node, f.child("verify-server-name"), "\(f.child("verify-server-name")): false without rules accepts every server whose certificate chains to tls.cacert: add rules, or set allow-all: true as well to mean it")
                return nil
            }
            return (AccessPolicy(deny: deny.built, allowAll: true), verifyServerName ?? true)
        }
        if allowAll != true && rules.written == 0 {
            if !f.rejectedKeys { report(entry.value, path, emptyProblem) }
            return nil
        }
        return (AccessPolicy(rules: rules.built, deny: deny.built, allowAll: allowAll ?? false), false)
    }

    /// The rules of `policy.deny` or `policy.rules`: `written` counts the entries in the file, `built` the valid ones.
    private func rules(
        _ f: Fields, _ name: String, requireName: Bool, names: inout [String: Node], noMatchersFix: String
    ) -> (written: Int, built: [AccessRule])? {
        guard let list = sequence(f, name) else {
            return f[name] == nil || isNull(f[name]!.value) ? (0, []) : nil
        }
        var built: [AccessRule] = []
        for (index, item) in list.items.enumerated() {
            let path = "\(f.child(name))[\(index)]"
            guard let rule = fields(item, path: path, known: Self.ruleKeys, hints: Self.ruleHints) else { continue }
            var ruleName: String?
            var ok = true
            if let (text, node) = string(rule, "name", required: requireName ? "name the rule; decisions and the audit log cite it" : nil) {
                if text.isEmpty || text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
                    report(node, rule.child("name"), "\(rule.child("name")): \(singleQuoted(text)) is not a valid rule name: use a non-empty name without control characters")
                    ok = false
                } else if let first = names[text] {
                    report(node, rule.child("name"), "\(rule.child("name")): duplicate rule name \(singleQuoted(text)) (first on line \(line(first))): give each rule its own name")
                    ok = false
                } else {
                    names[text] = node
                    ruleName = text
                }
            } else if requireName {
                ok = false
            }
            var matchers: [Matcher] = []
            for key in rule.order where key != "name" {
                guard let kind = Matcher.Kind(rawValue: key), let value = rule[key]?.value else { continue }
                let matcherPath = rule.child(key)
                if case .sequence = value {
                    report(value, matcherPath, "\(matcherPath): expected a string, got a list: all matchers of a rule must hold, so write one rule per alternative")
                    ok = false
                    continue
                }
                guard let text = scalarText(value, path: matcherPath, expected: "a string", nullHint: "give a pattern") else {
                    ok = false
                    continue
                }
                if let matcher = validate(value, matcherPath, { k throws(ConfigError) in try Validate.matcher(text, kind: kind, key: k) }) {
                    matchers.append(matcher)
                } else {
                    ok = false
                }
            }
            if matchers.isEmpty && ok && !rule.rejectedKeys {
                let kinds = Matcher.Kind.allCases.map(\.rawValue).joined(separator: ", ")
                let what = ruleName.map { "rule \(singleQuoted($0))" } ?? "the entry"
                let fix = requireName ? noMatchersFix : ""
                report(item, path, "\(path): \(what) has no matchers: give at least one of \(kinds)\(fix)")
                continue
            }
            guard ok, !matchers.isEmpty else { continue }
            do {
                built.append(try AccessRule(name: ruleName ?? matchers.map(\.description).joined(separator: " AND "), matchers: matchers))
            } catch {
                report(item, path, "\(path): \(error.message)")
            }
        }
        return (list.items.count, built)
    }

    // MARK: Mappings

    /// A mapping's keys after merges (`<<: *anchor`), unknown and duplicate keys reported.
    struct Fields {
        let path: String
        let node: Node
        /// Known keys in file order.
        var order: [String] = []
        /// Whether an unknown or repeated key was reported: then a "missing" key is most likely that one misspelled,
        /// and only the misspelling is reported.
        var rejectedKeys = false
        var entries: [String: (key: Node, value: Node)] = [:]

        subscript(name: String) -> (key: Node, value: Node)? { entries[name] }

        func child(_ name: String) -> String { path.isEmpty ? name : path + "." + name }
    }

    private func fields(_ node: Node, path: String, known: [String], hints: [String: String] = [:], extensions: Bool = false) -> Fields? {
        guard case .mapping(let mapping) = node else {
            let what = path.isEmpty ? "expected a mapping of settings at the top level" : "\(path): expected a mapping"
            report(node, path, "\(what), got \(describe(node))")
            return nil
        }
        var f = Fields(path: path, node: node)
        var seen: [String: Node] = [:]
        var merged: [(Node, Node)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                report(keyNode, path, "\(path.isEmpty ? "" : path + ": ")keys must be strings, got \(describe(keyNode))")
                continue
            }
            let name = withoutSentinel(scalar.string)
            if name == "<<" && scalar.style == .plain {
                merged += mergeSources(value, path: f.child("<<"))
                continue
            }
            if let first = seen[name] {
                report(keyNode, f.child(name), "\(f.child(name)): duplicate key (first on line \(line(first))): remove one")
                f.rejectedKeys = true
                continue
            }
            seen[name] = keyNode
            add(name, keyNode, value, to: &f, known: known, hints: hints, extensions: extensions)
        }
        for (keyNode, value) in merged {
            guard case .scalar(let scalar) = keyNode else { continue }
            let name = withoutSentinel(scalar.string)
            guard seen[name] == nil else { continue }  // written keys override merged ones
            seen[name] = keyNode
            add(name, keyNode, value, to: &f, known: known, hints: hints, extensions: extensions)
        }
        return f
    }

    private func add(_ name: String, _ keyNode: Node, _ value: Node, to f: inout Fields, known: [String], hints: [String: String], extensions: Bool) {
        if known.contains(name) {
            f.order.append(name)
            f.entries[name] = (keyNode, value)
        } else if !(extensions && name.hasPrefix("x-")) {
            f.rejectedKeys = true
            report(keyNode, f.child(name), "\(f.child(name)): unknown key\(suggestion(for: name, known: known, hints: hints))")
        }
    }

    /// The pairs a merge key brings in: one mapping or a list of mappings (earlier ones win).
    private func mergeSources(_ value: Node, path: String) -> [(Node, Node)] {
        switch value {
        case .mapping(let mapping):
            return mapping.map { ($0.key, $0.value) }
        case .sequence(let list):
            var pairs: [(Node, Node)] = []
            for item in list {
                guard case .mapping(let mapping) = item else {
                    report(item, path, "\(path): expected a mapping to merge, got \(describe(item))")
                    continue
                }
                pairs += mapping.map { ($0.key, $0.value) }
            }
            return pairs
        default:
            report(value, path, "\(path): expected a mapping or a list of mappings to merge, got \(describe(value))")
            return []
        }
    }

    private func suggestion(for name: String, known: [String], hints: [String: String]) -> String {
        if let hint = hints[name] { return " (\(hint))" }
        let lowered = name.lowercased()
        var best: (key: String, distance: Int)?
        for key in known {
            let distance = editDistance(lowered, key)
            if distance <= 2, distance < best?.distance ?? .max { best = (key, distance) }
        }
        if let best { return " (did you mean \(singleQuoted(best.key))?)" }
        return ": use one of " + known.joined(separator: ", ")
    }

    private func optionalSection(_ f: Fields, _ name: String, known: [String], hints: [String: String] = [:]) -> Fields? {
        guard let entry = f[name], !isNull(entry.value) else { return nil }
        return fields(entry.value, path: f.child(name), known: known, hints: hints)
    }

    private func requiredSection(_ f: Fields, _ name: String, known: [String], hints: [String: String], why: String) -> Fields? {
        guard let entry = f[name] else {
            reportMissing(f, name, why)
            return nil
        }
        guard !isNull(entry.value) else {
            report(entry.value, f.child(name), "\(f.child(name)): has no value: \(why)")
            return nil
        }
        return fields(entry.value, path: f.child(name), known: known, hints: hints)
    }

    private func sequence(_ f: Fields, _ name: String, required why: String? = nil) -> (node: Node, items: [Node])? {
        guard let entry = f[name] else {
            if let why { reportMissing(f, name, why) }
            return nil
        }
        switch entry.value {
        case .sequence(let list):
            return (entry.value, Array(list))
        case let value where isNull(value):
            if let why { report(value, f.child(name), "\(f.child(name)): has no value: \(why)") }
            return nil
        case let value:
            report(value, f.child(name), "\(f.child(name)): expected a list, got \(describe(value)): start each entry with '- '")
            return nil
        }
    }

    // MARK: Scalars

    /// A scalar's text, with the node; `nil` when absent or empty (reported if `required`), or not a scalar (reported).
    private func string(_ f: Fields, _ name: String, required why: String? = nil) -> (String, Node)? {
        guard let entry = f[name] else {
            if let why { reportMissing(f, name, why) }
            return nil
        }
        if isNull(entry.value) {
            if let why { report(entry.value, f.child(name), "\(f.child(name)): has no value: \(why)") }
            return nil
        }
        return scalarText(entry.value, path: f.child(name), expected: "a string").map { ($0, entry.value) }
    }

    private func scalarText(_ node: Node, path: String, expected: String, nullHint: String? = nil) -> String? {
        guard case .scalar(let scalar) = node else {
            report(node, path, "\(path): expected \(expected), got \(describe(node))")
            return nil
        }
        if isNull(node), let nullHint {
            report(node, path, "\(path): has no value: \(nullHint)")
            return nil
        }
        return scalar.string
    }

    private func bool(_ f: Fields, _ name: String) -> Bool? {
        guard let (text, node) = string(f, name) else { return nil }
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default:
            report(node, f.child(name), "\(f.child(name)): expected true or false, got \(singleQuoted(text))")
            return nil
        }
    }

    private func integer(_ f: Fields, _ name: String, in range: ClosedRange<Int>, hint: String) -> Int? {
        guard let (text, node) = string(f, name) else { return nil }
        let path = f.child(name)
        let negative = text.hasPrefix("-")
        let digits = String(negative ? text.dropFirst() : Substring(text))
        // YAML allows 10_000; a '_' only between digits.
        let bytes = Array(digits.utf8)
        let wellFormed = !bytes.isEmpty && bytes.first != 95 && bytes.last != 95
            && bytes.allSatisfy { ($0 >= 48 && $0 <= 57) || $0 == 95 } && !digits.contains("__")
        guard wellFormed else {
            report(node, path, "\(path): expected an integer, got \(singleQuoted(text))")
            return nil
        }
        if negative {
            report(node, path, "\(path): \(singleQuoted(text)) is out of range: \(hint)")
            return nil
        }
        return validate(node, path) { k throws(ConfigError) in
            try Validate.integer(digits.replacingOccurrences(of: "_", with: ""), key: k, in: range, hint: hint)
        }
    }

    private func duration(_ f: Fields, _ name: String, positive: Bool) -> UInt64? {
        guard let (text, node) = string(f, name) else { return nil }
        return validate(node, f.child(name)) { k throws(ConfigError) in
            if positive { return try Validate.positiveDuration(text, key: k) }
            return try Validate.duration(text, key: k)
        }
    }

    /// `nil`: absent; `.some(nil)`: invalid (reported).
    private func choice<Value: RawRepresentable & CaseIterable>(
        _ f: Fields, _ name: String, _: Value.Type, what: String, use: String
    ) -> Value?? where Value.RawValue == String {
        guard let entry = f[name], !isNull(entry.value) else { return nil }
        guard let (text, node) = string(f, name) else { return .some(nil) }
        guard let value = Value(rawValue: text) else {
            report(node, f.child(name), "\(f.child(name)): \(singleQuoted(text)) is not \(what): \(use)")
            return .some(nil)
        }
        return value
    }

    /// A `:`-separated list given as one string or as a YAML list. `nil`: absent; `.some(nil)`: invalid (reported).
    private func colonList(_ f: Fields, _ name: String, _ check: (String, String) throws(ConfigError) -> String) -> String?? {
        guard let entry = f[name], !isNull(entry.value) else { return nil }
        let path = f.child(name)
        var text: String
        if case .sequence(let list) = entry.value {
            var items: [String] = []
            for (index, item) in list.enumerated() {
                guard let item = scalarText(item, path: "\(path)[\(index)]", expected: "a name") else { return .some(nil) }
                items.append(item)
            }
            text = items.joined(separator: ":")
        } else {
            guard let (value, _) = string(f, name) else { return .some(nil) }
            text = value
        }
        guard let canonical = validate(entry.value, path, { k throws(ConfigError) in try check(text, k) }) else { return .some(nil) }
        return canonical
    }

    /// An absolute, checked path. `nil`: absent; `.some(nil)`: invalid (reported).
    private func file(_ f: Fields, _ name: String, allowDirectory: Bool = false) -> String?? {
        guard let entry = f[name], !isNull(entry.value) else { return nil }
        guard let (text, node) = string(f, name) else { return .some(nil) }
        return .some(resolve(text, node: node, path: f.child(name), allowDirectory: allowDirectory))
    }

    private func file(_ f: Fields, _ name: String, required why: String, allowDirectory: Bool = false) -> String? {
        guard let (text, node) = string(f, name, required: why) else { return nil }
        return resolve(text, node: node, path: f.child(name), allowDirectory: allowDirectory)
    }

    private func resolve(_ text: String, node: Node, path: String, allowDirectory: Bool) -> String? {
        guard !text.isEmpty else {
            report(node, path, "\(path): '' is empty: give a path, absolute or relative to the configuration file")
            return nil
        }
        let resolved = absolutePath(text, relativeTo: baseDirectory)
        guard checkFiles else { return resolved }
        return validate(node, path) { k throws(ConfigError) in
            try Validate.readablePath(resolved, key: k, allowDirectory: allowDirectory)
        }
    }

    // MARK: Problems

    /// Runs a `Validate` function with the key `PATH:`; reports its error at `node`.
    private func validate<Value>(_ node: Node, _ path: String, _ body: (String) throws(ConfigError) -> Value) -> Value? {
        do {
            return try body(path + ":")
        } catch {
            report(node, path, error.message)
            return nil
        }
    }

    private func reportMissing(_ f: Fields, _ name: String, _ why: String) {
        guard !f.rejectedKeys else { return }
        report(f.node, f.child(name), "\(f.path.isEmpty ? "" : f.path + ": ")missing required key \(singleQuoted(name)): \(why)")
    }

    private func report(_ node: Node, _ key: String, _ message: String) {
        let mark = node.mark
        let line = mark?.line ?? 1
        problems.append((line, mark?.column ?? 1, ConfigError(key: key.isEmpty ? nil : key, message: "\(location(line: line)) \(message)")))
    }

    private func location(line: Int) -> String { "\(escapedForLog(source)):\(line):" }

    private func line(_ node: Node) -> Int { node.mark?.line ?? 1 }

    // MARK: YAML

    /// Prefix marking a key that Yams reported as a duplicate and that was renamed so the file could be composed.
    private static let sentinelStart: Unicode.Scalar = "\u{E000}"
    private static let sentinelEnd: Unicode.Scalar = "\u{E001}"

    private func withoutSentinel(_ key: String) -> String {
        let scalars = key.unicodeScalars
        guard scalars.first == Self.sentinelStart, let end = scalars.firstIndex(of: Self.sentinelEnd) else { return key }
        return String(scalars[scalars.index(after: end)...])
    }

    /// Composes the document. Yams refuses a mapping with a repeated key; to report it with its key path, the
    /// earlier occurrence is renamed with an invisible prefix and composition retried, and `fields` then finds the
    /// repeat in file order.
    private func compose(_ yaml: String) throws(ConfigError) -> Node? {
        var text = yaml
        for attempt in 0...64 {
            do {
                return try Yams.compose(yaml: text)
            } catch YamlError.duplicatedKeysInMapping(let duplicates, let context) {
                guard attempt < 64, let renamed = renameKey(in: text, at: context.mark, tag: attempt) else {
                    let key = duplicates.first.map { " " + singleQuoted($0) } ?? ""
                    throw ConfigError(key: nil, message: "\(location(line: context.mark.line)) duplicate key\(key): remove one")
                }
                text = renamed
            } catch let error as YamlError {
                throw syntaxError(error)
            } catch {
                throw ConfigError(key: nil, message: "\(location(line: 1)) YAML syntax error: \(escapedForLog(String(describing: error)))")
            }
        }
        preconditionFailure("unreachable: the last attempt returns or throws")
    }

    private func renameKey(in text: String, at mark: Mark, tag: Int) -> String? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard mark.line >= 1, mark.line <= lines.count else { return nil }
        var scalars = Array(lines[mark.line - 1].unicodeScalars)
        var index = mark.column - 1
        guard index >= 0, index < scalars.count else { return nil }
        switch scalars[index] {
        case "\"", "'": index += 1
        case "?", "&", "!", "*", "[", "{", "-", "|", ">", "%", "@", "`", "#", ",", "]", "}", ":": return nil
        default: break
        }
        let sentinel = Array("\(Self.sentinelStart)\(tag)\(Self.sentinelEnd)".unicodeScalars)
        scalars.insert(contentsOf: sentinel, at: index)
        var line = String.UnicodeScalarView()
        line.append(contentsOf: scalars)
        lines[mark.line - 1] = String(line)
        return lines.joined(separator: "\n")
    }

    private func syntaxError(_ error: YamlError) -> ConfigError {
        func message(_ line: Int, _ problem: String, _ context: YamlError.Context?) -> ConfigError {
            let while_ = context.map { " (\($0.text) on line \($0.mark.line))" } ?? ""
            // libyaml's texts are constant ASCII phrases.
            return ConfigError(key: nil, message: "\(location(line: line)) YAML syntax error: \(problem)\(while_)")
        }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return message(mark.line, problem, context)
        case .reader(let problem, let offset, _, let yaml):
            let line = offset.map { offset in 1 + yaml.utf8.prefix(offset).count(where: { $0 == 10 }) } ?? 1
            return message(line, problem, nil)
        default:
            return ConfigError(key: nil, message: "\(location(line: 1)) YAML syntax error: \(escapedForLog(String(describing: error)))")
        }
    }
}

// MARK: Helpers

private func isNull(_ node: Node) -> Bool {
    guard case .scalar(let scalar) = node, scalar.style == .plain else { return false }
    return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
}

private func describe(_ node: Node) -> String {
    switch node {
    case .scalar(let scalar): isNull(node) ? "nothing" : singleQuoted(scalar.string, limit: 64)
    case .mapping: "a mapping"
    case .sequence: "a list"
    case .alias: "an alias"
    }
}

private func isNameByte(_ byte: UInt8) -> Bool {
    (byte >= 48 && byte <= 57) || (byte | 0x20 >= 97 && byte | 0x20 <= 122) || byte == 45 || byte == 46 || byte == 95
}

/// Optimal string alignment distance (a swap of neighbours counts once).
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.unicodeScalars), b = Array(b.unicodeScalars)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous2 = [Int](repeating: 0, count: b.count + 1)
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                current[j] = min(current[j], previous2[j - 2] + 1)
            }
        }
        (previous2, previous, current) = (previous, current, previous2)
    }
    return previous[b.count]
}

/// Whether two listen addresses cannot both be bound: the same port (not 0) and the same host, or a wildcard
/// host that covers the other (`0.0.0.0` every IPv4 address, `::` every address, since sockets are dual-stack).
func conflict(_ a: ListenAddress, _ b: ListenAddress) -> Bool {
    guard a.port == b.port, a.port != 0 else { return false }
    if a.host == b.host || a.host == "::" || b.host == "::" { return true }
    if a.host == "0.0.0.0" { return b.address.isIPv4 }
    if b.host == "0.0.0.0" { return a.address.isIPv4 }
    return false
}
