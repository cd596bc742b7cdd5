import EventLoop
import Streams
import TLS

/// A timer the relay can be given: the loop's `Timer`, or a test's.
protocol RelayTimer: AnyObject {
    /// (Re)arms: fires after `timeout` ms, then every `repeat` ms if non-zero.
    func start(after timeout: UInt64, repeat repeatInterval: UInt64, _ action: @escaping () -> Void)
    func stop()
    func close()
}

extension Timer: RelayTimer {}

/// What a relay needs from where it runs (the worker; a test's fake). Every call is on the loop's thread.
protocol RelayHost: AnyObject {
    /// The loop's cached clock, in milliseconds (timeouts, activity).
    var now: UInt64 { get }
    /// A monotonic clock in nanoseconds (durations reported as metrics).
    var preciseNow: UInt64 { get }
    func makeTimer() -> any RelayTimer
    /// A new, unopened stream to the target (server mode: plaintext; client mode: TLS).
    func dialTarget(for relay: Relay) throws -> any ByteStream
    /// Server mode: bytes the target gets before the client's (a PROXY v2 header), asked once the client is
    /// admitted; `.failed` closes the connection before dialling.
    func preamble(for relay: Relay) -> Relay.Preamble
    func relayDidCompleteHandshake(_ relay: Relay)
    /// Called once, with the first reason; later events do not overwrite it.
    func relay(_ relay: Relay, didFailHandshake failure: TLSFailure)
    func relayDidFailToReachTarget(_ relay: Relay)
    /// Both streams are closed: the relay is done.
    func relayDidClose(_ relay: Relay)
}

/// One proxied connection: two streams and a pipe each way between them.
///
/// Server and client mode are the same relay. Server mode: the accepted stream is TLS and the target is
/// dialled (plaintext) only after the client was verified *and* admitted — inside the handshake — and the
/// client is not read until the target is connected. Client mode: the accepted stream is plaintext and is
/// not read until the dialled target (TLS) has connected, completed its handshake and verified the server,
/// so no plaintext byte ever reaches an unverified server.
///
/// Life (`Lifecycle`):
/// - server: `created → handshaking → connectingTarget → relaying → closing → closed`
/// - client: `created → connectingTarget → handshaking → relaying → closing → closed`
///
/// Each `Pipe` moves bytes one way: read from its source, written to its sink. When the sink's queue
/// passes the high-water mark the source stops being read, and starts again below the low-water mark, so
/// memory per connection stays bounded whatever the peers do. An end of input on one side shuts the other
/// side's output (half-close); the connection ends when both ways are done, or on the first failure.
///
/// Ownership: the host keeps the relay until `relayDidClose`, after the last stream callback; streams refer to
/// it unretained (as their observer).
/// - Warning: confined to its loop's thread.
final class Relay: ByteStreamObserver {
    enum Mode { case server, client }
    /// A set of directions (up: accepted → target). A bit set rather than a `Set`: the lifecycle is read for
    /// every chunk, and a payload with storage would be retained and released each time.
    struct Directions: OptionSet, Hashable {
        let rawValue: UInt8
        static let up = Directions(rawValue: 1)
        static let down = Directions(rawValue: 2)
    }

    enum Lifecycle: Equatable {
        case created
        case handshaking
        case connectingTarget
        /// Bytes flow. `finished`: the directions whose input has ended (half-close).
        case relaying(finished: Directions)
        case closing
        case closed
    }

    enum Preamble {
        case none
        case bytes([UInt8])
        case failed(String)
    }

    struct Timeouts {
        var handshakeMs: UInt64
        var connectMs: UInt64
        /// 0: none.
        var idleMs: UInt64
        var closeMs: UInt64
        /// 0: none. Counted from the accept; the connection closes gracefully when it is reached, busy or not.
        var maxLifetimeMs: UInt64 = 0
    }

    /// One direction.
    struct Pipe {
        var paused = false
        var outputShut = false
        var bytes = 0
    }

