import Policy
import Yams

/// A listener's `tls` section.
extension ConfigReader {
    static let tlsKeys = [
        "cert", "key", "key-passphrase-file", "keystore", "keystore-password-file", "storepass", "disable-authentication",
        "cacert", "server-name", "crl", "crl-scope", "crl-expired", "min-version",
        "cipher-suites", "groups", "session-tickets", "session-ticket-count",
    ]

    static let tlsHints = [
        "certificate": "did you mean 'cert'?", "private-key": "did you mean 'key'?",
        "ca": "did you mean 'cacert'?", "ca-file": "did you mean 'cacert'?", "cafile": "did you mean 'cacert'?",
        "crls": "did you mean 'crl'?", "min-tls": "did you mean 'min-version'?", "ciphers": "did you mean 'cipher-suites'?",
        "curves": "did you mean 'groups'?", "tickets": "did you mean 'session-tickets'?",
        "sni": "did you mean 'server-name'?", "override-server-name": "did you mean 'server-name'?",
        "keystore-password": "give the password in a file: keystore-password-file",
        "storepass-file": "did you mean 'keystore-password-file'?", "password-file": "did you mean 'keystore-password-file'?",
        "verify-server-name": "it belongs under 'policy'",
    ]

    /// The TLS settings and, in client mode, `server-name` (`nil`: absent; `.some(nil)`: invalid, reported).
    func tls(_ f: Fields, mode: ListenerMode) -> (ListenerTLSSettings?, String??) {
        let client = mode == .client
        let identity = ownIdentity(f, mode: mode)
        // Client mode without a CA: the system trust store (the server name is then always verified).
        let ca: String?? = client
            ? file(f, "cacert", allowDirectory: true)
            : .some(file(f, "cacert", required: "server mode verifies every client certificate against it", allowDirectory: true))

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

        let scope = choice(f, "crl-scope", CRLScope.init(configValue:), what: "a CRL scope", use: "use chain (every certificate of the chain) or leaf (the \(client ? "server" : "client") certificate only)")
        let expired = choice(f, "crl-expired", CRLExpiredPolicy.init(rawValue:), what: "a CRL expiry policy", use: "use reject (fail closed) or warn (accept and log)")

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
                if flags != nil {
                    report(node, f.child("session-ticket-count"), "\(setting(f.child("session-ticket-count"), file: "")) and \(setting(f.child("session-tickets"), file: "")) are mutually exclusive: drop one of them")
                } else {
                    problem(node, f.child("session-ticket-count"), "tickets are off (session-tickets: false): remove one of the two")
                }
                ticketCount = .some(nil)
            }
        }

        var serverName: String??
        if !client {
            onlyIn(.client, f, "server-name", why: "it is the name a client-mode listener expects from the server")
        } else if let (text, node) = string(f, "server-name") {
            serverName = .some(validate(node, f.child("server-name")) { k throws(ConfigError) in try Validate.serverName(text, key: k) })
        }

        guard let identity, ca != .some(nil), crlOK, versionOK,
              scope != .some(nil), expired != .some(nil), suites != .some(nil), groups != .some(nil), ticketCount != .some(nil)
        else { return (nil, serverName) }
        let settings = ListenerTLSSettings(
            certificatePath: identity.certificate, keyPath: identity.key, keyPassphrasePath: identity.passphrase,
            keystorePath: identity.keystore, keystorePasswordPath: identity.passwordFile, keystorePassword: identity.password,
            disableAuthentication: identity.disabled, caPath: ca ?? nil,
            crlPaths: crlPaths, crlScope: (scope ?? nil) ?? .chain, crlExpired: (expired ?? nil) ?? .reject,
            minimumVersion: minimumVersion, cipherSuites: suites ?? nil, groups: groups ?? nil,
            sessionTickets: sessionTickets,
            sessionTicketCount: (ticketCount ?? nil) ?? ListenerTLSSettings.defaultSessionTicketCount)
        return (settings, serverName)
    }

    /// Our own certificate: `cert` + `key` (+ `key-passphrase-file`), or `keystore` (+ `keystore-password-file`
    /// or, from the command line, `storepass`), or in client mode none at all (`disable-authentication`).
    /// `nil`: a problem was reported.
    struct OwnIdentity {
        var certificate: String?, key: String?, passphrase: String?
        var keystore: String?, passwordFile: String?, password: Secret?
        var disabled = false
    }

    func ownIdentity(_ f: Fields, mode: ListenerMode) -> OwnIdentity? {
        let client = mode == .client
        var disabled = false
        if client {
            guard let value = bool(f, "disable-authentication") ?? (isAbsent(f, "disable-authentication") ? false : nil) else { return nil }
            disabled = value
        } else {
            onlyIn(.client, f, "disable-authentication", why: "a server-mode listener always requires client certificates (policy.allow-all: true admits every client whose certificate chains to tls.cacert)")
            if !isAbsent(f, "disable-authentication") { return nil }
        }
        let written = ["cert", "key", "key-passphrase-file", "keystore", "keystore-password-file", "storepass"].filter { !isAbsent(f, $0) }
        if disabled {
            if let first = written.first {
                conflict(f, "disable-authentication", "\(setting(f.child("disable-authentication"), file: "disable-authentication: true")) and \(setting(f.child(first), file: first)) are mutually exclusive: without authentication the client presents no certificate; drop one of them")
                return nil
            }
            return OwnIdentity(disabled: true)
        }
        if flags == nil, let entry = f["storepass"], !isNull(entry.value) {
            problem(entry.value, f.child("storepass"), "a password is not written in the configuration file: put it in a file readable only by Portcullis and set keystore-password-file")
            return nil
        }
        if !isAbsent(f, "keystore") {
            for other in ["cert", "key", "key-passphrase-file"] where !isAbsent(f, other) {
                let fix = other == "key-passphrase-file"
                    ? "the keystore's password file is \(setting(f.child("keystore-password-file"), file: "keystore-password-file"))"
                    : "the keystore holds the certificate chain and the key; drop one of them"
                conflict(f, "keystore", "\(setting(f.child("keystore"), file: "keystore")) and \(setting(f.child(other), file: other)) are mutually exclusive: \(fix)")
                return nil
            }
            if !isAbsent(f, "keystore-password-file") && !isAbsent(f, "storepass") {
                conflict(f, "storepass", "\(setting(f.child("storepass"), file: "storepass")) and \(setting(f.child("keystore-password-file"), file: "keystore-password-file")) are mutually exclusive: keep the file")
                return nil
            }
            let keystore = file(f, "keystore")
            let passwordFile = file(f, "keystore-password-file")
            var password: Secret?
            if let (text, _) = string(f, "storepass") { password = Secret(text) }
            guard let keystore = keystore ?? nil, passwordFile != .some(nil) else { return nil }
            return OwnIdentity(keystore: keystore, passwordFile: passwordFile ?? nil, password: password)
        }
        for orphan in ["keystore-password-file", "storepass"] where !isAbsent(f, orphan) {
            conflict(f, orphan, "\(setting(f.child(orphan), file: orphan)) is the password of a keystore: give \(setting(f.child("keystore"), file: "keystore")) too (with \(setting(f.child("cert"), file: "cert")) and \(setting(f.child("key"), file: "key")), an encrypted key's passphrase file is \(setting(f.child("key-passphrase-file"), file: "key-passphrase-file")))")
            return nil
        }
        let certificate = file(f, "cert", required: client
            ? "give the client certificate chain (PEM) that the server verifies"
            : "give the server certificate chain (PEM) that clients verify")
        let key = file(f, "key", required: "give the private key (PEM) for \(setting(f.child("cert"), file: "cert"))")
        let passphrase = file(f, "key-passphrase-file")
        guard let certificate, let key, passphrase != .some(nil) else { return nil }
        return OwnIdentity(certificate: certificate, key: key, passphrase: passphrase ?? nil)
    }

    /// Reports `text` about key `name` of `f`: the flag's whole message on a command line, after the key's path
    /// in a file.
    private func conflict(_ f: Fields, _ name: String, _ text: String) {
        let node = f[name]!.value
        if flags != nil { report(node, f.child(name), text) } else { problem(node, f.child(name), text) }
    }
}
