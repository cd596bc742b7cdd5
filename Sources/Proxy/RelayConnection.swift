import EventLoop
import Logging
import Policy
import TLS

/// One proxied connection: a TLS side and a plaintext side, relayed both ways.
///
/// - Server mode: the accepted socket is the TLS side; the plaintext side is dialled to the target only after
///   the client is verified *and* authorized (inside the handshake, see `TLSSession`), and the client is not
///   read between the end of the handshake and the target's connect.
///   Life: `handshaking → connecting → relaying → closing`.
/// - Client mode: the accepted socket is the plaintext side and is not read until the TLS side has connected,
///   completed its handshake and verified the server, so no plaintext byte ever reaches an unverified server.
///   Life: `connecting → handshaking → relaying → closing`.
///
/// Ownership: the worker keeps the connection in its table until its sockets have closed; the sockets keep it
/// (their delegate) alive until their close callbacks. The timer's closure is unowned.
/// - Warning: confined to its worker's loop thread.
final class RelayConnection: StreamSocketDelegate {
    enum Mode { case server, client }
    enum State { case handshaking, connecting, relaying, closing }

    let id: UInt64
    let mode: Mode
    /// `unowned(unsafe)`: the worker outlives every connection in its table, and this is read on every
    /// record (a checked `unowned` costs an atomic retain/release per access).
    unowned(unsafe) let worker: Worker
    let generation: Generation
    let session: TLSSession
    /// The socket this listener accepted (TLS in server mode, plaintext in client mode).
    let accepted: StreamSocket
    private(set) var tlsSide: StreamSocket?
    private(set) var plainSide: StreamSocket?
    private let timer: Timer
    private(set) var state: State

    let peerAddress: String
    let startedAt: UInt64 = Loop.monotonicNanoseconds
    /// Server mode: the accept; client mode: the TCP connect to the remote server.
    private var handshakeStartedAt: UInt64 = Loop.monotonicNanoseconds
    /// This worker's counters for the listener.
    let stats: ListenerStats
    /// Client mode: where this worker keeps the remote's latest session, to resume instead of a full
    /// handshake; `nil` once this connection has stored its own (or in server mode).
    private var sessionCache: ClientSessionCache?
    private(set) var lastActivity: UInt64
    private var openSockets = 1
    private var pendingShutdowns = 0
    /// After refusing a TLS client: keep reading (and discarding) until it closes, so a client still
    /// writing its last handshake flight (the JDK writes three records) reads our alert instead of a reset.
    private var lingeringForPeer = false

    // Per-direction progress.
    private var bytesFromTLS = 0       // decrypted and written to the plaintext side
    private var bytesFromPlain = 0     // read from the plaintext side and encrypted
    private var toPlainInFlight = 0
    private var toTLSInFlight = 0
    private var tlsPausedForBackpressure = false
    private var plainPausedForBackpressure = false
    private var tlsEOF = false         // TCP FIN on the TLS side (records may still be buffered)
    private var tlsFinished = false    // close_notify, or EOF with every buffered record relayed
    private var plainFinished = false  // EOF on the plaintext side
    private var tlsShutDown = false
    private var plainShutDown = false

    /// Server mode with `proxy-protocol: v2`: the client's address and the address it connected to, read at
    /// accept (the client may be gone by the time the header is built), and then the header itself, built once
    /// after the handshake and written to the target as its first bytes.
    private var proxyEndpoints: (source: ProxyProtocolHeader.Endpoint, destination: ProxyProtocolHeader.Endpoint)?
    private var proxyHeader: [UInt8]?

    private(set) var closeReason = ""
    /// The bounded label for `closeReason` (metrics).
    private(set) var closeCategory = CloseCategory.normal
    private(set) var handshakeFailure: TLSFailure?
    /// Log classification of a failed handshake: a TLS failure kind, `timeout`, `eof` or `connect`.
    private(set) var handshakeErrorKind = ""
    private(set) var handshakeCompleted = false