    /// Above this many bytes queued towards one side, stop reading the other side.
    static let highWater = 1 << 20
    /// Resume reading once the queue drains to this.
    static let lowWater = 256 << 10
    /// How long a closing connection waits for its last bytes, alert or FIN to get out.
    static let lingerMs: UInt64 = 1000

    let id: UInt64
    let mode: Mode
    let timeouts: Timeouts
    /// The host owns the relay and outlives it (it lets go in `relayDidClose`): no reference counting.
    private unowned(unsafe) let host: any RelayHost
    let accepted: any ByteStream
    @exclusivity(unchecked) private(set) var target: (any ByteStream)? {
        didSet { unretainedTarget = target }
    }
    /// `target` for the per-chunk path, where loading the strong reference would retain and release it for
    /// every chunk; `target` keeps it alive.
    @exclusivity(unchecked) private unowned(unsafe) var unretainedTarget: (any ByteStream)?
    /// The TLS side's session (server mode: the accepted stream's; client mode: the target's).
    var tlsSession: TLSSession?
    private let timer: any RelayTimer
    /// `timeouts.maxLifetimeMs`: a second timer, made only when the cap is on, armed once when bytes start to
    /// flow (the handshake and connect have their own deadlines). Nothing on the data path looks at it.
    private var lifetimeTimer: (any RelayTimer)?

    // Loop-confined and never accessed re-entrantly while mutated: per-chunk state skips dynamic exclusivity
    // checks.
    @exclusivity(unchecked) private(set) var state = Lifecycle.created
    @exclusivity(unchecked) private var up = Pipe()
    @exclusivity(unchecked) private var down = Pipe()
    private var openStreams = 1
    private var pendingShutdowns = 0
    /// After refusing a TLS client: keep reading (and discarding) until it leaves, so a client still writing
    /// its last handshake flight (the JDK writes three records) reads our alert instead of a reset.
    private var lingeringForPeer = false
    private var preambleBytes: [UInt8]?
    /// The target's TCP (or Unix) connection is up (it can take a FIN).
    private var targetConnected = false

    /// `preciseNow` at the accept.
    let startedAt: UInt64
    /// `preciseNow` at the accept, or (client mode) at the connect to the target: where the handshake starts.
    private(set) var handshakeStartedAt: UInt64
    /// When activity was last seen (ms, the host's clock). Chunks do not read the clock: activity is a change
    /// of the byte counts, noticed by `noticeActivity` (the idle timer, the worker's sweep).
    @exclusivity(unchecked) private(set) var lastActivity: UInt64
    @exclusivity(unchecked) private var bytesMovedWhenLastNoticed = 0
    private(set) var handshakeCompleted = false
    private(set) var handshakeFailure: TLSFailure?
    private(set) var closeReason = ""
    private(set) var closeCategory = CloseCategory.normal

    init(id: UInt64, mode: Mode, timeouts: Timeouts, accepted: any ByteStream, host: any RelayHost) {
        self.id = id
        self.mode = mode
        self.timeouts = timeouts
        self.accepted = accepted
        self.host = host
        timer = host.makeTimer()
        startedAt = host.preciseNow
        handshakeStartedAt = startedAt
        lastActivity = host.now
        accepted.observer = self
    }

    var bytesUp: Int { up.bytes }
    var bytesDown: Int { down.bytes }

    /// Moves `lastActivity` to `now` if bytes moved since the previous call; returns whether they did.
    @discardableResult
    func noticeActivity(now: UInt64) -> Bool {
        let moved = up.bytes &+ down.bytes
        guard moved != bytesMovedWhenLastNoticed else { return false }
        bytesMovedWhenLastNoticed = moved
        lastActivity = now
        return true
    }
    /// Handshake done and bytes flowing (or half-closed).
    var isEstablished: Bool { if case .relaying = state { return true } else { return false } }
    var durationMs: UInt64 { (host.preciseNow &- startedAt) / 1_000_000 }

