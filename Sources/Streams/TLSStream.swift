public import EventLoop
public import TLS

/// Where a client-role stream keeps the remote's session between connections (a per-worker cache).
public protocol SessionKeeper: AnyObject {
    /// The session to offer on the next connection, if any.
    func sessionToOffer() -> ResumableSession?
    /// A ticket arrived on this connection: keep its session for the next one.
    func keep(_ session: ResumableSession)
}

/// A TLS stream: a `StreamSocket` carrying the records of a `TLSSession`. Ciphertext becomes plaintext here
/// (`pump`), and plaintext ciphertext (`write`); OpenSSL reads the records from the loop's read buffer in
/// place and writes into the session's output, which goes to the socket with `send`.
///
/// Life: `open()` runs the handshake (dialled: after the connect). Until then the socket is read for the
/// handshake only; afterwards plaintext is delivered only while the owner has reading started, so records
/// that arrive before it asks (with the client's Finished, say) wait in the session. A TCP FIN without
/// close_notify ends the input once every buffered record has been delivered.
///
/// Ownership: holds its socket and session strongly; the socket holds this object (its delegate) until its
/// close callback.
/// - Warning: confined to its loop's thread.
public final class TLSStream: ByteStream, StreamSocketDelegate {
    // Loop-confined and never accessed re-entrantly while mutated: the per-chunk state below skips dynamic
    // exclusivity checks (measured: ~5% of the instructions of a 64-byte request).
    /// Not retained, and not weak either: a weak reference would move the observer's reference counts to a side
    /// table, slowing every retain and release of it (measured: ~4% of a 64-byte request). The observer
    /// outlives the stream's callbacks (see `ByteStream.observer`).
    public unowned(unsafe) var observer: (any ByteStreamObserver)?
    @exclusivity(unchecked) public private(set) var queuedBytes = 0
    public let session: TLSSession
    let socket: StreamSocket
    private let endpoint: StreamEndpoint?
    /// Set before `open()`; let go at the first ticket or at close (it may be the stream's own owner).
    @exclusivity(unchecked) public var sessionKeeper: (any SessionKeeper)?

    private enum Phase { case idle, connecting, handshaking, open, failed }
    @exclusivity(unchecked) private var phase = Phase.idle
    /// The owner wants plaintext.
    @exclusivity(unchecked) private var wantsReading = false
    /// TCP FIN seen; records may still be buffered.
    @exclusivity(unchecked) private var sawEOF = false
    @exclusivity(unchecked) private var reachedEnd = false
    /// Plaintext bytes delivered so far (a client's first record may still be the server's refusal).
    @exclusivity(unchecked) private var delivered = 0

    /// An accepted socket (server role, or any role the context has).
    public init(accepted socket: StreamSocket, context: TLSContext) throws(OpenSSLError) {
        self.socket = socket
        session = try TLSSession(context: context)
        endpoint = nil
        socket.delegate = self
    }

    /// A stream that `open()` dials, then handshakes (client role).
    public init(loop: Loop, dialling endpoint: StreamEndpoint, context: TLSContext, sessionKeeper: (any SessionKeeper)?) throws {
        switch endpoint {
        case .tcp: socket = try StreamSocket(loop: loop, kind: .tcp)
        case .unix: socket = try StreamSocket(loop: loop, kind: .pipe)
        }
        do {
            session = try TLSSession(context: context)
        } catch {
            socket.close()
            throw error
        }
        self.endpoint = endpoint
        self.sessionKeeper = sessionKeeper
        socket.delegate = self
    }

    public func open() {
        guard phase == .idle else { preconditionFailure("TLSStream.open() in phase \(phase)") }
        guard let endpoint else {
            phase = .handshaking
            socket.setNoDelay()
            socket.startReading()
            return
        }
        phase = .connecting
        switch endpoint {
        case .tcp(let address): socket.connect(to: address)
        case .unix(let path): socket.connect(toPath: path)
        }
    }

    public func startReading() {
        wantsReading = true
        guard phase == .open else { return }
        pump()
        if wantsReading && phase == .open && !sawEOF { socket.startReading() }
    }

    public func stopReading() {
        wantsReading = false
        if phase == .open { socket.stopReading() }
    }

    public func write(_ chunk: StreamChunk) throws(StreamFailure) {
        let failure = session.write(chunk.bytes)
        if case .owned(let buffer, _) = chunk { socket.writeBuffers.give(buffer) }
        if let failure { throw .tls(failure) }
        try flush()
    }

    public func discard(_ chunk: StreamChunk) {
        if case .owned(let buffer, _) = chunk { socket.writeBuffers.give(buffer) }
    }

    public func shutdownOutput() {
        // close_notify only after a completed handshake; a refused peer gets the alert already queued.
        if phase == .open { session.sendCloseNotify() }
        try? flush()
        socket.shutdown()
    }

    public func close() {
        socket.close()
    }

    /// The remote address as `ip:port` (`unix` for a Unix socket, `unknown` once the peer is gone).
    public var peerAddress: String { socket.peerAddress }

    // MARK: ciphertext in

