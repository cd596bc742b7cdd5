import EventLoop
import Policy
import TLS

#if canImport(Glibc)
import Glibc
#endif

/// Where the status endpoint listens: a TCP address or a Unix socket path, like a target.
public typealias StatusEndpoint = ListenerConfiguration.Target

/// Checks that a target accepts TCP (or Unix) connections: connect, then close at once.
final class TargetProbe: StreamSocketDelegate {
    private let socket: StreamSocket?
    private let timer: Timer
    private var completion: ((String?) -> Void)?

    /// `completion` gets nil when the target accepted, else why not; it runs exactly once.
    init(loop: Loop, target: BackendTarget, timeoutMs: UInt64, completion: @escaping (String?) -> Void) {
        self.completion = completion
        switch target {
        case .tcp: socket = try? StreamSocket(loop: loop, kind: .tcp)
        case .unix: socket = try? StreamSocket(loop: loop, kind: .pipe)
        }
        timer = Timer(loop: loop)
        timer.start(after: timeoutMs) { [unowned self] in self.finish("no answer within \(timeoutMs) ms") }
        guard let socket else {
            finish("cannot create a socket")
            return
        }
        // The socket keeps this probe (its delegate) alive until it closes.
        socket.delegate = self
        switch target {
        case .tcp(let address): socket.connect(to: address)
        case .unix(let path): socket.connect(toPath: path)
        }
    }

    private func finish(_ problem: String?) {
        guard let completion else { return }
        self.completion = nil
        timer.close()
        socket?.close()
        completion(problem)
    }

    func socket(_ socket: StreamSocket, didConnect error: UVError?) { finish(error.map { $0.message }) }
    func socket(_ socket: StreamSocket, didRead bytes: UnsafeRawBufferPointer) {}
    func socketDidReadEOF(_ socket: StreamSocket) {}
    func socket(_ socket: StreamSocket, didFailReading error: UVError) {}
    func socket(_ socket: StreamSocket, didWrite byteCount: Int, error: UVError?) {}
    func socketDidShutdown(_ socket: StreamSocket, error: UVError?) {}
    func socketDidClose(_ socket: StreamSocket) {}
}

/// Target reachability for `/readyz`, probed at most once per `cacheMs` however often probes come, so a
/// tight readiness probe does not hammer the backend. Confined to the control loop.
final class ReadinessChecker {
    static let cacheMs: UInt64 = 2000
    static let timeoutMs: UInt64 = 1000

    private let loop: Loop
    private var results: [String: String?] = [:]
    private var checkedAt: UInt64?
    private var probing = false
    private var waiting: [([String: String?]) -> Void] = []

    init(loop: Loop) {
        self.loop = loop
    }

    /// Results by target description: nil = reachable, else the problem.
    func check(_ targets: [String: BackendTarget], completion: @escaping ([String: String?]) -> Void) {
        if let checkedAt, loop.now &- checkedAt < ReadinessChecker.cacheMs, Set(results.keys) == Set(targets.keys) {
            completion(results)
            return
        }
        waiting.append(completion)
        guard !probing else { return }
        probing = true
        var fresh: [String: String?] = [:]
        if targets.isEmpty {
            finish(fresh)
            return
        }
        for (name, target) in targets {
            _ = TargetProbe(loop: loop, target: target, timeoutMs: ReadinessChecker.timeoutMs) { [unowned self] problem in
                fresh[name] = .some(problem)
                if fresh.count == targets.count { self.finish(fresh) }
            }
        }
    }

    private func finish(_ fresh: [String: String?]) {
        probing = false
        results = fresh
        checkedAt = loop.now
        let callbacks = waiting
        waiting = []
        callbacks.forEach { $0(fresh) }
    }
}

