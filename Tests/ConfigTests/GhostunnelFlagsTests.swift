import Testing
@testable import Config

@Suite("ghostunnel flag spellings")
struct GhostunnelFlagsTests {
    private func rewrite(_ line: String, _ mode: ListenerMode = .server) throws -> [String] {
        try GhostunnelFlags.rewrite(line.split(separator: " ").map(String.init), mode: mode)
    }

    private func refusal(_ line: String, _ mode: ListenerMode = .server) -> String? {
        do { _ = try rewrite(line, mode); return nil } catch { return (error as? GhostunnelFlags.Refusal)?.description }
    }

    @Test func aliasesKeepTheirValue() throws {
        #expect(try rewrite("--allow-dns-san a.internal --allow-uri-san=spiffe://x/y --allow-ip-san 10.0.0.1 --allow-email-san a@b.org")
                == ["--allow-dns", "a.internal", "--allow-uri", "spiffe://x/y", "--allow-ip", "10.0.0.1", "--allow-email", "a@b.org"])
        #expect(try rewrite("--verify-dns-san a --verify-uri-san u --verify-ip-san 10.0.0.1", .client)
                == ["--verify-dns", "a", "--verify-uri", "u", "--verify-ip", "10.0.0.1"])
        #expect(try rewrite("--listen :8443 --allow-cn x") == ["--listen", ":8443", "--allow-cn", "x"])
    }

    /// Invoked as `ghostunnel`: ghostunnel's defaults where ours differ.
    @Test(arguments: [
        ("--status 127.0.0.1:6060", ["--status", "https://127.0.0.1:6060", "--close-timeout", "1s"]),
        ("--status=localhost:6060", ["--status", "https://localhost:6060", "--close-timeout", "1s"]),
        ("--status http://127.0.0.1:6060", ["--status", "http://127.0.0.1:6060", "--close-timeout", "1s"]),
        ("--status https://127.0.0.1:6060", ["--status", "https://127.0.0.1:6060", "--close-timeout", "1s"]),
        ("--status unix:/run/s.sock", ["--status", "unix:/run/s.sock", "--close-timeout", "1s"]),
        ("--status systemd:status", ["--status", "https://systemd:status", "--close-timeout", "1s"]),
        ("--status 127.0.0.1:6060 --disable-authentication", ["--status", "127.0.0.1:6060", "--disable-authentication", "--close-timeout", "1s"]),
        ("--close-timeout 5s --status :6060", ["--close-timeout", "5s", "--status", "https://:6060"]),
        ("--close-timeout=0s", ["--close-timeout=0s"]),
        ("--allow-all -- --status x", ["--allow-all", "--close-timeout", "1s", "--", "--status", "x"]),
    ])
    func ghostunnelDefaultsUnderItsName(line: String, expected: [String]) {
        #expect(GhostunnelFlags.ghostunnelDefaults(line.split(separator: " ").map(String.init)) == expected)
    }

    @Test func spkiPinBecomesHex() throws {
        // base64 of 32 bytes 0x00..0x1f
        let pin = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        let hex = "sha256:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        #expect(try rewrite("--allow-spki-pin \(pin)") == ["--allow-spki", hex])
        #expect(try rewrite("--verify-spki-pin=\(pin)", .client) == ["--verify-spki", hex])
        #expect(try rewrite("--allow-spki-pin \(hex)") == ["--allow-spki", hex])
        #expect(refusal("--allow-spki-pin nope")?.hasPrefix("--allow-spki-pin 'nope': not a base64 SHA-256 pin") == true)
    }

    @Test func bareProxyProtocolMeansV2() throws {
        #expect(try rewrite("--proxy-protocol --allow-all") == ["--proxy-protocol", "v2", "--allow-all"])
        #expect(try rewrite("--allow-all --proxy-protocol") == ["--allow-all", "--proxy-protocol", "v2"])
        #expect(try rewrite("--proxy-protocol off") == ["--proxy-protocol", "off"])
        #expect(try rewrite("--proxy-protocol=v2") == ["--proxy-protocol=v2"])
        #expect(try rewrite("--proxy-protocol-mode tls") == ["--proxy-protocol", "v2"])
    }

    @Test func quietMapsToLogSettings() throws {
        #expect(try rewrite("--quiet handshake-errs") == ["--quiet-handshake-failures"])
        #expect(try rewrite("--quiet conns") == ["--log-level", "warning"])
        #expect(try rewrite("--quiet conns --quiet conn-errs") == ["--log-level", "error"])
        #expect(try rewrite("--quiet all") == ["--quiet-handshake-failures", "--log-level", "error"])
        #expect(try rewrite("--log-level debug --quiet conns") == ["--log-level", "debug"])
        #expect(refusal("--quiet loud") == "--quiet 'loud': use all, conns, conn-errs or handshake-errs (repeatable)")
    }

    @Test func versionsAndSuites() throws {
        #expect(try rewrite("--max-tls-version 1.3") == [])
        #expect(refusal("--max-tls-version 1.2")?.hasPrefix("--max-tls-version 1.2 is not supported") == true)
        #expect(try rewrite("--cipher-suites AES,CHACHA") == ["--cipher-suites", "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"])
        #expect(try rewrite("--cipher-suites TLS_AES_256_GCM_SHA384") == ["--cipher-suites", "TLS_AES_256_GCM_SHA384"])
    }

    /// ghostunnel's keystore flags and client `--disable-authentication` are ours too (same name, same meaning):
    /// they pass through unchanged, in both modes, and the TLS module reads PKCS#12 or PEM.
    @Test func keystoreStorepassAndClientDisableAuthenticationPassThrough() throws {
        for mode in [ListenerMode.server, .client] {
            #expect(try rewrite("--keystore /k.p12 --storepass pw", mode) == ["--keystore", "/k.p12", "--storepass", "pw"])
            #expect(try rewrite("--keystore=/k.p12 --storepass=pw", mode) == ["--keystore=/k.p12", "--storepass=pw"])
        }
        #expect(try rewrite("--disable-authentication --cacert /ca.pem", .client) == ["--disable-authentication", "--cacert", "/ca.pem"])
        #expect(GhostunnelFlags.refusals["--storepass"] == nil)
    }

    @Test func refusalsAreOneLineNamingTheFlag() throws {
        for (flag, refusal) in GhostunnelFlags.refusals {
            let line = refusal.takesValue ? "\(flag) 5s" : flag
            let message = try #require(self.refusal(line))
            #expect(message.hasPrefix("\(flag) is not supported: "))
            #expect(!message.contains("\n"))
        }
        #expect(try rewrite("--max-conn-lifetime 1h --disable-landlock") == ["--max-conn-lifetime", "1h"])
        #expect(refusal("--disable-authentication")?.hasPrefix("--disable-authentication is not supported in server mode") == true)
    }

    @Test func everythingAfterDoubleDashIsKept() throws {
        #expect(try rewrite("--allow-cn x -- --syslog") == ["--allow-cn", "x", "--", "--syslog"])
    }
}
