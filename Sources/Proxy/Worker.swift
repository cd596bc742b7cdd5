import EventLoop
import Logging
import Policy
import ProcessControl
import Synchronization
import TLS

#if canImport(Glibc)
import Glibc
#endif

/// What a worker should serve for one listener after a (re)configuration.
struct ListenerAssignment: @unchecked Sendable {
    let name: String
    let generation: Generation
    /// Fresh listening sockets for this worker when the listener is new or its address changed (usually one;
    /// more when a restart handed over more sockets than there are workers); the worker owns them from here
    /// on. Empty: keep the current ones.
    let sockets: [ListeningSocket]
    /// Re-check this listener's live connections against `generation`.
    let reauthorize: Bool
    /// The listener was renamed: take over the sockets (and connections) of the listener of this name.
    let renamedFrom: String?
}

/// One worker thread: its own libuv loop, one SO_REUSEPORT socket per listener, its connections.
///
/// Thread confinement: everything except `post` and the immutable `let`s is touched only on the worker's
/// loop thread. `post` hands messages over through a mutex-guarded mailbox and an async wakeup.
final class Worker: @unchecked Sendable {
    enum Message {
        /// The complete listener set: listeners not named here stop accepting.
        case apply([ListenerAssignment])
        case drain
        case cut
        /// A connection closed on a listener this worker holds at its limit: poll its sockets again.
        case resumeAccepting
    }

    private struct Mailbox {
        var messages: [Message] = []
        var wakeup: AsyncWakeup.Sender?
    }

    /// One listener on this worker. The accept callback holds the slot, not its name, so a rename keeps
    /// the socket accepting.
    private final class Slot {
        var listeners: [TCPListener] = []
        var generation: Generation
        /// This worker's counters for the listener (a renamed listener counts under its new name).
        var stats: ListenerStats
        /// Client mode: the remote's latest session, offered by the next connection.
        let sessionCache = ClientSessionCache()
        /// The listener is at its limit: this worker's sockets are paused (`Worker.admit`).
        var holding = false
        init(generation: Generation, stats: ListenerStats) {
            self.generation = generation
            self.stats = stats
        }
    }

    let index: Int
    let shared: RuntimeShared
    private let mailbox = Mutex(Mailbox())

    // Loop-thread state.
    private(set) var loop: Loop!
    private var wakeup: AsyncWakeup?
    private var slots: [String: Slot] = [:]
    private var connections: [UInt64: Connection] = [:]
    /// Server-mode connections whose handshake is in progress (`limits.handshakes`).
    private var handshaking: [UInt64: Connection] = [:]
    /// Per client address: handshakes in progress and the rate bucket (only while a per-source limit is on).
    private struct SourceUsage {
        var inProgress = 0
        var tokens: Double
        var refilledAt: UInt64
    }
    private var sources: [[UInt8]: SourceUsage] = [:]
    private var draining = false
    private var expirySweep: Timer?
    /// Frees the TLS record buffers of connections that moved no byte for a whole sweep, every `idleBufferMs`
    /// (see `releaseIdleBuffers`); also brings the byte counters of live connections up to date.
    private var idleBufferSweep: Timer?
    static let idleBufferMs: UInt64 = 1000
    /// Every this many sweeps, pooled write buffers unused since the previous such sweep are freed too.
    static let poolSweepEvery = 5
    private var sweepsSincePoolRelease = 0
    private var failureLogLimiter: LogRateLimiter?
    private var refusalLogLimiter: LogRateLimiter?
    private var holdLogLimiter: LogRateLimiter?

    init(index: Int, shared: RuntimeShared, initial: [ListenerAssignment]) {
        self.index = index
        self.shared = shared
        mailbox.withLock { $0.messages.append(.apply(initial)) }
    }

    /// Thread-safe: queues a message for the loop thread.
    func post(_ message: Message) {
        mailbox.withLock { box in
            box.messages.append(message)
            // Sent under the lock: the loop thread clears the sender under the same lock before closing it.
            box.wakeup?.send()
        }
    }

