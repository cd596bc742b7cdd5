import Testing
import Policy

@Suite("DNS name patterns")
struct DNSPatternTests {
    @Test("literal names match exactly, ignoring ASCII case and one trailing dot", arguments: [
        ("app.example.com", "app.example.com", true),
        ("app.example.com", "APP.Example.COM", true),
        ("APP.EXAMPLE.com", "app.example.com", true),
        ("app.example.com", "app.example.com.", true),
        ("app.example.com.", "app.example.com", true),
        ("app.example.com", "app.example.com..", false),
        ("app.example.com", "app.example.co", false),
        ("app.example.com", "xapp.example.com", false),
        ("app.example.com", "app.example.com.evil", false),
        ("app.example.com", "", false),
    ])
    func literal(pattern: String, name: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .dnsName).matches(name) == expected)
    }

    @Test("* matches within one label and never crosses a dot", arguments: [
        ("*.example.com", "a.example.com", true),
        ("*.example.com", "A.EXAMPLE.COM", true),
        ("*.example.com", "a.b.example.com", false),
        ("*.example.com", "example.com", false),
        ("*", "localhost", true),
        ("*", "a.b", false),
        ("*.*.example.com", "a.b.example.com", true),
        ("*.*.example.com", "a.example.com", false),
        ("api.*", "api.internal", true),
        ("api.*", "api.a.b", false),
    ])
    func star(pattern: String, name: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .dnsName).matches(name) == expected)
    }

    @Test("* may be part of a label", arguments: [
        ("app-*.example.com", "app-1.example.com", true),
        ("app-*.example.com", "APP-Blue.example.com", true),
        ("app-*.example.com", "app-.example.com", true),
        ("app-*.example.com", "web-1.example.com", false),
        ("app-*.example.com", "app-1.eu.example.com", false),
        ("*-db.example.com", "orders-db.example.com", true),
        ("*-db.example.com", "orders-db2.example.com", false),
        ("a*b*c.example.com", "axxbyyc.example.com", true),
        ("a*b*c.example.com", "abc.example.com", true),
        ("a*b*c.example.com", "acb.example.com", false),
        ("a*a.example.com", "a.example.com", false),
    ])
    func partialLabel(pattern: String, name: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .dnsName).matches(name) == expected)
    }

    @Test("** matches one or more whole labels", arguments: [
        ("**.example.com", "a.example.com", true),
        ("**.example.com", "a.b.c.example.com", true),
        ("**.example.com", "example.com", false),
        ("**.example.com", "a.example.org", false),
        ("a.**.z", "a.b.c.z", true),
        ("a.**.z", "a.z", false),
        ("**.*.example.com", "a.b.example.com", true),
        ("**.*.example.com", "b.example.com", false),
        ("**.**.example.com", "a.b.example.com", true),
        ("**.**.example.com", "b.example.com", false),
        ("api.**", "api.eu.example.com", true),
    ])
    func globstar(pattern: String, name: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .dnsName).matches(name) == expected)
    }

    @Test("a presented name with an empty label never matches", arguments: [
        ("*.example.com", ".example.com"),
        ("**.example.com", "a..example.com"),
        ("**", "a..b"),
        ("*", ""),
        ("*", "."),
        ("*.example.com", "a.example.com.."),
        ("**.example.com", ".a.example.com"),
    ])
    func emptyLabels(pattern: String, name: String) throws {
        #expect(try !Pattern(pattern, kind: .dnsName).matches(name))
    }

    @Test("invalid DNS patterns are refused with a reason", arguments: [
        ("", "the pattern is empty"),
        (".", "the DNS name is empty"),
        ("a**b.example.com", "'**' must be a whole label"),
        ("**x.example.com", "'**' must be a whole label"),
        ("***.example.com", "'***' is not a wildcard: use '*' or '**'"),
        ("a..example.com", "it contains an empty label"),
        (".example.com", "it contains an empty label"),
        ("a.com,b.com", "a DNS name cannot contain ','"),
        ("app example.com", "a DNS name cannot contain ' '"),
        ("bücher.example", "a DNS name cannot contain non-ASCII characters: write IDNs in punycode (xn--…)"),
        ("app\texample.com", "it contains a control character"),
        ("app\u{0}.example.com", "it contains a NUL character"),
    ])
    func invalid(pattern: String, reason: String) {
        #expect(throws: PatternError(value: pattern, expected: "pattern", reason: reason)) {
            try Pattern(pattern, kind: .dnsName)
        }
    }

    @Test func patternErrorDescriptionQuotesTheValue() {
        let error = PatternError(value: "a**b.example.com", expected: "pattern", reason: "'**' must be a whole label")
        #expect(error.description == "'a**b.example.com' is not a valid pattern: '**' must be a whole label")
    }
}

