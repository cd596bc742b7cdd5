import Testing
import Config
import Policy

@Suite("Durations")
struct DurationTests {
    @Test("parses units and decreasing combinations into milliseconds", arguments: [
        ("0", UInt64(0)), ("0s", 0), ("0ms", 0), ("250ms", 250), ("10s", 10_000), ("90s", 90_000), ("2m", 120_000),
        ("1h", 3_600_000), ("30d", 2_592_000_000), ("1d12h", 129_600_000), ("1m30s", 90_000), ("1h30m", 5_400_000), ("1h2m3s4ms", 3_723_004), ("1s500ms", 1_500),
    ])
    func parses(text: String, milliseconds: UInt64) throws {
        #expect(try Validate.duration(text, key: "--idle-timeout") == milliseconds)
    }

    @Test("anything else is refused with the accepted forms", arguments: [
        "", "10", "10 sec", "1.5s", "-1s", "+1s", "s", "ms", "10S", "1s1m", "1s1s", "1h1d", "1w", " 10s", "10s ", "0x10s", "1m 30s", "٣s",
    ])
    func refuses(text: String) {
        #expect(throws: ConfigError(key: "--idle-timeout",
                                    message: "--idle-timeout '\(text)' is not a duration: use e.g. 500ms, 10s, 5m, 1h")) {
            try Validate.duration(text, key: "--idle-timeout")
        }
    }

    @Test func overflowIsTooLong() {
        #expect(throws: ConfigError(key: "--close-timeout", message: "--close-timeout '99999999999999999999h' is too long")) {
            try Validate.duration("99999999999999999999h", key: "--close-timeout")
        }
    }

    @Test func positiveDurationRefusesZero() {
        #expect(throws: ConfigError(key: "--handshake-timeout",
                                    message: "--handshake-timeout '0ms' must be greater than zero: use e.g. 10s")) {
            try Validate.positiveDuration("0ms", key: "--handshake-timeout")
        }
    }

    @Test func messagesNameAConfigFileKeyVerbatim() {
        #expect(throws: ConfigError(key: "config 'listeners[1].timeouts.idle':",
                                    message: "config 'listeners[1].timeouts.idle': '10 sec' is not a duration: use e.g. 500ms, 10s, 5m, 1h")) {
            try Validate.duration("10 sec", key: "config 'listeners[1].timeouts.idle':")
        }
    }
}

@Suite("Listen addresses")
struct ListenAddressTests {
    @Test("accepts IPv4, bracketed IPv6, localhost and :PORT", arguments: [
        ("0.0.0.0:8443", "0.0.0.0", UInt16(8443), "0.0.0.0:8443"),
        (":8443", "0.0.0.0", 8443, "0.0.0.0:8443"),
        ("localhost:8443", "127.0.0.1", 8443, "127.0.0.1:8443"),
        ("LocalHost:1", "127.0.0.1", 1, "127.0.0.1:1"),
        ("127.0.0.1:0", "127.0.0.1", 0, "127.0.0.1:0"),
        ("[::1]:8443", "::1", 8443, "[::1]:8443"),
        ("[::]:0", "::", 0, "[::]:0"),
        ("[2001:DB8::1]:443", "2001:db8::1", 443, "[2001:db8::1]:443"),
        ("10.1.2.3:65535", "10.1.2.3", 65535, "10.1.2.3:65535"),
    ])
    func parses(text: String, host: String, port: UInt16, description: String) throws {
        let address = try Validate.listenAddress(text, key: "--listen")
        #expect(address == .tcp(host: host, port: port))
        #expect(address == ListenAddress(host: IPAddress(host)!, port: port))
        #expect(address.description == description)
    }

    @Test("accepts unix:/absolute/path and systemd:NAME", arguments: [
        ("unix:/run/portcullis/app.sock", ListenAddress.unix(path: "/run/portcullis/app.sock"), false),
        ("unix:/" + String(repeating: "a", count: 106), .unix(path: "/" + String(repeating: "a", count: 106)), false),
        ("unix:/tmp/with space.sock", .unix(path: "/tmp/with space.sock"), false),
        ("systemd:portcullis", .systemd(name: "portcullis"), false),
        ("systemd:web.tls-1_a", .systemd(name: "web.tls-1_a"), false),
        ("systemd:" + String(repeating: "n", count: 255), .systemd(name: String(repeating: "n", count: 255)), false),
        ("127.0.0.1:8443", .tcp(host: "127.0.0.1", port: 8443), false),
        ("0.0.0.0:8443", .tcp(host: "0.0.0.0", port: 8443), true),
    ])
    func parsesLocal(text: String, expected: ListenAddress, networkFacing: Bool) throws {
        let address = try Validate.listenAddress(text, key: "--listen")
        #expect(address == expected)
        #expect(address.description == text)
        // Client mode needs unsafe-listen only for a TCP address off loopback.
        #expect(address.isNetworkFacing == networkFacing)
    }

