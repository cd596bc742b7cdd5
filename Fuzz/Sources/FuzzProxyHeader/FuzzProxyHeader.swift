// Fuzz target proxy-header: the PROXY protocol v2 header builder (Sources/Proxy/ProxyProtocolHeader.swift)
// with arbitrary addresses and TLS facts (certificate-derived strings of any bytes and length). Every header
// it builds is parsed back here, independently, and must say exactly what was put in.
//
// Input: flags byte, source (1 + 4|16 bytes, port), destination (same), connection id, a repeat count for the
// long strings, then newline-separated strings: version, cipher, CN, peer URI, rule name, server name.
import FuzzSupport
import Proxy

@_cdecl("FuzzProxyHeader_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, fuzz)
}

func endpoint(_ input: inout FuzzReader) -> ProxyProtocolHeader.Endpoint {
    let family = input.byte()
    var ip = input.take(family & 1 == 0 ? 4 : 16)
    ip += [UInt8](repeating: 0, count: (family & 1 == 0 ? 4 : 16) - ip.count)
    if family & 2 != 0, ip.count == 16 {  // IPv4-mapped IPv6, as a dual-stack socket reports IPv4 peers
        ip.replaceSubrange(0..<12, with: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF])
    }
    return .init(ip: ip, port: input.uint16())
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzReader(bytes(data, size))
    let flags = input.byte()
    let source = endpoint(&input), destination = endpoint(&input)
    let connectionID = input.uint64()
    let repeats = Int(input.uint16() % 2048) + 1  // up to ~2 K copies, to reach the 64 KiB limits
    func text() -> String { String(decoding: input.field(), as: UTF8.self) }
    func optional(_ bit: UInt8) -> String? {
        let value = text()
        return flags & bit != 0 ? value : nil
    }
    let version = text(), cipher = text()
    let commonName = optional(0x02)
    var peerURI = optional(0x04)
    if flags & 0x40 != 0, let uri = peerURI { peerURI = String(repeating: uri, count: repeats) }
    let ruleName = optional(0x08), serverName = optional(0x10)
    let facts = ProxyProtocolHeader.TLSFacts(
        version: version, cipher: cipher, resumed: flags & 0x01 != 0, commonName: commonName, peerURI: peerURI,
        ruleName: ruleName, serverName: serverName, connectionID: flags & 0x20 != 0 ? connectionID : nil)

    guard let header = ProxyProtocolHeader.encode(source: source, destination: destination, tls: facts) else {
        // Refused only when something does not fit a 16-bit length.
        let values = [version, cipher, commonName, peerURI, ruleName, serverName].compactMap { $0?.utf8.count }
        fuzzCheck(values.contains { $0 > 0xFFFF } || values.reduce(0, +) + 100 > 0xFFFF, "header refused though it fits")
        return 0
    }
    fuzzCheck(header.count <= ProxyProtocolHeader.maximumLength, "header of \(header.count) bytes")
    let parsed = parse(header)
    fuzzCheck(parsed != nil, "header does not parse: \(header.prefix(32))")
    guard let parsed else { return 0 }

    // Addresses: both in one family, IPv4 when both are IPv4 (or mapped), each as given.
    let (src, dst) = (unmapped(source), unmapped(destination))
    if src.ip.count == 4 && dst.ip.count == 4 {
        fuzzCheck(parsed.family == ProxyProtocolHeader.familyTCP4 && parsed.source == src.ip && parsed.destination == dst.ip,
                  "IPv4 addresses")
    } else {
        fuzzCheck(parsed.family == ProxyProtocolHeader.familyTCP6 && parsed.source == mapped(src.ip) && parsed.destination == mapped(dst.ip),
                  "IPv6 addresses")
    }
    fuzzCheck(parsed.ports == (source.port, destination.port), "ports")

    typealias T = ProxyProtocolHeader.TLV
    fuzzCheck(parsed.tlvs[T.authority] == serverName.map { Array($0.utf8) }, "authority TLV")
    fuzzCheck(parsed.tlvs[T.uniqueID] == (flags & 0x20 != 0 ? Array(String(connectionID).utf8) : nil), "unique id TLV")
    fuzzCheck(parsed.tlvs[T.peerURI] == peerURI.map { Array($0.utf8) }, "peer URI TLV")
    fuzzCheck(parsed.tlvs[T.ruleName] == ruleName.map { Array($0.utf8) }, "rule name TLV")
    guard let ssl = parsed.tlvs[T.ssl], ssl.count >= 5 else {
        fuzzCheck(false, "no SSL TLV")
        return 0
    }
    let clientFlags = ProxyProtocolHeader.ClientFlag.ssl | ProxyProtocolHeader.ClientFlag.certificateOnSession
        | (flags & 0x01 != 0 ? 0 : ProxyProtocolHeader.ClientFlag.certificateOnConnection)
    fuzzCheck(ssl[0] == clientFlags && ssl[1..<5].allSatisfy { $0 == 0 }, "SSL client flags / verify")
    let sub = tlvs(Array(ssl[5...]))
    fuzzCheck(sub != nil, "SSL sub-TLVs do not parse")
    fuzzCheck(sub?[T.sslVersion] == Array(version.utf8) && sub?[T.sslCipher] == Array(cipher.utf8)
              && sub?[T.sslCommonName] == commonName.map { Array($0.utf8) }, "SSL sub-TLVs")
    return 0
}

