import CLibUV

/// Watches a directory for changes to the files in it (creation, modification, rename-replace by editors
/// and by atomic-swap tools). Watching the directory rather than the file survives the file being replaced.
///
/// Ownership: a `UVHandle` (retained in the handle's `data` until the close callback).
/// - Warning: call only on the loop's thread.
public final class DirectoryWatcher: UVHandleOwner {
    private let uv: UVHandle<DirectoryWatcher>
    private var action: ((String) -> Void)?
    private var isClosing = false
    public let path: String

    static let closeCallback: uv_close_cb = { UVHandle<DirectoryWatcher>.closed($0) }

    /// `action` receives the changed entry's name (relative to `path`).
    public init(loop: Loop, path: String, _ action: @escaping (String) -> Void) throws(UVError) {
        self.path = path
        self.action = action
        uv = .allocate(on: loop, UV_FS_EVENT)
        let handle = uv.pointer(to: uv_fs_event_t.self)
        var rc = uv_fs_event_init(loop.raw, handle)
        if rc != 0 {
            uv.deallocateUninitialized()
            throw UVError(code: rc, operation: "uv_fs_event_init")
        }
        uv.retain(self)
        rc = uv_fs_event_start(handle, { handle, filename, _, status in
            guard status == 0 else { return }
            UVHandle<DirectoryWatcher>.owner(of: handle!).action?(filename.map { String(cString: $0) } ?? "")
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
        uv.close()
    }
}
