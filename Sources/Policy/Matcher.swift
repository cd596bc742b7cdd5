/// One condition on a peer identity. A multi-valued attribute (several OUs, several DNS SANs) matches when
/// any of its values matches; an absent attribute never matches.
public enum Matcher: Sendable, Equatable, CustomStringConvertible {
    /// Subject attributes (plain globs, case-sensitive).
    case cn(Pattern)
    case ou(Pattern)
    case o(Pattern)
    case l(Pattern)
    case st(Pattern)
    case c(Pattern)
    /// Certificate serial number.
    case serial(SerialNumber)
    /// Issuer CN (plain glob).
    case issuerCN(Pattern)
    /// The issuer DN as an RFC 2253 string (`CN=Issuing CA,O=Example`), exact or plain glob.
    case issuerDN(Pattern)
    /// DNS SANs (`Pattern.Kind.dnsName`).
    case dns(Pattern)
    /// URI SANs (`Pattern.Kind.uri`).
    case uri(Pattern)
    /// `PeerIdentity.spiffeID` only (a URI pattern that starts with `spiffe://`).
    case spiffeID(Pattern)
    /// Email SANs (`Pattern.Kind.email`).
    case email(Pattern)
    /// IP SANs.
    case ip(IPRange)
    /// SHA-256 of the whole certificate.
    case certificateSHA256(SHA256Fingerprint)
    /// SHA-256 of the SubjectPublicKeyInfo.
    case spkiSHA256(SHA256Fingerprint)

    /// The short name used in rule names, descriptions, decisions and metrics labels.
    public enum Kind: String, Sendable, CaseIterable, CustomStringConvertible {
        case cn, ou, o, l, st, c, serial
        case issuerCN = "issuer-cn"
        case issuerDN = "issuer-dn"
        case dns, uri
        case spiffeID = "spiffe"
        case email, ip
        case certificateSHA256 = "fingerprint"
        case spkiSHA256 = "spki"

        public var description: String { rawValue }
    }

    /// Compiles `value` for `kind`, e.g. `Matcher(kind: .uri, value: "spiffe://example.org/ns/*")`.
    public init(kind: Kind, value: String) throws(PatternError) {
        switch kind {
        case .cn: self = .cn(try Pattern(value, kind: .plain))
        case .ou: self = .ou(try Pattern(value, kind: .plain))
        case .o: self = .o(try Pattern(value, kind: .plain))
        case .l: self = .l(try Pattern(value, kind: .plain))
        case .st: self = .st(try Pattern(value, kind: .plain))
        case .c: self = .c(try Pattern(value, kind: .plain))
        case .serial: self = .serial(try SerialNumber(value))
        case .issuerCN: self = .issuerCN(try Pattern(value, kind: .plain))
        case .issuerDN: self = .issuerDN(try Pattern(value, kind: .plain))
        case .dns: self = .dns(try Pattern(value, kind: .dnsName))
        case .uri: self = .uri(try Pattern(value, kind: .uri))
        case .spiffeID:
            let pattern = try Pattern(value, kind: .uri)
            guard value.utf8.count >= 9, value.utf8.prefix(9).map(asciiLowercase).elementsEqual("spiffe://".utf8) else {
                throw PatternError(value: value, expected: "pattern", reason: "a SPIFFE ID starts with spiffe://")
            }
            self = .spiffeID(pattern)
        case .email: self = .email(try Pattern(value, kind: .email))
        case .ip: self = .ip(try IPRange(value))
        case .certificateSHA256: self = .certificateSHA256(try SHA256Fingerprint(value))
        case .spkiSHA256: self = .spkiSHA256(try SHA256Fingerprint(value))
        }
    }

