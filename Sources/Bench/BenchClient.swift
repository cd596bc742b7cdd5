import EventLoop
public import TLS
import Streams

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

/// One load-generator connection on a loop: a plaintext or TLS `ByteStream`, with the callbacks the
/// workloads use.
///
/// Readiness for TLS means the server issued a session ticket — in TLS 1.3 that is sent only after the server
/// verified our certificate, so a refused client is never counted as connected.
/// - Warning: confined to its loop's thread.
final class BenchClient: ByteStreamObserver, SessionKeeper {
    enum Phase { case connecting, handshaking, ready, finishing, closed }

    private let stream: any ByteStream
    /// The TLS stream's session; nil for plaintext.
    let session: TLSSession?
    private let offered: ResumableSession?
    private(set) var phase = Phase.connecting
    let startedAt = Loop.monotonicNanoseconds

    var onReady: ((BenchClient) -> Void)?
    var onData: ((BenchClient, Int) -> Void)?
    var onWritable: ((BenchClient) -> Void)?
    var onClosed: ((BenchClient, String?) -> Void)?
    private var failure: String?
    /// The stream holds its observer weakly; a client keeps itself alive until its stream closed, as the
    /// workloads keep no list of the connections they start.
    private var selfUntilClosed: BenchClient?

    init(loop: Loop, target: BenchTarget, address: SocketAddress, resume: ResumableSession? = nil) throws {
        offered = resume
        if let tls = target.tls {
            let tlsStream = try TLSStream(loop: loop, dialling: .tcp(address), context: tls, sessionKeeper: nil)
            stream = tlsStream
            session = tlsStream.session
        } else {
            stream = try PlainStream(loop: loop, dialling: .tcp(address))
            session = nil
        }
        stream.observer = self
        selfUntilClosed = self
        if let tlsStream = stream as? TLSStream { tlsStream.sessionKeeper = self }
        stream.open()
    }

    /// Bytes written and not yet taken by the kernel (TLS: ciphertext).
    var inFlight: Int { stream.queuedBytes }

    var isResumed: Bool { session?.isResumed ?? false }

    /// Sends plaintext (encrypted first for TLS).
    func send(_ bytes: UnsafeRawBufferPointer) {
        guard phase == .ready else { return }
        do throws(StreamFailure) {
            try stream.write(.borrowed(bytes))
        } catch {
            fail(Self.errorKind(error))
        }
    }

    func close(sendCloseNotify: Bool = true) {
        guard phase != .closed else { return }
        if sendCloseNotify && phase == .ready { stream.shutdownOutput() }
        phase = .closed
        stream.close()
    }

    /// Stops sending: what is queued still goes out, then the FIN; the stream closes once that is done.
    func finish() {
        guard phase == .ready else { return close(sendCloseNotify: false) }
        phase = .finishing
        stream.shutdownOutput()
    }

    private func fail(_ reason: String) {
        if failure == nil { failure = reason }
        phase = .closed
        stream.close()
    }

    private static func errorKind(_ failure: StreamFailure) -> String {
        switch failure {
        case .connect(let error): return "connect-\(error.name)"
        case .handshake(let tls), .tls(let tls): return tls.kind == .refusedByPeer ? "tls-refused" : "tls-\(tls.kind.rawValue)"
        case .read(let error): return "read-\(error.name)"
        case .write(let error): return "write-\(error.name)"
        }
    }

    private func becomeReady() {
        guard phase == .connecting || phase == .handshaking else { return }
        phase = .ready
        onReady?(self)
    }

    // MARK: SessionKeeper

    func sessionToOffer() -> ResumableSession? { offered }

    /// The server's ticket arrived: it verified and admitted our certificate.
    func keep(_ session: ResumableSession) { becomeReady() }

    // MARK: ByteStreamObserver

    func streamDidConnect(_ stream: any ByteStream) {
        if session != nil { phase = .handshaking }
    }

    func streamDidOpen(_ stream: any ByteStream) {
        stream.startReading()
        if session == nil { becomeReady() }
    }

    func stream(_ stream: any ByteStream, didRead chunk: StreamChunk) {
        let count = chunk.count
        stream.discard(chunk)
        if phase == .ready { onData?(self, count) }
    }

    func streamDidReachEnd(_ stream: any ByteStream) {
        fail(session != nil && phase == .ready ? "closed-by-server" : "eof")
    }

    func streamDidFlush(_ stream: any ByteStream) {
        if phase == .ready { onWritable?(self) }
    }

    func streamDidShutDown(_ stream: any ByteStream) {
        if phase == .finishing { stream.close() }
    }

    func stream(_ stream: any ByteStream, didFail failure: StreamFailure) { fail(Self.errorKind(failure)) }

    func streamDidClose(_ stream: any ByteStream) {
        phase = .closed
        let callback = onClosed
        onReady = nil
        onData = nil
        onWritable = nil
        onClosed = nil
        callback?(self, failure)
        selfUntilClosed = nil
    }
}
