import CLibUV
import CUVShims
import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// Accepts connections on a listening socket made by `ListeningSocket.bind` (TCP) or
/// `ListeningSocket.bindUnix` (Unix stream socket).
///
/// Ownership: as for `StreamSocket`, the handle's `data` holds a retained reference released in the
/// close callback, which also frees the handle (and closes the descriptor).
/// - Warning: call only on the loop's thread.
public final class TCPListener {
    unowned let loop: Loop
    /// A `uv_tcp_t` or a `uv_pipe_t`, by `kind`.
    let handle: UnsafeMutableRawPointer
    private let kind: StreamSocket.Kind
    private var onConnection: ((StreamSocket) -> Void)?
    private var onClose: (() -> Void)?
    private var isClosing = false

    public init(loop: Loop, socket: ListeningSocket, onConnection: @escaping (StreamSocket) -> Void) throws(UVError) {
        self.loop = loop
        self.onConnection = onConnection
        kind = socket.isUnix ? .pipe : .tcp
        handle = .allocate(byteCount: max(MemoryLayout<uv_tcp_t>.size, MemoryLayout<uv_pipe_t>.size),
                           alignment: max(MemoryLayout<uv_tcp_t>.alignment, MemoryLayout<uv_pipe_t>.alignment))
        let tcp = handle.assumingMemoryBound(to: uv_tcp_t.self)
        let pipe = handle.assumingMemoryBound(to: uv_pipe_t.self)
        var rc = kind == .tcp ? uv_tcp_init(loop.raw, tcp) : uv_pipe_init(loop.raw, pipe, 0)
        if rc != 0 {
            handle.deallocate()
            throw UVError(code: rc, operation: kind == .tcp ? "uv_tcp_init" : "uv_pipe_init")
        }
        stream.pointee.data = Unmanaged.passRetained(self).toOpaque()
        rc = kind == .tcp ? uv_tcp_open(tcp, uv_os_sock_t(socket.fd)) : uv_pipe_open(pipe, uv_file(socket.fd))
        if rc == 0 {
            rc = uv_listen(stream, 1024) { server, status in
                let listener = Unmanaged<TCPListener>.fromOpaque(server!.pointee.data).takeUnretainedValue()
                listener.accept(status)
            }
        }
        if rc != 0 {
            close()
            throw UVError(code: rc, operation: "uv_listen")
        }
    }

    private var stream: UnsafeMutablePointer<uv_stream_t> { handle.assumingMemoryBound(to: uv_stream_t.self) }

    private func accept(_ status: Int32) {
        guard status == 0, !isClosing else { return }
        guard let client = try? StreamSocket(loop: loop, kind: kind) else { return }
        if uv_accept(stream, client.stream) == 0 {
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
        uv_close(handle.assumingMemoryBound(to: uv_handle_t.self)) { handle in
            let listener = Unmanaged<TCPListener>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            listener.handle.deallocate()
            listener.onClose?()
            listener.onClose = nil
        }
    }
}

/// A one-shot or repeating timer.
///
/// Ownership: handle `data` is a retained reference released in the close callback. The callback
/// closure is dropped on `close()`, breaking any cycle with its owner.
/// - Warning: call only on the loop's thread.
public final class Timer {
    let handle: UnsafeMutablePointer<uv_timer_t>
    private var action: (() -> Void)?
    private var isClosing = false

    public init(loop: Loop) {
        handle = .allocate(capacity: 1)
        uv_timer_init(loop.raw, handle)  // cannot fail for a valid loop
        pc_handle(handle).pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// (Re)arms the timer: fires after `timeout` ms, then every `repeat` ms if non-zero.
    public func start(after timeout: UInt64, repeat repeatInterval: UInt64 = 0, _ action: @escaping () -> Void) {
        guard !isClosing else { return }
        self.action = action
        uv_timer_start(handle, { handle in
            let timer = Unmanaged<Timer>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            timer.action?()
        }, timeout, repeatInterval)
    }

    public func stop() {
        guard !isClosing else { return }
        uv_timer_stop(handle)
        action = nil
    }

    public func close() {
        guard !isClosing else { return }
        isClosing = true
        action = nil
        uv_close(pc_handle(handle)) { handle in
            let timer = Unmanaged<Timer>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            timer.handle.deallocate()
        }
    }
}

/// Wakes a loop from another thread. Create it on the loop's thread; `sender` may be used from any thread
/// until `close()` is called.
public final class AsyncWakeup {
    let handle: UnsafeMutablePointer<uv_async_t>
    private var action: (() -> Void)?
    private var isClosing = false

