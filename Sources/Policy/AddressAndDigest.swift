/// An IP address or CIDR range: `10.1.2.3`, `::1`, `10.0.0.0/8`, `2001:db8::/32`.
///
/// IPv4 and IPv6 never match each other: `::ffff:10.1.2.3` is not in `10.0.0.0/8`.
public struct IPRange: Sendable, Hashable, CustomStringConvertible {
    public let network: IPAddress
    public let prefixLength: Int

    /// Parses an address or `address/prefix`. Host bits beyond the prefix must be zero.
    public init(_ text: String) throws(PatternError) {
        func invalid(_ reason: String) -> PatternError {
            PatternError(value: text, expected: "IP address or CIDR range", reason: reason)
        }
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else {
            throw invalid("expected an address or CIDR range such as 10.0.0.0/8 or 2001:db8::/32")
        }
        let maximum = address.bytes.count * 8
        var length = maximum
        if parts.count == 2 {
            let digits = parts[1]
            guard !digits.isEmpty, digits.utf8.count <= 3, digits.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                  let value = Int(digits), value <= maximum
            else { throw invalid("the prefix length must be 0-\(maximum)") }
            length = value
        }
        let masked = IPRange.mask(address.bytes, prefixLength: length)
        guard masked == address.bytes else {
            throw invalid("host bits are set beyond /\(length); did you mean \(IPAddress(bytes: masked)!)/\(length)?")
        }
        self.network = address
        self.prefixLength = length
    }

    public init?(network: IPAddress, prefixLength: Int) {
        guard (0...(network.bytes.count * 8)).contains(prefixLength),
              IPRange.mask(network.bytes, prefixLength: prefixLength) == network.bytes
        else { return nil }
        self.network = network
        self.prefixLength = prefixLength
    }

    /// `10.0.0.0/8`, or the bare address for a single host.
    public var description: String {
        prefixLength == network.bytes.count * 8 ? network.description : "\(network)/\(prefixLength)"
    }

    public func contains(_ address: IPAddress) -> Bool {
        guard address.bytes.count == network.bytes.count else { return false }
        var bits = prefixLength
        var index = 0
        while bits >= 8 {
            if address.bytes[index] != network.bytes[index] { return false }
            bits -= 8
            index += 1
        }
        if bits == 0 { return true }
        let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        return address.bytes[index] & mask == network.bytes[index]
    }

    private static func mask(_ bytes: [UInt8], prefixLength: Int) -> [UInt8] {
        var out = bytes
        for index in out.indices {
            let keep = min(max(prefixLength - index * 8, 0), 8)
            out[index] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
        return out
    }
}

/// A SHA-256 pin written `sha256:HEX`: 64 hex digits, any case, optionally with a colon between every byte.
public struct SHA256Fingerprint: Sendable, Hashable, CustomStringConvertible {
    /// 32 bytes.
    public let bytes: [UInt8]

    public init(_ text: String) throws(PatternError) {
        let invalid = PatternError(value: text, expected: "fingerprint", reason: "expected sha256: followed by 64 hex digits")
        let utf8 = Array(text.utf8)
        guard utf8.count > 7, utf8[..<7].map(asciiLowercase).elementsEqual("sha256:".utf8) else { throw invalid }
        var digits = utf8[7...]
        let colon = UInt8(ascii: ":")
        if digits.contains(colon) {
            // Colons only between bytes: AB:CD:…
            let groups = digits.split(separator: colon, omittingEmptySubsequences: false)
            guard groups.count == 32, groups.allSatisfy({ $0.count == 2 }) else { throw invalid }
            digits = ArraySlice(groups.joined())
        }
        guard digits.count == 64, digits.allSatisfy(isHexDigit) else { throw invalid }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        var index = digits.startIndex
        while index < digits.endIndex {
            bytes.append(hexValue(digits[index]) << 4 | hexValue(digits[index + 1]))
            index += 2
        }
        self.bytes = bytes
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// `sha256:` and 64 lowercase hex digits.
    public var description: String { "sha256:" + hex(bytes) }
}

/// A certificate serial number: hex, any case, leading zeros ignored, optional `0x` and colons (`0A:1B`).
public struct SerialNumber: Sendable, Hashable, CustomStringConvertible {
    /// Lowercase hex without leading zeros ("0" for zero).
    public let hex: String
    private let digits: [UInt8]

    public init(_ text: String) throws(PatternError) {
        guard let digits = SerialNumber.normalize(text.utf8) else {
            throw PatternError(value: text, expected: "serial number", reason: "expected hex digits, e.g. 0a1b or 0A:1B")
        }
        self.digits = digits
        self.hex = String(decoding: digits, as: UTF8.self)
    }

    public var description: String { hex }

    public static func == (lhs: SerialNumber, rhs: SerialNumber) -> Bool { lhs.hex == rhs.hex }
    public func hash(into hasher: inout Hasher) { hasher.combine(hex) }

    /// Whether `serialHex` (as `PeerIdentity.serialHex` holds it, or any spelling `init` accepts) is this number.
    public func matches(_ serialHex: String) -> Bool {
        serialHex.withUTF8Bytes { bytes in
            // Compare in place: skip "0x", colons and leading zeros, fold case.
            var index = 0
            if bytes.count >= 2, bytes[0] == UInt8(ascii: "0"), asciiLowercase(bytes[1]) == UInt8(ascii: "x") { index = 2 }
            var position = 0
            var leading = true
            var sawDigit = false
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                if byte == UInt8(ascii: ":") { continue }
                guard isHexDigit(byte) else { return false }
                sawDigit = true
                if leading && byte == UInt8(ascii: "0") { continue }
                leading = false
                guard position < digits.count, digits[position] == asciiLowercase(byte) else { return false }
                position += 1
            }
            guard sawDigit else { return false }
            return position == digits.count || (digits == [UInt8(ascii: "0")] && position == 0)
        }
    }

    private static func normalize(_ text: String.UTF8View) -> [UInt8]? {
        var bytes = Array(text)
        if bytes.count >= 2, bytes[0] == UInt8(ascii: "0"), asciiLowercase(bytes[1]) == UInt8(ascii: "x") {
            bytes.removeFirst(2)
        }
        let colon = UInt8(ascii: ":")
        if bytes.contains(colon) {
            let groups = bytes.split(separator: colon, omittingEmptySubsequences: false)
            guard groups.allSatisfy({ !$0.isEmpty && $0.count <= 2 }) else { return nil }
            bytes = Array(groups.joined())
        }
        guard !bytes.isEmpty, bytes.allSatisfy(isHexDigit) else { return nil }
        var digits = Array(bytes.drop(while: { $0 == UInt8(ascii: "0") }).map(asciiLowercase))
        if digits.isEmpty { digits = [UInt8(ascii: "0")] }
        return digits
    }
}

@inline(__always)
func hexValue(_ digit: UInt8) -> UInt8 {
    switch digit {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
    default: digit - UInt8(ascii: "A") + 10
    }
}