    func start() {
        guard state == .created else { impossible("start") }
        switch mode {
        case .server:
            state = .handshaking
            timer.start(after: timeouts.handshakeMs, repeat: 0) { [unowned self] in
                failHandshake(TLSFailure(kind: .timeout, detail: "no complete handshake within the handshake timeout"))
                close(.handshakeFailed, reason: "handshake timeout")
            }
            accepted.open()
        case .client:
            accepted.open()  // an accepted plaintext stream: open at once, not read yet
            dialTarget()
        }
    }

    // MARK: establishing

    private func dialTarget() {
        state = .connectingTarget
        timer.start(after: timeouts.connectMs, repeat: 0) { [unowned self] in
            host.relayDidFailToReachTarget(self)
            if mode == .client {
                failHandshake(TLSFailure(kind: .targetUnreachable, detail: "no connection to the target within the connect timeout"))
            }
            closeGracefully(.targetConnectFailed, reason: "target connect failed: timeout")
        }
        do {
            let stream = try host.dialTarget(for: self)
            target = stream
            openStreams += 1
            stream.observer = self
            stream.open()
        } catch {
            host.relayDidFailToReachTarget(self)
            if mode == .client { failHandshake(TLSFailure(kind: .targetUnreachable, detail: "\(error)")) }
            closeGracefully(.targetConnectFailed, reason: "target connect failed: \(error)")
        }
    }

    func streamDidConnect(_ stream: any ByteStream) {
        guard stream === target else { return }
        targetConnected = true
        // Client mode: the TCP connection to the remote is up; its TLS handshake starts now.
        guard mode == .client else { return }
        guard state == .connectingTarget else { impossible("connected target") }
        state = .handshaking
        handshakeStartedAt = host.preciseNow
        timer.start(after: timeouts.handshakeMs, repeat: 0) { [unowned self] in
            failHandshake(TLSFailure(kind: .timeout, detail: "no complete handshake within the handshake timeout"))
            close(.handshakeFailed, reason: "handshake timeout")
        }
    }

    func streamDidOpen(_ stream: any ByteStream) {
        if stream === accepted {
            guard mode == .server else { return }  // client mode: the plaintext side, open from the start
            guard state == .handshaking else { impossible("client handshake completed") }
            handshakeCompleted = true
            host.relayDidCompleteHandshake(self)
            switch host.preamble(for: self) {
            case .none: break
            case .bytes(let bytes): preambleBytes = bytes
            case .failed(let reason):
                closeGracefully(.proxyHeaderFailed, reason: reason)
                return
            }
            dialTarget()
            return
        }
        switch (mode, state) {
        case (.server, .connectingTarget):
            if let bytes = preambleBytes {
                // First on the wire, ahead of every relayed byte: a stream keeps its writes in order.
                preambleBytes = nil
                guard bytes.withUnsafeBytes({ send(.borrowed($0), to: stream) }) else { return }
            }
            startRelaying()
        case (.client, .handshaking):
            handshakeCompleted = true
            host.relayDidCompleteHandshake(self)
            startRelaying()
        default:
            impossible("target opened")
        }
    }

    private func startRelaying() {
        state = .relaying(finished: [])
        lastActivity = host.now
        bytesMovedWhenLastNoticed = -1  // the connection's start counts as activity for the first check
        armIdleTimer()
        armLifetimeTimer()
        accepted.startReading()
        target?.startReading()
    }

    // MARK: relaying

    func stream(_ stream: any ByteStream, didRead chunk: StreamChunk) {
        guard case .relaying = state, let target = unretainedTarget else {
            stream.discard(chunk)
            return  // a lingering refused peer: discard
        }
        let count = chunk.count
        if stream === accepted {
            up.bytes &+= count
            guard send(chunk, to: target) else { return }
            if target.queuedBytes >= Relay.highWater {
                up.paused = true
                stream.stopReading()
            }
        } else {
            down.bytes &+= count
            guard send(chunk, to: accepted) else { return }
            if accepted.queuedBytes >= Relay.highWater {
                down.paused = true
                stream.stopReading()
            }
        }
    }

