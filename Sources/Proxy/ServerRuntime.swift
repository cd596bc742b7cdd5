import EventLoop
public import Logging
import Policy
import TLS

#if canImport(Glibc)
import Glibc
#endif

/// Runs server mode: binds the listening sockets, starts one worker loop per thread, and owns signals on
/// the calling (control) thread — SIGHUP reloads, SIGTERM/SIGINT drain and exit.
public final class ServerRuntime {
    private let configuration: ProxyConfiguration
    private let logger: Logger
    private let shared: RuntimeShared
    private var generation: Generation
    private var workers: [Worker] = []
    private var threads: [LoopThread] = []
    private let listenAddress: String
    private var sockets: [ListeningSocket]

    /// Validates everything that touches the system (files, keys, addresses, ports) and binds the sockets.
    /// Throws a `StartupError` naming the setting at fault; nothing is left open on failure.
    public init(configuration: ProxyConfiguration, logger: Logger) throws(StartupError) {
        self.configuration = configuration
        self.logger = logger
        shared = RuntimeShared(logger: logger)
        let target = try ServerRuntime.resolveTarget(configuration)
        let tls = try ServerRuntime.makeTLSContext(configuration)
        generation = Generation(number: 1, tls: tls, settings: ListenerRuntimeSettings(
            name: configuration.name, target: target, targetDescription: configuration.target.description,
            handshakeTimeoutMs: configuration.handshakeTimeoutMs, connectTimeoutMs: configuration.connectTimeoutMs,
            idleTimeoutMs: configuration.idleTimeoutMs, closeTimeoutMs: configuration.closeTimeoutMs,
            maxConnections: configuration.maxConnections))
        (sockets, listenAddress) = try ServerRuntime.bindSockets(configuration)
    }

    // Control-thread state (the thread that calls `run`).
    private var control: Loop?
    private var signalWatchers: [SignalWatcher] = []
    private var shutdownTimer: Timer?
    private var exitWatcher: AsyncWakeup?
    private var shuttingDown = false
    private var exitCode: Int32 = 0

    /// Serves until SIGTERM/SIGINT and the drain that follows. Returns the process exit code:
    /// 0 when every connection drained, 1 when connections had to be cut at the shutdown timeout.
    public func run() -> Int32 {
        ignoreSIGPIPE()
        do {
            let loop = try Loop()
            control = loop
            shutdownTimer = Timer(loop: loop)
            let watcher = try AsyncWakeup(loop: loop) { [unowned self] in self.workersMayHaveExited() }
            exitWatcher = watcher
            shared.setControlWakeup(watcher.sender)
            for signal in [SIGTERM, SIGINT] {
                signalWatchers.append(try SignalWatcher(loop: loop, signal: signal) { [unowned self] in self.beginShutdown($0) })
            }
            signalWatchers.append(try SignalWatcher(loop: loop, signal: SIGHUP) { [unowned self] _ in
                if self.shuttingDown {
                    self.logger.info("reload ignored while draining")
                } else {
                    self.reload()
                }
            })
        } catch {
            logger.critical("cannot set up the control loop", metadata: ["error": "\(error)"])
            sockets.forEach { $0.close() }
            return 1
        }

        for (index, socket) in sockets.enumerated() {
            workers.append(Worker(index: index, shared: shared, socket: socket, generation: generation))
        }
        sockets = []
        for (index, worker) in workers.enumerated() {
            threads.append(LoopThread(name: "portcullis-w\(index)") { worker.run() })
        }
        logger.info("listening", metadata: [
            "listen.address": "\(listenAddress)",
            "target": "\(configuration.target)",
            "workers": "\(workers.count)",
            "tls.min_version": "\(configuration.tls.minimumVersion == .tls13 ? "1.3" : "1.2")",
            "config.generation": "\(generation.number)",
        ])
        control?.run()
        threads.forEach { $0.join() }
        workers = []
        control = nil
        return exitCode
    }

    private func beginShutdown(_ signal: Int32) {
        let open = shared.activeConnections.load(ordering: .relaxed)
        if shuttingDown {
            logger.warning("second signal: closing open connections now", metadata: ["signal": "\(signal)", "conn.open": "\(open)"])
            if open > 0 { exitCode = 1 }
            workers.forEach { $0.post(.cut) }
            return
        }
        shuttingDown = true
        logger.info("shutting down: draining connections", metadata: [
            "signal": "\(signal)", "conn.open": "\(open)",
            "shutdown.timeout_ms": "\(configuration.shutdownTimeoutMs)",
        ])
        workers.forEach { $0.post(.drain) }
        shutdownTimer?.start(after: configuration.shutdownTimeoutMs) { [unowned self] in
            let open = self.shared.activeConnections.load(ordering: .relaxed)
            guard open > 0 else { return }
            self.exitCode = 1
            self.logger.warning("shutdown timeout: closing open connections", metadata: ["conn.open": "\(open)"])
            self.workers.forEach { $0.post(.cut) }
        }
    }

