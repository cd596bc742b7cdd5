import EventLoop
import ProcessControl
public import Logging
import Policy
public import TLS

#if canImport(Glibc)
import Glibc
#endif

/// Runs server mode: binds (or inherits) the listening sockets, starts one worker loop per thread, and owns
/// the control thread — signals (SIGHUP reloads, SIGTERM/SIGINT drain and exit, SIGUSR2 hands the sockets to
/// a new process), file watching, ticket-key rotation, systemd notifications.
public final class ServerRuntime {
    /// Produces the configuration to apply on reload (re-reading the config file, if there is one).
    public typealias ConfigurationSource = @Sendable () throws -> RuntimeConfiguration

    private var configuration: RuntimeConfiguration
    private let source: ConfigurationSource?
    private let logger: Logger
    private let shared: RuntimeShared
    private let workerCount: Int
    private let startTime = Int64(time(nil))

    /// Per listener name: its generation, counters, address and sockets (see `ListenerRecord`).
    private var records: [String: ListenerRecord] = [:]
    private var configurationGeneration: UInt64 = 1
    /// When the last successful reload was applied (ghostunnel's `/_status` reports it).
    private var lastReload: Int64?

    private var workers: [Worker] = []
    private var threads: [LoopThread] = []

    private let notifier: SystemdNotifier
    /// Restart handover: where to report that we accept (the old process waits for it).
    private var readyFD: Int32?

    // Control-thread state (the thread that calls `run`).
    private var control: Loop?
    private var signalWatchers: [SignalWatcher] = []
    private var directoryWatchers: [DirectoryWatcher] = []
    private var watchedNames: [String: Set<String>] = [:]
    private var reloadDebounce: Timer?
    private var shutdownTimer: Timer?
    private var exitWatcher: AsyncWakeup?
    private var watchdogTimer: Timer?
    /// `--timed-reload`: reload every this many milliseconds, as SIGHUP does (0: never; set before `run`).
    public var timedReloadMilliseconds: UInt64 = 0
    private var timedReloadTimer: Timer?
    /// Starting, running, draining, stopped (see `ProcessLifecycle`).
    private var lifecycle = ProcessLifecycle.created
    /// The status endpoint: its socket, server, metrics exporter and readiness checker.
    private let status: StatusService
    /// SIGUSR2 restarts: the pending one, the handover, the children (see GracefulRestart.swift).
    private lazy var restart = RestartCoordinator(host: self, logger: logger, notifier: notifier)

    /// Validates everything that touches the system (files, keys, addresses, ports) and binds the sockets.
    /// Throws a `StartupError` naming the setting at fault; nothing is left open on failure.
    public init(configuration: RuntimeConfiguration, logger: Logger, reloadFrom source: ConfigurationSource? = nil) throws(StartupError) {
        self.configuration = configuration
        self.source = source
        self.logger = logger
        shared = RuntimeShared(logger: logger)
        shared.quietHandshakeFailures.store(configuration.quietHandshakeFailures, ordering: .relaxed)
        TLSContext.sessionCacheCapacity = configuration.sessionCacheSize
        shared.setHandshakeLimits(configuration.handshakeLimits)
        workerCount = max(1, configuration.workers)
        ServerRuntime.checkDescriptorLimit(configuration, logger: logger)
        // Both read (and unset) their environment variables: do it before any thread starts.
        notifier = SystemdNotifier(environmentFor: logger)
        var inherited = InheritedSockets.fromEnvironment(logger: logger)
        readyFD = inherited.takeReadyFD()
        var records: [String: ListenerRecord] = [:]
        let status: StatusService
        do {
            var built: [String: Generation] = [:]
            for listener in configuration.listeners {
                built[listener.name] = try ServerRuntime.makeGeneration(listener, number: 1, counters: ListenerCounters())
            }
            // `systemd:NAME` listeners first: they claim their sockets by name before another listener could
            // claim one by address.
            let ordered = configuration.listeners.filter(\.listensOnSystemd) + configuration.listeners.filter { !$0.listensOnSystemd }
            for listener in ordered {
                let sockets = try ServerRuntime.acquireSockets(listener, count: workerCount, inherited: &inherited)
                records[listener.name] = ListenerRecord(generation: built[listener.name]!, sockets: sockets, listenAddress: sockets.address)
                records[listener.name]!.pendingSockets = try sockets.perWorker(workerCount, listener: listener)
            }
            let statusTLS = configuration.status != nil && configuration.statusHTTPS
                ? try StatusService.makeTLSContext(listeners: configuration.listeners, settingName: configuration.statusSettingName, generation: 1)
                : nil
            status = try StatusService(endpoint: configuration.status, settingName: configuration.statusSettingName,
                                       tlsContext: statusTLS, shared: shared, inherited: &inherited)
        } catch {
            records.values.forEach { $0.closeSockets(removingBoundFile: true) }
            inherited.closeUnclaimed(logger: logger)
            if let readyFD { Descriptor.close(readyFD) }
            throw error
        }
        self.records = records
        self.status = status
        inherited.closeUnclaimed(logger: logger)
    }