func unmapped(_ e: ProxyProtocolHeader.Endpoint) -> ProxyProtocolHeader.Endpoint {
    guard e.ip.count == 16, e.ip[0..<10].allSatisfy({ $0 == 0 }), e.ip[10] == 0xFF, e.ip[11] == 0xFF else { return e }
    return .init(ip: Array(e.ip[12...]), port: e.port)
}

func mapped(_ ip: [UInt8]) -> [UInt8] { ip.count == 16 ? ip : [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] + ip }

struct Parsed {
    var family: UInt8
    var source: [UInt8], destination: [UInt8]
    var ports: (UInt16, UInt16)
    var tlvs: [UInt8: [UInt8]]
}

/// A PROXY v2 reader (haproxy's proxy-protocol.txt 2.2), strict: exact length, no duplicate TLV types.
func parse(_ header: [UInt8]) -> Parsed? {
    guard header.count >= 16, Array(header[0..<12]) == ProxyProtocolHeader.signature,
          header[12] == ProxyProtocolHeader.versionCommand else { return nil }
    let family = header[13]
    let length = Int(header[14]) << 8 | Int(header[15])
    guard header.count == 16 + length else { return nil }
    let size = family == ProxyProtocolHeader.familyTCP4 ? 4 : family == ProxyProtocolHeader.familyTCP6 ? 16 : 0
    guard size > 0, length >= 2 * size + 4 else { return nil }
    let body = Array(header[16...])
    let src = Array(body[0..<size]), dst = Array(body[size..<2 * size])
    let ports = (UInt16(body[2 * size]) << 8 | UInt16(body[2 * size + 1]), UInt16(body[2 * size + 2]) << 8 | UInt16(body[2 * size + 3]))
    guard let tlvs = tlvs(Array(body[(2 * size + 4)...])) else { return nil }
    return Parsed(family: family, source: src, destination: dst, ports: ports, tlvs: tlvs)
}

func tlvs(_ bytes: [UInt8]) -> [UInt8: [UInt8]]? {
    var result: [UInt8: [UInt8]] = [:]
    var index = 0
    while index < bytes.count {
        guard index + 3 <= bytes.count else { return nil }
        let type = bytes[index], length = Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
        guard index + 3 + length <= bytes.count, result[type] == nil else { return nil }
        result[type] = Array(bytes[(index + 3)..<(index + 3 + length)])
        index += 3 + length
    }
    return result
}
