import Policy

/// Builds a `PeerIdentity` by hand, as the TLS bridge would after extraction.
func makeIdentity(
    cn: [String] = [],
    ou: [String] = [],
    o: [String] = [],
    l: [String] = [],
    st: [String] = [],
    c: [String] = [],
    issuer: [(String, String)] = [],
    dns: [String] = [],
    uris: [String] = [],
    emails: [String] = [],
    ips: [String] = [],
    serialHex: String = "",
    certificateSHA256: [UInt8] = [],
    spkiSHA256: [UInt8] = [],
    anomalies: [String] = []
) -> PeerIdentity {
    var attributes: [DistinguishedName.Attribute] = []
    for (type, values) in [("C", c), ("ST", st), ("L", l), ("O", o), ("OU", ou), ("CN", cn)] {
        attributes += values.map { DistinguishedName.Attribute(type: type, value: $0) }
    }
    return PeerIdentity(
        subject: DistinguishedName(attributes),
        issuer: DistinguishedName(issuer.map { DistinguishedName.Attribute(type: $0.0, value: $0.1) }),
        dnsNames: dns,
        uris: uris,
        emails: emails,
        ipAddresses: ips.map { IPAddress($0)! },
        serialHex: serialHex,
        certificateSHA256: certificateSHA256,
        spkiSHA256: spkiSHA256,
        anomalies: anomalies
    )
}

/// A rule that must build; the tests that check rule validation call `AccessRule.init` directly.
func rule(_ name: String, _ matchers: [(Matcher.Kind, String)]) -> AccessRule {
    try! AccessRule(name: name, matchers: matchers.map { try! Matcher(kind: $0.0, value: $0.1) })
}

let digestA: [UInt8] = (0..<32).map { UInt8($0) }
let digestB: [UInt8] = (0..<32).map { UInt8(255 - $0) }
let digestAHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
