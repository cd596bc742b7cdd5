import ArgumentParser
import Bench
import Foundation
import Logging
import Policy
import Proxy
import Streams
import TLS

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run Portcullis for real on this machine: throwaway CA, echo backend, sidecar, two clients.",
        discussion: """
        Makes a throwaway CA and certificates in a temporary directory, starts a plaintext echo backend on \
        loopback and a server-mode sidecar in front of it that admits only CN=demo-client, then connects once \
        with an allowed and once with a refused certificate and shows what happened. It keeps running so you \
        can try it by hand with the printed openssl s_client commands; Ctrl-C stops it.
        """
    )

    @Option(help: "Address for the demo sidecar.")
    var listen = "127.0.0.1:8443"

    @Option(help: "Directory for the throwaway certificates (default: a new temporary directory).")
    var dir: String?

    @Flag(help: "Exit after the two demo connections instead of waiting for Ctrl-C.")
    var once = false

    @Option(name: .customLong("log-format"), help: "Log format: text (default) or json.")
    var logFormat = "text"

    func run() throws {
        guard let colon = listen.lastIndex(of: ":"), let port = UInt16(listen[listen.index(after: colon)...]) else {
            throw CommandFailure(message: "--listen '\(listen)' is not HOST:PORT, e.g. 127.0.0.1:8443", code: 2)
        }
        let host = String(listen[..<colon])
        let directory = try dir ?? makeTemporaryDirectory()
        let files = try writeDemoPKI(into: directory)
        let echo = try BenchBackend(mode: .echo, host: "127.0.0.1", port: 0, workers: 1)
        say("• echo backend (plaintext) on 127.0.0.1:\(echo.port)")

        let logger = try bootstrapLogging(format: logFormat == "json" ? .json : .text, level: "info")
        var tls = TLSConfiguration(role: .server)
        tls.certificatePath = files.serverCert
        tls.keyPath = files.serverKey
        tls.caPath = files.ca
        let policy = AccessPolicy(rules: [try AccessRule(name: "cn=demo-client", matchers: [try Matcher(kind: .cn, value: "demo-client")])])
        let listener = ListenerConfiguration(listenHost: host, listenPort: port, target: .tcp(host: "127.0.0.1", port: echo.port),
                                             tls: tls, policy: policy)
        var configuration = RuntimeConfiguration(listeners: [listener])
        configuration.workers = 2
        configuration.shutdownTimeoutMs = 2000
        let runtime: ServerRuntime
        do {
            runtime = try ServerRuntime(configuration: configuration, logger: logger)
        } catch {
            throw CommandFailure(message: error.description + " (pick another with --listen)")
        }
        say("• sidecar (mTLS, admits only CN=demo-client) on \(listen) → 127.0.0.1:\(echo.port)")

        let once = self.once
        let probes = ProbeThread(host: host, port: port, files: files, once: once, listen: listen)
        probes.start()
        let code = runtime.run()
        probes.join()
        if !probes.allAsExpected { throw ExitCode(1) }
        if code != 0 { throw ExitCode(code) }
    }
}

/// Runs the two demo clients beside the sidecar and prints what happened.
final class ProbeThread: @unchecked Sendable {
    private let host: String
    private let port: UInt16
    private let files: DemoFiles
    private let once: Bool
    private let listen: String
    private let done = NSCondition()
    private var finished = false
    private(set) var allAsExpected = false

    init(host: String, port: UInt16, files: DemoFiles, once: Bool, listen: String) {
        self.host = host
        self.port = port
        self.files = files
        self.once = once
        self.listen = listen
    }

    func start() {
        // Not stored: the running thread keeps itself (and this object) alive until `body` returns.
        Thread { [self] in self.body() }.start()
    }

    func join() {
        done.lock()
        while !finished { done.wait() }
        done.unlock()
    }