    /// The Unix socket files of `unix:` listeners this process owns: `--user` hands them to that user before
    /// switching, so that its clients' permissions are the user's and it can remove them at exit.
    public var ownedSocketFiles: [String] {
        records.values.compactMap { $0.sockets?.socketFile?.path }.sorted()
    }

    /// Serves until SIGTERM/SIGINT and the drain that follows. Returns the process exit code:
    /// 0 when every connection drained, 1 when connections had to be cut at the shutdown timeout.
    /// Raises the soft descriptor limit to the hard one, and warns when the connection limits (two descriptors
    /// per proxied connection) cannot fit in it.
    static func checkDescriptorLimit(_ configuration: RuntimeConfiguration, logger: Logger) {
        let (before, after) = ProcessControl.raiseDescriptorLimit()
        if after > before {
            logger.info("descriptor limit raised", metadata: ["fd.limit.before": "\(before)", "fd.limit": "\(after)"])
        }
        // Listening sockets, the status endpoint, the loops' own descriptors, log files: a small fixed overhead.
        let reserved = UInt64(32 + configuration.listeners.count * max(1, configuration.workers))
        let capacity = after > reserved ? (after - reserved) / 2 : 0
        let limits = configuration.listeners.map(\.maxConnections)
        if limits.allSatisfy({ $0 > 0 }) {
            let wanted = UInt64(limits.reduce(0, +))
            guard wanted > capacity else { return }
            logger.warning("connection limits exceed the descriptor limit", metadata: [
                "fd.limit": "\(after)", "connections.max": "\(wanted)", "connections.fit": "\(capacity)",
                "fix": "raise the descriptor limit (LimitNOFILE= in the unit, ulimit -n) to at least \(wanted * 2 + reserved), or lower max-concurrent-conns",
            ])
        } else if capacity < 1000 {
            let lower = capacity > 0 ? ", or set max-concurrent-conns to at most \(capacity) so that excess clients wait in the accept queue instead of failing accept" : ""
            logger.warning("descriptor limit allows few connections", metadata: [
                "fd.limit": "\(after)", "connections.fit": "\(capacity)",
                "fix": "raise the descriptor limit (LimitNOFILE= in the unit, ulimit -n)\(lower)",
            ])
        }
    }

