/// The PROXY protocol v2 header a server-mode listener with `proxy-protocol: v2` writes to its target before
/// the client's first byte (haproxy's proxy-protocol.txt, section 2.2): who the client is, where it connected,
/// and what the TLS handshake established.
///
/// The type numbers below are public API (README, "PROXY protocol v2"): backends parse them; never renumber.
public enum ProxyProtocolHeader {
    /// `\r\n\r\n\0\r\nQUIT\n`.
    public static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// Version 2, command PROXY.
    public static let versionCommand: UInt8 = 0x21
    public static let familyTCP4: UInt8 = 0x11
    public static let familyTCP6: UInt8 = 0x21
    /// AF_UNIX, SOCK_STREAM: a client of a `unix:` listener. The spec's address block is then two 108-byte
    /// `sun_path`s (source, destination), NUL-padded.
    public static let familyUnixStream: UInt8 = 0x31
    static let unixPathLength = 108

    /// TLV types.
    public enum TLV {
        /// The server name the client sent (SNI), when it sent one.
        public static let authority: UInt8 = 0x02
        /// The connection id of the audit line (`conn.id`), decimal ASCII: unique within one process run.
        public static let uniqueID: UInt8 = 0x05
        /// The TLS block: client flags, verify result, then the `SSL*` sub-TLVs.
        public static let ssl: UInt8 = 0x20
        public static let sslVersion: UInt8 = 0x21
        public static let sslCommonName: UInt8 = 0x22
        public static let sslCipher: UInt8 = 0x23
        /// Custom (PP2_TYPE_MIN_CUSTOM = 0xE0): the client's SPIFFE ID, or its first URI SAN when it has no
        /// SPIFFE ID.
        public static let peerURI: UInt8 = 0xE0
        /// Custom: the name of the policy rule that admitted the client.
        public static let ruleName: UInt8 = 0xE1
    }

    /// PP2_CLIENT_* bits of the TLS block's `client` byte.
    public enum ClientFlag {
        public static let ssl: UInt8 = 0x01
        /// The client presented its certificate on this connection (a full handshake).
        public static let certificateOnConnection: UInt8 = 0x02
        /// The client presented a certificate on the TLS session this connection belongs to.
        public static let certificateOnSession: UInt8 = 0x04
    }

    /// An IP address (4 or 16 bytes, network order) and port.
    public struct Endpoint: Sendable, Equatable {
        public var ip: [UInt8]
        public var port: UInt16

        public init(ip: [UInt8], port: UInt16) {
            precondition(ip.count == 4 || ip.count == 16, "an IP address has 4 or 16 bytes, not \(ip.count)")
            self.ip = ip
            self.port = port
        }

        /// `::ffff:a.b.c.d` as the IPv4 address it is (a dual-stack socket reports IPv4 clients that way).
        var unmapped: Endpoint {
            guard ip.count == 16, ip[0..<10].allSatisfy({ $0 == 0 }), ip[10] == 0xFF, ip[11] == 0xFF else { return self }
            return Endpoint(ip: Array(ip[12...]), port: port)
        }