    private func advanceHandshake() {
        switch session.handshake() {
        case .needsInput:
            try? flush()
        case .failed(let failure):
            // The socket is still read (and what arrives discarded): a refused peer may be writing its last
            // flight and should read the alert, not a reset. The owner decides how long to wait.
            phase = .failed
            try? flush()  // the alert, when OpenSSL queued one
            observer?.stream(self, didFail: .handshake(failure))
        case .complete:
            do throws(StreamFailure) {
                try flush()  // Finished, session tickets
            } catch {
                phase = .failed
                observer?.stream(self, didFail: .handshake(TLSFailure(kind: .peerClosed, detail: "\(error)")))
                return
            }
            phase = .open
            if !wantsReading { socket.stopReading() }
            observer?.streamDidOpen(self)
            if phase == .open && wantsReading { startReading() }
        }
    }

    /// Decrypts what the session holds into pooled buffers and hands them to the observer, while it wants
    /// them; then sends what OpenSSL wrote meanwhile (KeyUpdate replies) and reports the end of input.
    private func pump() {
        let pool = socket.writeBuffers
        var sawCloseNotify = false
        // Asking OpenSSL when nothing is buffered costs a whole `SSL_read` just to hear "needs input".
        var needsInput = !session.hasUnreadInput
        while wantsReading && phase == .open && !needsInput {
            let buffer = pool.take()
            var filled = 0
            // Fill the buffer with as many records as are ready: fewer, larger writes downstream.
            fill: while filled < buffer.bytes.count {
                guard session.hasUnreadInput else {
                    needsInput = true
                    break fill
                }
                switch session.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[filled...])) {
                case .bytes(let n): filled += n
                case .needsInput: needsInput = true; break fill
                case .closed: sawCloseNotify = true; break fill
                case .failed(let failure):
                    pool.give(buffer)
                    phase = .failed
                    socket.stopReading()
                    // TLS 1.3: a server judges our certificate after we consider the handshake done; its
                    // refusal arrives as the first record. Report it as the handshake failure it is.
                    let refusal = session.context.configuration.role == .client && delivered == 0
                        && failure.kind == .refusedByPeer
                    observer?.stream(self, didFail: refusal ? .handshake(failure) : .tls(failure))
                    return
                }
            }
            if filled > 0 {
                delivered += filled
                observer?.stream(self, didRead: .owned(buffer, count: filled))
            } else {
                pool.give(buffer)
            }
            if sawCloseNotify { break }
        }
        if phase == .open { try? flush() }
        if sessionKeeper != nil { keepSessionIfIssued() }
        if phase == .open && !reachedEnd && (sawCloseNotify || (sawEOF && (needsInput || !session.hasUnreadInput))) {
            reachedEnd = true
            socket.stopReading()
            observer?.streamDidReachEnd(self)
        }
    }

    /// TLS 1.3 tickets arrive after the handshake, with or before the first records: keep the first one.
    private func keepSessionIfIssued() {
        guard let keeper = sessionKeeper, session.hasResumableSession, let copy = session.copySession() else { return }
        keeper.keep(copy)
        sessionKeeper = nil
    }

    // MARK: ciphertext out

    /// Sends the session's pending ciphertext, straight from its buffer when the socket takes it.
    private func flush() throws(StreamFailure) {
        let pending = session.pendingOutput
        guard !pending.isEmpty else { return }
        do throws(UVError) {
            queuedBytes += try socket.send(pending)
            session.consumeOutput(pending.count)
        } catch {
            throw .write(error)
        }
    }

    // MARK: StreamSocketDelegate

    public func socket(_ socket: StreamSocket, didConnect error: UVError?) {
        guard phase == .connecting else { return }
        if let error {
            phase = .failed
            observer?.stream(self, didFail: .connect(error))
            return
        }
        socket.setNoDelay()
        phase = .handshaking
        if let offered = sessionKeeper?.sessionToOffer() { session.resume(offered) }
        observer?.streamDidConnect(self)
        guard phase == .handshaking else { return }
        socket.startReading()
        advanceHandshake()  // the ClientHello
    }

    public func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {
        session.receiving(bytes) {
            switch phase {
            case .handshaking: advanceHandshake()
            case .open: pump()
            case .idle, .connecting, .failed: break  // after a refusal: discard until the peer leaves
            }
        }
    }

    public func socketDidReadEOF(_ socket: StreamSocket) {
        switch phase {
        case .handshaking:
            phase = .failed
            observer?.stream(self, didFail: .handshake(TLSFailure(kind: .peerClosed,
                                                                  detail: "the peer closed the connection during the handshake")))
        case .open:
            // FIN without close_notify: the peer is done sending either way; what is buffered goes first.
            sawEOF = true
            pump()
        case .failed:
            observer?.streamDidReachEnd(self)  // a refused peer read its alert and left
        case .idle, .connecting:
            break
        }
    }

    public func socket(_ socket: StreamSocket, didFailReading error: UVError) {
        switch phase {
        case .handshaking:
            phase = .failed
            observer?.stream(self, didFail: .handshake(TLSFailure(kind: .peerClosed,
                                                                  detail: "the peer reset the connection during the handshake (\(error.message))")))
        case .failed:
            observer?.streamDidReachEnd(self)
        default:
            observer?.stream(self, didFail: .read(error))
        }
    }

    public func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?) {
        queuedBytes -= byteCount
        if let error {
            if !error.isCanceled { observer?.stream(self, didFail: .write(error)) }
            return
        }
        observer?.streamDidFlush(self)
    }

    public func socketDidShutdown(_ socket: StreamSocket, error: UVError?) {
        observer?.streamDidShutDown(self)
    }

    public func socketDidClose(_ socket: StreamSocket) {
        sessionKeeper = nil
        observer?.streamDidClose(self)
        observer = nil
    }
}