    /// Runs the loop on the calling thread until the worker has drained.
    func run() {
        do {
            loop = try Loop()
            wakeup = try AsyncWakeup(loop: loop) { [unowned self] in self.processMailbox() }
        } catch {
            shared.logger.critical("worker failed to start", metadata: ["worker": "\(index)", "error": "\(error)"])
            shared.workerExited(failed: true)
            return
        }
        let sweep = Timer(loop: loop)
        sweep.start(after: Worker.idleBufferMs, repeat: Worker.idleBufferMs) { [unowned self] in self.releaseIdleBuffers() }
        idleBufferSweep = sweep
        failureLogLimiter = LogRateLimiter(now: loop.now)
        refusalLogLimiter = LogRateLimiter(now: loop.now)
        holdLogLimiter = LogRateLimiter(ratePerSecond: 1, burst: 5, now: loop.now)
        mailbox.withLock { $0.wakeup = wakeup?.sender }
        processMailbox()
        shared.workerStarted()
        loop.run()
        slots = [:]
        wakeup = nil
        expirySweep = nil
        idleBufferSweep = nil
        loop = nil
        shared.workerExited(failed: false)
    }

    private func processMailbox() {
        let messages = mailbox.withLock { box -> [Message] in
            defer { box.messages.removeAll(keepingCapacity: true) }
            return box.messages
        }
        for message in messages {
            switch message {
            case .apply(let assignments): apply(assignments)
            case .drain: beginDrain()
            case .cut:
                for connection in connections.values { connection.relay.close(.shutdown, reason: "shutdown timeout") }
            case .resumeAccepting:
                resumeHeldListeners()
            }
        }
    }

    // MARK: listeners

    private func apply(_ assignments: [ListenerAssignment]) {
        var keep = Set<String>()
        for assignment in assignments {
            keep.insert(assignment.name)
            if let old = assignment.renamedFrom, slots[assignment.name] == nil, let moved = slots.removeValue(forKey: old) {
                moved.stats = shared.metrics.makeStats(listener: assignment.name)
                slots[assignment.name] = moved
            }
            let slot = slots[assignment.name]
                ?? Slot(generation: assignment.generation, stats: shared.metrics.makeStats(listener: assignment.name))
            slots[assignment.name] = slot
            slot.generation = assignment.generation
            if !assignment.sockets.isEmpty {
                slot.listeners.forEach { $0.close() }
                slot.listeners = []
                for socket in assignment.sockets {
                    if draining {
                        socket.close()
                        continue
                    }
                    do {
                        let admission = TCPListener.AcceptAdmission(
                            acquire: { [unowned self, unowned slot] in self.admit(slot) },
                            release: { [unowned slot] in slot.generation.counters.release() })
                        slot.listeners.append(try TCPListener(loop: loop, socket: socket, admission: admission, onError: { [unowned self, unowned slot] failure in
                            self.acceptFailed(failure, slot: slot)
                        }) { [unowned self, unowned slot] client in
                            self.accept(client, slot: slot)
                        })
                    } catch {
                        shared.logger.error("cannot accept on listener", metadata: [
                            "listener": "\(assignment.name)", "worker": "\(index)", "error": "\(error)",
                        ])
                    }
                }
            }
            if assignment.reauthorize {
                // Live connections carry the name they were accepted under (the old one after a rename).
                reauthorize(listener: assignment.renamedFrom ?? assignment.name, against: assignment.generation)
            }
        }
        for (name, slot) in slots where !keep.contains(name) {
            // A removed listener stops accepting; its connections finish on their own.
            slot.listeners.forEach { $0.close() }
            if slot.holding { slot.generation.counters.stopHolding(worker: index) }
            slots[name] = nil
        }
        // The limit may have been raised: held sockets are polled again (and held again if still full).
        resumeHeldListeners()
        updateExpirySweep()
        shared.noteAccepting(worker: index, listeners: Set(slots.filter { !$0.value.listeners.isEmpty }.keys))
    }

    // MARK: connections

