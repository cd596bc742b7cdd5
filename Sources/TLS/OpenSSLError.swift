import COpenSSL

/// A failed OpenSSL call: the operation and every reason drained from the thread's error queue.
public struct OpenSSLError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let reasons: [String]

    public var description: String {
        reasons.isEmpty ? operation : "\(operation): \(reasons.joined(separator: "; "))"
    }

    /// Drains the calling thread's error queue (it is per thread; stale entries would confuse the next call).
    static func drain(_ operation: String) -> OpenSSLError {
        OpenSSLError(operation: operation, reasons: drainReasons())
    }

    static func drainReasons() -> [String] {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            if let reason = ERR_reason_error_string(code) {
                reasons.append(String(cString: reason))
            } else {
                reasons.append("error \(code)")
            }
        }
        return reasons
    }

    static func clearQueue() {
        ERR_clear_error()
    }
}

/// Why a certificate, key or CA file could not be loaded; the caller adds the flag or key name.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    public enum Item: Sendable { case certificate, key, keyPassphrase, keystore, keystorePassword, caBundle, crl, other }
    public let item: Item
    public let path: String
    public let reason: String

    /// `'PATH': reason`, or the reason alone when it names its file itself (then `path` is empty).
    public var description: String { path.isEmpty ? reason : "'\(path)': \(reason)" }
}

/// The OpenSSL version linked at run time.
public var openSSLVersion: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }
