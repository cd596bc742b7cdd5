public import Logging
import Policy
import ProcessControl

#if canImport(Glibc)
import Glibc
#endif

/// How log lines are written: `text` for people, `json` (one object per line) for collectors.
public enum LogStyle: Sendable { case text, json }

/// Where log lines go: stderr, or the local syslog (ghostunnel's `--syslog`): one datagram per line, RFC 3164
/// as glibc's syslog(3) writes it (`<PRI>Mmm dd hh:mm:ss ident[pid]: `) with ident `portcullis`, facility
/// daemon and the line's severity, then the same text stderr would get.
public struct LogDestination: Sendable {
    let syslog: SyslogSocket?

    public static let stderr = LogDestination(syslog: nil)

    /// The local syslog (`/dev/log`), connected now; the error says why not (no daemon listens there).
    public static func localSyslog() throws(StartupError) -> LogDestination {
        do {
            return LogDestination(syslog: try SyslogSocket())
        } catch {
            throw StartupError("\(error)")
        }
    }
}

/// A swift-log handler writing one line per event to stderr with a single `write(2)`, or to syslog.
///
/// Messages are constant; data travels in metadata with dotted keys (`conn.peer`, `tls.version`, …).
/// In JSON every metadata value is a string, so collectors need no per-key schema.
public struct LineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let style: LogStyle
    let label: String
    let destination: LogDestination

    public init(label: String, style: LogStyle, level: Logger.Level, destination: LogDestination = .stderr) {
        self.label = label
        self.style = style
        self.logLevel = level
        self.destination = destination
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let keys = merged.keys.sorted()
        var line: String
        switch style {
        case .json:
            line = "{\"ts\":\"\(timestamp())\",\"level\":\"\(event.level)\",\"msg\":\(jsonString(event.message.description))"
            for key in keys {
                line += ",\(jsonString(key)):\(jsonString(render(merged[key]!)))"
            }
            line += "}\n"
        case .text:
            line = "\(timestamp()) \(event.level) \(event.message)"
            for key in keys {
                let value = render(merged[key]!)
                let needsQuotes = value.isEmpty || value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" })
                line += " \(key)=" + (needsQuotes ? jsonString(value) : value)
            }
            line += "\n"
        }
        if let socket = destination.syslog {
            line.removeLast()  // syslog messages carry no newline
            // A line the daemon cannot take now (its queue is full) goes to stderr rather than nowhere.
            if socket.send(Array((syslogHeader(event.level) + line).utf8)) == nil { return }
            line += "\n"
        }
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    }

    private func render(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let s): return s
        case .stringConvertible(let c): return c.description
        case .array(let items): return items.map(render).joined(separator: ",")
        case .dictionary(let d): return d.keys.sorted().map { "\($0)=\(render(d[$0]!))" }.joined(separator: ",")
        }
    }
}

/// Facility daemon (3), as ghostunnel logs.
private let syslogFacility: Int32 = 3

/// The syslog severity of a log level (RFC 5424 table 2).
func syslogSeverity(_ level: Logger.Level) -> Int32 {
    switch level {
    case .trace, .debug: return 7
    case .info: return 6
    case .notice: return 5
    case .warning: return 4
    case .error: return 3
    case .critical: return 2
    }
}

/// `<PRI>Mmm dd hh:mm:ss portcullis[pid]: ` — what glibc's syslog(3) puts before a message (local time).
func syslogHeader(_ level: Logger.Level) -> String {
    var seconds = time(nil)
    var parts = tm()
    localtime_r(&seconds, &parts)
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    let day = parts.tm_mday < 10 ? " \(parts.tm_mday)" : "\(parts.tm_mday)"
    let stamp = "\(months[Int(parts.tm_mon)]) \(day) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    return "<\(syslogFacility * 8 + syslogSeverity(level))>\(stamp) portcullis[\(getpid())]: "
}

/// RFC 3339 UTC timestamp of now, with milliseconds (log lines).
func timestamp() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return iso8601(Int64(now.tv_sec), milliseconds: Int32(now.tv_nsec / 1_000_000))
}

/// RFC 3339 UTC timestamp: `2026-11-22T16:45:00Z`, or `2026-11-22T16:45:00.123Z` with `milliseconds`.
func iso8601(_ epoch: Int64, milliseconds: Int32? = nil) -> String {
    var seconds = time_t(epoch)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func pad(_ value: Int32, _ width: Int = 2) -> String {
        let s = String(value)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
    let fraction = milliseconds.map { "." + pad($0, 3) } ?? ""
    return "\(parts.tm_year + 1900)-\(pad(parts.tm_mon + 1))-\(pad(parts.tm_mday))T"
        + "\(pad(parts.tm_hour)):\(pad(parts.tm_min)):\(pad(parts.tm_sec))\(fraction)Z"
}

/// Bounds how many lines of one kind a loop writes: a scan or a flood of failing handshakes must not
/// flood the log. A token bucket per worker; suppressed lines are counted and reported with the next one, or
/// by the worker's sweep (`takeSuppressed`) when no next one comes (a flood that stopped).
/// - Warning: confined to one loop thread.
final class LogRateLimiter {
    private let ratePerSecond: Double
    private let burst: Double
    private var tokens: Double
    private var lastRefill: UInt64
    private(set) var suppressed = 0

    init(ratePerSecond: Double = 10, burst: Double = 20, now: UInt64) {
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        self.tokens = burst
        self.lastRefill = now
    }

    /// Returns the number of lines suppressed since the last admitted one, or nil to suppress this one.
    func admit(now: UInt64) -> Int? {
        let elapsed = Double(now &- lastRefill) / 1000
        lastRefill = now
        tokens = min(burst, tokens + elapsed * ratePerSecond)
        guard tokens >= 1 else {
            suppressed += 1
            return nil
        }
        tokens -= 1
        defer { suppressed = 0 }
        return suppressed
    }

    /// The lines suppressed and not yet reported, now reported by the caller (nil: none).
    func takeSuppressed() -> Int? {
        guard suppressed > 0 else { return nil }
        defer { suppressed = 0 }
        return suppressed
    }
}
