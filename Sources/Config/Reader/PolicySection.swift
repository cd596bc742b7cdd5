import Policy
import Yams

/// A listener's `policy` section and its `rules` and `deny` lists.
extension ConfigReader {
    static let policyKeys = ["allow-all", "verify-server-name", "deny", "rules"]
    static let ruleKeys = ["name"] + Matcher.Kind.allCases.map(\.rawValue)

    static let policyHints: [String: String] = {
        var hints = ["allow": "did you mean 'rules'?", "allow-rules": "did you mean 'rules'?"]
        for kind in Matcher.Kind.allCases {
            hints[kind.rawValue] = "matchers belong in a rule: rules: [{name: …, \(kind.rawValue): …}]"
            hints["allow-" + kind.rawValue] = "write a rule: rules: [{name: …, \(kind.rawValue): …}]"
            hints["verify-" + kind.rawValue] = "write a rule: rules: [{name: …, \(kind.rawValue): …}]"
        }
        hints["server-name"] = "it belongs under 'tls'"
        return hints
    }()

    static let ruleHints = [
        "spiffe-id": "did you mean 'spiffe'?", "spiffeid": "did you mean 'spiffe'?",
        "common-name": "did you mean 'cn'?", "organization": "did you mean 'o'?",
        "organizational-unit": "did you mean 'ou'?", "dns-name": "did you mean 'dns'?",
        "sha256": "did you mean 'fingerprint' or 'spki'?", "pin": "did you mean 'spki'?",
        "allow-all": "it belongs under 'policy', not in a rule",
    ]

    /// `nil`: a problem was reported. Otherwise the policy, possibly without a problem reported yet for a rule that
    /// failed (then `problems` is not empty and the configuration is rejected anyway), and whether the server name
    /// is verified (client mode).
    ///
    /// Server mode needs rules or `allow-all: true`. Client mode needs neither: without rules the policy admits
    /// every server certificate (`allowAll`) and the server name is verified (`verify-server-name`, default `true`
    /// without rules and `false` with them). Turning the name check off without rules takes `allow-all: true` too.
    func policy(_ listener: Fields, mode: ListenerMode) -> (policy: AccessPolicy, verifyServerName: Bool)? {
        let client = mode == .client
        let path = listener.child("policy")
        let emptyProblem = flags != nil
            ? "no access rule given: add --allow-cn/--allow-ou/--allow-dns/--allow-uri/… to admit clients, or --allow-all to admit every client whose certificate chains to --cacert"
            : "\(path): no access rule given: add rules (e.g. rules: [{name: ops, cn: \"ops-*\"}]) or allow-all: true to admit every client whose certificate chains to tls.cacert"
        guard let entry = listener["policy"], !isNull(entry.value) else {
            if client { return (AccessPolicy(allowAll: true), true) }
            if !listener.rejectedKeys { report(listener.node, path, emptyProblem) }
            return nil
        }
        guard let f = fields(entry.value, path: path, known: Self.policyKeys, hints: Self.policyHints) else { return nil }
        let allowAll = bool(f, "allow-all")
        var verifyServerName: Bool?
        if client {
            verifyServerName = bool(f, "verify-server-name")
        } else {
            onlyIn(.client, f, "verify-server-name", why: "a server-mode listener judges clients by its rules")
        }
        // In file order, so that a repeated rule name is reported at its second appearance.
        var names: [String: Node] = [:]
        let deny: (written: Int, built: [AccessRule])?
        let rules: (written: Int, built: [AccessRule])?
        let noMatchersFix = client
            ? ", or remove the rule to verify only the server name"
            : ", or set policy.allow-all: true to admit every verified client"
        if (f.order.firstIndex(of: "deny") ?? .max) < (f.order.firstIndex(of: "rules") ?? .max) {
            deny = self.rules(f, "deny", requireName: false, names: &names, noMatchersFix: noMatchersFix)
            rules = self.rules(f, "rules", requireName: true, names: &names, noMatchersFix: noMatchersFix)
        } else {
            rules = self.rules(f, "rules", requireName: true, names: &names, noMatchersFix: noMatchersFix)
            deny = self.rules(f, "deny", requireName: false, names: &names, noMatchersFix: noMatchersFix)
        }
        guard let deny, let rules else { return nil }

        if allowAll == true && rules.written > 0 {
            let fix = client ? "accept only the servers that match a rule" : "admit only the clients that match a rule"
            if let flags, let (flag, value) = flags.rules.first {
                let allowAll = setting(f.child("allow-all"), file: "allow-all")
                report(f["allow-all"]!.value, f.child("allow-all"), "\(allowAll) and \(flag.name) \(singleQuoted(value)) are mutually exclusive: drop \(allowAll) to \(client ? "accept only the listed servers" : "admit only the listed clients")")
            } else {
                problem(f["allow-all"]!.value, f.child("allow-all"), "allow-all: true and rules are mutually exclusive: drop allow-all to \(fix)")
            }
            return nil
        }
        if allowAll == nil && !isAbsent(f, "allow-all") { return nil }
        if verifyServerName == nil && client && !isAbsent(f, "verify-server-name") { return nil }
        if client {
            if rules.written > 0 {
                return (AccessPolicy(rules: rules.built, deny: deny.built), verifyServerName ?? false)
            }
            if verifyServerName == false && allowAll != true {
                let node = f["verify-server-name"]!.value
                problem(node, f.child("verify-server-name"), "false without rules accepts every server whose certificate chains to tls.cacert: add rules, or set allow-all: true as well to mean it")
                return nil
            }
            return (AccessPolicy(deny: deny.built, allowAll: true), verifyServerName ?? true)
        }
        if allowAll != true && rules.written == 0 {
            if !f.rejectedKeys { report(entry.value, path, emptyProblem) }
            return nil
        }
        return (AccessPolicy(rules: rules.built, deny: deny.built, allowAll: allowAll ?? false), false)
    }

