import ArgumentParser
import Config
import Foundation
import Logging
import Policy
import Proxy
import TLS

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Serve every listener of a configuration file.",
        discussion: """
        The file is YAML (see docs/CONFIG.md). It is reloaded on SIGHUP and whenever it, or any certificate, \
        key, CA bundle or CRL it names, changes on disk. A reload is validated completely before anything \
        changes; a bad file keeps the running configuration and logs why. Flags of `portcullis server` are not \
        accepted here: the file is the single source of truth.

        Signals: SIGHUP or SIGUSR1 reloads; SIGTERM/SIGINT stop accepting and drain for up to shutdown-timeout; SIGUSR2 \
        restarts without refusing a connection: a new process of this binary (re-reading the file) takes over \
        the listening sockets, then this one drains and exits. Under systemd: Type=notify, watchdog and socket \
        activation (see examples/systemd).
        """
    )

    @Option(help: "The configuration file.")
    var config: String
    @OptionGroup var privileges: PrivilegeOptions

    func run() throws {
        let path = config
        let file = try loadConfiguration(path)
        let logger = try bootstrapLogging(format: file.log.format, level: file.log.level, syslog: file.log.syslog,
                                          syslogSetting: "\(path): log.syslog")
        try serve(RuntimeConfiguration(file, configPath: path), privileges: privileges, logger: logger, reloadFrom: {
            RuntimeConfiguration(try PortcullisConfiguration.load(path: path), configPath: path)
        })
    }
}

func loadConfiguration(_ path: String) throws -> PortcullisConfiguration {
    do {
        return try PortcullisConfiguration.load(path: path)
    } catch {
        throw CommandFailure(message: "\(error)", code: 2)
    }
}

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a configuration file completely, or ask what a listener would decide about a certificate.",
        discussion: """
        Without --cert: parses the file, loads every certificate, key, CA bundle and CRL it names, and prints \
        the effective configuration (defaults included); exits 0 when everything is valid, 1 otherwise.
        With --cert: prints what the listener would do with a client presenting that certificate (PEM, with any \
        intermediates after it): "allowed by rule …" (exit 0), or why it would be refused (exit 1).
        """
    )

    @Option(help: "The configuration file.")
    var config: String
    @OptionGroup var privileges: PrivilegeOptions

    @Flag(help: "Print the effective configuration as JSON.")
    var json = false

    @Option(help: "A client certificate (PEM) to evaluate against a listener.")
    var cert: String?

    @Option(help: "The listener to evaluate --cert against (needed when the file has several).")
    var listener: String?

    @Option(name: .customLong("expiry-warning"),
            help: "Warn when a listener's certificate or a trusted CA expires within this time (default 30d; 0 turns it off). An expired one is an error.")
    var expiryWarning = "30d"

    func run() throws {
        let file = try loadConfiguration(config)
        let runtime = RuntimeConfiguration(file, configPath: config)
        let contexts: [String: TLSContext]
        do {
            contexts = try ServerRuntime.validate(runtime)
        } catch {
            throw CommandFailure(message: error.description)
        }
        let windowMs: UInt64
        do {
            windowMs = try Validate.duration(expiryWarning, key: "--expiry-warning")
        } catch {
            throw CommandFailure(message: "\(error)", code: 2)
        }
        guard let cert else {
            var text = json ? file.effectiveJSON() : file.effectiveDescription()
            while text.hasSuffix("\n") { text.removeLast() }
            say(text)
            let expired = reportExpiry(file, contexts, windowSeconds: Int64(windowMs / 1000))
            if expired > 0 {
                throw CommandFailure(message: "\(expired) certificate(s) expired: renew them (see the lines above)")
            }
            if !json { say("configuration OK: \(file.listeners.count) listener(s)") }
            return
        }
        let name: String
        if let listener {
            guard file.listener(named: listener) != nil else {
                throw CommandFailure(message: "--listener '\(listener)' is not in \(config): use one of \(file.listeners.map(\.name).joined(separator: ", "))", code: 2)
            }
            name = listener
        } else if file.listeners.count == 1 {
            name = file.listeners[0].name
        } else {
            throw CommandFailure(message: "--listener is required: \(config) has \(file.listeners.count) listeners (\(file.listeners.map(\.name).joined(separator: ", ")))", code: 2)
        }
        let assessment: TLSContext.Assessment
        do {
            assessment = try contexts[name]!.assess(certificateAt: cert)
        } catch {
            throw CommandFailure(message: "--cert \(error.description)", code: 2)
        }
        let who = assessment.identity.subject.rfc2253
        if let failure = assessment.verificationFailure {
            say("denied: certificate '\(who)' does not verify against listener '\(name)': \(failure)")
            throw ExitCode(1)
        }
        guard let decision = assessment.decision else { return }
        say(decision.description)
        if !decision.isAllowed { throw ExitCode(1) }
    }
}

extension CheckCommand {
    /// Warns (stderr) about each listener certificate and trusted CA that expires within the window, and
    /// reports each one that already expired; returns how many expired.
    func reportExpiry(_ file: PortcullisConfiguration, _ contexts: [String: TLSContext], windowSeconds: Int64) -> Int {
        let now = Int64(time(nil))
        var expired = 0
        for listener in file.listeners {
            guard let context = contexts[listener.name] else { continue }
            let items: [(what: String, identity: PeerIdentity?, fix: String)] = [
                ("certificate", context.certificateIdentity, "renew tls.cert"),
                ("CA", context.firstExpiringCA, "replace it in tls.cacert before clients and servers stop trusting each other"),
            ]
            for item in items {
                guard let identity = item.identity, identity.notAfter > 0 else { continue }
                let left = identity.notAfter - now
                let subject = identity.subject.rfc2253
                let when = formatUTC(identity.notAfter)
                if left <= 0 {
                    expired += 1
                    warn("error: listener '\(listener.name)': \(item.what) '\(subject)' expired \(describeSpan(-left)) ago (\(when)): \(item.fix)")
                } else if windowSeconds > 0 && left < windowSeconds {
                    warn("warning: listener '\(listener.name)': \(item.what) '\(subject)' expires in \(describeSpan(left)) (\(when)): \(item.fix)")
                }
            }
        }
        return expired
    }
}

/// `3 days`, `5 hours`, `12 minutes`.
func describeSpan(_ seconds: Int64) -> String {
    if seconds >= 2 * 86_400 { return "\(seconds / 86_400) days" }
    if seconds >= 2 * 3_600 { return "\(seconds / 3_600) hours" }
    return "\(max(1, seconds / 60)) minutes"
}

func formatUTC(_ seconds: Int64) -> String {
    var t = time_t(seconds)
    var parts = tm()
    gmtime_r(&t, &parts)
    return String(format: "%04d-%02d-%02d %02d:%02d UTC", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                  Int(parts.tm_hour), Int(parts.tm_min))
}

/// One line on standard error.
func warn(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

