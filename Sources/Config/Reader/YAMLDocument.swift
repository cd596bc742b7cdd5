import Policy
import Yams

/// Turning the text into a node tree, with messages that name the line.
extension ConfigReader {
    // MARK: YAML

    /// Prefix marking a key that Yams reported as a duplicate and that was renamed so the file could be composed.
    static let sentinelStart: Unicode.Scalar = "\u{E000}"
    static let sentinelEnd: Unicode.Scalar = "\u{E001}"

    func withoutSentinel(_ key: String) -> String {
        let scalars = key.unicodeScalars
        guard scalars.first == Self.sentinelStart, let end = scalars.firstIndex(of: Self.sentinelEnd) else { return key }
        return String(scalars[scalars.index(after: end)...])
    }

    /// Composes the document. Yams refuses a mapping with a repeated key; to report it with its key path, the
    /// earlier occurrence is renamed with an invisible prefix and composition retried, and `fields` then finds the
    /// repeat in file order.
    func compose(_ yaml: String) throws(ConfigError) -> Node? {
        var text = yaml
        for attempt in 0...64 {
            do {
                return try Yams.compose(yaml: text)
            } catch YamlError.duplicatedKeysInMapping(let duplicates, let context) {
                guard attempt < 64, let renamed = renameKey(in: text, at: context.mark, tag: attempt) else {
                    let key = duplicates.first.map { " " + singleQuoted($0) } ?? ""
                    throw ConfigError(key: nil, message: "\(location(line: context.mark.line)) duplicate key\(key): remove one")
                }
                text = renamed
            } catch let error as YamlError {
                throw syntaxError(error)
            } catch {
                throw ConfigError(key: nil, message: "\(location(line: 1)) YAML syntax error: \(escapedForLog(String(describing: error)))")
            }
        }
        preconditionFailure("unreachable: the last attempt returns or throws")
    }

    func renameKey(in text: String, at mark: Mark, tag: Int) -> String? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard mark.line >= 1, mark.line <= lines.count else { return nil }
        var scalars = Array(lines[mark.line - 1].unicodeScalars)
        var index = mark.column - 1
        guard index >= 0, index < scalars.count else { return nil }
        switch scalars[index] {
        case "\"", "'": index += 1
        case "?", "&", "!", "*", "[", "{", "-", "|", ">", "%", "@", "`", "#", ",", "]", "}", ":": return nil
        default: break
        }
        let sentinel = Array("\(Self.sentinelStart)\(tag)\(Self.sentinelEnd)".unicodeScalars)
        scalars.insert(contentsOf: sentinel, at: index)
        var line = String.UnicodeScalarView()
        line.append(contentsOf: scalars)
        lines[mark.line - 1] = String(line)
        return lines.joined(separator: "\n")
    }

    func syntaxError(_ error: YamlError) -> ConfigError {
        func message(_ line: Int, _ problem: String, _ context: YamlError.Context?) -> ConfigError {
            let while_ = context.map { " (\($0.text) on line \($0.mark.line))" } ?? ""
            // libyaml's texts are constant ASCII phrases.
            return ConfigError(key: nil, message: "\(location(line: line)) YAML syntax error: \(problem)\(while_)")
        }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return message(mark.line, problem, context)
        case .reader(let problem, let offset, _, let yaml):
            let line = offset.map { offset in 1 + yaml.utf8.prefix(offset).count(where: { $0 == 10 }) } ?? 1
            return message(line, problem, nil)
        default:
            return ConfigError(key: nil, message: "\(location(line: 1)) YAML syntax error: \(escapedForLog(String(describing: error)))")
        }
    }
}
