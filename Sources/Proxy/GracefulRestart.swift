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

/// SIGUSR2: zero-downtime restart (and binary upgrade) by re-executing ourselves.
///
/// 1. Start the executable at our path (a package upgrade may have replaced it) with the same arguments,
///    passing every listening socket — the runtime's own descriptor of each, so every SO_REUSEPORT accept
///    queue — in `PORTCULLIS_INHERITED_FDS`, and the write end of a pipe in `PORTCULLIS_READY_FD`.
/// 2. The new process adopts those sockets instead of binding, starts its workers, and writes one byte.
/// 3. Only then do we stop accepting and drain like SIGTERM, and exit. Closing our descriptors does not
///    close the sockets: the new process holds them, and connections still queued are accepted there.
/// If the new process exits or is not ready within `restartTimeoutMs`, it is killed and we keep serving.
extension ServerRuntime {
    static let restartTimeoutMs: UInt64 = 30_000

    func watchRestartSignals(loop: Loop) throws(UVError) {
        signalWatchers.append(try SignalWatcher(loop: loop, signal: SIGUSR2) { [unowned self] _ in self.startRestart() })
        signalWatchers.append(try SignalWatcher(loop: loop, signal: SIGCHLD) { [unowned self] _ in self.reapChildren() })
    }

    func startRestart() {
        guard !shuttingDown else {
            logger.info("restart ignored while draining")
            return
        }
        if let pending = restart {
            logger.warning("restart already in progress: ignoring SIGUSR2", metadata: ["restart.pid": "\(pending.pid)"])
            return
        }
        guard let loop = control, let path = ProcessControl.executablePath() else {
            logger.error("restart failed: cannot find our own executable (/proc/self/exe); still serving")
            return
        }
        // Inheritable copies exist only until the spawn returns: nothing else we start may get them.
        var passed: [Int32] = []
        defer { passed.forEach(Descriptor.close) }
        var readEnd: Int32 = -1
        do {
            var groups: [(name: String, fds: [Int32])] = []
            for listener in configuration.listeners {
                guard let sockets = records[listener.name]?.sockets else { continue }
                var fds: [Int32] = []
                for socket in sockets.originals {
                    fds.append(try Descriptor.inheritableCopy(socket.fd))
                    passed.append(fds.last!)
                }
                groups.append((listener.name, fds))
            }
            if let fd = statusServer?.descriptor {
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
            deadline.start(after: ServerRuntime.restartTimeoutMs) { [unowned self] in
                self.restartFailed("the new process was not ready within \(ServerRuntime.restartTimeoutMs / 1000) s")
            }
            restart = PendingRestart(pid: pid, readiness: reader, deadline: deadline)
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

    /// The new process accepts on every socket: stop accepting here and drain.
    private func successorReady() {
        guard let pending = restart else { return }
        restart = nil
        pending.deadline.close()
        pending.readiness.close()
        handingOver = true
        closeStatusEndpoint()  // the successor answers status requests from now on
        logger.info("restart: handing over, draining", metadata: [
            "restart.pid": "\(pending.pid)", "conn.open": "\(shared.activeConnections.load(ordering: .relaxed))",
        ])
        // Under systemd the successor becomes the main process; it sends its own keep-alives from now on.
        notifier.mainPID(pending.pid, status: "handed over to pid \(pending.pid)")
        stopWatchdog()
        beginShutdown(SIGUSR2)
    }

    private func restartFailed(_ why: String) {
        guard let pending = restart else { return }
        restart = nil
        pending.deadline.close()
        pending.readiness.close()
        // It never accepted, so it holds no connection: stop it so it cannot start accepting later.
        ProcessControl.kill(pending.pid, signal: SIGKILL)
        logger.error("restart failed: still serving", metadata: ["restart.pid": "\(pending.pid)", "error": "\(why)"])
        notifier.status("restart failed, still serving: \(why)")
        reapChildren()
    }

    /// SIGTERM while the new process is starting: it would otherwise serve alone, unasked.
    func abandonRestart() {
        guard let pending = restart else { return }
        restart = nil
        pending.deadline.close()
        pending.readiness.close()
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
