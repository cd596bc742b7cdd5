import EventLoop
import Logging
import Policy
import Synchronization
import TLS

/// One worker thread: its own libuv loop, its own SO_REUSEPORT listening socket, its connections.
///
/// Thread confinement: everything except `post` and the immutable `let`s is touched only on the worker's
/// loop thread. `post` hands messages over through a mutex-guarded mailbox and an async wakeup.
final class Worker: @unchecked Sendable {
    enum Message {
        case install(Generation)
        case drain
        case cut
    }

    private struct Mailbox {
        var messages: [Message] = []
        var wakeup: AsyncWakeup.Sender?
    }

    let index: Int
    let shared: RuntimeShared
    private let mailbox = Mutex(Mailbox())
    private let listeningSocket: ListeningSocket

    // Loop-thread state.
    private(set) var loop: Loop!
    private var listener: TCPListener?
    private var wakeup: AsyncWakeup?
    private var generation: Generation
    private var connections: [UInt64: ServerConnection] = [:]
    private var draining = false
    private var failureLogLimiter: LogRateLimiter?
    private var refusalLogLimiter: LogRateLimiter?

    init(index: Int, shared: RuntimeShared, socket: ListeningSocket, generation: Generation) {
        self.index = index
        self.shared = shared
        self.listeningSocket = socket
        self.generation = generation
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
            listener = try TCPListener(loop: loop, socket: listeningSocket) { [unowned self] client in
                self.accept(client)
            }
        } catch {
            shared.logger.critical("worker failed to start", metadata: ["worker": "\(index)", "error": "\(error)"])
            listeningSocket.close()
            shared.workerExited(failed: true)
            return
        }
        failureLogLimiter = LogRateLimiter(now: loop.now)
        refusalLogLimiter = LogRateLimiter(now: loop.now)
        mailbox.withLock { $0.wakeup = wakeup?.sender }
        processMailbox()
        loop.run()
        listener = nil
        wakeup = nil
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
            case .install(let next):
                generation = next
            case .drain:
                beginDrain()
            case .cut:
                for connection in connections.values { connection.close(reason: "shutdown timeout") }
            }
        }
    }

    // MARK: connections

    private func accept(_ client: StreamSocket) {
        guard !draining else {
            client.close()
            return
        }
        let limit = generation.settings.maxConnections
        let active = shared.activeConnections.add(1, ordering: .relaxed).newValue
        if limit > 0 && active > limit {
            shared.activeConnections.subtract(1, ordering: .relaxed)
            let peer = client.peerAddress
            client.close()
            if let suppressed = refusalLogLimiter?.admit(now: loop.now) {
                shared.logger.warning("connection refused: limit reached", metadata: [
                    "conn.peer": "\(peer)", "limit": "\(limit)", "log.suppressed": "\(suppressed)",
                ])
            }
            return
        }
        let id = shared.nextConnectionID.add(1, ordering: .relaxed).newValue
        do {
            let connection = try ServerConnection(id: id, worker: self, generation: generation, client: client)
            connections[id] = connection
            connection.start()
        } catch {
            shared.activeConnections.subtract(1, ordering: .relaxed)
            client.close()
            shared.logger.error("cannot create TLS session", metadata: ["error": "\(error)"])
        }
    }

    /// Called by a connection once both of its sockets have closed.
    func connectionDidClose(_ connection: ServerConnection) {
        connections.removeValue(forKey: connection.id)
        shared.activeConnections.subtract(1, ordering: .relaxed)
        audit(connection)
        if draining && connections.isEmpty { finishDrain() }
    }

    func noteTargetConnectFailure() {
        shared.targetConnectFailures.add(1, ordering: .relaxed)
    }

    // MARK: draining

    private func beginDrain() {
        guard !draining else { return }
        draining = true
        listener?.close()
        if connections.isEmpty { finishDrain() }
    }

    private func finishDrain() {
        mailbox.withLock { $0.wakeup = nil }
        wakeup?.close()
    }

    // MARK: audit

    private func audit(_ connection: ServerConnection) {
        let session = connection.session
        var metadata: Logger.Metadata = [
            "conn.id": "\(connection.id)",
            "conn.peer": "\(connection.peerAddress)",
            "listener": "\(connection.settings.name)",
            "config.generation": "\(connection.generation.number)",
        ]
        if let identity = session.peerIdentity {
            metadata["tls.peer.subject"] = "\(identity.subject.rfc2253)"
            metadata["tls.peer.sans"] = "\(identity.subjectAlternativeNames.joined(separator: ","))"
            metadata["tls.peer.fingerprint"] = "\(identity.fingerprint)"
            metadata["tls.peer.serial"] = "\(identity.serialHex)"
            if let spiffe = identity.spiffeID { metadata["tls.peer.spiffe_id"] = "\(spiffe)" }
        }
        if let failure = connection.handshakeFailure {
            guard let suppressed = failureLogLimiter?.admit(now: loop.now) else { return }
            metadata["handshake.error"] = "\(connection.handshakeErrorKind)"
            metadata["handshake.detail"] = "\(failure.detail)"
            if let decision = session.decision, !decision.isAllowed { metadata["policy.reason"] = "\(decision.description)" }
            if suppressed > 0 { metadata["log.suppressed"] = "\(suppressed)" }
            shared.logger.warning("handshake failed", metadata: metadata)
            return
        }
        metadata["tls.version"] = "\(session.protocolVersion)"
        metadata["tls.cipher"] = "\(session.cipherName)"
        metadata["tls.resumed"] = "\(session.isResumed)"
        if let sni = session.serverNameIndication { metadata["tls.sni"] = "\(sni)" }
        if let rule = session.decision?.ruleName { metadata["policy.rule"] = "\(rule)" }
        metadata["target"] = "\(connection.settings.targetDescription)"
        metadata["bytes.up"] = "\(connection.bytesUp)"
        metadata["bytes.down"] = "\(connection.bytesDown)"
        metadata["conn.duration_ms"] = "\(connection.durationMs)"
        metadata["close.reason"] = "\(connection.closeReason)"
        shared.logger.info("connection closed", metadata: metadata)
    }
}

/// State shared by all workers and the control thread.
final class RuntimeShared: Sendable {
    let logger: Logger
    let activeConnections = Atomic<Int>(0)
    let nextConnectionID = Atomic<UInt64>(0)
    let targetConnectFailures = Atomic<Int>(0)
    private let exits = Mutex<(count: Int, failed: Bool, wakeup: AsyncWakeup.Sender?)>((0, false, nil))

    init(logger: Logger) {
        self.logger = logger
    }

    func setControlWakeup(_ sender: AsyncWakeup.Sender?) {
        exits.withLock { $0.wakeup = sender }
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