    /// The listener's admission (asked by its `TCPListener` before each `accept`): takes one of the listener's
    /// `max-connections` slots, counted over all workers. At the limit this worker holds: its sockets pause and
    /// clients wait in the kernel's accept queue until a connection closes on any worker (`resumeHeldListeners`).
    private func admit(_ slot: Slot) -> Bool {
        let generation = slot.generation
        let counters = generation.counters
        let limit = generation.settings.maxConnections
        if counters.acquire(limit: limit) { return true }
        counters.hold(worker: index) { [weak self] in self?.post(.resumeAccepting) }
        // A close between the first try and `hold` saw no holder: look once more (see `ListenerCounters`).
        if counters.acquire(limit: limit) {
            counters.stopHolding(worker: index)
            return true
        }
        if !slot.holding {
            slot.holding = true
            slot.stats.count { $0.acceptPauses += 1 }
            if let suppressed = holdLogLimiter?.admit(now: loop.now) {
                shared.logger.warning("listener at its connection limit: new clients wait in the accept queue", metadata: [
                    "listener": "\(generation.settings.name)", "worker": "\(index)", "limit": "\(limit)",
                    "log.suppressed": "\(suppressed)",
                ])
            }
        }
        return false
    }

    /// A slot freed (or the configuration changed): poll the paused sockets again. One that finds the listener
    /// full again is paused again by `admit`.
    private func resumeHeldListeners() {
        guard !draining else { return }
        for slot in slots.values where slot.holding || slot.listeners.contains(where: \.isPaused) {
            let wasHolding = slot.holding
            slot.holding = false
            slot.listeners.forEach { $0.resume() }
            if wasHolding, let suppressed = holdLogLimiter?.admit(now: loop.now) {
                shared.logger.info("listener below its connection limit: accepting again", metadata: [
                    "listener": "\(slot.generation.settings.name)", "worker": "\(index)", "log.suppressed": "\(suppressed)",
                ])
            }
        }
    }

    /// A connection accepted by a `TCPListener` whose admission took a slot for it.
    private func accept(_ client: StreamSocket, slot: Slot) {
        guard !draining else {
            slot.generation.counters.release()
            client.close()
            return
        }
        let generation = slot.generation
        let name = generation.settings.name
        let stats = slot.stats
        var sourceKey: [UInt8]?
        if generation.settings.mode == .server {
            switch admitHandshake(from: client) {
            case .admitted(let key): sourceKey = key
            case .refused(let limit, let index, let value):
                generation.counters.release()
                stats.count {
                    $0.accepted += 1
                    $0.closed[CloseCategory.limitReached.index] += 1
                    $0.sourceLimitRefusals[index] += 1
                }
                let peer = client.peerAddress
                client.close()
                if let suppressed = refusalLogLimiter?.admit(now: loop.now) {
                    var metadata: Logger.Metadata = [
                        "listener": "\(name)", "conn.peer": "\(peer)", "limit": "\(limit)", "limit.value": "\(value)",
                        "log.suppressed": "\(suppressed)",
                    ]
                    // A Unix client's source is its user (see `sourceKey`): say which.
                    if let uid = client.unixPeer?.uid { metadata["conn.peer.uid"] = "\(uid)" }
                    shared.logger.warning("connection refused: per-source handshake limit", metadata: metadata)
                }
                return
            }
        }
        shared.activeConnections.add(1, ordering: .relaxed)
        let id = shared.nextConnectionID.add(1, ordering: .relaxed).newValue
        do {
            let cache = generation.settings.mode == .client && generation.tls.configuration.sessionTickets ? slot.sessionCache : nil
            let connection = try Connection(id: id, worker: self, generation: generation, stats: stats,
                                            sessionCache: cache, accepted: client)
            stats.count { $0.accepted += 1 }
            connections[id] = connection
            if generation.settings.mode == .server { startCountingHandshake(connection, source: sourceKey) }
            connection.relay.start()
        } catch {
            generation.counters.release()
            shared.activeConnections.subtract(1, ordering: .relaxed)
            client.close()
            shared.logger.error("cannot create TLS session", metadata: ["error": "\(error)"])
        }
    }

