import Policy
import Yams

/// A listener's `timeouts` section.
extension ConfigReader {
    static let timeoutKeys = ["handshake", "connect", "idle", "close", "max-lifetime"]

    static let timeoutHints = ["shutdown": "it is process-wide: set the top-level shutdown-timeout"]

    /// The connection deadlines, defaults for what is not written; `shutdown` is the top-level `shutdown-timeout`.
    /// `nil` when the section is not a mapping (reported). A bad value is reported and its default kept: the
    /// configuration is rejected anyway.
    func timeouts(_ listener: Fields, shutdownTimeout: UInt64) -> Timeouts? {
        let defaults = Timeouts.defaults
        var timeouts = Timeouts(handshake: defaults.handshake, connect: defaults.connect, idle: defaults.idle,
                                close: defaults.close, shutdown: shutdownTimeout,
                                maxLifetime: defaults.maxLifetime)
        guard let section = optionalSection(listener, "timeouts", known: Self.timeoutKeys, hints: Self.timeoutHints) else {
            return isAbsent(listener, "timeouts") ? timeouts : nil
        }
        timeouts.handshake = duration(section, "handshake", positive: true) ?? timeouts.handshake
        timeouts.connect = duration(section, "connect", positive: true) ?? timeouts.connect
        timeouts.idle = duration(section, "idle", positive: false) ?? timeouts.idle
        timeouts.close = duration(section, "close", positive: false) ?? timeouts.close
        timeouts.maxLifetime = duration(section, "max-lifetime", positive: false) ?? timeouts.maxLifetime
        return timeouts
    }
}
