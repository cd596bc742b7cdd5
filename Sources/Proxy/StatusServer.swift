import EventLoop
import Policy
import Streams
import TLS

/// The request line of an HTTP/1.x request: all the status endpoint needs.
struct HTTPRequestHead: Equatable {
    let method: String
    /// The path without its query string.
    let path: String
    /// What follows the `?`, if anything (`format=prometheus`).
    var query: String = ""

    /// The value of `name` in the query (`a=1&format=prometheus`), if present.
    func queryValue(_ name: String) -> String? {
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.first.map(String.init) == name { return parts.count > 1 ? String(parts[1]) : "" }
        }
        return nil
    }

    enum Parse: Equatable {
        case incomplete
        case request(HTTPRequestHead)
        case invalid(status: Int, message: String)
    }

    /// Largest request head accepted (request line and headers).
    static let maxHeadBytes = 8192

    /// Parses the head once it is complete (a blank line ends it). Headers are read past, not interpreted:
    /// every response closes the connection, and no endpoint takes a body.
    static func parse(_ bytes: [UInt8]) -> Parse {
        // A request line is printable ASCII: reject binary (a TLS ClientHello, a scanner) before the head ends.
        let firstLine = bytes.prefix { $0 != UInt8(ascii: "\n") }
        if firstLine.contains(where: { ($0 < 0x20 && $0 != UInt8(ascii: "\r")) || $0 >= 0x7F }) {
            return .invalid(status: 400, message: "malformed request line")
        }
        guard let end = headEnd(bytes) else {
            return bytes.count > maxHeadBytes ? .invalid(status: 431, message: "request head larger than \(maxHeadBytes) bytes") : .incomplete
        }
        guard end <= maxHeadBytes else { return .invalid(status: 431, message: "request head larger than \(maxHeadBytes) bytes") }
        let lineEnd = bytes.firstIndex(of: UInt8(ascii: "\n"))!
        var line = bytes[..<lineEnd]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        guard line.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return .invalid(status: 400, message: "malformed request line") }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isUppercase }), parts[1].hasPrefix("/") else {
            return .invalid(status: 400, message: "malformed request line")
        }
        guard parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0" else {
            return .invalid(status: 505, message: "only HTTP/1.0 and HTTP/1.1 are served")
        }
        let target = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = target.first.map(String.init) ?? parts[1]
        return .request(HTTPRequestHead(method: parts[0], path: path, query: target.count > 1 ? String(target[1]) : ""))
    }

    /// Index just past the blank line that ends the head, if it has arrived.
    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        var index = 0
        while let newline = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) {
            let next = newline + 1
            if next < bytes.count, bytes[next] == UInt8(ascii: "\n") { return next + 1 }
            if next + 1 < bytes.count, bytes[next] == UInt8(ascii: "\r"), bytes[next + 1] == UInt8(ascii: "\n") { return next + 2 }
            index = next
        }
        return nil
    }
}

struct HTTPResponse {
    var status: Int
    var contentType: String
    var body: [UInt8]

    static func json(_ status: Int, _ text: String) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: Array((text + "\n").utf8))
    }

    static let reasons: [Int: String] = [
        200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
        431: "Request Header Fields Too Large", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
    ]

    func serialized(includeBody: Bool) -> [UInt8] {
        var head = "HTTP/1.1 \(status) \(HTTPResponse.reasons[status] ?? "Status")\r\n"
        head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        head += "Cache-Control: no-store\r\nConnection: close\r\n"
        if status == 405 { head += "Allow: GET, HEAD\r\n" }
        head += "\r\n"
        return Array(head.utf8) + (includeBody ? body : [])
    }
}

/// A small HTTP/1.1 responder for health, readiness, status and metrics, on the control loop (never a
/// worker's). One request per connection. Bounded: at most `maxConnections` at once, a request head of at
/// most 8 KiB, and the whole head (after the TLS handshake, for HTTPS) within `headTimeoutMs` of the accept
/// (a slowloris gets 408 and is closed).
///
/// With a `tlsContext` every connection is a `TLSStream`: a peer that does not complete a TLS handshake gets
/// no HTTP answer at all. The context is replaced on reload (`tlsContext`), for connections accepted after.
final class StatusServer {
    typealias Handler = (HTTPRequestHead, @escaping (HTTPResponse) -> Void) -> Void

    static let maxConnections = 64
    static let headTimeoutMs: UInt64 = 5000