    /// `accept` failed: out of descriptors (the pending connections were refused), or another error. Counted,
    /// and logged at most a few times a second with how many lines were held back.
    private func acceptFailed(_ failure: TCPListener.AcceptFailure, slot: Slot) {
        let refused = UInt64(max(failure.refused, 1))
        slot.stats.count { $0.acceptFailures[failure.isDescriptorLimit ? 0 : 1] += refused }
        guard let suppressed = refusalLogLimiter?.admit(now: loop.now) else { return }
        var metadata: Logger.Metadata = [
            "listener": "\(slot.generation.settings.name)", "worker": "\(index)", "error": "\(failure.error.message)",
            "connections.refused": "\(failure.refused)", "log.suppressed": "\(suppressed)",
        ]
        if failure.isDescriptorLimit {
            metadata["fd.limit"] = "\(ProcessControl.descriptorLimit)"
            metadata["fix"] = "raise the descriptor limit (LimitNOFILE= in the unit, ulimit -n) or lower max-concurrent-conns"
            shared.logger.warning("connections refused: out of file descriptors", metadata: metadata)
        } else {
            shared.logger.warning("accept failed", metadata: metadata)
        }
    }

    // MARK: handshake limits

    private enum HandshakeAdmission {
        case admitted(sourceKey: [UInt8]?)
        /// The limit's key, its index in `sourceLimitRefusals`, its value.
        case refused(String, Int, Int)
    }

    /// The per-source limits (off by default), checked before a new server-mode connection costs anything.
    private func admitHandshake(from client: StreamSocket) -> HandshakeAdmission {
        let perSource = shared.maxHandshakesPerSource.load(ordering: .relaxed)
        let rate = shared.maxHandshakeRatePerSource.load(ordering: .relaxed)
        guard perSource > 0 || rate > 0, let key = client.remoteAddress?.ipBytes ?? client.unixPeer.map(Worker.sourceKey) else {
            return .admitted(sourceKey: nil)
        }
        let now = loop.now
        var usage = sources[key] ?? SourceUsage(tokens: Double(rate), refilledAt: now)
        if rate > 0 {
            usage.tokens = min(Double(rate), usage.tokens + Double(now &- usage.refilledAt) * Double(rate) / 1000)
            usage.refilledAt = now
            guard usage.tokens >= 1 else {
                sources[key] = usage
                return .refused("handshake-rate-per-source", 1, rate)
            }
        }
        if perSource > 0 && usage.inProgress >= perSource {
            sources[key] = usage
            return .refused("handshakes-per-source", 0, perSource)
        }
        if rate > 0 { usage.tokens -= 1 }
        sources[key] = usage
        return .admitted(sourceKey: key)
    }

    /// A Unix client's source for the per-source limits: its user (every process of one uid is one source,
    /// as every connection from one IP address is). Five bytes, so it never equals an IPv4 (4) or IPv6 (16) key.
    static func sourceKey(_ peer: StreamSocket.UnixPeer) -> [UInt8] {
        [0x55, UInt8(peer.uid >> 24), UInt8(peer.uid >> 16 & 0xFF), UInt8(peer.uid >> 8 & 0xFF), UInt8(peer.uid & 0xFF)]
    }

    /// Counts a new handshake; at `limits.handshakes`, the oldest one in progress makes room (a slow handshake
    /// is the likelier attacker: real clients finish in milliseconds).
    private func startCountingHandshake(_ connection: Connection, source: [UInt8]?) {
        let limit = shared.maxHandshakes.load(ordering: .relaxed)
        if limit > 0 && handshaking.count >= limit,
           let oldest = handshaking.values.min(by: { $0.relay.startedAt < $1.relay.startedAt }) {
            oldest.relay.abandonHandshake(TLSFailure(kind: .handshakeLimit,
                detail: "closed to make room: \(handshaking.count) handshakes in progress on this worker (limits.handshakes: \(limit))"))
        }
        connection.inHandshakeCount = true
        connection.sourceKey = source
        handshaking[connection.id] = connection
        if let source { sources[source]?.inProgress += 1 }
    }