    /// Above this many unacknowledged bytes towards one side, stop reading the other side.
    static let highWater = 1 << 20
    /// Resume reading once the backlog drains to this.
    static let lowWater = 256 << 10

    init(id: UInt64, worker: Worker, generation: Generation, stats: ListenerStats, sessionCache: ClientSessionCache?,
         accepted: StreamSocket) throws {
        self.id = id
        self.stats = stats
        self.sessionCache = sessionCache
        self.worker = worker
        self.generation = generation
        self.mode = generation.settings.mode
        self.accepted = accepted
        self.session = try TLSSession(context: generation.tls)
        self.timer = Timer(loop: worker.loop)
        self.peerAddress = accepted.peerAddress
        self.lastActivity = worker.loop.now
        if generation.settings.proxyProtocolV2, let remote = accepted.remoteAddress, let local = accepted.localAddress {
            proxyEndpoints = (.init(ip: remote.ipBytes, port: remote.port), .init(ip: local.ipBytes, port: local.port))
        }
        switch mode {
        case .server:
            tlsSide = accepted
            state = .handshaking
        case .client:
            plainSide = accepted
            state = .connecting
        }
    }

    var settings: ListenerRuntimeSettings { generation.settings }

    /// Handshake done and relaying (or half-closed): the peer's identity is known and admitted.
    var isEstablished: Bool { state == .relaying }

    /// Bytes from the accepted side towards the target, and back.
    var bytesUp: Int { mode == .server ? bytesFromTLS : bytesFromPlain }
    var bytesDown: Int { mode == .server ? bytesFromPlain : bytesFromTLS }

    func start() {
        accepted.delegate = self
        accepted.setNoDelay()
        switch mode {
        case .server:
            accepted.startReading()
            armHandshakeTimer()
        case .client:
            // The local application is not read until the server is verified.
            timer.start(after: settings.connectTimeoutMs) { [unowned self] in
                self.noteTargetConnectFailure()
                self.failHandshake(TLSFailure(kind: .protocolError, detail: "no connection to the target within the connect timeout"),
                                   kind: "connect", reason: .targetUnreachable)
                self.closeGracefully(.targetConnectFailed, reason: "target connect failed: timeout")
            }
            connectTarget()
        }
    }

    private func armHandshakeTimer() {
        timer.start(after: settings.handshakeTimeoutMs) { [unowned self] in
            self.failHandshake(TLSFailure(kind: .protocolError, detail: "no complete handshake within the handshake timeout"),
                               kind: "timeout", reason: .timeout)
            self.close(.handshakeFailed, reason: "handshake timeout")
        }
    }

    // MARK: StreamSocketDelegate

    func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {
        guard state != .closing else { return }  // draining a refused peer: discard
        lastActivity = worker.loop.now
        if socket === tlsSide {
            // OpenSSL reads the records straight from the loop's read buffer; a partial one is kept for later.
            session.receiving(bytes) {
                switch state {
                case .handshaking: advanceHandshake()
                case .relaying: pumpTLSToPlain()
                case .connecting, .closing: break
                }
            }
        } else {
            relayPlainToTLS(bytes)
        }
    }

    func socketDidReadEOF(_ socket: StreamSocket) {
        if state == .closing {
            if lingeringForPeer { closeNow() }
            return
        }
        if socket === tlsSide {
            switch state {
            case .handshaking:
                failHandshake(TLSFailure(kind: .protocolError, detail: "peer closed the connection during the handshake"),
                              kind: "eof", reason: .peerClosed)
                close(.handshakeFailed, reason: mode == .server ? "client closed during handshake" : "target closed during handshake")
            case .relaying:
                // TCP FIN without close_notify: the peer is done sending either way; relay what is still
                // buffered first (the pump finishes the input once the session runs dry).
                tlsEOF = true
                pumpTLSToPlain()
            case .connecting, .closing:
                break
            }
        } else if state == .relaying {
            finishPlainInput()
        } else if mode == .client {
            // The local application gave up before the server was verified.
            close(.clientGaveUp, reason: "client closed before the target was ready")
        }
    }

