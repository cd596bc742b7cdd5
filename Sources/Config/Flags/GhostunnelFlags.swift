import Foundation

/// ghostunnel's spellings of the `server` and `client` command lines, rewritten to ours before parsing, so a
/// ghostunnel user can switch by changing the binary name (README, *Moving from ghostunnel*).
///
/// This is the ONE table of them: `aliases` (same meaning, another name), `rewrite(_:mode:)` (flags whose value
/// changes form: `--allow-spki-pin BASE64`, a bare `--proxy-protocol`, `--quiet VALUE`, …), and `refusals` (flags
/// that cannot mean the same here: one line saying what to use instead). Flags of both tools with the same name
/// and meaning (`--listen`, `--allow-cn`, `--connect-timeout`, …) need no entry.
public enum GhostunnelFlags {
    /// A ghostunnel flag refused, or given a value it cannot take here: one line, flag first.
    public struct Refusal: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// ghostunnel name → ours; the value is kept as is.
    public static let aliases: [String: String] = [
        "--allow-dns-san": "--allow-dns", "--allow-uri-san": "--allow-uri", "--allow-ip-san": "--allow-ip",
        "--allow-email-san": "--allow-email",
        "--verify-dns-san": "--verify-dns", "--verify-uri-san": "--verify-uri", "--verify-ip-san": "--verify-ip",
    ]

    /// ghostunnel flags with no equivalent here, and what to use instead. `true`: the flag takes a value.
    public static let refusals: [String: (takesValue: Bool, instead: String)] = [
        "--eventlog": (false, "the Windows event log does not exist on Linux; use --syslog, or stderr (the default)"),
        "--use-workload-api": (false, "the SPIFFE Workload API is not supported; run spiffe-helper to write --cert/--key/--cacert files (Portcullis reloads them on change or SIGUSR1)"),
        "--use-workload-api-addr": (true, "the SPIFFE Workload API is not supported; run spiffe-helper to write --cert/--key/--cacert files (Portcullis reloads them on change or SIGUSR1)"),
        "--keychain-identity": (true, "keychains are not supported (Linux only); use --cert and --key"),
        "--keychain-issuer": (true, "keychains are not supported (Linux only); use --cert and --key"),
        "--keychain-require-token": (false, "keychains are not supported (Linux only); use --cert and --key"),
        "--pkcs11-module": (true, "PKCS#11 keys are not supported; use --cert and --key (PEM)"),
        "--pkcs11-token-label": (true, "PKCS#11 keys are not supported; use --cert and --key (PEM)"),
        "--pkcs11-pin": (true, "PKCS#11 keys are not supported; use --cert and --key (PEM)"),
        "--metrics-graphite": (true, "metrics are served, not pushed: scrape /metrics (Prometheus) on --status HOST:PORT"),
        "--metrics-url": (true, "metrics are served, not pushed: scrape /metrics (Prometheus) on --status HOST:PORT"),
        "--metrics-prefix": (true, "metric names are fixed (portcullis_*); relabel them in Prometheus if needed"),
        "--metrics-interval": (true, "metrics are served, not pushed: scrape /metrics on --status at the interval you choose"),
        "--enable-pprof": (false, "there is no profiling endpoint (Go's pprof has no equivalent here); --status serves /_status and /_metrics as ghostunnel does, and /healthz, /readyz, /status, /metrics"),
        "--enable-shutdown": (false, "there is no shutdown endpoint; send SIGTERM (systemctl stop) to drain and exit"),
        "--target-status": (true, "readiness checks only the target's TCP port: use --status and GET /readyz"),
        "--skip-resolve": (false, "the --target host is resolved at startup (and on reload), and a failure stops the start; remove the flag and order the unit After=network-online.target"),
        "--auto-acme-cert": (true, "ACME is not supported; obtain the certificate with certbot or step and pass --cert/--key (reloaded on change)"),
        "--auto-acme-email": (true, "ACME is not supported; obtain the certificate with certbot or step and pass --cert/--key"),
        "--auto-acme-agree-to-tos": (false, "ACME is not supported; obtain the certificate with certbot or step and pass --cert/--key"),
        "--auto-acme-ca": (true, "ACME is not supported; obtain the certificate with certbot or step and pass --cert/--key"),
        "--auto-acme-testca": (true, "ACME is not supported; obtain the certificate with certbot or step and pass --cert/--key"),
        "--allow-policy": (true, "OPA policies are not supported; write the rules in a configuration file (policy.rules, AND within a rule) and use 'portcullis run --config'"),
        "--allow-query": (true, "OPA policies are not supported; write the rules in a configuration file (policy.rules) and use 'portcullis run --config'"),
        "--verify-policy": (true, "OPA policies are not supported; write the rules in a configuration file (policy.rules) and use 'portcullis run --config'"),
        "--verify-query": (true, "OPA policies are not supported; write the rules in a configuration file (policy.rules) and use 'portcullis run --config'"),
        "--proxy": (true, "connecting through an HTTP CONNECT or SOCKS5 proxy is not supported; --target must be reachable directly"),
        "--connect-proxy": (true, "connecting through an HTTP CONNECT or SOCKS5 proxy is not supported; --target must be reachable directly"),
    ]

