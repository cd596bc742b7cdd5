import COpenSSL
import Foundation
import Policy
import Testing
@testable import TLS

/// A full handshake whose client then reads the tickets; returns the client's session for resumption.
private func connectAndKeepTicket(_ clientContext: TLSContext, _ serverContext: TLSContext) throws -> (ResumableSession, TLSSession) {
    let client = try TLSSession(context: clientContext)
    let server = try TLSSession(context: serverContext)
    #expect(handshake(client, server) == (.complete, .complete))
    pump(client, server)
    _ = drain(client)  // processes the NewSessionTicket(s)
    return (try #require(client.copySession()), server)
}

/// Offers `ticket` to a fresh server session of `serverContext`; returns (client outcome, server outcome, server).
private func resume(_ ticket: ResumableSession, _ clientContext: TLSContext, _ serverContext: TLSContext) throws
    -> (Outcome, Outcome, TLSSession) {
    let client = try TLSSession(context: clientContext)
    let server = try TLSSession(context: serverContext)
    client.resume(ticket)
    let (c, s) = handshake(client, server)
    return (c, s, server)
}

@Suite struct SessionStoreTests {
    @Test func workersOfOneListenerResumeEachOthersSessions() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let clientContext = try pki.clientContext(cert: alice.cert, key: alice.key)
        // Two workers' contexts built from one configuration (as after a restart of a worker, or SO_REUSEPORT
        // sending the next connection to the other worker).
        let workerA = try pki.serverContext(policy: policy(cn: "alice"), listener: "workers-\(UUID())")
        let workerB = try TLSContext(configuration: workerA.configuration, policy: workerA.policy)
        let (ticket, _) = try connectAndKeepTicket(clientContext, workerA)
        let (c, s, server) = try resume(ticket, clientContext, workerB)
        #expect((c, s) == (.complete, .complete))
        #expect(server.isResumed)
        #expect(server.peerIdentity?.commonName == "alice")
    }

    @Test func anotherListenerDoesNotResumeTheSession() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let clientContext = try pki.clientContext(cert: alice.cert, key: alice.key)
        let first = try pki.serverContext(policy: policy(cn: "alice"), listener: "a-\(UUID())")
        let other = try pki.serverContext(policy: policy(cn: "alice"), listener: "b-\(UUID())")
        let (ticket, _) = try connectAndKeepTicket(clientContext, first)
        let (c, s, server) = try resume(ticket, clientContext, other)
        #expect((c, s) == (.complete, .complete), "a full handshake takes its place")
        #expect(!server.isResumed)
    }

    @Test func sameGenerationWithOtherTrustMaterialIsVerifiedAgain() throws {
        // Same listener name and generation number, but the CA file changed: the session's certificate must
        // verify against the new CA before it resumes (here it does not: alice is from the old CA).
        let pki = try TestPKI()
        try pki.write("other-ca.pem", pki.otherCA.certificatePEM)
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let clientContext = try pki.clientContext(cert: alice.cert, key: alice.key)
        let listener = "trust-\(UUID())"
        let before = try pki.serverContext(policy: policy(cn: "alice"), listener: listener)
        let after = try pki.serverContext(policy: policy(cn: "alice"), listener: listener, caFile: "other-ca.pem")
        #expect(before.sessionIssuer.generation == after.sessionIssuer.generation)
        let (ticket, _) = try connectAndKeepTicket(clientContext, before)
        let (_, s, server) = try resume(ticket, clientContext, after)
        #expect(s == .failed(.unknownCA), "the full handshake that replaces the resumption refuses her")
        #expect(!server.isResumed)
    }

    @Test(arguments: [0, 1, 2, 4])
    func sendsTheConfiguredNumberOfTickets(_ count: Int) throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let context = try pki.serverContext(policy: policy(cn: "alice"), listener: "count-\(UUID())", tickets: count)
        let client = try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key))
        let server = try TLSSession(context: context)
        #expect(handshake(client, server) == (.complete, .complete))
        pump(client, server)
        _ = drain(client)
        #expect(ServerSessionStore.shared.count(issuedBy: context.sessionIssuer) == count)
        #expect(client.hasResumableSession == (count > 0))
    }

    @Test func aTicketResumesAgainAndEachResumptionIssuesOneMore() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let clientContext = try pki.clientContext(cert: alice.cert, key: alice.key)
        let context = try pki.serverContext(policy: policy(cn: "alice"), listener: "reuse-\(UUID())")
        let (ticket, _) = try connectAndKeepTicket(clientContext, context)
        // Clients that open several connections at once offer the same ticket to each (Python, Go, OpenSSL).
        for round in 1...3 {
            let (c, s, server) = try resume(ticket, clientContext, context)
            #expect((c, s) == (.complete, .complete))
            #expect(server.isResumed, "round \(round)")
        }
    }

    @Test func resumptionIsOffWithoutTickets() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        var configuration = try pki.serverContext(policy: policy(cn: "alice")).configuration
        configuration.sessionTickets = false
        let context = try TLSContext(configuration: configuration, policy: try policy(cn: "alice"))
        let client = try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key))
        #expect(handshake(client, try TLSSession(context: context)) == (.complete, .complete))
        _ = drain(client)
        #expect(!client.hasResumableSession)
    }
}

