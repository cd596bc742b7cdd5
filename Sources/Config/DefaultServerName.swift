public import Policy

extension Validate {
    /// The server name of a client-mode listener that names none (`tls.server-name`, `--override-server-name`):
    ///
    /// - when the target's host is an IP literal and a rule checks a DNS name literally (`dns: broker-1.internal`,
    ///   `--verify-dns broker-1.internal`; the first such rule, no wildcard), that DNS name: an address cannot be
    ///   sent as SNI, and it is the name the server is expected to present;
    /// - otherwise `targetName`, the target's host as `remoteTarget` returns it (`localhost`, a lowercased DNS
    ///   name or an IP literal).
    public static func defaultServerName(targetName: String, rules: [AccessRule]) -> String {
        guard IPAddress(targetName) != nil else { return targetName }
        for rule in rules {
            for matcher in rule.matchers {
                if case .dns(let pattern) = matcher, pattern.isLiteral { return pattern.text.lowercased() }
            }
        }
        return targetName
    }
}
