import CLibUV

/// Accepts connections on a listening socket made by `ListeningSocket.bind` (TCP) or
/// `ListeningSocket.bindUnix` (Unix stream socket).
///
/// Ownership: a `UVHandle` (retained in the handle's `data` until the close callback, which frees the handle,
/// closes the descriptor with it and then runs the `close` completion).
/// - Warning: call only on the loop's thread.
public final class TCPListener: UVHandleOwner {
    unowned let loop: Loop
    /// A `uv_tcp_t` or a `uv_pipe_t`, by `kind`.
    private let uv: UVHandle<TCPListener>
    private let kind: StreamSocket.Kind
    private var onConnection: ((StreamSocket) -> Void)?
    private var onClose: (() -> Void)?
    private var isClosing = false

    static let closeCallback: uv_close_cb = { UVHandle<TCPListener>.closed($0) }

    public init(loop: Loop, socket: ListeningSocket, onConnection: @escaping (StreamSocket) -> Void) throws(UVError) {
        self.loop = loop
        self.onConnection = onConnection
        kind = socket.isUnix ? .pipe : .tcp
        uv = .allocate(on: loop, byteCount: StreamSocket.handleSize)
        let tcp = uv.pointer(to: uv_tcp_t.self)
        let pipe = uv.pointer(to: uv_pipe_t.self)
        var rc = kind == .tcp ? uv_tcp_init(loop.raw, tcp) : uv_pipe_init(loop.raw, pipe, 0)
        if rc != 0 {
            uv.deallocateUninitialized()
            throw UVError(code: rc, operation: kind == .tcp ? "uv_tcp_init" : "uv_pipe_init")
        }
        uv.retain(self)
        rc = kind == .tcp ? uv_tcp_open(tcp, uv_os_sock_t(socket.fd)) : uv_pipe_open(pipe, uv_file(socket.fd))
        if rc == 0 {
            rc = uv_listen(uv.stream, 1024) { server, status in
                UVHandle<TCPListener>.owner(of: server!).accept(status)
            }
        }
        if rc != 0 {
            close()
            throw UVError(code: rc, operation: "uv_listen")
        }
    }

    private func accept(_ status: Int32) {
        guard status == 0, !isClosing else { return }
        guard let client = try? StreamSocket(loop: loop, kind: kind) else { return }
        if uv_accept(uv.stream, client.stream) == 0 {
            onConnection?(client)
        } else {
            client.close()
        }
    }

    /// Stops accepting and closes the socket; `completion` runs once the handle is freed.
    public func close(completion: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        onConnection = nil
        onClose = completion
        uv.close()
    }

    func handleDidClose() {
        onClose?()
        onClose = nil
    }
}
