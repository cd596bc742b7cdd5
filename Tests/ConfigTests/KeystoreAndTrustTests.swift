import Testing
import Config
import Policy
import Foundation

/// Keystores (`--keystore`, `--storepass`, `--keystore-password-file`; keys `tls.keystore`,
/// `tls.keystore-password-file`), client mode without a certificate (`--disable-authentication`) and client mode
/// on the system trust store (no `--cacert`).
@Suite("Keystores, client authentication and trust")
struct KeystoreAndTrustTests {
    let files: Files

    init() throws { files = try Files() }

    private func client(_ edit: ClientEdit) throws(ConfigError) -> ListenerSettings {
        var flags = files.validClientFlags()
        edit(&flags)
        return try PortcullisConfiguration(clientFlags: flags).listeners[0]
    }

    private func server(_ edit: Edit) throws(ConfigError) -> ListenerSettings {
        var flags = files.validFlags()
        edit(&flags)
        return try PortcullisConfiguration(flags: flags).listeners[0]
    }

    @Test func keystoreReplacesCertAndKey() throws {
        let listener = try server { [files] in
            $0.cert = nil; $0.key = nil; $0.keystore = files.cert; $0.keystorePasswordFile = files.passphrase
        }
        #expect(listener.tls.keystorePath == files.cert)
        #expect(listener.tls.keystorePasswordPath == files.passphrase)
        #expect(listener.tls.certificatePath == nil && listener.tls.keyPath == nil && listener.tls.keystorePassword == nil)
    }

    @Test func storepassIsASecretThatNeverPrints() throws {
        let listener = try client { [files] in $0.cert = nil; $0.key = nil; $0.keystore = files.cert; $0.storepass = "hunter2" }
        #expect(listener.tls.keystorePassword == Secret("hunter2"))
        #expect(listener.tls.keystorePassword?.bytes == Array("hunter2".utf8))
        #expect("\(listener.tls.keystorePassword!)" == "(hidden)")
        #expect(!"\(listener)".contains("hunter2"))
        var flags = files.validClientFlags()
        flags.cert = nil; flags.key = nil; flags.keystore = files.cert; flags.storepass = "hunter2"
        let configuration = try PortcullisConfiguration(clientFlags: flags)
        #expect(!configuration.effectiveDescription().contains("hunter2"))
        #expect(!configuration.effectiveJSON().contains("hunter2"))
        let yaml = PortcullisConfiguration.equivalentYAML(clientFlags: flags)
        #expect(!yaml.contains("hunter2") && yaml.contains("storepass"))
    }

    static let flagErrors: [(String, ClientEdit)] = [
        ("--keystore (config key tls.keystore): '/nonexistent/id.p12': no such file", { $0.cert = nil; $0.key = nil; $0.keystore = "/nonexistent/id.p12" }),
        ("--keystore and --cert are mutually exclusive: the keystore holds the certificate chain and the key; drop one of them",
         { $0.keystore = "/nonexistent/id.p12" }),
        ("--keystore and --key-passphrase-file are mutually exclusive: the keystore's password file is --keystore-password-file",
         { [p = Files.passphraseName] in $0.cert = nil; $0.key = nil; $0.keystore = p; $0.keyPassphraseFile = p }),
        ("--storepass and --keystore-password-file are mutually exclusive: keep the file",
         { [p = Files.passphraseName] in $0.cert = nil; $0.key = nil; $0.keystore = p; $0.keystorePasswordFile = p; $0.storepass = "x" }),
        ("--storepass is the password of a keystore: give --keystore too (with --cert and --key, an encrypted key's passphrase file is --key-passphrase-file)",
         { $0.storepass = "x" }),
        ("--disable-authentication and --cert are mutually exclusive: without authentication the client presents no certificate; drop one of them",
         { $0.disableAuthentication = true }),
        ("--disable-authentication and --keystore are mutually exclusive: without authentication the client presents no certificate; drop one of them",
         { $0.cert = nil; $0.key = nil; $0.disableAuthentication = true; $0.keystore = "/x.p12" }),
    ]

    @Test("each keystore or authentication conflict is one line naming the flags", arguments: flagErrors)
    func flagError(message: String, edit: ClientEdit) throws {
        var flags = files.validClientFlags()
        edit(&flags)
        // Relative names in the table are the fixture files.
        if flags.keystore == Files.passphraseName { flags.keystore = files.passphrase }
        if flags.keyPassphraseFile == Files.passphraseName { flags.keyPassphraseFile = files.passphrase }
        if flags.keystorePasswordFile == Files.passphraseName { flags.keystorePasswordFile = files.passphrase }
        do {
            _ = try PortcullisConfiguration(clientFlags: flags)
            Issue.record("accepted; expected: \(message)")
        } catch {
            #expect(error.description == message)
            #expect(error.key.map { message.hasPrefix($0 + " ") } == true, "the key names the flag")
        }
    }

