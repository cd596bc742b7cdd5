import Policy
import Yams

/// One entry of `listeners`: name, mode, addresses and the sections below it.
extension ConfigReader {
    static let listenerKeys = [
        "name", "mode", "listen", "unsafe-listen", "target", "unsafe-target", "proxy-protocol", "tls", "timeouts",
        "max-connections", "reauthorize", "close-at-cert-expiry", "policy",
    ]

    static let listenerHints: [String: String] = {
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

    struct ParsedListener {
        var settings: ListenerSettings?
        var name: (String, Node)?
        var listen: (ListenAddress, Node)?
    }

    func listener(_ node: Node, path: String, shutdownTimeout: UInt64) -> ParsedListener {
        var parsed = ParsedListener()
        guard let f = fields(node, path: path, known: Self.listenerKeys, hints: Self.listenerHints) else { return parsed }
        var ok = true

        if let (name, nameNode) = string(f, "name", required: "name the listener; logs, metrics and 'check --listener' use it") {
            if name.isEmpty || name.utf8.count > 64 || !name.utf8.allSatisfy(isNameByte) {
                problem(nameNode, f.child("name"), "\(singleQuoted(name)) is not a valid listener name: use 1-64 letters, digits, '.', '_' or '-'")
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
                problem(modeNode, f.child("mode"), "\(singleQuoted(text)) is not a mode: use server or client")
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
                if client && address.isNetworkFacing && unsafeListen != true {
                    // With a malformed unsafe-listen, that key's own problem is the one to fix.
                    if unsafeListen == false || isAbsent(f, "unsafe-listen") {
                        problem(listenNode, key, "\(singleQuoted(text)) is not a loopback address (\(flags == nil ? "set" : "use") \(setting(f.child("unsafe-listen"), file: "unsafe-listen: true")) to allow it)")
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
                        problem(targetNode, key, "\(singleQuoted(text)) is not a loopback address (\(flags == nil ? "set" : "use") \(setting(f.child("unsafe-target"), file: "unsafe-target: true")) to allow it)")
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

        let timeouts = self.timeouts(f, shutdownTimeout: shutdownTimeout)
        if timeouts == nil { ok = false }

        let maxConnections = integer(f, "max-connections", in: 0...Int(Int32.max), hint: "use 0 (unlimited) or a positive count") ?? 0
        let reauthorize = bool(f, "reauthorize") ?? true
        let closeAtCertExpiry = bool(f, "close-at-cert-expiry") ?? false
        let judged = self.policy(f, mode: mode)

        guard ok, let name = parsed.name?.0, let listen = parsed.listen?.0, let target, let tls, let timeouts, let judged,
              writtenServerName != .some(nil)
        else { return parsed }
        var verifyServerName = judged.verifyServerName
        if client && tls.caPath == nil && !verifyServerName {
            // The system store vouches for every public name: without the name check any publicly trusted
            // certificate would pass. Rules then narrow the name check; they cannot replace it.
            if let written = f["policy"]?.value["verify-server-name"] {
                problem(written, f.child("policy.verify-server-name"), "false needs tls.cacert: with the system trust store (no tls.cacert) every public certificate chains, so the server name is always verified; give tls.cacert, or remove the key")
                return parsed
            }
            verifyServerName = true
        }
        var serverName: String?
        if client, let targetName {
            serverName = (writtenServerName ?? nil) ?? Validate.defaultServerName(targetName: targetName, rules: judged.policy.rules)
        }
        parsed.settings = ListenerSettings(
            name: name, mode: mode, listen: listen, unsafeListen: unsafeListen ?? false, target: target,
            unsafeTarget: unsafeTarget ?? false, proxyProtocol: proxyProtocol, tls: tls, timeouts: timeouts, maxConnections: maxConnections,
            reauthorize: reauthorize, closeAtCertExpiry: closeAtCertExpiry, policy: judged.policy,
            serverName: serverName, verifyServerName: verifyServerName)
        return parsed
    }

    /// Reports `f[name]`, when written with a value, as a key of `mode` only.
    func onlyIn(_ mode: ListenerMode, _ f: Fields, _ name: String, why: String) {
        guard let entry = f[name], !isNull(entry.value) else { return }
        problem(entry.value, f.child(name), "applies to \(mode.rawValue) mode only: \(why); remove it")
    }

    /// The key is not written, or written without a value.
    func isAbsent(_ f: Fields, _ name: String) -> Bool {
        f[name] == nil || isNull(f[name]!.value)
    }

}

func isNameByte(_ byte: UInt8) -> Bool {
    (byte >= 48 && byte <= 57) || (byte | 0x20 >= 97 && byte | 0x20 <= 122) || byte == 45 || byte == 46 || byte == 95
}
