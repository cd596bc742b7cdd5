import EventLoop
import ProcessControl
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A SIGUSR2 restart waiting for the new process to say it accepts.
struct PendingRestart {
    let pid: Int32
    let readiness: PipeReader
    let deadline: Timer
}

/// What a restart needs from the runtime, and what it tells it.
protocol RestartHost: AnyObject {
    /// Draining (or stopped): a restart is refused.
    var isShuttingDown: Bool { get }
    /// The runtime's own descriptors of every listener's sockets, in configuration order: what the new
    /// process inherits.
    var socketsForSuccessor: [(name: String, sockets: [ListeningSocket])] { get }
    /// The status endpoint's listening descriptor, while it serves.
    var statusDescriptor: Int32? { get }
    /// Connections open across all workers (for the log).
    var openConnections: Int { get }
    /// The successor answers status requests from now on.
    func closeStatusEndpoint()
    /// The successor accepts on every socket: stop the watchdog keep-alives and drain (after SIGUSR2).
    func drainAfterHandover()
}

/// SIGUSR2: zero-downtime restart (and binary upgrade) by re-executing ourselves.
///
/// 1. Start the executable at our path (a package upgrade may have replaced it) with the same arguments,
///    passing every listening socket — the runtime's own descriptor of each, so every SO_REUSEPORT accept
///    queue — in `PORTCULLIS_INHERITED_FDS`, and the write end of a pipe in `PORTCULLIS_READY_FD`.
/// 2. The new process adopts those sockets instead of binding, starts its workers, and writes one byte.
/// 3. Only then do we stop accepting and drain like SIGTERM, and exit. Closing our descriptors does not
///    close the sockets: the new process holds them, and connections still queued are accepted there.
/// If the new process exits or is not ready within `restartTimeoutMs`, it is killed and we keep serving.
///
/// Owns the restart state (the pending restart, whether we handed over, the children not yet reaped) and
/// its signal watchers (SIGUSR2, SIGCHLD). Confined to the control loop.
final class RestartCoordinator {
    static let restartTimeoutMs: UInt64 = 30_000

    enum State {
        /// No restart in progress.
        case idle
        /// A new process was started; we wait for its byte (or its exit, or the deadline).
        case waiting(PendingRestart)
        /// The new process accepts: it is the service now, and we drain.
        case handedOver(pid: Int32)
    }

    private(set) var state = State.idle
    /// Spawned processes not yet reaped.
    private(set) var children: Set<Int32> = []
    private unowned let host: any RestartHost
    private let logger: Logger
    private let notifier: SystemdNotifier
    private var loop: Loop?
    private var signalWatchers: [SignalWatcher] = []

    init(host: any RestartHost, logger: Logger, notifier: SystemdNotifier) {
        self.host = host
        self.logger = logger
        self.notifier = notifier
    }

    /// A new process was started and is not ready yet.
    var isPending: Bool {
        if case .waiting = state { return true }
        return false
    }

    /// A successor took the sockets over: it is the service (no STOPPING=1, no unlinking its status socket).
    var handedOver: Bool {
        if case .handedOver = state { return true }
        return false
    }

    func watchSignals(loop: Loop) throws(UVError) {
        self.loop = loop
        signalWatchers.append(try SignalWatcher(loop: loop, signal: SIGUSR2) { [unowned self] _ in self.start() })
        signalWatchers.append(try SignalWatcher(loop: loop, signal: SIGCHLD) { [unowned self] _ in self.reapChildren() })
    }

    /// Stops watching the signals (at exit).
    func close() {
        signalWatchers.forEach { $0.close() }
        signalWatchers = []
    }