extension ServerRuntime {
    /// Routes one status request.
    func handleStatusRequest(_ request: HTTPRequestHead, respond: @escaping (HTTPResponse) -> Void) {
        switch request.path {
        case "/metrics":
            respond(HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8",
                                 body: metricsExporter?.render(gaugeSnapshot()) ?? []))
        case "/healthz":
            respond(.json(200, #"{"status":"ok"}"#))
        case "/readyz":
            readiness { ready, body in respond(.json(ready ? 200 : 503, body)) }
        case "/status":
            respond(.json(200, statusJSON()))
        case "/":
            respond(.json(200, #"{"endpoints":["/healthz","/readyz","/status","/metrics"]}"#))
        default:
            respond(.json(404, #"{"error":"not found: use /healthz, /readyz, /status or /metrics"}"#))
        }
    }

    private func gaugeSnapshot() -> GaugeSnapshot {
        let listeners = configuration.listeners.map { listener in
            let tls = records[listener.name]?.generation.tls
            return GaugeSnapshot.Listener(
                name: listener.name,
                active: records[listener.name]?.counters.active.load(ordering: .relaxed) ?? 0,
                certificateNotAfter: tls?.certificateIdentity?.notAfter,
                crlNextUpdate: tls?.crlNextUpdate)
        }
        return GaugeSnapshot(listeners: listeners, configGeneration: configurationGeneration, startTime: startTime,
                             version: configuration.version, now: Int64(time(nil)),
                             sessionCache: TLSContext.sessionCacheStatistics)
    }

    /// Ready when not draining, every listener accepts on every worker, every certificate is within its
    /// validity, and every target accepts a TCP connection. The body lists each check and what is wrong.
    private func readiness(_ completion: @escaping (Bool, String) -> Void) {
        var targets: [String: BackendTarget] = [:]
        for listener in configuration.listeners {
            if let generation = records[listener.name]?.generation { targets[listener.target.description] = generation.settings.target }
        }
        guard let checker = readinessChecker else {
            completion(false, #"{"status":"not ready","problems":["starting"]}"#)
            return
        }
        checker.check(targets) { [weak self] reachability in
            guard let self else { return }
            let now = Int64(time(nil))
            let accepting = self.shared.acceptingWorkers
            var problems: [String] = []
            var entries: [String] = []
            if self.shuttingDown { problems.append("draining: shutting down") }
            for listener in self.configuration.listeners {
                var checks: [String] = []
                let workersAccepting = accepting[listener.name] ?? 0
                let bound = workersAccepting == self.workerCount && !self.shuttingDown
                checks.append(#""accepting":\#(bound)"#)
                if !bound && !self.shuttingDown {
                    problems.append("listener \(listener.name): accepting on \(workersAccepting) of \(self.workerCount) workers")
                }
                if let identity = self.records[listener.name]?.generation.tls.certificateIdentity {
                    let valid = identity.notBefore <= now && now < identity.notAfter
                    checks.append(#""certificate_valid":\#(valid)"#)
                    if !valid {
                        problems.append("listener \(listener.name): certificate \(now >= identity.notAfter ? "expired" : "not yet valid") (notAfter \(iso8601(identity.notAfter)))")
                    }
                }
                let target = listener.target.description
                let problem = reachability[target] ?? .some("not checked")
                checks.append(#""target_reachable":\#(problem == nil)"#)
                if let problem {
                    checks.append(#""target_error":\#(jsonString(problem))"#)
                    problems.append("listener \(listener.name): target \(target) unreachable: \(problem)")
                }
                entries.append(#"{"name":\#(jsonString(listener.name)),\#(checks.joined(separator: ","))}"#)
            }
            let ready = problems.isEmpty
            let body = #"{"status":\#(ready ? #""ready""# : #""not ready""#),"problems":[\#(problems.map(jsonString).joined(separator: ","))],"listeners":[\#(entries.joined(separator: ","))]}"#
            completion(ready, body)
        }
    }

    private func statusJSON() -> String {
        let now = Int64(time(nil))
        let accepting = shared.acceptingWorkers
        var listeners: [String] = []
        for listener in configuration.listeners {
            var fields = [
                #""name":\#(jsonString(listener.name))"#,
                #""mode":"\#(listener.mode == .server ? "server" : "client")""#,
                #""listen":\#(jsonString(records[listener.name]?.listenAddress ?? listener.listenDescription))"#,
                #""target":\#(jsonString(listener.target.description))"#,
                #""accepting_workers":\#(accepting[listener.name] ?? 0)"#,
                #""connections_active":\#(records[listener.name]?.counters.active.load(ordering: .relaxed) ?? 0)"#,
            ]
            if let generation = records[listener.name]?.generation {
                fields.append(#""generation":\#(generation.number)"#)
                if let identity = generation.tls.certificateIdentity {
                    fields.append(#""certificate":{"subject":\#(jsonString(identity.subject.rfc2253)),"not_before":"\#(iso8601(identity.notBefore))","not_after":"\#(iso8601(identity.notAfter))","seconds_to_expiry":\#(identity.notAfter - now)}"#)
                }
                if generation.tls.crlCount > 0 {
                    let next = generation.tls.crlNextUpdate.map { #""\#(iso8601($0))""# } ?? "null"
                    fields.append(#""crl":{"count":\#(generation.tls.crlCount),"next_update":\#(next)}"#)
                }
            }
            listeners.append("{" + fields.joined(separator: ",") + "}")
        }
        let fields = [
            #""version":\#(jsonString(configuration.version))"#,
            #""libraries":\#(jsonString(libraryVersions))"#,
            #""pid":\#(getpid())"#,
            #""started_at":"\#(iso8601(startTime))""#,
            #""uptime_seconds":\#(now - startTime)"#,
            #""config_generation":\#(configurationGeneration)"#,
            #""workers":\#(workerCount)"#,
            #""draining":\#(shuttingDown)"#,
            #""connections_open":\#(shared.activeConnections.load(ordering: .relaxed))"#,
            #""listeners":[\#(listeners.joined(separator: ","))]"#,
        ]
        return "{" + fields.joined(separator: ",") + "}"
    }
}
