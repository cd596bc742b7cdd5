import EventLoop
public import TLS

/// Where and how the load generator connects: plaintext, or TLS with a client certificate.
public struct BenchTarget: Sendable {
    public var host: String
    public var port: UInt16
    /// nil for a plaintext target (the baseline).
    public var tls: TLSContext?

    public init(host: String, port: UInt16, tls: TLSContext?) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    public var description: String { "\(host):\(port)\(tls == nil ? " (plaintext)" : " (TLS)")" }
}

/// One load-generator connection on a loop: connect, optional TLS handshake, then plaintext in and out.
///
/// Readiness for TLS means the server issued a session ticket — in TLS 1.3 that is sent only after the server
/// verified our certificate, so a refused client is never counted as connected.
/// - Warning: confined to its loop's thread.
final class BenchClient: StreamSocketDelegate {
    enum Phase { case connecting, handshaking, ready, closed }

    let loop: Loop
    let socket: StreamSocket
    let session: TLSSession?
    private(set) var phase = Phase.connecting
    /// Plaintext bytes queued to the socket and not yet acknowledged by libuv (TLS: ciphertext bytes).
    private(set) var inFlight = 0
    let startedAt = Loop.monotonicNanoseconds

    var onReady: ((BenchClient) -> Void)?
    var onData: ((BenchClient, Int) -> Void)?
    var onWritable: ((BenchClient) -> Void)?
    var onClosed: ((BenchClient, String?) -> Void)?
    private var failure: String?
    private let scratch: UnsafeMutableRawBufferPointer

    init(loop: Loop, target: BenchTarget, address: SocketAddress, scratch: UnsafeMutableRawBufferPointer,
         resume: ResumableSession? = nil) throws {
        self.loop = loop
        self.scratch = scratch
        socket = try StreamSocket(loop: loop, kind: .tcp)
        if let tls = target.tls {
            let session = try TLSSession(context: tls)
            if let resume { session.resume(resume) }
            self.session = session
        } else {
            session = nil
        }
        socket.delegate = self
        socket.connect(to: address)
    }

    var isResumed: Bool { session?.isResumed ?? false }

    /// Sends plaintext (encrypted first for TLS).
    func send(_ bytes: UnsafeRawBufferPointer) {
        guard phase == .ready else { return }
        if let session {
            if let failure = session.write(bytes) { return fail("tls: \(failure.detail)") }
            flush()
        } else {
            var offset = 0
            while offset < bytes.count {
                let buffer = loop.writeBuffers.take()
                let n = min(buffer.bytes.count, bytes.count - offset)
                buffer.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]))
                inFlight += n
                if let error = socket.write(buffer, count: n) { return fail(error.name) }
                offset += n
            }
        }
    }

    func close(sendCloseNotify: Bool = true) {
        guard phase != .closed else { return }
        if sendCloseNotify, let session, phase == .ready {
            session.sendCloseNotify()
            flush()
        }
        phase = .closed
        socket.close()
    }

    private func flush() {
        guard let session else { return }
        while session.pendingOutputCount > 0 {
            let buffer = loop.writeBuffers.take()
            let n = session.readOutput(into: buffer.bytes)
            guard n > 0 else {
                loop.writeBuffers.give(buffer)
                return
            }
            inFlight += n
            if let error = socket.write(buffer, count: n) { return fail(error.name) }
        }
    }

    private func fail(_ reason: String) {
        if failure == nil { failure = reason }
        phase = .closed
        socket.close()
    }

    private func advance() {
        guard let session else { return }
        if phase == .handshaking {
            switch session.handshake() {
            case .needsInput: flush(); return
            case .failed(let failure): flush(); return fail("tls-\(failure.kind.rawValue)")
            case .complete: flush()
            }
        }
        var received = 0
        while phase != .closed {
            switch session.read(into: scratch) {
            case .bytes(let n): received += n
            case .needsInput:
                if phase == .handshaking && session.hasResumableSession {
                    phase = .ready
                    onReady?(self)
                }
                if received > 0 { onData?(self, received) }
                return
            case .closed: return fail("closed-by-server")
            case .failed(let failure): return fail(failure.kind == .refusedByPeer ? "tls-refused" : "tls-\(failure.kind.rawValue)")
            }
        }
    }

    // MARK: StreamSocketDelegate

    func socket(_ socket: StreamSocket, didConnect error: UVError?) {
        if let error { return fail("connect-\(error.name)") }
        socket.setNoDelay()
        socket.startReading()
        if session != nil {
            phase = .handshaking
            advance()
        } else {
            phase = .ready
            onReady?(self)
        }
    }

    func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {
        if let session {
            session.receive(bytes)
            advance()
        } else {
            onData?(self, bytes.count)
        }
    }

    func socketDidReadEOF(_ socket: StreamSocket) { fail("eof") }
    func socket(_ socket: StreamSocket, didFailReading error: UVError) { fail("read-\(error.name)") }
    func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?) {
        inFlight -= byteCount
        if let error, !error.isCanceled { return fail("write-\(error.name)") }
        if phase == .ready { onWritable?(self) }
    }
    func socketDidShutdown(_ socket: StreamSocket, error: UVError?) {}
    func socketDidClose(_ socket: StreamSocket) {
        let callback = onClosed
        onReady = nil
        onData = nil
        onWritable = nil
        onClosed = nil
        callback?(self, failure)
    }
}
