import Testing
@testable import Config
import Policy
import Foundation

private let digest = "sha256:" + String(repeating: "ab", count: 32)

/// A value each flag accepts that differs from its default, and one it refuses (`nil`: a switch, no value).
private let samples: [String: (good: String, bad: String?)] = [
    "--listen": ("127.0.0.2:8443", "nope"), "--target": ("127.0.0.1:7000", "nope"),
    "--cert": ("{passphrase}", "/nonexistent/cert.pem"), "--key": ("{passphrase}", "/nonexistent/key.pem"),
    "--key-passphrase-file": ("{passphrase}", "/nonexistent/pass"), "--cacert": ("{caDirectory}", "/nonexistent/ca.pem"),
    "--keystore": ("{passphrase}", "/nonexistent/id.p12"), "--keystore-password-file": ("{passphrase}", "/nonexistent/pw"),
    "--storepass": ("pw", nil),
    "--allow-cn": ("x", "a**b"), "--allow-ou": ("x", ""), "--allow-o": ("x", ""), "--allow-dns": ("x.internal", "a..b"),
    "--allow-uri": ("spiffe://x/y", "*spiffe"), "--allow-email": ("*@x.org", "x"), "--allow-ip": ("10.0.0.0/8", "10.0.0.0/33"),
    "--allow-fingerprint": (digest, "abc"), "--allow-spki": (digest, "abc"),
    "--verify-cn": ("x", "a**b"), "--verify-ou": ("x", ""), "--verify-dns": ("x.internal", "a..b"),
    "--verify-uri": ("spiffe://x/y", "*spiffe"), "--verify-ip": ("10.0.0.0/8", "10.0.0.0/33"),
    "--verify-fingerprint": (digest, "abc"), "--verify-spki": (digest, "abc"),
    "--override-server-name": ("other.internal", "a b"), "--min-tls": ("1.2", "1.1"),
    "--handshake-timeout": ("3s", "0"), "--connect-timeout": ("3s", "soon"), "--idle-timeout": ("3s", "10 sec"),
    "--close-timeout": ("3s", "-1s"), "--max-conn-lifetime": ("1h", "forever"), "--shutdown-timeout": ("1m", "5"), "--max-concurrent-conns": ("5", "lots"),
    "--workers": ("3", "0"), "--log-format": ("json", "xml"), "--log-level": ("debug", "loud"),
    "--cipher-suites": ("TLS_AES_256_GCM_SHA384", "TLS_RSA_WITH_AES_128_CBC_SHA"), "--groups": ("X25519", "brainpoolP256r1"),
    "--session-ticket-count": ("2", "17"), "--session-cache-size": ("100", "0"), "--proxy-protocol": ("v2", "v1"),
    "--status": ("127.0.0.1:9199", "127.0.0.1:x"),
    "--max-handshakes": ("64", "-1"), "--max-handshakes-per-source": ("8", "lots"), "--max-handshake-rate-per-source": ("20", "1.5"),
]

private let cases: [(ConfigFlag, ListenerMode)] = FlagTable.all.flatMap { flag in flag.modes.map { (flag, $0) } }

@Suite("Flag ↔ key table")
struct FlagTableTests {
    let files: Files

    init() throws { files = try Files() }

    private func fill(_ value: String) -> String {
        value.replacingOccurrences(of: "{passphrase}", with: files.passphrase)
            .replacingOccurrences(of: "{caDirectory}", with: files.caDirectory)
    }

    /// The required flags, and a rule in server mode (unless `flag` is `--allow-all`, which excludes rules).
    private func base(_ mode: ListenerMode, without flag: ConfigFlag) -> [(ConfigFlag, [String])] {
        var given: [(ConfigFlag, [String])] = [
            (FlagTable.listen, ["127.0.0.1:8443"]),
            (FlagTable.target, [mode == .server ? "127.0.0.1:6379" : "broker-1.internal:4443"]),
            (FlagTable.cert, [files.cert]), (FlagTable.key, [files.key]), (FlagTable.cacert, [files.ca]),
        ]
        if mode == .server && flag != FlagTable.allowAll { given.append((FlagTable.allowCN, ["app-1"])) }
        // A keystore replaces --cert/--key; --disable-authentication excludes them.
        if [FlagTable.keystore, FlagTable.keystorePasswordFile, FlagTable.storepass, FlagTable.disableAuthentication].contains(flag) {
            given.removeAll { $0.0 == FlagTable.cert || $0.0 == FlagTable.key }
            if flag != FlagTable.keystore && flag != FlagTable.disableAuthentication { given.append((FlagTable.keystore, [files.cert])) }
        }
        return given.filter { $0.0 != flag }
    }

    private func tree(_ flag: ConfigFlag, _ mode: ListenerMode, _ value: String?) -> KeyTree {
        var given = base(mode, without: flag)
        given.append((flag, [value ?? ""]))
        if flag == FlagTable.unsafeStatus { given.append((FlagTable.status, ["127.0.0.1:9199"])) }
        return KeyTree(mode: mode, given: given)
    }