@Suite("URI patterns")
struct URIPatternTests {
    @Test("* matches within one path segment", arguments: [
        ("spiffe://example.org/ns/prod/sa/web", "spiffe://example.org/ns/prod/sa/web", true),
        ("spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod/web", true),
        ("spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod/web/x", false),
        ("spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod/", false),
        ("spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod", false),
        ("spiffe://example.org/ns/*/sa/web", "spiffe://example.org/ns/a/b/sa/web", false),
        ("spiffe://example.org/ns/prod-*/sa", "spiffe://example.org/ns/prod-eu/sa", true),
        ("spiffe://example.org/ns/prod-*/sa", "spiffe://example.org/ns/dev-eu/sa", false),
        ("spiffe://*.example.org/x", "spiffe://a.example.org/x", true),
        ("spiffe://*.example.org/x", "spiffe://a.example.org/y", false),
        ("urn:example:*", "urn:example:abc", true),
        ("urn:example:*", "urn:other:abc", false),
    ])
    func star(pattern: String, uri: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .uri).matches(uri) == expected)
    }

    @Test("** matches one or more whole segments", arguments: [
        ("spiffe://example.org/ns/**", "spiffe://example.org/ns/prod", true),
        ("spiffe://example.org/ns/**", "spiffe://example.org/ns/prod/sa/web", true),
        ("spiffe://example.org/ns/**", "spiffe://example.org/ns", false),
        ("spiffe://example.org/ns/**", "spiffe://example.org/ns/", false),
        ("spiffe://example.org/ns/**", "spiffe://example.org/ns//x", false),
        ("spiffe://example.org/ns/**/sa/web", "spiffe://example.org/ns/a/b/sa/web", true),
        ("spiffe://example.org/ns/**/sa/web", "spiffe://example.org/ns/sa/web", false),
        ("spiffe://example.org/**", "spiffe://example.org", false),
        ("spiffe://example.org/**", "spiffe://other.org/ns", false),
    ])
    func globstar(pattern: String, uri: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .uri).matches(uri) == expected)
    }

    @Test("scheme and host ignore case, the path does not", arguments: [
        ("spiffe://example.org/ns/prod", "SPIFFE://Example.ORG/ns/prod", true),
        ("SPIFFE://EXAMPLE.org/ns/prod", "spiffe://example.org/ns/prod", true),
        ("spiffe://example.org/ns/prod", "spiffe://example.org/NS/prod", false),
        ("spiffe://example.org/ns/Prod", "spiffe://example.org/ns/prod", false),
    ])
    func caseRules(pattern: String, uri: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .uri).matches(uri) == expected)
    }

    @Test("the scheme and host are compared whole", arguments: [
        ("spiffe://example.org/x", "https://example.org/x"),
        ("spiffe://example.org/x", "spiffe2://example.org/x"),
        ("spiffe://example.org/x", "spiffe://example.org.evil/x"),
        ("spiffe://example.org/x", "spiffe://evil.example.org/x"),
        ("spiffe://example.org/x", "spiffe:example.org/x"),
        ("spiffe://example.org", "spiffe://example.org/"),
        ("spiffe://example.org/x", "spiffe"),
        ("spiffe://example.org/x", ""),
    ])
    func wholeSchemeAndHost(pattern: String, uri: String) throws {
        #expect(try !Pattern(pattern, kind: .uri).matches(uri))
    }

    @Test("invalid URI patterns are refused with a reason", arguments: [
        ("*spiffe", "the scheme must be literal"),
        ("*://example.org", "the scheme must be literal"),
        ("spi*ffe://example.org/x", "the scheme must be literal"),
        ("example.org/ns", "a URI pattern starts with a scheme, e.g. 'spiffe://example.org/ns/*'"),
        ("1x://example.org", "the scheme must start with a letter and hold only letters, digits, '+', '-' or '.'"),
        ("spiffe:///ns", "the host is empty"),
        ("spiffe://**/ns", "'**' is not allowed in the host; use '*'"),
        ("spiffe://example.org/ns/a**b", "'**' must be a whole path segment"),
        ("spiffe://example.org/ns/***", "'***' is not a wildcard: use '*' or '**'"),
        ("spiffe://example.org/my ns", "a URI cannot contain a space"),
        ("spiffe://example.org/\u{0}", "it contains a NUL character"),
        ("spiffe://example.org/\u{7f}", "it contains a control character"),
        ("", "the pattern is empty"),
    ])
    func invalid(pattern: String, reason: String) {
        #expect(throws: PatternError(value: pattern, expected: "pattern", reason: reason)) {
            try Pattern(pattern, kind: .uri)
        }
    }
}

