import COpenSSL
import COpenSSLShims
public import Policy

#if canImport(Glibc)
import Glibc
#endif

/// Why a handshake (or a record operation) failed. The one vocabulary: the audit line's `handshake.error`,
/// the log text and the `reason` label of `portcullis_handshake_failures_total` are all `kind.rawValue`.
public struct TLSFailure: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// The client sent no certificate (TCP health checks and scanners usually end as `peerClosed`).
        case noCertificate = "no_certificate"
        case unknownCA = "unknown_ca"
        case expired
        case revoked
        /// No usable CRL (missing for a chain member, expired, not yet valid): fail closed.
        case crlUnavailable = "crl_unavailable"
        case badCertificate = "bad_certificate"
        /// Verified, but the access policy does not admit it.
        case denied
        /// The peer sent a fatal alert refusing us (e.g. it does not trust our certificate).
        case refusedByPeer = "refused_by_peer"
        case protocolError = "protocol_error"
        /// No complete handshake within the handshake timeout.
        case timeout
        /// The peer closed or reset the connection before the handshake finished.
        case peerClosed = "peer_closed"
        /// Client mode: the remote server could not be reached.
        case targetUnreachable = "target_unreachable"
        /// Closed to make room: the worker had as many handshakes in progress as `limits.handshakes` allows,
        /// and this was the oldest.
        case handshakeLimit = "handshake_limit"
    }

    public let kind: Kind
    public let detail: String

    public init(kind: Kind, detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String { "\(kind.rawValue): \(detail)" }
}

/// One TLS connection as a pump: ciphertext in (`receiving`/`receive`), plaintext out (`read`), plaintext in
/// (`write`), ciphertext out (`pendingOutput`/`consumeOutput`, or `readOutput`). It never touches a socket, so
/// it is testable in memory and usable from any event loop.
///
/// Ownership: owns its `SSL` (which owns its BIO) and frees it in `deinit`; owns the `CiphertextBIO` buffers
/// behind that BIO; holds its context strongly.
/// The `SSL`'s ex_data points back at this object *unretained*: valid because the SSL dies with it.
/// - Warning: confined to one thread.
public final class TLSSession {
    public let context: TLSContext
    let ssl: OpaquePointer
    private let ciphertext = CiphertextBIO()

    /// The peer certificate's identity (set during the handshake or from a resumed session).
    public private(set) var peerIdentity: PeerIdentity?
    /// The policy's decision about the peer (nil when the context has no policy).
    public private(set) var decision: PolicyDecision?
    private var verifyFailure: (code: Int32, depth: Int32)?
    /// Subject of a peer certificate that failed verification at depth 0 (expired, revoked, untrusted CA, …),
    /// for the log only: it is attacker-controlled and never reaches the policy.
    public private(set) var unverifiedPeerSubject: String?
    /// Set when a peer was accepted although a CRL had expired (`tolerateExpiredCRL`); the log says so.
    public private(set) var expiredCRLTolerated = false
    private var sentCloseNotify = false

    public enum HandshakeProgress {
        case complete
        case needsInput
        case failed(TLSFailure)
    }

    public enum ReadResult {
        case bytes(Int)
        case needsInput
        /// The peer sent close_notify.
        case closed
        case failed(TLSFailure)
    }

    static let exIndex: Int32 = pc_ssl_ex_index()

