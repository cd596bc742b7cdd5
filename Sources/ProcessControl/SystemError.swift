#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: the negative errno the CSystemShims functions return, and the operation.
///
/// The same codes as EventLoop's `UVError` (libuv's codes are -errno on Unix), without depending on libuv.
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    /// `-errno`.
    public let code: Int32
    public let operation: String

    public init(code: Int32, operation: String) {
        self.code = code
        self.operation = operation
    }

    /// The C library's sentence, e.g. `Connection refused`.
    public var message: String { String(cString: strerror(-code)) }

    public var description: String { "\(operation): \(message) (errno \(-code))" }
}