@Suite struct SessionStoreBookkeepingTests {
    /// A bare session with a 32-byte ID, as OpenSSL makes for a stateful ticket.
    private func makeSession(_ id: UInt8, lifetime: Int = 7200) -> OpaquePointer {
        let session = SSL_SESSION_new()!
        var bytes = [UInt8](repeating: id, count: 32)
        _ = SSL_SESSION_set1_id(session, &bytes, 32)
        _ = SSL_SESSION_set_timeout(session, lifetime)
        return session
    }

    private let issuer = ServerSessionStore.Issuer(listener: .init([1]), trust: .init([2]), generation: 1)
    private var now: Int64 { Int64(time(nil)) }

    private func find(_ store: ServerSessionStore, _ id: UInt8) -> Bool {
        let bytes = [UInt8](repeating: id, count: 32)
        guard let found = bytes.withUnsafeBytes({ store.find($0, now: now) }) else { return false }
        SSL_SESSION_free(found.session.raw)
        return true
    }

    @Test func evictsTheLeastRecentlyUsedWhenFull() {
        let store = ServerSessionStore(capacity: 3)
        for id in UInt8(1)...3 { #expect(store.insert(makeSession(id), issuer: issuer, now: now)) }
        #expect(find(store, 1))  // 1 is now the most recently used; 2 the least
        #expect(store.insert(makeSession(4), issuer: issuer, now: now))
        #expect(store.count == 3)
        #expect(!find(store, 2))
        #expect(find(store, 1) && find(store, 3) && find(store, 4))
    }

    @Test func neverHandsOutAnExpiredSession() {
        let store = ServerSessionStore(capacity: 10)
        #expect(store.insert(makeSession(7, lifetime: 100), issuer: issuer, now: now))
        let bytes = [UInt8](repeating: 7, count: 32)
        #expect(bytes.withUnsafeBytes { store.find($0, now: now + 101) } == nil)
        #expect(store.count == 0, "the expired entry is dropped when found")
        #expect(store.counters.misses == 1)
    }

    @Test func shrinkingTheCapacityReleasesTheOldest() {
        let store = ServerSessionStore(capacity: 5)
        for id in UInt8(1)...5 { #expect(store.insert(makeSession(id), issuer: issuer, now: now)) }
        store.setCapacity(2)
        #expect(store.count == 2)
        #expect(find(store, 4) && find(store, 5))
        #expect(!find(store, 1))
    }

    @Test func removeForgetsOnlyThatSession() {
        let store = ServerSessionStore(capacity: 5)
        let doomed = makeSession(9)
        SSL_SESSION_up_ref(doomed)  // the test keeps a reference to pass to remove()
        #expect(store.insert(doomed, issuer: issuer, now: now))
        #expect(store.insert(makeSession(8), issuer: issuer, now: now))
        store.remove(doomed)
        SSL_SESSION_free(doomed)
        #expect(!find(store, 9))
        #expect(find(store, 8))
    }

    @Test func unknownIDsAreMisses() {
        let store = ServerSessionStore(capacity: 5)
        #expect(!find(store, 42))
        #expect(store.counters == (hits: 0, misses: 1))
    }
}

@Suite struct VerifiedChainCacheTests {
    @Test func aReconnectingClientIsNotVerifiedTwice() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let context = try pki.serverContext(policy: policy(cn: "alice"))
        let cache = try #require(context.verifiedChains)
        for _ in 0..<3 {
            let client = try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key))
            let server = try TLSSession(context: context)
            #expect(handshake(client, server) == (.complete, .complete))
            #expect(server.peerIdentity?.commonName == "alice", "the identity is extracted on a cache hit too")
        }
        #expect(cache.counters == (hits: 2, misses: 1))
    }

    @Test func aDeniedClientIsNeverCachedAndStaysDenied() throws {
        let pki = try TestPKI()
        let mallory = try pki.client("mallory", subject: .init([("CN", "mallory")]))
        let context = try pki.serverContext(policy: policy(cn: "alice"))
        for _ in 0..<2 {
            let client = try TLSSession(context: pki.clientContext(cert: mallory.cert, key: mallory.key))
            #expect(handshake(client, try TLSSession(context: context)).1 == .failed(.denied))
        }
        #expect(context.verifiedChains?.count == 0)
    }

    @Test func anotherCertificateOfTheSameSubjectIsVerifiedAfresh() throws {
        // Same subject, different key and signature: a different DER chain, so a different key.
        let pki = try TestPKI()
        let first = try pki.client("alice1", subject: .init([("CN", "alice")]))
        let rogue = try pki.client("alice2", subject: .init([("CN", "alice")]), issuer: pki.otherCA)
        let context = try pki.serverContext(policy: policy(cn: "alice"))
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: first.cert, key: first.key)),
                          try TLSSession(context: context)).1 == .complete)
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: rogue.cert, key: rogue.key)),
                          try TLSSession(context: context)).1 == .failed(.unknownCA))
    }

    @Test func entriesExpireAndTheCacheStaysBounded() {
        let cache = VerifiedChainCache(capacity: 4)
        let key = VerifiedChainCache.Key([1, 2, 3])
        cache.insert(key, expiresAt: 1_000, now: 500)
        #expect(cache.contains(key, now: 999))
        #expect(!cache.contains(key, now: 1_000), "not at or after the earliest notAfter / nextUpdate")
        cache.insert(.init([9]), expiresAt: 10, now: 20)
        #expect(!cache.contains(.init([9]), now: 5), "an already expired chain is not stored")
        for i in 0..<10 { cache.insert(.init([UInt8(i), 7]), expiresAt: 2_000, now: 600) }
        #expect(cache.count <= 4)
    }

    @Test func expiresAtTheEarliestCRLNextUpdate() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let crl = try pki.crl("soon.crl", revoking: [], validUntil: 120)
        let context = try pki.serverContext(policy: policy(cn: "alice"), crls: [crl])
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key)),
                          try TLSSession(context: context)).1 == .complete)
        let cache = try #require(context.verifiedChains)
        #expect(cache.count == 1)
        let nextUpdate = try #require(context.crlNextUpdate)
        let now = Int64(time(nil))
        // Probe with the real key of alice's chain: present before the CRL's nextUpdate, gone at it.
        let pem = try String(contentsOfFile: alice.cert, encoding: .utf8)
        let key = try #require(try chainKey(pem: pem))
        #expect(cache.contains(key, now: now))
        #expect(!cache.contains(key, now: nextUpdate))
    }

    @Test func aToleratedExpiredCRLIsNeverCached() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let stale = try pki.crl("stale.crl", revoking: [], validUntil: -30)
        let context = try pki.serverContext(policy: policy(cn: "alice"), crls: [stale], tolerateExpiredCRL: true)
        let server = try TLSSession(context: context)
        #expect(handshake(try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key)), server).1 == .complete)
        #expect(server.expiredCRLTolerated)
        #expect(context.verifiedChains?.count == 0)
    }

    /// The cache key of a one-certificate chain read from PEM.
    private func chainKey(pem: String) throws -> VerifiedChainCache.Key? {
        let bio = BIO_new_mem_buf(pem, Int32(pem.utf8.count))
        defer { BIO_free(bio) }
        guard let certificate = PEM_read_bio_X509(bio, nil, nil, nil) else { return nil }
        let stack = OPENSSL_sk_new_null()
        defer { OPENSSL_sk_pop_free(stack) { X509_free(OpaquePointer($0)) } }
        _ = OPENSSL_sk_push(stack, UnsafeRawPointer(certificate))
        return VerifiedChainCache.key(for: stack!)
    }
}

