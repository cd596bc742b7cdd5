public import TLS
import EventLoop

/// A one-shot TLS client: connect, handshake, send a message, read the same number of bytes back, close.
/// `portcullis demo` uses it to show an admitted and a refused client without external tools.
public enum TLSProbe {
    public struct Result: Sendable {
        public var reply: [UInt8]?
        public var failure: String?
        public var serverSubject: String?
        public var tlsVersion: String?
    }

    /// Runs the exchange on a private loop on the calling thread and returns what happened.
    public static func run(host: String, port: UInt16, tls: TLSContext, message: [UInt8], timeoutMs: UInt64 = 5000) -> Result {
        do {
            let loop = try Loop()
            let stream = try TLSStream(loop: loop, dialling: .tcp(try SocketAddress(ip: host, port: port)),
                                       context: tls, sessionKeeper: nil)
            let probe = ProbeExchange(stream: stream, message: message, timer: Timer(loop: loop))
            probe.start(timeoutMs: timeoutMs)
            loop.run()
            return probe.result
        } catch {
            return Result(failure: "\(error)")
        }
    }
}

/// The probe's state on its private loop. The stream holds it (as observer, weakly) and the loop's run
/// holds nothing: `run` keeps it alive until the loop has no handles left.
private final class ProbeExchange: ByteStreamObserver {
    let stream: TLSStream
    let message: [UInt8]
    let timer: Timer
    var received: [UInt8] = []
    var result = TLSProbe.Result()
    private var finished = false

    init(stream: TLSStream, message: [UInt8], timer: Timer) {
        self.stream = stream
        self.message = message
        self.timer = timer
    }

    func start(timeoutMs: UInt64) {
        stream.observer = self
        timer.start(after: timeoutMs) { [unowned self] in finish(failure: "timed out") }
        stream.open()
    }

    private func finish(failure: String? = nil) {
        guard !finished else { return }
        finished = true
        if result.failure == nil, let failure { result.failure = failure }
        timer.close()
        stream.close()
    }

    func streamDidConnect(_ stream: any ByteStream) {}

    func streamDidOpen(_ stream: any ByteStream) {
        result.tlsVersion = self.stream.session.protocolVersion
        result.serverSubject = self.stream.session.peerIdentity?.subject.rfc2253
        let failure: StreamFailure? = message.withUnsafeBytes { bytes in
            do throws(StreamFailure) {
                try stream.write(.borrowed(bytes))
                return nil
            } catch {
                return error
            }
        }
        if let failure { return finish(failure: "\(failure)") }
        stream.startReading()
    }

    func stream(_ stream: any ByteStream, didRead chunk: StreamChunk) {
        received += chunk.bytes
        stream.discard(chunk)
        guard received.count >= message.count else { return }
        result.reply = received
        stream.shutdownOutput()  // close_notify, then FIN
        finish()
    }

    func streamDidReachEnd(_ stream: any ByteStream) { finish(failure: "connection closed by the server") }
    func streamDidFlush(_ stream: any ByteStream) {}
    func streamDidShutDown(_ stream: any ByteStream) {}

    func stream(_ stream: any ByteStream, didFail failure: StreamFailure) {
        switch failure {
        case .handshake(let tls), .tls(let tls): finish(failure: tls.detail)
        case .connect(let error), .read(let error), .write(let error): finish(failure: error.message)
        }
    }

    func streamDidClose(_ stream: any ByteStream) {}
}
