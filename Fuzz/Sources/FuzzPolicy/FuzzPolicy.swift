// Fuzz target policy: access-policy evaluation (AccessPolicy.swift, RuleTable.swift, every Matcher) with an
// arbitrary PeerIdentity, against fixed policies that use every matcher kind and against rules taken from
// the input.
//
// Input: lines. Until the first empty line, `KIND=VALUE` rule lines (`-KIND=VALUE` for a deny rule); then
// identity fields, one per line, each starting with a tag byte: s (subject CN=…/OU=… attribute `TYPE=VALUE`),
// i (issuer attribute), d (DNS SAN), u (URI SAN), e (email SAN), a (IP SAN: raw bytes), n (serial hex),
// f (certificate SHA-256: raw bytes), k (SPKI SHA-256), x (anomaly).
import FuzzSupport
import Policy

@_cdecl("FuzzPolicy_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, fuzz)
}

func rule(_ name: String, _ matchers: [(Matcher.Kind, String)]) -> AccessRule {
    // The fixed rules are valid by construction: a failure here is a regression in the compiler.
    try! AccessRule(name: name, matchers: matchers.map { try! Matcher(kind: $0.0, value: $0.1) })
}

let fixedPolicies: [AccessPolicy] = [
    AccessPolicy(
        rules: [
            rule("frontends", [(.dns, "web-*.example.internal")]),
            rule("partners", [(.o, "Partner Co"), (.c, "NO")]),
            rule("ops", [(.cn, "ops-*"), (.email, "*@example.org")]),
            rule("mesh", [(.spiffeID, "spiffe://example.org/ns/**")]),
            rule("uris", [(.uri, "https://*.example.com/api/*")]),
            rule("issuer", [(.issuerCN, "Issuing CA *"), (.issuerDN, "CN=Issuing CA 1,O=Example")]),
            rule("net", [(.ip, "10.0.0.0/8"), (.ou, "batch")]),
            rule("net6", [(.ip, "fd00::/8")]),
            rule("pinned", [(.certificateSHA256, "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]),
            rule("spki", [(.spkiSHA256, "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")]),
            rule("serial", [(.serial, "0a:1b:2c")]),
            rule("place", [(.l, "Oslo"), (.st, "*")]),
        ],
        deny: [rule("compromised", [(.cn, "compromised-*")]), rule("bad-dns", [(.dns, "**.evil.example")])]
    ),
    AccessPolicy(deny: [rule("no-root", [(.cn, "root")])], allowAll: true),
    AccessPolicy(),
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzReader(bytes(data, size))

    var allow: [AccessRule] = [], deny: [AccessRule] = []
    while !input.isAtEnd {
        var line = input.string()
        if line.isEmpty { break }
        let isDeny = line.hasPrefix("-")
        if isDeny { line.removeFirst() }
        guard let equals = line.firstIndex(of: "="), let kind = Matcher.Kind(rawValue: String(line[..<equals])),
              let matcher = try? Matcher(kind: kind, value: String(line[line.index(after: equals)...]))
        else { continue }
        if isDeny { deny.append(AccessRule(matcher)) } else { allow.append(AccessRule(matcher)) }
    }

    var identity = PeerIdentity()
    var subject: [DistinguishedName.Attribute] = [], issuer: [DistinguishedName.Attribute] = []
    while !input.isAtEnd {
        var field = input.field()
        guard !field.isEmpty else { continue }
        let tag = field.removeFirst()
        let text = String(decoding: field, as: UTF8.self)
        func attribute() -> DistinguishedName.Attribute {
            let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return .init(type: String(parts[0]), value: parts.count > 1 ? String(parts[1]) : "")
        }
        switch tag {
        case UInt8(ascii: "s"): subject.append(attribute())
        case UInt8(ascii: "i"): issuer.append(attribute())
        case UInt8(ascii: "d"): identity.dnsNames.append(text)
        case UInt8(ascii: "u"): identity.uris.append(text)
        case UInt8(ascii: "e"): identity.emails.append(text)
        case UInt8(ascii: "a"): if let ip = IPAddress(bytes: field) { identity.ipAddresses.append(ip) }
        case UInt8(ascii: "n"): identity.serialHex = text
        case UInt8(ascii: "f"): identity.certificateSHA256 = field
        case UInt8(ascii: "k"): identity.spkiSHA256 = field
        case UInt8(ascii: "x"): identity.anomalies.append(text)
        default: break
        }
    }
    identity.subject = DistinguishedName(subject)
    identity.issuer = DistinguishedName(issuer)
    _ = identity.subject.rfc2253
    _ = identity.subjectAlternativeNames
    _ = identity.fingerprint

    for policy in fixedPolicies + [AccessPolicy(rules: allow, deny: deny)] {
        check(policy, identity)
    }
    return 0
}

/// The evaluation order of AccessPolicy's documentation, checked rule by rule against `admits`.
func check(_ policy: AccessPolicy, _ identity: PeerIdentity) {
    let decision = policy.evaluate(identity)
    fuzzCheck(decision == policy.evaluate(identity), "evaluation is not deterministic")
    _ = decision.description
    let admittingDeny = policy.deny.firstIndex { $0.admits(identity) }
    let admittingAllow = policy.rules.firstIndex { $0.admits(identity) }
    if !identity.anomalies.isEmpty {
        fuzzCheck(!decision.isAllowed, "identity with anomalies admitted: \(decision)")
    } else if admittingDeny != nil {
        fuzzCheck(!decision.isAllowed, "identity matching a deny rule admitted: \(decision)")
    } else if policy.allowAll {
        fuzzCheck(decision.ruleName == AccessPolicy.allowAllRuleName, "allow-all did not admit: \(decision)")
    } else if let admittingAllow {
        fuzzCheck(decision.ruleName == policy.rules[admittingAllow].name,
                  "expected rule \(policy.rules[admittingAllow].name), got \(decision)")
    } else {
        fuzzCheck(!decision.isAllowed, "admitted without an admitting rule: \(decision)")
    }
}
