import Foundation
import Policy
import TLS

/// A throwaway PKI on disk (contexts load from files, as in production), built once per benchmark process:
/// an ECDSA P-256 CA, a server certificate for `localhost` and a client certificate for `alice`.
final class BenchPKI: @unchecked Sendable {
    let directory: String
    let ca: CertificateMinter.Issued
    let server: CertificateMinter.Issued
    let client: CertificateMinter.Issued

    init() throws {
        directory = NSTemporaryDirectory() + "portcullis-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ca = try CertificateMinter.makeCA(commonName: "Bench CA", keyKind: .ecdsaP256)
        server = try CertificateMinter.issue(subject: .init([("CN", "localhost")]), keyKind: .ecdsaP256, issuer: ca,
                                             san: "DNS:localhost,IP:127.0.0.1", extendedKeyUsage: "serverAuth")
        client = try CertificateMinter.issue(
            subject: .init([("C", "US"), ("O", "Example"), ("OU", "payments"), ("CN", "alice")]),
            keyKind: .ecdsaP256, issuer: ca,
            san: "DNS:alice.example.org,URI:spiffe://example.org/ns/prod/sa/alice,email:alice@example.org,IP:10.1.2.3",
            extendedKeyUsage: "clientAuth")
        try write("ca.pem", ca.certificatePEM)
        try write("server.pem", server.certificatePEM)
        try write("server.key", server.privateKeyPEM)
        try write("client.pem", client.certificatePEM)
        try write("client.key", client.privateKeyPEM)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func path(_ name: String) -> String { directory + "/" + name }

    private func write(_ name: String, _ contents: String) throws {
        try contents.write(toFile: path(name), atomically: true, encoding: .utf8)
    }

    /// TLS 1.3 only (the default minimum), client certificate required, policy with one CN rule.
    func serverContext() throws -> TLSContext {
        var configuration = TLSConfiguration(role: .server)
        configuration.certificatePath = path("server.pem")
        configuration.keyPath = path("server.key")
        configuration.caPath = path("ca.pem")
        let policy = AccessPolicy(rules: [try AccessRule(name: "cn=alice", matchers: [try Matcher(kind: .cn, value: "alice")])])
        return try TLSContext(configuration: configuration, policy: policy)
    }

    func clientContext() throws -> TLSContext {
        var configuration = TLSConfiguration(role: .client)
        configuration.certificatePath = path("client.pem")
        configuration.keyPath = path("client.key")
        configuration.caPath = path("ca.pem")
        configuration.serverName = "localhost"
        return try TLSContext(configuration: configuration, policy: nil)
    }
}

/// A buffer allocated once, so that moving bytes between sessions costs the harness no allocation.
final class Scratch: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer

    init(count: Int) {
        bytes = .allocate(byteCount: count, alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { bytes.deallocate() }
}

/// Moves all pending ciphertext from `from` into `to`; returns whether anything moved.
@inline(__always)
func transfer(_ from: TLSSession, _ to: TLSSession, via buffer: UnsafeMutableRawBufferPointer) -> Bool {
    var moved = false
    while from.pendingOutputCount > 0 {
        let n = from.readOutput(into: buffer)
        to.receive(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        moved = true
    }
    return moved
}

/// Moves ciphertext both ways until neither side has anything to send.
func pump(_ a: TLSSession, _ b: TLSSession, via buffer: UnsafeMutableRawBufferPointer) {
    while true {
        let ab = transfer(a, b, via: buffer)
        let ba = transfer(b, a, via: buffer)
        if !ab && !ba { return }
    }
}

enum BenchError: Error, CustomStringConvertible {
    case handshakeFailed(String)
    case unexpected(String)

    var description: String {
        switch self {
        case .handshakeFailed(let why): "handshake failed: \(why)"
        case .unexpected(let what): what
        }
    }
}

/// Runs both handshakes to completion in memory, then lets the client consume the server's
/// NewSessionTicket messages (what its first read does on a real connection). Throws on any failure.
func completeHandshake(client: TLSSession, server: TLSSession, via buffer: UnsafeMutableRawBufferPointer,
                       plaintext: UnsafeMutableRawBufferPointer) throws(BenchError) {
    var clientDone = false
    var serverDone = false
    func step(_ session: TLSSession, _ done: inout Bool) throws(BenchError) {
        guard !done else { return }
        switch session.handshake() {
        case .complete: done = true
        case .needsInput: break
        case .failed(let failure): throw .handshakeFailed(failure.description)
        }
    }
    try step(client, &clientDone)
    for _ in 0..<10 where !(clientDone && serverDone) {
        pump(client, server, via: buffer)
        try step(server, &serverDone)
        pump(client, server, via: buffer)
        try step(client, &clientDone)
    }
    guard clientDone && serverDone else { throw .handshakeFailed("did not complete in 10 round trips") }
    pump(client, server, via: buffer)
    switch client.read(into: plaintext) {
    case .needsInput: break
    case .bytes(let n): throw .unexpected("client read \(n) unexpected bytes after the handshake")
    case .closed: throw .unexpected("server closed after the handshake")
    case .failed(let failure): throw .unexpected("client failed after the handshake: \(failure)")
    }
}
