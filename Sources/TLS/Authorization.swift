internal import COpenSSL
internal import COpenSSLShims
public import Policy

#if canImport(Glibc)
import Glibc
#endif

/// Where a context reads the time (Unix seconds): the system clock, or a test's.
public struct TLSClock: Sendable {
    public let now: @Sendable () -> Int64

    public init(_ now: @escaping @Sendable () -> Int64) { self.now = now }

    public static let system = TLSClock { Int64(time(nil)) }
}

/// One judgement of a peer certificate: who it names, whether its chain verifies, what the policy says.
public struct Authorization: Sendable {
    public let identity: PeerIdentity
    /// Why the certificate does not verify (or is outside its validity window); nil when it does.
    public let verificationFailure: String?
    /// The policy's decision; nil when the context has no policy.
    public let decision: PolicyDecision?

    public var isAdmitted: Bool { verificationFailure == nil && (decision?.isAllowed ?? true) }

    /// Why the peer is refused, when it is.
    public var refusal: String? {
        if let verificationFailure { return verificationFailure }
        if let decision, !decision.isAllowed { return decision.description }
        return nil
    }
}

extension TLSContext {
    /// How much of the chain a judgement must check, besides the policy.
    enum ChainCheck {
        /// OpenSSL verified the chain in this handshake, just now.
        case verifiedNow
        /// Verified earlier against the same trust material (a resumption on the same generation): only its
        /// validity window is checked again.
        case verifiedEarlier
        /// Verified against other trust material, or never: the chain is verified again against this
        /// context's CAs and CRLs, at `now`.
        case reverify
    }

    /// The one authorization step, used by the handshake, resumption, re-authorization after a reload and
    /// `check`: the identity is extracted once, the chain checked as `chainCheck` says, the policy applied.
    /// `chain` (untrusted intermediates the peer sent) may be nil; the leaf stays owned by the caller.
    func authorize(leaf: OpaquePointer, chain: OpaquePointer?, now: Int64, chainCheck: ChainCheck,
                   identity known: PeerIdentity? = nil) -> Authorization {
        let identity = known ?? IdentityExtractor.extract(leaf)
        var failure: String?
        switch chainCheck {
        case .verifiedNow:
            break
        case .verifiedEarlier:
            if identity.notAfter <= now {
                failure = "certificate has expired"
            } else if identity.notBefore > now {
                failure = "certificate is not yet valid"
            }
        case .reverify:
            var error: Int32 = 0, depth: Int32 = 0
            let tolerate: Int32 = configuration.tolerateExpiredCRL ? 1 : 0
            if pc_reverify(raw, leaf, chain, tolerate, now, &error, &depth) != 1 {
                failure = "\(String(cString: X509_verify_cert_error_string(Int(error)))) (depth \(depth))"
            }
        }
        // The policy is applied even to a chain that failed: `check` shows both.
        return Authorization(identity: identity, verificationFailure: failure, decision: policy?.evaluate(identity))
    }
}
