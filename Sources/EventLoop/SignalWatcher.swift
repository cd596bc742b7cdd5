import CLibUV

#if canImport(Glibc)
import Glibc
#endif

/// Watches a Unix signal on a loop (libuv turns it into a loop callback, so handlers may do real work).
///
/// Ownership: a `UVHandle` (retained in the handle's `data` until the close callback).
/// - Warning: call only on the loop's thread.
public final class SignalWatcher: UVHandleOwner {
    private let uv: UVHandle<SignalWatcher>
    private var action: ((Int32) -> Void)?
    private var isClosing = false

    static let closeCallback: uv_close_cb = { UVHandle<SignalWatcher>.closed($0) }

    public init(loop: Loop, signal: Int32, _ action: @escaping (Int32) -> Void) throws(UVError) {
        uv = .allocate(on: loop, UV_SIGNAL)
        self.action = action
        let handle = uv.pointer(to: uv_signal_t.self)
        var rc = uv_signal_init(loop.raw, handle)
        if rc != 0 {
            uv.deallocateUninitialized()
            throw UVError(code: rc, operation: "uv_signal_init")
        }
        uv.retain(self)
        rc = uv_signal_start(handle, { handle, signum in
            UVHandle<SignalWatcher>.owner(of: handle!).action?(signum)
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
        uv.close()
    }
}

/// Ignores SIGPIPE process-wide: a peer reset must surface as EPIPE on write, never kill the process.
public func ignoreSIGPIPE() {
    signal(SIGPIPE, SIG_IGN)
}
