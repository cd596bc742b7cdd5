import COpenSSL
import COpenSSLShims
import Policy

/// Reads a certificate into a `PeerIdentity`, recording anything ambiguous as an anomaly instead of
/// guessing (two CNs, NUL bytes, malformed or duplicated SAN extensions, bad IP SAN lengths).
enum IdentityExtractor {
    static func extract(_ cert: OpaquePointer) -> PeerIdentity {
        var identity = PeerIdentity()
        var anomalies: [String] = []

        identity.subject = distinguishedName(X509_get_subject_name(cert), label: "subject", anomalies: &anomalies)
        identity.issuer = distinguishedName(X509_get_issuer_name(cert), label: "issuer", anomalies: &anomalies)
        let cnCount = identity.subject.values(of: "CN").count
        if cnCount > 1 { anomalies.append("subject has \(cnCount) CN attributes") }

        var names: OpaquePointer?
        switch pc_x509_subject_alt_names(cert, &names) {
        case 1:
            let count = pc_general_names_count(names)
            for index in 0..<count {
                var data: UnsafePointer<UInt8>?
                var length: Int32 = 0
                let type = pc_general_name_at(names, index, &data, &length)
                guard let data, length >= 0 else { continue }
                let bytes = Array(UnsafeBufferPointer(start: data, count: Int(length)))
                switch type {
                case GEN_DNS: if let s = ia5(bytes, "DNS", &anomalies) { identity.dnsNames.append(s) }
                case GEN_URI: if let s = ia5(bytes, "URI", &anomalies) { identity.uris.append(s) }
                case GEN_EMAIL: if let s = ia5(bytes, "email", &anomalies) { identity.emails.append(s) }
                case GEN_IPADD:
                    if let ip = IPAddress(bytes: bytes) {
                        identity.ipAddresses.append(ip)
                    } else {
                        anomalies.append("IP SAN has \(bytes.count) bytes")
                    }
                default: break
                }
            }
            pc_general_names_free(names)
        case 0: break
        default: anomalies.append("malformed subjectAltName extension")
        }
        if identity.uris.filter({ $0.lowercased().hasPrefix("spiffe://") }).count > 1 {
            anomalies.append("certificate has more than one SPIFFE ID")
        }

        if let serial = X509_get0_serialNumber(cert), let bn = ASN1_INTEGER_to_BN(serial, nil) {
            if let text = BN_bn2hex(bn) {
                identity.serialHex = String(cString: text).lowercased()
                CRYPTO_free(text, #fileID, #line)
            }
            BN_free(bn)
        }

        var digest = [UInt8](repeating: 0, count: 32)
        var digestLength: UInt32 = 0
        if X509_digest(cert, EVP_sha256(), &digest, &digestLength) == 1 {
            identity.certificateSHA256 = digest
        }
        var spki = [UInt8](repeating: 0, count: 32)
        if pc_x509_spki_sha256(cert, &spki) == 0 { identity.spkiSHA256 = spki }

        var seconds: Int64 = 0
        if pc_asn1_time_to_unix(X509_get0_notBefore(cert), &seconds) == 0 { identity.notBefore = seconds }
        if pc_asn1_time_to_unix(X509_get0_notAfter(cert), &seconds) == 0 { identity.notAfter = seconds }

        identity.anomalies = anomalies
        return identity
    }

    private static func distinguishedName(_ name: OpaquePointer?, label: String,
                                          anomalies: inout [String]) -> DistinguishedName {
        guard let name else { return DistinguishedName() }
        var attributes: [DistinguishedName.Attribute] = []
        var typeBuffer = [CChar](repeating: 0, count: 128)
        for index in 0..<X509_NAME_entry_count(name) {
            var utf8: UnsafeMutablePointer<UInt8>?
            let length = pc_x509_name_entry(name, index, &typeBuffer, typeBuffer.count, &utf8)
            let type = typeBuffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            guard length >= 0, let utf8 else {
                anomalies.append("\(label) \(type) attribute cannot be decoded")
                continue
            }
            let bytes = UnsafeBufferPointer(start: utf8, count: Int(length))
            if bytes.contains(0) {
                anomalies.append("\(label) \(type) contains a NUL byte")
            } else {
                attributes.append(.init(type: type, value: String(decoding: bytes, as: UTF8.self)))
            }
            CRYPTO_free(utf8, #fileID, #line)
        }
        return DistinguishedName(attributes)
    }

    /// IA5String SAN contents: printable ASCII only; anything else is an anomaly, not a value.
    private static func ia5(_ bytes: [UInt8], _ kind: String, _ anomalies: inout [String]) -> String? {
        if bytes.isEmpty {
            anomalies.append("\(kind) SAN is empty")
            return nil
        }
        if bytes.contains(0) {
            anomalies.append("\(kind) SAN contains a NUL byte")
            return nil
        }
        if bytes.contains(where: { $0 < 0x21 || $0 > 0x7e }) {
            anomalies.append("\(kind) SAN contains a non-printable or non-ASCII byte")
            return nil
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
