/// Two TLS settings named the same way by the configuration and the TLS bridge, defined once here (the
/// module both see) so neither depends on the other.

/// The lowest TLS version a listener accepts (key `tls.min-version`, `--min-tls`).
public enum TLSVersion: Sendable, Equatable {
    case tls12, tls13
}

/// Which certificates of the peer's chain are checked against the CRLs (key `tls.crl-scope`). `chain`: every
/// certificate, intermediates included (needs a CRL from each issuing CA); `leaf`: the peer's own only.
public enum CRLScope: Sendable, Equatable {
    case leaf, chain
}

/// A password held in memory (the keystore's, from `--storepass`). It prints as `(hidden)` wherever it is
/// interpolated — logs, errors, configuration dumps — so it cannot leak by accident; `bytes` is the only way in.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public let bytes: [UInt8]

    public init(_ text: String) { bytes = Array(text.utf8) }

    public var description: String { "(hidden)" }
    public var debugDescription: String { "(hidden)" }
}
