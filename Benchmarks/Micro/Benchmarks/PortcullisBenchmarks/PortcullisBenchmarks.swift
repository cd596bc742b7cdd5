import Benchmark
import CBenchOpenSSL
import Foundation
import Policy
import TLS

// Portcullis micro benchmarks. What each measures, and why only mallocs are gated: ../../README.md.
// Names carry no spaces or slashes: package-benchmark 1.38 writes threshold files with those replaced by "_"
// but looks them up by the raw name, so such a benchmark could never be checked.
//
// PORTCULLIS_BENCH_MODE=ci shortens every benchmark (run.sh ci sets it); anything else is the full run.
// Malloc counts do not depend on the iteration count, so thresholds stored from either mode hold for both.

let benchmarks: @Sendable () -> Void = {
    let ci = ProcessInfo.processInfo.environment["PORTCULLIS_BENCH_MODE"] == "ci"

    /// Wall clock and throughput are reported but never gated (thresholds `.none`): a shared 2-core VM
    /// is too noisy. mallocCountTotal is gated against Thresholds/*.p90.json, up to `mallocSlack` extra per
    /// iteration. (`instructions` would be gated too, but this VM has no hardware counters: `perf stat -e
    /// instructions` reports "not supported".)
    func configuration(scaling: BenchmarkScalingFactor, mallocSlack: Int) -> Benchmark.Configuration {
        .init(
            metrics: [.wallClock, .throughput, .mallocCountTotal],
            timeUnits: .microseconds,
            warmupIterations: ci ? 2 : 10,
            scalingFactor: scaling,
            maxDuration: ci ? .milliseconds(400) : .seconds(5),
            maxIterations: ci ? 100 : 100_000,
            thresholds: [
                .mallocCountTotal: .init(absolute: [.p90: mallocSlack]),
                .wallClock: .none, .throughput: .none,
            ]
        )
    }

    // MARK: 1. In-memory TLS 1.3 mTLS handshake (ECDSA P-256, policy with one CN rule)

    Benchmark("Handshake-full-mTLS-P256",
              configuration: configuration(scaling: .one, mallocSlack: 20)) { benchmark, state in
        do {
            for _ in benchmark.scaledIterations {
                let server = try TLSSession(context: state.serverContext)
                let client = try TLSSession(context: state.clientContext)
                try completeHandshake(client: client, server: server, via: state.wire.bytes, plaintext: state.plain.bytes)
                guard !server.isResumed else { throw BenchError.unexpected("full handshake resumed") }
                client.sendCloseNotify()
                blackHole(server)
            }
        } catch {
            benchmark.error("\(error)")
        }
    } setup: {
        try HandshakeState()
    }

    Benchmark("Handshake-resumed-mTLS-P256",
              configuration: configuration(scaling: .one, mallocSlack: 20)) { benchmark, state in
        do {
            for _ in benchmark.scaledIterations {
                let server = try TLSSession(context: state.serverContext)
                let client = try TLSSession(context: state.clientContext)
                client.resume(state.ticket)
                try completeHandshake(client: client, server: server, via: state.wire.bytes, plaintext: state.plain.bytes)
                guard server.isResumed else { throw BenchError.unexpected("ticket was not accepted") }
                // Clean close, as a well-behaved client does; see HandshakeState.
                client.sendCloseNotify()
                blackHole(server)
            }
        } catch {
            benchmark.error("\(error)")
        }
    } setup: {
        try HandshakeState()
    }

    // MARK: 2. 16 KiB records through an established TLSSession pair (client encrypts, server decrypts)

    Benchmark("RecordPump-16KiB",
              configuration: configuration(scaling: .kilo, mallocSlack: 0)) { benchmark, state in
        let record = UnsafeRawBufferPointer(state.record.bytes)
        var received = 0
        for _ in benchmark.scaledIterations {
            if let failure = state.client.write(record) { benchmark.error("write: \(failure)"); return }
            _ = transfer(state.client, state.server, via: state.wire.bytes)
            switch state.server.read(into: state.plain.bytes) {
            case .bytes(let n): received &+= n
            case let other: benchmark.error("read: \(other)"); return
            }
        }
        if received != benchmark.scaledIterations.count * recordSize {
            benchmark.error("received \(received) bytes, expected \(benchmark.scaledIterations.count * recordSize)")
        }
    } setup: {
        try PumpState()
    }

    // MARK: 3. Policy evaluation over 1,000 rules

    Benchmark("Policy-1000rules-allow-last",
              configuration: configuration(scaling: .kilo, mallocSlack: 0)) { benchmark, state in
        for _ in benchmark.scaledIterations {
            blackHole(state.policy.evaluate(state.lastRuleIdentity))
        }
    } setup: {
        try PolicyState()
    }

    Benchmark("Policy-1000rules-deny-closest",
              configuration: configuration(scaling: .kilo, mallocSlack: 0)) { benchmark, state in
        for _ in benchmark.scaledIterations {
            blackHole(state.policy.evaluate(state.unknownIdentity))
        }
    } setup: {
        try PolicyState()
    }

    // MARK: 4. Identity extraction from a certificate

    Benchmark("Identity-fromPEM",
              configuration: configuration(scaling: .kilo, mallocSlack: 0)) { benchmark, pem in
        do {
            for _ in benchmark.scaledIterations {
                blackHole(try CertificateMinter.identity(ofPEM: pem))
            }
        } catch {
            benchmark.error("\(error)")
        }
    } setup: {
        try BenchPKI().client.certificatePEM
    }

    // Reference point, no Portcullis code: the PEM decode + X509 parse that `identity(ofPEM:)` starts with.
    // "Identity-fromPEM" minus this is the cost of extraction from an already-parsed certificate (what the
    // handshake pays: it extracts from the X509 OpenSSL already parsed).
    Benchmark("Identity-PEMparseOnly-reference",
              configuration: configuration(scaling: .kilo, mallocSlack: 0)) { benchmark, pem in
        for _ in benchmark.scaledIterations {
            guard let bio = BIO_new_mem_buf(pem, Int32(pem.utf8.count)) else { benchmark.error("BIO"); return }
            guard let cert = PEM_read_bio_X509(bio, nil, nil, nil) else { benchmark.error("PEM"); return }
            blackHole(cert)
            X509_free(cert)
            BIO_free(bio)
        }
    } setup: {
        try BenchPKI().client.certificatePEM
    }
}

