import Policy
import Testing
@testable import Proxy

@Suite struct LogOutputTests {
    @Test(arguments: [
        ("plain", "\"plain\""),
        ("quote \" and backslash \\", "\"quote \\\" and backslash \\\\\""),
        ("line\nbreak\ttab\r", "\"line\\nbreak\\ttab\\r\""),
        ("nul\u{0}bell\u{7}del\u{7f}", "\"nul\\u0000bell\\u0007del\\u007f\""),
        ("line\u{2028}separator", "\"line\\u2028separator\""),
        ("CN=ünïcode", "\"CN=ünïcode\""),
    ])
    func jsonStringEscapesEverythingThatCouldSplitALine(_ input: String, _ expected: String) {
        #expect(jsonString(input) == expected)
    }

    @Test func timestampIsRFC3339WithMillisecondsInUTC() {
        let ts = timestamp()
        #expect(ts.count == 24)
        #expect(ts.hasSuffix("Z"))
        #expect(Array(ts)[10] == "T")
    }
}

@Suite struct LogRateLimiterTests {
    @Test func admitsABurstThenSuppressesAndCounts() {
        let limiter = LogRateLimiter(ratePerSecond: 10, burst: 3, now: 0)
        #expect(limiter.admit(now: 0) == 0)
        #expect(limiter.admit(now: 0) == 0)
        #expect(limiter.admit(now: 0) == 0)
        #expect(limiter.admit(now: 0) == nil)
        #expect(limiter.admit(now: 0) == nil)
        #expect(limiter.suppressed == 2)
        // 100 ms later one token has come back; the admitted line reports what was suppressed.
        #expect(limiter.admit(now: 100) == 2)
        #expect(limiter.suppressed == 0)
        #expect(limiter.admit(now: 100) == nil)
    }

    @Test func refillNeverExceedsTheBurst() {
        let limiter = LogRateLimiter(ratePerSecond: 10, burst: 2, now: 0)
        for _ in 0..<2 { #expect(limiter.admit(now: 60_000) == 0) }
        #expect(limiter.admit(now: 60_000) == nil)
    }
}
