import EventLoop
import Synchronization

/// A plaintext echo server on its own loop thread: the demo's backend (and a baseline target for
/// benchmarks). Bounded memory per connection: stops reading while more than 1 MiB is unacknowledged.
public final class EchoBackend: @unchecked Sendable {
    public let port: UInt16
    private let thread: LoopThread
    private let control = Control()

    /// Cross-thread handshake with the loop thread: readiness and the wakeup that stops it.
    private final class Control: Sendable {
        let stopper = Mutex<AsyncWakeup.Sender?>(nil)
        let ready = Mutex(false)
    }

    /// Binds `host:port` (port 0 picks a free one) and starts serving.
    public init(host: String = "127.0.0.1", port: UInt16 = 0) throws {
        let socket = try ListeningSocket.bind(ip: host, port: port, reusePort: false)
        self.port = socket.port
        let control = self.control
        thread = LoopThread(name: "echo-backend") {
            guard let loop = try? Loop() else { return }
            var connections: [ObjectIdentifier: EchoConnection] = [:]
            let listener = try? TCPListener(loop: loop, socket: socket) { client in
                let connection = EchoConnection(client: client) { connections[ObjectIdentifier($0)] = nil }
                connections[ObjectIdentifier(connection)] = connection
                connection.start()
            }
            var wakeup: AsyncWakeup?
            wakeup = try? AsyncWakeup(loop: loop) {
                control.stopper.withLock { $0 = nil }
                listener?.close()
                connections.values.forEach { $0.client.close() }
                wakeup?.close()
            }
            control.stopper.withLock { $0 = wakeup?.sender }
            control.ready.withLock { $0 = true }
            loop.run()
        }
        while !control.ready.withLock({ $0 }) { yieldThread() }
    }

    /// Stops accepting, closes connections and joins the thread.
    public func stop() {
        control.stopper.withLock { $0?.send() }
        thread.join()
    }
}

private final class EchoConnection: StreamSocketDelegate {
    let client: StreamSocket
    private var inFlight = 0
    private var paused = false
    private let onClose: (EchoConnection) -> Void

    init(client: StreamSocket, onClose: @escaping (EchoConnection) -> Void) {
        self.client = client
        self.onClose = onClose
    }

    func start() {
        client.delegate = self
        client.setNoDelay()
        client.startReading()
    }

    func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {
        let buffer = socket.writeBuffers.take()
        let count = min(bytes.count, buffer.bytes.count)
        buffer.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
        inFlight += count
        if socket.write(buffer, count: count) != nil { socket.close() }
        if inFlight > 1 << 20 {
            paused = true
            socket.stopReading()
        }
    }

    func socketDidReadEOF(_ socket: StreamSocket) { socket.shutdown() }
    func socket(_ socket: StreamSocket, didFailReading error: UVError) { socket.close() }
    func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?) {
        inFlight -= byteCount
        if paused && inFlight < 256 << 10 {
            paused = false
            socket.startReading()
        }
    }
    func socket(_ socket: StreamSocket, didConnect error: UVError?) {}
    func socketDidShutdown(_ socket: StreamSocket, error: UVError?) { socket.close() }
    func socketDidClose(_ socket: StreamSocket) { onClose(self) }
}
