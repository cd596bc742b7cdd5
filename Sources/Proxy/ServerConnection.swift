import EventLoop
import Logging
import Policy
import TLS

/// One client connection in server mode: TLS from the client, plaintext to the target.
///
/// Life: `handshaking → connecting → relaying → closing`. The client is not read between the end of the
/// handshake and the target's connect, and the target is never dialled before the peer is verified *and*
/// authorized (that happens inside the handshake, see `TLSSession`).
///
/// Ownership: the worker keeps the connection in its table until both sockets have closed; the sockets
/// keep it (their delegate) alive until their close callbacks. The timer's closure is unowned.
/// - Warning: confined to its worker's loop thread.
final class ServerConnection: StreamSocketDelegate {
    enum State { case handshaking, connecting, relaying, closing }

    let id: UInt64
    unowned let worker: Worker
    let generation: Generation
    let session: TLSSession
    let client: StreamSocket
    private(set) var backend: StreamSocket?
    private let timer: Timer
    private(set) var state = State.handshaking

    let peerAddress: String
    let startedAt: UInt64 = Loop.monotonicNanoseconds
    private var lastActivity: UInt64
    private var openSockets = 1

    // Per-direction progress. "up" is client → target, "down" is target → client.
    private(set) var bytesUp = 0
    private(set) var bytesDown = 0
    private var upInFlight = 0
    private var downInFlight = 0
    private var clientPausedForBackpressure = false
    private var backendPausedForBackpressure = false
    private var clientEOF = false        // TCP FIN from the client (records may still be buffered)
    private var clientFinished = false   // close_notify, or EOF with every buffered record relayed
    private var backendFinished = false  // EOF from the target
    private var clientShutDown = false
    private var backendShutDown = false

    private(set) var closeReason = ""
    private(set) var handshakeFailure: TLSFailure?
    /// Log classification of a failed handshake: a TLS failure kind, `timeout` or `eof`.
    private(set) var handshakeErrorKind = ""
    private(set) var handshakeCompleted = false

    /// Above this many unacknowledged bytes towards one side, stop reading the other side.
    static let highWater = 1 << 20
    /// Resume reading once the backlog drains to this.
    static let lowWater = 256 << 10

    init(id: UInt64, worker: Worker, generation: Generation, client: StreamSocket) throws {
        self.id = id
        self.worker = worker
        self.generation = generation
        self.client = client
        self.session = try TLSSession(context: generation.tls)
        self.timer = Timer(loop: worker.loop)
        self.peerAddress = client.peerAddress
        self.lastActivity = worker.loop.now
    }

    var settings: ListenerRuntimeSettings { generation.settings }

    /// Handshake done and relaying (or half-closed): the peer's identity is known and admitted.
    var isEstablished: Bool { state == .relaying }

    func start() {
        client.delegate = self
        client.setNoDelay()
        client.startReading()
        timer.start(after: settings.handshakeTimeoutMs) { [unowned self] in
            self.failHandshake(TLSFailure(kind: .protocolError, detail: "no complete handshake within the handshake timeout"),
                               kind: "timeout")
            self.close(reason: "handshake timeout")
        }
    }

    // MARK: StreamSocketDelegate

    func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {
        lastActivity = worker.loop.now
        if socket === client {
            session.receive(bytes)
            switch state {
            case .handshaking: advanceHandshake()
            case .relaying: pumpClientToBackend()
            case .connecting, .closing: break
            }
        } else {
            relayBackendToClient(bytes)
        }
    }

    func socketDidReadEOF(_ socket: StreamSocket) {
        if socket === client {
            switch state {
            case .handshaking:
                failHandshake(TLSFailure(kind: .protocolError, detail: "client closed the connection during the handshake"),
                              kind: "eof")
                close(reason: "client closed during handshake")
            case .relaying:
                // TCP FIN without close_notify: the client is done sending either way; relay what is
                // still buffered first (the pump finishes the input once the session runs dry).
                clientEOF = true
                pumpClientToBackend()
            case .connecting, .closing:
                break
            }
        } else {
            finishBackendInput()
        }
    }

