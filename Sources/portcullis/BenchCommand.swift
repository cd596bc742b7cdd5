import ArgumentParser
import Bench
import Foundation
import TLS

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure any TLS terminator (or a plaintext baseline): handshakes, throughput, latency, memory.",
        discussion: """
        Runs on the same libuv loops and OpenSSL bridge as the proxy. Works against Portcullis, stunnel, \
        HAProxy, nginx, a server's native TLS, or plaintext (--plaintext) for the baseline. Every run is \
        bounded by --duration. --json prints one JSON object per run (fields in Benchmarks/README.md).
        """,
        subcommands: [Backend.self, Handshake.self, Throughput.self, Latency.self, Idle.self, Compare.self]
    )
}

/// Target and TLS options every load workload shares.
struct TargetOptions: ParsableArguments {
    @Option(help: "The terminator (or plaintext service) to measure, as HOST:PORT.")
    var target: String
    @Flag(help: "The target speaks plaintext (the baseline); no TLS options needed.")
    var plaintext = false
    @Option(help: "Client certificate (PEM).")
    var cert: String?
    @Option(help: "Key for --cert (PEM).")
    var key: String?
    @Option(help: "CA certificates the server must chain to.")
    var cacert: String?
    @Option(name: .customLong("server-name"), help: "Name to send as SNI and to verify (default: the target host).")
    var serverName: String?
    @Option(help: "How long to run (e.g. 10s).")
    var duration = "10s"
    @Option(help: "Load-generator threads, each with its own loop (default: CPU count).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "PID of the terminator: adds its CPU seconds (process tree) per handshake, request or GB.")
    var pid: Int32?
    @Flag(help: "Print one JSON object per run instead of the table.")
    var json = false

    func makeTarget() throws -> BenchTarget {
        guard let colon = target.lastIndex(of: ":"), let port = UInt16(target[target.index(after: colon)...]) else {
            throw CommandFailure(message: "--target '\(target)' is not HOST:PORT, e.g. 127.0.0.1:6380", code: 2)
        }
        let host = String(target[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if plaintext { return BenchTarget(host: host, port: port, tls: nil) }
        guard let cacert else {
            throw CommandFailure(message: "--cacert is required for a TLS target (or pass --plaintext for the baseline)", code: 2)
        }
        var tls = TLSConfiguration(role: .client)
        tls.certificatePath = cert
        tls.keyPath = key
        tls.caPath = cacert
        tls.serverName = serverName ?? host
        do {
            return BenchTarget(host: host, port: port, tls: try TLSContext(configuration: tls, policy: nil))
        } catch {
            let flag = error.item == .key ? "--key" : error.item == .caBundle ? "--cacert" : "--cert"
            throw CommandFailure(message: "\(flag) \(error.description)", code: 2)
        }
    }

    var durationSeconds: Double {
        get throws {
            guard let seconds = parseDuration(duration) else {
                throw CommandFailure(message: "--duration '\(duration)' is not a duration: use e.g. 500ms, 10s, 1m", code: 2)
            }
            return seconds
        }
    }

    /// Runs `body`, adding the target's CPU time when --pid is given, and prints the result.
    func measure(_ body: () throws -> BenchResult) throws {
        let before = pid.map { ProcessStats.cpuSeconds($0) }
        let progress = ProgressLine(label: target, seconds: (try? durationSeconds) ?? 0)
        let outcome = Result { try body() }
        progress.finish()
        var result = try outcome.get()
        if let pid, let before { result.targetCPUSeconds = ProcessStats.cpuSeconds(pid) - before }
        emit(result, json: json)
    }
}

/// A live "running … 3 s / 10 s" line on stderr while a run is in progress, only when stderr is a terminal
/// (quiet in scripts, CI and pipes).
final class ProgressLine: @unchecked Sendable {
    private let done = NSCondition()
    private var finished = false
    private var cleared = false
    private let enabled = isatty(2) == 1

    init(label: String, seconds: Double) {
        guard enabled else { return }
        let started = Date()
        Thread {
            self.done.lock()
            while !self.finished {
                let elapsed = Date().timeIntervalSince(started)
                FileHandle.standardError.write(Data(String(format: "\r  running against %@: %.0f s / %.0f s ", label, elapsed, seconds).utf8))
                _ = self.done.wait(until: Date().addingTimeInterval(0.5))
            }
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
            self.cleared = true
            self.done.broadcast()
            self.done.unlock()
        }.start()
    }

    func finish() {
        guard enabled else { return }
        done.lock()
        finished = true
        done.broadcast()
        while !cleared { done.wait() }  // the result must not share a line with the progress
        done.unlock()
    }
}

func emit(_ result: BenchResult, json: Bool) {
    if json {
        say(result.json(version: Portcullis.version, machine: machineFacts(openSSL: TLS.openSSLVersion)))
    } else {
        say(result.table)
    }
}

func parseDuration(_ text: String) -> Double? {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        if let value = Double(text.dropLast(suffix.count)), value >= 0 { return value * scale }
    }
    return Double(text)
}

/// "1,8" → [1, 8]
func parseList(_ text: String, flag: String) throws -> [Int] {
    let values = text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ $0 > 0 }) else {
        throw CommandFailure(message: "\(flag) '\(text)' is not a list of positive numbers, e.g. 1,8", code: 2)
    }
    return values
}

