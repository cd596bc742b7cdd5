import Policy
import Yams

/// Mappings and scalars: the node helpers every section uses. Each reports what is wrong and returns `nil`.
extension ConfigReader {
    // MARK: Mappings

    /// A mapping's keys after merges (`<<: *anchor`), unknown and duplicate keys reported.
    struct Fields {
        let path: String
        let node: Node
        /// Known keys in file order.
        var order: [String] = []
        /// Whether an unknown or repeated key was reported: then a "missing" key is most likely that one misspelled,
        /// and only the misspelling is reported.
        var rejectedKeys = false
        var entries: [String: (key: Node, value: Node)] = [:]

        subscript(name: String) -> (key: Node, value: Node)? { entries[name] }

        func child(_ name: String) -> String { path.isEmpty ? name : path + "." + name }
    }

    func fields(_ node: Node, path: String, known: [String], hints: [String: String] = [:], extensions: Bool = false) -> Fields? {
        guard case .mapping(let mapping) = node else {
            let what = path.isEmpty ? "expected a mapping of settings at the top level" : "\(path): expected a mapping"
            report(node, path, "\(what), got \(describe(node))")
            return nil
        }
        var f = Fields(path: path, node: node)
        var seen: [String: Node] = [:]
        var merged: [(Node, Node)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                report(keyNode, path, "\(path.isEmpty ? "" : path + ": ")keys must be strings, got \(describe(keyNode))")
                continue
            }
            let name = withoutSentinel(scalar.string)
            if name == "<<" && scalar.style == .plain {
                merged += mergeSources(value, path: f.child("<<"))
                continue
            }
            if let first = seen[name] {
                problem(keyNode, f.child(name), "duplicate key (first on line \(line(first))): remove one")
                f.rejectedKeys = true
                continue
            }
            seen[name] = keyNode
            add(name, keyNode, value, to: &f, known: known, hints: hints, extensions: extensions)
        }
        for (keyNode, value) in merged {
            guard case .scalar(let scalar) = keyNode else { continue }
            let name = withoutSentinel(scalar.string)
            guard seen[name] == nil else { continue }  // written keys override merged ones
            seen[name] = keyNode
            add(name, keyNode, value, to: &f, known: known, hints: hints, extensions: extensions)
        }
        return f
    }

    func add(_ name: String, _ keyNode: Node, _ value: Node, to f: inout Fields, known: [String], hints: [String: String], extensions: Bool) {
        if known.contains(name) {
            f.order.append(name)
            f.entries[name] = (keyNode, value)
        } else if !(extensions && name.hasPrefix("x-")) {
            f.rejectedKeys = true
            problem(keyNode, f.child(name), "unknown key\(suggestion(for: name, known: known, hints: hints))")
        }
    }

    /// The pairs a merge key brings in: one mapping or a list of mappings (earlier ones win).
    func mergeSources(_ value: Node, path: String) -> [(Node, Node)] {
        switch value {
        case .mapping(let mapping):
            return mapping.map { ($0.key, $0.value) }
        case .sequence(let list):
            var pairs: [(Node, Node)] = []
            for item in list {
                guard case .mapping(let mapping) = item else {
                    problem(item, path, "expected a mapping to merge, got \(describe(item))")
                    continue
                }
                pairs += mapping.map { ($0.key, $0.value) }
            }
            return pairs
        default:
            problem(value, path, "expected a mapping or a list of mappings to merge, got \(describe(value))")
            return []
        }
    }

    func suggestion(for name: String, known: [String], hints: [String: String]) -> String {
        if let hint = hints[name] { return " (\(hint))" }
        let lowered = name.lowercased()
        var best: (key: String, distance: Int)?
        for key in known {
            let distance = editDistance(lowered, key)
            if distance <= 2, distance < best?.distance ?? .max { best = (key, distance) }
        }
        if let best { return " (did you mean \(singleQuoted(best.key))?)" }
        return ": use one of " + known.joined(separator: ", ")
    }

    func optionalSection(_ f: Fields, _ name: String, known: [String], hints: [String: String] = [:]) -> Fields? {
        guard let entry = f[name], !isNull(entry.value) else { return nil }
        return fields(entry.value, path: f.child(name), known: known, hints: hints)
    }

    func requiredSection(_ f: Fields, _ name: String, known: [String], hints: [String: String], why: String) -> Fields? {
        guard let entry = f[name] else {
            reportMissing(f, name, why)
            return nil
        }
        guard !isNull(entry.value) else {
            problem(entry.value, f.child(name), "has no value: \(why)")
            return nil
        }
        return fields(entry.value, path: f.child(name), known: known, hints: hints)
    }

    func sequence(_ f: Fields, _ name: String, required why: String? = nil) -> (node: Node, items: [Node])? {
        guard let entry = f[name] else {
            if let why { reportMissing(f, name, why) }
            return nil
        }
        switch entry.value {
        case .sequence(let list):
            return (entry.value, Array(list))
        case let value where isNull(value):
            if let why { problem(value, f.child(name), "has no value: \(why)") }
            return nil
        case let value:
            problem(value, f.child(name), "expected a list, got \(describe(value)): start each entry with '- '")
            return nil
        }
    }

    // MARK: Scalars

    /// A scalar's text, with the node; `nil` when absent or empty (reported if `required`), or not a scalar (reported).
    func string(_ f: Fields, _ name: String, required why: String? = nil) -> (String, Node)? {
        guard let entry = f[name] else {
            if let why { reportMissing(f, name, why) }
            return nil
        }
        if isNull(entry.value) {
            if let why { problem(entry.value, f.child(name), "has no value: \(why)") }
            return nil
        }
        return scalarText(entry.value, path: f.child(name), expected: "a string").map { ($0, entry.value) }
    }

    func scalarText(_ node: Node, path: String, expected: String, nullHint: String? = nil) -> String? {
        guard case .scalar(let scalar) = node else {
            problem(node, path, "expected \(expected), got \(describe(node))")
            return nil
        }
        if isNull(node), let nullHint {
            problem(node, path, "has no value: \(nullHint)")
            return nil
        }
        return scalar.string
    }

    func bool(_ f: Fields, _ name: String) -> Bool? {
        guard let (text, node) = string(f, name) else { return nil }
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default:
            problem(node, f.child(name), "expected true or false, got \(singleQuoted(text))")
            return nil
        }
    }

    func integer(_ f: Fields, _ name: String, in range: ClosedRange<Int>, hint: String) -> Int? {
        guard let (text, node) = string(f, name) else { return nil }
        let path = f.child(name)
        let negative = text.hasPrefix("-")
        let digits = String(negative ? text.dropFirst() : Substring(text))
        // YAML allows 10_000; a '_' only between digits.
        let bytes = Array(digits.utf8)
        let wellFormed = !bytes.isEmpty && bytes.first != 95 && bytes.last != 95
            && bytes.allSatisfy { ($0 >= 48 && $0 <= 57) || $0 == 95 } && !digits.contains("__")
        guard wellFormed else {
            problem(node, path, "expected an integer, got \(singleQuoted(text)): \(hint)")
            return nil
        }
        if negative {
            problem(node, path, "\(singleQuoted(text)) is out of range: \(hint)")
            return nil
        }
        return validate(node, path) { k throws(ConfigError) in
            try Validate.integer(digits.replacingOccurrences(of: "_", with: ""), key: k, in: range, hint: hint)
        }
    }

    func duration(_ f: Fields, _ name: String, positive: Bool) -> UInt64? {
        guard let (text, node) = string(f, name) else { return nil }
        return validate(node, f.child(name)) { k throws(ConfigError) in
            if positive { return try Validate.positiveDuration(text, key: k) }
            return try Validate.duration(text, key: k)
        }
    }

    /// `nil`: absent; `.some(nil)`: invalid (reported).
    func choice<Value>(
        _ f: Fields, _ name: String, _ parse: (String) -> Value?, what: String, use: String
    ) -> Value?? {
        guard let entry = f[name], !isNull(entry.value) else { return nil }
        guard let (text, node) = string(f, name) else { return .some(nil) }
        guard let value = parse(text) else {
            problem(node, f.child(name), "\(singleQuoted(text)) is not \(what): \(use)")
            return .some(nil)
        }
        return value
    }

    /// A `:`-separated list given as one string or as a YAML list. `nil`: absent; `.some(nil)`: invalid (reported).
    func colonList(_ f: Fields, _ name: String, _ check: (String, String) throws(ConfigError) -> String) -> String?? {
        guard let entry = f[name], !isNull(entry.value) else { return nil }
        let path = f.child(name)
        var text: String
        if case .sequence(let list) = entry.value {
            var items: [String] = []
            for (index, item) in list.enumerated() {
                guard let item = scalarText(item, path: "\(path)[\(index)]", expected: "a name") else { return .some(nil) }
                items.append(item)
            }
            text = items.joined(separator: ":")
        } else {
            guard let (value, _) = string(f, name) else { return .some(nil) }
            text = value
        }
        guard let canonical = validate(entry.value, path, { k throws(ConfigError) in try check(text, k) }) else { return .some(nil) }
        return canonical
    }

    /// An absolute, checked path. `nil`: absent; `.some(nil)`: invalid (reported).
    func file(_ f: Fields, _ name: String, allowDirectory: Bool = false) -> String?? {
        guard let entry = f[name], !isNull(entry.value) else { return nil }
        guard let (text, node) = string(f, name) else { return .some(nil) }
        return .some(resolve(text, node: node, path: f.child(name), allowDirectory: allowDirectory))
    }

    func file(_ f: Fields, _ name: String, required why: String, allowDirectory: Bool = false) -> String? {
        guard let (text, node) = string(f, name, required: why) else { return nil }
        return resolve(text, node: node, path: f.child(name), allowDirectory: allowDirectory)
    }

    func resolve(_ text: String, node: Node, path: String, allowDirectory: Bool) -> String? {
        guard !text.isEmpty else {
            problem(node, path, "'' is empty: give a path, absolute or relative to \(flags == nil ? "the configuration file" : "the working directory")")
            return nil
        }
        let resolved = absolutePath(text, relativeTo: baseDirectory)
        guard checkFiles else { return resolved }
        return validate(node, path) { k throws(ConfigError) in
            try Validate.readablePath(resolved, key: k, allowDirectory: allowDirectory)
        }
    }

}

// MARK: Helpers

func isNull(_ node: Node) -> Bool {
    guard case .scalar(let scalar) = node, scalar.style == .plain else { return false }
    return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
}

func describe(_ node: Node) -> String {
    switch node {
    case .scalar(let scalar): isNull(node) ? "nothing" : singleQuoted(scalar.string, limit: 64)
    case .mapping: "a mapping"
    case .sequence: "a list"
    case .alias: "an alias"
    }
}


/// Optimal string alignment distance (a swap of neighbours counts once).
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.unicodeScalars), b = Array(b.unicodeScalars)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous2 = [Int](repeating: 0, count: b.count + 1)
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                current[j] = min(current[j], previous2[j - 2] + 1)
            }
        }
        (previous2, previous, current) = (previous, current, previous2)
    }
    return previous[b.count]
}
