import Foundation
import Policy
import Yams

/// The flags given on a command line, as the configuration-file key tree they stand for: one listener named
/// after its mode (`server`, `client`), and the process-wide keys. `ConfigReader` validates it like a file.
struct KeyTree {
    let mode: ListenerMode
    /// The tree, every value a quoted scalar (so that `''` or `null` stay strings, as typed).
    let root: Node
    /// `root` with the `--storepass` password replaced, for printing.
    let printable: Node
    /// Each key path written, with the flag that wrote it (`listeners[0].policy.rules[2].cn` → `--allow-cn`).
    let writtenBy: [String: ConfigFlag]
    /// The rules the `--allow-*` or `--verify-*` flags wrote, in order, with their flag.
    let rules: [(flag: ConfigFlag, value: String)]

    /// `given`: each flag with its values in command-line order (none: not given; a switch has one, ignored).
    init(mode: ListenerMode, given: [(ConfigFlag, [String])]) {
        self.mode = mode
        let root = Branch()
        var writtenBy: [String: ConfigFlag] = [:]
        let listener = Branch()
        listener.set(["name"], mode.rawValue)
        if mode == .client { listener.set(["mode"], mode.rawValue) }
        listener.branch(["tls"])  // always there: a missing --cert is then a missing tls.cert
        var rules: [(name: String, kind: Matcher.Kind, value: String, flag: ConfigFlag)] = []

        for (flag, values) in given where !values.isEmpty {
            precondition(flag.modes.contains(mode), "\(flag.name) is not a flag of \(mode.rawValue) mode")
            let branch = flag.scope == .process ? root : listener
            let keys = flag.key.split(separator: ".").map(String.init)
            switch flag.form {
            case .value:
                branch.set(keys, values[values.count - 1])
                writtenBy[flag.path()] = flag
            case .fixed(let value):
                branch.set(keys, value)
                writtenBy[flag.path()] = flag
            case .rule(let kind):
                // Named like the rules of old, by the canonical matcher (`fingerprint=sha256:ab…`); a repeat is
                // the same rule, not a second one with the same name.
                for value in values {
                    let name = (try? Matcher(kind: kind, value: value))?.description ?? "\(kind.rawValue)=\(value)"
                    if !rules.contains(where: { $0.name == name }) { rules.append((name, kind, value, flag)) }
                }
            }
        }
        if !rules.isEmpty {
            let path = "listeners[0].policy.rules"
            let items = rules.enumerated().map { index, rule in
                let item = Branch()
                item.set(["name"], rule.name)
                item.set([rule.kind.rawValue], rule.value)
                for suffix in ["", ".name", "." + rule.kind.rawValue] { writtenBy["\(path)[\(index)]\(suffix)"] = rule.flag }
                return item
            }
            listener.branch(["policy"]).set(["rules"], items)
            writtenBy[path] = rules[0].flag
        }
        root.set(["listeners"], [listener])
        self.root = root.node
        if given.contains(where: { $0.0 == FlagTable.storepass && !$0.1.isEmpty }) {
            listener.set(["tls", "storepass"], "(hidden)")
            printable = root.node
        } else {
            printable = self.root
        }
        self.writtenBy = writtenBy
        self.rules = rules.map { ($0.flag, $0.value) }
    }

    /// The tree as a configuration file.
    var yaml: String {
        (try? Yams.serialize(node: printable)) ?? ""
    }
}

/// A mapping under construction, keys in the order first written.
private final class Branch {
    enum Value { case scalar(String), branch(Branch), list([Branch]) }
    var entries: [(String, Value)] = []

    @discardableResult
    func branch(_ keys: [String]) -> Branch {
        var current = self
        for key in keys {
            if let index = current.entries.firstIndex(where: { $0.0 == key }), case .branch(let next) = current.entries[index].1 {
                current = next
            } else {
                let next = Branch()
                current.entries.append((key, .branch(next)))
                current = next
            }
        }
        return current
    }

    func set(_ keys: [String], _ value: String) { put(keys, .scalar(value)) }
    func set(_ keys: [String], _ list: [Branch]) { put(keys, .list(list)) }

    private func put(_ keys: [String], _ value: Value) {
        let parent = branch(Array(keys.dropLast()))
        if let index = parent.entries.firstIndex(where: { $0.0 == keys[keys.count - 1] }) {
            parent.entries[index].1 = value
        } else {
            parent.entries.append((keys[keys.count - 1], value))
        }
    }

    var node: Node {
        Node(entries.map { key, value in
            let valueNode: Node
            switch value {
            case .scalar(let text): valueNode = .scalar(Node.Scalar(text, .implicit, .singleQuoted))
            case .branch(let branch): valueNode = branch.node
            case .list(let items): valueNode = Node(items.map(\.node))
            }
            return (Node(key), valueNode)
        })
    }
}
