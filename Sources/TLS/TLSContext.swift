import COpenSSL
import COpenSSLShims
public import Policy

#if canImport(Glibc)
import Glibc
#endif

/// What a TLS context is made of. Paths are read when the context is created (and again on reload).
public struct TLSConfiguration: Sendable {
    public enum Role: Sendable { case server, client }
    public typealias ProtocolVersion = TLSVersion

    public var role: Role
    public var certificatePath: String?
    public var keyPath: String?
    public var keyPassphrasePath: String?
    /// Our key and certificate chain in one file instead of `certificatePath`/`keyPath`: PKCS#12 (.p12/.pfx,
    /// its CA certificates sent as the chain) or a combined PEM (chain and key).
    public var keystorePath: String?
    /// The keystore's password (for a combined PEM: its key's passphrase); none: not encrypted.
    public var keystorePassword: KeystorePassword?
    /// PEM file, or a directory of PEM files, with the CA certificates peers must chain to. Client role, nil:
    /// the system trust store (OpenSSL's default paths, which honour SSL_CERT_FILE and SSL_CERT_DIR).
    public var caPath: String?
    public var minimumVersion: ProtocolVersion = .tls13
    public var sessionTickets = true
    /// Server role: TLS 1.3 tickets sent after each handshake (with `sessionTickets`). One serves a client
    /// that reconnects one connection at a time, which is what the clients measured do (see
    /// Benchmarks/RESULTS.md); more help only a client that opens several connections at once and refuses to
    /// reuse a ticket. Each costs a session stored in memory.
    public var sessionTicketCount = 1
    /// Distinguishes this listener's sessions, so resumption works with client verification.
    public var sessionIDContext = "portcullis"
    /// Client role: the name sent as SNI (unless it is an IP address) and, with `verifyServerName`, required
    /// in the server certificate (as a DNS or IP SAN).
    public var serverName: String?
    /// Client role: check `serverName` against the server certificate. Off when identity rules (the
    /// context's policy) judge the server instead.
    public var verifyServerName = true
    /// TLS 1.3 cipher suites (OpenSSL syntax, e.g. `TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384`).
    public var cipherSuites: String?
    /// Key-exchange groups (e.g. `X25519:P-256`).
    public var groups: String?
    /// Certificate revocation lists (PEM with one or more CRLs, or DER), checked in every handshake.
    public var crlPaths: [String] = []
    public typealias CRLScope = Policy.CRLScope
    public var crlScope = CRLScope.chain
    /// Accept peers when a CRL is past its nextUpdate (logged loudly); by default that fails closed.
    public var tolerateExpiredCRL = false
    /// Configuration generation, stamped into session tickets so resumption is re-checked after a change.
    public var generation: UInt64 = 1
    /// Server role: ask for, verify and require a client certificate (mutual TLS). Off only for the HTTPS
    /// status endpoint, which — like ghostunnel's — asks for none; every proxy listener keeps it on.
    public var requiresClientCertificate = true

    public init(role: Role) {
        self.role = role
    }
}

/// Where a keystore password comes from: a file (one trailing newline ignored), or given on the command line.
public enum KeystorePassword: Sendable, Equatable {
    case file(String)
    case given(Secret)
}

/// An immutable `SSL_CTX` plus the access policy its handshakes enforce.
///
/// Shared read-only by every worker loop (OpenSSL contexts are thread-safe once configured); the context
/// is freed when the last session using it goes away, since each session holds a strong reference.
public final class TLSContext: @unchecked Sendable {
    let raw: OpaquePointer
    public let configuration: TLSConfiguration
    /// Server role: decides which client identities are admitted. Client role: which servers are accepted.
    public let policy: AccessPolicy?
    /// Identity of our own certificate (subject, notAfter), for logs and status.
    public let certificateIdentity: PeerIdentity?
    /// Number of CA certificates loaded from `caPath`.
    public let caCertificateCount: Int
    /// Client role without `caPath`: the server is verified against the system trust store (file, directory).
    public let systemTrust: (file: String, directory: String)?
    /// The trusted CA certificate that expires first (subject and notAfter), for `check`'s expiry warning.
    public let firstExpiringCA: PeerIdentity?
    /// Number of CRLs loaded, and the earliest nextUpdate among them (Unix seconds), if any.
    public let crlCount: Int
    public let crlNextUpdate: Int64?
    /// SHA-256 over the CA and CRL files' bytes: equal digests mean the same trust decisions, so live
    /// connections need no re-verification after a reload.
    public let trustDigest: [UInt8]
    /// Server role: stamped on every session this context issues (see `ServerSessionStore`).
    let sessionIssuer: ServerSessionStore.Issuer
    /// Server role: client chains already verified against this context's CAs and CRLs.
    let verifiedChains: VerifiedChainCache?
    /// The time every judgement of a certificate uses (validity windows, cached chains, re-verification).
    public let clock: TLSClock