    private func fromFlags(_ tree: KeyTree) throws(ConfigError) -> PortcullisConfiguration {
        try ConfigReader(flags: tree, baseDirectory: files.directory).readFlags()
    }

    @Test func everyFlagHasSamplesAndATableEntryOnce() {
        let names = FlagTable.all.map(\.name)
        #expect(Set(names).count == names.count)
        for flag in FlagTable.all {
            if case .fixed = flag.form { continue }
            #expect(samples[flag.name] != nil, "no sample for \(flag.name)")
        }
    }

    @Test("each flag sets a key the file reader accepts, to the same effect", arguments: cases)
    func flagSetsAFileKey(flag: ConfigFlag, mode: ListenerMode) throws {
        let value = samples[flag.name].map { fill($0.good) }
        let tree = tree(flag, mode, value)
        let viaFlags = try fromFlags(tree)
        if flag == FlagTable.storepass {
            // The command line's password has no file form (the file names a password file instead), and the
            // equivalent file does not show it.
            #expect(viaFlags.listeners[0].tls.keystorePassword == Secret("pw"))
            #expect(!tree.yaml.contains("pw\n") && tree.yaml.contains("storepass: '(hidden)'"), "\(tree.yaml)")
            let refusal = try #require(throws: ConfigError.self) {
                try PortcullisConfiguration.parse(yaml: tree.yaml, source: files.directory + "/portcullis.yaml")
            }
            #expect(refusal.message.contains("keystore-password-file"))
            return
        }
        let viaFile = try PortcullisConfiguration.parse(yaml: tree.yaml, source: files.directory + "/portcullis.yaml")
        #expect(viaFile == viaFlags, "\(flag.name) → \(flag.key):\n\(tree.yaml)")
        // The key was read: the setting is not the default.
        let defaults = try fromFlags(KeyTree(mode: mode, given: base(mode, without: FlagTable.unsafeStatus)))
        #expect(viaFlags != defaults, "\(flag.name) changed nothing")
        // The key path is one the table names.
        #expect(tree.yaml.contains(String(flag.key.split(separator: ".").last!) + ":"))
    }

    @Test("a bad value says the same via the flag and via the key, apart from the name",
          arguments: cases.filter { samples[$0.0.name]?.bad != nil })
    func sameMessage(flag: ConfigFlag, mode: ListenerMode) throws {
        let tree = tree(flag, mode, samples[flag.name]!.bad)
        let flagError = try #require(throws: ConfigError.self) { try fromFlags(tree) }
        let fileError = try #require(throws: ConfigError.self) {
            try PortcullisConfiguration.parse(yaml: tree.yaml, source: "portcullis.yaml", checkFiles: true)
        }
        let path = try #require(fileError.key)
        let key = path.hasPrefix("listeners[0].") ? String(path.dropFirst("listeners[0].".count)) : path
        let flagSubject = "\(flag.name) (config key \(key)): "
        #expect(flagError.key == flag.name)
        #expect(flagError.message.hasPrefix(flagSubject), "\(flagError.message)")
        let fileSubject = try #require(fileError.message.firstRange(of: path + ": "))
        // A fix that names another setting names it the way its source does.
        var viaFlag = String(flagError.message.dropFirst(flagSubject.count))
        for (flagFix, fileFix) in [("use --no-session-tickets", "set session-tickets: false")] {
            viaFlag = viaFlag.replacingOccurrences(of: flagFix, with: fileFix)
        }
        #expect(viaFlag == fileError.message[fileSubject.upperBound...])
    }

    @Test("fixes name the flag on a command line and the key in a file", arguments: [
        (ListenerMode.server, FlagTable.target, "10.0.0.5:6379", "(use --unsafe-target to allow it)", "(set unsafe-target: true to allow it)"),
        (.client, FlagTable.listen, "0.0.0.0:4150", "(use --unsafe-listen to allow it)", "(set unsafe-listen: true to allow it)"),
        (.server, FlagTable.status, "0.0.0.0:9100", "(use --unsafe-status to allow it)", "(use status.unsafe-listen: true to allow it)"),
    ])
    func fixesNameTheSetting(mode: ListenerMode, flag: ConfigFlag, value: String, viaFlag: String, viaFile: String) throws {
        let tree = tree(flag, mode, value)
        let flagError = try #require(throws: ConfigError.self) { try fromFlags(tree) }
        let fileError = try #require(throws: ConfigError.self) {
            try PortcullisConfiguration.parse(yaml: tree.yaml, source: "portcullis.yaml", checkFiles: true)
        }
        #expect(flagError.message.hasSuffix(viaFlag), "\(flagError.message)")
        #expect(fileError.message.hasSuffix(viaFile), "\(fileError.message)")
    }

    @Test func lookupByKey() {
        #expect(FlagTable.flag(forKey: "timeouts.handshake", mode: .server) == FlagTable.handshakeTimeout)
        #expect(FlagTable.flag(forKey: "tls.server-name", mode: .client) == FlagTable.overrideServerName)
        #expect(FlagTable.flag(forKey: "tls.server-name", mode: .server) == nil)
        #expect(FlagTable.handshakeTimeout.description == "--handshake-timeout (config key timeouts.handshake)")
    }
}
