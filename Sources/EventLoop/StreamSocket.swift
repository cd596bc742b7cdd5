import CLibUV
import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// Events of a `StreamSocket`, delivered on its loop's thread.
public protocol StreamSocketDelegate: AnyObject {
    /// Bytes received; valid only during the call (they live in the loop's shared read buffer).
    func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer)
    /// The peer shut down its write side (TCP FIN).
    func socketDidReadEOF(_ socket: StreamSocket)
    func socket(_ socket: StreamSocket, didFailReading error: UVError)
    /// A write finished (its buffer is back in the pool); `error` is set when it failed or was cancelled.
    func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?)
    func socket(_ socket: StreamSocket, didConnect error: UVError?)
    func socketDidShutdown(_ socket: StreamSocket, error: UVError?)
    /// The handle is closed and freed; no further events follow.
    func socketDidClose(_ socket: StreamSocket)
}

/// A TCP or Unix-domain stream on one loop.
///
/// Ownership: a `UVHandle`: the handle's `data` holds a *retained* reference to this object, so the object lives
/// at least until `close()` completes; the close callback tells the delegate, frees the handle and releases that
/// reference. The socket keeps its delegate strongly until then. Write and connect requests are separate blocks,
/// freed in their own callbacks (see `writeDone`, `connectDone`, `shutdown`).
///
/// - Warning: call only on the loop's thread (asserted in debug builds).
public final class StreamSocket: UVHandleOwner {
    public enum Kind { case tcp, pipe }

    public let kind: Kind
    /// `unowned(unsafe)`: a loop outlives its handles (see `Loop.deinit`), and this is read on every read and
    /// write (a checked `unowned` costs an atomic retain/release per access).
    unowned(unsafe) let loop: Loop
    private let uv: UVHandle<StreamSocket>
    @exclusivity(unchecked) public var delegate: (any StreamSocketDelegate)?
    @exclusivity(unchecked) public private(set) var isReading = false
    public private(set) var isClosing = false

    /// Room for either kind (also used by `TCPListener`).
    static let handleSize = max(uv_handle_size(UV_TCP), uv_handle_size(UV_NAMED_PIPE))

    static let closeCallback: uv_close_cb = { UVHandle<StreamSocket>.closed($0) }

    public init(loop: Loop, kind: Kind) throws(UVError) {
        self.loop = loop
        self.kind = kind
        uv = .allocate(on: loop, byteCount: StreamSocket.handleSize)
        let rc: Int32
        switch kind {
        case .tcp: rc = uv_tcp_init(loop.raw, uv.pointer(to: uv_tcp_t.self))
        case .pipe: rc = uv_pipe_init(loop.raw, uv.pointer(to: uv_pipe_t.self), 0)
        }
        if rc != 0 {
            uv.deallocateUninitialized()
            throw UVError(code: rc, operation: kind == .tcp ? "uv_tcp_init" : "uv_pipe_init")
        }
        uv.retain(self)
    }

    /// A TCP connection `accept4` returned, with the peer's address as the kernel gave it then (it stays known
    /// when the peer resets before anyone asks). Takes ownership of `fd` (closed on failure).
    convenience init(loop: Loop, acceptedTCP fd: Int32, peer: SocketAddress) throws(UVError) {
        do {
            try self.init(loop: loop, kind: .tcp)
        } catch {
            Glibc.close(fd)
            throw error
        }
        let rc = uv_tcp_open(tcp, uv_os_sock_t(fd))
        if rc != 0 {
            Glibc.close(fd)
            close()
            throw UVError(code: rc, operation: "uv_tcp_open")
        }
        acceptedPeer = peer
    }

    /// A Unix stream connection `accept4` returned; reads the peer's credentials (`unixPeer`). Takes ownership
    /// of `fd` (closed on failure).
    convenience init(loop: Loop, acceptedUnix fd: Int32) throws(UVError) {
        do {
            try self.init(loop: loop, kind: .pipe)
        } catch {
            Glibc.close(fd)
            throw error
        }
        let rc = uv_pipe_open(uv.pointer(to: uv_pipe_t.self), uv_file(fd))
        if rc != 0 {
            Glibc.close(fd)
            close()
            throw UVError(code: rc, operation: "uv_pipe_open")
        }
        readUnixPeer()
    }

