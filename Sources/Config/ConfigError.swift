import Policy

/// One configuration problem, as one line that names the flag or key, quotes the value and says the fix:
/// `--idle-timeout '10 sec' is not a duration: use e.g. 500ms, 10s, 5m, 1h`, or for a configuration file
/// `portcullis.yaml:12: listeners[0].timeouts.idle: '10 sec' is not a duration: use e.g. 500ms, 10s, 5m, 1h`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The flag or key path the problem is about (`--idle-timeout`, `listeners[1].timeouts.idle`);
    /// `nil` for problems that span several (no access rule at all) or none (a YAML syntax error).
    public var key: String?
    /// The whole line.
    public var message: String

    public init(key: String?, message: String) {
        self.key = key
        self.message = message
    }

    public var description: String { message }

    /// `KEY 'VALUE' PROBLEM`, e.g. `--workers '0' is out of range: use 1-256`.
    public static func invalid(_ key: String, _ value: String, _ problem: String) -> ConfigError {
        ConfigError(key: key, message: "\(key) \(singleQuoted(value)) \(problem)")
    }

    /// `KEY is required: WHY`.
    public static func missing(_ key: String, _ why: String) -> ConfigError {
        ConfigError(key: key, message: "\(key) is required: \(why)")
    }
}
