import Policy
import Yams

/// Turns the YAML node tree of a configuration file into a `PortcullisConfiguration`.
///
/// The tree is walked by hand (not `Codable`) so that every problem names its key path and line. Problems are
/// collected as the walk goes and the earliest in the file is thrown, as one line:
/// `portcullis.yaml:14: listeners[1].policy.rules[0].uri: '*spiffe' is not a valid pattern: …`.
/// A value that failed is left out of later checks, so one mistake never causes a second message.
final class ConfigReader {
    let source: String
    let baseDirectory: String
    let checkFiles: Bool
    /// Set when the tree is a command line's (`KeyTree`): messages then name flags, not lines and key paths.
    let flags: KeyTree?
    private(set) var problems: [(line: Int, column: Int, error: ConfigError)] = []

    init(source: String, baseDirectory: String, checkFiles: Bool) {
        self.source = source
        self.baseDirectory = baseDirectory
        self.checkFiles = checkFiles
        self.flags = nil
    }

    /// A reader for a command line's flags; relative paths start at `baseDirectory` (the working directory).
    init(flags: KeyTree, baseDirectory: String) {
        self.source = "the command line"
        self.baseDirectory = baseDirectory
        self.checkFiles = true
        self.flags = flags
    }

    /// Validates a command line's key tree: the same walk and checks as a file.
    func readFlags() throws(ConfigError) -> PortcullisConfiguration {
        guard let flags else { preconditionFailure("not a command-line reader") }
        return try finish(configuration(flags.root))
    }

    func read(_ yaml: String) throws(ConfigError) -> PortcullisConfiguration {
        let root = try compose(yaml)
        guard let root, !isNull(root) else {
            throw ConfigError(key: nil, message: "\(location(line: 1)) the file is empty: add a 'listeners' list (see docs/CONFIG.md)")
        }
        return try finish(configuration(root))
    }

    private func finish(_ configuration: PortcullisConfiguration?) throws(ConfigError) -> PortcullisConfiguration {
        // The earliest problem in the file; among problems at one spot, the first reported.
        if let first = problems.indices.min(by: { (problems[$0].line, problems[$0].column, $0) < (problems[$1].line, problems[$1].column, $1) }) {
            throw problems[first].error
        }
        guard let configuration else { preconditionFailure("configuration file rejected without a reported problem") }
        return configuration
    }

    // MARK: Problems

    /// Runs a `Validate` function with the key `SUBJECT:`; reports its error at `node`.
    func validate<Value>(_ node: Node, _ path: String, _ body: (String) throws(ConfigError) -> Value) -> Value? {
        do {
            return try body(subject(path) + ":")
        } catch {
            report(node, path, error.message)
            return nil
        }
    }

    func reportMissing(_ f: Fields, _ name: String, _ why: String) {
        guard !f.rejectedKeys else { return }
        if flags != nil {
            report(f.node, f.child(name), "\(subject(f.child(name))) is required: \(why)")
        } else {
            report(f.node, f.child(name), "\(f.path.isEmpty ? "" : f.path + ": ")missing required key \(singleQuoted(name)): \(why)")
        }
    }

    /// Reports `SUBJECT: text` about `path` (see `subject`).
    func problem(_ node: Node, _ path: String, _ text: String) {
        report(node, path, "\(subject(path)): \(text)")
    }

    /// Reports a whole message about `key`.
    func report(_ node: Node, _ key: String, _ message: String) {
        if let flags {
            // The order of the flag table: the first problem in it is the one shown.
            problems.append((flagRank(key, flags), 0, ConfigError(key: flags.writtenBy[key]?.name ?? flag(for: key)?.name, message: message)))
            return
        }
        let mark = node.mark
        let line = mark?.line ?? 1
        problems.append((line, mark?.column ?? 1, ConfigError(key: key.isEmpty ? nil : key, message: "\(location(line: line)) \(message)")))
    }

    func location(line: Int) -> String { "\(escapedForLog(source)):\(line):" }

    // MARK: Names

    /// How a message names the key at `path`: the path in a file (`listeners[0].timeouts.idle`), the flag and
    /// its key on a command line (`--idle-timeout (config key timeouts.idle)`).
    func subject(_ path: String) -> String {
        guard flags != nil else { return path }
        guard let flag = flag(for: path) else { return "config key " + relativeKey(path) }
        return "\(flag.name) (config key \(relativeKey(path)))"
    }

    /// How a fix names a setting: `file` in a file (`unsafe-target: true`), the flag that sets `path` on a
    /// command line (`--unsafe-target`).
    func setting(_ path: String, file: String) -> String {
        flags == nil ? file : flag(for: path)?.name ?? relativeKey(path)
    }

    /// ` (line 12)` after a reference to another setting; nothing on a command line.
    func onLine(_ node: Node) -> String {
        flags == nil ? " (line \(line(node)))" : ""
    }

    /// The flag for a key path of the command line's tree: the one that wrote it, or the one that would.
    func flag(for path: String) -> ConfigFlag? {
        guard let flags else { return nil }
        if let flag = flags.writtenBy[path] { return flag }
        return FlagTable.flags(for: flags.mode).first { $0.path() == path && $0.form == .value }
            ?? FlagTable.flags(for: flags.mode).first { $0.path() == path }
    }

    /// `listeners[0].tls.cert` → `tls.cert`; process-wide keys stay as they are.
    func relativeKey(_ path: String) -> String {
        path.hasPrefix("listeners[0].") ? String(path.dropFirst("listeners[0].".count)) : path
    }

    /// Position in the flag table of the flag for `path`, or of the first flag below it.
    private func flagRank(_ path: String, _ flags: KeyTree) -> Int {
        let table = FlagTable.all
        if let flag = flag(for: path), let index = table.firstIndex(of: flag) { return index }
        let below = table.firstIndex { flag in
            let full = flag.path()
            return full.hasPrefix(path + ".") || full.hasPrefix(path + "[")
        }
        return below ?? table.count
    }

    func line(_ node: Node) -> Int { node.mark?.line ?? 1 }
}