func parseSize(_ text: String, flag: String) throws -> Int {
    let units: [(String, Int)] = [("KiB", 1024), ("MiB", 1 << 20), ("K", 1000), ("M", 1_000_000), ("B", 1)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        if let value = Int(text.dropLast(suffix.count)), value > 0 { return value * scale }
    }
    if let value = Int(text), value > 0 { return value }
    throw CommandFailure(message: "\(flag) '\(text)' is not a size: use e.g. 64KiB, 16384", code: 2)
}

extension BenchCommand {
    struct Backend: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A plaintext backend to measure against: echo, sink or source.")
        @Flag(help: "Echo what is read (for latency and two-way throughput).") var echo = false
        @Flag(help: "Read and discard (for upload throughput).") var sink = false
        @Flag(help: "Send without pause (for download throughput).") var source = false
        @Option(help: "Address to listen on.") var listen = "127.0.0.1:7001"
        @Option(help: "Worker threads.") var workers: Int = ProcessInfo.processInfo.activeProcessorCount

        func run() throws {
            let modes = [echo ? BenchBackend.Mode.echo : nil, sink ? .sink : nil, source ? .source : nil].compactMap { $0 }
            guard modes.count == 1 else { throw CommandFailure(message: "give exactly one of --echo, --sink, --source", code: 2) }
            guard let colon = listen.lastIndex(of: ":"), let port = UInt16(listen[listen.index(after: colon)...]) else {
                throw CommandFailure(message: "--listen '\(listen)' is not HOST:PORT", code: 2)
            }
            let backend: BenchBackend
            do {
                backend = try BenchBackend(mode: modes[0], host: String(listen[..<colon]), port: port, workers: workers)
            } catch {
                throw CommandFailure(message: "--listen '\(listen)': \(error)")
            }
            say("{\"msg\":\"backend listening\",\"mode\":\"\(backend.mode.rawValue)\",\"listen.address\":\"\(listen[..<colon]):\(backend.port)\"}")
            // Serve until SIGTERM/SIGINT, then report what was seen (an independent count for the harness's own numbers).
            var signals = sigset_t()
            sigemptyset(&signals)
            sigaddset(&signals, SIGTERM)
            sigaddset(&signals, SIGINT)
            pthread_sigmask(SIG_BLOCK, &signals, nil)
            var received: Int32 = 0
            sigwait(&signals, &received)
            let totals = backend.totals
            say("{\"msg\":\"backend stopped\",\"connections\":\(totals.connections),\"bytes_in\":\(totals.bytesIn),\"bytes_out\":\(totals.bytesOut)}")
        }
    }

    struct Handshake: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "New TLS connections per second (full, or resumed with --resume).")
        @OptionGroup var options: TargetOptions
        @Option(help: "Connections in flight at once.") var concurrency = 16
        @Flag(help: "Resume each slot's previous session (reports the resumed fraction).") var resume = false

        func run() throws {
            let target = try options.makeTarget()
            let duration = try options.durationSeconds
            try options.measure {
                try Workloads.handshakes(target: target, concurrency: concurrency, threads: options.threads,
                                         durationSeconds: duration, resume: resume)
            }
        }
    }

    struct Throughput: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Bulk transfer MB/s per direction over one or more streams.")
        @OptionGroup var options: TargetOptions
        @Option(help: "Stream counts to run, e.g. 1,8.") var streams = "1"
        @Option(name: .customLong("write-size"), help: "Bytes per write, e.g. 64KiB.") var writeSize = "64KiB"
        @Option(help: "up (target sinks or echoes), down (target is a source), both (echo).") var direction = "up"

        func run() throws {
            let target = try options.makeTarget()
            let duration = try options.durationSeconds
            guard let dir = Workloads.Direction(rawValue: direction) else {
                throw CommandFailure(message: "--direction '\(direction)' is not up, down or both", code: 2)
            }
            let size = try parseSize(writeSize, flag: "--write-size")
            for count in try parseList(streams, flag: "--streams") {
                try options.measure {
                    try Workloads.throughput(target: target, streams: count, threads: options.threads, writeSize: size,
                                             direction: dir, durationSeconds: duration)
                }
            }
        }
    }

    struct Latency: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Request/response latency percentiles against an echo target.")
        @OptionGroup var options: TargetOptions
        @Option(help: "Connection counts to run, e.g. 1,32.") var connections = "1"
        @Option(name: .customLong("message-size"), help: "Bytes per request (and response).") var messageSize = 64
        @Option(help: "Open loop: total requests per second on a fixed schedule (latency counted from the intended send time).") var rate: Double?

        func run() throws {
            let target = try options.makeTarget()
            let duration = try options.durationSeconds
            for count in try parseList(connections, flag: "--connections") {
                try options.measure {
                    try Workloads.latency(target: target, connections: count, threads: options.threads, messageSize: messageSize,
                                          durationSeconds: duration, rate: rate)
                }
            }
        }
    }

    struct Idle: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Memory per idle connection of the terminator (VmRSS, PSS).")
        @OptionGroup var options: TargetOptions
        @Option(help: "Idle connections to open.") var connections = 2000
        @Option(help: "Seconds to hold them idle before reading the memory (long-lived idle connections: 10).")
        var settle: Double = 1

        func run() throws {
            guard let pid = options.pid else { throw CommandFailure(message: "--pid is required: whose memory to measure", code: 2) }
            guard settle >= 0, settle <= 600 else { throw CommandFailure(message: "--settle \(settle): use 0-600 seconds", code: 2) }
            let target = try options.makeTarget()
            let result = try Workloads.idle(target: target, connections: connections, pid: pid, settleSeconds: settle)
            emit(result, json: options.json)
        }
    }

    struct Compare: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The same workloads direct (plaintext) and through TLS: the overhead as ratios.")
        @Option(help: "The plaintext service, HOST:PORT (an echo backend).") var direct: String
        @Option(help: "The TLS terminator in front of it, HOST:PORT.") var via: String
        @Option(help: "Client certificate (PEM).") var cert: String?
        @Option(help: "Key for --cert.") var key: String?
        @Option(help: "CA certificates the terminator must chain to.") var cacert: String?
        @Option(name: .customLong("server-name"), help: "Name to verify (default: the --via host).") var serverName: String?
        @Option(help: "How long each workload runs.") var duration = "5s"
        @Option(help: "PID of the terminator, for its CPU seconds.") var pid: Int32?
        @Flag(help: "Print JSON objects instead of the table.") var json = false

        func run() throws {
            func options(_ target: String, plaintext: Bool) throws -> TargetOptions {
                var args = ["--target", target, "--duration", duration]
                if plaintext { args.append("--plaintext") }
                for (flag, value) in [("--cert", cert), ("--key", key), ("--cacert", cacert), ("--server-name", serverName)] {
                    if let value, !plaintext { args += [flag, value] }
                }
                if let pid, !plaintext { args += ["--pid", "\(pid)"] }
                return try TargetOptions.parse(args)
            }
            let direct = try options(self.direct, plaintext: true)
            let via = try options(self.via, plaintext: false)
            let seconds = try direct.durationSeconds
            let workloads: [(String, (BenchTarget, Int) throws -> BenchResult)] = [
                ("connections/s (c=16)", { try Workloads.handshakes(target: $0, concurrency: 16, threads: $1, durationSeconds: seconds, resume: false) }),
                ("throughput both (1 stream)", { try Workloads.throughput(target: $0, streams: 1, threads: $1, writeSize: 65536, direction: .both, durationSeconds: seconds) }),
                ("latency c=1", { try Workloads.latency(target: $0, connections: 1, threads: $1, messageSize: 64, durationSeconds: seconds, rate: nil) }),
                ("latency c=32", { try Workloads.latency(target: $0, connections: 32, threads: $1, messageSize: 64, durationSeconds: seconds, rate: nil) }),
            ]
            var rows: [String] = []
            for (name, run) in workloads {
                let plain = try run(try direct.makeTarget(), direct.threads)
                let before = pid.map { ProcessStats.cpuSeconds($0) }
                var tls = try run(try via.makeTarget(), via.threads)
                if let pid, let before { tls.targetCPUSeconds = ProcessStats.cpuSeconds(pid) - before }
                if json {
                    emit(plain, json: true)
                    emit(tls, json: true)
                    continue
                }
                for metric in ["handshakes_per_second", "mb_per_second_up", "mb_per_second_down", "requests_per_second"] {
                    if let a = plain.value(metric), let b = tls.value(metric), a > 0 {
                        rows.append("\(pad(name, 28)) \(pad(metric, 24)) direct \(fmt(a))  tls \(fmt(b))  ratio tls/direct \(fmt(b / a))")
                    }
                }
                if let a = plain.latency, let b = tls.latency, a.totalCount > 0, b.totalCount > 0 {
                    for p in [50.0, 99.0, 99.9] {
                        let x = Double(a.valueAtPercentile(p)), y = Double(b.valueAtPercentile(p))
                        rows.append("\(pad(name, 28)) \(pad("latency p\(p) µs", 24)) direct \(fmt(x))  tls \(fmt(y))  ratio tls/direct \(fmt(x > 0 ? y / x : 0))")
                    }
                }
            }
            if !json { say((["overhead of \(via) over \(self.direct):"] + rows).joined(separator: "\n")) }
        }

        private func fmt(_ value: Double) -> String { String(format: value >= 100 ? "%.0f" : "%.2f", value) }
        private func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
    }
}
