import CLibUV

/// A one-shot or repeating timer.
///
/// Ownership: a `UVHandle` (retained in the handle's `data` until the close callback). The callback closure is
/// dropped on `close()`, breaking any cycle with its owner.
/// - Warning: call only on the loop's thread.
public final class Timer: UVHandleOwner {
    private let uv: UVHandle<Timer>
    private var action: (() -> Void)?
    private var isClosing = false

    static let closeCallback: uv_close_cb = { UVHandle<Timer>.closed($0) }

    public init(loop: Loop) {
        uv = .allocate(on: loop, UV_TIMER)
        uv_timer_init(loop.raw, handle)  // cannot fail for a valid loop
        uv.retain(self)
    }

    var handle: UnsafeMutablePointer<uv_timer_t> { uv.pointer(to: uv_timer_t.self) }

    /// (Re)arms the timer: fires after `timeout` ms, then every `repeat` ms if non-zero.
    public func start(after timeout: UInt64, repeat repeatInterval: UInt64 = 0, _ action: @escaping () -> Void) {
        uv.assertOnLoopThread()
        guard !isClosing else { return }
        self.action = action
        uv_timer_start(handle, { handle in
            UVHandle<Timer>.owner(of: handle!).action?()
        }, timeout, repeatInterval)
    }

    public func stop() {
        uv.assertOnLoopThread()
        guard !isClosing else { return }
        uv_timer_stop(handle)
        action = nil
    }

    public func close() {
        guard !isClosing else { return }
        isClosing = true
        action = nil
        uv.close()
    }
}