    /// A handshake completed, failed, or its connection closed: it no longer counts (idempotent).
    func handshakeEnded(_ connection: Connection) {
        guard connection.inHandshakeCount else { return }
        connection.inHandshakeCount = false
        handshaking[connection.id] = nil
        if let key = connection.sourceKey, var usage = sources[key] {
            usage.inProgress -= 1
            sources[key] = usage
        }
    }

    /// A flood that stopped leaves no next line to carry its count: say how many lines were held back.
    private func reportSuppressedLines() {
        if let count = failureLogLimiter?.takeSuppressed() {
            shared.logger.warning("handshake failures not logged (rate limit)", metadata: [
                "worker": "\(index)", "log.suppressed": "\(count)",
            ])
        }
        if let count = refusalLogLimiter?.takeSuppressed() {
            shared.logger.warning("refusals not logged (rate limit)", metadata: [
                "worker": "\(index)", "log.suppressed": "\(count)",
            ])
        }
    }

    /// Forgets addresses with nothing in progress and a full bucket (from the 1 s sweep).
    private func forgetIdleSources() {
        guard !sources.isEmpty else { return }
        let rate = Double(shared.maxHandshakeRatePerSource.load(ordering: .relaxed))
        let now = loop.now
        sources = sources.filter { _, usage in
            usage.inProgress > 0 || usage.tokens + Double(now &- usage.refilledAt) * rate / 1000 < rate
        }
    }

    /// Called by a connection once both of its streams have closed.
    func connectionDidClose(_ connection: Connection) {
        connections.removeValue(forKey: connection.id)
        connection.reportBytes()
        connection.generation.counters.release()
        shared.activeConnections.subtract(1, ordering: .relaxed)
        let category = connection.relay.closeCategory
        connection.stats.count { $0.closed[category.index] += 1 }
        connection.stats.connectionDuration.recordNanoseconds(
            Int64(truncatingIfNeeded: Loop.monotonicNanoseconds &- connection.relay.startedAt))
        audit(connection)
        if draining && connections.isEmpty { finishDrain() }
    }

    /// Closes this listener's live connections whose peer no longer passes the newer generation's CAs,
    /// CRLs and policy. Each gets an audit line saying why.
    private func reauthorize(listener name: String, against generation: Generation) {
        for connection in connections.values where connection.settings.name == name && connection.relay.isEstablished {
            if let session = connection.session, case .refused(let why) = session.reauthorize(against: generation.tls) {
                connection.relay.closeGracefully(.reauthorizationFailed, reason: "reauthorization failed: \(why)")
            }
        }
    }

    /// With `close-at-cert-expiry`, a once-a-second sweep closes connections whose peer certificate expired.
    private func updateExpirySweep() {
        let needed = slots.values.contains { $0.generation.settings.closeAtCertExpiry }
        if needed && expirySweep == nil {
            let timer = Timer(loop: loop)
            timer.start(after: 1000, repeat: 1000) { [unowned self] in self.closeExpiredConnections() }
            expirySweep = timer
        } else if !needed, let timer = expirySweep {
            timer.close()
            expirySweep = nil
        }
    }

    /// Connections quiet for a second give back OpenSSL's ~34 KiB of record buffers and our ciphertext buffers.
    /// An active connection never pays for this (it is not touched); one that wakes up pays one allocation per
    /// direction. (OpenSSL's `SSL_MODE_RELEASE_BUFFERS` frees them after every record instead: +8 % instructions
    /// per 64-byte request, measured with callgrind; see Benchmarks/RESULTS.md.)
    private func releaseIdleBuffers() {
        let now = loop.now
        forgetIdleSources()
        reportSuppressedLines()
        var released = 0
        for connection in connections.values {
            connection.reportBytes()
            guard connection.relay.isEstablished else { continue }
            // No byte either way since the previous sweep (a second or more): give the record buffers back,
            // once; OpenSSL takes new ones when bytes move again.
            if connection.relay.noticeActivity(now: now) {
                connection.buffersReleased = false
            } else if !connection.buffersReleased {
                connection.session?.releaseBuffers()
                connection.buffersReleased = true
                released += 1
            }
        }
        // Write buffers a burst left in this loop's cache that nothing used since the last pool sweep (a slower
        // cadence than the record buffers: the pool's own measure of "unused" needs a whole interval).
        sweepsSincePoolRelease += 1
        var trim = released >= Worker.releasesWorthATrim
        if sweepsSincePoolRelease >= Worker.poolSweepEvery {
            sweepsSincePoolRelease = 0
            if loop.writeBuffers.releaseUnused() > 0 { trim = true }
        }
        // Freed chunks stay in the heap between live objects; `malloc_trim` hands whole free pages back to the
        // kernel, which is when the process's RSS actually drops. It walks the heap, so only after a burst.
        if trim { returnFreeMemoryToTheSystem() }
    }

