import Testing
import Proxy

/// Byte-exact checks of the PROXY v2 header against haproxy's proxy-protocol.txt, section 2.2.
@Suite struct ProxyProtocolHeaderTests {
    typealias Header = ProxyProtocolHeader
    let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
        [type, UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
    }

    func tlv(_ type: UInt8, _ text: String) -> [UInt8] { tlv(type, Array(text.utf8)) }

    @Test func ipv4HeaderWithEveryTLVIsByteExact() throws {
        let header = try #require(Header.encode(
            source: .init(ip: [192, 168, 1, 20], port: 51234),
            destination: .init(ip: [127, 0, 0, 1], port: 8443),
            tls: .init(version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", commonName: "client-allowed",
                       peerURI: "spiffe://example.org/w", ruleName: "ops", serverName: "localhost", connectionID: 42)))
        let ssl: [UInt8] = [0x07, 0, 0, 0, 0] + tlv(0x21, "TLSv1.3") + tlv(0x22, "client-allowed") + tlv(0x23, "TLS_AES_256_GCM_SHA384")
        let body: [UInt8] = [192, 168, 1, 20, 127, 0, 0, 1, 0xC8, 0x22, 0x20, 0xFB]
            + tlv(0x02, "localhost") + tlv(0x05, "42") + tlv(0x20, ssl) + tlv(0xE0, "spiffe://example.org/w") + tlv(0xE1, "ops")
        let expected = signature + [0x21, 0x11, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
        #expect(header == expected)
        #expect(Array(header[0..<12]) == signature)
        #expect(header.count == 16 + body.count)
    }

    @Test func ipv6HeaderUsesFamily0x21AndThirtySixAddressBytes() throws {
        let src: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
        let dst: [UInt8] = [UInt8](repeating: 0, count: 15) + [1]
        let header = try #require(Header.encode(
            source: .init(ip: src, port: 1), destination: .init(ip: dst, port: 65535),
            tls: .init(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256")))
        let ssl: [UInt8] = [0x07, 0, 0, 0, 0] + tlv(0x21, "TLSv1.3") + tlv(0x23, "TLS_AES_128_GCM_SHA256")
        let body = src + dst + [0x00, 0x01, 0xFF, 0xFF] + tlv(0x20, ssl)
        #expect(header == signature + [0x21, 0x21, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body)
        #expect(Int(header[14]) << 8 | Int(header[15]) == 36 + 3 + ssl.count)
    }

    @Test func unixClientUsesFamily0x31AndTwoPathsOf108Bytes() throws {
        let header = try #require(Header.encode(
            addresses: .unix(source: "", destination: "/run/p.sock"),
            tls: .init(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256")))
        let ssl: [UInt8] = [0x07, 0, 0, 0, 0] + tlv(0x21, "TLSv1.3") + tlv(0x23, "TLS_AES_128_GCM_SHA256")
        let destination = Array("/run/p.sock".utf8) + [UInt8](repeating: 0, count: 108 - 11)
        let body = [UInt8](repeating: 0, count: 108) + destination + tlv(0x20, ssl)
        #expect(header == signature + [0x21, 0x31, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body)
        #expect(Int(header[14]) << 8 | Int(header[15]) == 216 + 3 + ssl.count)
    }

    @Test func ipv4MappedAddressesGoOutAsIPv4() throws {
        let mapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 1, 2, 3]
        let header = try #require(Header.encode(
            source: .init(ip: mapped, port: 80), destination: .init(ip: [127, 0, 0, 1], port: 443),
            tls: .init(version: "TLSv1.3", cipher: "X")))
        #expect(header[13] == 0x11)
        #expect(Array(header[16..<24]) == [10, 1, 2, 3, 127, 0, 0, 1])
    }

    @Test func mixedFamiliesGoOutAsIPv6WithTheIPv4AddressMapped() throws {
        let v6: [UInt8] = [0xFD] + [UInt8](repeating: 0, count: 14) + [7]
        let header = try #require(Header.encode(
            source: .init(ip: [10, 0, 0, 9], port: 80), destination: .init(ip: v6, port: 443),
            tls: .init(version: "TLSv1.3", cipher: "X")))
        #expect(header[13] == 0x21)
        #expect(Array(header[16..<32]) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 0, 0, 9])
        #expect(Array(header[32..<48]) == v6)
    }

    @Test func aTLVLongerThan255BytesHasATwoByteLength() throws {
        let uri = "spiffe://example.org/" + String(repeating: "a", count: 300)
        let header = try #require(Header.encode(
            source: .init(ip: [127, 0, 0, 1], port: 1), destination: .init(ip: [127, 0, 0, 1], port: 2),
            tls: .init(version: "TLSv1.3", cipher: "X", peerURI: uri)))
        let start = try #require(header.firstIndex(of: 0xE0))
        #expect(Array(header[start...]) == [0xE0, 0x01, 0x41] + Array(uri.utf8))  // 321 = 0x0141
        #expect(Int(header[14]) << 8 | Int(header[15]) == header.count - 16)
    }

    @Test func aResumedSessionDoesNotClaimACertificateOnThisConnection() throws {
        let header = try #require(Header.encode(
            source: .init(ip: [127, 0, 0, 1], port: 1), destination: .init(ip: [127, 0, 0, 1], port: 2),
            tls: .init(version: "TLSv1.3", cipher: "X", resumed: true)))
        // After 16 fixed bytes and 12 address bytes: type 0x20, length (2), then the client byte.
        #expect(header[28] == 0x20)
        #expect(header[31] == 0x05)
    }

    @Test func anIdentityTooLongForTheLengthFieldGivesNoHeader() {
        let huge = String(repeating: "a", count: 70_000)
        let endpoints = (Header.Endpoint(ip: [127, 0, 0, 1], port: 1), Header.Endpoint(ip: [127, 0, 0, 1], port: 2))
        #expect(Header.encode(source: endpoints.0, destination: endpoints.1,
                              tls: .init(version: "TLSv1.3", cipher: "X", peerURI: huge)) == nil)
        #expect(Header.encode(source: endpoints.0, destination: endpoints.1,
                              tls: .init(version: "TLSv1.3", cipher: "X", peerURI: String(huge.prefix(40_000)),
                                         ruleName: String(huge.prefix(30_000)))) == nil)
    }
}