    public init(context: TLSContext) throws(OpenSSLError) {
        self.context = context
        guard let ssl = SSL_new(context.raw) else { throw OpenSSLError.drain("SSL_new") }
        guard let bio = CiphertextBIO.makeBIO(for: ciphertext) else {
            SSL_free(ssl)
            throw OpenSSLError.drain("BIO_new")
        }
        SSL_set_bio(ssl, bio, bio)  // one BIO both ways: the SSL takes its one reference
        self.ssl = ssl
        if context.configuration.role == .server {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            if let name = context.configuration.serverName {
                let isAddress = IPAddress(name) != nil
                // RFC 6066: SNI carries host names only, never IP literals.
                if !isAddress { _ = pc_ssl_set_sni(ssl, name) }
                if context.configuration.verifyServerName {
                    if isAddress {
                        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
                    } else {
                        // RFC 6125: DNS SANs only (never the CN), and no partial-label wildcards.
                        X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(ssl),
                            UInt32(X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                        X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl), name, 0)
                    }
                }
            }
        }
        SSL_set_ex_data(ssl, TLSSession.exIndex, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        // OpenSSL marks a session non-resumable when its connection is freed without a clean shutdown (and a
        // server removes it from the session store); tickets copied from it share that flag. A connection
        // that completed its handshake and was then reset is not evidence against the session: keep it.
        if SSL_is_init_finished(ssl) == 1 {
            SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN)
        }
        SSL_free(ssl)
    }

    // MARK: pumping

    /// Lends ciphertext from the network to OpenSSL while `body` runs (the handshake or `read` calls that
    /// consume it); only what is left unread afterwards (a partial record) is copied and kept.
    public func receiving<R, E: Error>(_ ciphertext: UnsafeRawBufferPointer, _ body: () throws(E) -> R) throws(E) -> R {
        try self.ciphertext.lending(ciphertext, body)
    }

    /// Hands ciphertext from the network to OpenSSL, copied (for callers that cannot scope it: see `receiving`).
    public func receive(_ ciphertext: UnsafeRawBufferPointer) {
        self.ciphertext.append(ciphertext)
    }

    /// Ciphertext received but not yet consumed by OpenSSL.
    public var bufferedInputCount: Int { ciphertext.inputCount }

    /// Ciphertext waiting to be sent to the peer.
    public var pendingOutputCount: Int { ciphertext.outputCount }

    /// The ciphertext waiting to be sent, in place; valid until the next call into this session.
    public var pendingOutput: UnsafeRawBufferPointer { ciphertext.pendingOutput }

    /// Drops the first `count` bytes of `pendingOutput` (they were sent or copied elsewhere).
    public func consumeOutput(_ count: Int) {
        ciphertext.consumeOutput(count)
    }

    /// Moves up to `buffer.count` bytes of pending ciphertext into `buffer`; returns the count.
    public func readOutput(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(buffer.count, pendingOutputCount)
        guard n > 0, let destination = buffer.baseAddress else { return 0 }
        destination.copyMemory(from: pendingOutput.baseAddress!, byteCount: n)
        consumeOutput(n)
        return n
    }

    public func handshake() -> HandshakeProgress {
        OpenSSLError.clearQueue()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            // Leave the thread's error queue empty (a callback may have left a harmless entry): `read` and
            // `write` rely on that instead of clearing it before every record.
            OpenSSLError.clearQueue()
            return finishHandshake()
        }
        let error = SSL_get_error(ssl, rc)
        if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { return .needsInput }
        return .failed(classifyFailure(error))
    }

    public var isHandshakeComplete: Bool { SSL_is_init_finished(ssl) == 1 }

    /// Whether `read` could return anything now: received ciphertext OpenSSL has not taken yet, or decrypted
    /// bytes of a record a previous `read` did not have room for. When false, `read` would only say
    /// `needsInput`, so a caller can skip that call.
    public var hasUnreadInput: Bool { ciphertext.inputCount > 0 || SSL_pending(ssl) > 0 }

    /// Decrypts into `buffer`.
    ///
    /// The thread's error queue is not cleared first (it costs more than decrypting a small record): every
    /// path that can leave an entry in it (a failed call, a handshake) drains it before returning.
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> ReadResult {
        var count = 0
        if SSL_read_ex(ssl, buffer.baseAddress, buffer.count, &count) == 1 { return .bytes(count) }
        let error = SSL_get_error(ssl, 0)
        switch error {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .needsInput
        case SSL_ERROR_ZERO_RETURN: return .closed
        default: return .failed(classifyFailure(error))
        }
    }

    /// Encrypts all of `plaintext` into pending output (memory BIOs never block, so this always completes
    /// unless the connection failed).
    public func write(_ plaintext: UnsafeRawBufferPointer) -> TLSFailure? {
        var offset = 0
        while offset < plaintext.count {
            var written = 0
            let rc = SSL_write_ex(ssl, plaintext.baseAddress! + offset, plaintext.count - offset, &written)
            if rc != 1 { return classifyFailure(SSL_get_error(ssl, 0)) }
            offset += written
        }
        return nil
    }

    /// Queues close_notify in the output (once). Reading may continue afterwards (TLS 1.3 half-close).
    public func sendCloseNotify() {
        guard !sentCloseNotify else { return }
        sentCloseNotify = true
        OpenSSLError.clearQueue()
        _ = SSL_shutdown(ssl)
        OpenSSLError.clearQueue()
    }

    // MARK: connection facts

    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    public var cipherName: String {
        guard let cipher = SSL_get_current_cipher(ssl) else { return "" }
        return String(cString: SSL_CIPHER_get_name(cipher))
    }

    public var isResumed: Bool { SSL_session_reused(ssl) == 1 }

    public var serverNameIndication: String? {
        guard let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return nil }
        return String(cString: name)
    }

    // MARK: verification hooks

    private func finishHandshake() -> HandshakeProgress {
        if peerIdentity == nil, let cert = SSL_get0_peer_certificate(ssl) {
            // Resumed without a ticket check (should not happen on the server) or client role: decide now.
            let judged = context.authorize(leaf: cert, chain: nil, now: context.clock.now(), chainCheck: .verifiedNow)
            peerIdentity = judged.identity
            decision = judged.decision
        }
        if let decision, !decision.isAllowed {
            return .failed(TLSFailure(kind: .denied, detail: decision.description))
        }
        if context.configuration.role == .server, context.configuration.requiresClientCertificate, peerIdentity == nil {
            return .failed(TLSFailure(kind: .noCertificate, detail: "peer did not present a certificate"))
        }
        return .complete
    }

    /// X509 error reported to OpenSSL for a policy denial. It is absent from OpenSSL's error→alert table,
    /// so the peer receives `certificate_unknown`; the real reason stays in our log.
    static let policyDenialCode: Int32 = X509_V_ERR_SUBJECT_ISSUER_MISMATCH

    static let verifyCallback: @convention(c) (Int32, OpaquePointer?) -> Int32 = { preverifyOK, store in
        guard let store,
              let sslPointer = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()),
              let session = TLSSession.owner(of: OpaquePointer(sslPointer))
        else { return 0 }
        return session.verify(preverifyOK: preverifyOK, store: store)
    }

    private func verify(preverifyOK: Int32, store: OpaquePointer) -> Int32 {
        let depth = X509_STORE_CTX_get_error_depth(store)
        if preverifyOK != 1 && context.configuration.tolerateExpiredCRL
            && X509_STORE_CTX_get_error(store) == X509_V_ERR_CRL_HAS_EXPIRED {
            expiredCRLTolerated = true
            return 1
        }
        if preverifyOK != 1 {
            if verifyFailure == nil { verifyFailure = (X509_STORE_CTX_get_error(store), depth) }
            if unverifiedPeerSubject == nil, let leaf = X509_STORE_CTX_get0_cert(store) {
                unverifiedPeerSubject = IdentityExtractor.extract(leaf).subject.rfc2253
            }
            return 0
        }
        guard depth == 0 else { return 1 }
        guard let cert = X509_STORE_CTX_get_current_cert(store) else { return 0 }
        // Authorization inside the handshake: the identity is extracted once and judged here, so a denied
        // peer gets an alert and never reaches the backend.
        let judged = context.authorize(leaf: cert, chain: nil, now: context.clock.now(), chainCheck: .verifiedNow)
        peerIdentity = judged.identity
        decision = judged.decision
        guard judged.isAdmitted else {
            X509_STORE_CTX_set_error(store, TLSSession.policyDenialCode)
            return 0
        }
        return 1
    }

    /// The session whose `SSL` is `ssl` (from the unretained ex_data back-pointer; nil if none).
    static func owner(of ssl: OpaquePointer) -> TLSSession? {
        guard let pointer = SSL_get_ex_data(ssl, TLSSession.exIndex) else { return nil }
        return Unmanaged<TLSSession>.fromOpaque(pointer).takeUnretainedValue()
    }

    /// Resumption re-authorizes: a stored session is resumed only on the listener that issued it, only while
    /// its peer certificate is within validity and still admitted by this context's policy, and — when it was
    /// issued under other trust material or another configuration generation — only if the certificate
    /// still verifies against this context's CAs and CRLs. Otherwise a full handshake follows, which refuses
    /// the peer with an alert.
    func admitsResumption(of sslSession: OpaquePointer, issuedBy issuer: ServerSessionStore.Issuer) -> Bool {
        let own = context.sessionIssuer
        guard issuer.listener == own.listener, let cert = SSL_SESSION_get0_peer(sslSession) else { return false }
        let sameTrust = issuer.trust == own.trust && issuer.generation == own.generation
        let judged = context.authorize(leaf: cert, chain: nil, now: context.clock.now(),
                                       chainCheck: sameTrust ? .verifiedEarlier : .reverify)
        guard judged.isAdmitted else { return false }
        decision = judged.decision
        peerIdentity = judged.identity
        return true
    }

    /// The outcome of checking a live connection's peer against a newer configuration.
    public enum Reauthorization: Sendable {
        case admitted(PolicyDecision?)
        case refused(String)
    }

    /// Re-checks this session's peer against `newer` (its CAs, CRLs and policy), e.g. after a reload.
    /// Only meaningful once the handshake completed.
    public func reauthorize(against newer: TLSContext) -> Reauthorization {
        defer { OpenSSLError.clearQueue() }  // see `read`: nothing may be left in the queue
        guard let leaf = SSL_get0_peer_certificate(ssl) else { return .refused("no peer certificate") }
        let judged = newer.authorize(leaf: leaf, chain: SSL_get_peer_cert_chain(ssl), now: newer.clock.now(),
                                     chainCheck: .reverify, identity: peerIdentity)
        if let failure = judged.verificationFailure { return .refused("certificate no longer verifies: \(failure)") }
        if let decision = judged.decision, !decision.isAllowed { return .refused(decision.description) }
        return .admitted(judged.decision)
    }

    private func classifyFailure(_ sslError: Int32) -> TLSFailure {
        let reasons = OpenSSLError.drainReasons()
        if let decision, !decision.isAllowed {
            return TLSFailure(kind: .denied, detail: decision.description)
        }
        if let (code, depth) = verifyFailure {
            let text = String(cString: X509_verify_cert_error_string(Int(code)))
            let detail = "\(text) (depth \(depth))"
            switch code {
            case X509_V_ERR_CERT_HAS_EXPIRED:
                return TLSFailure(kind: .expired, detail: detail)
            case X509_V_ERR_CERT_REVOKED:
                return TLSFailure(kind: .revoked, detail: detail)
            case X509_V_ERR_CRL_HAS_EXPIRED, X509_V_ERR_UNABLE_TO_GET_CRL, X509_V_ERR_CRL_NOT_YET_VALID:
                return TLSFailure(kind: .crlUnavailable, detail: detail)
            case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                 X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
                 X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_UNTRUSTED:
                return TLSFailure(kind: .unknownCA, detail: detail)
            default:
                return TLSFailure(kind: .badCertificate, detail: detail)
            }
        }
        if reasons.contains(where: { $0.contains("peer did not return a certificate") }) {
            return TLSFailure(kind: .noCertificate, detail: "peer did not return a certificate")
        }
        // OpenSSL names a received alert "sslv3 alert …" / "tlsv1 alert …".
        if let alert = reasons.first(where: { $0.hasPrefix("sslv3 alert") || $0.hasPrefix("tlsv1 alert") || $0.hasPrefix("tlsv13 alert") }) {
            return TLSFailure(kind: .refusedByPeer, detail: "peer sent alert: " + alert.split(separator: " ").dropFirst(2).joined(separator: " "))
        }
        if sslError == SSL_ERROR_SYSCALL || sslError == SSL_ERROR_ZERO_RETURN, reasons.isEmpty {
            return TLSFailure(kind: .peerClosed, detail: "connection closed during the handshake")
        }
        return TLSFailure(kind: .protocolError, detail: reasons.isEmpty ? "TLS error \(sslError)" : reasons.joined(separator: "; "))
    }
}

