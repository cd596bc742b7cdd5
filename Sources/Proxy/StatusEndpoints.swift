import EventLoop
import Policy
import TLS

#if canImport(Glibc)
import Glibc
#endif

/// Where the status endpoint listens: a TCP address, a Unix socket path, or a socket systemd passed.
public typealias StatusEndpoint = ListenerConfiguration.Listen

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

/// What the status endpoints report, read from the runtime at each request.
struct StatusSnapshot {
    /// One configured listener and the runtime's record of it (nil only in the instant of a reload).
    struct Listener {
        let configuration: ListenerConfiguration
        let record: ListenerRecord?
    }

    let listeners: [Listener]
    let configGeneration: UInt64
    let startTime: Int64
    let version: String
    let workerCount: Int
    /// Draining connections before exit: not ready.
    let draining: Bool
    /// When the last successful reload was applied (Unix seconds), if any.
    let lastReload: Int64?
}

/// Where the status service reads its snapshot from (the runtime).
protocol StatusSource: AnyObject {
    var statusSnapshot: StatusSnapshot { get }
}

/// The status endpoint (`/healthz`, `/readyz`, `/status`, `/metrics`, and ghostunnel's `/_status` and
/// `/_metrics`): its socket, server, metrics exporter and readiness checker. Confined to the control loop
/// once started.
final class StatusService {
    /// Every path served, for `/` and the 404 answer.
    static let paths = ["/healthz", "/readyz", "/status", "/metrics", "/_status", "/_metrics", "/_metrics/json", "/_metrics/prometheus"]

    /// Where it listens (pinned at startup: a changed address takes effect at the next restart).
    let endpoint: StatusEndpoint?
    /// HTTPS: the certificate served, replaced at each reload (nil: plain HTTP).
    private var tlsContext: TLSContext?
    private let shared: RuntimeShared
    /// Bound (or inherited) before `start`; the server owns it from then on.
    private var pendingSocket: ListeningSocket?
    private weak var source: (any StatusSource)?
    private(set) var server: StatusServer?
    private(set) var metricsExporter: MetricsExporter?
    private(set) var readinessChecker: ReadinessChecker?

    /// Takes over the status socket a previous process handed over on `endpoint`, else binds one.
    init(endpoint: StatusEndpoint?, settingName: String, tlsContext: TLSContext?, shared: RuntimeShared,
         inherited: inout InheritedSockets) throws(StartupError) {
        self.endpoint = endpoint
        self.tlsContext = tlsContext
        self.shared = shared
        if let endpoint {
            let handedOverAddress: String? = if case .systemd = endpoint { nil } else { endpoint.description }
            if let handedOver = inherited.takeStatus(address: handedOverAddress) {
                pendingSocket = handedOver
            } else if case .systemd(let name) = endpoint {
                pendingSocket = try StatusService.adoptSystemdSocket(named: name, settingName: settingName, inherited: &inherited)
            } else {
                pendingSocket = try StatusService.bind(endpoint, settingName: settingName)
            }
        }
    }

    /// Binds the status endpoint (before any privilege drop, like the listeners).
    static func bind(_ endpoint: StatusEndpoint, settingName: String) throws(StartupError) -> ListeningSocket {
        do {
            switch endpoint {
            case .tcp(let host, let port): return try ListeningSocket.bind(ip: host, port: port, reusePort: false)
            case .unix(let path): return try ListeningSocket.bindUnix(path: path)
            case .systemd: preconditionFailure("a systemd status socket is adopted, never bound")
            }
        } catch {
            if error.isAddressInUse {
                throw StartupError("\(settingName) '\(endpoint)': address already in use (another process listens there; stop it or choose another address)")
            }
            throw StartupError("\(settingName) '\(endpoint)': cannot listen: \(error.message)")
        }
    }

    /// The one socket systemd passed under `FileDescriptorName=name` (the unit decides where it listens).
    static func adoptSystemdSocket(named name: String, settingName: String,
                                   inherited: inout InheritedSockets) throws(StartupError) -> ListeningSocket {
        let passed = inherited.passedSystemdNames
        guard let taken = inherited.take(systemdName: name) else {
            let what = passed.isEmpty ? "systemd passed no sockets (no LISTEN_FDS for this process)"
                : "systemd passed no socket named '\(name)' (passed: \(passed.joined(separator: ", ")))"
            throw StartupError("\(settingName) 'systemd:\(name)': \(what): set FileDescriptorName=\(name) in the .socket unit and start the service through it, or give the status endpoint its own HOST:PORT or unix:/path")
        }
        guard taken.count == 1 else {
            taken.forEach { $0.close() }
            throw StartupError("\(settingName) 'systemd:\(name)': systemd passed \(taken.count) sockets named '\(name)'; the status endpoint takes one: give it a .socket unit with one ListenStream=")
        }
        return taken[0]
    }

