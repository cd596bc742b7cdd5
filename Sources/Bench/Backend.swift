import EventLoop
import Synchronization

/// A plaintext benchmark backend: `echo` returns what it reads, `sink` discards it, `source` sends without
/// pause. One loop per worker thread, SO_REUSEPORT sockets, bounded memory per connection.
public final class BenchBackend: Sendable {
    public enum Mode: String, Sendable { case echo, sink, source }

    public let mode: Mode
    public let port: UInt16
    private let counters = Counters()

    final class Counters: Sendable {
        let connections = Atomic<Int>(0)
        let bytesIn = Atomic<Int>(0)
        let bytesOut = Atomic<Int>(0)
    }

    /// Binds and starts serving on `workers` threads; returns once accepting.
    public init(mode: Mode, host: String, port: UInt16, workers: Int) throws {
        // A client that leaves while a source or echo write is under way must cost that connection, not the
        // process (the default SIGPIPE action).
        ignoreSIGPIPE()
        self.mode = mode
        var sockets: [ListeningSocket] = []
        var bound = port
        for _ in 0..<max(1, workers) {
            let socket = try ListeningSocket.bind(ip: host, port: bound, reusePort: true)
            bound = socket.port
            sockets.append(socket)
        }
        self.port = bound
        for (index, socket) in sockets.enumerated() {
            let counters = self.counters
            _ = LoopThread(name: "backend-\(index)") {
                guard let loop = try? Loop() else { return }
                let listener = try? TCPListener(loop: loop, socket: socket) { client in
                    counters.connections.add(1, ordering: .relaxed)
                    BackendConnection(client: client, mode: mode, counters: counters).start()
                }
                _ = listener
                loop.run()
            }
        }
    }

    /// Totals so far: connections accepted, bytes read, bytes written.
    public var totals: (connections: Int, bytesIn: Int, bytesOut: Int) {
        (counters.connections.load(ordering: .relaxed), counters.bytesIn.load(ordering: .relaxed),
         counters.bytesOut.load(ordering: .relaxed))
    }
}

/// Keeps itself alive through its socket (the socket holds its delegate until closed).
private final class BackendConnection: StreamSocketDelegate {
    let client: StreamSocket
    let mode: BenchBackend.Mode
    let counters: BenchBackend.Counters
    private var inFlight = 0
    private var paused = false
    private static let chunk = 64 * 1024

    init(client: StreamSocket, mode: BenchBackend.Mode, counters: BenchBackend.Counters) {
        self.client = client
        self.mode = mode
        self.counters = counters
    }

    func start() {
        client.delegate = self
        client.setNoDelay()
        client.startReading()
        if mode == .source { produce() }
    }

    private func produce() {
        while inFlight < (1 << 20) && !client.isClosing {
            let buffer = client.writeBuffers.take()
            let n = min(BackendConnection.chunk, buffer.bytes.count)
            inFlight += n
            if client.write(buffer, count: n) != nil {
                client.close()
                return
            }
        }
    }

    func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {
        counters.bytesIn.add(bytes.count, ordering: .relaxed)
        guard mode == .echo else { return }
        let buffer = socket.writeBuffers.take()
        let n = min(bytes.count, buffer.bytes.count)
        buffer.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
        inFlight += n
        if socket.write(buffer, count: n) != nil { socket.close() }
        if inFlight > (1 << 20) {
            paused = true
            socket.stopReading()
        }
    }

    func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?) {
        inFlight -= byteCount
        if error != nil { return socket.close() }
        counters.bytesOut.add(byteCount, ordering: .relaxed)
        if mode == .source { return produce() }
        if paused && inFlight < (256 << 10) {
            paused = false
            socket.startReading()
        }
    }

    func socketDidReadEOF(_ socket: StreamSocket) {
        if mode == .source { socket.close() } else { socket.shutdown() }
    }
    func socket(_ socket: StreamSocket, didFailReading error: UVError) { socket.close() }
    func socket(_ socket: StreamSocket, didConnect error: UVError?) {}
    func socketDidShutdown(_ socket: StreamSocket, error: UVError?) { socket.close() }
    func socketDidClose(_ socket: StreamSocket) {}
}
