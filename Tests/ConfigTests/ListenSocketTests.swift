import Testing
import Config
import Policy

/// `listen: unix:/path` and `listen: systemd:NAME` in a configuration file.
@Suite("Unix and systemd listen addresses in the configuration file")
struct ListenSocketTests {
    private static func listener(_ name: String, _ listen: String, mode: String = "server") -> String {
        mode == "server"
            ? #"  - {name: \#(name), listen: "\#(listen)", target: "127.0.0.1:6379", tls: {cert: c, key: k, cacert: ca}, policy: {allow-all: true}}"#
            : #"  - {name: \#(name), mode: client, listen: "\#(listen)", target: "b.internal:6380", tls: {cert: c, key: k, cacert: ca}}"#
    }

    private static func parse(_ lines: String...) throws(ConfigError) -> PortcullisConfiguration {
        try PortcullisConfiguration.parse(yaml: (["listeners:"] + lines).joined(separator: "\n"), source: "portcullis.yaml", checkFiles: false)
    }

    private static func problem(_ lines: String...) -> String? {
        do {
            _ = try PortcullisConfiguration.parse(yaml: (["listeners:"] + lines).joined(separator: "\n"), source: "portcullis.yaml", checkFiles: false)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func bothModesAcceptUnixAndSystemdWithoutUnsafeListen() throws {
        let configuration = try Self.parse(
            Self.listener("in", "unix:/run/p/in.sock"),
            Self.listener("in2", "systemd:web"),
            Self.listener("out", "unix:/run/p/out.sock", mode: "client"),
            Self.listener("out2", "systemd:out", mode: "client"))
        #expect(configuration.listeners.map(\.listen) == [
            .unix(path: "/run/p/in.sock"), .systemd(name: "web"), .unix(path: "/run/p/out.sock"), .systemd(name: "out"),
        ])
        #expect(configuration.listeners.map(\.unsafeListen) == [false, false, false, false])
    }

    @Test("two listeners cannot share a socket path or a systemd name", arguments: [
        ("unix:/run/p/a.sock", "unix:/run/p/a.sock",
         "portcullis.yaml:3: listeners[1].listen: 'unix:/run/p/a.sock' is already used by listener 'a' (line 2): give each listener its own address"),
        ("systemd:web", "systemd:web",
         "portcullis.yaml:3: listeners[1].listen: 'systemd:web' is already used by listener 'a' (line 2): give each listener its own address"),
    ])
    func conflicts(first: String, second: String, message: String) {
        #expect(Self.problem(Self.listener("a", first), Self.listener("b", second, mode: "client")) == message)
    }

    @Test("different kinds never conflict", arguments: [
        ("unix:/run/p/a.sock", "unix:/run/p/b.sock"), ("systemd:a", "systemd:b"), ("unix:/run/a", "systemd:/run/a"),
        ("127.0.0.1:8443", "systemd:web"), ("0.0.0.0:8443", "unix:/run/p/a.sock"),
    ])
    func noConflict(first: String, second: String) throws {
        #expect(try Self.parse(Self.listener("a", first), Self.listener("b", second)).listeners.count == 2)
    }

    @Test func aListenerOnTheStatusSocketPathConflicts() {
        let yaml = """
            status: {listen: "unix:/run/p/status.sock"}
            listeners:
            \(Self.listener("a", "unix:/run/p/status.sock"))
            """
        #expect(throws: ConfigError.self) {
            try PortcullisConfiguration.parse(yaml: yaml, source: "portcullis.yaml", checkFiles: false)
        }
    }

    @Test func aRelativePathNamesTheKey() {
        #expect(Self.problem(Self.listener("a", "unix:run/a.sock"))
            == "portcullis.yaml:2: listeners[0].listen: 'unix:run/a.sock' is not an absolute socket path: use unix:/path/to/socket")
    }
}