    public func run() -> Int32 {
        lifecycle.start()
        ignoreSIGPIPE()
        do {
            let loop = try Loop()
            control = loop
            shutdownTimer = Timer(loop: loop)
            reloadDebounce = Timer(loop: loop)
            let watcher = try AsyncWakeup(loop: loop) { [unowned self] in self.workersChanged() }
            exitWatcher = watcher
            shared.setControlWakeup(watcher.sender)
            for signal in [SIGTERM, SIGINT] {
                signalWatchers.append(try SignalWatcher(loop: loop, signal: signal) { [unowned self] in self.beginShutdown($0) })
            }
            // SIGUSR1 too: what spiffe-helper (`renew_signal`), `step ca renew --daemon` and ghostunnel users send
            // after rotating files (its default action would kill the process).
            for (signal, name) in [(SIGHUP, "SIGHUP"), (SIGUSR1, "SIGUSR1")] {
                signalWatchers.append(try SignalWatcher(loop: loop, signal: signal) { [unowned self] _ in
                    self.reload(trigger: name)
                })
            }
            try restart.watchSignals(loop: loop)
            if let usec = notifier.watchdogMicroseconds {
                // systemd's advice: ping at half the period, so one late wakeup does not trip it.
                let period = max(1, usec / 2_000)
                let timer = Timer(loop: loop)
                timer.start(after: period, repeat: period) { [unowned self] in self.notifier.watchdog() }
                watchdogTimer = timer
            }
            if timedReloadMilliseconds > 0 {
                let timer = Timer(loop: loop)
                timer.start(after: timedReloadMilliseconds, repeat: timedReloadMilliseconds) { [unowned self] in
                    self.reload(trigger: "timed-reload")
                }
                timedReloadTimer = timer
            }
            try status.start(loop: loop, source: self)
        } catch {
            logger.critical("cannot set up the control loop", metadata: ["error": "\(error)"])
            records.values.forEach { $0.closeSockets(removingBoundFile: true) }
            status.closeUnstarted()
            if let readyFD { Descriptor.close(readyFD) }
            lifecycle.setupFailed()
            return 1
        }
        watchFiles()

        for index in 0..<workerCount {
            workers.append(Worker(index: index, shared: shared, initial: assignments(forWorker: index, reauthorize: [])))
        }
        forgetPendingSockets()
        for (index, worker) in workers.enumerated() {
            threads.append(LoopThread(name: "portcullis-w\(index)") { worker.run() })
        }
        for listener in configuration.listeners {
            logListening(listener)
        }
        if let status = configuration.status {
            logger.info("status endpoint listening", metadata: [
                "status.address": "\(configuration.statusHTTPS ? "https://" : "")\(status)",
                "status.endpoints": "\(StatusService.paths.joined(separator: " "))",
            ])
        }
        control?.run()
        threads.forEach { $0.join() }
        workers = []
        control = nil
        closeListenerSockets()
        if let readyFD { Descriptor.close(readyFD) }
        guard case .stopped(let exitCode) = lifecycle else {
            preconditionFailure("server lifecycle: the control loop returned in state \(lifecycle)")
        }
        return exitCode
    }

    private func logListening(_ listener: ListenerConfiguration) {
        var metadata: Logger.Metadata = [
            "listener": "\(listener.name)",
            "listen.address": "\(records[listener.name]?.listenAddress ?? listener.listenDescription)",
            "listen.source": "\(records[listener.name]?.source ?? "bound")",
            "target": "\(listener.target)",
            "workers": "\(workerCount)",
            "tls.min_version": "\(listener.tls.minimumVersion == .tls13 ? "1.3" : "1.2")",
            "config.generation": "\(configurationGeneration)",
        ]
        if let tls = records[listener.name]?.generation.tls {
            if tls.crlCount > 0 { metadata["tls.crl_count"] = "\(tls.crlCount)" }
            if let identity = tls.certificateIdentity {
                metadata["tls.cert.subject"] = "\(identity.subject.rfc2253)"
            } else if listener.mode == .client {
                metadata["tls.cert.subject"] = "none (no client certificate: authentication disabled)"
            }
            if let system = tls.systemTrust {
                metadata["tls.trust"] = "system (file \(system.file), directory \(system.directory))"
            } else if let ca = listener.tls.caPath {
                metadata["tls.trust"] = "\(ca) (\(tls.caCertificateCount) CA certificates)"
            }
        }
        logger.info("listening", metadata: metadata)
        warnIfCRLExpired(listener)
    }

    private func warnIfCRLExpired(_ listener: ListenerConfiguration) {
        guard let tls = records[listener.name]?.generation.tls, let nextUpdate = tls.crlNextUpdate, nextUpdate < Int64(time(nil)) else { return }
        logger.error("CRL has expired: refresh it", metadata: [
            "listener": "\(listener.name)",
            "crl.next_update": "\(nextUpdate)",
            "crl.policy": "\(listener.tls.tolerateExpiredCRL ? "warn: peers are still admitted" : "reject: every handshake fails until a fresh CRL is loaded")",
        ])
    }

    /// The listener set for one worker: current generations, plus that worker's share of any new sockets.
    private func assignments(forWorker index: Int, reauthorize: Set<String>,
                             renames: [String: String] = [:]) -> [ListenerAssignment] {
        configuration.listeners.compactMap { listener in
            guard let record = records[listener.name] else { return nil }
            return ListenerAssignment(name: listener.name, generation: record.generation,
                                      sockets: index < record.pendingSockets.count ? record.pendingSockets[index] : [],
                                      reauthorize: reauthorize.contains(listener.name),
                                      renamedFrom: renames[listener.name])
        }
    }

    /// The workers own the pending sockets now.
    private func forgetPendingSockets() {
        for name in records.keys { records[name]!.pendingSockets = [] }
    }