    /// Flags accepted and ignored: they ask for nothing Portcullis does differently.
    public static let ignored: Set<String> = ["--disable-landlock"]

    /// Rewrites ghostunnel spellings in a `server` or `client` command line (the arguments after the command
    /// name) to ours; everything else is kept, in order. Throws the first refused flag or value.
    public static func rewrite(_ arguments: [String], mode: ListenerMode) throws(Refusal) -> [String] {
        var output: [String] = []
        var quiet: [String] = []
        var explicitLogLevel = false
        var index = 0
        // `--flag=value` or `--flag value`: the flag, its inline value (if any).
        func split(_ argument: String) -> (String, String?) {
            guard argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") else { return (argument, nil) }
            return (String(argument[..<equals]), String(argument[argument.index(after: equals)...]))
        }
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--" { output += arguments[(index - 1)...]; break }
            let (flag, inline) = split(argument)
            /// The flag's value: inline, or the next argument.
            func value() throws(Refusal) -> String {
                if let inline { return inline }
                guard index < arguments.count else { throw Refusal(description: "\(flag): missing value") }
                index += 1
                return arguments[index - 1]
            }
            if let ours = aliases[flag] {
                output += [ours, try value()]
            } else if let refusal = refusals[flag] {
                if refusal.takesValue { _ = try value() }  // a missing value is reported as such
                throw Refusal(description: "\(flag) is not supported: \(refusal.instead)")
            } else if ignored.contains(flag) {
                continue
            } else {
                switch flag {
                case "--allow-spki-pin", "--verify-spki-pin":
                    let ours = flag == "--allow-spki-pin" ? "--allow-spki" : "--verify-spki"
                    output += [ours, try spkiPin(try value(), flag: flag)]
                case "--proxy-protocol" where inline == nil:
                    // ghostunnel's is a switch; ours takes v2|off. A bare one (next is a flag, or nothing) means v2.
                    if index < arguments.count, !arguments[index].hasPrefix("-") {
                        output += [argument, arguments[index]]
                        index += 1
                    } else {
                        output += ["--proxy-protocol", "v2"]
                    }
                case "--proxy-protocol-mode":
                    let given = try value()
                    guard ["conn", "tls", "tls-full"].contains(given) else {
                        throw Refusal(description: "\(flag) '\(given)': use conn, tls or tls-full (all three are --proxy-protocol v2 here: client address and TLS identity TLVs)")
                    }
                    output += ["--proxy-protocol", "v2"]
                case "--max-tls-version":
                    let given = try value()
                    switch given {
                    case "1.3", "TLS1.3", "tls1.3": continue
                    case "1.2", "TLS1.2", "tls1.2":
                        throw Refusal(description: "\(flag) 1.2 is not supported: Portcullis never caps TLS below 1.3 (it uses TLS 1.3 whenever the peer supports it); remove the flag, and use --min-tls 1.2 to also accept TLS 1.2 peers")
                    default:
                        throw Refusal(description: "\(flag) '\(given)': use 1.3 (the highest version, the default) or 1.2")
                    }
                case "--quiet":
                    for item in try value().split(separator: ",").map(String.init) {
                        guard ["all", "conns", "conn-errs", "handshake-errs"].contains(item) else {
                            throw Refusal(description: "--quiet '\(item)': use all, conns, conn-errs or handshake-errs (repeatable)")
                        }
                        quiet.append(item)
                    }
                case "--disable-authentication" where mode == .server:
                    throw Refusal(description: "--disable-authentication is not supported in server mode: Portcullis always requires a client certificate; use --allow-all to admit every client certificate that chains to --cacert")
                case "--cipher-suites":
                    output += ["--cipher-suites", cipherSuites(try value())]
                default:
                    if flag == "--log-level" { explicitLogLevel = true }
                    output.append(argument)
                }
            }
        }
        if !quiet.isEmpty {
            if quiet.contains("all") || quiet.contains("handshake-errs") { output.append("--quiet-handshake-failures") }
            // The audit line ("connection closed") is info; connection errors (target unreachable, limits) and
            // handshake failures are warnings; `all` keeps errors only.
            let level = quiet.contains("all") || quiet.contains("conn-errs") ? "error" : quiet.contains("conns") ? "warning" : nil
            if let level, !explicitLogLevel { output += ["--log-level", level] }
        }
        return output
    }

    /// The name that makes Portcullis take ghostunnel's defaults where ours differ (`asGhostunnel`): a user who
    /// switches by changing the binary name (`ln -s portcullis ghostunnel`) keeps what the old unit meant.
    public static let invocationName = "ghostunnel"

    /// ghostunnel's defaults where ours differ, for a command line already rewritten by `rewrite`: a bare
    /// `--status HOST:PORT` is served over HTTPS with the listener's certificate (ghostunnel's status port;
    /// plain HTTP when there is no certificate, `--disable-authentication`), and `--close-timeout` is 1s
    /// unless given. Ours stay as documented when invoked as `portcullis`.
    public static func ghostunnelDefaults(_ arguments: [String]) -> [String] {
        var output: [String] = []
        var rest: ArraySlice<String> = []  // from a "--" on: not flags
        var closeTimeoutGiven = false
        let hasCertificate = !arguments.contains("--disable-authentication")
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--" { rest = arguments[(index - 1)...]; break }
            if argument == "--close-timeout" || argument.hasPrefix("--close-timeout=") { closeTimeoutGiven = true }
            guard hasCertificate, argument == "--status" || argument.hasPrefix("--status=") else {
                output.append(argument)
                continue
            }
            let value: String
            if argument == "--status" {
                guard index < arguments.count else { output.append(argument); continue }
                value = arguments[index]
                index += 1
            } else {
                value = String(argument.dropFirst("--status=".count))
            }
            // A Unix socket takes no scheme (ghostunnel serves it plain too); HOST:PORT and systemd:NAME do.
            let bare = !value.contains("://") && !value.hasPrefix("unix:") && !value.hasPrefix("launchd:")
            output += ["--status", bare ? "https://" + value : value]
        }
        if !closeTimeoutGiven { output += ["--close-timeout", "1s"] }
        return output + rest
    }

    /// ghostunnel's pin, base64 of the SPKI's SHA-256 (`openssl pkey -pubout -outform der | openssl dgst -sha256
    /// -binary | base64`), as our `sha256:HEX`. Our own form passes through.
    static func spkiPin(_ value: String, flag: String) throws(Refusal) -> String {
        if value.lowercased().hasPrefix("sha256:") { return value }
        guard let bytes = Data(base64Encoded: value), bytes.count == 32 else {
            throw Refusal(description: "\(flag) '\(value)': not a base64 SHA-256 pin (44 characters, e.g. from 'openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64'); or give sha256:HEX")
        }
        return "sha256:" + bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// ghostunnel's `--cipher-suites AES,CHACHA` (families, TLS 1.2 in Go) as TLS 1.3 suites; any other value
    /// (our colon-separated OpenSSL names) is kept for the validator.
    static func cipherSuites(_ value: String) -> String {
        let families = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).uppercased() }
        guard !families.isEmpty, families.allSatisfy({ $0 == "AES" || $0 == "CHACHA" }) else { return value }
        var suites: [String] = []
        for family in families {
            let names = family == "AES" ? ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"] : ["TLS_CHACHA20_POLY1305_SHA256"]
            for name in names where !suites.contains(name) { suites.append(name) }
        }
        return suites.joined(separator: ":")
    }
}