    @Test("refuses with a fix", arguments: [
        ("127.0.0.1", "--listen '127.0.0.1' has no port: use HOST:PORT, e.g. 0.0.0.0:8443 or :8443"),
        ("127.0.0.1:", "--listen '127.0.0.1:' has no port: use HOST:PORT, e.g. 0.0.0.0:8443 or :8443"),
        ("", "--listen '' has no port: use HOST:PORT, e.g. 0.0.0.0:8443 or :8443"),
        ("[::1]", "--listen '[::1]' has no port: use HOST:PORT, e.g. 0.0.0.0:8443 or :8443"),
        ("127.0.0.1:70000", "--listen '127.0.0.1:70000' has an invalid port: use 0-65535"),
        ("127.0.0.1:https", "--listen '127.0.0.1:https' has an invalid port: use 0-65535"),
        ("127.0.0.1:-1", "--listen '127.0.0.1:-1' has an invalid port: use 0-65535"),
        ("127.0.0.1:+80", "--listen '127.0.0.1:+80' has an invalid port: use 0-65535"),
        ("::1:8443", "--listen '::1:8443' is ambiguous: put an IPv6 address in brackets, e.g. [::1]:8443"),
        ("[::1:8443", "--listen '[::1:8443' has no closing ']': use e.g. [::1]:8443"),
        ("[10.0.0.1]:80", "--listen '[10.0.0.1]:80' has brackets around something that is not an IPv6 address"),
        ("example.com:8443", "--listen 'example.com:8443' does not name an IP address: use an IP address, localhost, or :PORT for all interfaces"),
        ("it's:1", "--listen 'it\\'s:1' does not name an IP address: use an IP address, localhost, or :PORT for all interfaces"),
        ("unix:run/app.sock", "--listen 'unix:run/app.sock' is not an absolute socket path: use unix:/path/to/socket"),
        ("unix:", "--listen 'unix:' is not an absolute socket path: use unix:/path/to/socket"),
        ("unix:/" + String(repeating: "a", count: 107),
         "--listen 'unix:/\(String(repeating: "a", count: 107))' is too long: a socket path is at most 107 bytes"),
        ("systemd:", "--listen 'systemd:' is not a socket name: use systemd:NAME with NAME as in the .socket unit's FileDescriptorName= (1-255 printable characters, no ':' or space)"),
        ("systemd:a:b", "--listen 'systemd:a:b' is not a socket name: use systemd:NAME with NAME as in the .socket unit's FileDescriptorName= (1-255 printable characters, no ':' or space)"),
        ("systemd:a b", "--listen 'systemd:a b' is not a socket name: use systemd:NAME with NAME as in the .socket unit's FileDescriptorName= (1-255 printable characters, no ':' or space)"),
        ("systemd:" + String(repeating: "n", count: 256),
         "--listen 'systemd:\(String(repeating: "n", count: 256))' is not a socket name: use systemd:NAME with NAME as in the .socket unit's FileDescriptorName= (1-255 printable characters, no ':' or space)"),
        ("launchd:Listener", "--listen 'launchd:Listener' is a launchd socket, which exists on macOS only: on Linux use systemd:NAME (socket activation) or unix:/path"),
    ])
    func refuses(text: String, message: String) {
        #expect(throws: ConfigError(key: "--listen", message: message)) {
            try Validate.listenAddress(text, key: "--listen")
        }
    }
}

@Suite("Target addresses")
struct TargetAddressTests {
    @Test("accepts loopback TCP and absolute Unix paths", arguments: [
        ("127.0.0.1:6379", TargetAddress.tcp(host: "127.0.0.1", port: 6379), "127.0.0.1:6379"),
        ("localhost:6379", .tcp(host: "127.0.0.1", port: 6379), "127.0.0.1:6379"),
        ("127.8.9.10:1", .tcp(host: "127.8.9.10", port: 1), "127.8.9.10:1"),
        ("[::1]:6379", .tcp(host: "::1", port: 6379), "[::1]:6379"),
        ("[0:0::1]:65535", .tcp(host: "::1", port: 65535), "[::1]:65535"),
        ("unix:/run/app.sock", .unix(path: "/run/app.sock"), "unix:/run/app.sock"),
    ])
    func parses(text: String, expected: TargetAddress, description: String) throws {
        let target = try Validate.targetAddress(text, key: "--target", allowNonLoopback: false, unsafeKey: "--unsafe-target")
        #expect(target == expected)
        #expect(target.description == description)
        #expect(target.isLoopback)
    }

