/// What a verified peer certificate says about its holder, extracted once per handshake by the TLS bridge.
///
/// Pure data: the policy, the audit log and `check` read it; nothing here touches OpenSSL.
/// Values are decoded UTF-8. Anything the extractor could not read unambiguously (two CNs, an embedded NUL,
/// a malformed SAN extension) is recorded in `anomalies`, and a peer with any anomaly is never admitted.
public struct PeerIdentity: Sendable, Equatable {
    /// Subject distinguished name, attributes in certificate order.
    public var subject: DistinguishedName
    /// Issuer distinguished name, attributes in certificate order.
    public var issuer: DistinguishedName
    /// Subject alternative names, by kind, in certificate order.
    public var dnsNames: [String]
    public var uris: [String]
    public var emails: [String]
    public var ipAddresses: [IPAddress]
    /// Serial number as lowercase hex without separators (e.g. "0a1b").
    public var serialHex: String
    /// SHA-256 of the DER certificate (32 bytes).
    public var certificateSHA256: [UInt8]
    /// SHA-256 of the DER SubjectPublicKeyInfo (32 bytes), as used for SPKI pins.
    public var spkiSHA256: [UInt8]
    /// Validity, in seconds since the Unix epoch.
    public var notBefore: Int64
    public var notAfter: Int64
    /// Problems that make the identity ambiguous; non-empty means "deny".
    public var anomalies: [String]

    public init(
        subject: DistinguishedName = DistinguishedName(),
        issuer: DistinguishedName = DistinguishedName(),
        dnsNames: [String] = [],
        uris: [String] = [],
        emails: [String] = [],
        ipAddresses: [IPAddress] = [],
        serialHex: String = "",
        certificateSHA256: [UInt8] = [],
        spkiSHA256: [UInt8] = [],
        notBefore: Int64 = 0,
        notAfter: Int64 = 0,
        anomalies: [String] = []
    ) {
        self.subject = subject
        self.issuer = issuer
        self.dnsNames = dnsNames
        self.uris = uris
        self.emails = emails
        self.ipAddresses = ipAddresses
        self.serialHex = serialHex
        self.certificateSHA256 = certificateSHA256
        self.spkiSHA256 = spkiSHA256
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.anomalies = anomalies
    }

    /// The subject's common name when there is exactly one (two CNs are an anomaly).
    public var commonName: String? {
        let names = subject.values(of: "CN")
        return names.count == 1 ? names[0] : nil
    }

    /// The SPIFFE ID: the single `spiffe://` URI SAN. `nil` when there is none or more than one.
    public var spiffeID: String? {
        let ids = uris.filter { $0.lowercased().hasPrefix("spiffe://") }
        return ids.count == 1 ? ids[0] : nil
    }

    /// Lowercase hex of `certificateSHA256`, prefixed `sha256:`.
    public var fingerprint: String { "sha256:" + hex(certificateSHA256) }
    /// Lowercase hex of `spkiSHA256`, prefixed `sha256:`.
    public var spkiFingerprint: String { "sha256:" + hex(spkiSHA256) }

    /// All SANs as `KIND:value` strings (DNS, URI, email, IP), for logs.
    public var subjectAlternativeNames: [String] {
        dnsNames.map { "DNS:" + $0 } + uris.map { "URI:" + $0 } + emails.map { "email:" + $0 }
            + ipAddresses.map { "IP:" + $0.description }
    }
}

/// A distinguished name as an ordered list of attributes (`CN`, `OU`, `O`, `L`, `ST`, `C`, … or a dotted OID).
public struct DistinguishedName: Sendable, Equatable {
    public struct Attribute: Sendable, Equatable {
        /// Short name as OpenSSL prints it (`CN`, `OU`, `O`, `L`, `ST`, `C`, `emailAddress`, …) or a dotted OID.
        public var type: String
        public var value: String
        public init(type: String, value: String) {
            self.type = type
            self.value = value
        }
    }

    public var attributes: [Attribute]

    public init(_ attributes: [Attribute] = []) {
        self.attributes = attributes
    }

    /// Values of every attribute of the given short name, in order.
    public func values(of type: String) -> [String] {
        attributes.filter { $0.type == type }.map(\.value)
    }