    /// Closes the runtime's own descriptors of every listening socket (the workers' copies stay open) and
    /// removes the Unix socket files we own, unless a successor serves them now.
    private func closeListenerSockets() {
        for name in records.keys {
            records[name]!.sockets?.close(removingFile: !restart.handedOver)
            records[name]!.sockets = nil
        }
    }

    // MARK: reload

    /// Reloads, telling systemd (RELOADING=1 before, READY=1 after, whatever the outcome).
    private func reload(trigger: String) {
        guard !lifecycle.isShuttingDown else {
            logger.info("reload ignored while draining")
            return
        }
        guard !restart.isPending else {
            // The new process reads the configuration itself; rebinding now would hand it stale sockets.
            logger.info("reload ignored while a restart is in progress", metadata: ["reload.trigger": "\(trigger)"])
            return
        }
        notifier.reloading()
        if let failure = applyReload(trigger: trigger) {
            notifier.ready(status: "reload failed, still serving configuration generation \(configurationGeneration): \(failure)")
        } else {
            notifier.ready(status: "serving configuration generation \(configurationGeneration)")
        }
    }

    /// Builds and validates the complete new configuration first; only then swaps it in, per listener.
    /// Any failure changes nothing and is logged with its precise reason, which is returned.
    private func applyReload(trigger: String) -> String? {
        var next: RuntimeConfiguration
        do {
            next = try source?() ?? configuration
        } catch {
            shared.metrics.noteReload(succeeded: false)
            logger.error("reload failed: keeping the current configuration", metadata: [
                "reload.trigger": "\(trigger)", "error": "\(error)", "config.generation": "\(configurationGeneration)",
            ])
            return "\(error)"
        }
        let number = configurationGeneration + 1
        let plan: ReloadPlan
        var built: [String: Generation] = [:]
        var newSockets: [String: ListenerSockets] = [:]
        var newPerWorker: [String: [[ListeningSocket]]] = [:]
        var statusTLS: TLSContext?
        do {
            // Every TLS context and target first (no socket yet): the plan compares their policies and trust.
            var prepared: [String: (tls: TLSContext, settings: ListenerRuntimeSettings)] = [:]
            for listener in next.listeners {
                prepared[listener.name] = (try ServerRuntime.makeTLSContext(listener, number: number),
                                           try ServerRuntime.makeSettings(listener))
            }
            // The HTTPS status endpoint serves the reloaded certificate too; it is pinned like its address.
            if configuration.status != nil && configuration.statusHTTPS {
                statusTLS = try StatusService.makeTLSContext(listeners: next.listeners, settingName: configuration.statusSettingName,
                                                             generation: number)
            }
            plan = ReloadPlan(current: configuration.listeners.compactMap { listener in
                records[listener.name].map { ReloadPlan.Listener(listener, tls: $0.generation.tls) }
            }, next: next.listeners.map { ReloadPlan.Listener($0, tls: prepared[$0.name]!.tls) })
            for listener in next.listeners {
                let counters = records[plan.renamed[listener.name] ?? listener.name]?.counters ?? ListenerCounters()
                let (tls, settings) = prepared[listener.name]!
                built[listener.name] = Generation(number: number, tls: tls, settings: settings, counters: counters)
                if plan.needsSockets(listener.name) {
                    let sockets = try ServerRuntime.bindSockets(listener, count: workerCount)
                    newSockets[listener.name] = sockets
                    newPerWorker[listener.name] = try sockets.perWorker(workerCount, listener: listener)
                }
            }
        } catch {
            newSockets.values.forEach { $0.close(removingFile: true) }
            newPerWorker.values.joined().joined().forEach { $0.close() }
            shared.metrics.noteReload(succeeded: false)
            logger.error("reload failed: keeping the current configuration", metadata: [
                "reload.trigger": "\(trigger)", "error": "\(error.description)", "config.generation": "\(configurationGeneration)",
            ])
            return error.description
        }

        if next.status != configuration.status {
            logger.warning("the status endpoint address changed: it takes effect at the next restart", metadata: [
                "status.address": "\(configuration.status.map { "\($0)" } ?? "none")",
                "status.address.new": "\(next.status.map { "\($0)" } ?? "none")",
            ])
        }
        if next.statusHTTPS != configuration.statusHTTPS {
            logger.warning("the status endpoint scheme changed: it takes effect at the next restart", metadata: [
                "status.https": "\(configuration.statusHTTPS)", "status.https.new": "\(next.statusHTTPS)",
            ])
        }
        next.status = configuration.status
        next.statusHTTPS = configuration.statusHTTPS
        if let statusTLS { status.replaceTLSContext(statusTLS) }
        lastReload = Int64(time(nil))
        shared.quietHandshakeFailures.store(next.quietHandshakeFailures, ordering: .relaxed)
        TLSContext.sessionCacheCapacity = next.sessionCacheSize
        shared.setHandshakeLimits(next.handshakeLimits)
        shared.metrics.noteReload(succeeded: true)
        configuration = next
        configurationGeneration = number
        // Each record moves to its new name (if renamed) and takes its new generation, and its new sockets
        // when rebound: the old ones close once the workers close their copies too.
        var previous = records
        var updated: [String: ListenerRecord] = [:]
        for listener in next.listeners {
            let generation = built[listener.name]!
            var record = previous.removeValue(forKey: plan.renamed[listener.name] ?? listener.name)
            record?.generation = generation
            if let sockets = newSockets[listener.name] {
                record?.sockets?.close(removingFile: true)  // rebound: the old path is no longer ours to serve
                record = ListenerRecord(generation: generation, sockets: sockets, listenAddress: sockets.address,
                                        pendingSockets: newPerWorker[listener.name] ?? [])
            }
            updated[listener.name] = record
        }
        previous.values.forEach { $0.sockets?.close(removingFile: true) }  // removed listeners
        records = updated
        for (index, worker) in workers.enumerated() {
            worker.post(.apply(assignments(forWorker: index, reauthorize: plan.reauthorize, renames: plan.renamed)))
        }
        forgetPendingSockets()
        watchFiles()

        logger.info("reloaded", metadata: [
            "reload.trigger": "\(trigger)",
            "config.generation": "\(number)",
            "listeners": "\(next.listeners.map(\.name).joined(separator: ","))",
            "listeners.added": "\(plan.added.joined(separator: ","))",
            "listeners.removed": "\(plan.removed.joined(separator: ","))",
            "listeners.reauthorized": "\(plan.reauthorize.sorted().joined(separator: ","))",
            "listeners.renamed": "\(plan.renamedDescription)",
        ])
        let announced = plan.added + plan.renamed.keys.sorted()
        for name in announced {
            if let listener = next.listeners.first(where: { $0.name == name }) { logListening(listener) }
        }
        for listener in next.listeners where !announced.contains(listener.name) { warnIfCRLExpired(listener) }
        return nil
    }

