public import Policy

extension CRLScope {
    /// As a configuration file writes it: `chain`, `leaf`.
    public var configValue: String {
        switch self {
        case .chain: "chain"
        case .leaf: "leaf"
        }
    }

    /// From a configuration file's spelling.
    init?(configValue: String) {
        switch configValue {
        case "chain": self = .chain
        case "leaf": self = .leaf
        default: return nil
        }
    }
}

/// What to do when a CRL is past its `nextUpdate`.
public enum CRLExpiredPolicy: String, Sendable, Equatable, CaseIterable {
    /// Refuse every handshake that the stale CRL covers (fail closed).
    case reject
    /// Accept, and log loudly on every handshake, until a fresh CRL is loaded.
    case warn
}

extension Validate {
    /// The TLS 1.3 cipher suites of RFC 8446, in OpenSSL's spelling.
    public static let tls13CipherSuites = [
        "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256",
    ]

    /// Key-exchange groups by their canonical name.
    public static let tlsGroups = ["X25519", "X448", "P-256", "P-384", "P-521"]

    /// Other spellings OpenSSL accepts for `tlsGroups`, lowercased, with the canonical name.
    static let tlsGroupAliases = [
        "prime256v1": "P-256", "secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521",
    ]

    /// A colon-separated TLS 1.3 cipher suite list (`TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384`), names
    /// matched without regard to case; returns it in canonical spelling.
    public static func cipherSuites(_ value: String, key: String) throws(ConfigError) -> String {
        let use = "use " + tls13CipherSuites.joined(separator: ", ")
        return try colonList(value, key: key, what: "cipher suite", example: "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256") {
            name throws(ConfigError) in
            guard let suite = tls13CipherSuites.first(where: { $0.lowercased() == name.lowercased() }) else {
                throw .invalid(key, name, "is not a TLS 1.3 cipher suite: \(use)")
            }
            return suite
        }
    }

    /// A colon-separated key-exchange group list (`X25519:P-256`); aliases (`prime256v1`, `secp384r1`, …) become
    /// the canonical names, matched without regard to case.
    public static func groups(_ value: String, key: String) throws(ConfigError) -> String {
        try colonList(value, key: key, what: "group", example: "X25519:P-256") { name throws(ConfigError) in
            if let group = tlsGroups.first(where: { $0.lowercased() == name.lowercased() }) { return group }
            if let group = tlsGroupAliases[name.lowercased()] { return group }
            throw .invalid(key, name, "is not a supported group: use \(tlsGroups.joined(separator: ", "))")
        }
    }

    private static func colonList(
        _ value: String, key: String, what: String, example: String,
        _ canonical: (String) throws(ConfigError) -> String
    ) throws(ConfigError) -> String {
        guard !value.isEmpty else {
            throw .invalid(key, value, "is empty: list \(what)s separated by ':', e.g. \(example), or remove the key for the default")
        }
        var names: [String] = []
        for part in value.split(separator: ":", omittingEmptySubsequences: false) {
            guard !part.isEmpty else {
                throw .invalid(key, value, "has an empty entry: separate \(what)s with a single ':', e.g. \(example)")
            }
            let name = try canonical(String(part))
            guard !names.contains(name) else { throw .invalid(key, String(part), "is listed twice: remove one") }
            names.append(name)
        }
        return names.joined(separator: ":")
    }
}
