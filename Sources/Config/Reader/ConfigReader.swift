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
    private(set) var problems: [(line: Int, column: Int, error: ConfigError)] = []

    init(source: String, baseDirectory: String, checkFiles: Bool) {
        self.source = source
        self.baseDirectory = baseDirectory
        self.checkFiles = checkFiles
    }

    func read(_ yaml: String) throws(ConfigError) -> PortcullisConfiguration {
        let root = try compose(yaml)
        guard let root, !isNull(root) else {
            throw ConfigError(key: nil, message: "\(location(line: 1)) the file is empty: add a 'listeners' list (see docs/CONFIG.md)")
        }
        let configuration = configuration(root)
        // The earliest problem in the file; among problems at one spot, the first reported.
        if let first = problems.indices.min(by: { (problems[$0].line, problems[$0].column, $0) < (problems[$1].line, problems[$1].column, $1) }) {
            throw problems[first].error
        }
        guard let configuration else { preconditionFailure("configuration file rejected without a reported problem") }
        return configuration
    }

    // MARK: Problems

    /// Runs a `Validate` function with the key `PATH:`; reports its error at `node`.
    func validate<Value>(_ node: Node, _ path: String, _ body: (String) throws(ConfigError) -> Value) -> Value? {
        do {
            return try body(path + ":")
        } catch {
            report(node, path, error.message)
            return nil
        }
    }

    func reportMissing(_ f: Fields, _ name: String, _ why: String) {
        guard !f.rejectedKeys else { return }
        report(f.node, f.child(name), "\(f.path.isEmpty ? "" : f.path + ": ")missing required key \(singleQuoted(name)): \(why)")
    }

    func report(_ node: Node, _ key: String, _ message: String) {
        let mark = node.mark
        let line = mark?.line ?? 1
        problems.append((line, mark?.column ?? 1, ConfigError(key: key.isEmpty ? nil : key, message: "\(location(line: line)) \(message)")))
    }

    func location(line: Int) -> String { "\(escapedForLog(source)):\(line):" }

    func line(_ node: Node) -> Int { node.mark?.line ?? 1 }
}