    @Test("refuses non-loopback targets unless allowed", arguments: [
        ("10.0.0.5:6379", TargetAddress.tcp(host: "10.0.0.5", port: 6379)),
        ("db.internal:5432", .tcp(host: "db.internal", port: 5432)),
        ("[::ffff:127.0.0.1]:80", .tcp(host: "::ffff:127.0.0.1", port: 80)),
        ("[2001:db8::5]:443", .tcp(host: "2001:db8::5", port: 443)),
        ("0.0.0.0:80", .tcp(host: "0.0.0.0", port: 80)),
    ])
    func nonLoopback(text: String, expected: TargetAddress) throws {
        #expect(throws: ConfigError(key: "--target",
                                    message: "--target '\(text)' is not a loopback address (use --unsafe-target to allow it)")) {
            try Validate.targetAddress(text, key: "--target", allowNonLoopback: false, unsafeKey: "--unsafe-target")
        }
        let allowed = try Validate.targetAddress(text, key: "--target", allowNonLoopback: true, unsafeKey: "--unsafe-target")
        #expect(allowed == expected)
        #expect(!allowed.isLoopback)
    }

    @Test("refuses malformed targets with a fix", arguments: [
        ("127.0.0.1:0", "--target '127.0.0.1:0' has an invalid port: use 1-65535"),
        ("127.0.0.1:70000", "--target '127.0.0.1:70000' has an invalid port: use 1-65535"),
        ("127.0.0.1", "--target '127.0.0.1' has no port: use HOST:PORT, e.g. 127.0.0.1:6379 or unix:/path/to/socket"),
        (":6379", "--target ':6379' has no host: use e.g. 127.0.0.1:6379"),
        ("::1:6379", "--target '::1:6379' is ambiguous: put an IPv6 address in brackets, e.g. [::1]:8443"),
        ("bad_host:80", "--target 'bad_host:80' has an invalid host: use an IP address or a DNS name"),
        ("10.0.0:80", "--target '10.0.0:80' has an invalid host: use an IP address or a DNS name"),
        ("unix:run/app.sock", "--target 'unix:run/app.sock' is not an absolute socket path: use unix:/path/to/socket"),
        ("unix:", "--target 'unix:' is not an absolute socket path: use unix:/path/to/socket"),
        ("unix:/" + String(repeating: "a", count: 107),
         "--target 'unix:/" + String(repeating: "a", count: 107) + "' is too long: a socket path is at most 107 bytes"),
    ])
    func refuses(text: String, message: String) {
        #expect(throws: ConfigError(key: "--target", message: message)) {
            try Validate.targetAddress(text, key: "--target", allowNonLoopback: true, unsafeKey: "--unsafe-target")
        }
    }
}

@Suite("Small values")
struct SmallValueTests {
    @Test("TLS versions", arguments: [
        ("1.2", TLSVersion.tls12, nil), ("1.3", .tls13, nil),
        ("1.1", nil, "--min-tls '1.1' is not allowed: use 1.2 or 1.3"),
        ("1.0", nil, "--min-tls '1.0' is not allowed: use 1.2 or 1.3"),
        ("tls1.3", nil, "--min-tls 'tls1.3' is not a TLS version: use 1.2 or 1.3"),
        ("", nil, "--min-tls '' is not a TLS version: use 1.2 or 1.3"),
    ] as [(String, TLSVersion?, String?)])
    func tlsVersion(text: String, expected: TLSVersion?, message: String?) throws {
        if let expected {
            #expect(try Validate.tlsVersion(text, key: "--min-tls") == expected)
        } else {
            #expect(throws: ConfigError(key: "--min-tls", message: message!)) { try Validate.tlsVersion(text, key: "--min-tls") }
        }
    }

    @Test("integers in range", arguments: [
        ("1", 1, nil), ("256", 256, nil), ("0008", 8, nil),
        ("0", nil, "--workers '0' is out of range: use 1-256"),
        ("257", nil, "--workers '257' is out of range: use 1-256"),
        ("99999999999999999999", nil, "--workers '99999999999999999999' is out of range: use 1-256"),
        ("four", nil, "--workers 'four' is not a number: use 1-256"),
        ("-1", nil, "--workers '-1' is not a number: use 1-256"),
        ("", nil, "--workers '' is not a number: use 1-256"),
    ] as [(String, Int?, String?)])
    func integer(text: String, expected: Int?, message: String?) throws {
        if let expected {
            #expect(try Validate.integer(text, key: "--workers", in: 1...256, hint: "use 1-256") == expected)
        } else {
            #expect(throws: ConfigError(key: "--workers", message: message!)) {
                try Validate.integer(text, key: "--workers", in: 1...256, hint: "use 1-256")
            }
        }
    }

    @Test func logLevelsAreTheSwiftLogNames() throws {
        for level in ["trace", "debug", "info", "notice", "warning", "error", "critical"] {
            #expect(try Validate.logLevel(level, key: "--log-level") == level)
        }
        #expect(throws: ConfigError(key: "--log-level", message: "--log-level 'INFO' is not a log level: use trace, debug, info, notice, warning, error or critical")) {
            try Validate.logLevel("INFO", key: "--log-level")
        }
    }

    @Test func logFormats() throws {
        #expect(try Validate.logFormat("text", key: "--log-format") == .text)
        #expect(try Validate.logFormat("json", key: "--log-format") == .json)
        #expect(throws: ConfigError(key: "--log-format", message: "--log-format 'xml' is not a log format: use text or json")) {
            try Validate.logFormat("xml", key: "--log-format")
        }
    }
}