    func socket(_ socket: StreamSocket, didFailReading error: UVError) {
        close(reason: socket === client ? "client read error: \(error.message)" : "target read error: \(error.message)")
    }

    func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?) {
        if let error {
            if !error.isCanceled {
                close(reason: socket === client ? "client write error: \(error.message)" : "target write error: \(error.message)")
            }
            return
        }
        if socket === client {
            downInFlight -= byteCount
            if backendPausedForBackpressure && downInFlight <= ServerConnection.lowWater {
                backendPausedForBackpressure = false
                if !backendFinished { backend?.startReading() }
            }
        } else {
            upInFlight -= byteCount
            if clientPausedForBackpressure && upInFlight <= ServerConnection.lowWater {
                clientPausedForBackpressure = false
                pumpClientToBackend()
                if !clientPausedForBackpressure && !clientFinished && !clientEOF && state == .relaying {
                    client.startReading()
                }
            }
        }
    }

    func socket(_ socket: StreamSocket, didConnect error: UVError?) {
        guard state == .connecting else { return }
        if let error {
            worker.noteTargetConnectFailure()
            closeGracefully(reason: "target connect failed: \(error.message)")
            return
        }
        state = .relaying
        socket.setNoDelay()
        armIdleTimer()
        backend?.startReading()
        client.startReading()
        // Application data that arrived with the client's Finished is already buffered in the session.
        pumpClientToBackend()
    }

    func socketDidShutdown(_ socket: StreamSocket, error: UVError?) {
        if socket === client { clientShutDown = true } else { backendShutDown = true }
        if state == .closing {
            // A graceful close (alert or close_notify, then FIN) has reached the client's kernel.
            close(reason: closeReason)
            return
        }
        if clientFinished && backendFinished && clientShutDown && backendShutDown {
            close(reason: "done")
        }
    }

    func socketDidClose(_ socket: StreamSocket) {
        openSockets -= 1
        if openSockets == 0 { worker.connectionDidClose(self) }
    }

    // MARK: handshake

    private func advanceHandshake() {
        switch session.handshake() {
        case .needsInput:
            flushToClient()
        case .failed(let failure):
            failHandshake(failure, kind: failure.kind.rawValue)
            closeGracefully(reason: "handshake failed")  // flushes the alert first
        case .complete:
            handshakeCompleted = true
            flushToClient()  // Finished-related output and session tickets
            state = .connecting
            client.stopReading()
            timer.start(after: settings.connectTimeoutMs) { [unowned self] in
                self.worker.noteTargetConnectFailure()
                self.closeGracefully(reason: "target connect failed: timeout")
            }
            connectBackend()
        }
    }

    private func connectBackend() {
        do {
            switch settings.target {
            case .tcp(let address):
                let socket = try StreamSocket(loop: worker.loop, kind: .tcp)
                attachBackend(socket)
                socket.connect(to: address)
            case .unix(let path):
                let socket = try StreamSocket(loop: worker.loop, kind: .pipe)
                attachBackend(socket)
                socket.connect(toPath: path)
            }
        } catch {
            closeGracefully(reason: "target connect failed: \(error)")
        }
    }

    private func attachBackend(_ socket: StreamSocket) {
        backend = socket
        socket.delegate = self
        openSockets += 1
    }

    // MARK: relay

    /// Decrypts what the session holds into pooled buffers and writes them to the target, until the
    /// session needs more input or the target's backlog reaches the high-water mark.
    private func pumpClientToBackend() {
        guard state == .relaying, let backend, !clientFinished else { return }
        let pool = worker.loop.writeBuffers
        var sawCloseNotify = false
        var drained = false
        while upInFlight < ServerConnection.highWater {
            let buffer = pool.take()
            var filled = 0
            var needsInput = false
            // Fill the buffer with as many records as are ready: fewer, larger writes.
            fill: while filled < buffer.bytes.count {
                let free = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[filled...])
                switch session.read(into: free) {
                case .bytes(let n): filled += n
                case .needsInput: needsInput = true; break fill
                case .closed: sawCloseNotify = true; break fill
                case .failed(let failure):
                    pool.give(buffer)
                    close(reason: "TLS error from client: \(failure.detail)")
                    return
                }
            }
            if filled > 0 {
                bytesUp += filled
                upInFlight += filled
                if let error = backend.write(buffer, count: filled) {
                    close(reason: "target write error: \(error.message)")
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
        if upInFlight >= ServerConnection.highWater {
            clientPausedForBackpressure = true
            client.stopReading()
        }
        flushToClient()  // e.g. KeyUpdate responses
        if sawCloseNotify || (drained && clientEOF) { finishClientInput() }
    }

    private func relayBackendToClient(_ bytes: UnsafeRawBufferPointer) {
        guard state == .relaying else { return }
        bytesDown += bytes.count
        if let failure = session.write(bytes) {
            close(reason: "TLS error towards client: \(failure.detail)")
            return
        }
        flushToClient()
        if downInFlight >= ServerConnection.highWater, let backend {
            backendPausedForBackpressure = true
            backend.stopReading()
        }
    }

    /// Moves pending ciphertext from the session to the client socket.
    private func flushToClient() {
        let pool = worker.loop.writeBuffers
        while session.pendingOutputCount > 0 {
            let buffer = pool.take()
            let n = session.readOutput(into: buffer.bytes)
            guard n > 0 else {
                pool.give(buffer)
                break
            }
            downInFlight += n
            if let error = client.write(buffer, count: n) {
                close(reason: "client write error: \(error.message)")
                return
            }
        }
    }

    // MARK: half-close

    /// The client will send nothing more: pass the half-close on to the target.
    private func finishClientInput() {
        guard !clientFinished, state == .relaying else { return }
        clientFinished = true
        client.stopReading()
        backend?.shutdown()
        armCloseTimer()
    }

    /// The target will send nothing more: close_notify and FIN to the client, keep reading the client.
    private func finishBackendInput() {
        guard !backendFinished, state == .relaying else { return }
        backendFinished = true
        session.sendCloseNotify()
        flushToClient()
        client.shutdown()
        armCloseTimer()
    }

    private func armCloseTimer() {
        timer.start(after: settings.closeTimeoutMs) { [unowned self] in
            self.close(reason: "close timeout")
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
            if self.worker.loop.now &- self.lastActivity >= idle { self.close(reason: "idle timeout") }
        }
    }

    /// Records the first reason a handshake failed; later events (a timer, an EOF) do not overwrite it.
    private func failHandshake(_ failure: TLSFailure, kind: String) {
        guard handshakeFailure == nil else { return }
        handshakeFailure = failure
        handshakeErrorKind = kind
    }

    // MARK: closing

    /// Ends the connection after telling the client: close_notify (if the handshake finished) and FIN are
    /// flushed before the sockets close. A short timer bounds the wait for a client that reads nothing.
    func closeGracefully(reason: String) {
        guard state != .closing else { return }
        if closeReason.isEmpty { closeReason = reason }
        state = .closing
        client.stopReading()
        backend?.close()
        if handshakeCompleted { session.sendCloseNotify() }
        flushToClient()
        timer.start(after: 1000) { [unowned self] in self.close(reason: self.closeReason) }
        client.shutdown()
    }

    /// Closes both sockets now (queued writes are cancelled). Idempotent; the first reason wins.
    func close(reason: String) {
        if closeReason.isEmpty { closeReason = reason }
        guard !client.isClosing else { return }
        state = .closing
        timer.close()
        client.close()
        backend?.close()
    }

    var durationMs: UInt64 { (Loop.monotonicNanoseconds &- startedAt) / 1_000_000 }
}