        var asIPv6: Endpoint {
            ip.count == 16 ? self : Endpoint(ip: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] + ip, port: port)
        }
    }

    /// What the handshake established about the client.
    public struct TLSFacts: Sendable, Equatable {
        public var version: String
        public var cipher: String
        /// Whether the session was resumed (then the certificate was presented on an earlier connection).
        public var resumed: Bool
        public var commonName: String?
        /// The SPIFFE ID, or else the first URI SAN.
        public var peerURI: String?
        public var ruleName: String?
        public var serverName: String?
        public var connectionID: UInt64?

        public init(version: String, cipher: String, resumed: Bool = false, commonName: String? = nil, peerURI: String? = nil,
                    ruleName: String? = nil, serverName: String? = nil, connectionID: UInt64? = nil) {
            self.version = version
            self.cipher = cipher
            self.resumed = resumed
            self.commonName = commonName
            self.peerURI = peerURI
            self.ruleName = ruleName
            self.serverName = serverName
            self.connectionID = connectionID
        }
    }

    /// Both ends of the client's connection.
    public enum Addresses: Sendable, Equatable {
        case inet(source: Endpoint, destination: Endpoint)
        /// `source`: the client's own socket path (empty: Unix clients are usually unnamed); `destination`: the
        /// listening socket's path. Each at most 107 bytes.
        case unix(source: String, destination: String)
    }

    /// The header's longest possible length: 16 fixed bytes and a 16-bit length.
    public static let maximumLength = 16 + Int(UInt16.max)

    /// The whole header. Both addresses go out in one family: IPv4 when both are IPv4 (or IPv4-mapped IPv6),
    /// IPv6 otherwise. Returns `nil` when the TLVs would not fit the 16-bit length field (values taken from a
    /// certificate are not truncated: a truncated identity would be a wrong one).
    public static func encode(source: Endpoint, destination: Endpoint, tls: TLSFacts) -> [UInt8]? {
        encode(addresses: .inet(source: source, destination: destination), tls: tls)
    }

    /// The whole header for either kind of client (see `encode(source:destination:tls:)`); a Unix client's
    /// header has the family AF_UNIX/STREAM and the two paths. Nil when the TLVs would not fit.
    public static func encode(addresses: Addresses, tls: TLSFacts) -> [UInt8]? {
        var body: [UInt8] = []
        body.reserveCapacity(256)
        let family: UInt8
        switch addresses {
        case .inet(let source, let destination):
            var src = source.unmapped, dst = destination.unmapped
            if src.ip.count != dst.ip.count {
                src = src.asIPv6
                dst = dst.asIPv6
            }
            body += src.ip
            body += dst.ip
            append16(src.port, to: &body)
            append16(dst.port, to: &body)
            family = src.ip.count == 4 ? familyTCP4 : familyTCP6
        case .unix(let source, let destination):
            for path in [source, destination] {
                let bytes = Array(path.utf8.prefix(unixPathLength - 1))
                body += bytes
                body += [UInt8](repeating: 0, count: unixPathLength - bytes.count)
            }
            family = familyUnixStream
        }

        var ssl: [UInt8] = [ClientFlag.ssl | ClientFlag.certificateOnSession | (tls.resumed ? 0 : ClientFlag.certificateOnConnection)]
        ssl += [0, 0, 0, 0]  // verify: 0 = the certificate verified (unverified clients never get this far)
        var fits = appendTLV(TLV.sslVersion, Array(tls.version.utf8), to: &ssl)
        if let cn = tls.commonName { fits = fits && appendTLV(TLV.sslCommonName, Array(cn.utf8), to: &ssl) }
        fits = fits && appendTLV(TLV.sslCipher, Array(tls.cipher.utf8), to: &ssl)

        if let name = tls.serverName { fits = fits && appendTLV(TLV.authority, Array(name.utf8), to: &body) }
        if let id = tls.connectionID { fits = fits && appendTLV(TLV.uniqueID, Array(String(id).utf8), to: &body) }
        fits = fits && appendTLV(TLV.ssl, ssl, to: &body)
        if let uri = tls.peerURI { fits = fits && appendTLV(TLV.peerURI, Array(uri.utf8), to: &body) }
        if let rule = tls.ruleName { fits = fits && appendTLV(TLV.ruleName, Array(rule.utf8), to: &body) }

        guard fits, body.count <= Int(UInt16.max) else { return nil }
        var header = signature
        header.reserveCapacity(16 + body.count)
        header.append(versionCommand)
        header.append(family)
        append16(UInt16(body.count), to: &header)
        header += body
        return header
    }

    private static func append16(_ value: UInt16, to bytes: inout [UInt8]) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(value & 0xFF))
    }

    /// `false` (and nothing appended) when the value is too long for a TLV's 16-bit length.
    private static func appendTLV(_ type: UInt8, _ value: [UInt8], to bytes: inout [UInt8]) -> Bool {
        guard value.count <= Int(UInt16.max) else { return false }
        bytes.append(type)
        append16(UInt16(value.count), to: &bytes)
        bytes += value
        return true
    }
}
