import Testing
import Policy

@Suite("IPAddress")
struct IPAddressTests {
    @Test("parses and prints in canonical form (RFC 5952 for IPv6)", arguments: [
        ("10.1.2.3", "10.1.2.3"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("::1", "::1"),
        ("::", "::"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("fe80::", "fe80::"),
        ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
        ("::ffff:a01:203", "::ffff:10.1.2.3"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
    ])
    func roundTrip(text: String, canonical: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.description == canonical)
        #expect(IPAddress(canonical) == address)
    }

    @Test("rejects malformed text", arguments: [
        "", " 10.1.2.3", "10.1.2", "10.1.2.3.4", "256.1.1.1", "01.2.3.4", "+1.2.3.4", "1.2.3.-4", "1..2.3",
        ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8::", "12345::", "+1::", "-1::",
        "g::1", "1.2.3.4::", "1.2.3.4::1", "::1.2.3", "::1.2.3.4:1", "fe80::1%eth0", ":1::", "1:", "[::1]", "localhost",
    ])
    func rejects(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func familyComesFromTheByteCount() throws {
        #expect(try #require(IPAddress("10.0.0.1")).isIPv4)
        #expect(try !#require(IPAddress("::ffff:10.0.0.1")).isIPv4)
        #expect(IPAddress(bytes: [127, 0, 0, 1])?.description == "127.0.0.1")
        #expect(IPAddress(bytes: [1, 2, 3]) == nil)
        #expect(IPAddress(bytes: [UInt8](repeating: 0, count: 15) + [1])?.description == "::1")
    }
}

@Suite("IPRange")
struct IPRangeTests {
    @Test("contains addresses of its own family only", arguments: [
        ("10.0.0.0/8", "10.255.1.2", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("10.1.2.3", "10.1.2.3", true),
        ("10.1.2.3", "10.1.2.4", false),
        ("10.1.2.3/32", "10.1.2.3", true),
        ("192.168.4.0/22", "192.168.7.255", true),
        ("192.168.4.0/22", "192.168.8.0", false),
        ("0.0.0.0/0", "8.8.8.8", true),
        ("0.0.0.0/0", "::1", false),
        ("10.0.0.0/8", "::ffff:10.1.2.3", false),
        ("::ffff:0.0.0.0/96", "10.1.2.3", false),
        ("2001:db8::/32", "2001:db8:1::5", true),
        ("2001:db8::/32", "2001:db9::1", false),
        ("2001:db8::/33", "2001:db8:8000::1", false),
        ("::1", "::1", true),
        ("::1", "127.0.0.1", false),
        ("::/0", "10.0.0.1", false),
        ("::/0", "2001:db8::1", true),
    ])
    func contains(range: String, address: String, expected: Bool) throws {
        let parsed = try IPRange(range)
        #expect(parsed.contains(try #require(IPAddress(address))) == expected)
    }

    @Test("prints the network, or the bare address for one host", arguments: [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3"),
        ("10.1.2.3/32", "10.1.2.3"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ])
    func description(range: String, expected: String) throws {
        #expect(try IPRange(range).description == expected)
    }

    @Test("invalid ranges are refused with a reason", arguments: [
        ("10.0.0.0/33", "the prefix length must be 0-32"),
        ("2001:db8::/129", "the prefix length must be 0-128"),
        ("10.0.0.0/", "the prefix length must be 0-32"),
        ("10.0.0.0/-1", "the prefix length must be 0-32"),
        ("10.0.0.0/+8", "the prefix length must be 0-32"),
        ("10.0.0.0/8/8", "the prefix length must be 0-32"),
        ("10.1.2.3/8", "host bits are set beyond /8; did you mean 10.0.0.0/8?"),
        ("2001:db8::1/32", "host bits are set beyond /32; did you mean 2001:db8::/32?"),
        ("example.com", "expected an address or CIDR range such as 10.0.0.0/8 or 2001:db8::/32"),
        ("", "expected an address or CIDR range such as 10.0.0.0/8 or 2001:db8::/32"),
    ])
    func invalid(text: String, reason: String) {
        #expect(throws: PatternError(value: text, expected: "IP address or CIDR range", reason: reason)) {
            try IPRange(text)
        }
    }
}

@Suite("Fingerprints and serial numbers")
struct DigestTests {
    static let upper = digestAHex.uppercased()
    static let colons = stride(from: 0, to: 64, by: 2).map { i in
        let start = upper.index(upper.startIndex, offsetBy: i)
        return String(upper[start..<upper.index(start, offsetBy: 2)])
    }.joined(separator: ":")

    @Test("accepts sha256: with 64 hex digits in any case, colons allowed between bytes", arguments: [
        "sha256:" + digestAHex,
        "sha256:" + upper,
        "SHA256:" + digestAHex,
        "sha256:" + colons,
        "sha256:" + colons.lowercased(),
    ])
    func parses(text: String) throws {
        let pin = try SHA256Fingerprint(text)
        #expect(pin.bytes == digestA)
        #expect(pin.description == "sha256:" + digestAHex)
    }

    @Test("anything else is refused", arguments: [
        digestAHex,
        "sha256:" + String(digestAHex.dropLast()),
        "sha256:" + digestAHex + "0",
        "sha256:" + String(digestAHex.dropLast(2)) + "zz",
        "sha1:" + digestAHex,
        "sha256:",
        "sha256:" + colons + ":",
        "sha256:" + String(colons.dropFirst(3)) + ":0:0",
        "sha256:000" + String(colons.dropFirst(2)),
        "sha256: " + digestAHex,
        "",
    ])
    func rejects(text: String) {
        #expect(throws: PatternError(value: text, expected: "fingerprint", reason: "expected sha256: followed by 64 hex digits")) {
            try SHA256Fingerprint(text)
        }
    }

    @Test("serials compare as hex numbers: any case, leading zeros, 0x and colons ignored", arguments: [
        ("0a1b", "0a1b", true),
        ("A1B", "0a1b", true),
        ("0x0A1B", "a1b", true),
        ("0A:1B", "0a1b", true),
        ("a1b", "0A:1B", true),
        ("0", "00", true),
        ("a1b", "a1c", false),
        ("a1b", "a1b0", false),
        ("a1b", "1a1b", false),
        ("1", "0", false),
        ("a1b", "", false),
    ])
    func serial(pattern: String, presented: String, expected: Bool) throws {
        #expect(try SerialNumber(pattern).matches(presented) == expected)
    }

    @Test("invalid serials are refused", arguments: ["", "xyz", "0x", "a::b", "1 2", "abc:"])
    func invalidSerial(text: String) {
        #expect(throws: PatternError(value: text, expected: "serial number", reason: "expected hex digits, e.g. 0a1b or 0A:1B")) {
            try SerialNumber(text)
        }
    }
}