    public init(loop: Loop, _ action: @escaping () -> Void) throws(UVError) {
        handle = .allocate(capacity: 1)
        self.action = action
        let rc = uv_async_init(loop.raw, handle) { handle in
            let wakeup = Unmanaged<AsyncWakeup>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            wakeup.action?()
        }
        if rc != 0 {
            handle.deallocate()
            throw UVError(code: rc, operation: "uv_async_init")
        }
        pc_handle(handle).pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// A thread-safe trigger. Valid until the wakeup is closed; the owner must stop all senders first.
    public var sender: Sender { Sender(handle: handle) }

    public struct Sender: @unchecked Sendable {
        let handle: UnsafeMutablePointer<uv_async_t>
        public func send() { uv_async_send(handle) }
    }

    public func close() {
        guard !isClosing else { return }
        isClosing = true
        action = nil
        uv_close(pc_handle(handle)) { handle in
            let wakeup = Unmanaged<AsyncWakeup>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            wakeup.handle.deallocate()
        }
    }
}

/// Watches a Unix signal on a loop (libuv turns it into a loop callback, so handlers may do real work).
public final class SignalWatcher {
    let handle: UnsafeMutablePointer<uv_signal_t>
    private var action: ((Int32) -> Void)?
    private var isClosing = false

    public init(loop: Loop, signal: Int32, _ action: @escaping (Int32) -> Void) throws(UVError) {
        handle = .allocate(capacity: 1)
        self.action = action
        var rc = uv_signal_init(loop.raw, handle)
        if rc != 0 {
            handle.deallocate()
            throw UVError(code: rc, operation: "uv_signal_init")
        }
        pc_handle(handle).pointee.data = Unmanaged.passRetained(self).toOpaque()
        rc = uv_signal_start(handle, { handle, signum in
            let watcher = Unmanaged<SignalWatcher>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            watcher.action?(signum)
        }, signal)
        if rc != 0 {
            close()
            throw UVError(code: rc, operation: "uv_signal_start")
        }
    }

    public func close() {
        guard !isClosing else { return }
        isClosing = true
        action = nil
        uv_close(pc_handle(handle)) { handle in
            let watcher = Unmanaged<SignalWatcher>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            watcher.handle.deallocate()
        }
    }
}

/// A joinable OS thread, for running one loop each.
public final class LoopThread: @unchecked Sendable {
    private var thread = pthread_t()

    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Starts `body` on a new thread.
    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        let rc = pthread_create(&thread, nil, { context in
            let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
            body.run()
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        _ = pc_thread_set_name(thread, String(name.prefix(15)))
    }

    public func join() {
        pthread_join(thread, nil)
    }
}

/// Ignores SIGPIPE process-wide: a peer reset must surface as EPIPE on write, never kill the process.
public func ignoreSIGPIPE() {
    signal(SIGPIPE, SIG_IGN)
}

/// Hands memory the allocator holds free back to the kernel (glibc keeps freed blocks in its arenas; after a
/// burst that is resident memory nothing uses). Cheap enough for a sweep every few seconds.
public func returnFreeMemoryToTheSystem() {
    pc_malloc_trim()
}

/// Gives up the CPU briefly (used while waiting for another thread to finish setting up).
public func yieldThread() {
    sched_yield()
}

/// Watches a directory for changes to the files in it (creation, modification, rename-replace by editors
/// and by atomic-swap tools). Watching the directory rather than the file survives the file being replaced.
///
/// Ownership: as for the other handles, `data` holds a retained reference released in the close callback.
/// - Warning: call only on the loop's thread.
public final class DirectoryWatcher {
    let handle: UnsafeMutablePointer<uv_fs_event_t>
    private var action: ((String) -> Void)?
    private var isClosing = false
    public let path: String

    /// `action` receives the changed entry's name (relative to `path`).
    public init(loop: Loop, path: String, _ action: @escaping (String) -> Void) throws(UVError) {
        self.path = path
        self.action = action
        handle = .allocate(capacity: 1)
        var rc = uv_fs_event_init(loop.raw, handle)
        if rc != 0 {
            handle.deallocate()
            throw UVError(code: rc, operation: "uv_fs_event_init")
        }
        pc_handle(handle).pointee.data = Unmanaged.passRetained(self).toOpaque()
        rc = uv_fs_event_start(handle, { handle, filename, _, status in
            let watcher = Unmanaged<DirectoryWatcher>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            guard status == 0 else { return }
            watcher.action?(filename.map { String(cString: $0) } ?? "")
        }, path, 0)
        if rc != 0 {
            close()
            throw UVError(code: rc, operation: "watch '\(path)'")
        }
    }

    public func close() {
        guard !isClosing else { return }
        isClosing = true
        action = nil
        uv_close(pc_handle(handle)) { handle in
            let watcher = Unmanaged<DirectoryWatcher>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            watcher.handle.deallocate()
        }
    }
}

/// Blocks the calling thread (the control thread of a benchmark; never a loop thread).
public func sleepSeconds(_ seconds: Double) {
    usleep(UInt32(max(0, seconds) * 1_000_000))
}
