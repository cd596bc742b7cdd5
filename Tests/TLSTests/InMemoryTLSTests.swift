import Foundation
import Policy
import Testing
@testable import TLS

/// A throwaway PKI written to a temporary directory (contexts load from files, as in production).
final class TestPKI: @unchecked Sendable {
    let directory: String
    let ca: CertificateMinter.Issued
    let otherCA: CertificateMinter.Issued
    let server: CertificateMinter.Issued

    init() throws {
        directory = NSTemporaryDirectory() + "portcullis-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ca = try CertificateMinter.makeCA(commonName: "Test CA")
        otherCA = try CertificateMinter.makeCA(commonName: "Other CA")
        server = try CertificateMinter.issue(subject: .init([("CN", "localhost")]), issuer: ca,
                                             san: "DNS:localhost,IP:127.0.0.1", extendedKeyUsage: "serverAuth")
        try write("ca.pem", ca.certificatePEM)
        try write("server.pem", server.certificatePEM)
        try write("server.key", server.privateKeyPEM)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func write(_ name: String, _ contents: String) throws {
        try contents.write(toFile: path(name), atomically: true, encoding: .utf8)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    func client(_ name: String, subject: CertificateMinter.Subject, issuer: CertificateMinter.Issued? = nil,
                san: String? = nil, eku: String? = "clientAuth", keyKind: CertificateMinter.KeyKind = .ecdsaP256,
                validUntil: Int = 86400) throws -> (cert: String, key: String) {
        let issued = try CertificateMinter.issue(subject: subject, keyKind: keyKind, issuer: issuer ?? ca, san: san,
                                                 extendedKeyUsage: eku, validUntil: validUntil)
        try write("\(name).pem", issued.certificatePEM)
        try write("\(name).key", issued.privateKeyPEM)
        return (path("\(name).pem"), path("\(name).key"))
    }

    func serverContext(policy: AccessPolicy, minimum: TLSConfiguration.ProtocolVersion = .tls13,
                       crls: [String] = [], tolerateExpiredCRL: Bool = false, generation: UInt64 = 1,
                       listener: String = "portcullis", tickets: Int = 1, caFile: String = "ca.pem",
                       certificate: String = "server.pem", key: String = "server.key") throws -> TLSContext {
        var configuration = TLSConfiguration(role: .server)
        configuration.certificatePath = path(certificate)
        configuration.keyPath = path(key)
        configuration.caPath = path(caFile)
        configuration.sessionIDContext = listener
        configuration.sessionTicketCount = tickets
        configuration.minimumVersion = minimum
        configuration.crlPaths = crls
        configuration.tolerateExpiredCRL = tolerateExpiredCRL
        configuration.generation = generation
        return try TLSContext(configuration: configuration, policy: policy)
    }

    /// Writes a CRL from the test CA revoking `serials`; returns its path.
    func crl(_ name: String, revoking serials: [String], validUntil: Int = 86400) throws -> String {
        try write(name, CertificateMinter.makeCRL(issuer: ca, revokedSerials: serials, validUntil: validUntil))
        return path(name)
    }

    func serial(ofCertificateAt path: String) throws -> String {
        try CertificateMinter.identity(ofPEM: String(contentsOfFile: path, encoding: .utf8)).serialHex
    }

    func clientContext(cert: String?, key: String?) throws -> TLSContext {
        var configuration = TLSConfiguration(role: .client)
        configuration.certificatePath = cert
        configuration.keyPath = key
        configuration.caPath = path("ca.pem")
        configuration.serverName = "localhost"
        return try TLSContext(configuration: configuration, policy: nil)
    }
}

/// Moves ciphertext between two sessions until neither has anything to send.
func pump(_ a: TLSSession, _ b: TLSSession) {
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    var moved = true
    while moved {
        moved = false
        for (from, to) in [(a, b), (b, a)] {
            while from.pendingOutputCount > 0 {
                let n = buffer.withUnsafeMutableBytes { from.readOutput(into: $0) }
                buffer.withUnsafeBytes { to.receive(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                moved = true
            }
        }
    }
}

enum Outcome: Equatable { case complete, needsInput, failed(TLSFailure.Kind) }

func step(_ session: TLSSession) -> Outcome {
    switch session.handshake() {
    case .complete: return .complete
    case .needsInput: return .needsInput
    case .failed(let failure): return .failed(failure.kind)
    }
}

/// Runs both handshakes to the end; returns (client, server) outcomes.
func handshake(_ client: TLSSession, _ server: TLSSession) -> (Outcome, Outcome) {
    var c = step(client), s = Outcome.needsInput
    for _ in 0..<10 {
        pump(client, server)
        if s == .needsInput { s = step(server) }
        pump(client, server)
        if c == .needsInput { c = step(client) }
        if c != .needsInput && s != .needsInput { break }
    }
    return (c, s)
}

/// Reads whatever plaintext the session has, plus whether a failure or close was seen.
func drain(_ session: TLSSession) -> (bytes: [UInt8], failure: TLSFailure?) {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 32 * 1024)
    while true {
        let result = buffer.withUnsafeMutableBytes { session.read(into: $0) }
        switch result {
        case .bytes(let n): out += buffer[0..<n]
        case .needsInput, .closed: return (out, nil)
        case .failed(let failure): return (out, failure)
        }
    }
}

func policy(cn: String) throws -> AccessPolicy {
    AccessPolicy(rules: [try AccessRule(name: "cn=\(cn)", matchers: [try Matcher(kind: .cn, value: cn)])])
}

@Suite struct InMemoryTLSTests {
    @Test func handshakesAndPumpsLargeRecordsBothWays() throws {
        let pki = try TestPKI()
        let creds = try pki.client("alice", subject: .init([("CN", "alice"), ("OU", "payments")]))
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        let client = try TLSSession(context: pki.clientContext(cert: creds.cert, key: creds.key))
        let (c, s) = handshake(client, server)
        #expect(c == .complete)
        #expect(s == .complete)
        #expect(server.protocolVersion == "TLSv1.3")
        #expect(server.peerIdentity?.commonName == "alice")
        #expect(server.decision?.ruleName == "cn=alice")
        #expect(client.peerIdentity?.commonName == "localhost")

        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        for (from, to) in [(client, server), (server, client)] {
            #expect(payload.withUnsafeBytes { from.write($0) } == nil)
            var received: [UInt8] = []
            while received.count < payload.count {
                pump(client, server)
                let (bytes, failure) = drain(to)
                #expect(failure == nil)
                if bytes.isEmpty { break }
                received += bytes
            }
            #expect(received == payload)
        }
    }

    @Test func recordBuffersAreReleasedBetweenBurstsAndComeBack() throws {
        let pki = try TestPKI()
        let creds = try pki.client("alice", subject: .init([("CN", "alice")]))
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        let client = try TLSSession(context: pki.clientContext(cert: creds.cert, key: creds.key))
        let (c, s) = handshake(client, server)
        #expect(c == .complete && s == .complete)
        pump(client, server)
        _ = drain(server)
        _ = drain(client)  // the tickets
        #expect(server.releaseBuffers())
        #expect(client.releaseBuffers())
        let payload = [UInt8](repeating: 7, count: 100_000)
        for (from, to) in [(client, server), (server, client)] {
            #expect(payload.withUnsafeBytes { from.write($0) } == nil)
            var received: [UInt8] = []
            while received.count < payload.count {
                pump(client, server)
                let (bytes, failure) = drain(to)
                #expect(failure == nil)
                if bytes.isEmpty { break }
                received += bytes
            }
            #expect(received == payload)
            #expect(from.releaseBuffers() && to.releaseBuffers())
        }
    }

    @Test func deniedClientFailsInsideTheHandshakeWithAnAlert() throws {
        let pki = try TestPKI()
        let creds = try pki.client("mallory", subject: .init([("CN", "mallory")]))
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        let client = try TLSSession(context: pki.clientContext(cert: creds.cert, key: creds.key))
        let (_, s) = handshake(client, server)
        #expect(s == .failed(.denied))
        #expect(server.decision?.isAllowed == false)
        // TLS 1.3: the client learns of the refusal on its first read, as an alert.
        pump(client, server)
        let (bytes, failure) = drain(client)
        #expect(bytes.isEmpty)
        #expect(failure?.detail.contains("certificate unknown") == true)
    }

    @Test func clientWithoutCertificateIsRefused() throws {
        let pki = try TestPKI()
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        let client = try TLSSession(context: pki.clientContext(cert: nil, key: nil))
        let (_, s) = handshake(client, server)
        #expect(s == .failed(.noCertificate))
    }

    @Test func clientFromAnotherCAIsRefusedAsUnknownCA() throws {
        let pki = try TestPKI()
        let creds = try pki.client("eve", subject: .init([("CN", "alice")]), issuer: pki.otherCA)
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        let client = try TLSSession(context: pki.clientContext(cert: creds.cert, key: creds.key))
        let (_, s) = handshake(client, server)
        #expect(s == .failed(.unknownCA))
        #expect(server.peerIdentity == nil, "an untrusted certificate must never reach the policy")
    }

    @Test func expiredClientIsRefused() throws {
        let pki = try TestPKI()
        let creds = try pki.client("old", subject: .init([("CN", "alice")]), validUntil: -60)
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        let client = try TLSSession(context: pki.clientContext(cert: creds.cert, key: creds.key))
        #expect(handshake(client, server).1 == .failed(.expired))
    }

    @Test func clientWithoutClientAuthUsageIsRefused() throws {
        let pki = try TestPKI()
        let creds = try pki.client("srv", subject: .init([("CN", "alice")]), eku: "serverAuth")
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        let client = try TLSSession(context: pki.clientContext(cert: creds.cert, key: creds.key))
        #expect(handshake(client, server).1 == .failed(.badCertificate))
    }

    @Test(arguments: CertificateMinter.KeyKind.allCases)
    func acceptsEveryKeyKind(_ kind: CertificateMinter.KeyKind) throws {
        let pki = try TestPKI()
        let creds = try pki.client("k", subject: .init([("CN", "alice")]), keyKind: kind)
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        let client = try TLSSession(context: pki.clientContext(cert: creds.cert, key: creds.key))
        #expect(handshake(client, server) == (.complete, .complete))
    }

    @Test func resumedSessionIsReauthorizedAgainstThePolicy() throws {
        let pki = try TestPKI()
        let creds = try pki.client("alice", subject: .init([("CN", "alice")]))
        let clientContext = try pki.clientContext(cert: creds.cert, key: creds.key)
        let serverContext = try pki.serverContext(policy: policy(cn: "alice"))

        let firstServer = try TLSSession(context: serverContext)
        let firstClient = try TLSSession(context: clientContext)
        #expect(handshake(firstClient, firstServer) == (.complete, .complete))
        pump(firstClient, firstServer)
        _ = drain(firstClient)  // processes the NewSessionTicket
        let ticket = try #require(firstClient.copySession())

        let resumedServer = try TLSSession(context: serverContext)
        let resumedClient = try TLSSession(context: clientContext)
        resumedClient.resume(ticket)
        #expect(handshake(resumedClient, resumedServer) == (.complete, .complete))
        #expect(resumedServer.isResumed)
        #expect(resumedServer.peerIdentity?.commonName == "alice")

        // Same CA and certificate, but a context whose policy no longer admits alice: the ticket is
        // ignored, the full handshake runs, and alice is refused with an alert.
        let stricter = try TLSContext(configuration: serverContext.configuration, policy: policy(cn: "bob"))
        let refusedServer = try TLSSession(context: stricter)
        let refusedClient = try TLSSession(context: clientContext)
        refusedClient.resume(ticket)
        let (_, s) = handshake(refusedClient, refusedServer)
        #expect(s == .failed(.denied))
        #expect(!refusedServer.isResumed)
    }

    @Test func extractsIdentityFields() throws {
        let ca = try CertificateMinter.makeCA(commonName: "CA")
        let leaf = try CertificateMinter.issue(
            subject: .init([("C", "US"), ("O", "Example"), ("OU", "payments"), ("OU", "ops"), ("CN", "worker-1")]),
            issuer: ca, san: "DNS:worker-1.example.org,URI:spiffe://example.org/ns/prod/sa/worker,email:w@example.org,IP:10.1.2.3,IP:::1")
        let identity = try CertificateMinter.identity(ofPEM: leaf.certificatePEM)
        #expect(identity.anomalies.isEmpty)
        #expect(identity.commonName == "worker-1")
        #expect(identity.subject.values(of: "OU") == ["payments", "ops"])
        #expect(identity.subject.rfc2253 == "CN=worker-1,OU=ops,OU=payments,O=Example,C=US")
        #expect(identity.issuer.values(of: "CN") == ["CA"])
        #expect(identity.dnsNames == ["worker-1.example.org"])
        #expect(identity.spiffeID == "spiffe://example.org/ns/prod/sa/worker")
        #expect(identity.emails == ["w@example.org"])
        #expect(identity.ipAddresses.map(\.description) == ["10.1.2.3", "::1"])
        #expect(identity.certificateSHA256.count == 32)
        #expect(identity.spkiSHA256.count == 32)
        #expect(identity.notAfter > identity.notBefore)
        #expect(!identity.serialHex.isEmpty)
    }

    @Test func twoCommonNamesAreAnAnomaly() throws {
        let ca = try CertificateMinter.makeCA(commonName: "CA")
        let leaf = try CertificateMinter.issue(subject: .init([("CN", "alice"), ("CN", "admin")]), issuer: ca)
        let identity = try CertificateMinter.identity(ofPEM: leaf.certificatePEM)
        #expect(identity.commonName == nil)
        #expect(identity.anomalies == ["subject has 2 CN attributes"])
    }

    @Test func embeddedNULIsAnAnomalyNotATruncatedName() throws {
        let ca = try CertificateMinter.makeCA(commonName: "CA")
        let leaf = try CertificateMinter.issue(
            subject: .init(raw: [("CN", Array("alice\u{0}.evil.com".utf8))]), issuer: ca)
        let identity = try CertificateMinter.identity(ofPEM: leaf.certificatePEM)
        #expect(identity.subject.values(of: "CN").isEmpty)
        #expect(identity.anomalies == ["subject CN contains a NUL byte"])
    }

    @Test func revokedClientIsRefusedAndOthersStillPass() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let bob = try pki.client("bob", subject: .init([("CN", "bob")]))
        let crl = try pki.crl("clients.crl", revoking: [try pki.serial(ofCertificateAt: alice.cert)])
        let allowBoth = AccessPolicy(rules: [try AccessRule(name: "any", matchers: [try Matcher(kind: .o, value: "*")]),
                                             try AccessRule(name: "cn", matchers: [try Matcher(kind: .cn, value: "*")])])
        let context = try pki.serverContext(policy: allowBoth, crls: [crl])
        #expect(context.crlCount == 1)
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key)),
                          try TLSSession(context: context)).1 == .failed(.revoked))
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: bob.cert, key: bob.key)),
                          try TLSSession(context: context)).1 == .complete)
    }

    @Test func expiredCRLFailsClosedUnlessTolerated() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let stale = try pki.crl("stale.crl", revoking: [], validUntil: -30)
        let strict = try pki.serverContext(policy: policy(cn: "alice"), crls: [stale])
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key)),
                          try TLSSession(context: strict)).1 == .failed(.crlUnavailable))
        let lenient = try pki.serverContext(policy: policy(cn: "alice"), crls: [stale], tolerateExpiredCRL: true)
        let server = try TLSSession(context: lenient)
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key)), server).1 == .complete)
        #expect(server.expiredCRLTolerated)
    }

    @Test func liveSessionIsReauthorizedAgainstANewerContext() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key)), server) == (.complete, .complete))

        guard case .admitted = server.reauthorize(against: try pki.serverContext(policy: policy(cn: "alice"))) else {
            Issue.record("unchanged policy must keep the connection"); return
        }
        guard case .refused(let why) = server.reauthorize(against: try pki.serverContext(policy: policy(cn: "bob"))) else {
            Issue.record("a policy without alice must refuse her"); return
        }
        #expect(why.contains("closest: rule 'cn=bob' failed on cn"))
        let crl = try pki.crl("revoked.crl", revoking: [try pki.serial(ofCertificateAt: alice.cert)])
        guard case .refused(let revoked) = server.reauthorize(against: try pki.serverContext(policy: policy(cn: "alice"), crls: [crl])) else {
            Issue.record("a CRL revoking alice must refuse her"); return
        }
        #expect(revoked.contains("revoked"))
    }

    @Test func ticketFromAnEarlierGenerationResumesOnlyIfStillValid() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let clientContext = try pki.clientContext(cert: alice.cert, key: alice.key)
        let first = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice"), generation: 1))
        let firstClient = try TLSSession(context: clientContext)
        #expect(handshake(firstClient, first) == (.complete, .complete))
        pump(firstClient, first)
        _ = drain(firstClient)
        let ticket = try #require(firstClient.copySession())

        // Generation 2, same policy: the shared ticket keys decrypt it and the peer is re-verified.
        let second = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice"), generation: 2))
        let secondClient = try TLSSession(context: clientContext)
        secondClient.resume(ticket)
        #expect(handshake(secondClient, second) == (.complete, .complete))
        #expect(second.isResumed)

        // Generation 3 revokes alice: the ticket is ignored and the full handshake refuses her.
        let crl = try pki.crl("revoked.crl", revoking: [try pki.serial(ofCertificateAt: alice.cert)])
        let third = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice"), crls: [crl], generation: 3))
        let thirdClient = try TLSSession(context: clientContext)
        thirdClient.resume(ticket)
        #expect(handshake(thirdClient, third).1 == .failed(.revoked))
        #expect(!third.isResumed)
    }

    @Test func largeCRLLoadsQuickly() throws {
        let pki = try TestPKI()
        let serials = (1...100_000).map { String($0 * 7919, radix: 16) }
        let path = try pki.crl("large.crl", revoking: serials)
        let clock = ContinuousClock()
        let started = clock.now
        let context = try pki.serverContext(policy: policy(cn: "alice"), crls: [path])
        let loadTime = clock.now - started
        #expect(context.crlCount == 1)
        // Reported, not asserted: wall time on a shared machine is not a test outcome.
        print("100k-entry CRL loaded in \(loadTime)")
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key)),
                          try TLSSession(context: context)) == (.complete, .complete))
    }

    @Test func ticketStaysResumableWhenTheClientConnectionIsDroppedWithoutCloseNotify() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let clientContext = try pki.clientContext(cert: alice.cert, key: alice.key)
        let serverContext = try pki.serverContext(policy: policy(cn: "alice"))
        var ticket: ResumableSession?
        do {
            let client = try TLSSession(context: clientContext)
            let server = try TLSSession(context: serverContext)
            #expect(handshake(client, server) == (.complete, .complete))
            pump(client, server)
            _ = drain(client)
            ticket = client.copySession()
            // `client` is freed here without close_notify, as when a peer resets the connection.
        }
        for _ in 0..<2 {
            let client = try TLSSession(context: clientContext)
            let server = try TLSSession(context: serverContext)
            client.resume(try #require(ticket))
            #expect(handshake(client, server) == (.complete, .complete))
            #expect(server.isResumed, "a dropped connection must not spoil its ticket")
        }
    }
}