    /// Starts serving on the control loop.
    func start(loop: Loop, source: any StatusSource) throws(UVError) {
        self.source = source
        metricsExporter = MetricsExporter(metrics: shared.metrics)
        readinessChecker = ReadinessChecker(loop: loop)
        if let socket = pendingSocket {
            pendingSocket = nil
            server = try StatusServer(loop: loop, socket: socket, tlsContext: tlsContext) { [unowned self] request, respond in
                self.handleStatusRequest(request, respond: respond)
            }
        }
    }

    /// The TLS context an HTTPS status endpoint serves: the first server-mode listener's certificate (else
    /// the first listener's, a client certificate, as ghostunnel does), with the listener's TLS versions and
    /// suites. No client certificate is asked for: ghostunnel's status port does not ask either.
    static func makeTLSContext(listeners: [ListenerConfiguration], settingName: String, generation: UInt64) throws(StartupError) -> TLSContext {
        let hasIdentity = { (listener: ListenerConfiguration) in listener.tls.certificatePath != nil || listener.tls.keystorePath != nil }
        guard let listener = listeners.first(where: { $0.mode == .server && hasIdentity($0) }) ?? listeners.first(where: hasIdentity) else {
            throw StartupError("\(settingName): https needs a listener certificate to serve; use http://HOST:PORT or give --cert/--key or --keystore")
        }
        var configuration = TLSConfiguration(role: .server)
        configuration.certificatePath = listener.tls.certificatePath
        configuration.keyPath = listener.tls.keyPath
        configuration.keyPassphrasePath = listener.tls.keyPassphrasePath
        configuration.keystorePath = listener.tls.keystorePath
        configuration.keystorePassword = listener.tls.keystorePassword
        configuration.minimumVersion = listener.tls.minimumVersion
        configuration.cipherSuites = listener.tls.cipherSuites
        configuration.groups = listener.tls.groups
        configuration.sessionTickets = false
        configuration.sessionIDContext = "portcullis:status"
        configuration.generation = generation
        configuration.requiresClientCertificate = false
        do {
            return try TLSContext(configuration: configuration, policy: nil)
        } catch {
            let flag = listener.names.name(of: error.item)
            throw StartupError("\(settingName) (https, certificate of listener \(listener.name)): \(flag) \(error.description)")
        }
    }

    /// A reload's certificate, for HTTPS connections accepted from now on.
    func replaceTLSContext(_ context: TLSContext?) {
        tlsContext = context
        server?.tlsContext = context
    }

    /// The listening descriptor, while it serves (a SIGUSR2 restart hands it over).
    var descriptor: Int32? { server?.descriptor }

    /// Stops serving status requests (at exit, or once a successor took the socket over).
    func close() {
        server?.close()
        server = nil
    }

    /// Closes a socket never served (when the control loop could not be set up).
    func closeUnstarted() {
        pendingSocket?.close()
        pendingSocket = nil
    }

    /// Removes the Unix socket's file (at exit, unless a successor now serves it).
    func removeSocketFile() {
        if case .unix(let path) = endpoint { unlink(path) }
    }