    /// Writes to `sink`; on failure closes the connection and returns false.
    private func send(_ chunk: StreamChunk, to sink: any ByteStream) -> Bool {
        do throws(StreamFailure) {
            try sink.write(chunk)
            return true
        } catch {
            fail(sink, error)
            return false
        }
    }

    func streamDidFlush(_ stream: any ByteStream) {
        guard case .relaying(let finished) = state, stream.queuedBytes <= Relay.lowWater else { return }
        // `stream` is the sink of the pipe that may be paused: the one feeding it.
        if stream === accepted, down.paused {
            down.paused = false
            if !finished.contains(.down) { target?.startReading() }
        } else if stream === target, up.paused {
            up.paused = false
            if !finished.contains(.up) { accepted.startReading() }
        }
    }

    func streamDidReachEnd(_ stream: any ByteStream) {
        switch state {
        case .relaying(var finished):
            // This side will send nothing more: pass the half-close on to the other side.
            let direction: Directions = stream === accepted ? .up : .down
            guard !finished.contains(direction) else { return }
            finished.insert(direction)
            state = .relaying(finished: finished)
            stream.stopReading()
            (stream === accepted ? target : accepted)?.shutdownOutput()
            timer.start(after: timeouts.closeMs, repeat: 0) { [unowned self] in close(.closeTimeout, reason: "close timeout") }
        case .closing:
            if lingeringForPeer && stream === accepted { closeNow() }
        case .connectingTarget, .handshaking:
            if mode == .client && stream === accepted {
                // The local application gave up before the server was verified.
                close(.clientGaveUp, reason: "client closed before the target was ready")
            }
            // Server mode: the TLS stream reports an EOF during the handshake as a failure instead.
        case .created, .closed:
            break
        }
    }

    func streamDidShutDown(_ stream: any ByteStream) {
        if stream === accepted { down.outputShut = true } else { up.outputShut = true }
        switch state {
        case .closing:
            // A graceful close (alert or close_notify, then FIN) reached the peers' kernels. A refused TLS
            // client is given until its EOF (or the linger timer) to read the alert.
            pendingShutdowns -= 1
            if pendingShutdowns <= 0 && !lingeringForPeer { closeNow() }
        case .relaying(let finished):
            if finished == [.up, .down] && up.outputShut && down.outputShut { close(.normal, reason: "done") }
        default:
            break
        }
    }

    func stream(_ stream: any ByteStream, didFail failure: StreamFailure) {
        fail(stream, failure)
    }

    private func fail(_ stream: any ByteStream, _ failure: StreamFailure) {
        let side = stream === accepted ? "client" : "target"
        switch failure {
        case .handshake(let tlsFailure):
            failHandshake(tlsFailure)
            if isEstablished || tlsFailure.kind == .peerClosed {
                // Refused after the handshake (client mode), or the peer is gone: nothing left to tell it.
                close(.handshakeFailed, reason: "handshake failed")  // client mode: refused after the handshake
            } else {
                closeGracefully(.handshakeFailed, reason: "handshake failed", lingerForPeer: mode == .server && stream === accepted)
            }
        case .connect(let error):
            host.relayDidFailToReachTarget(self)
            if mode == .client {
                failHandshake(TLSFailure(kind: .targetUnreachable, detail: "cannot connect to the target: \(error.message)"))
            }
            closeGracefully(.targetConnectFailed, reason: "target connect failed: \(error.message)")
        case .read(let error):
            close(stream === accepted ? .clientError : .targetError, reason: "\(side) read error: \(error.message)")
        case .write(let error):
            close(stream === accepted ? .clientError : .targetError, reason: "\(side) write error: \(error.message)")
        case .tls(let tlsFailure):
            // A fatal TLS error after the handshake (a bad record, a bad KeyUpdate, …): OpenSSL queued an alert;
            // the peer is told (alert, then FIN) before the connection closes.
            closeGracefully(.tlsError, reason: "TLS error from \(side): \(tlsFailure.detail)")
        }
    }