    /// The peer's address from `accept4` (TCP sockets a `TCPListener` accepted).
    private var acceptedPeer: SocketAddress?

    /// Who connected to a Unix socket a `TCPListener` accepted: the socket's path and the peer process's
    /// credentials as the kernel recorded them at connect (SO_PEERCRED).
    public struct UnixPeer: Sendable, Equatable {
        /// The listening socket's path (empty when it has none).
        public let path: String
        public let pid: Int32
        public let uid: UInt32
        public let gid: UInt32
    }

    /// Set for a Unix socket a `TCPListener` accepted (nil when the kernel could not tell).
    public internal(set) var unixPeer: UnixPeer?

    /// Reads `unixPeer` from the accepted descriptor.
    func readUnixPeer() {
        var fd: uv_os_fd_t = -1
        guard kind == .pipe, uv_fileno(uv.handle, &fd) == 0 else { return }
        var path = [CChar](repeating: 0, count: 110)
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        guard pc_unix_peer(fd, &path, path.count, &pid, &uid, &gid) == 0 else { return }
        unixPeer = UnixPeer(path: path.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, pid: pid, uid: uid, gid: gid)
    }

    var stream: UnsafeMutablePointer<uv_stream_t> { uv.stream }
    private var tcp: UnsafeMutablePointer<uv_tcp_t> { uv.pointer(to: uv_tcp_t.self) }

    /// The loop's pool of write buffers.
    public var writeBuffers: BufferPool { loop.writeBuffers }

    static func from(_ handle: UnsafeMutableRawPointer) -> StreamSocket {
        UVHandle<StreamSocket>.owner(of: handle)
    }

    // MARK: reading

    public func startReading() {
        uv.assertOnLoopThread()
        guard !isReading, !isClosing else { return }
        let rc = uv_read_start(stream, { handle, _, buf in
            let socket = StreamSocket.from(UnsafeMutableRawPointer(handle!))
            buf!.pointee = uv_buf_init(socket.loop.readBuffer.baseAddress!.assumingMemoryBound(to: CChar.self),
                                       UInt32(socket.loop.readBuffer.count))
        }, { stream, nread, buf in
            StreamSocket.from(UnsafeMutableRawPointer(stream!)).didRead(nread, buf!.pointee.base)
        })
        if rc == 0 {
            isReading = true
        } else {
            delegate?.socket(self, didFailReading: UVError(code: rc, operation: "uv_read_start"))
        }
    }

    public func stopReading() {
        uv.assertOnLoopThread()
        guard isReading else { return }
        uv_read_stop(stream)
        isReading = false
    }

    private func didRead(_ nread: Int, _ base: UnsafeMutablePointer<CChar>?) {
        if nread > 0 {
            delegate?.socket(self, didRead: UnsafeRawBufferPointer(start: base, count: nread))
        } else if nread == Int(UV_EOF.rawValue) {
            stopReading()
            delegate?.socketDidReadEOF(self)
        } else if nread < 0 {
            stopReading()
            delegate?.socket(self, didFailReading: UVError(code: Int32(nread), operation: "read"))
        }
    }

    // MARK: writing

    /// Queues `count` bytes of `buffer`; the buffer returns to the pool when the write completes.
    /// Returns an error (and recycles the buffer) if the write could not be queued.
    @discardableResult
    public func write(_ buffer: WriteBuffer, count: Int) -> UVError? {
        precondition(count > 0 && count <= buffer.bytes.count, "write of \(count) bytes")
        uv.assertOnLoopThread()
        do throws(UVError) {
            try queue(buffer, from: 0, count: count)
        } catch {
            return error
        }
        return nil
    }