    private let loop: Loop
    private var listener: TCPListener?
    /// The listening descriptor (owned by `listener`), handed over on a SIGUSR2 restart.
    let descriptor: Int32
    private let handler: Handler
    private var connections: [ObjectIdentifier: StatusConnection] = [:]
    /// HTTPS: the certificate served (the listener's, no client certificate asked). Nil: plain HTTP.
    var tlsContext: TLSContext?

    init(loop: Loop, socket: ListeningSocket, tlsContext: TLSContext?, handler: @escaping Handler) throws(UVError) {
        self.loop = loop
        self.handler = handler
        self.tlsContext = tlsContext
        descriptor = socket.fd
        listener = try TCPListener(loop: loop, socket: socket) { [unowned self] client in self.accept(client) }
    }

    private func accept(_ client: StreamSocket) {
        guard connections.count < StatusServer.maxConnections else {
            client.close()
            return
        }
        let stream: any ByteStream
        if let tlsContext {
            guard let tls = try? TLSStream(accepted: client, context: tlsContext) else {
                client.close()
                return
            }
            stream = tls
        } else {
            stream = PlainStream(accepted: client)
        }
        let connection = StatusConnection(server: self, stream: stream, loop: loop)
        connections[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    fileprivate func handle(_ request: HTTPRequestHead, respond: @escaping (HTTPResponse) -> Void) {
        handler(request, respond)
    }

    fileprivate func connectionDidClose(_ connection: StatusConnection) {
        connections[ObjectIdentifier(connection)] = nil
    }

    /// Stops accepting and closes open status connections.
    func close() {
        listener?.close()
        listener = nil
        for connection in connections.values { connection.abort() }
    }
}

/// One status request on a plain or TLS stream. Kept alive by the server's table until the stream closes.
private final class StatusConnection: ByteStreamObserver {
    unowned let server: StatusServer
    let stream: any ByteStream
    let timer: Timer
    private var received: [UInt8] = []
    private var responded = false
    private var closing = false

    init(server: StatusServer, stream: any ByteStream, loop: Loop) {
        self.server = server
        self.stream = stream
        timer = Timer(loop: loop)
    }

    func start() {
        stream.observer = self
        stream.open()
        timer.start(after: StatusServer.headTimeoutMs) { [unowned self] in
            if self.isOpen {
                self.respond(.json(408, #"{"error":"request head not received in time"}"#), includeBody: true)
            } else {
                self.abort()
            }
        }
    }

    /// The stream is open (a TLS handshake completed): HTTP may be answered.
    private var isOpen = false

    func abort() {
        guard !closing else { return }
        closing = true
        timer.close()
        stream.close()
    }

    private func respond(_ response: HTTPResponse, includeBody: Bool) {
        guard !responded, !closing, isOpen else { return }
        responded = true
        stream.stopReading()
        let bytes = response.serialized(includeBody: includeBody)
        let written = bytes.withUnsafeBytes { raw -> Bool in
            do {
                try stream.write(.borrowed(raw))
                return true
            } catch {
                return false
            }
        }
        guard written else {
            abort()
            return
        }
        stream.shutdownOutput()
        // The peer may never read: bound the wait for the response to drain.
        timer.start(after: 2000) { [unowned self] in self.abort() }
    }

    func streamDidConnect(_ stream: any ByteStream) {}

    func streamDidOpen(_ stream: any ByteStream) {
        isOpen = true
        stream.startReading()
    }

    func stream(_ stream: any ByteStream, didRead chunk: StreamChunk) {
        defer { stream.discard(chunk) }
        guard !responded else { return }
        received.append(contentsOf: chunk.bytes)
        switch HTTPRequestHead.parse(received) {
        case .incomplete:
            break
        case .invalid(let status, let message):
            respond(.json(status, #"{"error":\#(jsonString(message))}"#), includeBody: true)
        case .request(let request):
            guard request.method == "GET" || request.method == "HEAD" else {
                respond(.json(405, #"{"error":"use GET or HEAD"}"#), includeBody: true)
                return
            }
            stream.stopReading()
            timer.stop()
            server.handle(request) { [weak self] response in
                self?.respond(response, includeBody: request.method != "HEAD")
            }
        }
    }

    func streamDidReachEnd(_ stream: any ByteStream) {
        if !responded { abort() }
    }

    func streamDidFlush(_ stream: any ByteStream) {}

    func streamDidShutDown(_ stream: any ByteStream) { abort() }

    func stream(_ stream: any ByteStream, didFail failure: StreamFailure) { abort() }

    func streamDidClose(_ stream: any ByteStream) {
        if !closing {
            closing = true
            timer.close()
        }
        server.connectionDidClose(self)
    }
}
