public import Policy
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Per-field validators shared by the command line and the configuration file.
///
/// Each takes the `key` to name in its message: a flag (`--idle-timeout`) or a file key
/// (`config 'listeners[1].timeouts.idle':`). The key is written verbatim before the quoted value.
public enum Validate {
    // MARK: Durations

    /// Parses `250ms`, `10s`, `2m`, `1h`, combinations in decreasing units (`1m30s`, `1h30m`), or a bare `0`,
    /// into milliseconds.
    public static func duration(_ value: String, key: String) throws(ConfigError) -> UInt64 {
        switch parseDuration(value) {
        case .some(.some(let milliseconds)): return milliseconds
        case .some(.none): throw .invalid(key, value, "is too long")
        case .none: throw .invalid(key, value, "is not a duration: use e.g. 500ms, 10s, 5m, 1h")
        }
    }

    /// A duration that must be greater than zero (a deadline that cannot be switched off).
    public static func positiveDuration(_ value: String, key: String) throws(ConfigError) -> UInt64 {
        let milliseconds = try duration(value, key: key)
        guard milliseconds > 0 else { throw .invalid(key, value, "must be greater than zero: use e.g. 10s") }
        return milliseconds
    }

    /// `nil`: not a duration; `.some(nil)`: overflows `UInt64` milliseconds.
    static func parseDuration(_ text: String) -> UInt64?? {
        if text == "0" { return .some(0) }
        let bytes = Array(text.utf8)
        var index = 0
        var total: UInt64 = 0
        var lastUnit = UInt64.max
        var overflow = false
        guard !bytes.isEmpty else { return nil }
        while index < bytes.count {
            var number: UInt64 = 0
            let digitsStart = index
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
                let (times, o1) = number.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times.addingReportingOverflow(UInt64(bytes[index] - 48))
                overflow = overflow || o1 || o2
                number = sum
                index += 1
            }
            guard index > digitsStart else { return nil }
            let unitStart = index
            while index < bytes.count, bytes[index] >= 97, bytes[index] <= 122 { index += 1 }
            let unit: UInt64
            switch String(decoding: bytes[unitStart..<index], as: UTF8.self) {
            case "d": unit = 86_400_000
            case "h": unit = 3_600_000
            case "m": unit = 60_000
            case "s": unit = 1_000
            case "ms": unit = 1
            default: return nil
            }
            guard unit < lastUnit else { return nil }  // decreasing units, each at most once
            lastUnit = unit
            let (scaled, o3) = number.multipliedReportingOverflow(by: unit)
            let (sum, o4) = total.addingReportingOverflow(scaled)
            overflow = overflow || o3 || o4
            total = sum
        }
        return overflow ? .some(nil) : .some(total)
    }

    // MARK: PROXY protocol

    /// `v2` or `off`. v1 (the text header) is not offered: it cannot carry the TLS facts.
    public static func proxyProtocol(_ value: String, key: String) throws(ConfigError) -> ProxyProtocolVersion {
        guard let version = ProxyProtocolVersion(rawValue: value) else {
            throw .invalid(key, value, "is not a PROXY protocol version: use v2 (send a PROXY v2 header to the target) or off (the default)")
        }
        return version
    }

    // MARK: Files

    /// Checks that `path` exists and is readable: a file, or (with `allowDirectory`) a directory.
    /// Errors read `--cert '/x.pem': no such file` or `…: permission denied`.
    @discardableResult
    public static func readablePath(_ path: String, key: String, allowDirectory: Bool = false) throws(ConfigError) -> String {
        if let problem = unreadable(path, allowDirectory: allowDirectory) {
            throw ConfigError(key: key, message: "\(key) \(singleQuoted(path)): \(problem)")
        }
        return path
    }

    /// Why `path` cannot be read (`no such file`, `permission denied`, …), or `nil` when it can.
    static func unreadable(_ path: String, allowDirectory: Bool) -> String? {
        guard !path.isEmpty else { return "no such file" }
        var info = stat()
        if stat(path, &info) != 0 {
            switch errno {
            case ENOENT, ENOTDIR: return "no such file"
            case EACCES: return "permission denied"
            case let code: return String(cString: strerror(code)).lowercased()
            }
        }
        let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
        if isDirectory && !allowDirectory { return "is a directory, not a file" }
        guard access(path, isDirectory ? (R_OK | X_OK) : R_OK) == 0 else { return "permission denied" }
        return nil
    }

    // MARK: Access rules

    /// One matcher; an invalid value fails with `KEY 'VALUE' is not a valid pattern: REASON`.
    public static func matcher(_ value: String, kind: Matcher.Kind, key: String) throws(ConfigError) -> Matcher {
        do {
            return try Matcher(kind: kind, value: value)
        } catch {
            throw .invalid(key, value, "is not a valid \(error.expected): \(error.reason)")
        }
    }

    // MARK: Small values

    /// `1.2` or `1.3`; 1.0 and 1.1 are refused by name.
    public static func tlsVersion(_ value: String, key: String) throws(ConfigError) -> TLSVersion {
        switch value {
        case "1.2": return .tls12
        case "1.3": return .tls13
        case "1.0", "1.1": throw .invalid(key, value, "is not allowed: use 1.2 or 1.3")
        default: throw .invalid(key, value, "is not a TLS version: use 1.2 or 1.3")
        }
    }

    /// A decimal integer in `range`; `hint` says what to write instead (`use 1-256`).
    public static func integer(_ value: String, key: String, in range: ClosedRange<Int>, hint: String) throws(ConfigError) -> Int {
        guard !value.isEmpty, value.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
            throw .invalid(key, value, "is not a number: \(hint)")
        }
        guard let number = Int(value), range.contains(number) else {
            throw .invalid(key, value, "is out of range: \(hint)")
        }
        return number
    }

    public static func logFormat(_ value: String, key: String) throws(ConfigError) -> LogFormat {
        guard let format = LogFormat(rawValue: value) else {
            throw .invalid(key, value, "is not a log format: use text or json")
        }
        return format
    }

    /// The swift-log levels, lowercase.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    public static func logLevel(_ value: String, key: String) throws(ConfigError) -> String {
        guard logLevels.contains(value) else {
            throw .invalid(key, value, "is not a log level: use trace, debug, info, notice, warning, error or critical")
        }
        return value
    }

    /// Number of worker loops when none is given: the active CPUs, within 1...256.
    public static var defaultWorkers: Int {
        min(max(ProcessInfo.processInfo.activeProcessorCount, 1), 256)
    }
}