@Suite struct OwnChainTests {
    /// The certificates the client received from the server, as subjects (leaf first).
    private func chainSent(by server: TLSSession, to client: TLSSession) -> [String] {
        guard let stack = SSL_get_peer_cert_chain(client.ssl) else { return [] }
        return (0..<OPENSSL_sk_num(stack)).map { index in
            let certificate = OpaquePointer(OPENSSL_sk_value(stack, index))!
            return IdentityExtractor.extract(certificate).subject.values(of: "CN").first ?? "?"
        }
    }

    @Test func sendsTheLeafButNotTheRoot() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let client = try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key))
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        #expect(handshake(client, server) == (.complete, .complete))
        #expect(chainSent(by: server, to: client) == ["localhost"])
    }

    @Test func sendsIntermediatesFoundInTheStoreOnce() throws {
        // The certificate file holds only the leaf; the intermediate is in the CA bundle (as OpenSSL's
        // auto-chain would find it). It is sent, and the root is not.
        let pki = try TestPKI()
        let intermediate = try CertificateMinter.makeIntermediateCA(commonName: "Issuing CA", issuer: pki.ca)
        let leaf = try CertificateMinter.issue(subject: .init([("CN", "localhost")]), issuer: intermediate,
                                               san: "DNS:localhost", extendedKeyUsage: "serverAuth")
        try pki.write("leaf.pem", leaf.certificatePEM)
        try pki.write("leaf.key", leaf.privateKeyPEM)
        try pki.write("bundle.pem", pki.ca.certificatePEM + intermediate.certificatePEM)
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let context = try pki.serverContext(policy: policy(cn: "alice"), caFile: "bundle.pem",
                                            certificate: "leaf.pem", key: "leaf.key")
        for _ in 0..<2 {
            let client = try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key))
            let server = try TLSSession(context: context)
            #expect(handshake(client, server) == (.complete, .complete))
            #expect(chainSent(by: server, to: client) == ["localhost", "Issuing CA"])
        }
    }
}

