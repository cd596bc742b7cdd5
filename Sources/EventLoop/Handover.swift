import CLibUV
import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

// Listening sockets across processes (systemd socket activation, the SIGUSR2 restart): adopting an inherited
// one, duplicating one to pass on. Descriptors, spawning and the notify socket are in the ProcessControl module;
// policy (which fd serves which listener, what to tell systemd when) lives in Proxy.

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
        return ListeningSocket(fd: copy, port: port, isUnix: isUnix)
    }
}
