import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// A descriptor number this process owns outright (pipe ends, handed-over copies); closed explicitly.
public enum Descriptor {
    /// Closes `fd`, ignoring errors (the descriptor is gone either way).
    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// Marks `fd` close-on-exec, so it does not leak into processes we start later.
    public static func setCloseOnExec(_ fd: Int32) throws(SystemError) {
        let rc = pc_set_cloexec(fd)
        if rc != 0 { throw SystemError(code: rc, operation: "fcntl(\(fd), FD_CLOEXEC)") }
    }

    /// A copy of `fd` that a spawned process inherits (FD_CLOEXEC clear). Close it after spawning.
    public static func inheritableCopy(_ fd: Int32) throws(SystemError) -> Int32 {
        let copy = pc_dup_fd(fd, 1)
        if copy < 0 { throw SystemError(code: copy, operation: "dup fd \(fd)") }
        return copy
    }

    /// A pipe, both ends close-on-exec: (read, write).
    public static func pipe() throws(SystemError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        let rc = pc_pipe_cloexec(&fds)
        if rc != 0 { throw SystemError(code: rc, operation: "pipe") }
        return (fds[0], fds[1])
    }

    /// Writes one byte (a readiness signal); errors are returned, never raised (the reader may be gone).
    @discardableResult
    public static func writeByte(_ fd: Int32, _ byte: UInt8 = 0x31) -> Bool {
        var value = byte
        while true {
            let n = Glibc.write(fd, &value, 1)
            if n == 1 { return true }
            if n < 0 && errno == EINTR { continue }
            return false
        }
    }
}
