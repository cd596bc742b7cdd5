import CLibUV
import CUVShims

/// A Swift object that owns one libuv handle through a `UVHandle`.
protocol UVHandleOwner: AnyObject {
    /// The handle's `uv_close_cb`, always spelled `{ UVHandle<Self>.closed($0) }`: Swift cannot form a C function
    /// pointer inside generic code, so each owner type writes this one line and `UVHandle.closed` does the work.
    static var closeCallback: uv_close_cb { get }

    /// The last event of the handle: runs inside the close callback, before its memory is freed and the handle's
    /// reference to the owner released. Default: nothing.
    func handleDidClose()
}

extension UVHandleOwner {
    func handleDidClose() {}
}

/// The one owner of a libuv handle's memory and of the reference that keeps its Swift object alive; every handle
/// type (`StreamSocket`, `TCPListener`, `Timer`, `AsyncWakeup`, `SignalWatcher`, `DirectoryWatcher`, `PipeReader`)
/// goes through it.
///
/// Life of a handle, and where each thing is freed:
/// 1. `allocate` reserves uninitialised memory for the handle; the owner runs `uv_*_init` on it. If that fails,
///    libuv never saw the memory: `deallocateUninitialized()` frees it at once (no close, no callback).
/// 2. `retain(owner)` stores a +1 reference to the owner in `handle->data`. libuv callbacks find the owner there
///    (`owner(of:)`, unretained), so the owner must outlive the handle: that +1 guarantees it, whoever else lets go.
/// 3. `close()` calls `uv_close`. libuv may touch the memory until the close callback runs, so that callback
///    (`closed`) is the single free point: it calls `handleDidClose()`, frees the memory and releases the +1.
///
/// A plain value (one pointer): copying it does not copy the handle; the owner keeps it in a `let`.
/// - Warning: loop thread only (asserted in debug builds), except `owner(of:)` in libuv callbacks.
struct UVHandle<Owner: UVHandleOwner> {
    let raw: UnsafeMutableRawPointer

    /// Memory for a handle of `type`. Uninitialised until the owner's `uv_*_init`.
    static func allocate(on loop: Loop, _ type: uv_handle_type) -> UVHandle {
        allocate(on: loop, byteCount: uv_handle_size(type))
    }

    /// Memory of `byteCount` bytes: for a listener or socket that may be TCP or a pipe, the larger of the two.
    static func allocate(on loop: Loop, byteCount: Int) -> UVHandle {
        assert(loop.isOnLoopThread, "\(Owner.self) created off its loop's thread")
        return UVHandle(raw: .allocate(byteCount: byteCount, alignment: 16))
    }

    /// The handle as libuv's type `T` (`uv_timer_t`, `uv_tcp_t` …: they all begin with `uv_handle_t`).
    func pointer<T>(to type: T.Type) -> UnsafeMutablePointer<T> { raw.assumingMemoryBound(to: T.self) }
    var handle: UnsafeMutablePointer<uv_handle_t> { pc_handle(raw) }
    var stream: UnsafeMutablePointer<uv_stream_t> { pc_stream(raw) }

    /// Frees the memory after a failed `uv_*_init` (libuv holds no reference to it).
    func deallocateUninitialized() {
        raw.deallocate()
    }

    /// After a successful `uv_*_init`: `handle->data` holds `owner`, retained until the close callback.
    func retain(_ owner: Owner) {
        handle.pointee.data = Unmanaged.passRetained(owner).toOpaque()
    }

    /// In a libuv callback: the owner stored by `retain`, without touching its reference count.
    static func owner(of handle: UnsafeMutableRawPointer) -> Owner {
        Unmanaged<Owner>.fromOpaque(pc_handle(handle).pointee.data).takeUnretainedValue()
    }

    /// Starts closing; `Owner.closeCallback` (→ `closed`) finishes. Call once (owners guard with `isClosing`).
    func close() {
        assertOnLoopThread()
        uv_close(handle, Owner.closeCallback)
    }

    /// The close callback's body: the owner's last event, then the memory and the +1 from `retain` go.
    static func closed(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
        let handle = handle!
        let owner = Unmanaged<Owner>.fromOpaque(handle.pointee.data).takeRetainedValue()
        owner.handleDidClose()
        UnsafeMutableRawPointer(handle).deallocate()
    }

    /// Debug builds: traps unless called on the thread running the handle's loop (or while the loop is not running).
    func assertOnLoopThread(_ function: StaticString = #function) {
        assert(Loop.owning(handle.pointee.loop).isOnLoopThread, "\(Owner.self).\(function) called off its loop's thread")
    }
}
