import COpenSSL
import COpenSSLShims
import Synchronization

/// Server role: the client certificate chains one `TLSContext` has verified, so a client that reconnects with
/// a full handshake skips chain building and the CA's signature check on its certificate (an ECDSA verify and
/// a store search: about a tenth of a full handshake's instructions).
///
/// What is skipped is only what cannot change: the key is a SHA-256 over the exact DER of every certificate
/// the client sent, and the context's CAs and CRLs are fixed for its lifetime (a reload builds a new context,
/// with an empty cache). What can change with time is bounded: an entry expires at the earliest notAfter in
/// the verified chain and at the earliest CRL nextUpdate. Still done in every handshake: the client's
/// CertificateVerify signature (proof it holds the key) and the access policy. Chains verified with a
/// tolerated error (an expired CRL under `crl-expired: warn`) are never cached.
final class VerifiedChainCache: Sendable {
    typealias Key = ServerSessionStore.Digest

    private struct State {
        var expiry: [Key: Int64] = [:]
        var hits: UInt64 = 0
        var misses: UInt64 = 0
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    /// Whether this exact chain verified before and none of its certificates (nor a CRL) has expired since.
    func contains(_ key: Key, now: Int64) -> Bool {
        state.withLock { state in
            if let expiresAt = state.expiry[key], expiresAt > now {
                state.hits += 1
                return true
            }
            state.misses += 1
            return false
        }
    }

    func insert(_ key: Key, expiresAt: Int64, now: Int64) {
        guard expiresAt > now else { return }
        state.withLock { state in
            if state.expiry.count >= capacity {
                state.expiry = state.expiry.filter { $0.value > now }
                // Still full of live chains (a flood of distinct certificates): start over rather than search
                // for the oldest; the cost is one verification per chain, as without a cache.
                if state.expiry.count >= capacity { state.expiry.removeAll(keepingCapacity: true) }
            }
            state.expiry[key] = expiresAt
        }
    }

    var count: Int { state.withLock { $0.expiry.count } }
    var counters: (hits: UInt64, misses: UInt64) { state.withLock { ($0.hits, $0.misses) } }

    // MARK: keys

    /// SHA-256, fetched once: an implicit fetch per digest would search the provider store every time.
    nonisolated(unsafe) private static let sha256: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)

    /// SHA-256 over the SHA-256 of each certificate's DER, in order; nil if a digest fails.
    static func key(for chain: OpaquePointer) -> Key? {
        guard let sha256 else { return nil }
        let count = Int(pc_x509_stack_count(chain))
        guard count > 0 else { return nil }
        var digests = [UInt8](repeating: 0, count: 32 * count)
        for index in 0..<count {
            guard let certificate = pc_x509_stack_at(chain, Int32(index)) else { return nil }
            var length: UInt32 = 0
            let ok = digests.withUnsafeMutableBufferPointer {
                X509_digest(certificate, sha256, $0.baseAddress! + 32 * index, &length)
            }
            guard ok == 1, length == 32 else { return nil }
        }
        var key = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        guard EVP_Digest(digests, digests.count, &key, &length, sha256, nil) == 1, length == 32 else { return nil }
        return Key(key)
    }
}
