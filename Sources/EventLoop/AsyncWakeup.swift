import CLibUV

/// Wakes a loop from another thread. Create it on the loop's thread; `sender` may be used from any thread
/// until `close()` is called.
///
/// Ownership: a `UVHandle` (retained in the handle's `data` until the close callback).
public final class AsyncWakeup: UVHandleOwner {
    private let uv: UVHandle<AsyncWakeup>
    private var action: (() -> Void)?
    private var isClosing = false

    static let closeCallback: uv_close_cb = { UVHandle<AsyncWakeup>.closed($0) }

    public init(loop: Loop, _ action: @escaping () -> Void) throws(UVError) {
        uv = .allocate(on: loop, UV_ASYNC)
        self.action = action
        let rc = uv_async_init(loop.raw, uv.pointer(to: uv_async_t.self)) { handle in
            UVHandle<AsyncWakeup>.owner(of: handle!).action?()
        }
        if rc != 0 {
            uv.deallocateUninitialized()
            throw UVError(code: rc, operation: "uv_async_init")
        }
        uv.retain(self)
    }

    /// A thread-safe trigger. Valid until the wakeup is closed; the owner must stop all senders first.
    public var sender: Sender { Sender(handle: uv.pointer(to: uv_async_t.self)) }

    public struct Sender: @unchecked Sendable {
        /// Borrowed from the `AsyncWakeup`, whose close frees it: hence "stop all senders before `close()`".
        let handle: UnsafeMutablePointer<uv_async_t>
        public func send() { uv_async_send(handle) }
    }

    /// Loop thread only.
    public func close() {
        guard !isClosing else { return }
        isClosing = true
        action = nil
        uv.close()
    }
}
