import Foundation
import Policy
import Testing
@testable import TLS

/// `TLSContext.authorize`: the one judgement of a certificate, on the context's clock — for `check`, for
/// resumption and for re-authorization after a reload.
@Suite struct AuthorizationTests {
    /// A copy of `context` whose clock reads `now + offset` seconds.
    func shifted(_ context: TLSContext, by offset: Int64) throws -> TLSContext {
        let start = Int64(Date().timeIntervalSince1970)
        return try TLSContext(configuration: context.configuration, policy: context.policy,
                              clock: TLSClock { start + offset })
    }

    static let clockCases: [(offset: Int64, failure: String)] = [
        (0, ""),
        (-2 * 3600, "not yet valid"),  // before notBefore (issued an hour ago)
        (2 * 86400, "expired"),        // after notAfter (valid for a day)
    ]

    @Test(arguments: clockCases)
    func checkJudgesTheCertificateAtTheContextsTime(offset: Int64, failure: String) throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let context = try shifted(pki.serverContext(policy: policy(cn: "alice")), by: offset)
        let judged = try context.assess(certificateAt: alice.cert)
        #expect(judged.identity.commonName == "alice")
        if !failure.isEmpty {
            #expect(judged.verificationFailure?.contains(failure) == true, "\(judged.verificationFailure ?? "nil")")
            #expect(!judged.isAdmitted)
        } else {
            #expect(judged.verificationFailure == nil)
            #expect(judged.isAdmitted)
        }
        #expect(judged.decision?.isAllowed == true, "the policy is reported even for a chain that fails")
    }

    @Test func aDeniedIdentityIsRefusedWithThePolicysReason() throws {
        let pki = try TestPKI()
        let bob = try pki.client("bob", subject: .init([("CN", "bob")]))
        let judged = try pki.serverContext(policy: policy(cn: "alice")).assess(certificateAt: bob.cert)
        #expect(judged.verificationFailure == nil)
        #expect(!judged.isAdmitted)
        #expect(judged.refusal == judged.decision?.description)
    }

    @Test func aCertificateFromAnotherCAIsRefused() throws {
        let pki = try TestPKI()
        let mallory = try pki.client("mallory", subject: .init([("CN", "alice")]), issuer: pki.otherCA)
        let judged = try pki.serverContext(policy: policy(cn: "alice")).assess(certificateAt: mallory.cert)
        #expect(judged.verificationFailure?.contains("issuer") == true, "\(judged.verificationFailure ?? "nil")")
        #expect(!judged.isAdmitted)
    }

    @Test func resumptionIsRefusedOnceTheClientCertificateExpired() throws {
        let pki = try TestPKI()
        // Valid for ten more minutes; the stored session lives for two hours.
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]), validUntil: 600)
        let clientContext = try pki.clientContext(cert: alice.cert, key: alice.key)
        let today = try pki.serverContext(policy: policy(cn: "alice"), listener: "expiry-\(UUID())")
        let ticket = try keptTicket(clientContext, today)
        let control = try keptTicket(clientContext, today)

        // Control: on today's clock it resumes.
        let again = try TLSSession(context: try shifted(today, by: 0))
        let client2 = try TLSSession(context: clientContext)
        client2.resume(control)
        #expect(handshake(client2, again) == (.complete, .complete))
        #expect(again.isResumed)

        // The same listener and generation, the clock twenty minutes on: the session is still stored, but its
        // certificate expired, so it is not resumed (the full handshake that replaces it runs on OpenSSL's
        // own clock, where alice is still valid).
        let later = try shifted(today, by: 1200)
        #expect(ServerSessionStore.shared.count >= 1)
        let server = try TLSSession(context: later)
        let client = try TLSSession(context: clientContext)
        client.resume(ticket)
        #expect(handshake(client, server) == (.complete, .complete))
        #expect(!server.isResumed)
    }

    @Test func reauthorizationUsesTheNewerContextsClock() throws {
        let pki = try TestPKI()
        let alice = try pki.client("alice", subject: .init([("CN", "alice")]))
        let context = try pki.serverContext(policy: policy(cn: "alice"))
        let server = try TLSSession(context: context)
        let client = try TLSSession(context: pki.clientContext(cert: alice.cert, key: alice.key))
        #expect(handshake(client, server) == (.complete, .complete))

        guard case .admitted = server.reauthorize(against: try shifted(context, by: 0)) else {
            Issue.record("refused on today's clock")
            return
        }
        guard case .refused(let why) = server.reauthorize(against: try shifted(context, by: 2 * 86400)) else {
            Issue.record("admitted after the certificate expired")
            return
        }
        #expect(why.contains("no longer verifies") && why.contains("expired"), "\(why)")
    }

    /// A full handshake; the client reads the ticket and returns its session.
    private func keptTicket(_ clientContext: TLSContext, _ serverContext: TLSContext) throws -> ResumableSession {
        let client = try TLSSession(context: clientContext)
        let server = try TLSSession(context: serverContext)
        #expect(handshake(client, server) == (.complete, .complete))
        pump(client, server)
        _ = drain(client)
        return try #require(client.copySession())
    }
}
