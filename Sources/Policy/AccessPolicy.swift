/// Why a rule or policy could not be built.
public struct PolicyError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A named set of matchers that must **all** hold.
public struct AccessRule: Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public let matchers: [Matcher]
    /// `ou=payments AND uri=spiffe://example.org/ns/prod/*`, computed once.
    public let conditions: String

    /// Throws when `matchers` is empty (admitting everyone is said with `AccessPolicy(allowAll: true)`)
    /// or `name` is empty.
    public init(name: String, matchers: [Matcher]) throws(PolicyError) {
        guard !name.isEmpty else { throw PolicyError("an access rule needs a name") }
        guard !matchers.isEmpty else {
            throw PolicyError("rule \(singleQuoted(name)) has no matchers: give at least one, or use allow-all to admit every verified client")
        }
        self.name = name
        self.matchers = matchers
        self.conditions = matchers.map(\.description).joined(separator: " AND ")
    }

    /// A rule of one matcher named after it (`cn=app-1`), as the `--allow-*` flags build them.
    public init(_ matcher: Matcher) {
        self.name = matcher.description
        self.matchers = [matcher]
        self.conditions = matcher.description
    }

    /// `'payments-workers' (ou=payments AND uri=spiffe://example.org/ns/prod/*)`.
    public var description: String { "\(singleQuoted(name)) (\(conditions))" }

    /// Whether every matcher holds.
    public func admits(_ identity: PeerIdentity) -> Bool {
        // Buffer subscripts borrow the element in place: no copy, no retain per matcher.
        matchers.withUnsafeBufferPointer { matchers in
            for index in matchers.indices where !matchers[index].matches(identity) { return false }
            return true
        }
    }
}

/// Which clients may connect: deny rules first, then allow rules in order; fails closed.
///
/// Evaluation order:
/// 1. an identity with anomalies is denied, even under allow-all;
/// 2. a matching deny rule denies;
/// 3. `allowAll` admits (rule name `allow-all`);
/// 4. the first allow rule whose matchers all hold admits;
/// 5. otherwise denied, explaining the closest rule (most matchers held; ties go to the earlier rule).
public struct AccessPolicy: Sendable, Equatable {
    /// The rule name reported when `allowAll` admits.
    public static let allowAllRuleName = "allow-all"

    public let rules: [AccessRule]
    public let deny: [AccessRule]
    public let allowAll: Bool

    private let allowTable: RuleTable
    private let denyTable: RuleTable

    public init(rules: [AccessRule] = [], deny: [AccessRule] = [], allowAll: Bool = false) {
        self.rules = rules
        self.deny = deny
        self.allowAll = allowAll
        self.allowTable = RuleTable(rules)
        self.denyTable = RuleTable(deny)
    }

    public static func == (lhs: AccessPolicy, rhs: AccessPolicy) -> Bool {
        lhs.rules == rhs.rules && lhs.deny == rhs.deny && lhs.allowAll == rhs.allowAll
    }

    /// Decides whether `identity` may connect. Allocates nothing on the allow path except for `issuerDN`
    /// matchers; the deny path builds its explanation.
    public func evaluate(_ identity: PeerIdentity) -> PolicyDecision {
        if let anomaly = identity.anomalies.first {
            return .denied(.malformedIdentity(anomaly: anomaly))
        }
        if let index = denyTable.firstAdmitting(identity) {
            return .denied(.matchedDenyRule(name: deny[index].name))
        }
        if allowAll {
            return .allowed(rule: AccessPolicy.allowAllRuleName, conditions: "any certificate that chains to the trusted CA")
        }
        if let index = allowTable.firstAdmitting(identity) {
            return .allowed(rule: rules[index].name, conditions: rules[index].conditions)
        }
        guard !rules.isEmpty else { return .denied(.noRules) }
        return .denied(.noRuleMatched(closestMismatch(identity)))
    }