extension TLSSession {
    /// Frees OpenSSL's record buffers (about 17 KiB each way) and our ciphertext buffers while nothing is
    /// pending in them; the next read or write allocates them again. For connections that go quiet: most of an
    /// idle connection's memory. Returns false when a partial record or unsent data is still buffered (what
    /// could be freed is).
    @discardableResult
    public func releaseBuffers() -> Bool {
        let openSSL = SSL_free_buffers(ssl) == 1
        return ciphertext.releaseIdleMemory() && openSSL
    }
}

extension TLSSession {
    /// Client role: the negotiated session for later resumption (owned by the caller's `ResumableSession`).
    public func copySession() -> ResumableSession? {
        guard let session = SSL_get1_session(ssl) else { return nil }
        return ResumableSession(raw: session)
    }

    /// Client role: offer `session` for resumption; call before the first `handshake()`.
    public func resume(_ session: ResumableSession) {
        SSL_set_session(ssl, session.raw)
    }
}

/// A client-side TLS session that can be offered for resumption. Owns one `SSL_SESSION` reference.
public final class ResumableSession: @unchecked Sendable {
    let raw: OpaquePointer
    init(raw: OpaquePointer) { self.raw = raw }
    deinit { SSL_SESSION_free(raw) }
}

extension TLSSession {
    /// Client role: the server has issued a session ticket. In TLS 1.3 a server sends tickets only after it
    /// verified our certificate, so this is the client's proof that the handshake completed on both sides.
    public var hasResumableSession: Bool {
        guard let session = SSL_get_session(ssl) else { return false }
        return SSL_SESSION_is_resumable(session) == 1
    }
}
