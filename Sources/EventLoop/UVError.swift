import CLibUV

/// A libuv failure: the negative return code and the operation that produced it.
public struct UVError: Error, CustomStringConvertible, Equatable, Sendable {
    public let code: Int32
    public let operation: String

    public init(code: Int32, operation: String) {
        self.code = code
        self.operation = operation
    }

    /// libuv's short name, e.g. `ECONNREFUSED`.
    public var name: String { String(cString: uv_err_name(code)) }
    /// libuv's sentence, e.g. `connection refused`.
    public var message: String { String(cString: uv_strerror(code)) }

    public var description: String { "\(operation): \(message) (\(name))" }

    public var isEOF: Bool { code == UV_EOF.rawValue }
    public var isCanceled: Bool { code == UV_ECANCELED.rawValue }
    public var isAddressInUse: Bool { code == UV_EADDRINUSE.rawValue }
    public var isConnectionReset: Bool { code == UV_ECONNRESET.rawValue || code == UV_EPIPE.rawValue }

    /// Throws when `rc` is a libuv error code (negative).
    @discardableResult
    static func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws(UVError) -> Int32 {
        if rc < 0 { throw UVError(code: rc, operation: operation()) }
        return rc
    }
}

/// The libuv version linked at run time.
public var libuvVersion: String { String(cString: uv_version_string()) }
