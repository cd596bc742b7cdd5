// Fuzz target pattern: glob and pattern compilation (Pattern.swift, Glob.swift) for every kind, the matchers
// built on them (Matcher.swift, including IP ranges, serials and fingerprints), and matching of arbitrary
// values against what compiled.
//
// Input: byte 0 picks the pattern kind and byte 1 the matcher kind; then newline-separated fields: the
// pattern, then values to match.
import FuzzSupport
import Policy

@_cdecl("FuzzPattern_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, fuzz)
}

let patternKinds: [Pattern.Kind] = [.plain, .dnsName, .uri, .email]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzReader(bytes(data, size))
    let kind = patternKinds[Int(input.byte()) % patternKinds.count]
    let matcherKind = Matcher.Kind.allCases[Int(input.byte()) % Matcher.Kind.allCases.count]
    let text = input.string()
    var values: [String] = []
    while !input.isAtEnd, values.count < 16 { values.append(input.string()) }

    if let pattern = try? Pattern(text, kind: kind) {
        fuzzCheck(pattern.text == text, "pattern text changed: \(pattern.text) vs \(text)")
        for value in values {
            let first = pattern.matches(value)
            fuzzCheck(first == pattern.matches(value), "matching \(value) against \(text) is not deterministic")
        }
        // A plain pattern without '*' is an exact, case-sensitive match. Patterns work on UTF-8 bytes, so the
        // property does too: a '*' followed by a combining mark is one Character for String, still a '*' here,
        // and String's == would call canonically equivalent spellings equal (found by this target in CI).
        if kind == .plain, !text.utf8.contains(UInt8(ascii: "*")) {
            fuzzCheck(pattern.isLiteral, "plain pattern without '*' is not literal: \(text)")
            fuzzCheck(pattern.matches(text), "literal plain pattern does not match itself: \(text)")
            for value in values {
                fuzzCheck(pattern.matches(value) == value.utf8.elementsEqual(text.utf8), "literal \(text) vs \(value)")
            }
        }
        // '*' alone matches any non-empty plain value.
        if kind == .plain, text == "*" {
            for value in values where !value.isEmpty {
                fuzzCheck(pattern.matches(value), "'*' does not match \(value)")
            }
        }
    }

    do {
        let matcher = try Matcher(kind: matcherKind, value: text)
        fuzzCheck(matcher.kind == matcherKind, "matcher kind changed")
        _ = matcher.description
        // Whatever the matcher accepted, a rule and a policy of it must evaluate without trapping.
        var identity = PeerIdentity()
        identity.subject = DistinguishedName(values.prefix(4).map { .init(type: "CN", value: $0) })
        identity.issuer = DistinguishedName(values.prefix(2).map { .init(type: "CN", value: $0) })
        identity.dnsNames = values
        identity.uris = values
        identity.emails = values
        identity.ipAddresses = values.compactMap(IPAddress.init)
        identity.serialHex = values.first ?? ""
        let matched = matcher.matches(identity)
        if !matched { _ = matcher.explainMismatch(identity) }
        let policy = AccessPolicy(rules: [AccessRule(matcher)])
        fuzzCheck(policy.evaluate(identity).isAllowed == matched, "policy of one matcher disagrees with the matcher")
    } catch {
        fuzzCheck(!error.reason.isEmpty, "pattern error without a reason")
        _ = error.description
    }

    // The address parser behind IP matchers and PROXY headers: a parsed address prints back to itself.
    if let address = IPAddress(text) {
        fuzzCheck(IPAddress(address.description) == address, "\(text) -> \(address) does not round-trip")
    }
    return 0
}