    private func body() {
        defer {
            done.lock()
            finished = true
            done.signal()
            done.unlock()
        }
        // Give the worker loops a moment to start (connections would queue in the kernel anyway).
        Thread.sleep(forTimeInterval: 0.2)
        let message = Array("hello through portcullis".utf8)
        var ok = true
        do {
            let allowed = try clientContext(cert: files.clientCert, key: files.clientKey)
            let result = TLSProbe.run(host: host, port: port, tls: allowed, message: message)
            if let reply = result.reply, reply == message {
                say("✔ CN=demo-client admitted: sent \"hello through portcullis\", the echo backend answered \"\(String(decoding: reply, as: UTF8.self))\" over \(result.tlsVersion ?? "TLS")")
            } else {
                ok = false
                say("✘ CN=demo-client should have been admitted but: \(result.failure ?? "no reply")")
            }
            let denied = try clientContext(cert: files.intruderCert, key: files.intruderKey)
            let refusal = TLSProbe.run(host: host, port: port, tls: denied, message: message)
            if refusal.reply == nil {
                say("✔ CN=intruder refused inside the TLS handshake (client saw: \(refusal.failure ?? "closed")); the backend never saw it")
            } else {
                ok = false
                say("✘ CN=intruder was admitted: this is a bug")
            }
        } catch {
            ok = false
            say("✘ demo client setup failed: \(error)")
        }
        allAsExpected = ok
        say("""

        The audit lines above ("connection closed", "handshake failed") are what Portcullis logs for every connection.
        Try it by hand (certificates are in \(files.directory)):
          openssl s_client -connect \(listen) -servername localhost -CAfile \(files.ca) -cert \(files.clientCert) -key \(files.clientKey) -quiet
          openssl s_client -connect \(listen) -servername localhost -CAfile \(files.ca) -cert \(files.intruderCert) -key \(files.intruderKey) -quiet
        """)
        if once {
            kill(getpid(), SIGTERM)
        } else {
            say("Press Ctrl-C to stop.")
        }
    }

    private func clientContext(cert: String, key: String) throws -> TLSContext {
        var tls = TLSConfiguration(role: .client)
        tls.certificatePath = cert
        tls.keyPath = key
        tls.caPath = files.ca
        tls.serverName = "localhost"
        return try TLSContext(configuration: tls, policy: nil)
    }
}

struct DemoFiles: Sendable {
    var directory, ca, serverCert, serverKey, clientCert, clientKey, intruderCert, intruderKey: String
}

func makeTemporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "portcullis-demo-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                            attributes: [.posixPermissions: 0o700])
    return path
}

func writeDemoPKI(into directory: String) throws -> DemoFiles {
    let ca = try CertificateMinter.makeCA(commonName: "Portcullis Demo CA")
    let server = try CertificateMinter.issue(subject: .init([("CN", "localhost")]), issuer: ca,
                                             san: "DNS:localhost,IP:127.0.0.1", extendedKeyUsage: "serverAuth")
    let client = try CertificateMinter.issue(subject: .init([("O", "Portcullis Demo"), ("CN", "demo-client")]), issuer: ca,
                                             san: "URI:spiffe://demo.local/ns/demo/sa/client", extendedKeyUsage: "clientAuth")
    let intruder = try CertificateMinter.issue(subject: .init([("O", "Portcullis Demo"), ("CN", "intruder")]), issuer: ca,
                                               extendedKeyUsage: "clientAuth")
    func put(_ name: String, _ text: String, secret: Bool = false) throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: secret ? 0o600 : 0o644], ofItemAtPath: path)
        return path
    }
    return DemoFiles(
        directory: directory,
        ca: try put("ca.pem", ca.certificatePEM),
        serverCert: try put("server.pem", server.certificatePEM),
        serverKey: try put("server.key", server.privateKeyPEM, secret: true),
        clientCert: try put("client.pem", client.certificatePEM),
        clientKey: try put("client.key", client.privateKeyPEM, secret: true),
        intruderCert: try put("intruder.pem", intruder.certificatePEM),
        intruderKey: try put("intruder.key", intruder.privateKeyPEM, secret: true))
}

/// Demo narration goes to stdout, logs to stderr.
func say(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress, $0.count) }
}