    /// Runs on the control loop whenever a worker thread finishes; once all have, closes the control
    /// handles so `run` returns.
    private func workersMayHaveExited() {
        let (count, failed) = shared.exitedWorkers
        if failed && !shuttingDown {
            // A worker could not start: stop the others rather than serve at reduced capacity silently.
            exitCode = 1
            beginShutdown(SIGTERM)
        }
        guard count == workers.count else { return }
        if failed { exitCode = 1 }
        logger.info("stopped", metadata: ["exit.code": "\(exitCode)"])
        shared.setControlWakeup(nil)
        exitWatcher?.close()
        shutdownTimer?.close()
        signalWatchers.forEach { $0.close() }
        exitWatcher = nil
        shutdownTimer = nil
        signalWatchers = []
    }

    // MARK: reload

    /// Re-reads certificate, key and CA bundle. A failure keeps the current material and says why.
    private func reload() {
        do {
            let tls = try ServerRuntime.makeTLSContext(configuration)
            generation = Generation(number: generation.number + 1, tls: tls, settings: generation.settings)
            workers.forEach { $0.post(.install(generation)) }
            var metadata: Logger.Metadata = ["config.generation": "\(generation.number)"]
            if let identity = tls.certificateIdentity {
                metadata["tls.cert.subject"] = "\(identity.subject.rfc2253)"
                metadata["tls.cert.not_after"] = "\(identity.notAfter)"
            }
            logger.info("reloaded certificates", metadata: metadata)
        } catch {
            logger.error("reload failed: keeping the current certificates", metadata: [
                "error": "\(error.description)", "config.generation": "\(generation.number)",
            ])
        }
    }

    // MARK: startup checks

    static func makeTLSContext(_ configuration: ProxyConfiguration) throws(StartupError) -> TLSContext {
        do {
            return try TLSContext(configuration: configuration.tls, policy: configuration.policy)
        } catch {
            let names = configuration.names
            let flag: String
            switch error.item {
            case .certificate: flag = names.certificate
            case .key: flag = names.key
            case .keyPassphrase: flag = names.keyPassphrase
            case .caBundle: flag = names.caBundle
            case .crl: flag = names.crl
            case .other: flag = "tls"
            }
            throw StartupError("\(flag) \(error.description)")
        }
    }

    static func resolveTarget(_ configuration: ProxyConfiguration) throws(StartupError) -> BackendTarget {
        switch configuration.target {
        case .unix(let path):
            return .unix(path)
        case .tcp(let host, let port):
            if let address = try? SocketAddress(ip: host, port: port) { return .tcp(address) }
            do {
                guard let first = try SocketAddress.resolve(host: host, port: port).first else {
                    throw StartupError("\(configuration.names.target) '\(configuration.target)': host has no address")
                }
                return .tcp(first)
            } catch let error as StartupError {
                throw error
            } catch {
                throw StartupError("\(configuration.names.target) '\(configuration.target)': cannot resolve host (\(error))")
            }
        }
    }

    /// One SO_REUSEPORT socket per worker. A plain bind first proves the port is free: with SO_REUSEPORT
    /// alone, a second instance of the same user would silently share the port instead of failing.
    static func bindSockets(_ configuration: ProxyConfiguration) throws(StartupError) -> ([ListeningSocket], String) {
        let host = configuration.listenHost
        let shown = host.contains(":") ? "[\(host)]:\(configuration.listenPort)" : "\(host):\(configuration.listenPort)"
        func fail(_ error: UVError) -> StartupError {
            if error.isAddressInUse {
                return StartupError("\(configuration.names.listen) '\(shown)': address already in use (another process listens there; stop it or choose another port)")
            }
            return StartupError("\(configuration.names.listen) '\(shown)': cannot listen: \(error.message)")
        }
        var port = configuration.listenPort
        do {
            let probe = try ListeningSocket.bind(ip: host, port: port, reusePort: false)
            probe.close()
        } catch {
            throw fail(error)
        }
        var sockets: [ListeningSocket] = []
        for _ in 0..<max(1, configuration.workers) {
            do {
                let socket = try ListeningSocket.bind(ip: host, port: port, reusePort: true)
                port = socket.port
                sockets.append(socket)
            } catch {
                sockets.forEach { $0.close() }
                throw fail(error)
            }
        }
        let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        return (sockets, address)
    }
}
