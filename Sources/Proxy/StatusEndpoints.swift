import EventLoop
public import Policy
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
}

/// Where the status service reads its snapshot from (the runtime).
protocol StatusSource: AnyObject {
    var statusSnapshot: StatusSnapshot { get }
}

/// The status endpoint (`/healthz`, `/readyz`, `/status`, `/metrics`): its socket, server, metrics
/// exporter and readiness checker. Confined to the control loop once started.
final class StatusService {
    /// Where it listens (pinned at startup: a changed address takes effect at the next restart).
    let endpoint: StatusEndpoint?
    private let shared: RuntimeShared
    /// Bound (or inherited) before `start`; the server owns it from then on.
    private var pendingSocket: ListeningSocket?
    private weak var source: (any StatusSource)?
    private(set) var server: StatusServer?
    private(set) var metricsExporter: MetricsExporter?
    private(set) var readinessChecker: ReadinessChecker?

    /// Takes over the status socket a previous process handed over on `endpoint`, else binds one.
    init(endpoint: StatusEndpoint?, settingName: String, shared: RuntimeShared,
         inherited: inout InheritedSockets) throws(StartupError) {
        self.endpoint = endpoint
        self.shared = shared
        if let endpoint {
            if let handedOver = inherited.takeStatus(address: endpoint.description) {
                pendingSocket = handedOver
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
            }
        } catch {
            if error.isAddressInUse {
                throw StartupError("\(settingName) '\(endpoint)': address already in use (another process listens there; stop it or choose another address)")
            }
            throw StartupError("\(settingName) '\(endpoint)': cannot listen: \(error.message)")
        }
    }

    /// Starts serving on the control loop.
    func start(loop: Loop, source: any StatusSource) throws(UVError) {
        self.source = source
        metricsExporter = MetricsExporter(metrics: shared.metrics)
        readinessChecker = ReadinessChecker(loop: loop)
        if let socket = pendingSocket {
            pendingSocket = nil
            server = try StatusServer(loop: loop, socket: socket) { [unowned self] request, respond in
                self.handleStatusRequest(request, respond: respond)
            }
        }
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
        guard let snapshot = source?.statusSnapshot else {
            return GaugeSnapshot(listeners: [], configGeneration: 0, startTime: 0, version: "", now: Int64(time(nil)),
                                 sessionCache: TLSContext.sessionCacheStatistics)
        }
        let listeners = snapshot.listeners.map { entry in
            let tls = entry.record?.generation.tls
            return GaugeSnapshot.Listener(
                name: entry.configuration.name,
                active: entry.record?.counters.active.load(ordering: .relaxed) ?? 0,
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
    private func readiness(_ completion: @escaping (Bool, String) -> Void) {
        var targets: [String: BackendTarget] = [:]
        for entry in source?.statusSnapshot.listeners ?? [] {
            if let generation = entry.record?.generation { targets[entry.configuration.target.description] = generation.settings.target }
        }
        guard let checker = readinessChecker else {
            completion(false, #"{"status":"not ready","problems":["starting"]}"#)
            return
        }
        checker.check(targets) { [weak self] reachability in
            guard let self, let snapshot = self.source?.statusSnapshot else { return }
            let now = Int64(time(nil))
            let accepting = self.shared.acceptingWorkers
            var problems: [String] = []
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
                }
                entries.append(#"{"name":\#(jsonString(listener.name)),\#(checks.joined(separator: ","))}"#)
            }
            let ready = problems.isEmpty
            let body = #"{"status":\#(ready ? #""ready""# : #""not ready""#),"problems":[\#(problems.map(jsonString).joined(separator: ","))],"listeners":[\#(entries.joined(separator: ","))]}"#
            completion(ready, body)
        }
    }

    private func statusJSON() -> String {
        guard let snapshot = source?.statusSnapshot else { return "{}" }
        let now = Int64(time(nil))
        let accepting = shared.acceptingWorkers
        var listeners: [String] = []
        for entry in snapshot.listeners {
            let listener = entry.configuration
            var fields = [
                #""name":\#(jsonString(listener.name))"#,
                #""mode":"\#(listener.mode == .server ? "server" : "client")""#,
                #""listen":\#(jsonString(entry.record?.listenAddress ?? listener.listenDescription))"#,
                #""target":\#(jsonString(listener.target.description))"#,
                #""accepting_workers":\#(accepting[listener.name] ?? 0)"#,
                #""connections_active":\#(entry.record?.counters.active.load(ordering: .relaxed) ?? 0)"#,
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