    func streamDidClose(_ stream: any ByteStream) {
        openStreams -= 1
        guard openStreams == 0 else { return }
        state = .closed
        timer.close()
        lifetimeTimer?.close()
        host.relayDidClose(self)
    }

    private func armIdleTimer() {
        let idle = timeouts.idleMs
        guard idle > 0 else {
            timer.stop()
            return
        }
        // Check periodically instead of re-arming the timer on every read: activity is noticed at a tick, so
        // a connection closes between `idle` and `idle` + one interval after its last byte.
        let interval = max(idle / 4, 10)
        timer.start(after: interval, repeat: interval) { [unowned self] in
            let now = host.now
            if !noticeActivity(now: now) && now &- lastActivity >= idle { close(.idleTimeout, reason: "idle timeout") }
        }
    }

    private func armLifetimeTimer() {
        let lifetime = timeouts.maxLifetimeMs
        guard lifetime > 0 else { return }
        let elapsed = (host.preciseNow &- startedAt) / 1_000_000
        let timer = host.makeTimer()
        lifetimeTimer = timer
        timer.start(after: lifetime > elapsed ? lifetime - elapsed : 0, repeat: 0) { [unowned self] in
            closeGracefully(.maxLifetime, reason: "max lifetime")
        }
    }

    // MARK: closing

    /// Records the first reason a handshake failed; later events (a timer, an EOF) do not overwrite it.
    private func failHandshake(_ failure: TLSFailure) {
        guard handshakeFailure == nil, !handshakeCompleted || failure.kind == .refusedByPeer else { return }
        handshakeFailure = failure
        host.relay(self, didFailHandshake: failure)
    }

    /// Gives up a handshake still in progress (the worker makes room under a flood): recorded as `failure`,
    /// closed at once. Does nothing once the handshake completed.
    func abandonHandshake(_ failure: TLSFailure) {
        guard !handshakeCompleted else { return }
        switch state {
        case .created, .handshaking, .connectingTarget:
            failHandshake(failure)
            close(.handshakeFailed, reason: "handshake failed")
        case .relaying, .closing, .closed:
            break
        }
    }

    /// Ends the connection after telling both peers: pending alerts or close_notify and the FIN go out
    /// first; a short timer bounds the wait for a peer that reads nothing.
    func closeGracefully(_ category: CloseCategory, reason: String, lingerForPeer: Bool = false) {
        switch state {
        case .closing, .closed: return
        default: break
        }
        noteCloseReason(category, reason)
        state = .closing
        lingeringForPeer = lingerForPeer
        timer.start(after: Relay.lingerMs, repeat: 0) { [unowned self] in closeNow() }
        // Shut down every connected stream (an alert or close_notify goes out first); a target still
        // connecting is simply closed.
        var streams: [any ByteStream] = [accepted]
        if let target {
            if targetConnected { streams.append(target) } else { target.close() }
        }
        pendingShutdowns = streams.count
        for stream in streams {
            if !(lingerForPeer && stream === accepted) { stream.stopReading() }
            stream.shutdownOutput()
        }
    }

    /// Closes both streams now (queued bytes are dropped). The first reason given wins.
    func close(_ category: CloseCategory, reason: String) {
        noteCloseReason(category, reason)
        guard state != .closed else { return }
        state = .closing
        lingeringForPeer = false
        timer.stop()
        accepted.close()
        target?.close()
    }

    private func closeNow() {
        close(closeCategory, reason: closeReason)
    }

    private func noteCloseReason(_ category: CloseCategory, _ reason: String) {
        guard closeReason.isEmpty else { return }
        closeReason = reason
        closeCategory = category
    }

    private func impossible(_ event: String) -> Never {
        preconditionFailure("relay \(id): \(event) in state \(state)")
    }
}