    public init(configuration: TLSConfiguration, policy: AccessPolicy?, clock: TLSClock = .system) throws(TLSSetupError) {
        self.clock = clock
        OpenSSLError.clearQueue()
        let method = configuration.role == .server ? TLS_server_method() : TLS_client_method()
        guard let ctx = SSL_CTX_new(method) else {
            throw TLSSetupError(item: .other, path: "", reason: OpenSSLError.drain("SSL_CTX_new").description)
        }
        raw = ctx
        self.configuration = configuration
        self.policy = policy
        var ownIdentity: PeerIdentity?
        var caCount = 0
        var crls = (count: 0, nextUpdate: Int64?.none)
        do {
            try TLSContext.configureProtocol(ctx, configuration)
            if let keystorePath = configuration.keystorePath {
                ownIdentity = try TLSContext.loadKeystore(ctx, keystorePath, configuration.keystorePassword)
            } else if let certificatePath = configuration.certificatePath {
                ownIdentity = try TLSContext.loadCertificate(ctx, certificatePath)
                let passphrase = try configuration.keyPassphrasePath.map { path throws(TLSSetupError) in
                    try TLSContext.readSecretFile(path, item: .keyPassphrase, what: "passphrase")
                }
                try TLSContext.loadKey(ctx, configuration.keyPath ?? certificatePath, passphrase: passphrase)
            }
            if let caPath = configuration.caPath {
                caCount = try TLSContext.loadCA(ctx, caPath)
            } else if configuration.role == .client {
                try TLSContext.loadSystemTrust(ctx)
            }
            crls = try TLSContext.loadCRLs(ctx, configuration)
            if ownIdentity != nil { TLSContext.buildOwnChainOnce(ctx) }
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        certificateIdentity = ownIdentity
        caCertificateCount = caCount
        systemTrust = configuration.role == .client && configuration.caPath == nil ? TLSContext.systemTrustLocations : nil
        var caNotAfter: Int64 = 0
        // The system store's expired roots are not ours to renew (they simply verify nothing): no warning.
        firstExpiringCA = configuration.caPath == nil ? nil
            : pc_ssl_ctx_first_expiring_ca(ctx, &caNotAfter).map { IdentityExtractor.extract($0) }
        crlCount = crls.count
        crlNextUpdate = crls.nextUpdate
        trustDigest = TLSContext.digestTrustMaterial(configuration)
        sessionIssuer = ServerSessionStore.Issuer(
            listener: ServerSessionStore.Digest(TLSContext.sha256(Array(configuration.sessionIDContext.utf8))),
            trust: ServerSessionStore.Digest(trustDigest), generation: configuration.generation)
        verifiedChains = configuration.role == .server ? VerifiedChainCache() : nil

        if configuration.role == .server && !configuration.requiresClientCertificate {
            // No CertificateRequest is sent, so no peer certificate reaches the callbacks or the policy.
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
            return
        }
        let verifyMode = configuration.role == .server
            ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER
        SSL_CTX_set_verify(ctx, verifyMode, TLSSession.verifyCallback)
        if configuration.role == .server {
            // Unretained: the callback cannot outlive the SSL_CTX, which this object frees in deinit.
            SSL_CTX_set_cert_verify_callback(ctx, TLSContext.verifyChainCallback, Unmanaged.passUnretained(self).toOpaque())
            if configuration.sessionTickets && configuration.sessionTicketCount > 0 { ServerSessionStore.install(on: ctx) }
        }
    }

    /// What this context would decide about a client presenting the certificate (chain) in `path`:
    /// whether it verifies against the CAs and CRLs now, who it is, and what the policy says.
    public typealias Assessment = Authorization

    public func assess(certificateAt path: String) throws(TLSSetupError) -> Assessment {
        var chain: OpaquePointer?
        guard let leaf = pc_read_certificate_chain(path, &chain) else {
            if let chain { pc_x509_stack_free(chain) }
            throw TLSSetupError(item: .certificate, path: path, reason: "no PEM certificate found")
        }
        defer {
            X509_free(leaf)
            pc_x509_stack_free(chain)
        }
        return authorize(leaf: leaf, chain: chain, now: clock.now(), chainCheck: .reverify)
    }

    /// The process's session store: sessions kept now, and lookups (tickets offered by clients) that found a
    /// live session or not (unknown, evicted or expired).
    public static var sessionCacheStatistics: (entries: Int, hits: UInt64, misses: UInt64) {
        let counters = ServerSessionStore.shared.counters
        return (ServerSessionStore.shared.count, counters.hits, counters.misses)
    }

    /// How many resumable sessions the process keeps for its listeners (all share one store); the least
    /// recently used go first when it is full.
    public static var sessionCacheCapacity: Int {
        get { ServerSessionStore.shared.capacity }
        set { ServerSessionStore.shared.setCapacity(newValue) }
    }

    /// The chain check of a client certificate (replaces `X509_verify_cert` for this context): a chain this
    /// context verified before, byte for byte and still within every validity window, is not verified again;
    /// the depth-0 callback (authorization) runs either way.
    static let verifyChainCallback: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { store, owner in
        guard let store, let owner else { return 0 }
        return Unmanaged<TLSContext>.fromOpaque(owner).takeUnretainedValue().verifyPeerChain(store)
    }

    private func verifyPeerChain(_ store: OpaquePointer) -> Int32 {
        guard let cache = verifiedChains, let sent = X509_STORE_CTX_get0_untrusted(store),
              let leaf = X509_STORE_CTX_get0_cert(store), let key = VerifiedChainCache.key(for: sent)
        else { return X509_verify_cert(store) }
        let now = clock.now()
        if cache.contains(key, now: now) {
            X509_STORE_CTX_set_current_cert(store, leaf)
            X509_STORE_CTX_set_error_depth(store, 0)
            return TLSSession.verifyCallback(1, store)
        }
        let verified = X509_verify_cert(store)
        if verified == 1, X509_STORE_CTX_get_error(store) == X509_V_OK, let chain = X509_STORE_CTX_get0_chain(store) {
            var expiresAt = crlNextUpdate ?? Int64.max
            for index in 0..<pc_x509_stack_count(chain) {
                var notAfter: Int64 = 0
                guard let certificate = pc_x509_stack_at(chain, index),
                      pc_asn1_time_to_unix(X509_get0_notAfter(certificate), &notAfter) == 0 else { return verified }
                expiresAt = min(expiresAt, notAfter)
            }
            cache.insert(key, expiresAt: expiresAt, now: now)
        }
        return verified
    }

    deinit {
        SSL_CTX_free(raw)
    }

    private static func configureProtocol(_ ctx: OpaquePointer, _ configuration: TLSConfiguration) throws(TLSSetupError) {
        let minimum = configuration.minimumVersion == .tls13 ? TLS1_3_VERSION : TLS1_2_VERSION
        guard pc_ssl_ctx_set_min_proto(ctx, minimum) == 1 else {
            throw TLSSetupError(item: .other, path: "", reason: "cannot set the minimum TLS version")
        }
        var options = pc_op_no_compression() | pc_op_no_renegotiation()
        if configuration.role == .server { options |= pc_op_cipher_server_preference() }
        if !configuration.sessionTickets { options |= pc_op_no_ticket() }
        SSL_CTX_set_options(ctx, options)
        // TLS 1.2 (only when allowed): forward-secret AEAD suites only.
        SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20")
        if let suites = configuration.cipherSuites, SSL_CTX_set_ciphersuites(ctx, suites) != 1 {
            OpenSSLError.clearQueue()
            throw TLSSetupError(item: .other, path: suites, reason: "no usable TLS 1.3 cipher suite in the list")
        }
        if let groups = configuration.groups, pc_ssl_ctx_set_groups(ctx, groups) != 1 {
            OpenSSLError.clearQueue()
            throw TLSSetupError(item: .other, path: groups, reason: "unknown key-exchange group in the list")
        }
        if configuration.role == .server {
            // Stateful tickets (`SSL_OP_NO_TICKET` in TLS 1.3): the session stays in `ServerSessionStore`, and
            // every resumption passes `TLSSession.admitsResumption`, which re-authorizes the peer.
            SSL_CTX_set_options(ctx, pc_op_no_ticket())
            _ = pc_ssl_ctx_set_session_cache_mode(ctx, 0)
            SSL_CTX_set_num_tickets(ctx, configuration.sessionTickets ? max(0, configuration.sessionTicketCount) : 0)
            let context = Array(configuration.sessionIDContext.utf8.prefix(Int(SSL_MAX_SID_CTX_LENGTH)))
            SSL_CTX_set_session_id_context(ctx, context, UInt32(context.count))
        }
    }

    /// Without an explicit chain, OpenSSL builds our own certificate's chain from the trust store in every
    /// handshake ("auto-chain": a second `X509_verify_cert`, with a signature check of our own certificate).
    /// Build it once here instead, from the same store, sending the intermediates it finds but not the root
    /// (a peer never needs it). A chain given in the certificate file is used as it is.
    private static func buildOwnChainOnce(_ ctx: OpaquePointer) {
        var chain: OpaquePointer?
        if pc_ssl_ctx_get0_chain_certs(ctx, &chain) == 1, let chain, pc_x509_stack_count(chain) > 0 { return }
        // Partial chains are fine (the issuer may be unknown to this store); errors are not fatal here.
        let flags = SSL_BUILD_CHAIN_FLAG_NO_ROOT | SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR | SSL_BUILD_CHAIN_FLAG_CLEAR_ERROR
        if pc_ssl_ctx_build_cert_chain(ctx, Int(flags)) <= 0 { OpenSSLError.clearQueue() }
        _ = pc_ssl_ctx_set_mode(ctx, Int(SSL_MODE_NO_AUTO_CHAIN))
    }

    private static func loadCertificate(_ ctx: OpaquePointer, _ path: String) throws(TLSSetupError) -> PeerIdentity {
        guard SSL_CTX_use_certificate_chain_file(ctx, path) == 1 else {
            throw TLSSetupError(item: .certificate, path: path, reason: "cannot load certificate: "
                + describe(OpenSSLError.drainReasons(), path: path))
        }
        guard let cert = SSL_CTX_get0_certificate(ctx) else {
            throw TLSSetupError(item: .certificate, path: path, reason: "cannot load certificate: no certificate found")
        }
        return IdentityExtractor.extract(cert)
    }

    /// A passphrase or password file's bytes; one trailing newline is the file's, not the secret's.
    private static func readSecretFile(_ path: String, item: TLSSetupError.Item, what: String) throws(TLSSetupError) -> [UInt8] {
        guard var bytes = readFile(path) else {
            throw TLSSetupError(item: item, path: path, reason: "cannot read \(what) file")
        }
        if bytes.last == 0x0a { bytes.removeLast() }
        if bytes.last == 0x0d { bytes.removeLast() }
        return bytes
    }

    private static func loadKey(_ ctx: OpaquePointer, _ path: String, passphrase given: [UInt8]?) throws(TLSSetupError) {
        var passphrase = given
        defer {
            // Do not leave the passphrase in memory longer than needed.
            if passphrase != nil { for i in passphrase!.indices { passphrase![i] = 0 } }
        }
        guard let bio = BIO_new_file(path, "r") else {
            throw TLSSetupError(item: .key, path: path, reason: "cannot open key file: "
                + describe(OpenSSLError.drainReasons(), path: path))
        }
        defer { BIO_free(bio) }
        let key: OpaquePointer? = passphrase.withUnsafeMutableBufferPointerIfPresent { userdata in
            PEM_read_bio_PrivateKey(bio, nil, { buffer, size, _, userdata in
                guard let buffer, let userdata else { return -1 }  // no passphrase given
                let secret = userdata.assumingMemoryBound(to: PassphraseBox.self).pointee
                guard secret.count <= Int(size) else { return -1 }
                secret.bytes.withUnsafeBytes { raw in
                    UnsafeMutableRawPointer(buffer).copyMemory(from: raw.baseAddress!, byteCount: secret.count)
                }
                return Int32(secret.count)
            }, userdata)
        }
        guard let key else {
            let reasons = OpenSSLError.drainReasons()
            let encrypted = (readFile(path).map { String(decoding: $0, as: UTF8.self).contains("ENCRYPTED") }) ?? false
            let reason: String
            if encrypted && passphrase == nil {
                reason = TLSContext.encryptedKeyWithoutPassphrase
            } else if encrypted {
                reason = TLSContext.wrongKeyPassphrase
            } else {
                reason = "cannot load private key: " + describe(reasons, path: path)
            }
            throw TLSSetupError(item: .key, path: path, reason: reason)
        }
        defer { EVP_PKEY_free(key) }
        guard SSL_CTX_use_PrivateKey(ctx, key) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
            OpenSSLError.clearQueue()
            throw TLSSetupError(item: .key, path: path, reason: "the private key does not match the certificate")
        }
    }

