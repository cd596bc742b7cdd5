import EventLoop
public import TLS

/// A one-shot TLS client: connect, handshake, send a message, read the same number of bytes back.
/// Used by `portcullis demo` to show an admitted and a refused client without external tools.
public enum TLSProbe {
    public struct Result: Sendable {
        public var reply: [UInt8]?
        public var failure: String?
        public var serverSubject: String?
        public var tlsVersion: String?
    }

    /// Runs the exchange on a private loop on the calling thread and returns what happened.
    public static func run(host: String, port: UInt16, tls: TLSContext, message: [UInt8], timeoutMs: UInt64 = 5000) -> Result {
        ProbeConnection.run(host: host, port: port, tls: tls, message: message, timeoutMs: timeoutMs)
    }
}

/// The probe's connection state; lives on the probe's private loop.
final class ProbeConnection: StreamSocketDelegate {
    typealias Result = TLSProbe.Result

    private let loop: Loop
    private let socket: StreamSocket
    private let session: TLSSession
    private let message: [UInt8]
    private var received: [UInt8] = []
    private var result = Result()
    private var sent = false
    private let timer: Timer

    static func run(host: String, port: UInt16, tls: TLSContext, message: [UInt8], timeoutMs: UInt64) -> Result {
        do {
            let loop = try Loop()
            let probe = try ProbeConnection(loop: loop, tls: tls, message: message)
            probe.socket.connect(to: try SocketAddress(ip: host, port: port))
            probe.timer.start(after: timeoutMs) { [unowned probe] in probe.finish(failure: "timed out") }
            loop.run()
            return probe.result
        } catch {
            return Result(failure: "\(error)")
        }
    }

    private init(loop: Loop, tls: TLSContext, message: [UInt8]) throws {
        self.loop = loop
        self.socket = try StreamSocket(loop: loop, kind: .tcp)
        self.session = try TLSSession(context: tls)
        self.message = message
        self.timer = Timer(loop: loop)
        socket.delegate = self
    }

    private func finish(failure: String? = nil) {
        if result.failure == nil, let failure { result.failure = failure }
        timer.close()
        socket.close()
    }

    private func flush() {
        while session.pendingOutputCount > 0 {
            let buffer = loop.writeBuffers.take()
            let n = session.readOutput(into: buffer.bytes)
            if n == 0 {
                loop.writeBuffers.give(buffer)
                return
            }
            socket.write(buffer, count: n)
        }
    }

    private func advance() {
        if !session.isHandshakeComplete {
            switch session.handshake() {
            case .needsInput: flush(); return
            case .failed(let failure): flush(); finish(failure: failure.detail); return
            case .complete:
                flush()
                result.tlsVersion = session.protocolVersion
                result.serverSubject = session.peerIdentity?.subject.rfc2253
            }
        }
        if !sent {
            sent = true
            if let failure = message.withUnsafeBytes({ session.write($0) }) {
                finish(failure: failure.detail)
                return
            }
            flush()
        }
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let outcome = buffer.withUnsafeMutableBytes { session.read(into: $0) }
            switch outcome {
            case .bytes(let n):
                received += buffer[0..<n]
                if received.count >= message.count {
                    result.reply = received
                    session.sendCloseNotify()
                    flush()
                    finish()
                    return
                }
            case .needsInput: return
            case .closed: finish(failure: "server closed the connection"); return
            case .failed(let failure): finish(failure: failure.detail); return
            }
        }
    }

    func socket(_ socket: StreamSocket, didConnect error: UVError?) {
        if let error {
            finish(failure: error.message)
            return
        }
        socket.startReading()
        advance()
    }

    func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {
        session.receive(bytes)
        advance()
    }

    func socketDidReadEOF(_ socket: StreamSocket) { finish(failure: "connection closed by the server") }
    func socket(_ socket: StreamSocket, didFailReading error: UVError) { finish(failure: error.message) }
    func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?) {}
    func socketDidShutdown(_ socket: StreamSocket, error: UVError?) {}
    func socketDidClose(_ socket: StreamSocket) {}
}
