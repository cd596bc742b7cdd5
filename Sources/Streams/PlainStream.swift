public import EventLoop

/// Where a dialled stream connects: a resolved TCP address or a Unix socket path.
public enum StreamEndpoint: Sendable {
    case tcp(SocketAddress)
    case unix(String)
}

/// A plaintext stream: a `StreamSocket` with the `ByteStream` life.
///
/// Ownership: holds its socket strongly; the socket holds this object (its delegate) until its close
/// callback, so a stream lives until it is closed, whoever else lets go of it.
/// - Warning: confined to its loop's thread.
public final class PlainStream: ByteStream, StreamSocketDelegate {
    // Loop-confined and never accessed re-entrantly while mutated: the per-chunk state below skips dynamic
    // exclusivity checks (measured: ~5% of the instructions of a 64-byte request).
    /// Not retained, and not weak either: a weak reference would move the observer's reference counts to a side
    /// table, slowing every retain and release of it (measured: ~4% of a 64-byte request). The observer
    /// outlives the stream's callbacks (see `ByteStream.observer`).
    public unowned(unsafe) var observer: (any ByteStreamObserver)?
    @exclusivity(unchecked) public private(set) var queuedBytes = 0
    let socket: StreamSocket
    private let endpoint: StreamEndpoint?
    @exclusivity(unchecked) private var wantsReading = false
    @exclusivity(unchecked) private var isOpen: Bool

    /// An accepted socket: open already.
    public init(accepted socket: StreamSocket) {
        self.socket = socket
        endpoint = nil
        isOpen = true
        socket.delegate = self
    }

    /// A stream that `open()` dials.
    public init(loop: Loop, dialling endpoint: StreamEndpoint) throws(UVError) {
        switch endpoint {
        case .tcp: socket = try StreamSocket(loop: loop, kind: .tcp)
        case .unix: socket = try StreamSocket(loop: loop, kind: .pipe)
        }
        self.endpoint = endpoint
        isOpen = false
        socket.delegate = self
    }

    public func open() {
        guard let endpoint else {
            socket.setNoDelay()
            observer?.streamDidOpen(self)
            return
        }
        switch endpoint {
        case .tcp(let address): socket.connect(to: address)
        case .unix(let path): socket.connect(toPath: path)
        }
    }

    public func startReading() {
        wantsReading = true
        if isOpen { socket.startReading() }
    }

    public func stopReading() {
        wantsReading = false
        socket.stopReading()
    }

    public func write(_ chunk: StreamChunk) throws(StreamFailure) {
        do throws(UVError) {
            switch chunk {
            case .borrowed(let bytes): queuedBytes += try socket.send(bytes)
            case .owned(let buffer, let count): queuedBytes += try socket.send(buffer, count: count)
            }
        } catch {
            throw .write(error)
        }
    }

    public func discard(_ chunk: StreamChunk) {
        if case .owned(let buffer, _) = chunk { socket.writeBuffers.give(buffer) }
    }

    public func shutdownOutput() {
        socket.shutdown()
    }

    public func close() {
        socket.close()
    }

    /// The remote address as `ip:port` (`unix` for a Unix socket, `unknown` once the peer is gone).
    public var peerAddress: String { socket.peerAddress }

    // MARK: StreamSocketDelegate

    public func socket(_ socket: StreamSocket, didConnect error: UVError?) {
        if let error {
            observer?.stream(self, didFail: .connect(error))
            return
        }
        isOpen = true
        socket.setNoDelay()
        observer?.streamDidConnect(self)
        observer?.streamDidOpen(self)
        if wantsReading { socket.startReading() }
    }

    public func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {
        observer?.stream(self, didRead: .borrowed(bytes))
    }

    public func socketDidReadEOF(_ socket: StreamSocket) {
        observer?.streamDidReachEnd(self)
    }

    public func socket(_ socket: StreamSocket, didFailReading error: UVError) {
        observer?.stream(self, didFail: .read(error))
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
        observer?.streamDidClose(self)
        observer = nil
    }
}