    @Test func disableAuthenticationNeedsNoCertificate() throws {
        let listener = try client { $0.cert = nil; $0.key = nil; $0.disableAuthentication = true }
        #expect(listener.tls.disableAuthentication)
        #expect(listener.tls.certificatePath == nil && listener.tls.keystorePath == nil)
        #expect(listener.verifyServerName)
    }

    @Test func clientWithoutCACertUsesTheSystemStoreAndAlwaysChecksTheName() throws {
        let plain = try client { $0.cacert = nil }
        #expect(plain.tls.caPath == nil && plain.verifyServerName)
        // Rules normally replace the name check; on the system store they narrow it instead.
        let ruled = try client { $0.cacert = nil; $0.verifyCN = ["broker-*"] }
        #expect(ruled.verifyServerName)
        let ownCA = try client { $0.verifyCN = ["broker-*"] }
        #expect(!ownCA.verifyServerName)
        #expect(try client { $0.cacert = nil }.serverName == "broker-1.internal")
    }

    @Test func serverModeStillRequiresCACert() {
        #expect(throws: ConfigError(key: "--cacert", message: "--cacert (config key tls.cacert) is required: server mode verifies every client certificate against it")) {
            try server { $0.cacert = nil }
        }
    }

    static let fileErrors: [(String, String)] = [
        ("      keystore: id.p12\n      storepass: hunter2\n      cacert: ca.pem",
         "portcullis.yaml:8: listeners[0].tls.storepass: a password is not written in the configuration file: put it in a file readable only by Portcullis and set keystore-password-file"),
        ("      keystore: id.p12\n      cert: c.pem\n      cacert: ca.pem",
         "portcullis.yaml:7: listeners[0].tls.keystore: keystore and cert are mutually exclusive: the keystore holds the certificate chain and the key; drop one of them"),
        ("      keystore-password-file: pw.txt\n      cert: c.pem\n      key: c.key\n      cacert: ca.pem",
         "portcullis.yaml:7: listeners[0].tls.keystore-password-file: keystore-password-file is the password of a keystore: give keystore too (with cert and key, an encrypted key's passphrase file is key-passphrase-file)"),
        ("      disable-authentication: true\n      cert: c.pem\n      key: c.key",
         "portcullis.yaml:7: listeners[0].tls.disable-authentication: disable-authentication: true and cert are mutually exclusive: without authentication the client presents no certificate; drop one of them"),
        ("      disable-authentication: yes",
         "portcullis.yaml:7: listeners[0].tls.disable-authentication: expected true or false, got 'yes'"),
        ("      disable-authentication: true\n    policy:\n      allow-all: true\n      verify-server-name: false",
         "portcullis.yaml:10: listeners[0].policy.verify-server-name: false needs tls.cacert: with the system trust store (no tls.cacert) every public certificate chains, so the server name is always verified; give tls.cacert, or remove the key"),
    ]

    @Test("each client tls file problem is one line", arguments: fileErrors)
    func clientFileError(tls: String, message: String) {
        let yaml = "listeners:\n  - name: out\n    mode: client\n    listen: 127.0.0.1:4150\n    target: broker-1.internal:4443\n    tls:\n" + tls + "\n"
        #expect(problem(yaml) == message)
    }

    @Test func serverFileRefusesDisableAuthentication() {
        let yaml = "listeners:\n  - name: in\n    listen: 0.0.0.0:8443\n    target: 127.0.0.1:6379\n    tls:\n      cert: s.pem\n      key: s.key\n      cacert: ca.pem\n      disable-authentication: true\n    policy:\n      allow-all: true\n"
        #expect(problem(yaml) == "portcullis.yaml:9: listeners[0].tls.disable-authentication: applies to client mode only: a server-mode listener always requires client certificates (policy.allow-all: true admits every client whose certificate chains to tls.cacert); remove it")
    }

    @Test func fileKeystoreAndSystemTrustAreShownByCheck() throws {
        let yaml = "listeners:\n  - name: out\n    mode: client\n    listen: 127.0.0.1:4150\n    target: broker-1.internal:4443\n    tls:\n      keystore: /srv/id.p12\n      keystore-password-file: /srv/pw.txt\n"
        let configuration = try PortcullisConfiguration.parse(yaml: yaml, source: "portcullis.yaml", checkFiles: false)
        let text = configuration.effectiveDescription()
        #expect(text.contains("keystore: /srv/id.p12"))
        #expect(text.contains("keystore-password-file: /srv/pw.txt"))
        #expect(text.contains("cacert: none (the system trust store"))
        #expect(configuration.listeners[0].verifyServerName)
    }

    private func problem(_ yaml: String) -> String? {
        do {
            _ = try PortcullisConfiguration.parse(yaml: yaml, source: "portcullis.yaml", checkFiles: false)
            return nil
        } catch {
            return error.description
        }
    }
}

extension Files {
    /// Stands for `passphrase` in static tables (the directory is made per test).
    static let passphraseName = "FIXTURE-PASSPHRASE"
}