@Suite("Plain and email patterns")
struct PlainPatternTests {
    @Test("* matches any run of characters, case-sensitively", arguments: [
        ("ops-*", "ops-1", true),
        ("ops-*", "ops-", true),
        ("ops-*", "OPS-1", false),
        ("ops-*", "xops-1", false),
        ("*", "", true),
        ("*", "any.thing/with:separators", true),
        ("a*c", "abc", true),
        ("a*c", "ac", true),
        ("a*c", "abd", false),
        ("*-prod-*", "pay-prod-7", true),
        ("*-prod-*", "pay-dev-7", false),
        ("web", "web", true),
        ("web", "web ", false),
        ("web", "Web", false),
    ])
    func plain(pattern: String, value: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .plain).matches(value) == expected)
    }

    /// Found by the `pattern` fuzz target: patterns work on UTF-8 bytes, not grapheme clusters. A '*' followed by
    /// a combining mark (one Character to String) is still a wildcard, and canonically equivalent spellings of a
    /// literal (precomposed and decomposed "é") are different names.
    @Test func patternsWorkOnBytesNotCharacters() throws {
        let star = try Pattern("cuS*\u{0597}", kind: .plain)
        #expect(!star.isLiteral)
        #expect(star.matches("cuSanything\u{0597}"))
        let composed = try Pattern("caf\u{E9}", kind: .plain)
        #expect(composed.isLiteral)
        #expect(composed.matches("caf\u{E9}"))
        #expect(!composed.matches("cafe\u{301}"), "a decomposed spelling is another name")
    }

    @Test("a pattern without * is literal", arguments: [
        ("web", Pattern.Kind.plain, true),
        ("web-*", .plain, false),
        ("app.example.com", .dnsName, true),
        ("*.example.com", .dnsName, false),
        ("spiffe://example.org/x", .uri, true),
        ("spiffe://*/x", .uri, false),
        ("a@example.com", .email, true),
        ("*@example.com", .email, false),
    ])
    func literal(pattern: String, kind: Pattern.Kind, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: kind).isLiteral == expected)
    }

    @Test("invalid plain patterns are refused with a reason", arguments: [
        ("", "the pattern is empty"),
        ("a**b", "'**' only spans labels or path segments; use '*' here"),
        ("**", "'**' only spans labels or path segments; use '*' here"),
        ("***", "'***' is not a wildcard: use '*'"),
        ("ops\u{1}", "it contains a control character"),
        ("ops\n", "it contains a control character"),
    ])
    func invalid(pattern: String, reason: String) {
        #expect(throws: PatternError(value: pattern, expected: "pattern", reason: reason)) {
            try Pattern(pattern, kind: .plain)
        }
    }

    @Test("email splits at the last @: local part sensitive, domain as DNS", arguments: [
        ("*@example.com", "alice@example.com", true),
        ("alice@example.com", "alice@EXAMPLE.com", true),
        ("alice@example.com", "alice@example.com.", true),
        ("alice@example.com", "Alice@example.com", false),
        ("*@*.example.com", "bob@mail.example.com", true),
        ("*@*.example.com", "bob@example.com", false),
        ("*@**.example.com", "bob@a.b.example.com", true),
        ("\"a@b\"@example.com", "\"a@b\"@example.com", true),
        ("*@example.com", "example.com", false),
        ("*@example.com", "alice@example.com@evil.org", false),
        ("*@example.com", "alice@a..example.com", false),
    ])
    func email(pattern: String, value: String, expected: Bool) throws {
        #expect(try Pattern(pattern, kind: .email).matches(value) == expected)
    }

    @Test("invalid email patterns are refused with a reason", arguments: [
        ("example.com", "an email pattern needs an '@', e.g. '*@example.com'"),
        ("@example.com", "the part before '@' is empty"),
        ("alice@", "the DNS name is empty"),
        ("alice@a..com", "it contains an empty label"),
        ("a**@example.com", "'**' only spans labels or path segments; use '*' here"),
    ])
    func invalidEmail(pattern: String, reason: String) {
        #expect(throws: PatternError(value: pattern, expected: "pattern", reason: reason)) {
            try Pattern(pattern, kind: .email)
        }
    }
}
