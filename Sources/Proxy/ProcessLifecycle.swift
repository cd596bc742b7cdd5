/// Where the server process is in its life. Changed only on the control thread; an impossible transition
/// is a bug, and stops the process naming the event and the state.
///
///     created ─run─▶ starting ─every worker accepts─▶ running
///        starting / running ─SIGTERM, SIGINT, handover, failed worker─▶ draining ─every worker exited─▶ stopped
///        starting ─control loop cannot be set up─▶ stopped(1)
enum ProcessLifecycle: Equatable, Sendable, CustomStringConvertible {
    /// Sockets bound, `run` not called yet.
    case created
    /// `run` set up the control loop; the workers are starting.
    case starting
    /// Every worker accepts: READY=1 was sent (and a waiting old process told to hand over).
    case running
    /// No new connections; live ones finish until the shutdown timeout. `exitCode` is 1 once connections
    /// had to be cut or a worker failed, else 0.
    case draining(exitCode: Int32)
    /// Every worker exited: `run` returns `exitCode`.
    case stopped(exitCode: Int32)

    var description: String {
        switch self {
        case .created: return "created"
        case .starting: return "starting"
        case .running: return "running"
        case .draining(let code): return "draining(exitCode: \(code))"
        case .stopped(let code): return "stopped(exitCode: \(code))"
        }
    }

    /// Draining or stopped: no reload, no restart, not ready.
    var isShuttingDown: Bool {
        switch self {
        case .draining, .stopped: return true
        case .created, .starting, .running: return false
        }
    }

    /// `run` begins.
    mutating func start() {
        guard case .created = self else { impossible("start") }
        self = .starting
    }

    /// The control loop could not be set up: `run` returns 1 at once.
    mutating func setupFailed() {
        guard case .starting = self else { impossible("setupFailed") }
        self = .stopped(exitCode: 1)
    }

    /// Every worker started while starting: announce readiness (once).
    mutating func becomeReady() {
        guard case .starting = self else { impossible("becomeReady") }
        self = .running
    }

    /// The first SIGTERM/SIGINT, a completed handover, or (`failed`) a worker that could not start.
    mutating func beginDraining(failed: Bool = false) {
        switch self {
        case .starting, .running: self = .draining(exitCode: failed ? 1 : 0)
        case .created, .draining, .stopped: impossible("beginDraining")
        }
    }

    /// Open connections were closed before they finished (second signal, shutdown timeout): exit code 1.
    mutating func connectionsCut() {
        guard case .draining = self else { impossible("connectionsCut") }
        self = .draining(exitCode: 1)
    }

    /// Every worker exited (`workerFailed`: one of them could not start). Returns the exit code.
    @discardableResult
    mutating func stop(workerFailed: Bool) -> Int32 {
        guard case .draining(let code) = self else { impossible("stop") }
        let exitCode: Int32 = workerFailed ? 1 : code
        self = .stopped(exitCode: exitCode)
        return exitCode
    }

    private func impossible(_ event: String) -> Never {
        preconditionFailure("server lifecycle: \(event) in state \(self)")
    }
}