    /// Record-buffer releases in one sweep (about 34 KiB each) after which the heap is trimmed.
    static let releasesWorthATrim = 16

    private func closeExpiredConnections() {
        let now = Int64(time(nil))
        for connection in connections.values where connection.settings.closeAtCertExpiry && connection.relay.isEstablished {
            if let notAfter = connection.session?.peerIdentity?.notAfter, notAfter <= now {
                connection.relay.closeGracefully(.certificateExpired, reason: "peer certificate expired")
            }
        }
    }

    // MARK: draining

    private func beginDrain() {
        guard !draining else { return }
        draining = true
        for slot in slots.values {
            slot.listeners.forEach { $0.close() }
            slot.listeners = []
            if slot.holding { slot.generation.counters.stopHolding(worker: index) }
            slot.holding = false
        }
        expirySweep?.close()
        expirySweep = nil
        idleBufferSweep?.close()
        idleBufferSweep = nil
        shared.noteAccepting(worker: index, listeners: [])
        if connections.isEmpty { finishDrain() }
    }

    private func finishDrain() {
        mailbox.withLock { $0.wakeup = nil }
        wakeup?.close()
    }

    // MARK: audit

    /// One line per connection: `connection closed` for an admitted one, `handshake failed` (rate-limited)
    /// for one that never was. Both carry the connection's duration, bytes, target and close reason.
    private func audit(_ connection: Connection) {
        let relay = connection.relay!
        let session = connection.session
        let failure = relay.handshakeFailure
        if failure == nil && shared.logger.logLevel > .info { return }  // nothing to build the line for
        var metadata: Logger.Metadata = [
            "conn.id": "\(relay.id)",
            "conn.peer": "\(connection.peerAddress)",
            "listener": "\(connection.settings.name)",
            "config.generation": "\(connection.generation.number)",
            "target": "\(connection.settings.targetDescription)",
            "bytes.up": "\(relay.bytesUp)",
            "bytes.down": "\(relay.bytesDown)",
            "conn.duration_ms": "\(relay.durationMs)",
            "close.reason": "\(relay.closeReason)",
        ]
        if let peer = connection.unixPeer {
            metadata["conn.peer.pid"] = "\(peer.pid)"
            metadata["conn.peer.uid"] = "\(peer.uid)"
        }
        if let identity = session?.peerIdentity {
            metadata["tls.peer.subject"] = "\(identity.subject.rfc2253)"
            metadata["tls.peer.sans"] = "\(identity.subjectAlternativeNames.joined(separator: ","))"
            metadata["tls.peer.fingerprint"] = "\(identity.fingerprint)"
            metadata["tls.peer.serial"] = "\(identity.serialHex)"
            if let spiffe = identity.spiffeID { metadata["tls.peer.spiffe_id"] = "\(spiffe)" }
        }
        if session?.expiredCRLTolerated == true { metadata["tls.crl_expired"] = "true" }
        if let failure {
            // Health checkers and scanners that connect and leave without a certificate: counted in the
            // metrics, not logged, when asked to be quiet. A presented certificate is always audited.
            if shared.quietHandshakeFailures.load(ordering: .relaxed) && session?.peerIdentity == nil
                && session?.unverifiedPeerSubject == nil { return }
            guard let suppressed = failureLogLimiter?.admit(now: loop.now) else { return }
            metadata["handshake.error"] = "\(failure.kind.rawValue)"
            metadata["handshake.detail"] = "\(failure.detail)"
            if session?.peerIdentity == nil, let subject = session?.unverifiedPeerSubject {
                metadata["tls.peer.unverified_subject"] = "\(subject)"
            }
            if let decision = session?.decision, !decision.isAllowed { metadata["policy.reason"] = "\(decision.description)" }
            if suppressed > 0 { metadata["log.suppressed"] = "\(suppressed)" }
            shared.logger.warning("handshake failed", metadata: metadata)
            return
        }
        if let session {
            metadata["tls.version"] = "\(session.protocolVersion)"
            metadata["tls.cipher"] = "\(session.cipherName)"
            metadata["tls.resumed"] = "\(session.isResumed)"
            if let sni = session.serverNameIndication { metadata["tls.sni"] = "\(sni)" }
        }
        if let admission = connection.admission { metadata["policy.rule"] = "\(admission.auditRule)" }
        shared.logger.info("connection closed", metadata: metadata)
    }
}