    func socket(_ socket: StreamSocket, didFailReading error: UVError) {
        close(socket === accepted ? .clientError : .targetError, reason: "\(sideName(socket)) read error: \(error.message)")
    }

    func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?) {
        if let error {
            if !error.isCanceled { close(socket === accepted ? .clientError : .targetError, reason: "\(sideName(socket)) write error: \(error.message)") }
            return
        }
        if socket === tlsSide {
            toTLSInFlight -= byteCount
            if plainPausedForBackpressure && toTLSInFlight <= RelayConnection.lowWater {
                plainPausedForBackpressure = false
                if !plainFinished && state == .relaying { plainSide?.startReading() }
            }
        } else {
            toPlainInFlight -= byteCount
            if tlsPausedForBackpressure && toPlainInFlight <= RelayConnection.lowWater {
                tlsPausedForBackpressure = false
                pumpTLSToPlain()
                if !tlsPausedForBackpressure && !tlsFinished && !tlsEOF && state == .relaying { tlsSide?.startReading() }
            }
        }
    }

    func socket(_ socket: StreamSocket, didConnect error: UVError?) {
        guard state == .connecting else { return }
        if let error {
            noteTargetConnectFailure()
            if mode == .client {
                failHandshake(TLSFailure(kind: .protocolError, detail: "cannot connect to the target: \(error.message)"),
                              kind: "connect", reason: .targetUnreachable)
            }
            closeGracefully(.targetConnectFailed, reason: "target connect failed: \(error.message)")
            return
        }
        socket.setNoDelay()
        switch mode {
        case .server:
            if let header = proxyHeader {
                // First on the wire, ahead of every relayed byte: libuv keeps a stream's writes in order.
                proxyHeader = nil
                switch header.withUnsafeBytes({ bytes in Result { () throws(UVError) in try socket.send(bytes) } }) {
                case .success(let queued): toPlainInFlight += queued
                case .failure(let error):
                    close(.targetError, reason: "target write error: \(error.message)")
                    return
                }
            }
            startRelaying()
        case .client:
            state = .handshaking
            handshakeStartedAt = Loop.monotonicNanoseconds
            if let cached = sessionCache?.session(for: generation.number) { session.resume(cached) }
            armHandshakeTimer()
            socket.startReading()
            advanceHandshake()  // sends the ClientHello
        }
    }

    func socketDidShutdown(_ socket: StreamSocket, error: UVError?) {
        if socket === tlsSide { tlsShutDown = true } else { plainShutDown = true }
        if state == .closing {
            // A graceful close (alert or close_notify, then FIN) has reached the peers' kernels. A refused TLS
            // client is given until its EOF (or the timer) to read the alert.
            pendingShutdowns -= 1
            if pendingShutdowns <= 0 && !lingeringForPeer { closeNow() }
            return
        }
        if tlsFinished && plainFinished && tlsShutDown && plainShutDown {
            close(.normal, reason: "done")
        }
    }

    func socketDidClose(_ socket: StreamSocket) {
        openSockets -= 1
        if openSockets == 0 { worker.connectionDidClose(self) }
    }

    private func sideName(_ socket: StreamSocket) -> String {
        socket === accepted ? "client" : "target"
    }

    // MARK: establishing

    private func connectTarget() {
        do {
            switch settings.target {
            case .tcp(let address):
                let socket = try StreamSocket(loop: worker.loop, kind: .tcp)
                attach(socket)
                socket.connect(to: address)
            case .unix(let path):
                let socket = try StreamSocket(loop: worker.loop, kind: .pipe)
                attach(socket)
                socket.connect(toPath: path)
            }
        } catch {
            closeGracefully(.targetConnectFailed, reason: "target connect failed: \(error)")
        }
    }

    private func attach(_ socket: StreamSocket) {
        socket.delegate = self
        openSockets += 1
        if mode == .server { plainSide = socket } else { tlsSide = socket }
    }

    private func advanceHandshake() {
        switch session.handshake() {
        case .needsInput:
            flushTLS()
        case .failed(let failure):
            failHandshake(failure, kind: failure.kind.rawValue)
            closeGracefully(.handshakeFailed, reason: "handshake failed", lingerForPeer: mode == .server)  // flushes the alert first
        case .complete:
            noteHandshakeCompleted()
            flushTLS()  // Finished, session tickets
            switch mode {
            case .server:
                if settings.proxyProtocolV2 {
                    guard let header = makeProxyHeader() else { return }
                    proxyHeader = header
                }
                state = .connecting
                accepted.stopReading()
                timer.start(after: settings.connectTimeoutMs) { [unowned self] in
                    self.noteTargetConnectFailure()
                    self.closeGracefully(.targetConnectFailed, reason: "target connect failed: timeout")
                }
                connectTarget()
            case .client:
                startRelaying()
            }
        }
    }

    /// The PROXY v2 header for this admitted client, or `nil` after closing the connection when it cannot be
    /// built (the client's addresses were unreadable at accept, or its identity does not fit a header).
    private func makeProxyHeader() -> [UInt8]? {
        guard let (source, destination) = proxyEndpoints else {
            closeGracefully(.proxyHeaderFailed, reason: "PROXY header: the client's address could not be read")
            return nil
        }
        let identity = session.peerIdentity
        let facts = ProxyProtocolHeader.TLSFacts(
            version: session.protocolVersion, cipher: session.cipherName, resumed: session.isResumed,
            commonName: identity?.commonName, peerURI: identity.flatMap { $0.spiffeID ?? $0.uris.first },
            ruleName: session.decision?.ruleName, serverName: session.serverNameIndication, connectionID: id)
        guard let header = ProxyProtocolHeader.encode(source: source, destination: destination, tls: facts),
              header.count <= worker.loop.writeBuffers.capacity
        else {
            closeGracefully(.proxyHeaderFailed, reason: "PROXY header: the client's identity is too long for a PROXY v2 header")
            return nil
        }
        return header
    }

    private func startRelaying() {
        state = .relaying
        armIdleTimer()
        tlsSide?.startReading()
        plainSide?.startReading()
        // Records that arrived with the handshake's last flight are already buffered in the session.
        pumpTLSToPlain()
        // The handshake's record buffers are not needed until the next record arrives: an idle connection
        // then costs mostly its sockets and session (nothing is freed while bytes are pending).
        session.releaseBuffers()
    }

    // MARK: relay

    /// Decrypts what the session holds into pooled buffers and writes them to the plaintext side, until the
    /// session needs more input or that side's backlog reaches the high-water mark.
    private func pumpTLSToPlain() {
        guard state == .relaying, let plainSide, !tlsFinished else { return }
        let pool = worker.loop.writeBuffers
        var sawCloseNotify = false
        var drained = false
        while toPlainInFlight < RelayConnection.highWater {
            // Asking OpenSSL when nothing is buffered costs a whole `SSL_read` just to hear "needs input".
            guard session.hasUnreadInput else {
                drained = true
                break
            }
            let buffer = pool.take()
            var filled = 0
            var needsInput = false
            // Fill the buffer with as many records as are ready: fewer, larger writes.
            fill: while filled < buffer.bytes.count {
                guard session.hasUnreadInput else {
                    needsInput = true
                    break fill
                }
                let free = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[filled...])
                switch session.read(into: free) {
                case .bytes(let n): filled += n
                case .needsInput: needsInput = true; break fill
                case .closed: sawCloseNotify = true; break fill
                case .failed(let failure):
                    pool.give(buffer)
                    if mode == .client && bytesFromTLS == 0 && failure.kind == .refusedByPeer {
                        // TLS 1.3: the server judges our certificate after we consider the handshake done;
                        // its refusal arrives as the first record. Report it as the handshake failure it is.
                        failHandshake(failure, kind: failure.kind.rawValue)
                        close(.handshakeFailed, reason: "handshake failed")
                        return
                    }
                    close(.tlsError, reason: "TLS error from \(mode == .server ? "client" : "target"): \(failure.detail)")
                    return
                }
            }
            if filled > 0 {
                bytesFromTLS += filled
                stats.addBytes(UInt64(filled), up: mode == .server)
                do throws(UVError) {
                    toPlainInFlight += try plainSide.send(buffer, count: filled)
                } catch {
                    close(plainSide === accepted ? .clientError : .targetError, reason: "\(sideName(plainSide)) write error: \(error.message)")
                    return
                }
            } else {
                pool.give(buffer)
            }
            if needsInput || sawCloseNotify {
                drained = needsInput
                break
            }
        }
        if toPlainInFlight >= RelayConnection.highWater {
            tlsPausedForBackpressure = true
            tlsSide?.stopReading()
        }
        flushTLS()  // e.g. KeyUpdate responses
        // TLS 1.3 tickets arrive after the handshake, with or before the first records: keep the first one.
        if let cache = sessionCache, session.hasResumableSession, let copy = session.copySession() {
            cache.store(copy, generation: generation.number)
            sessionCache = nil
        }
        if sawCloseNotify || (drained && tlsEOF) { finishTLSInput() }
    }

    private func relayPlainToTLS(_ bytes: UnsafeRawBufferPointer) {
        guard state == .relaying else { return }
        bytesFromPlain += bytes.count
        stats.addBytes(UInt64(bytes.count), up: mode == .client)
        if let failure = session.write(bytes) {
            close(.tlsError, reason: "TLS error: \(failure.detail)")
            return
        }
        flushTLS()
        if toTLSInFlight >= RelayConnection.highWater, let plainSide {
            plainPausedForBackpressure = true
            plainSide.stopReading()
        }
    }

    /// Sends the session's pending ciphertext to the TLS side, straight from the session's buffer when the
    /// socket takes it (the usual case); only what it does not take is copied and queued.
    private func flushTLS() {
        guard let tlsSide else { return }
        let pending = session.pendingOutput
        guard !pending.isEmpty else { return }
        do throws(UVError) {
            toTLSInFlight += try tlsSide.send(pending)
            session.consumeOutput(pending.count)
        } catch {
            close(tlsSide === accepted ? .clientError : .targetError, reason: "\(sideName(tlsSide)) write error: \(error.message)")
        }
    }

    // MARK: half-close

    /// The TLS peer will send nothing more: pass the half-close on to the plaintext side.
    private func finishTLSInput() {
        guard !tlsFinished, state == .relaying else { return }
        tlsFinished = true
        tlsSide?.stopReading()
        plainSide?.shutdown()
        armCloseTimer()
    }

    /// The plaintext side will send nothing more: close_notify and FIN to the TLS peer, keep reading it.
    private func finishPlainInput() {
        guard !plainFinished, state == .relaying else { return }
        plainFinished = true
        session.sendCloseNotify()
        flushTLS()
        tlsSide?.shutdown()
        armCloseTimer()
    }

    private func armCloseTimer() {
        timer.start(after: settings.closeTimeoutMs) { [unowned self] in
            self.close(.closeTimeout, reason: "close timeout")
        }
    }

    private func armIdleTimer() {
        let idle = settings.idleTimeoutMs
        guard idle > 0 else {
            timer.stop()
            return
        }
        // Check periodically instead of re-arming the timer on every read.
        let interval = max(idle / 4, 10)
        timer.start(after: interval, repeat: interval) { [unowned self] in
            if self.worker.loop.now &- self.lastActivity >= idle { self.close(.idleTimeout, reason: "idle timeout") }
        }
    }

    // MARK: closing

    /// Records the first reason a handshake failed; later events (a timer, an EOF) do not overwrite it.
    private func failHandshake(_ failure: TLSFailure, kind: String, reason: HandshakeFailureReason? = nil) {
        guard handshakeFailure == nil else { return }
        handshakeFailure = failure
        handshakeErrorKind = kind
        let reason = reason ?? HandshakeFailureReason(failure.kind)
        let decision = session.decision
        stats.count { counts in
            counts.failures[reason.index] += 1
            if let decision, !decision.isAllowed { counts.denied += 1 }
        }
    }

    /// Counts a completed handshake: full or resumed, and the rule that admitted the peer.
    private func noteHandshakeCompleted() {
        handshakeCompleted = true
        stats.handshakeDuration.recordNanoseconds(Int64(truncatingIfNeeded: Loop.monotonicNanoseconds &- handshakeStartedAt))
        let resumed = session.isResumed
        let rule = admission?.metricsRule
        stats.count { counts in
            if resumed { counts.handshakesResumed += 1 } else { counts.handshakesFull += 1 }
            if let rule { counts.allowedByRule[rule, default: 0] += 1 }
        }
    }

    /// What admitted the peer: a policy rule, or (client mode without identity rules) the server name it was
    /// verified against.
    enum Admission {
        case rule(String)
        case serverName(String)

        /// For the audit line: the rule, or `server-name=<name>`.
        var auditRule: String {
            switch self {
            case .rule(let name): return name
            case .serverName(let name): return "server-name=" + name
            }
        }

        /// For metrics: the rule, or `server-name` (the name itself would add a label value per target).
        var metricsRule: String {
            switch self {
            case .rule(let name): return name
            case .serverName: return "server-name"
            }
        }
    }

    var admission: Admission? {
        let configuration = session.context.configuration
        if mode == .client, configuration.verifyServerName, let name = configuration.serverName { return .serverName(name) }
        return session.decision?.ruleName.map(Admission.rule)
    }

    /// Ends the connection after telling both peers: a pending alert or close_notify (once the handshake
    /// finished) and FIN are flushed before the sockets close. A short timer bounds the wait for a peer that
    /// reads nothing.
    func closeGracefully(_ category: CloseCategory, reason: String, lingerForPeer: Bool = false) {
        guard state != .closing else { return }
        noteCloseReason(category, reason)
        let wasConnecting = state == .connecting
        state = .closing
        lingeringForPeer = lingerForPeer
        if handshakeCompleted { session.sendCloseNotify() }
        flushTLS()
        timer.start(after: 1000) { [unowned self] in self.closeNow() }
        // Shut down every connected socket; the one still connecting (if any) is simply closed.
        var sockets: [StreamSocket] = [accepted]
        if let other = (accepted === tlsSide ? plainSide : tlsSide) {
            if wasConnecting { other.close() } else { sockets.append(other) }
        }
        pendingShutdowns = sockets.count
        for socket in sockets {
            if !(lingerForPeer && socket === accepted) { socket.stopReading() }
            socket.shutdown()
        }
    }

    /// Closes both sockets now (queued writes are cancelled). Idempotent; the first reason wins.
    func close(_ category: CloseCategory, reason: String) {
        noteCloseReason(category, reason)
        guard !accepted.isClosing else { return }
        state = .closing
        timer.close()
        accepted.close()
        (accepted === tlsSide ? plainSide : tlsSide)?.close()
    }

    private func noteTargetConnectFailure() {
        stats.count { $0.targetConnectFailures += 1 }
    }

    /// Closes now for the reason already recorded (a graceful close whose wait is over).
    private func closeNow() {
        close(closeCategory, reason: closeReason)
    }

    private func noteCloseReason(_ category: CloseCategory, _ reason: String) {
        guard closeReason.isEmpty else { return }
        closeReason = reason
        closeCategory = category
    }

    var durationMs: UInt64 { (Loop.monotonicNanoseconds &- startedAt) / 1_000_000 }
}
