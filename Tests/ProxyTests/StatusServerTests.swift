import Testing
@testable import Proxy
import TLS

@Suite("Status endpoint request parsing")
struct HTTPRequestHeadTests {
    static let cases: [(String, HTTPRequestHead.Parse)] = [
        ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", .request(HTTPRequestHead(method: "GET", path: "/metrics"))),
        ("HEAD /healthz HTTP/1.0\r\n\r\n", .request(HTTPRequestHead(method: "HEAD", path: "/healthz"))),
        ("GET /readyz?full=1 HTTP/1.1\n\n", .request(HTTPRequestHead(method: "GET", path: "/readyz", query: "full=1"))),
        ("GET /_metrics?format=prometheus HTTP/1.1\r\n\r\n",
         .request(HTTPRequestHead(method: "GET", path: "/_metrics", query: "format=prometheus"))),
        ("POST /metrics HTTP/1.1\r\n\r\n", .request(HTTPRequestHead(method: "POST", path: "/metrics"))),
        ("GET /metrics HTTP/1.1\r\nHost: x\r\n", .incomplete),
        ("GET /met", .incomplete),
        ("", .incomplete),
        ("GET /metrics HTTP/2.0\r\n\r\n", .invalid(status: 505, message: "only HTTP/1.0 and HTTP/1.1 are served")),
        ("GET metrics HTTP/1.1\r\n\r\n", .invalid(status: 400, message: "malformed request line")),
        ("GET  /metrics HTTP/1.1\r\n\r\n", .invalid(status: 400, message: "malformed request line")),
        ("get /metrics HTTP/1.1\r\n\r\n", .invalid(status: 400, message: "malformed request line")),
        ("GET /metrics\r\n\r\n", .invalid(status: 400, message: "malformed request line")),
        ("\u{16}\u{03}\u{01}\u{00}", .invalid(status: 400, message: "malformed request line")),
        ("GET /m\u{7F} HTTP/1.1", .invalid(status: 400, message: "malformed request line")),
    ]

    @Test(arguments: cases)
    func parses(_ text: String, _ expected: HTTPRequestHead.Parse) {
        #expect(HTTPRequestHead.parse(Array(text.utf8)) == expected)
    }

    @Test func queryValuesAreFoundByName() {
        let head = HTTPRequestHead(method: "GET", path: "/_metrics", query: "a=1&format=prometheus&flag")
        #expect(head.queryValue("format") == "prometheus")
        #expect(head.queryValue("flag") == "")
        #expect(head.queryValue("form") == nil)
        #expect(HTTPRequestHead(method: "GET", path: "/_metrics").queryValue("format") == nil)
    }

    @Test func anOversizedHeadIsRefusedBeforeItEnds() {
        let head = Array("GET /metrics HTTP/1.1\r\nX-Pad: ".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: HTTPRequestHead.maxHeadBytes)
        #expect(HTTPRequestHead.parse(head) == .invalid(status: 431, message: "request head larger than 8192 bytes"))
        #expect(HTTPRequestHead.parse(Array("GET / HTTP/1.1\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "b"), count: 100)) == .incomplete)
    }

    @Test func responsesCarryLengthAndClose() {
        let response = HTTPResponse.json(503, #"{"status":"not ready"}"#)
        let text = String(decoding: response.serialized(includeBody: true), as: UTF8.self)
        #expect(text == "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 23\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{\"status\":\"not ready\"}\n")
        let head = String(decoding: response.serialized(includeBody: false), as: UTF8.self)
        #expect(head.hasSuffix("Content-Length: 23\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"))
    }

    @Test func timestampsAreUTC() {
        #expect(iso8601(0) == "1970-01-01T00:00:00Z")
        #expect(iso8601(1_795_000_000) == "2026-11-18T11:06:40Z")
        #expect(iso8601(1_795_000_000, milliseconds: 7) == "2026-11-18T11:06:40.007Z")  // the log lines' form
    }
}

@Suite("Metrics")
struct MetricsTests {
    @Test func workerCountersAggregateAndExportAsMonotonicCounters() {
        let metrics = RuntimeMetrics()
        let a = metrics.makeStats(listener: "valkey")
        let b = metrics.makeStats(listener: "valkey")
        b.count { $0.acceptPauses += 2 }
        a.count { $0.accepted += 2; $0.allowedByRule["ops", default: 0] += 2; $0.closed[CloseCategory.normal.index] += 1 }
        b.count { $0.accepted += 1; $0.failures[TLSFailure.Kind.denied.index] += 1; $0.denied += 1 }
        a.addBytes(100, up: true)
        b.addBytes(7, up: false)
        let exporter = MetricsExporter(metrics: metrics)
        let snapshot = GaugeSnapshot(listeners: [.init(name: "valkey", active: 1, pausedWorkers: 1, certificateNotAfter: 1100, crlNextUpdate: nil)],
                                     configGeneration: 3, startTime: 900, version: "1.2.3", now: 1000,
                                     sessionCache: (entries: 5, hits: 8, misses: 2))
        var text = String(decoding: exporter.render(snapshot), as: UTF8.self)
        for line in [
            #"portcullis_connections_accepted_total{listener="valkey"} 3"#,
            #"portcullis_connections_closed_total{listener="valkey",reason="normal"} 1"#,
            #"portcullis_handshake_failures_total{listener="valkey",reason="denied"} 1"#,
            #"portcullis_handshakes_total{listener="valkey",result="failed"} 1"#,
            #"portcullis_policy_decisions_total{listener="valkey",decision="allow",rule="ops"} 2"#,
            #"portcullis_policy_decisions_total{listener="valkey",decision="deny",rule=""} 1"#,
            #"portcullis_bytes_total{listener="valkey",direction="up"} 100"#,
            #"portcullis_bytes_total{listener="valkey",direction="down"} 7"#,
            #"portcullis_connections_active{listener="valkey"} 1.0"#,
            #"portcullis_accept_pauses_total{listener="valkey"} 2"#,
            #"portcullis_accept_paused_workers{listener="valkey"} 1.0"#,
            #"portcullis_certificate_expiry_seconds{listener="valkey"} 100.0"#,
            #"portcullis_config_generation 3.0"#,
            #"portcullis_build_info{version="1.2.3"} 1.0"#,
            #"portcullis_tls_session_cache_entries 5.0"#,
            #"portcullis_tls_session_cache_lookups_total{result="hit"} 8"#,
            #"portcullis_tls_session_cache_lookups_total{result="miss"} 2"#,
        ] {
            #expect(text.contains(line + "\n"), "missing: \(line)\n\(text)")
        }
        // A second scrape after more traffic: counters carry on from where they were, not doubled.
        a.count { $0.accepted += 1 }
        text = String(decoding: exporter.render(snapshot), as: UTF8.self)
        #expect(text.contains(#"portcullis_connections_accepted_total{listener="valkey"} 4"# + "\n"))
        #expect(text.contains(#"portcullis_policy_decisions_total{listener="valkey",decision="allow",rule="ops"} 2"# + "\n"))
    }
}