    /// Watches the directories of every referenced file and of every symbolic link on the way to one
    /// (`watchedDirectories`); a change there (debounced, so an editor's write-rename-chmod sequence is one
    /// reload) triggers a reload.
    private func watchFiles() {
        guard let loop = control else { return }
        let wanted = watchedDirectories(for: configuration.watchedFiles)
        guard wanted != watchedNames else { return }
        directoryWatchers.forEach { $0.close() }
        directoryWatchers = []
        watchedNames = wanted
        for (directory, names) in wanted {
            do {
                directoryWatchers.append(try DirectoryWatcher(loop: loop, path: directory) { [unowned self] entry in
                    // Kubernetes-style secret volumes swap a "..data" symlink: treat any dot-dot entry as a change.
                    if names.contains(entry) || entry.hasPrefix("..") { self.scheduleReload() }
                })
            } catch {
                logger.warning("cannot watch directory for changes (SIGHUP still reloads)", metadata: [
                    "path": "\(directory)", "error": "\(error)",
                ])
            }
        }
    }

    private func scheduleReload() {
        reloadDebounce?.start(after: 300) { [unowned self] in self.reload(trigger: "file change") }
    }

    // MARK: shutdown

    /// Starts draining (`workerFailed`: because a worker could not start; the exit code is then 1). A
    /// second signal while draining closes the open connections at once.
    private func beginShutdown(_ signal: Int32, workerFailed: Bool = false) {
        let open = shared.activeConnections.load(ordering: .relaxed)
        if lifecycle.isShuttingDown {
            logger.warning("second signal: closing open connections now", metadata: ["signal": "\(signal)", "conn.open": "\(open)"])
            if open > 0 { lifecycle.connectionsCut() }
            workers.forEach { $0.post(.cut) }
            return
        }
        lifecycle.beginDraining(failed: workerFailed)
        restart.abandon()
        logger.info("shutting down: draining connections", metadata: [
            "signal": "\(signal)", "conn.open": "\(open)",
            "shutdown.timeout_ms": "\(configuration.shutdownTimeoutMs)",
        ])
        if !restart.handedOver {
            // After a handover the successor is the service: STOPPING=1 from us would stop it.
            notifier.stopping(status: "draining \(open) connection(s)")
        }
        // Our descriptors of the listening sockets: with the workers' copies closed too, the port stops
        // accepting (after a handover the successor's copies keep the sockets open).
        closeListenerSockets()
        directoryWatchers.forEach { $0.close() }
        directoryWatchers = []
        reloadDebounce?.stop()
        workers.forEach { $0.post(.drain) }
        shutdownTimer?.start(after: configuration.shutdownTimeoutMs) { [unowned self] in
            let open = self.shared.activeConnections.load(ordering: .relaxed)
            guard open > 0 else { return }
            self.lifecycle.connectionsCut()
            self.logger.warning("shutdown timeout: closing open connections", metadata: ["conn.open": "\(open)"])
            self.workers.forEach { $0.post(.cut) }
        }
    }

