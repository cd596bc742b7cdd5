// Fuzz target identity-der: certificate identity extraction (Sources/TLS/IdentityExtractor.swift) from
// arbitrary DER, through `CertificateMinter.identity(ofDER:)` (OpenSSL's d2i_X509, then the same extraction
// the handshake uses), and the policy evaluation of whatever identity comes out.
import FuzzSupport
import Policy
import TLS

@_cdecl("FuzzIdentityDER_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, fuzz)
}

let policy = AccessPolicy(rules: [
    try! AccessRule(name: "cn", matchers: [try! Matcher(kind: .cn, value: "client-*")]),
    try! AccessRule(name: "mesh", matchers: [try! Matcher(kind: .spiffeID, value: "spiffe://example.org/**")]),
    try! AccessRule(name: "dns", matchers: [try! Matcher(kind: .dns, value: "*.example.org")]),
    try! AccessRule(name: "ip", matchers: [try! Matcher(kind: .ip, value: "10.0.0.0/8")]),
    try! AccessRule(name: "mail", matchers: [try! Matcher(kind: .email, value: "*@example.org")]),
    try! AccessRule(name: "issuer", matchers: [try! Matcher(kind: .issuerDN, value: "CN=Fuzz CA,O=Portcullis")]),
])

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let identity = CertificateMinter.identity(ofDER: bytes(data, size)) else { return 0 }
    // What the extractor promises: IA5 SAN values are printable ASCII, no NUL in any kept value, IP SANs of
    // 4 or 16 bytes, a serial in lowercase hex.
    for value in identity.dnsNames + identity.uris + identity.emails {
        fuzzCheck(!value.isEmpty && value.utf8.allSatisfy { $0 >= 0x21 && $0 <= 0x7E }, "SAN value \(value.debugDescription)")
    }
    for attribute in identity.subject.attributes + identity.issuer.attributes {
        fuzzCheck(!attribute.value.utf8.contains(0), "DN value with NUL: \(attribute.value.debugDescription)")
    }
    fuzzCheck(identity.ipAddresses.allSatisfy { $0.bytes.count == 4 || $0.bytes.count == 16 }, "IP SAN length")
    fuzzCheck(identity.serialHex.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || $0 == 0x2D },
              "serial \(identity.serialHex)")
    if identity.subject.values(of: "CN").count > 1 { fuzzCheck(!identity.anomalies.isEmpty, "two CNs without an anomaly") }
    let decision = policy.evaluate(identity)
    if !identity.anomalies.isEmpty { fuzzCheck(!decision.isAllowed, "identity with anomalies admitted") }
    _ = decision.description
    _ = identity.subject.rfc2253
    _ = identity.subjectAlternativeNames
    _ = identity.spiffeID
    return 0
}
