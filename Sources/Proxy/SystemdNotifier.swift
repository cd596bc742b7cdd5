import EventLoop
import ProcessControl
import Logging

/// systemd's `Type=notify` protocol, spoken directly over `NOTIFY_SOCKET` (no libsystemd): READY=1,
/// RELOADING=1 with MONOTONIC_USEC, STOPPING=1, STATUS=…, MAINPID=…, and WATCHDOG=1 keep-alives.
///
/// Reads its variables once at startup and removes them from the environment, so nothing we start inherits
/// them — except our own SIGUSR2 successor, which gets them back explicitly (`variablesForSuccessor`).
/// Sends never block and never fail the caller: the first failure is a warning, later ones debug lines.
/// - Warning: use only on the control thread.
final class SystemdNotifier {
    /// `NOTIFY_SOCKET` as given ("/path" or "@abstract"), nil when not under systemd.
    let socketAddress: String?
    /// Keep-alive period the service manager expects (`WATCHDOG_USEC`), when it applies to this process.
    let watchdogMicroseconds: UInt64?
    private let sender: UnixDatagramSender?
    private let logger: Logger
    private var failures = 0

    static let variables = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]

    /// Reads (and unsets) NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. Call before other threads start.
    convenience init(environmentFor logger: Logger) {
        let values = Dictionary(uniqueKeysWithValues: SystemdNotifier.variables.map { ($0, ProcessControl.getenv($0)) })
        SystemdNotifier.variables.forEach(ProcessControl.unsetenv)
        self.init(notifySocket: values["NOTIFY_SOCKET"] ?? nil, watchdogUsec: values["WATCHDOG_USEC"] ?? nil,
                  watchdogPID: values["WATCHDOG_PID"] ?? nil, ownPID: ProcessControl.pid, logger: logger)
    }

    init(notifySocket: String?, watchdogUsec: String?, watchdogPID: String?, ownPID: Int32, logger: Logger) {
        self.logger = logger
        var address = notifySocket.flatMap { $0.isEmpty ? nil : $0 }
        if let given = address, !given.hasPrefix("/") && !given.hasPrefix("@") {
            logger.warning("NOTIFY_SOCKET is neither a path nor an abstract '@' name: not notifying systemd",
                           metadata: ["notify.socket": "\(given)"])
            address = nil
        }
        var sender: UnixDatagramSender?
        if let address {
            do {
                sender = try UnixDatagramSender(address: address)
            } catch {
                logger.warning("cannot create the systemd notify socket: not notifying systemd", metadata: ["error": "\(error)"])
            }
        }
        self.sender = sender
        socketAddress = sender == nil ? nil : address
        // The watchdog belongs to the process systemd named; a mismatching WATCHDOG_PID means it is not us.
        if let usec = watchdogUsec.flatMap(UInt64.init), usec > 0,
           watchdogPID == nil || watchdogPID.flatMap(Int32.init) == ownPID, sender != nil {
            watchdogMicroseconds = usec
        } else {
            watchdogMicroseconds = nil
        }
    }

    var isActive: Bool { sender != nil }

    /// Sends "KEY=value" lines as one datagram.
    func send(_ fields: [(String, String)]) {
        guard let sender else { return }
        let message = fields.map { "\($0.0)=\(Self.oneLine($0.1))" }.joined(separator: "\n")
        guard let error = sender.send(message) else { return }
        failures += 1
        let metadata: Logger.Metadata = ["error": "\(error)", "notify.message": "\(fields.first?.0 ?? "")"]
        if failures == 1 {
            logger.warning("cannot notify systemd (later failures are logged at debug level)", metadata: metadata)
        } else {
            logger.debug("cannot notify systemd", metadata: metadata)
        }
    }

    func ready(status: String) { send([("READY", "1"), ("STATUS", status)]) }

    /// Before a reload: systemd correlates the following READY=1 with this timestamp.
    func reloading() {
        send([("RELOADING", "1"), ("MONOTONIC_USEC", "\(ProcessControl.monotonicMicroseconds)"), ("STATUS", "reloading")])
    }

    func stopping(status: String) { send([("STOPPING", "1"), ("STATUS", status)]) }
    func watchdog() { send([("WATCHDOG", "1")]) }
    func status(_ text: String) { send([("STATUS", text)]) }

    /// Tells systemd that `pid` is the service's main process from now on (SIGUSR2 handover).
    func mainPID(_ pid: Int32, status: String) { send([("MAINPID", "\(pid)"), ("STATUS", status)]) }

    /// The variables a SIGUSR2 successor needs to keep notifying: the same socket and watchdog period. No
    /// WATCHDOG_PID: the successor has a new pid, and becomes the watched process once MAINPID names it.
    var variablesForSuccessor: [String] {
        var entries: [String] = []
        if let socketAddress { entries.append("NOTIFY_SOCKET=\(socketAddress)") }
        if let watchdogMicroseconds { entries.append("WATCHDOG_USEC=\(watchdogMicroseconds)") }
        return entries
    }

    private static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\n" ? " " : $0 })
    }
}