    /// Runs on the control loop whenever a worker starts or finishes. Once all have started, tells systemd
    /// and a waiting old process that we accept; once all have finished, closes the control handles so
    /// `run` returns.
    private func workersChanged() {
        // Every handle that wakes us is closed once stopped; nothing is left to do then.
        if case .stopped = lifecycle { return }
        if lifecycle == .starting && shared.startedWorkers == workers.count {
            lifecycle.becomeReady()
            announceReady()
        }
        workersMayHaveExited()
    }

    private func announceReady() {
        notifier.ready(status: "serving \(configuration.listeners.count) listener(s), configuration generation \(configurationGeneration)")
        if let fd = readyFD {
            readyFD = nil
            let told = Descriptor.writeByte(fd)
            Descriptor.close(fd)
            logger.info("restart: accepting, told the old process to hand over", metadata: ["restart.told": "\(told)"])
        }
    }

    private func workersMayHaveExited() {
        let (count, failed) = shared.exitedWorkers
        if failed && !lifecycle.isShuttingDown {
            // A worker could not start: stop the others rather than serve at reduced capacity silently.
            beginShutdown(SIGTERM, workerFailed: true)
        }
        guard count == workers.count else { return }
        let exitCode = lifecycle.stop(workerFailed: failed)
        logger.info("stopped", metadata: ["exit.code": "\(exitCode)"])
        shared.setControlWakeup(nil)
        exitWatcher?.close()
        status.close()
        // Ours to remove, unless a successor now serves it.
        if !restart.handedOver { status.removeSocketFile() }
        watchdogTimer?.close()
        watchdogTimer = nil
        timedReloadTimer?.close()
        timedReloadTimer = nil
        shutdownTimer?.close()
        reloadDebounce?.close()
        signalWatchers.forEach { $0.close() }
        restart.close()
        directoryWatchers.forEach { $0.close() }
        exitWatcher = nil
        shutdownTimer = nil
        reloadDebounce = nil
        signalWatchers = []
        directoryWatchers = []
    }

    // MARK: building generations

    /// Builds every listener's TLS context and resolves its target without binding anything: what
    /// `portcullis check` runs. Returns the contexts by listener name.
    public static func validate(_ configuration: RuntimeConfiguration) throws(StartupError) -> [String: TLSContext] {
        var contexts: [String: TLSContext] = [:]
        for listener in configuration.listeners {
            contexts[listener.name] = try makeGeneration(listener, number: 1, counters: ListenerCounters()).tls
        }
        return contexts
    }

    static func makeGeneration(_ listener: ListenerConfiguration, number: UInt64,
                               counters: ListenerCounters) throws(StartupError) -> Generation {
        let tls = try makeTLSContext(listener, number: number)
        return Generation(number: number, tls: tls, settings: try makeSettings(listener), counters: counters)
    }

    /// The listener's TLS context for generation `number`; an error names the setting at fault.
    static func makeTLSContext(_ listener: ListenerConfiguration, number: UInt64) throws(StartupError) -> TLSContext {
        var tlsConfiguration = listener.tls
        tlsConfiguration.generation = number
        tlsConfiguration.sessionIDContext = "portcullis:" + listener.name
        let tls: TLSContext
        do {
            tls = try TLSContext(configuration: tlsConfiguration, policy: listener.policy)
        } catch {
            let flag = listener.names.name(of: error.item)
            throw StartupError("\(flag)\(error.path.isEmpty ? ":" : "") \(error.description)")
        }
        return tls
    }