    /// RFC 2253 order and escaping (most significant last in the certificate, first here reversed): `CN=a,OU=b,O=c`.
    public var rfc2253: String {
        attributes.reversed().map { "\($0.type)=\(escapeRFC2253($0.value))" }.joined(separator: ",")
    }
}

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public var isIPv4: Bool { bytes.count == 4 }

    /// Parses dotted IPv4 or RFC 4291 IPv6 text (with `::` compression and an embedded IPv4 tail).
    public init?(_ text: String) {
        if let v4 = IPAddress.parseIPv4(Substring(text)) {
            self.bytes = v4
        } else if let v6 = IPAddress.parseIPv6(text) {
            self.bytes = v6
        } else {
            return nil
        }
    }

    public var description: String {
        if isIPv4 { return bytes.map(String.init).joined(separator: ".") }
        // RFC 5952 §5: an IPv4-mapped address keeps its dotted tail.
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            return "::ffff:" + bytes[12...].map(String.init).joined(separator: ".")
        }
        var groups: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])) }
        // RFC 5952: compress the longest run (length >= 2) of zero groups.
        var bestStart = -1, bestLength = 0, runStart = -1
        for i in 0...8 {
            if i < 8 && groups[i] == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength { bestStart = runStart; bestLength = i - runStart }
                runStart = -1
            }
        }
        if bestLength < 2 { return groups.map { String($0, radix: 16) }.joined(separator: ":") }
        let head = groups[..<bestStart].map { String($0, radix: 16) }.joined(separator: ":")
        let tail = groups[(bestStart + bestLength)...].map { String($0, radix: 16) }.joined(separator: ":")
        return head + "::" + tail
    }

    static func parseIPv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), part.allSatisfy(\.isNumber),
                  !(part.count > 1 && part.first == "0"), let value = UInt8(part)
            else { return nil }
            out.append(value)
        }
        return out
    }

    static func parseIPv6(_ text: String) -> [UInt8]? {
        guard text.utf8.contains(UInt8(ascii: ":")) else { return nil }
        // Split at the one allowed "::" (pure stdlib: no Foundation here).
        var halves: [Substring] = []
        var index = text.startIndex, segmentStart = text.startIndex
        while index < text.endIndex {
            let next = text.index(after: index)
            if text[index] == ":", next < text.endIndex, text[next] == ":" {
                halves.append(text[segmentStart..<index])
                index = text.index(after: next)
                segmentStart = index
            } else {
                index = next
            }
        }
        halves.append(text[segmentStart...])
        guard halves.count <= 2 else { return nil }
        func groups(_ s: Substring, isLast: Bool) -> [UInt8]? {
            if s.isEmpty { return [] }
            var out: [UInt8] = []
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            for (index, part) in parts.enumerated() {
                // An embedded IPv4 address may only end the whole address.
                if isLast, index == parts.count - 1, part.contains(".") {
                    guard let v4 = parseIPv4(part) else { return nil }
                    out += v4
                    continue
                }
                guard (1...4).contains(part.utf8.count), part.utf8.allSatisfy(isHexDigit),
                      let value = UInt16(part, radix: 16)
                else { return nil }
                out += [UInt8(value >> 8), UInt8(value & 0xff)]
            }
            return out
        }
        guard let head = groups(halves[0], isLast: halves.count == 1) else { return nil }
        if halves.count == 1 { return head.count == 16 ? head : nil }
        guard let tail = groups(halves[1], isLast: true), head.count + tail.count <= 14 else { return nil }
        return head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
    }
}

func isHexDigit(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
         UInt8(ascii: "A")...UInt8(ascii: "F"):
        return true
    default:
        return false
    }
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0xf)])
    }
    return String(decoding: out, as: UTF8.self)
}

private func escapeRFC2253(_ value: String) -> String {
    var out = ""
    for (index, ch) in value.enumerated() {
        switch ch {
        case ",", "+", "\"", "\\", "<", ">", ";", "=":
            out.append("\\"); out.append(ch)
        case "#" where index == 0, " " where index == 0:
            out.append("\\"); out.append(ch)
        default:
            out.append(ch)
        }
    }
    if out.hasSuffix(" ") { out.removeLast(); out += "\\ " }
    return out
}