    private func closestMismatch(_ identity: PeerIdentity) -> RuleMismatch {
        // Every rule failed just now in `evaluate`, and the identity is a value: it cannot have changed.
        guard let (ruleIndex, matcherIndex) = allowTable.closestMismatch(identity) else {
            preconditionFailure("closestMismatch called while a rule admits the identity")
        }
        let rule = rules[ruleIndex]
        let failed = rule.matchers[matcherIndex]
        return RuleMismatch(rule: rule.name, matcherKind: failed.kind, matcher: failed.description,
                            detail: failed.explainMismatch(identity))
    }
}

/// How the closest allow rule failed, for the deny explanation and for metrics labels.
public struct RuleMismatch: Sendable, Equatable, CustomStringConvertible {
    /// Name of the closest rule.
    public var rule: String
    /// Kind of its first failing matcher (`cn`, `uri`, …).
    public var matcherKind: Matcher.Kind
    /// The failing matcher, `cn=ops-*`.
    public var matcher: String
    /// `'web-7' does not match 'ops-*'` or `certificate has no URI SAN`.
    public var detail: String

    public init(rule: String, matcherKind: Matcher.Kind, matcher: String, detail: String) {
        self.rule = rule
        self.matcherKind = matcherKind
        self.matcher = matcher
        self.detail = detail
    }

    /// `rule 'ops' failed on cn ('web-7' does not match 'ops-*')`.
    public var description: String { "rule \(singleQuoted(rule)) failed on \(matcherKind) (\(detail))" }
}

/// Why a peer was refused.
public enum DenialReason: Sendable, Equatable, CustomStringConvertible {
    /// The identity has anomalies (two CNs, an embedded NUL, a malformed SAN); the first one is kept.
    case malformedIdentity(anomaly: String)
    /// A deny rule matched.
    case matchedDenyRule(name: String)
    /// The policy has no allow rules and no allow-all.
    case noRules
    /// No allow rule matched; the closest one and how it failed.
    case noRuleMatched(RuleMismatch)

    /// A stable, low-cardinality label for metrics: `malformed_identity`, `deny_rule`, `no_rules`, `no_match`.
    public var code: String {
        switch self {
        case .malformedIdentity: "malformed_identity"
        case .matchedDenyRule: "deny_rule"
        case .noRules: "no_rules"
        case .noRuleMatched: "no_match"
        }
    }

    public var description: String {
        switch self {
        case .malformedIdentity(let anomaly):
            "malformed certificate identity: \(escapedForLog(anomaly, limit: 256))"
        case .matchedDenyRule(let name):
            "matched deny rule \(singleQuoted(name))"
        case .noRules:
            "no rule matched (policy has no rules)"
        case .noRuleMatched(let mismatch):
            "no rule matched; closest: \(mismatch)"
        }
    }
}

/// The outcome of `AccessPolicy.evaluate`: which rule admitted, or why nothing did.
///
/// `description` is one line for logs and `check`:
/// `allowed by rule 'payments-workers' (ou=payments AND uri=spiffe://example.org/ns/prod/*)` or
/// `denied: no rule matched; closest: rule 'ops' failed on cn ('web-7' does not match 'ops-*')`.
public enum PolicyDecision: Sendable, Equatable, CustomStringConvertible {
    /// `conditions` is the admitting rule's matchers joined with ` AND `.
    case allowed(rule: String, conditions: String)
    case denied(DenialReason)

    public var isAllowed: Bool {
        if case .allowed = self { true } else { false }
    }

    /// The admitting rule; `nil` when denied.
    public var ruleName: String? {
        if case .allowed(let rule, _) = self { rule } else { nil }
    }

    public var denialReason: DenialReason? {
        if case .denied(let reason) = self { reason } else { nil }
    }

    /// When no allow rule matched: the closest rule's name.
    public var closestRuleName: String? {
        if case .denied(.noRuleMatched(let mismatch)) = self { mismatch.rule } else { nil }
    }

    /// When no allow rule matched: the kind of the closest rule's first failing matcher.
    public var failedMatcherKind: Matcher.Kind? {
        if case .denied(.noRuleMatched(let mismatch)) = self { mismatch.matcherKind } else { nil }
    }

    public var description: String {
        switch self {
        case .allowed(let rule, let conditions): "allowed by rule \(singleQuoted(rule)) (\(conditions))"
        case .denied(let reason): "denied: \(reason)"
        }
    }
}