/// Client mode: the remote server's latest resumable session, per worker and listener. A session is only
/// offered to connections of the generation that verified the server: after a reload that may have changed
/// the CA or the `--verify-*` rules, the next connection verifies the server in full again.
/// - Warning: confined to its worker's loop thread.
final class ClientSessionCache {
    private var generation: UInt64 = 0
    private var session: ResumableSession?

    func session(for generation: UInt64) -> ResumableSession? {
        self.generation == generation ? session : nil
    }

    func store(_ session: ResumableSession, generation: UInt64) {
        self.session = session
        self.generation = generation
    }
}

/// State shared by all workers and the control thread.
final class RuntimeShared: Sendable {
    let logger: Logger
    let activeConnections = Atomic<Int>(0)
    let nextConnectionID = Atomic<UInt64>(0)
    let metrics = RuntimeMetrics()
    let quietHandshakeFailures = Atomic<Bool>(false)
    /// `limits` (set at start and on reload; read at each accept).
    let maxHandshakes = Atomic<Int>(1024)
    let maxHandshakesPerSource = Atomic<Int>(0)
    let maxHandshakeRatePerSource = Atomic<Int>(0)

    func setHandshakeLimits(_ limits: RuntimeConfiguration.HandshakeLimits) {
        maxHandshakes.store(limits.inProgress, ordering: .relaxed)
        maxHandshakesPerSource.store(limits.perSource, ordering: .relaxed)
        maxHandshakeRatePerSource.store(limits.ratePerSource, ordering: .relaxed)
    }
    /// Per worker: the listeners it accepts on (readiness: every listener accepting on every worker).
    private let accepting = Mutex<[Int: Set<String>]>([:])
    private let exits = Mutex<(count: Int, failed: Bool, started: Int, wakeup: AsyncWakeup.Sender?)>((0, false, 0, nil))

    init(logger: Logger) {
        self.logger = logger
    }

    func noteAccepting(worker: Int, listeners: Set<String>) {
        accepting.withLock { $0[worker] = listeners }
    }

    /// How many workers accept on each listener.
    var acceptingWorkers: [String: Int] {
        accepting.withLock { byWorker in
            var counts: [String: Int] = [:]
            for names in byWorker.values { for name in names { counts[name, default: 0] += 1 } }
            return counts
        }
    }

    func setControlWakeup(_ sender: AsyncWakeup.Sender?) {
        exits.withLock { $0.wakeup = sender }
    }

    /// A worker applied its initial listeners: its sockets are being accepted from.
    func workerStarted() {
        exits.withLock { state in
            state.started += 1
            state.wakeup?.send()
        }
    }

    var startedWorkers: Int {
        exits.withLock { $0.started }
    }

    func workerExited(failed: Bool) {
        exits.withLock { state in
            state.count += 1
            state.failed = state.failed || failed
            state.wakeup?.send()
        }
    }

    var exitedWorkers: (count: Int, failed: Bool) {
        exits.withLock { ($0.count, $0.failed) }
    }
}
