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

/// Limits on TLS handshakes in progress (key `limits`), against floods of slow or failing handshakes. Each
/// worker applies them to its own connections; 0 turns a limit off.
public struct HandshakeLimits: Sendable, Equatable {
    /// Handshakes in progress per worker; at the limit, a new connection closes the oldest one (a slow
    /// handshake is the likelier attacker: a real client finishes in milliseconds).
    public var inProgress: Int
    /// Handshakes in progress per worker from one client address; beyond it, new connections from that
    /// address are refused. Off by default: NAT and VPNs put many clients behind one address.
    public var perSource: Int
    /// New connections per second per worker from one client address (a token bucket of that size).
    public var ratePerSource: Int

    public init(inProgress: Int = HandshakeLimits.defaultInProgress, perSource: Int = 0, ratePerSource: Int = 0) {
        self.inProgress = inProgress
        self.perSource = perSource
        self.ratePerSource = ratePerSource
    }

    public static let defaultInProgress = 1024
}

public enum LogFormat: String, Sendable, Equatable {
    case text
    case json
}

/// Connection deadlines in milliseconds; 0 switches off `idle`, `close` (no half-close wait) and `maxLifetime`.
public struct Timeouts: Sendable, Equatable {
    public var handshake: UInt64
    public var connect: UInt64
    public var idle: UInt64
    public var close: UInt64
    public var shutdown: UInt64
    /// A connection is closed (gracefully) this long after its accept, however busy it is.
    public var maxLifetime: UInt64

    public init(handshake: UInt64, connect: UInt64, idle: UInt64, close: UInt64, shutdown: UInt64, maxLifetime: UInt64 = 0) {
        self.handshake = handshake
        self.connect = connect
        self.idle = idle
        self.close = close
        self.shutdown = shutdown
        self.maxLifetime = maxLifetime
    }

    /// handshake 10s, connect 10s, idle off, close 60s, shutdown 5m, max-lifetime off.
    public static let defaults = Timeouts(handshake: 10_000, connect: 10_000, idle: 0, close: 60_000, shutdown: 300_000)
}