    /// The settings the data path reads, with the target resolved.
    static func makeSettings(_ listener: ListenerConfiguration) throws(StartupError) -> ListenerRuntimeSettings {
        let target = try resolveTarget(listener)
        return ListenerRuntimeSettings(
            name: listener.name, mode: listener.mode == .server ? .server : .client, target: target, targetDescription: listener.target.description,
            handshakeTimeoutMs: listener.handshakeTimeoutMs, connectTimeoutMs: listener.connectTimeoutMs,
            idleTimeoutMs: listener.idleTimeoutMs, closeTimeoutMs: listener.closeTimeoutMs, maxLifetimeMs: listener.maxLifetimeMs,
            maxConnections: listener.maxConnections, closeAtCertExpiry: listener.closeAtCertExpiry,
            proxyProtocolV2: listener.mode == .server && listener.proxyProtocolV2)
    }

    static func resolveTarget(_ listener: ListenerConfiguration) throws(StartupError) -> BackendTarget {
        switch listener.target {
        case .unix(let path):
            return .unix(path)
        case .tcp(let host, let port):
            if let address = try? SocketAddress(ip: host, port: port) { return .tcp(address) }
            do {
                guard let first = try SocketAddress.resolve(host: host, port: port).first else {
                    throw StartupError("\(listener.names.target) '\(listener.target)': host has no address")
                }
                return .tcp(first)
            } catch let error as StartupError {
                throw error
            } catch {
                throw StartupError("\(listener.names.target) '\(listener.target)': cannot resolve host (\(error))")
            }
        }
    }

    /// The listener's sockets at start: those handed over by the process we replace (SIGUSR2) or passed by
    /// systemd, else new ones. A `systemd:NAME` listener never binds.
    static func acquireSockets(_ listener: ListenerConfiguration, count: Int,
                               inherited: inout InheritedSockets) throws(StartupError) -> ListenerSockets {
        let shown = listener.listenDescription
        switch listener.listen {
        case .systemd(let name):
            let passed = inherited.systemdNames
            guard let taken = inherited.take(listener: listener.name, systemdName: name) else {
                let what = passed.isEmpty ? "systemd passed no sockets (no LISTEN_FDS for this process)"
                    : "systemd passed no socket named '\(name)' (passed: \(passed.joined(separator: ", ")))"
                throw StartupError("\(listener.names.listen) '\(shown)': \(what): set FileDescriptorName=\(name) in the .socket unit and start the service through it")
            }
            if !listener.allowsNonLoopbackListen, let exposed = taken.nonLocalAddress {
                taken.sockets.forEach { $0.close() }
                throw StartupError("\(listener.names.listen) '\(shown)': systemd passed a socket on \(exposed), which is not on loopback: client mode accepts plaintext there (use ListenStream=127.0.0.1:PORT or a path, or --unsafe-listen / unsafe-listen: true to allow it)")
            }
            return ListenerSockets(originals: taken.sockets, source: taken.source.rawValue, address: taken.address)
        case .tcp, .unix:
            guard let taken = inherited.take(listener: listener.name, address: shown) else {
                return try bindSockets(listener, count: count)
            }
            if case .unix = listener.listen, taken.address != shown {
                // The path changed in the configuration before this restart: the old socket is not what was asked for.
                taken.sockets.forEach { $0.close() }
                return try bindSockets(listener, count: count)
            }
            var file: UnixSocketFile?
            if case .unix(let path) = listener.listen, taken.source == .restart {
                // Handed over by the Portcullis we replace, which bound it: ours to remove at exit now. One that
                // systemd passed stays systemd's (its socket unit removes it).
                file = UnixSocketFile(path: path)
            }
            return ListenerSockets(originals: taken.sockets, source: taken.source.rawValue, address: taken.address, socketFile: file)
        }
    }