    /// The rules of `policy.deny` or `policy.rules`: `written` counts the entries in the file, `built` the valid ones.
    func rules(
        _ f: Fields, _ name: String, requireName: Bool, names: inout [String: Node], noMatchersFix: String
    ) -> (written: Int, built: [AccessRule])? {
        guard let list = sequence(f, name) else {
            return f[name] == nil || isNull(f[name]!.value) ? (0, []) : nil
        }
        var built: [AccessRule] = []
        for (index, item) in list.items.enumerated() {
            let path = "\(f.child(name))[\(index)]"
            guard let rule = fields(item, path: path, known: Self.ruleKeys, hints: Self.ruleHints) else { continue }
            var ruleName: String?
            var ok = true
            if let (text, node) = string(rule, "name", required: requireName ? "name the rule; decisions and the audit log cite it" : nil) {
                if text.isEmpty || text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
                    problem(node, rule.child("name"), "\(singleQuoted(text)) is not a valid rule name: use a non-empty name without control characters")
                    ok = false
                } else if let first = names[text] {
                    problem(node, rule.child("name"), "duplicate rule name \(singleQuoted(text)) (first on line \(line(first))): give each rule its own name")
                    ok = false
                } else {
                    names[text] = node
                    ruleName = text
                }
            } else if requireName {
                ok = false
            }
            var matchers: [Matcher] = []
            for key in rule.order where key != "name" {
                guard let kind = Matcher.Kind(rawValue: key), let value = rule[key]?.value else { continue }
                let matcherPath = rule.child(key)
                if case .sequence = value {
                    problem(value, matcherPath, "expected a string, got a list: all matchers of a rule must hold, so write one rule per alternative")
                    ok = false
                    continue
                }
                guard let text = scalarText(value, path: matcherPath, expected: "a string", nullHint: "give a pattern") else {
                    ok = false
                    continue
                }
                if let matcher = validate(value, matcherPath, { k throws(ConfigError) in try Validate.matcher(text, kind: kind, key: k) }) {
                    matchers.append(matcher)
                } else {
                    ok = false
                }
            }
            if matchers.isEmpty && ok && !rule.rejectedKeys {
                let kinds = Matcher.Kind.allCases.map(\.rawValue).joined(separator: ", ")
                let what = ruleName.map { "rule \(singleQuoted($0))" } ?? "the entry"
                let fix = requireName ? noMatchersFix : ""
                problem(item, path, "\(what) has no matchers: give at least one of \(kinds)\(fix)")
                continue
            }
            guard ok, !matchers.isEmpty else { continue }
            do {
                built.append(try AccessRule(name: ruleName ?? matchers.map(\.description).joined(separator: " AND "), matchers: matchers))
            } catch {
                problem(item, path, "\(error.message)")
            }
        }
        return (list.items.count, built)
    }

}
