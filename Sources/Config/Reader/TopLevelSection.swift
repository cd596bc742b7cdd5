import Policy
import Yams

/// The top level: `log`, `status`, `workers`, `shutdown-timeout`, `session-cache-size`, `limits` and the
/// `listeners` list.
extension ConfigReader {
    static let topKeys = ["log", "status", "workers", "shutdown-timeout", "session-cache-size", "limits", "listeners"]
    static let limitsKeys = ["handshakes", "handshakes-per-source", "handshake-rate-per-source"]
    static let logKeys = ["format", "level", "quiet-handshake-failures", "syslog"]
    static let statusKeys = ["listen", "unsafe-listen"]

    /// Unknown keys that users plausibly write, with where the setting really is.
    static let topHints: [String: String] = {
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

    func configuration(_ root: Node) -> PortcullisConfiguration? {
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
            if let syslog = bool(section, "syslog") { log.syslog = syslog }
        } else if top["log"] != nil && !isNull(top["log"]!.value) { ok = false }

        var status: StatusSettings?
        var statusAddress: (address: ListenAddress, node: Node)?
        if let section = optionalSection(top, "status", known: Self.statusKeys) {
            let unsafeListen = bool(section, "unsafe-listen") ?? false
            if let (text, node) = string(section, "listen", required: "give the address for health and metrics, e.g. 127.0.0.1:9100") {
                if let (listen, address, https) = statusListen(text, unsafe: unsafeListen, node: node, path: section.child("listen")) {
                    status = StatusSettings(listen: listen, unsafeListen: unsafeListen, https: https)
                    if let address { statusAddress = (address, node) }
                }
            }
            if status == nil { ok = false }
        } else if top["status"] != nil && !isNull(top["status"]!.value) { ok = false }

        let workers = integer(top, "workers", in: 1...256, hint: "use 1-256") ?? Validate.defaultWorkers
        let shutdown = duration(top, "shutdown-timeout", positive: false) ?? Timeouts.defaults.shutdown
        let sessionCacheSize = integer(top, "session-cache-size", in: 1...10_000_000,
                                       hint: "use 1-10000000 (to turn resumption off, \(flags == nil ? "set session-tickets: false" : "use " + setting("listeners[0].tls.session-tickets", file: "")))")
            ?? PortcullisConfiguration.defaultSessionCacheSize
        var limits = HandshakeLimits()
        if let section = optionalSection(top, "limits", known: Self.limitsKeys) {
            if let n = integer(section, "handshakes", in: 0...1_000_000, hint: "use 0 (unlimited) or a positive count per worker, e.g. 1024") {
                limits.inProgress = n
            }
            if let n = integer(section, "handshakes-per-source", in: 0...1_000_000, hint: "use 0 (off, the default) or a positive count per worker") {
                limits.perSource = n
            }
            if let n = integer(section, "handshake-rate-per-source", in: 0...1_000_000, hint: "use 0 (off, the default) or new connections per second per worker") {
                limits.ratePerSource = n
            }
        } else if top["limits"] != nil && !isNull(top["limits"]!.value) { ok = false }

        var listeners: [ListenerSettings] = []
        if let list = sequence(top, "listeners", required: "add at least one listener (see docs/CONFIG.md)") {
            if list.items.isEmpty {
                report(list.node, "listeners", "listeners: is empty: add at least one listener (see docs/CONFIG.md)")
            }
            var names: [String: Node] = [:]
            var bound: [(address: ListenAddress, node: Node, owner: String)] = []
            if let statusAddress { bound.append((statusAddress.address, statusAddress.node, subject("status.listen"))) }
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
                    let owner = flags != nil ? subject(path + ".listen") : parsed.name.map { "listener " + singleQuoted($0.0) } ?? path
                    if let other = bound.first(where: { conflict($0.address, address) }) {
                        let why = other.address == address
                            ? "is already used by \(other.owner)\(onLine(other.node)): give each listener its own address"
                            : "overlaps \(other.owner) on \(singleQuoted(other.address.description))\(onLine(other.node)): a wildcard address takes the port on every interface; use another port"
                        problem(node, path + ".listen", "\(singleQuoted(address.description)) \(why)")
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
                                       sessionCacheSize: sessionCacheSize, handshakeLimits: limits, listeners: listeners)
    }

    /// The status endpoint and, for TCP, the address it binds.
    func statusListen(_ text: String, unsafe: Bool, node: Node, path: String) -> (ListenAddress, ListenAddress?, Bool)? {
        let parsed = validate(node, path) { k throws(ConfigError) in
            try Validate.statusAddress(text, key: k, allowNonLoopback: unsafe, unsafeKey: setting("status.unsafe-listen", file: "status.unsafe-listen: true"))
        }
        return parsed.map { ($0.endpoint, $0.address, $0.https) }
    }
}


/// Whether two listen addresses cannot both be bound: the same port (not 0) and the same host, or a wildcard
/// host that covers the other (`0.0.0.0` every IPv4 address, `::` every address, since sockets are dual-stack);
/// the same Unix socket path; the same systemd socket name (the first listener would take all its sockets).
func conflict(_ a: ListenAddress, _ b: ListenAddress) -> Bool {
    switch (a, b) {
    case (.unix(let p), .unix(let q)): return p == q
    case (.systemd(let m), .systemd(let n)): return m == n
    case (.tcp(let aHost, let aPort), .tcp(let bHost, let bPort)):
        guard aPort == bPort, aPort != 0 else { return false }
        if aHost == bHost || aHost == "::" || bHost == "::" { return true }
        if aHost == "0.0.0.0" { return IPAddress(bHost)?.isIPv4 ?? false }
        if bHost == "0.0.0.0" { return IPAddress(aHost)?.isIPv4 ?? false }
        return false
    default: return false
    }
}