    /// TCP: one SO_REUSEPORT socket per worker. A plain bind first proves the port is free: with SO_REUSEPORT
    /// alone, a second instance of the same user would silently share the port instead of failing.
    /// Unix: one socket the workers share (duplicated descriptors, one accept queue).
    static func bindSockets(_ listener: ListenerConfiguration, count: Int) throws(StartupError) -> ListenerSockets {
        let shown = listener.listenDescription
        let host: String
        switch listener.listen {
        case .tcp(let listenHost, _):
            host = listenHost
        case .unix(let path):
            return try bindUnixSocket(listener, path: path)
        case .systemd:
            throw StartupError("\(listener.names.listen) '\(shown)': systemd passes its sockets only when it starts the service: restart the service (systemctl restart) to listen on a new socket name")
        }
        func fail(_ error: UVError) -> StartupError {
            if error.isAddressInUse {
                return StartupError("\(listener.names.listen) '\(shown)': address already in use (another process listens there; stop it or choose another port)")
            }
            return StartupError("\(listener.names.listen) '\(shown)': cannot listen: \(error.message)")
        }
        guard case .tcp(_, var port) = listener.listen else { preconditionFailure("bindSockets: \(shown) is not TCP") }
        if port != 0 {
            do {
                let probe = try ListeningSocket.bind(ip: host, port: port, reusePort: false)
                probe.close()
            } catch {
                throw fail(error)
            }
        }
        var sockets: [ListeningSocket] = []
        for _ in 0..<count {
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
        return ListenerSockets(originals: sockets, source: "bound", address: address)
    }

    /// Binds `unix:PATH` (a stale socket file nobody accepts on is replaced; any other file is left alone).
    /// The file gets the process's umask (0022: only our user may connect).
    static func bindUnixSocket(_ listener: ListenerConfiguration, path: String) throws(StartupError) -> ListenerSockets {
        let shown = listener.listenDescription
        let socket: ListeningSocket
        do {
            socket = try ListeningSocket.bindUnix(path: path, backlog: 1024)
        } catch {
            let why: String
            switch -error.code {
            case EEXIST: why = "a file that is not a socket is in the way: Portcullis replaces only a stale socket; move the file or choose another path"
            case EADDRINUSE: why = "another process listens on this socket: stop it or choose another path"
            case ENOENT: why = "its directory does not exist: create it (RuntimeDirectory= in a systemd unit)"
            case EACCES: why = "permission denied: the directory must be writable by the user Portcullis runs as"
            default: why = "cannot listen: \(error.message)"
            }
            throw StartupError("\(listener.names.listen) '\(shown)': \(why)")
        }
        return ListenerSockets(originals: [socket], source: "bound", address: shown, socketFile: UnixSocketFile(path: path))
    }

    /// Stops the watchdog keep-alives (the successor sends its own once systemd watches it).
    private func stopWatchdog() {
        watchdogTimer?.close()
        watchdogTimer = nil
    }
}

extension ServerRuntime: RestartHost {
    var isShuttingDown: Bool { lifecycle.isShuttingDown }

    var socketsForSuccessor: [(name: String, sockets: [ListeningSocket])] {
        configuration.listeners.compactMap { listener in
            records[listener.name]?.sockets.map { (listener.name, $0.originals) }
        }
    }

    var statusDescriptor: Int32? { status.descriptor }

    var openConnections: Int { shared.activeConnections.load(ordering: .relaxed) }

    func closeStatusEndpoint() { status.close() }

    func drainAfterHandover() {
        stopWatchdog()
        beginShutdown(SIGUSR2)
    }
}

extension ServerRuntime: StatusSource {
    var statusSnapshot: StatusSnapshot {
        StatusSnapshot(listeners: configuration.listeners.map { StatusSnapshot.Listener(configuration: $0, record: records[$0.name]) },
                       configGeneration: configurationGeneration, startTime: startTime, version: configuration.version,
                       workerCount: workerCount, draining: lifecycle.isShuttingDown, lastReload: lastReload)
    }
}

/// The runtime's own descriptors of one listener's sockets, and where they came from.
struct ListenerSockets {
    let originals: [ListeningSocket]
    /// "bound", "systemd" or "restart".
    let source: String
    let address: String
    /// A Unix socket file this process owns (it bound it, or took it over from the process it replaced): removed
    /// when the listener stops serving it. Nil for TCP and for sockets systemd passed.
    var socketFile: UnixSocketFile? = nil

    /// Fresh descriptors for each worker (see `InheritedSockets.distribute`).
    func perWorker(_ workers: Int, listener: ListenerConfiguration) throws(StartupError) -> [[ListeningSocket]] {
        do {
            return try InheritedSockets.distribute(originals, workers: workers)
        } catch {
            throw StartupError("\(listener.names.listen) '\(listener.listenDescription)': \(error)")
        }
    }

    /// Closes our descriptors; with `removingFile`, removes our socket file too (if it is still ours: see
    /// `UnixSocketFile.remove`), so that clients fail at once instead of connecting to a dead path.
    func close(removingFile: Bool) {
        originals.forEach { $0.close() }
        if removingFile { socketFile?.remove() }
    }
}
