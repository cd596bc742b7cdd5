/// The evaluation form of a rule list, built once per policy.
///
/// Copying an `AccessRule` or a `Matcher` out of an array costs retains (the rule's strings and arrays), and
/// at a thousand rules those dominate evaluation. Here every matcher sits in its own immutable object, kept
/// alive by `owners`, and the hot loop walks trivially-copyable `Unmanaged` references and integer bounds,
/// so scanning the rules does no reference counting at all.
final class RuleTable: Sendable {
    /// One matcher unpacked into immutable fields, so that testing it copies nothing.
    private final class Check: Sendable {
        enum Target {
            case subject(StaticString)
            case issuerCN, issuerDN, dns, uri, spiffeID, email, ip, certificateSHA256, spkiSHA256, serial
        }

        let target: Target
        let pattern: Pattern?
        let range: IPRange?
        let digest: [UInt8]
        let serial: SerialNumber?

        init(_ matcher: Matcher) {
            var pattern: Pattern?
            var range: IPRange?
            var digest: [UInt8] = []
            var serial: SerialNumber?
            switch matcher {
            case .cn(let p): target = .subject("CN"); pattern = p
            case .ou(let p): target = .subject("OU"); pattern = p
            case .o(let p): target = .subject("O"); pattern = p
            case .l(let p): target = .subject("L"); pattern = p
            case .st(let p): target = .subject("ST"); pattern = p
            case .c(let p): target = .subject("C"); pattern = p
            case .issuerCN(let p): target = .issuerCN; pattern = p
            case .issuerDN(let p): target = .issuerDN; pattern = p
            case .dns(let p): target = .dns; pattern = p
            case .uri(let p): target = .uri; pattern = p
            case .spiffeID(let p): target = .spiffeID; pattern = p
            case .email(let p): target = .email; pattern = p
            case .ip(let r): target = .ip; range = r
            case .certificateSHA256(let pin): target = .certificateSHA256; digest = pin.bytes
            case .spkiSHA256(let pin): target = .spkiSHA256; digest = pin.bytes
            case .serial(let s): target = .serial; serial = s
            }
            self.pattern = pattern
            self.range = range
            self.digest = digest
            self.serial = serial
        }

        /// Same answer as `Matcher.matches`.
        func matches(_ identity: PeerIdentity) -> Bool {
            switch target {
            case .subject(let type): attribute(type, of: identity.subject, matches: pattern!)
            case .issuerCN: attribute("CN", of: identity.issuer, matches: pattern!)
            case .issuerDN: !identity.issuer.attributes.isEmpty && pattern!.matches(identity.issuer.rfc2253)
            case .dns: any(of: identity.dnsNames, matches: pattern!)
            case .uri: any(of: identity.uris, matches: pattern!)
            case .spiffeID: soleSPIFFEURI(of: identity).map { pattern!.matches(identity.uris[$0]) } ?? false
            case .email: any(of: identity.emails, matches: pattern!)
            case .ip: any(of: identity.ipAddresses, in: range!)
            case .certificateSHA256: identity.certificateSHA256 == digest
            case .spkiSHA256: identity.spkiSHA256 == digest
            case .serial: serial!.matches(identity.serialHex)
            }
        }
    }

    /// Keeps every `Check` alive for as long as the table; `checks` holds the same objects unretained.
    private let owners: [Check]
    private let checks: [Unmanaged<Check>]
    /// Rule `r` owns `checks[bounds[r] ..< bounds[r + 1]]`.
    private let bounds: [Int]

    init(_ rules: [AccessRule]) {
        var owners: [Check] = []
        var bounds = [0]
        for rule in rules {
            owners += rule.matchers.map(Check.init)
            bounds.append(owners.count)
        }
        self.owners = owners
        self.checks = owners.map { Unmanaged.passUnretained($0) }
        self.bounds = bounds
    }

    /// Index of the first rule whose matchers all hold.
    func firstAdmitting(_ identity: PeerIdentity) -> Int? {
        checks.withUnsafeBufferPointer { checks in
            bounds.withUnsafeBufferPointer { bounds in
                var rule = 0
                while rule < bounds.count - 1 {
                    var index = bounds[rule]
                    let end = bounds[rule + 1]
                    while index < end && checks[index]._withUnsafeGuaranteedRef({ $0.matches(identity) }) {
                        index += 1
                    }
                    if index == end { return rule }
                    rule += 1
                }
                return nil
            }
        }
    }

    /// For a deny explanation: the rule with the most matchers that held (ties go to the earlier rule) and the
    /// position of its first failing matcher. `nil` when there are no rules or some rule admits.
    func closestMismatch(_ identity: PeerIdentity) -> (rule: Int, failedMatcher: Int)? {
        var best: (rule: Int, failedMatcher: Int, held: Int)?
        for rule in 0..<(bounds.count - 1) {
            var held = 0
            var failed: Int?
            for index in bounds[rule]..<bounds[rule + 1] {
                if checks[index]._withUnsafeGuaranteedRef({ $0.matches(identity) }) {
                    held += 1
                } else if failed == nil {
                    failed = index - bounds[rule]
                }
            }
            guard let failed else { return nil }
            if held > best?.held ?? -1 { best = (rule, failed, held) }
        }
        return best.map { ($0.rule, $0.failedMatcher) }
    }
}
