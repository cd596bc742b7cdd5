import COpenSSL
import COpenSSLShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Server role: the sessions behind our TLS 1.3 tickets, kept in memory ("stateful tickets": the ticket the
/// client holds is a random 32-byte session ID, and the session stays here).
///
/// Why not OpenSSL's stateless tickets: OpenSSL 3.0 builds every stateless ticket by serialising the session
/// and parsing it back (`construct_stateless_ticket` → `d2i_SSL_SESSION`), and decrypting one on resumption
/// parses it again. Both re-parse the client certificate, and a certificate parse (public-key decoding
/// through the provider decoders) costs about as much as an ECDSA verify: ~1.5 M instructions per ticket
/// issued or redeemed, a quarter of a full handshake and most of a resumed one. Here a ticket costs a
/// random ID and a table insert; a resumption, a lookup and a reference-counted copy.
///
/// One store per process, shared by every worker and every configuration generation, so a client resumes on
/// whichever worker its next connection lands on, and after a reload (each resumption is re-checked first,
/// see `TLSSession.admitsResumption`). Bounded: the least recently used session goes when it is full, and a
/// session past its lifetime is never handed out. Like the ticket keys it replaces, it lives in memory only:
/// a restart starts empty and clients fall back to a full handshake.
///
/// Ownership: every entry holds one reference to its `SSL_SESSION`, released when the entry is evicted,
/// expires, is removed by OpenSSL, or the capacity shrinks. Sessions stored here share the peer certificate
/// with the connection that created them (reference-counted by OpenSSL), so a live connection's own session
/// costs no extra memory.
final class ServerSessionStore: Sendable {
    static let shared = ServerSessionStore()

    /// Who issued a session: resumption is only considered on the same listener, and skips re-verifying the
    /// peer's chain only when the trust material and the generation are the same (see `TLSSession`).
    struct Issuer: Equatable, Sendable {
        let listener: Digest
        let trust: Digest
        let generation: UInt64
    }

    /// 32 bytes compared as four words (a session ID, or a SHA-256 of something).
    struct Digest: Hashable, Sendable {
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var length: UInt8 = 0

        init(_ bytes: UnsafeRawBufferPointer) {
            precondition(bytes.count <= 32)
            withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: bytes) }
            length = UInt8(bytes.count)
        }

        init(_ bytes: [UInt8]) {
            self = bytes.withUnsafeBytes { Digest($0) }
        }

        static func == (a: Digest, b: Digest) -> Bool {
            a.length == b.length && a.words == b.words
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(words.0)
            hasher.combine(words.1)
            hasher.combine(words.2)
            hasher.combine(words.3)
            hasher.combine(length)
        }
    }

    /// An `SSL_SESSION` crossing the lock: sessions are reference-counted and safe to share between threads.
    struct SessionPointer: @unchecked Sendable {
        let raw: OpaquePointer
    }

    /// A retained `SSL_SESSION` and who issued it, handed to the resumption check.
    struct Found: Sendable {
        let session: SessionPointer
        let issuer: Issuer
    }

    private struct Slot {
        var id: Digest
        var session: SessionPointer?
        var issuer: Issuer
        var expiresAt: Int64
        /// Least-recently-used list, by slot index (-1: none).
        var newer: Int32 = -1
        var older: Int32 = -1
    }

    private struct State: ~Copyable {
        var capacity: Int
        var slots: [Slot] = []
        var freeSlots: [Int32] = []
        var index: [Digest: Int32] = [:]
        var newest: Int32 = -1
        var oldest: Int32 = -1
        var hits: UInt64 = 0
        var misses: UInt64 = 0
    }

    static let defaultCapacity = 20_000

    private let state: Mutex<State>

    init(capacity: Int = ServerSessionStore.defaultCapacity) {
        state = Mutex(State(capacity: capacity))
    }

    /// Sets how many sessions are kept (0 keeps none); sessions beyond it are released, oldest first.
    func setCapacity(_ capacity: Int) {
        let released = state.withLock { state -> [SessionPointer] in
            state.capacity = max(0, capacity)
            var released: [SessionPointer] = []
            while state.index.count > state.capacity, let session = Self.removeOldest(&state) {
                released.append(session)
            }
            return released
        }
        released.forEach { SSL_SESSION_free($0.raw) }
    }

    var capacity: Int { state.withLock { $0.capacity } }
    var count: Int { state.withLock { $0.index.count } }
    /// Lookups that found a live session, and those that did not (unknown, evicted or expired IDs).
    var counters: (hits: UInt64, misses: UInt64) { state.withLock { ($0.hits, $0.misses) } }

    /// Sessions stored for one issuer (for tests and status).
    func count(issuedBy issuer: Issuer) -> Int {
        state.withLock { state in state.index.values.count { state.slots[Int($0)].issuer == issuer } }
    }

    // MARK: operations (called from OpenSSL's session-cache callbacks, on any worker thread)

    /// Takes over one reference to `session`. Returns false (the caller keeps its reference) when the session
    /// has no ID or nothing can be stored.
    func insert(_ session: OpaquePointer, issuer: Issuer, now: Int64) -> Bool {
        var length: UInt32 = 0
        guard let idBytes = SSL_SESSION_get_id(session, &length), length > 0, length <= 32 else { return false }
        let id = Digest(UnsafeRawBufferPointer(start: idBytes, count: Int(length)))
        let expiresAt = Int64(SSL_SESSION_get_time(session)) + Int64(SSL_SESSION_get_timeout(session))
        let entry = SessionPointer(raw: session)
        let (stored, released) = state.withLock { state -> (Bool, [SessionPointer]) in
            guard state.capacity > 0 else { return (false, []) }
            var released: [SessionPointer] = []
            if let existing = state.index[id], let old = Self.remove(&state, existing) { released.append(old) }
            // Expired sessions at the old end go first; then the least recently used, if still full.
            while state.oldest >= 0, state.slots[Int(state.oldest)].expiresAt <= now,
                  let old = Self.removeOldest(&state) {
                released.append(old)
            }
            while state.index.count >= state.capacity, let old = Self.removeOldest(&state) { released.append(old) }
            let slot = Slot(id: id, session: entry, issuer: issuer, expiresAt: expiresAt)
            let position: Int32
            if let free = state.freeSlots.popLast() {
                position = free
                state.slots[Int(free)] = slot
            } else {
                position = Int32(state.slots.count)
                state.slots.append(slot)
            }
            state.index[id] = position
            Self.linkNewest(&state, position)
            return (true, released)
        }
        // Freed outside the lock: freeing a session may free its certificate and more.
        released.forEach { SSL_SESSION_free($0.raw) }
        return stored
    }

    /// The live session with this ID, with one reference the caller owns; nil if unknown or expired.
    func find(_ id: UnsafeRawBufferPointer, now: Int64) -> Found? {
        guard !id.isEmpty, id.count <= 32 else { return nil }
        let key = Digest(id)
        let (found, expired) = state.withLock { state -> (Found?, SessionPointer?) in
            guard let position = state.index[key] else {
                state.misses += 1
                return (nil, nil)
            }
            let slot = state.slots[Int(position)]
            guard slot.expiresAt > now, let session = slot.session else {
                state.misses += 1
                return (nil, Self.remove(&state, position))
            }
            Self.unlink(&state, position)
            Self.linkNewest(&state, position)
            state.hits += 1
            SSL_SESSION_up_ref(session.raw)
            return (Found(session: session, issuer: slot.issuer), nil)
        }
        if let expired { SSL_SESSION_free(expired.raw) }
        return found
    }

    /// Forgets `session` (OpenSSL calls this when a connection using it failed).
    func remove(_ session: OpaquePointer) {
        var length: UInt32 = 0
        guard let idBytes = SSL_SESSION_get_id(session, &length), length > 0, length <= 32 else { return }
        let id = Digest(UnsafeRawBufferPointer(start: idBytes, count: Int(length)))
        let removed = state.withLock { state -> SessionPointer? in
            guard let position = state.index[id], state.slots[Int(position)].session?.raw == session else { return nil }
            return Self.remove(&state, position)
        }
        if let removed { SSL_SESSION_free(removed.raw) }
    }

    // MARK: list and table upkeep (under the lock)

    private static func linkNewest(_ state: inout State, _ position: Int32) {
        state.slots[Int(position)].older = state.newest
        state.slots[Int(position)].newer = -1
        if state.newest >= 0 { state.slots[Int(state.newest)].newer = position }
        state.newest = position
        if state.oldest < 0 { state.oldest = position }
    }

    private static func unlink(_ state: inout State, _ position: Int32) {
        let slot = state.slots[Int(position)]
        if slot.newer >= 0 { state.slots[Int(slot.newer)].older = slot.older } else { state.newest = slot.older }
        if slot.older >= 0 { state.slots[Int(slot.older)].newer = slot.newer } else { state.oldest = slot.newer }
    }

    /// Removes the entry at `position`; returns its session for the caller to free outside the lock.
    private static func remove(_ state: inout State, _ position: Int32) -> SessionPointer? {
        unlink(&state, position)
        let session = state.slots[Int(position)].session
        state.index[state.slots[Int(position)].id] = nil
        state.slots[Int(position)].session = nil
        state.freeSlots.append(position)
        return session
    }

    private static func removeOldest(_ state: inout State) -> SessionPointer? {
        guard state.oldest >= 0 else { return nil }
        return remove(&state, state.oldest)
    }
}