    /// Sends `count` bytes of `buffer`, written at once if the socket takes them: no write request, no callback,
    /// no change to the poll set, and the buffer goes straight back to the pool. Whatever the socket does not
    /// take is queued from the same buffer, as `write` does. Returns how many bytes were queued (0: all sent);
    /// only those are reported later through `didWrite`.
    public func send(_ buffer: WriteBuffer, count: Int) throws(UVError) -> Int {
        precondition(count > 0 && count <= buffer.bytes.count, "send of \(count) bytes")
        uv.assertOnLoopThread()
        let sent: Int
        do throws(UVError) {
            sent = try tryWrite(UnsafeRawBufferPointer(rebasing: buffer.bytes[0..<count]))
        } catch {
            loop.writeBuffers.give(buffer)
            throw error
        }
        guard sent < count else {
            loop.writeBuffers.give(buffer)
            return 0
        }
        try queue(buffer, from: sent, count: count - sent)
        return count - sent
    }

    /// Sends `bytes`, written at once if the socket takes them; what it does not take is copied into pooled
    /// buffers and queued. Returns how many bytes were queued (0: all sent).
    public func send(_ bytes: UnsafeRawBufferPointer) throws(UVError) -> Int {
        guard !bytes.isEmpty else { return 0 }
        uv.assertOnLoopThread()
        let sent = try tryWrite(bytes)
        var offset = sent
        while offset < bytes.count {
            let buffer = loop.writeBuffers.take()
            let n = min(buffer.bytes.count, bytes.count - offset)
            buffer.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]))
            try queue(buffer, from: 0, count: n)
            offset += n
        }
        return bytes.count - sent
    }

    /// `uv_try_write`: what the kernel takes now, without queueing (0 while earlier writes are still queued,
    /// which keeps the bytes in order).
    private func tryWrite(_ bytes: UnsafeRawBufferPointer) throws(UVError) -> Int {
        var descriptor = uv_buf_init(UnsafeMutableRawPointer(mutating: bytes.baseAddress!).assumingMemoryBound(to: CChar.self),
                                     UInt32(bytes.count))
        let rc = uv_try_write(stream, &descriptor, 1)
        if rc >= 0 { return Int(rc) }
        if rc == UV_EAGAIN.rawValue { return 0 }
        throw UVError(code: rc, operation: "write")
    }

    private func queue(_ buffer: WriteBuffer, from offset: Int, count: Int) throws(UVError) {
        buffer.uvBuffer.pointee = uv_buf_init((buffer.bytes.baseAddress! + offset).assumingMemoryBound(to: CChar.self),
                                              UInt32(count))
        let rc = uv_write(buffer.request, stream, buffer.uvBuffer, 1, StreamSocket.writeDone)
        if rc != 0 {
            loop.writeBuffers.give(buffer)
            throw UVError(code: rc, operation: "uv_write")
        }
    }

    private static let writeDone: uv_write_cb = { request, status in
        let request = request!
        // Read everything needed from the request before the block goes back to the pool.
        let socket = StreamSocket.from(UnsafeMutableRawPointer(request.pointee.handle!))
        let block = UnsafeMutableRawPointer(request)
        let buffer = WriteBuffer(block: block, capacity: socket.loop.writeBuffers.capacity)
        let count = Int(buffer.uvBuffer.pointee.len)
        socket.loop.writeBuffers.give(buffer)
        socket.delegate?.socket(socket, didWrite: count, error: status < 0 ? UVError(code: status, operation: "write") : nil)
    }

    /// Queues a whole byte array, split over as many pooled buffers as it needs (for small control-plane
    /// responses; the data path writes pooled buffers directly).
    @discardableResult
    public func write(contentsOf bytes: [UInt8]) -> UVError? {
        var offset = 0
        while offset < bytes.count {
            let buffer = loop.writeBuffers.take()
            let n = min(buffer.bytes.count, bytes.count - offset)
            bytes.withUnsafeBytes { source in
                buffer.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[offset..<(offset + n)]))
            }
            if let error = write(buffer, count: n) { return error }
            offset += n
        }
        return nil
    }

    /// Shuts down the write side once queued writes are flushed (sends FIN).
    public func shutdown() {
        uv.assertOnLoopThread()
        guard !isClosing else { return }
        // Freed in the callback below, or here when libuv refuses it.
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        let rc = uv_shutdown(request, stream) { request, status in
            let request = request!
            let socket = StreamSocket.from(UnsafeMutableRawPointer(request.pointee.handle!))
            request.deallocate()
            socket.delegate?.socketDidShutdown(socket, error: status < 0 ? UVError(code: status, operation: "shutdown") : nil)
        }
        if rc != 0 {
            request.deallocate()
            delegate?.socketDidShutdown(self, error: UVError(code: rc, operation: "uv_shutdown"))
        }
    }

    // MARK: connecting

    /// Connects a TCP socket; the delegate hears `didConnect`.
    public func connect(to address: SocketAddress) {
        precondition(kind == .tcp)
        uv.assertOnLoopThread()
        // Freed in `connectDone`, or here when libuv refuses it.
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        var storage = address.storage
        let rc = withUnsafePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                uv_tcp_connect(request, tcp, sa, StreamSocket.connectDone)
            }
        }
        if rc != 0 {
            request.deallocate()
            delegate?.socket(self, didConnect: UVError(code: rc, operation: "connect"))
        }
    }

    /// Connects a Unix-domain socket at `path`.
    public func connect(toPath path: String) {
        precondition(kind == .pipe)
        uv.assertOnLoopThread()
        // Freed in `connectDone` (uv_pipe_connect reports every failure through the callback).
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        uv_pipe_connect(request, uv.pointer(to: uv_pipe_t.self), path, StreamSocket.connectDone)
    }

    private static let connectDone: uv_connect_cb = { request, status in
        let request = request!
        let socket = StreamSocket.from(UnsafeMutableRawPointer(request.pointee.handle!))
        request.deallocate()
        socket.delegate?.socket(socket, didConnect: status < 0 ? UVError(code: status, operation: "connect") : nil)
    }

    // MARK: options and addresses

    /// Disables Nagle: a proxy must not add latency to small writes.
    public func setNoDelay() {
        if kind == .tcp { uv_tcp_nodelay(tcp, 1) }
    }

    /// The remote address as `ip:port` / `[ip6]:port`; for an accepted Unix socket `unix:PATH` (the socket it
    /// connected to: Unix clients have no address of their own), else "unix"; "unknown" when a dialled socket's
    /// peer is gone.
    public var peerAddress: String {
        guard kind == .tcp else { return unixPeer.map { "unix:" + $0.path } ?? "unix" }
        return remoteAddress?.description ?? "unknown"
    }

    /// The local address of a TCP socket (for an accepted one: the address the client connected to); `nil` for
    /// a pipe or when the socket is gone.
    public var localAddress: SocketAddress? {
        address(uv_tcp_getsockname)
    }

    /// The remote address of a TCP socket: as `accept4` gave it for an accepted one (no system call, and
    /// still known after a reset); `nil` for a pipe, or a dialled socket whose peer is gone.
    public var remoteAddress: SocketAddress? {
        acceptedPeer ?? address(uv_tcp_getpeername)
    }

    private func address(
        _ get: (UnsafePointer<uv_tcp_t>?, UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<Int32>?) -> Int32
    ) -> SocketAddress? {
        guard kind == .tcp else { return nil }
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { get(tcp, $0, &length) }
        }
        guard rc == 0, Int32(storage.ss_family) == AF_INET || Int32(storage.ss_family) == AF_INET6 else { return nil }
        return SocketAddress(storage: storage)
    }

    // MARK: closing

    /// Closes the handle; queued writes are cancelled (call `shutdown()` first to flush them).
    public func close() {
        guard !isClosing else { return }
        isClosing = true
        isReading = false
        uv.close()
    }

    func handleDidClose() {
        delegate?.socketDidClose(self)
        delegate = nil
    }

    /// Number of bytes libuv still holds in its write queue (excludes synchronously completed writes).
    public var writeQueueSize: Int { uv_stream_get_write_queue_size(stream) }
}