@Suite struct CiphertextBIOTests {
    @Test func recordsSplitAcrossReceivesAreReassembled() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let client = try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key))
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        #expect(handshake(client, server) == (.complete, .complete))
        pump(client, server)
        _ = drain(client)
        let message = Array((0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        #expect(message.withUnsafeBytes { client.write($0) } == nil)
        let ciphertext = Array(client.pendingOutput)
        client.consumeOutput(ciphertext.count)
        #expect(client.pendingOutputCount == 0)
        // Lend the records in odd-sized pieces, reading inside each lend as the relay does.
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var offset = 0
        while offset < ciphertext.count {
            let n = min(997, ciphertext.count - offset)
            ciphertext[offset..<(offset + n)].withUnsafeBytes { piece in
                server.receiving(piece) {
                    while server.hasUnreadInput {
                        guard case .bytes(let got) = buffer.withUnsafeMutableBytes({ server.read(into: $0) }) else { break }
                        received += buffer[0..<got]
                    }
                }
            }
            offset += n
        }
        #expect(received == message)
        #expect(server.bufferedInputCount == 0)
        #expect(server.releaseBuffers())
    }

    @Test func nothingIsReleasedWhilePartOfARecordIsHeld() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let client = try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key))
        let server = try TLSSession(context: pki.serverContext(policy: policy(cn: "alice")))
        #expect(handshake(client, server) == (.complete, .complete))
        pump(client, server)
        _ = drain(client)
        #expect([UInt8](repeating: 1, count: 100).withUnsafeBytes { client.write($0) } == nil)
        let record = Array(client.pendingOutput)
        record[0..<10].withUnsafeBytes { server.receive($0) }
        #expect(!server.releaseBuffers(), "ten bytes of a record are still held")
        #expect(server.bufferedInputCount == 10)
    }
}