extension ServerSessionStore {
    /// Installs the store as `ctx`'s session cache: OpenSSL's own (per-context, so lost on reload) is off.
    static func install(on ctx: OpaquePointer) {
        _ = pc_ssl_ctx_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL
                                                       | SSL_SESS_CACHE_NO_AUTO_CLEAR))
        SSL_CTX_sess_set_new_cb(ctx, newSessionCallback)
        SSL_CTX_sess_set_get_cb(ctx, getSessionCallback)
        SSL_CTX_sess_set_remove_cb(ctx, removeSessionCallback)
    }

    /// A new session (one per ticket sent). Returns 1 when the store keeps the reference OpenSSL passed.
    static let newSessionCallback: @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32 = { ssl, session in
        guard let ssl, let session, let owner = TLSSession.owner(of: ssl) else { return 0 }
        return shared.insert(session, issuer: owner.context.sessionIssuer, now: owner.context.clock.now()) ? 1 : 0
    }

    /// A client offered a ticket: the session, if it is known, alive, and still admissible (re-checked by the
    /// connection's `TLSSession`); otherwise nil, and a full handshake follows.
    static let getSessionCallback: @convention(c) (OpaquePointer?, UnsafePointer<UInt8>?, Int32,
                                                   UnsafeMutablePointer<Int32>?) -> OpaquePointer? = { ssl, id, length, copy in
        guard let ssl, let id, length > 0, let owner = TLSSession.owner(of: ssl),
              let found = shared.find(UnsafeRawBufferPointer(start: id, count: Int(length)), now: owner.context.clock.now())
        else { return nil }
        guard owner.admitsResumption(of: found.session.raw, issuedBy: found.issuer) else {
            SSL_SESSION_free(found.session.raw)
            return nil
        }
        copy?.pointee = 0  // the reference `find` took is OpenSSL's now
        return found.session.raw
    }

    static let removeSessionCallback: @convention(c) (OpaquePointer?, OpaquePointer?) -> Void = { _, session in
        if let session { shared.remove(session) }
    }
}