    public var kind: Kind {
        switch self {
        case .cn: .cn
        case .ou: .ou
        case .o: .o
        case .l: .l
        case .st: .st
        case .c: .c
        case .serial: .serial
        case .issuerCN: .issuerCN
        case .issuerDN: .issuerDN
        case .dns: .dns
        case .uri: .uri
        case .spiffeID: .spiffeID
        case .email: .email
        case .ip: .ip
        case .certificateSHA256: .certificateSHA256
        case .spkiSHA256: .spkiSHA256
        }
    }

    /// The value side: the pattern as given, the range, or the normalized serial/fingerprint.
    public var value: String {
        switch self {
        case .cn(let p), .ou(let p), .o(let p), .l(let p), .st(let p), .c(let p), .issuerCN(let p), .issuerDN(let p),
             .dns(let p), .uri(let p), .spiffeID(let p), .email(let p):
            p.text
        case .serial(let serial): serial.hex
        case .ip(let range): range.description
        case .certificateSHA256(let pin), .spkiSHA256(let pin): pin.description
        }
    }

    /// `cn=ops-*`.
    public var description: String { "\(kind.rawValue)=\(value)" }

    /// Whether `identity` satisfies this matcher. Allocates only for `issuerDN` (the RFC 2253 string).
    public func matches(_ identity: PeerIdentity) -> Bool {
        switch self {
        case .cn(let p): attribute("CN", of: identity.subject, matches: p)
        case .ou(let p): attribute("OU", of: identity.subject, matches: p)
        case .o(let p): attribute("O", of: identity.subject, matches: p)
        case .l(let p): attribute("L", of: identity.subject, matches: p)
        case .st(let p): attribute("ST", of: identity.subject, matches: p)
        case .c(let p): attribute("C", of: identity.subject, matches: p)
        case .serial(let serial): serial.matches(identity.serialHex)
        case .issuerCN(let p): attribute("CN", of: identity.issuer, matches: p)
        case .issuerDN(let p): !identity.issuer.attributes.isEmpty && p.matches(identity.issuer.rfc2253)
        case .dns(let p): any(of: identity.dnsNames, matches: p)
        case .uri(let p): any(of: identity.uris, matches: p)
        case .spiffeID(let p): soleSPIFFEURI(of: identity).map { p.matches(identity.uris[$0]) } ?? false
        case .email(let p): any(of: identity.emails, matches: p)
        case .ip(let range): any(of: identity.ipAddresses, in: range)
        case .certificateSHA256(let pin): identity.certificateSHA256 == pin.bytes
        case .spkiSHA256(let pin): identity.spkiSHA256 == pin.bytes
        }
    }

    /// Why `identity` fails this matcher, as one clause for a log line: `'web-7' does not match 'ops-*'`,
    /// `none of 'a', 'b' matches 'c*'`, or `certificate has no URI SAN`.
    public func explainMismatch(_ identity: PeerIdentity) -> String {
        let pattern = singleQuoted(value)
        switch self {
        case .cn: return mismatch(identity.subject.values(of: "CN"), pattern, absent: "certificate has no CN")
        case .ou: return mismatch(identity.subject.values(of: "OU"), pattern, absent: "certificate has no OU")
        case .o: return mismatch(identity.subject.values(of: "O"), pattern, absent: "certificate has no O")
        case .l: return mismatch(identity.subject.values(of: "L"), pattern, absent: "certificate has no L")
        case .st: return mismatch(identity.subject.values(of: "ST"), pattern, absent: "certificate has no ST")
        case .c: return mismatch(identity.subject.values(of: "C"), pattern, absent: "certificate has no C")
        case .serial:
            return mismatch(identity.serialHex.isEmpty ? [] : [identity.serialHex], pattern,
                            absent: "certificate has no serial number")
        case .issuerCN: return mismatch(identity.issuer.values(of: "CN"), pattern, absent: "issuer has no CN")
        case .issuerDN:
            return mismatch(identity.issuer.attributes.isEmpty ? [] : [identity.issuer.rfc2253], pattern,
                            absent: "issuer DN is empty")
        case .dns: return mismatch(identity.dnsNames, pattern, absent: "certificate has no DNS SAN")
        case .uri: return mismatch(identity.uris, pattern, absent: "certificate has no URI SAN")
        case .spiffeID:
            if let index = soleSPIFFEURI(of: identity) { return mismatch([identity.uris[index]], pattern, absent: "") }
            let count = identity.uris.filter(isSPIFFEURI).count
            return count == 0
                ? "certificate has no SPIFFE ID"
                : "certificate has \(count) spiffe:// URI SANs, so no single SPIFFE ID"
        case .email: return mismatch(identity.emails, pattern, absent: "certificate has no email SAN")
        case .ip:
            return mismatch(identity.ipAddresses.map(\.description), pattern, absent: "certificate has no IP SAN",
                            verb: ("is not in", "is in"))
        case .certificateSHA256:
            return mismatch(identity.certificateSHA256.isEmpty ? [] : [identity.fingerprint], pattern,
                            absent: "certificate fingerprint is unknown")
        case .spkiSHA256:
            return mismatch(identity.spkiSHA256.isEmpty ? [] : [identity.spkiFingerprint], pattern,
                            absent: "certificate SPKI fingerprint is unknown")
        }
    }
}