    /// Routes one status request.
    func handleStatusRequest(_ request: HTTPRequestHead, respond: @escaping (HTTPResponse) -> Void) {
        switch request.path {
        case "/metrics":
            respond(HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8",
                                 body: metricsExporter?.render(gaugeSnapshot()) ?? []))
        case "/healthz":
            respond(.json(200, #"{"status":"ok"}"#))
        case "/readyz":
            readiness { ready, body, _ in respond(.json(ready ? 200 : 503, body)) }
        case "/status":
            respond(.json(200, statusJSON()))
        case "/_status":
            ghostunnelStatus { ok, body in respond(.json(ok ? 200 : 503, body)) }
        case "/_metrics" where request.queryValue("format") == "prometheus", "/_metrics/prometheus":
            respond(HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8",
                                 body: metricsExporter?.render(gaugeSnapshot()) ?? []))
        case "/_metrics", "/_metrics/json":
            respond(.json(200, ghostunnelMetricsJSON()))
        case "/":
            respond(.json(200, #"{"endpoints":[\#(StatusService.paths.map(jsonString).joined(separator: ","))]}"#))
        default:
            let list = StatusService.paths.dropLast().joined(separator: ", ") + " or " + StatusService.paths.last!
            respond(.json(404, #"{"error":\#(jsonString("not found: use " + list))}"#))
        }
    }

    // MARK: ghostunnel's endpoints

    /// ghostunnel's `/_status`: `ok`/`status` from our readiness (not draining, every listener accepting on
    /// every worker, certificates valid, targets reachable), `backend_*` from the target probe alone, and
    /// `message` from the lifecycle. 503 whenever `ok` is false, as ghostunnel answers.
    private func ghostunnelStatus(_ completion: @escaping (Bool, String) -> Void) {
        readiness { [weak self] ready, _, targetProblems in
            guard let self, let snapshot = self.source?.statusSnapshot else {
                completion(false, #"{"ok":false,"status":"critical","message":"initializing"}"#)
                return
            }
            let backendOK = targetProblems.isEmpty
            let accepting = self.shared.acceptingWorkers
            let allAccepting = snapshot.listeners.allSatisfy { (accepting[$0.configuration.name] ?? 0) == snapshot.workerCount }
            let message = snapshot.draining ? "stopping" : allAccepting ? "listening" : "initializing"
            var fields = [
                #""ok":\#(ready)"#,
                #""status":"\#(ready ? "ok" : "critical")""#,
                #""backend_ok":\#(backendOK)"#,
                #""backend_status":"\#(backendOK ? "ok" : "critical")""#,
            ]
            if let problem = targetProblems.first { fields.append(#""backend_error":\#(jsonString(problem))"#) }
            fields.append(#""time":"\#(timestamp())""#)
            if let reload = snapshot.lastReload { fields.append(#""last_reload":"\#(iso8601(reload))""#) }
            if let host = StatusService.hostname { fields.append(#""hostname":\#(jsonString(host))"#) }
            fields += [
                #""message":"\#(message)""#,
                #""revision":\#(jsonString(snapshot.version))"#,
                #""compiler":\#(jsonString(StatusService.compiler))"#,
            ]
            completion(ready, "{" + fields.joined(separator: ",") + "}")
        }
    }

    /// The Swift compiler that built this binary (ghostunnel reports Go's version in `compiler`).
    static let compiler: String = {
        #if compiler(>=6.3)
        return "swift6.3"
        #elseif compiler(>=6.2)
        return "swift6.2"
        #else
        return "swift6"
        #endif
    }()

    static var hostname: String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// ghostunnel's `/_metrics` JSON (go-metrics through square/go-sq-metrics): a list of
    /// `{"timestamp", "metric", "value", "hostname"}` under ghostunnel's names with its default prefix, so its
    /// dashboards keep working. Summed over every listener. ghostunnel's timers (`conn.handshake`,
    /// `conn.lifetime`) are not reproduced: their durations are Prometheus histograms here (`/metrics`).
    private func ghostunnelMetricsJSON() -> String {
        let totals = shared.metrics.aggregate()
        let snapshot = source?.statusSnapshot
        var open = 0, accepted: UInt64 = 0, succeeded: UInt64 = 0, failed: UInt64 = 0, timedOut: UInt64 = 0, closedByTimer: UInt64 = 0
        let modes = Dictionary(snapshot?.listeners.map { ($0.configuration.name, $0.configuration.mode) } ?? [],
                               uniquingKeysWith: { first, _ in first })
        for (name, total) in totals {
            let events = total.events
            open += max(0, events.open)
            let handshakes = events.handshakesFull + events.handshakesResumed
            accepted += events.accepted
            // Server mode dials the target after the handshake: a failed dial is not an established connection.
            // Client mode dials first, so every completed handshake is one.
            succeeded += modes[name] == .client ? handshakes
                : handshakes - min(handshakes, events.targetConnectFailures)
            failed += events.failures.reduce(0, +) + events.acceptFailures.reduce(0, +) + events.targetConnectFailures
            timedOut += events.failures[TLSFailure.Kind.timeout.index]
            // ghostunnel counts a connection closed by its lifetime cap (--max-conn-lifetime) as a timeout too.
            closedByTimer += events.closed[CloseCategory.idleTimeout.index] + events.closed[CloseCategory.closeTimeout.index]
                + events.closed[CloseCategory.maxLifetime.index]
        }
        let now = Int64(time(nil))
        let host = jsonString(StatusService.hostname ?? "")
        let values: [(String, String)] = [
            ("conn.open", "\(open)"), ("conn.timeout", "\(closedByTimer)"), ("accept.total", "\(accepted)"),
            ("accept.success", "\(succeeded)"), ("accept.error", "\(failed)"), ("accept.timeout", "\(timedOut)"),
        ]
        let items = values.map { name, value in
            #"{"timestamp":\#(now),"metric":"ghostunnel.\#(name)","value":\#(value),"hostname":\#(host)}"#
        }
        return "[" + items.joined(separator: ",") + "]"
    }

    private func gaugeSnapshot() -> GaugeSnapshot {
        guard let snapshot = source?.statusSnapshot else {
            return GaugeSnapshot(listeners: [], configGeneration: 0, startTime: 0, version: "", now: Int64(time(nil)),
                                 sessionCache: TLSContext.sessionCacheStatistics)
        }
        let totals = shared.metrics.aggregate()
        let listeners = snapshot.listeners.map { entry in
            let tls = entry.record?.generation.tls
            return GaugeSnapshot.Listener(
                name: entry.configuration.name,
                active: max(0, totals[entry.configuration.name]?.events.open ?? 0),
                pausedWorkers: entry.record?.counters.holdingWorkers ?? 0,
                certificateNotAfter: tls?.certificateIdentity?.notAfter,
                crlNextUpdate: tls?.crlNextUpdate)
        }
        return GaugeSnapshot(listeners: listeners, configGeneration: snapshot.configGeneration, startTime: snapshot.startTime,
                             version: snapshot.version, now: Int64(time(nil)),
                             sessionCache: TLSContext.sessionCacheStatistics)
    }

    /// Ready when not draining, every listener accepts on every worker, every certificate is within its
    /// validity, and every target accepts a TCP connection. The body lists each check and what is wrong.
    private func readiness(_ completion: @escaping (Bool, String, [String]) -> Void) {
        var targets: [String: BackendTarget] = [:]
        for entry in source?.statusSnapshot.listeners ?? [] {
            if let generation = entry.record?.generation { targets[entry.configuration.target.description] = generation.settings.target }
        }
        guard let checker = readinessChecker else {
            completion(false, #"{"status":"not ready","problems":["starting"]}"#, [])
            return
        }
        checker.check(targets) { [weak self] reachability in
            guard let self, let snapshot = self.source?.statusSnapshot else { return }
            let now = Int64(time(nil))
            let accepting = self.shared.acceptingWorkers
            var problems: [String] = []
            var targetProblems: [String] = []
            var entries: [String] = []
            if snapshot.draining { problems.append("draining: shutting down") }
            for entry in snapshot.listeners {
                let listener = entry.configuration
                var checks: [String] = []
                let workersAccepting = accepting[listener.name] ?? 0
                let bound = workersAccepting == snapshot.workerCount && !snapshot.draining
                checks.append(#""accepting":\#(bound)"#)
                if !bound && !snapshot.draining {
                    problems.append("listener \(listener.name): accepting on \(workersAccepting) of \(snapshot.workerCount) workers")
                }
                if let identity = entry.record?.generation.tls.certificateIdentity {
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
                    targetProblems.append("target \(target) unreachable: \(problem)")
                }
                entries.append(#"{"name":\#(jsonString(listener.name)),\#(checks.joined(separator: ","))}"#)
            }
            let ready = problems.isEmpty
            let body = #"{"status":\#(ready ? #""ready""# : #""not ready""#),"problems":[\#(problems.map(jsonString).joined(separator: ","))],"listeners":[\#(entries.joined(separator: ","))]}"#
            completion(ready, body, targetProblems)
        }
    }

    private func statusJSON() -> String {
        guard let snapshot = source?.statusSnapshot else { return "{}" }
        let now = Int64(time(nil))
        let accepting = shared.acceptingWorkers
        let totals = shared.metrics.aggregate()
        var listeners: [String] = []
        for entry in snapshot.listeners {
            let listener = entry.configuration
            var fields = [
                #""name":\#(jsonString(listener.name))"#,
                #""mode":"\#(listener.mode == .server ? "server" : "client")""#,
                #""listen":\#(jsonString(entry.record?.listenAddress ?? listener.listenDescription))"#,
                #""target":\#(jsonString(listener.target.description))"#,
                #""accepting_workers":\#(accepting[listener.name] ?? 0)"#,
                #""connections_active":\#(max(0, totals[listener.name]?.events.open ?? 0))"#,
            ]
            if let generation = entry.record?.generation {
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
            #""version":\#(jsonString(snapshot.version))"#,
            #""libraries":\#(jsonString(libraryVersions))"#,
            #""pid":\#(getpid())"#,
            #""started_at":"\#(iso8601(snapshot.startTime))""#,
            #""uptime_seconds":\#(now - snapshot.startTime)"#,
            #""config_generation":\#(snapshot.configGeneration)"#,
            #""workers":\#(snapshot.workerCount)"#,
            #""draining":\#(snapshot.draining)"#,
            #""connections_open":\#(shared.activeConnections.load(ordering: .relaxed))"#,
            #""listeners":[\#(listeners.joined(separator: ","))]"#,
        ]
        return "{" + fields.joined(separator: ",") + "}"
    }
}
