import CLibUV
import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

// The process-level plumbing of systemd integration and of the SIGUSR2 restart: adopting inherited listening
// sockets, passing them to a new process, and the notify datagram socket. Policy (which fd serves which
// listener, what to tell systemd when) lives in Proxy.

extension ListeningSocket {
    /// Takes ownership of an inherited descriptor (socket activation, restart handover) after checking that it
    /// is a listening IPv4/IPv6 TCP socket (or, with `allowUnix`, a Unix stream socket); makes it non-blocking
    /// and close-on-exec. Returns it with its bound address. Throws without closing `fd` (the caller decides).
    public static func adopt(fd: Int32, allowUnix: Bool = false) throws(UVError) -> (socket: ListeningSocket, address: SocketAddress) {
        var bound = sockaddr_storage()
        let rc = pc_adopt_listening_socket(fd, allowUnix ? 1 : 0, &bound)
        if rc != 0 {
            let why: String
            switch -rc {
            case ENOTSOCK: why = "is not a socket"
            case ESOCKTNOSUPPORT: why = "is not a stream (TCP) socket"
            case EAFNOSUPPORT: why = "is not an IPv4/IPv6 socket"
            case EINVAL: why = "is not listening"
            default: why = "cannot be inspected"
            }
            throw UVError(code: rc, operation: "inherited fd \(fd) \(why)")
        }
        let address = SocketAddress(storage: bound)
        if Int32(bound.ss_family) == AF_UNIX { return (ListeningSocket(fd: fd, port: 0, isUnix: true), address) }
        return (ListeningSocket(fd: fd, port: address.port), address)
    }

    /// Another descriptor for the same socket (one accept queue), close-on-exec unless `inheritable`.
    public func duplicate(inheritable: Bool = false) throws(UVError) -> ListeningSocket {
        let copy = pc_dup_fd(fd, inheritable ? 1 : 0)
        if copy < 0 { throw UVError(code: copy, operation: "dup listening socket fd \(fd)") }
        return ListeningSocket(fd: copy, port: port)
    }
}

/// A descriptor number this process owns outright (pipe ends, handed-over copies); closed explicitly.
public enum Descriptor {
    /// Closes `fd`, ignoring errors (the descriptor is gone either way).
    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// Marks `fd` close-on-exec, so it does not leak into processes we start later.
    public static func setCloseOnExec(_ fd: Int32) throws(UVError) {
        let rc = pc_set_cloexec(fd)
        if rc != 0 { throw UVError(code: rc, operation: "fcntl(\(fd), FD_CLOEXEC)") }
    }

    /// A copy of `fd` that a spawned process inherits (FD_CLOEXEC clear). Close it after spawning.
    public static func inheritableCopy(_ fd: Int32) throws(UVError) -> Int32 {
        let copy = pc_dup_fd(fd, 1)
        if copy < 0 { throw UVError(code: copy, operation: "dup fd \(fd)") }
        return copy
    }

    /// A pipe, both ends close-on-exec: (read, write).
    public static func pipe() throws(UVError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        let rc = pc_pipe_cloexec(&fds)
        if rc != 0 { throw UVError(code: rc, operation: "pipe") }
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

/// Process-level helpers for the restart: this executable, the environment, spawning.
public enum ProcessControl {
    /// The running executable's path, resolved through /proc/self/exe. When the file was replaced since
    /// (a package upgrade renames a new binary over it), the kernel appends " (deleted)": the path still names
    /// where the new binary now lives, which is what a restart should run.
    public static func executablePath() -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        var path = buffer.withUnsafeBufferPointer { pointer in
            String(decoding: UnsafeRawBufferPointer(start: pointer.baseAddress, count: n), as: UTF8.self)
        }
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path
    }

    /// The current environment as NAME=value strings.
    public static func environment() -> [String] {
        var entries: [String] = []
        var cursor = pc_environ()
        while let pointer = cursor, let entry = pointer.pointee {
            entries.append(String(cString: entry))
            cursor = pointer + 1
        }
        return entries
    }

    public static func getenv(_ name: String) -> String? {
        Glibc.getenv(name).map { String(cString: $0) }
    }

    /// Removes a variable so processes started later do not see it. Call only before other threads start
    /// or while none reads the environment (glibc's setenv/getenv are not thread-safe).
    public static func unsetenv(_ name: String) {
        _ = Glibc.unsetenv(name)
    }

    public static var pid: Int32 { getpid() }

    /// Starts `path` with `arguments` (argv, including argv[0]) and `environment`; it inherits exactly the
    /// descriptors without FD_CLOEXEC (see `Descriptor.inheritableCopy`). Returns the new pid.
    public static func spawn(path: String, arguments: [String], environment: [String]) throws(UVError) -> Int32 {
        func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] {
            strings.map { strdup($0) } + [nil]
        }
        let argv = cStrings(arguments)
        let envp = cStrings(environment)
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: Int32 = 0
        let rc = pc_spawn(path, argv, envp, &pid)
        if rc != 0 { throw UVError(code: rc, operation: "spawn '\(path)'") }
        return pid
    }

    /// Reaps `pid` if it has exited: its exit code (128+n for signal n), or nil while it runs.
    public static func reap(_ pid: Int32) -> Int32? {
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        guard rc == pid else { return nil }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// Sends `signal` to `pid` (our own child only).
    public static func kill(_ pid: Int32, signal: Int32) {
        _ = Glibc.kill(pid, signal)
    }

    /// CLOCK_MONOTONIC in microseconds (what systemd's MONOTONIC_USEC expects).
    public static var monotonicMicroseconds: UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }
}

/// An unbound AF_UNIX datagram socket that sends to one address ("/path" or "@abstract"), never blocking.
/// Owns its descriptor; closed in `deinit`.
public final class UnixDatagramSender {
    private let fd: Int32
    public let address: String

    public init(address: String) throws(UVError) {
        let fd = pc_unix_dgram_socket()
        if fd < 0 { throw UVError(code: fd, operation: "socket(AF_UNIX, SOCK_DGRAM)") }
        self.fd = fd
        self.address = address
    }

    deinit {
        _ = Glibc.close(fd)
    }

    /// Sends one datagram; returns the error instead of throwing (callers treat it as non-fatal).
    public func send(_ message: String) -> UVError? {
        var bytes = Array(message.utf8)
        let rc = bytes.withUnsafeMutableBytes { pc_unix_dgram_send(fd, address, $0.baseAddress, $0.count) }
        return rc == 0 ? nil : UVError(code: rc, operation: "send to '\(address)'")
    }
}
