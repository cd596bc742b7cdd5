import CLibUV
import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 socket address.
public struct SocketAddress: Sendable, CustomStringConvertible {
    var storage: sockaddr_storage

    /// From an IP literal and a port.
    public init(ip: String, port: UInt16) throws(UVError) {
        storage = sockaddr_storage()
        let rc = pc_sockaddr_make(ip, Int32(port), &storage)
        if rc != 0 { throw UVError(code: rc, operation: "address '\(ip)'") }
    }

    /// Resolves a host name (blocking; for startup and reload only).
    public static func resolve(host: String, port: UInt16) throws(UVError) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        if rc != 0 {
            throw UVError(code: UV_EAI_NONAME.rawValue, operation: "resolve '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(result) }
        var addresses: [SocketAddress] = []
        var cursor = result
        while let info = cursor {
            if let sa = info.pointee.ai_addr, info.pointee.ai_family == AF_INET || info.pointee.ai_family == AF_INET6 {
                var storage = sockaddr_storage()
                withUnsafeMutableBytes(of: &storage) { dst in
                    dst.copyMemory(from: UnsafeRawBufferPointer(start: sa, count: Int(info.pointee.ai_addrlen)))
                }
                addresses.append(SocketAddress(storage: storage))
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }

    init(storage: sockaddr_storage) {
        self.storage = storage
    }

    /// The address bytes in network order: 4 for IPv4, 16 for IPv6.
    public var ipBytes: [UInt8] {
        var copy = storage
        return withUnsafeBytes(of: &copy) { raw in
            if Int32(storage.ss_family) == AF_INET6 {
                return Array(raw[MemoryLayout<sockaddr_in6>.offset(of: \sockaddr_in6.sin6_addr)!...].prefix(16))
            }
            return Array(raw[MemoryLayout<sockaddr_in>.offset(of: \sockaddr_in.sin_addr)!...].prefix(4))
        }
    }

    /// A Unix socket address (then `ipBytes` and `port` mean nothing).
    public var isUnix: Bool { Int32(storage.ss_family) == AF_UNIX }

    /// 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104; false for a Unix socket.
    public var isLoopback: Bool {
        guard !isUnix else { return false }
        let ip = ipBytes
        if ip.count == 4 { return ip[0] == 127 }
        if ip[0..<15].allSatisfy({ $0 == 0 }) && ip[15] == 1 { return true }
        return ip[0..<10].allSatisfy({ $0 == 0 }) && ip[10] == 0xFF && ip[11] == 0xFF && ip[12] == 127
    }

    public var port: UInt16 {
        var copy = storage
        return withUnsafeBytes(of: &copy) { raw in
            // sin_port and sin6_port sit at the same offset, in network order.
            let offset = MemoryLayout<sockaddr_in>.offset(of: \sockaddr_in.sin_port)!
            return UInt16(raw[offset]) << 8 | UInt16(raw[offset + 1])
        }
    }

    public var description: String {
        var copy = storage
        var buffer = [CChar](repeating: 0, count: 128)  // room for "unix:" and a 107-byte path
        let rc = withUnsafePointer(to: &copy) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pc_sockaddr_format($0, &buffer, buffer.count) }
        }
        return rc == 0 ? buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : "?"
    }
}

/// A bound, listening socket file descriptor, ready to hand to a loop's `TCPListener`.
public struct ListeningSocket: Sendable {
    public let fd: Int32
    public let port: UInt16
    /// A Unix stream socket (then `port` is 0).
    public var isUnix = false

    /// Binds and listens. With `reusePort`, several sockets can share the port (one per worker loop).
    public static func bind(ip: String, port: UInt16, backlog: Int32 = 1024, reusePort: Bool) throws(UVError) -> ListeningSocket {
        var bound: Int32 = 0
        let fd = pc_listen_socket(ip, Int32(port), backlog, reusePort ? 1 : 0, &bound)
        if fd < 0 {
            // pc_listen_socket returns -errno; libuv codes are -errno on Unix.
            throw UVError(code: fd, operation: "listen on \(ip.contains(":") ? "[\(ip)]" : ip):\(port)")
        }
        return ListeningSocket(fd: fd, port: UInt16(bound))
    }

    /// Binds and listens on a Unix stream socket; a stale socket file left by a crash is replaced.
    public static func bindUnix(path: String, backlog: Int32 = 128) throws(UVError) -> ListeningSocket {
        let fd = pc_listen_unix(path, backlog)
        if fd < 0 { throw UVError(code: fd, operation: "listen on unix:\(path)") }
        return ListeningSocket(fd: fd, port: 0, isUnix: true)
    }

    /// Closes the descriptor (when it was never handed to a loop).
    public func close() {
        _ = Glibc.close(fd)
    }
}

/// The socket file a Unix listening socket was bound to, identified by device and inode, so that only that
/// very file is removed: after a restart or a crash another process may have bound its own at the same path.
public struct UnixSocketFile: Sendable, Equatable {
    public let path: String
    let device: UInt64
    let inode: UInt64

    /// The socket file now at `path`; nil when there is none (or something else is there).
    public init?(path: String) {
        var device: UInt64 = 0
        var inode: UInt64 = 0
        guard pc_socket_file_identity(path, &device, &inode) == 0 else { return nil }
        self.path = path
        self.device = device
        self.inode = inode
    }

    /// Removes the file if it is still this one. Returns whether it did.
    @discardableResult
    public func remove() -> Bool {
        pc_remove_socket_file(path, device, inode) == 0
    }
}