    static let encryptedKeyWithoutPassphrase = "the private key is encrypted and no passphrase file was given"
    static let wrongKeyPassphrase = "cannot decrypt the private key: wrong passphrase"

    /// Our key and chain from one file: PKCS#12 (DER), or a combined PEM read as `--cert` and `--key` would be.
    /// Every failure is one reason naming the keystore; a wrong password is `.keystorePassword`'s.
    private static func loadKeystore(_ ctx: OpaquePointer, _ path: String, _ source: KeystorePassword?) throws(TLSSetupError) -> PeerIdentity {
        guard let contents = readFile(path) else {
            throw TLSSetupError(item: .keystore, path: path, reason: "cannot read keystore: \(String(cString: strerror(errno)))")
        }
        var password: [UInt8]?
        switch source {
        case .file(let file)?: password = try readSecretFile(file, item: .keystorePassword, what: "password")
        case .given(let secret)?: password = secret.bytes
        case nil: password = nil
        }
        defer { if password != nil { for i in password!.indices { password![i] = 0 } } }
        if contents.starts(with: Array("-----BEGIN".utf8)) || contents.firstRange(of: Array("\n-----BEGIN".utf8)) != nil {
            guard contents.firstRange(of: Array("PRIVATE KEY-----".utf8)) != nil else {
                throw TLSSetupError(item: .keystore, path: path, reason: "no private key in the PEM keystore: append the key (PEM) to the file, or give PKCS#12")
            }
            let identity: PeerIdentity
            do {
                identity = try loadCertificate(ctx, path)
                try loadKey(ctx, path, passphrase: password)
            } catch {
                switch error.reason {
                case encryptedKeyWithoutPassphrase:
                    throw TLSSetupError(item: .keystorePassword, path: "", reason: "keystore '\(path)' holds an encrypted key and no password was given")
                case wrongKeyPassphrase:
                    throw TLSSetupError(item: .keystorePassword, path: "", reason: "wrong password for keystore '\(path)' (its key does not decrypt)")
                default:
                    throw TLSSetupError(item: .keystore, path: path, reason: error.reason)
                }
            }
            return identity
        }
        var key: OpaquePointer?
        var certificate: OpaquePointer?
        var chain: OpaquePointer?
        defer {
            EVP_PKEY_free(key)
            X509_free(certificate)
            if let chain { pc_x509_stack_free(chain) }
        }
        OpenSSLError.clearQueue()
        var terminated = (password ?? []) + [0]
        defer { for i in terminated.indices { terminated[i] = 0 } }
        let status = terminated.withUnsafeBufferPointer { passwordBytes in
            contents.withUnsafeBufferPointer { der in
                passwordBytes.withMemoryRebound(to: CChar.self) { cPassword in
                    pc_pkcs12_load(der.baseAddress, der.count, cPassword.baseAddress, &key, &certificate, &chain)
                }
            }
        }
        OpenSSLError.clearQueue()
        switch Int(status) {
        case Int(PC_KEYSTORE_OK):
            break
        case Int(PC_KEYSTORE_NOT_PKCS12):
            throw TLSSetupError(item: .keystore, path: path, reason: "neither PKCS#12 (.p12/.pfx) nor PEM: give a PKCS#12 file, or a PEM file with the certificate chain and the key")
        case Int(PC_KEYSTORE_WRONG_PASSWORD):
            throw TLSSetupError(item: .keystorePassword, path: "", reason: source == nil
                ? "keystore '\(path)' is protected by a password and none was given"
                : "wrong password for keystore '\(path)'")
        case Int(PC_KEYSTORE_LEGACY_CIPHER):
            // Loading OpenSSL's legacy provider would make RC2 and single DES available to every context in
            // the process (the default library context is process-wide); a one-time conversion is better.
            throw TLSSetupError(item: .keystore, path: path, reason: "encrypted with a legacy cipher (RC2-40 or 3DES, from an old tool) that OpenSSL 3 refuses by default: convert it once with '(umask 077; openssl pkcs12 -legacy -in \(path) -nodes -passin file:PASSFILE -out \(path).pem && openssl pkcs12 -export -in \(path).pem -passout file:PASSFILE -out NEW.p12; rm -f \(path).pem)' and use NEW.p12")
        case Int(PC_KEYSTORE_NO_KEY):
            throw TLSSetupError(item: .keystore, path: path, reason: "no private key in the keystore: export it with the key (openssl pkcs12 -export -inkey KEY …)")
        case Int(PC_KEYSTORE_NO_CERTIFICATE):
            throw TLSSetupError(item: .keystore, path: path, reason: "no certificate matching the key in the keystore")
        default:
            throw TLSSetupError(item: .keystore, path: path, reason: "cannot read the PKCS#12 keystore (corrupt or an unsupported format)")
        }
        guard let key, let certificate else { preconditionFailure("pc_pkcs12_load returned OK without key and certificate") }
        guard SSL_CTX_use_certificate(ctx, certificate) == 1 else {
            throw TLSSetupError(item: .keystore, path: path, reason: "cannot use the keystore's certificate: "
                + OpenSSLError.drainReasons().joined(separator: "; "))
        }
        guard SSL_CTX_use_PrivateKey(ctx, key) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
            OpenSSLError.clearQueue()
            throw TLSSetupError(item: .keystore, path: path, reason: "the keystore's private key does not match its certificate")
        }
        if let chain {
            for index in 0..<pc_x509_stack_count(chain) {
                guard let extra = pc_x509_stack_at(chain, index), pc_ssl_ctx_add1_chain_cert(ctx, extra) == 1 else {
                    OpenSSLError.clearQueue()
                    throw TLSSetupError(item: .keystore, path: path, reason: "cannot add the keystore's CA certificates to the chain")
                }
            }
        }
        return IdentityExtractor.extract(certificate)
    }

    /// OpenSSL's default file and directory, after SSL_CERT_FILE and SSL_CERT_DIR.
    public static var systemTrustLocations: (file: String, directory: String) {
        func environment(_ name: UnsafePointer<CChar>, _ fallback: UnsafePointer<CChar>) -> String {
            if let value = getenv(String(cString: name)), value.pointee != 0 { return String(cString: value) }
            return String(cString: fallback)
        }
        return (environment(X509_get_default_cert_file_env(), X509_get_default_cert_file()),
                environment(X509_get_default_cert_dir_env(), X509_get_default_cert_dir()))
    }

    private static func loadSystemTrust(_ ctx: OpaquePointer) throws(TLSSetupError) {
        guard SSL_CTX_set_default_verify_paths(ctx) == 1 else {
            throw TLSSetupError(item: .caBundle, path: "", reason: "cannot load the system trust store: "
                + OpenSSLError.drainReasons().joined(separator: "; "))
        }
        OpenSSLError.clearQueue()
    }

    private static func loadCA(_ ctx: OpaquePointer, _ path: String) throws(TLSSetupError) -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw TLSSetupError(item: .caBundle, path: path, reason: "cannot read CA bundle: \(String(cString: strerror(errno)))")
        }
        let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
        let count = pc_ssl_ctx_load_ca(ctx, path, isDirectory ? 1 : 0)
        guard count > 0 else {
            let reasons = OpenSSLError.drainReasons()
            throw TLSSetupError(item: .caBundle, path: path, reason: isDirectory
                ? "no CA certificate found in directory (*.pem, *.crt, *.cer)"
                : "no CA certificate found" + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; ")))
        }
        return Int(count)
    }

    private static func loadCRLs(_ ctx: OpaquePointer, _ configuration: TLSConfiguration) throws(TLSSetupError) -> (count: Int, nextUpdate: Int64?) {
        guard !configuration.crlPaths.isEmpty else { return (0, nil) }
        var total = 0
        var earliest: Int64?
        for path in configuration.crlPaths {
            var nextUpdate: Int64 = 0
            let count = pc_ssl_ctx_load_crl_file(ctx, path, &nextUpdate)
            guard count > 0 else {
                let reasons = OpenSSLError.drainReasons()
                throw TLSSetupError(item: .crl, path: path, reason: "cannot load CRL: "
                    + (readFile(path) == nil ? String(cString: strerror(errno)) : "no PEM or DER CRL found")
                    + (reasons.isEmpty ? "" : " (\(reasons.joined(separator: "; ")))"))
            }
            total += Int(count)
            if nextUpdate > 0 { earliest = min(earliest ?? nextUpdate, nextUpdate) }
        }
        pc_ssl_ctx_enable_crl_check(ctx, configuration.crlScope == .chain ? 1 : 0)
        return (total, earliest)
    }

    private static func describe(_ reasons: [String], path: String) -> String {
        if reasons.contains(where: { $0.contains("no start line") }) { return "no PEM data found" }
        if reasons.contains(where: { $0.contains("system lib") || $0.contains("No such file") }) {
            return String(cString: strerror(errno))
        }
        return reasons.isEmpty ? "unknown error" : reasons.joined(separator: "; ")
    }

    private static func digestTrustMaterial(_ configuration: TLSConfiguration) -> [UInt8] {
        var material: [UInt8] = []
        var paths = configuration.crlPaths
        if let ca = configuration.caPath {
            if let entries = directoryEntries(ca) {
                paths += entries.sorted().map { ca + "/" + $0 }
            } else {
                paths.append(ca)
            }
        } else if configuration.role == .client {
            // The system bundle stands for the store (a hashed directory is read lazily, entry by entry).
            paths.append(systemTrustLocations.file)
        }
        for path in paths {
            material += Array(path.utf8) + [0]
            material += readFile(path) ?? []
        }
        return sha256(material)
    }

    private static func directoryEntries(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_Digest(bytes, bytes.count, &digest, &length, EVP_sha256(), nil)
        return digest
    }

    static func readFile(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n > 0 { out += chunk[0..<n] }
            if n < chunk.count { break }
        }
        return out
    }
}

/// Passphrase bytes handed to OpenSSL's PEM callback through its userdata pointer.
struct PassphraseBox {
    var bytes: [UInt8]
    var count: Int { bytes.count }
}

extension Optional where Wrapped == [UInt8] {
    /// Calls `body` with a pointer to a `PassphraseBox` holding the bytes, or with nil.
    fileprivate func withUnsafeMutableBufferPointerIfPresent<R>(_ body: (UnsafeMutableRawPointer?) -> R) -> R {
        guard let bytes = self else { return body(nil) }
        var box = PassphraseBox(bytes: bytes)
        defer { box.bytes = [UInt8](repeating: 0, count: box.bytes.count) }
        return withUnsafeMutablePointer(to: &box) { body(UnsafeMutableRawPointer($0)) }
    }
}