// MARK: - State built once per benchmark, outside the measurement

final class HandshakeState: @unchecked Sendable {
    let pki: BenchPKI
    let serverContext: TLSContext
    let clientContext: TLSContext
    /// A ticket from a first full handshake, offered by every resumed handshake (TLS 1.3 tickets are reusable
    /// with OpenSSL's stateless tickets; the server re-authorizes the peer on each use).
    let ticket: ResumableSession
    let wire = Scratch(count: 64 * 1024)
    let plain = Scratch(count: 32 * 1024)

    init() throws {
        pki = try BenchPKI()
        serverContext = try pki.serverContext()
        clientContext = try pki.clientContext()
        let server = try TLSSession(context: serverContext)
        let client = try TLSSession(context: clientContext)
        try completeHandshake(client: client, server: server, via: wire.bytes, plaintext: plain.bytes)
        guard server.decision?.ruleName == "cn=alice" else { throw BenchError.unexpected("policy did not admit alice") }
        guard let ticket = client.copySession() else { throw BenchError.unexpected("no session ticket") }
        self.ticket = ticket
        // A client SSL freed without close_notify has its session marked not resumable by OpenSSL
        // (SSL_free -> ssl_clear_bad_session), which would silently turn every "resumed" handshake into a full one.
        client.sendCloseNotify()
    }
}

let recordSize = 16 * 1024

final class PumpState: @unchecked Sendable {
    let handshake: HandshakeState
    let client: TLSSession
    let server: TLSSession
    let record = Scratch(count: recordSize)
    let wire = Scratch(count: 64 * 1024)
    let plain = Scratch(count: 64 * 1024)

    init() throws {
        handshake = try HandshakeState()
        server = try TLSSession(context: handshake.serverContext)
        client = try TLSSession(context: handshake.clientContext)
        try completeHandshake(client: client, server: server, via: wire.bytes, plaintext: plain.bytes)
        for index in 0..<recordSize { record.bytes[index] = UInt8(truncatingIfNeeded: index &* 2654435761 >> 13) }
        guard client.protocolVersion == "TLSv1.3" else { throw BenchError.unexpected("negotiated \(client.protocolVersion)") }
    }
}

final class PolicyState: @unchecked Sendable {
    let policy: AccessPolicy
    /// Admitted by rule 999 only: every earlier rule is tried first.
    let lastRuleIdentity: PeerIdentity
    /// Admitted by no rule: every rule is tried, then the closest one (rule 49) is explained.
    let unknownIdentity: PeerIdentity

    /// Rule i: `ou=team-<i % 50> AND spiffe=spiffe://example.org/ns/prod/sa/svc-<i>`, so 1 rule in 50 gets
    /// past its first matcher.
    init() throws {
        var rules: [AccessRule] = []
        for index in 0..<1000 {
            rules.append(try AccessRule(name: "svc-\(index)", matchers: [
                try Matcher(kind: .ou, value: "team-\(index % 50)"),
                try Matcher(kind: .spiffeID, value: "spiffe://example.org/ns/prod/sa/svc-\(index)"),
            ]))
        }
        policy = AccessPolicy(rules: rules)
        func identity(_ service: String) -> PeerIdentity {
            PeerIdentity(
                subject: DistinguishedName([.init(type: "CN", value: service), .init(type: "OU", value: "team-49"),
                                            .init(type: "O", value: "Example")]),
                issuer: DistinguishedName([.init(type: "CN", value: "Bench CA"), .init(type: "O", value: "Portcullis")]),
                dnsNames: ["\(service).example.org"],
                uris: ["spiffe://example.org/ns/prod/sa/\(service)"])
        }
        lastRuleIdentity = identity("svc-999")
        unknownIdentity = identity("svc-unknown")
        let allowed = policy.evaluate(lastRuleIdentity)
        guard allowed.ruleName == "svc-999" else { throw BenchError.unexpected("expected rule svc-999, got \(allowed)") }
        let denied = policy.evaluate(unknownIdentity)
        guard denied.closestRuleName == "svc-49" else { throw BenchError.unexpected("expected closest svc-49, got \(denied)") }
    }
}
