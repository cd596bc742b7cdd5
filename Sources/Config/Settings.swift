public import Policy

extension TLSVersion {
    /// As a configuration file writes it: `1.2`, `1.3`.
    public var configValue: String {
        switch self {
        case .tls12: "1.2"
        case .tls13: "1.3"
        }
    }
}

public enum LogFormat: String, Sendable, Equatable {
    case text
    case json
}

/// Connection deadlines in milliseconds; 0 switches off `idle` and `close` (no half-close wait).
public struct Timeouts: Sendable, Equatable {
    public var handshake: UInt64
    public var connect: UInt64
    public var idle: UInt64
    public var close: UInt64
    public var shutdown: UInt64

    public init(handshake: UInt64, connect: UInt64, idle: UInt64, close: UInt64, shutdown: UInt64) {
        self.handshake = handshake
        self.connect = connect
        self.idle = idle
        self.close = close
        self.shutdown = shutdown
    }

    /// handshake 10s, connect 10s, idle off, close 60s, shutdown 5m.
    public static let defaults = Timeouts(handshake: 10_000, connect: 10_000, idle: 0, close: 60_000, shutdown: 300_000)
}
