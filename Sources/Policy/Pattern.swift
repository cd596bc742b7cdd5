/// Why a pattern, address range, fingerprint or serial could not be compiled.
///
/// `description` reads `'a**b.example.com' is not a valid pattern: '**' must be a whole label`; the config
/// layer puts the flag or key in front and uses `expected` and `reason` itself.
public struct PatternError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The value as given.
    public var value: String
    /// What the value should have been: "pattern", "IP address or CIDR range", "fingerprint", "serial number".
    public var expected: String
    /// One clause saying what is wrong, without the value: "the scheme must be literal".
    public var reason: String

    public init(value: String, expected: String, reason: String) {
        self.value = value
        self.expected = expected
        self.reason = reason
    }

    public var description: String { "\(singleQuoted(value)) is not a valid \(expected): \(reason)" }
}

/// A glob for one kind of certificate attribute, compiled once; matching never allocates.
///
/// | kind | separator | case | wildcards |
/// |---|---|---|---|
/// | `plain` (CN, OU, O, …) | none | sensitive | `*` any run |
/// | `dnsName` | `.` | insensitive (ASCII) | `*` within a label (may be partial: `app-*`), `**` one or more whole labels |
/// | `uri` | `/` | scheme and host insensitive, path sensitive | `*` within a segment, `**` one or more whole segments |
/// | `email` | split at the last `@` | local part sensitive, domain as `dnsName` | as plain / as DNS |
///
/// A pattern without `*` is an exact match. There is no escape for a literal `*`.
/// A wildcard never matches an empty label or segment; a presented DNS name with an empty label
/// (`a..b`, `.a`) never matches anything, and one trailing dot on it is ignored.
public struct Pattern: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case plain
        case dnsName
        case uri
        case email
    }

    public let kind: Kind
    /// The pattern as given.
    public var text: String { storage.text }
    /// One reference, so copying a `Pattern` (and a `Matcher`) costs a single retain.
    private let storage: Storage

    /// The compiled form. Matching reads only `let` properties of this class, so it retains nothing.
    private final class Storage: Sendable {
        let kind: Kind
        let text: String
        /// plain: the value; dnsName: the name; uri: the path (or everything after `scheme:`); email: the local part.
        let primary: Glob
        /// uri: the authority, when the pattern has `//`; email: the domain.
        let secondary: Glob?
        /// uri: the lowercased scheme.
        let scheme: [UInt8]

        init(kind: Kind, text: String, primary: Glob, secondary: Glob? = nil, scheme: [UInt8] = []) {
            self.kind = kind
            self.text = text
            self.primary = primary
            self.secondary = secondary
            self.scheme = scheme
        }

        func matches(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
            switch kind {
            case .plain:
                return primary.matches(bytes)
            case .dnsName:
                return Pattern.matchDNSName(primary, bytes)
            case .uri:
                return Pattern.matchURI(scheme: scheme, authority: secondary, path: primary, bytes)
            case .email:
                guard let at = bytes.lastIndex(of: UInt8(ascii: "@")), let secondary else { return false }
                return primary.matches(UnsafeBufferPointer(rebasing: bytes[..<at]))
                    && Pattern.matchDNSName(secondary, UnsafeBufferPointer(rebasing: bytes[(at + 1)...]))
            }
        }
    }

    /// Compiles `text`; throws `PatternError` with a reason such as "the scheme must be literal".
    public init(_ text: String, kind: Kind) throws(PatternError) {
        func invalid(_ reason: String) -> PatternError {
            PatternError(value: text, expected: "pattern", reason: reason)
        }
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { throw invalid("the pattern is empty") }
        if bytes.contains(where: { $0 < 0x20 || $0 == 0x7f }) {
            throw invalid(bytes.contains(0) ? "it contains a NUL character" : "it contains a control character")
        }
        if text.contains("***") {
            throw invalid(kind == .plain ? "'***' is not a wildcard: use '*'" : "'***' is not a wildcard: use '*' or '**'")
        }
        self.kind = kind
        do throws(Glob.Invalid) {
            switch kind {
            case .plain:
                storage = Storage(kind: kind, text: text,
                                  primary: try Glob(bytes, separator: nil, caseInsensitive: false, unit: "value"))
            case .dnsName:
                storage = Storage(kind: kind, text: text, primary: try Pattern.compileDNSName(bytes[...]))
            case .uri:
                let (scheme, authority, path) = try Pattern.compileURI(bytes)
                storage = Storage(kind: kind, text: text, primary: path, secondary: authority, scheme: scheme)
            case .email:
                guard let at = bytes.lastIndex(of: UInt8(ascii: "@")) else {
                    throw Glob.Invalid(reason: "an email pattern needs an '@', e.g. '*@example.com'")
                }
                guard at > 0 else { throw Glob.Invalid(reason: "the part before '@' is empty") }
                let local = try Glob(bytes[..<at], separator: nil, caseInsensitive: false, unit: "value")
                storage = Storage(kind: kind, text: text, primary: local,
                                  secondary: try Pattern.compileDNSName(bytes[(at + 1)...]))
            }
        } catch {
            throw invalid(error.reason)
        }
    }

    public var description: String { text }

    /// Whether the pattern has no wildcard (an exact match under the kind's case rule).
    public var isLiteral: Bool {
        storage.primary.isLiteral && (storage.secondary?.isLiteral ?? true)
    }

    public static func == (lhs: Pattern, rhs: Pattern) -> Bool {
        lhs.kind == rhs.kind && lhs.text == rhs.text
    }

    /// Whether `value` matches. Never allocates for native strings.
    public func matches(_ value: String) -> Bool {
        value.withUTF8Bytes { matches(bytes: $0) }
    }

    @inline(__always)
    func matches(bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        storage.matches(bytes)
    }

    // MARK: DNS names

    private static func compileDNSName(_ pattern: ArraySlice<UInt8>) throws(Glob.Invalid) -> Glob {
        var name = pattern
        if name.last == UInt8(ascii: ".") { name = name.dropLast() }
        guard !name.isEmpty else { throw Glob.Invalid(reason: "the DNS name is empty") }
        for byte in name {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                 UInt8(ascii: "."), UInt8(ascii: "*"):
                continue
            default:
                guard byte < 0x80 else {
                    throw Glob.Invalid(reason: "a DNS name cannot contain non-ASCII characters: write IDNs in punycode (xn--…)")
                }
                throw Glob.Invalid(reason: "a DNS name cannot contain \(singleQuoted(String(decoding: [byte], as: UTF8.self)))")
            }
        }
        if name.first == UInt8(ascii: ".") || name.indices.dropFirst().contains(where: {
            name[$0] == UInt8(ascii: ".") && name[$0 - 1] == UInt8(ascii: ".")
        }) {
            throw Glob.Invalid(reason: "it contains an empty label")
        }
        return try Glob(name, separator: UInt8(ascii: "."), caseInsensitive: true, unit: "label")
    }

    private static func matchDNSName(_ glob: Glob, _ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let dot = UInt8(ascii: ".")
        var count = bytes.count
        if count > 0 && bytes[count - 1] == dot { count -= 1 }
        guard count > 0, bytes[0] != dot, bytes[count - 1] != dot else { return false }
        var index = 1
        while index < count {
            if bytes[index] == dot && bytes[index - 1] == dot { return false }  // empty label
            index += 1
        }
        return glob.matches(UnsafeBufferPointer(rebasing: bytes[..<count]))
    }

    // MARK: URIs

    private static func compileURI(_ bytes: [UInt8]) throws(Glob.Invalid) -> (scheme: [UInt8], authority: Glob?, path: Glob) {
        let colon = bytes.firstIndex(of: UInt8(ascii: ":"))
        let schemeBytes = bytes[..<(colon ?? bytes.count)]
        if schemeBytes.contains(UInt8(ascii: "*")) { throw Glob.Invalid(reason: "the scheme must be literal") }
        guard let colon else {
            throw Glob.Invalid(reason: "a URI pattern starts with a scheme, e.g. 'spiffe://example.org/ns/*'")
        }
        guard let first = schemeBytes.first, isASCIILetter(first), schemeBytes.allSatisfy({
            isASCIILetter($0) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".")
        }) else {
            throw Glob.Invalid(reason: "the scheme must start with a letter and hold only letters, digits, '+', '-' or '.'")
        }
        if bytes.contains(UInt8(ascii: " ")) { throw Glob.Invalid(reason: "a URI cannot contain a space") }
        let scheme = schemeBytes.map(asciiLowercase)
        let rest = bytes[(colon + 1)...]
        let slash = UInt8(ascii: "/")
        guard rest.starts(with: [slash, slash]) else {
            return (scheme, nil, try Glob(rest, separator: slash, caseInsensitive: false, unit: "path segment"))
        }
        let authorityStart = rest.startIndex + 2
        let authorityEnd = rest[authorityStart...].firstIndex(of: slash) ?? rest.endIndex
        let authorityBytes = rest[authorityStart..<authorityEnd]
        guard !authorityBytes.isEmpty else { throw Glob.Invalid(reason: "the host is empty") }
        if authorityBytes.indices.dropFirst().contains(where: {
            authorityBytes[$0] == UInt8(ascii: "*") && authorityBytes[$0 - 1] == UInt8(ascii: "*")
        }) {
            throw Glob.Invalid(reason: "'**' is not allowed in the host; use '*'")
        }
        let authority = try Glob(authorityBytes, separator: slash, caseInsensitive: true, unit: "host")
        let path = try Glob(rest[authorityEnd...], separator: slash, caseInsensitive: false, unit: "path segment")
        return (scheme, authority, path)
    }

    private static func matchURI(
        scheme: [UInt8], authority: Glob?, path: Glob, _ bytes: UnsafeBufferPointer<UInt8>
    ) -> Bool {
        guard bytes.count > scheme.count, bytes[scheme.count] == UInt8(ascii: ":") else { return false }
        var index = 0
        while index < scheme.count {
            if asciiLowercase(bytes[index]) != scheme[index] { return false }
            index += 1
        }
        let restStart = scheme.count + 1
        guard let authority else {
            return path.matches(UnsafeBufferPointer(rebasing: bytes[restStart...]))
        }
        let slash = UInt8(ascii: "/")
        guard bytes.count >= restStart + 2, bytes[restStart] == slash, bytes[restStart + 1] == slash else {
            return false
        }
        let authorityStart = restStart + 2
        var authorityEnd = authorityStart
        while authorityEnd < bytes.count && bytes[authorityEnd] != slash { authorityEnd += 1 }
        return authority.matches(UnsafeBufferPointer(rebasing: bytes[authorityStart..<authorityEnd]))
            && path.matches(UnsafeBufferPointer(rebasing: bytes[authorityEnd...]))
    }
}

@inline(__always)
private func isASCIILetter(_ byte: UInt8) -> Bool {
    asciiLowercase(byte) >= UInt8(ascii: "a") && asciiLowercase(byte) <= UInt8(ascii: "z")
}
