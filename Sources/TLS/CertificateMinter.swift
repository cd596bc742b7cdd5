import COpenSSL
import COpenSSLShims
public import Policy

/// Mints throwaway keys and certificates in memory: for `portcullis demo` and for tests.
/// Not for production PKI (no constraints beyond the basics, serials from the caller).
public enum CertificateMinter {
    public enum KeyKind: Int32, Sendable, CaseIterable {
        case ecdsaP256 = 0, ecdsaP384 = 1, ed25519 = 2, rsa2048 = 3
    }

    /// A PEM certificate and private key, plus the objects needed to sign further certificates.
    public final class Issued: @unchecked Sendable {
        public let certificatePEM: String
        public let privateKeyPEM: String
        let key: OpaquePointer      // EVP_PKEY*, owned, freed in deinit
        let certificate: OpaquePointer  // X509*, owned, freed in deinit

        init(key: OpaquePointer, certificate: OpaquePointer) throws(OpenSSLError) {
            self.key = key
            self.certificate = certificate
            guard let certPEM = pc_pem_certificate(certificate), let keyPEM = pc_pem_private_key(key, nil) else {
                EVP_PKEY_free(key)
                X509_free(certificate)
                throw OpenSSLError.drain("PEM encoding")
            }
            certificatePEM = String(cString: certPEM)
            privateKeyPEM = String(cString: keyPEM)
            CRYPTO_free(certPEM, #fileID, #line)
            CRYPTO_free(keyPEM, #fileID, #line)
        }

        deinit {
            EVP_PKEY_free(key)
            X509_free(certificate)
        }

        /// The private key as PEM encrypted with AES-256 under `passphrase`.
        public func encryptedPrivateKeyPEM(passphrase: String) -> String? {
            guard let pem = pc_pem_private_key(key, passphrase) else { return nil }
            defer { CRYPTO_free(pem, #fileID, #line) }
            return String(cString: pem)
        }
    }

    /// Subject attributes as (type, raw value) pairs; raw bytes allow testing NULs and duplicates.
    public struct Subject: Sendable {
        public var attributes: [(String, [UInt8])]
        public init(_ attributes: [(String, String)]) {
            self.attributes = attributes.map { ($0.0, Array($0.1.utf8)) }
        }
        public init(raw: [(String, [UInt8])]) {
            self.attributes = raw
        }
    }

    /// Creates a self-signed CA.
    public static func makeCA(commonName: String, keyKind: KeyKind = .ecdsaP256) throws(OpenSSLError) -> Issued {
        try mint(subject: Subject([("CN", commonName), ("O", "Portcullis")]), keyKind: keyKind, issuer: nil,
                 san: nil, extendedKeyUsage: nil, isCA: true, validFrom: -3600, validUntil: 10 * 365 * 86400)
    }

    /// Creates an intermediate CA signed by `issuer`.
    public static func makeIntermediateCA(commonName: String, issuer: Issued, validUntil: Int = 5 * 365 * 86400) throws(OpenSSLError) -> Issued {
        try mint(subject: Subject([("CN", commonName), ("O", "Portcullis")]), keyKind: .ecdsaP256, issuer: issuer,
                 san: nil, extendedKeyUsage: nil, isCA: true, validFrom: -3600, validUntil: validUntil)
    }

    /// Issues a leaf certificate signed by `issuer`. `san` uses OpenSSL syntax ("DNS:a,URI:spiffe://…,IP:…"),
    /// `extendedKeyUsage` e.g. "clientAuth" or "serverAuth,clientAuth". Validity offsets are seconds from now.
    public static func issue(subject: Subject, keyKind: KeyKind = .ecdsaP256, issuer: Issued, san: String? = nil,
                             extendedKeyUsage: String? = nil, validFrom: Int = -3600,
                             validUntil: Int = 365 * 86400) throws(OpenSSLError) -> Issued {
        try mint(subject: subject, keyKind: keyKind, issuer: issuer, san: san, extendedKeyUsage: extendedKeyUsage,
                 isCA: false, validFrom: validFrom, validUntil: validUntil)
    }

    private static func mint(subject: Subject, keyKind: KeyKind, issuer: Issued?, san: String?,
                             extendedKeyUsage: String?, isCA: Bool, validFrom: Int,
                             validUntil: Int) throws(OpenSSLError) -> Issued {
        guard let key = pc_generate_key(keyKind.rawValue) else { throw OpenSSLError.drain("key generation") }
        var serialBytes = [UInt8](repeating: 0, count: 4)
        RAND_bytes(&serialBytes, 4)
        let serial = Int(serialBytes.reduce(0) { $0 << 8 | Int($1) } & 0x7fff_ffff) + 1

        // Keep every C string alive for the duration of the call.
        let types = subject.attributes.map { strdup($0.0) }
        let values: [UnsafeMutablePointer<UInt8>] = subject.attributes.map { attribute in
            let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: max(attribute.1.count, 1))
            buffer.initialize(from: attribute.1, count: attribute.1.count)
            return buffer
        }
        defer {
            types.forEach { free($0) }
            values.forEach { $0.deallocate() }
        }
        let typePointers: [UnsafePointer<CChar>?] = types.map { UnsafePointer($0) }
        let valuePointers: [UnsafePointer<UInt8>?] = values.map { UnsafePointer($0) }
        let lengths = subject.attributes.map { Int32($0.1.count) }

        let certificate = pc_make_certificate(
            key, issuer?.key, issuer?.certificate, typePointers, valuePointers, lengths,
            Int32(subject.attributes.count), san, extendedKeyUsage, isCA ? 1 : 0, validFrom, validUntil, serial)
        guard let certificate else {
            EVP_PKEY_free(key)
            throw OpenSSLError.drain("certificate creation")
        }
        return try Issued(key: key, certificate: certificate)
    }

    /// A PEM CRL from `issuer` revoking `serials` (hex). Validity offsets are seconds from now.
    public static func makeCRL(issuer: Issued, revokedSerials serials: [String], validFrom: Int = -60,
                               validUntil: Int = 86400) throws(OpenSSLError) -> String {
        let strings = serials.map { strdup($0) }
        defer { strings.forEach { free($0) } }
        let pointers: [UnsafePointer<CChar>?] = strings.map { UnsafePointer($0) }
        guard let pem = pc_make_crl_pem(issuer.key, issuer.certificate, pointers, Int32(pointers.count), validFrom, validUntil) else {
            throw OpenSSLError.drain("CRL creation")
        }
        defer { CRYPTO_free(pem, #fileID, #line) }
        return String(cString: pem)
    }

    /// Extracts the identity of a PEM certificate (the same extraction the handshake uses).
    public static func identity(ofPEM pem: String) throws(OpenSSLError) -> PeerIdentity {
        guard let bio = BIO_new_mem_buf(pem, Int32(pem.utf8.count)) else { throw OpenSSLError.drain("BIO_new_mem_buf") }
        defer { BIO_free(bio) }
        guard let cert = PEM_read_bio_X509(bio, nil, nil, nil) else { throw OpenSSLError.drain("PEM_read_bio_X509") }
        defer { X509_free(cert) }
        return IdentityExtractor.extract(cert)
    }

    /// Extracts the identity of a DER certificate; `nil` when OpenSSL cannot parse it as one. For fuzzing
    /// (Fuzz/, target identity-der) and tests: the handshake never sees DER from outside OpenSSL.
    public static func identity(ofDER der: [UInt8]) -> PeerIdentity? {
        OpenSSLError.clearQueue()
        let cert: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_X509(nil, &cursor, buffer.count)
        }
        guard let cert else {
            OpenSSLError.clearQueue()
            return nil
        }
        defer { X509_free(cert) }
        let identity = IdentityExtractor.extract(cert)
        OpenSSLError.clearQueue()
        return identity
    }
}
