import Foundation
import Policy
import Testing
import TLS

/// `CertificateMinter.identity(ofDER:)`, the entry point of the identity-der fuzz target (Fuzz/).
@Suite struct IdentityFromDERTests {
    static func der(ofPEM pem: String) throws -> [UInt8] {
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        return try #require(Data(base64Encoded: body).map(Array.init))
    }

    @Test func derGivesTheSameIdentityAsPEM() throws {
        let ca = try CertificateMinter.makeCA(commonName: "DER CA")
        let leaf = try CertificateMinter.issue(subject: .init([("CN", "client-1"), ("O", "Portcullis")]), issuer: ca,
                                               san: "URI:spiffe://example.org/a,DNS:a.example.org,IP:10.0.0.1",
                                               extendedKeyUsage: "clientAuth")
        let fromDER = try #require(CertificateMinter.identity(ofDER: Self.der(ofPEM: leaf.certificatePEM)))
        #expect(fromDER == (try CertificateMinter.identity(ofPEM: leaf.certificatePEM)))
        #expect(fromDER.commonName == "client-1")
        #expect(fromDER.spiffeID == "spiffe://example.org/a")
        #expect(fromDER.anomalies.isEmpty)
    }

    @Test func notACertificateGivesNil() throws {
        let ca = try CertificateMinter.makeCA(commonName: "DER CA")
        let der = try Self.der(ofPEM: ca.certificatePEM)
        #expect(CertificateMinter.identity(ofDER: []) == nil)
        #expect(CertificateMinter.identity(ofDER: Array(der.prefix(der.count / 2))) == nil)
        #expect(CertificateMinter.identity(ofDER: Array("-----BEGIN CERTIFICATE-----".utf8)) == nil)
    }
}
