import CLibUV
import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// Accepts connections on a listening socket made by `ListeningSocket.bind` (TCP) or
/// `ListeningSocket.bindUnix` (Unix stream socket).
///
/// The listener polls the socket and calls `accept4` itself, for TCP and Unix sockets alike: libuv's
/// `uv_accept` does not return the peer's address (a TCP peer that resets at once has none left for
/// `getpeername`), and only a poll leaves a moment *before* the accept to ask the admission (below). When the process is out of descriptors (EMFILE/ENFILE), the pending
/// connections are refused (accepted on a reserved descriptor and closed at once, as libuv does) instead of
/// leaving the listening socket readable forever; `onError` reports each such burst with its count.
///
/// A listener can be given an `AcceptAdmission`: it is asked for a slot before each `accept4`, and when
/// it has none the listener pauses (stops polling): the pending connections wait in the kernel's accept
/// queue, unanswered, until `resume()`.
///
/// Ownership: a `UVHandle` (retained in the handle's `data` until the close callback, which frees the handle
/// and closes the listening descriptor, then runs the `close` completion). The reserve descriptor is closed
/// there too.
/// - Warning: call only on the loop's thread.
public final class TCPListener: UVHandleOwner {
    /// Why accepting failed, and how many pending connections were refused because of it.
    public struct AcceptFailure: Sendable {
        public let error: UVError
        public let refused: Int
        /// The process (or system) has no descriptor left.
        public var isDescriptorLimit: Bool { error.code == UV_EMFILE.rawValue || error.code == UV_ENFILE.rawValue }
    }

    /// Asked before each `accept4`: `acquire` takes a slot for the connection about to be
    /// accepted (the accepted socket then owns it), or returns false and the listener pauses; `release` gives
    /// back a slot taken for an `accept4` that returned no connection.
    public struct AcceptAdmission {
        public let acquire: () -> Bool
        public let release: () -> Void
        public init(acquire: @escaping () -> Bool, release: @escaping () -> Void) {
            self.acquire = acquire
            self.release = release
        }
    }

    unowned let loop: Loop
    /// A `uv_poll_t` on the listening descriptor (which it does not own: closed in `handleDidClose`).
    private let uv: UVHandle<TCPListener>
    private let kind: StreamSocket.Kind
    private let fd: Int32
    private var onConnection: ((StreamSocket) -> Void)?
    private var onError: ((AcceptFailure) -> Void)?
    private var onClose: (() -> Void)?
    private var isClosing = false
    private let admission: AcceptAdmission?
    /// Not polling: `admission` had no slot. `resume()` polls again.
    public private(set) var isPaused = false
    /// Kept open so that, out of descriptors, one can be freed to accept (and refuse) a pending connection.
    private var reserveFD: Int32 = -1

    /// Connections accepted per wake-up at most: with one socket per worker (SO_REUSEPORT) the kernel spreads
    /// the load; a bound keeps one busy listener from starving the loop's other events.
    static let acceptBatch = 64

    static let closeCallback: uv_close_cb = { UVHandle<TCPListener>.closed($0) }

    public init(loop: Loop, socket: ListeningSocket, admission: AcceptAdmission? = nil,
                onError: ((AcceptFailure) -> Void)? = nil,
                onConnection: @escaping (StreamSocket) -> Void) throws(UVError) {
        self.loop = loop
        self.admission = admission
        self.onConnection = onConnection
        self.onError = onError
        kind = socket.isUnix ? .pipe : .tcp
        fd = socket.fd
        uv = .allocate(on: loop, byteCount: uv_handle_size(UV_POLL))
        let rc = uv_poll_init_socket(loop.raw, uv.pointer(to: uv_poll_t.self), uv_os_sock_t(fd))
        if rc != 0 {
            uv.deallocateUninitialized()
            throw UVError(code: rc, operation: "uv_poll_init_socket")
        }
        uv.retain(self)
        reserveFD = TCPListener.openReserve()
        let started = startPolling()
        if started != 0 {
            close()
            throw UVError(code: started, operation: "uv_poll_start")
        }
    }

    // MARK: accepting

    private func startPolling() -> Int32 {
        uv_poll_start(uv.pointer(to: uv_poll_t.self), Int32(UV_READABLE.rawValue)) { poll, status, _ in
            UVHandle<TCPListener>.owner(of: UnsafeMutableRawPointer(poll!)).acceptPending(status)
        }
    }

    /// Stops polling: connections wait in the kernel's accept queue (the listening socket stays open).
    public func pause() {
        guard !isClosing, !isPaused else { return }
        isPaused = true
        uv_poll_stop(uv.pointer(to: uv_poll_t.self))
    }

    /// Polls again after `pause()`; a connection already waiting is accepted on the next loop iteration.
    public func resume() {
        guard isPaused, !isClosing else { return }
        isPaused = false
        let rc = startPolling()
        if rc != 0 { onError?(AcceptFailure(error: UVError(code: rc, operation: "uv_poll_start"), refused: 0)) }
    }

    private func acceptPending(_ status: Int32) {
        guard !isClosing else { return }
        guard status == 0 else {
            onError?(AcceptFailure(error: UVError(code: status, operation: "poll"), refused: 0))
            return
        }
        for _ in 0..<TCPListener.acceptBatch {
            if let admission, !admission.acquire() {
                pause()
                return
            }
            var storage = sockaddr_storage()
            let client = pc_accept(fd, &storage)
            if client >= 0 {
                let accepted = kind == .tcp
                    ? try? StreamSocket(loop: loop, acceptedTCP: client, peer: SocketAddress(storage: storage))
                    : try? StreamSocket(loop: loop, acceptedUnix: client)
                guard let socket = accepted else {
                    admission?.release()
                    continue
                }
                onConnection?(socket)
                if isClosing || isPaused { return }
                continue
            }
            admission?.release()
            switch -client {
            case EAGAIN, EWOULDBLOCK:
                return
            case EINTR, ECONNABORTED, EPROTO, EPERM:
                continue  // that connection is gone (or was filtered): the next one may be fine
            case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                onError?(AcceptFailure(error: UVError(code: client, operation: "accept"), refused: refusePending()))
                return
            default:
                onError?(AcceptFailure(error: UVError(code: client, operation: "accept"), refused: 0))
                return
            }
        }
    }

    /// Out of descriptors: frees the reserve to accept each pending connection and close it at once (the
    /// client sees the connection close instead of waiting in the queue), then takes the reserve back.
    private func refusePending() -> Int {
        guard reserveFD >= 0 else { return 0 }
        Glibc.close(reserveFD)
        reserveFD = -1
        var refused = 0
        while refused < TCPListener.acceptBatch {
            let client = pc_accept(fd, nil)
            guard client >= 0 else { break }
            Glibc.close(client)
            refused += 1
        }
        reserveFD = TCPListener.openReserve()
        return refused
    }

    private static func openReserve() -> Int32 {
        open("/", O_RDONLY | O_CLOEXEC)
    }

    // MARK: closing

    /// Stops accepting and closes the socket; `completion` runs once the handle is freed.
    public func close(completion: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        onConnection = nil
        onError = nil
        onClose = completion
        uv.close()
    }

    func handleDidClose() {
        // A poll handle does not own its descriptor.
        Glibc.close(fd)
        if reserveFD >= 0 {
            Glibc.close(reserveFD)
            reserveFD = -1
        }
        onClose?()
        onClose = nil
    }
}