/// Longest certificate value quoted in a decision; longer ones end in `…`.
let explainedValueLimit = 128

private func mismatch(
    _ values: [String], _ pattern: String, absent: String,
    verb: (single: String, plural: String) = ("does not match", "matches")
) -> String {
    switch values.count {
    case 0:
        return absent
    case 1:
        return "\(singleQuoted(values[0], limit: explainedValueLimit)) \(verb.single) \(pattern)"
    default:
        let shown = values.prefix(3).map { singleQuoted($0, limit: explainedValueLimit) }.joined(separator: ", ")
        let more = values.count > 3 ? " (and \(values.count - 3) more)" : ""
        return "none of \(shown)\(more) \(verb.plural) \(pattern)"
    }
}

// Plain index loops: no closure contexts and no element copies on the evaluation path.

@inline(__always)
func attribute(_ type: StaticString, of name: DistinguishedName, matches pattern: Pattern) -> Bool {
    let attributes = name.attributes
    for index in attributes.indices where isType(attributes[index].type, type) {
        if pattern.matches(attributes[index].value) { return true }
    }
    return false
}

/// `type == expected` for the short ASCII attribute names, without a general string comparison.
@inline(__always)
func isType(_ type: String, _ expected: StaticString) -> Bool {
    type.withUTF8Bytes { bytes in
        guard bytes.count == expected.utf8CodeUnitCount else { return false }
        let start = expected.utf8Start
        for index in 0..<bytes.count where bytes[index] != start[index] { return false }
        return true
    }
}

@inline(__always)
func any(of values: [String], matches pattern: Pattern) -> Bool {
    for index in values.indices where pattern.matches(values[index]) { return true }
    return false
}

@inline(__always)
func any(of addresses: [IPAddress], in range: IPRange) -> Bool {
    for index in addresses.indices where range.contains(addresses[index]) { return true }
    return false
}

private func isSPIFFEURI(_ uri: String) -> Bool {
    uri.withUTF8Bytes { bytes in
        let prefix: StaticString = "spiffe://"
        guard bytes.count >= prefix.utf8CodeUnitCount else { return false }
        let start = prefix.utf8Start
        for index in 0..<prefix.utf8CodeUnitCount where asciiLowercase(bytes[index]) != start[index] {
            return false
        }
        return true
    }
}

/// Index of the single `spiffe://` URI SAN (same rule as `PeerIdentity.spiffeID`), without allocating.
func soleSPIFFEURI(of identity: PeerIdentity) -> Int? {
    var found: Int?
    for (index, uri) in identity.uris.enumerated() where isSPIFFEURI(uri) {
        if found != nil { return nil }
        found = index
    }
    return found
}