    func start() {
        guard !host.isShuttingDown else {
            logger.info("restart ignored while draining")
            return
        }
        if case .waiting(let pending) = state {
            logger.warning("restart already in progress: ignoring SIGUSR2", metadata: ["restart.pid": "\(pending.pid)"])
            return
        }
        guard let loop, let path = ProcessControl.executablePath() else {
            logger.error("restart failed: cannot find our own executable (/proc/self/exe); still serving")
            return
        }
        // Inheritable copies exist only until the spawn returns: nothing else we start may get them.
        var passed: [Int32] = []
        defer { passed.forEach(Descriptor.close) }
        var readEnd: Int32 = -1
        do {
            var groups: [(name: String, fds: [Int32])] = []
            for (name, sockets) in host.socketsForSuccessor {
                var fds: [Int32] = []
                for socket in sockets {
                    fds.append(try Descriptor.inheritableCopy(socket.fd))
                    passed.append(fds.last!)
                }
                groups.append((name, fds))
            }
            if let fd = host.statusDescriptor {
                passed.append(try Descriptor.inheritableCopy(fd))
                groups.append((InheritedSockets.statusGroup, [passed.last!]))
            }
            let pipe = try Descriptor.pipe()
            readEnd = pipe.read
            let writeEnd: Int32
            do {
                writeEnd = try Descriptor.inheritableCopy(pipe.write)
            } catch {
                Descriptor.close(pipe.write)
                throw error
            }
            // Only the child's copy may stay open, so its exit shows as EOF here.
            Descriptor.close(pipe.write)
            passed.append(writeEnd)

            let ours = SystemdNotifier.variables + InheritedSockets.systemdVariables
                + [InheritedSockets.restartVariable, InheritedSockets.readyVariable]
            var environment = ProcessControl.environment().filter { entry in
                !ours.contains { entry.hasPrefix($0 + "=") }
            }
            environment += notifier.variablesForSuccessor
            environment.append("\(InheritedSockets.restartVariable)=\(InheritedSockets.formatRestart(groups))")
            environment.append("\(InheritedSockets.readyVariable)=\(writeEnd)")

            let pid = try ProcessControl.spawn(path: path, arguments: CommandLine.arguments, environment: environment)
            children.insert(pid)
            let reader = try PipeReader(loop: loop, fd: readEnd, onData: { [unowned self] _ in
                self.successorReady()
            }, onEnd: { [unowned self] in
                self.restartFailed("the new process exited before it was ready (its log says why)")
            })
            readEnd = -1  // the reader owns it now
            let deadline = Timer(loop: loop)
            deadline.start(after: RestartCoordinator.restartTimeoutMs) { [unowned self] in
                self.restartFailed("the new process was not ready within \(RestartCoordinator.restartTimeoutMs / 1000) s")
            }
            state = .waiting(PendingRestart(pid: pid, readiness: reader, deadline: deadline))
            logger.info("restart: new process started", metadata: [
                "restart.pid": "\(pid)", "restart.executable": "\(path)",
                "restart.sockets": "\(groups.map { "\($0.name)=\($0.fds.count)" }.joined(separator: ","))",
            ])
            notifier.status("restarting: waiting for pid \(pid)")
        } catch {
            if readEnd >= 0 { Descriptor.close(readEnd) }
            logger.error("restart failed: still serving", metadata: ["error": "\(error)"])
        }
    }

    /// Ends the wait (closing the pipe reader and the deadline) and returns what was waited for.
    private func endWaiting(then next: State) -> PendingRestart? {
        guard case .waiting(let pending) = state else { return nil }
        state = next
        pending.deadline.close()
        pending.readiness.close()
        return pending
    }

    /// The new process accepts on every socket: stop accepting here and drain.
    private func successorReady() {
        guard case .waiting(let waiting) = state, let pending = endWaiting(then: .handedOver(pid: waiting.pid)) else { return }
        host.closeStatusEndpoint()  // the successor answers status requests from now on
        logger.info("restart: handing over, draining", metadata: [
            "restart.pid": "\(pending.pid)", "conn.open": "\(host.openConnections)",
        ])
        // Under systemd the successor becomes the main process; it sends its own keep-alives from now on.
        notifier.mainPID(pending.pid, status: "handed over to pid \(pending.pid)")
        host.drainAfterHandover()
    }

    private func restartFailed(_ why: String) {
        guard let pending = endWaiting(then: .idle) else { return }
        // It never accepted, so it holds no connection: stop it so it cannot start accepting later.
        ProcessControl.kill(pending.pid, signal: SIGKILL)
        logger.error("restart failed: still serving", metadata: ["restart.pid": "\(pending.pid)", "error": "\(why)"])
        notifier.status("restart failed, still serving: \(why)")
        reapChildren()
    }

    /// SIGTERM while the new process is starting: it would otherwise serve alone, unasked.
    func abandon() {
        guard let pending = endWaiting(then: .idle) else { return }
        ProcessControl.kill(pending.pid, signal: SIGTERM)
        logger.warning("restart abandoned: stopping the new process", metadata: ["restart.pid": "\(pending.pid)"])
    }

    func reapChildren() {
        for pid in children {
            guard let code = ProcessControl.reap(pid) else { continue }
            children.remove(pid)
            logger.info("restart: process exited", metadata: ["restart.pid": "\(pid)", "exit.code": "\(code)"])
        }
    }
}
