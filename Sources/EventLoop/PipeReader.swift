import CLibUV

/// Reads a pipe on a loop: `onData` for each chunk's byte count, `onEnd` once at EOF or error.
///
/// Ownership: takes the descriptor (libuv closes it with the handle). A `UVHandle` (retained in the handle's
/// `data` until the close callback), as for the other handles.
/// - Warning: call only on the loop's thread.
public final class PipeReader: UVHandleOwner {
    private let uv: UVHandle<PipeReader>
    private unowned let loop: Loop
    private var onData: ((Int) -> Void)?
    private var onEnd: (() -> Void)?
    private var isClosing = false

    static let closeCallback: uv_close_cb = { UVHandle<PipeReader>.closed($0) }

    public init(loop: Loop, fd: Int32, onData: @escaping (Int) -> Void, onEnd: @escaping () -> Void) throws(UVError) {
        self.loop = loop
        self.onData = onData
        self.onEnd = onEnd
        uv = .allocate(on: loop, UV_NAMED_PIPE)
        let handle = uv.pointer(to: uv_pipe_t.self)
        var rc = uv_pipe_init(loop.raw, handle, 0)
        if rc != 0 {
            uv.deallocateUninitialized()
            throw UVError(code: rc, operation: "uv_pipe_init")
        }
        uv.retain(self)
        rc = uv_pipe_open(handle, fd)
        if rc == 0 {
            rc = uv_read_start(uv.stream, { handle, _, buf in
                let reader = UVHandle<PipeReader>.owner(of: handle!)
                buf!.pointee = uv_buf_init(reader.loop.readBuffer.baseAddress!.assumingMemoryBound(to: CChar.self),
                                           UInt32(reader.loop.readBuffer.count))
            }, { stream, nread, _ in
                UVHandle<PipeReader>.owner(of: stream!).didRead(nread)
            })
        }
        if rc != 0 {
            close()
            throw UVError(code: rc, operation: "read pipe fd \(fd)")
        }
    }

    private func didRead(_ nread: Int) {
        if nread > 0 {
            onData?(nread)
        } else if nread < 0 {
            let end = onEnd
            onEnd = nil
            onData = nil
            uv_read_stop(uv.stream)
            end?()
        }
    }

    /// Stops reading and closes the pipe (and its descriptor).
    public func close() {
        guard !isClosing else { return }
        isClosing = true
        onData = nil
        onEnd = nil
        uv.close()
    }
}
