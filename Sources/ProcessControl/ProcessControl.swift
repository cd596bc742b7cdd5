import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

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
    public static func spawn(path: String, arguments: [String], environment: [String]) throws(SystemError) -> Int32 {
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
        if rc != 0 { throw SystemError(code: rc, operation: "spawn '\(path)'") }
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

// MARK: descriptor limit

extension ProcessControl {
    /// The soft limit on open descriptors (`RLIMIT_NOFILE`).
    public static var descriptorLimit: UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        return UInt64(limit.rlim_cur)
    }

    /// Raises the soft descriptor limit to the hard one (systemd and most shells start services at 1024, far
    /// below what a proxy with two descriptors per connection needs). Returns the limits before and after.
    @discardableResult
    public static func raiseDescriptorLimit() -> (before: UInt64, after: UInt64) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        let before = UInt64(limit.rlim_cur)
        guard limit.rlim_cur < limit.rlim_max else { return (before, before) }
        limit.rlim_cur = limit.rlim_max
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (before, before) }
        return (before, UInt64(limit.rlim_max))
    }
}
