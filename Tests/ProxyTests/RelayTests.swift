import EventLoop
import Streams
import Testing
import TLS
@testable import Proxy

// The relay driven without sockets: in-memory streams record what the relay asks of them and replay what
// a socket would report; timers run on a clock the test moves.

/// A stream whose events the test fires by hand.
final class MemoryStream: ByteStream {
    weak var observer: (any ByteStreamObserver)?
    var queuedBytes = 0
    private(set) var opened = false
    var reading = false
    private(set) var outputShut = false
    private(set) var closed = false
    private(set) var written: [UInt8] = []
    /// The next write throws this (a peer that reset while we wrote).
    var failNextWrite: StreamFailure?
    /// Every write is kept queued (the peer reads nothing).
    var holdWrites = false

    func open() { opened = true }
    func startReading() { reading = true }
    func stopReading() { reading = false }

    func write(_ chunk: StreamChunk) throws(StreamFailure) {
        if outputShut || closed { Issue.record("write after shutdown or close") }
        if let failure = failNextWrite {
            failNextWrite = nil
            throw failure
        }
        written += chunk.bytes
        if holdWrites { queuedBytes += chunk.count }
    }

    func discard(_ chunk: StreamChunk) {}
    func shutdownOutput() { outputShut = true }

    func close() {
        guard !closed else { return }
        closed = true
        reading = false
    }

    // What the socket would report.
    func connected() { observer?.streamDidConnect(self) }
    func becameOpen() { observer?.streamDidOpen(self) }
    func receive(_ bytes: [UInt8]) {
        guard reading else {
            Issue.record("bytes delivered to a stream that is not being read")
            return
        }
        bytes.withUnsafeBytes { observer?.stream(self, didRead: .borrowed($0)) }
    }
    func reachEnd() { observer?.streamDidReachEnd(self) }
    func drain(to remaining: Int) {
        queuedBytes = remaining
        observer?.streamDidFlush(self)
    }
    func shutDownDone() { observer?.streamDidShutDown(self) }
    func fail(_ failure: StreamFailure) { observer?.stream(self, didFail: failure) }
    /// The close callback: only after `close()`.
    func closeDone() {
        precondition(closed)
        observer?.streamDidClose(self)
    }
}

final class ManualTimer: RelayTimer {
    unowned let clock: ManualClock
    var deadline: UInt64?
    var interval: UInt64 = 0
    var action: (() -> Void)?
    private(set) var closed = false

    init(clock: ManualClock) { self.clock = clock }

    func start(after timeout: UInt64, repeat repeatInterval: UInt64, _ action: @escaping () -> Void) {
        precondition(!closed, "timer used after close")
        deadline = clock.now + timeout
        interval = repeatInterval
        self.action = action
    }

    func stop() { deadline = nil }
    func close() {
        closed = true
        deadline = nil
        action = nil
    }
}

final class ManualClock {
    var now: UInt64 = 1_000
    var timers: [ManualTimer] = []

    /// Moves time forward, firing due timers in deadline order (repeating ones re-armed).
    func advance(by ms: UInt64) {
        let end = now + ms
        while let timer = timers.filter({ $0.deadline.map { $0 <= end } ?? false }).min(by: { $0.deadline! < $1.deadline! }) {
            now = timer.deadline!
            timer.deadline = timer.interval > 0 ? now + timer.interval : nil
            timer.action?()
        }
        now = end
    }
}

/// The relay's host: a dialler that hands out a `MemoryStream` (or fails), and a log of every callback.
final class RecordingHost: RelayHost {
    let clock = ManualClock()
    var dialError: (any Error)?
    var preambleToSend = Relay.Preamble.none
    private(set) var dialled: [MemoryStream] = []
    private(set) var events: [String] = []
    private(set) var handshakeFailures: [TLSFailure] = []
    private(set) var closed = false

    var now: UInt64 { clock.now }
    var preciseNow: UInt64 { clock.now * 1_000_000 }

    func makeTimer() -> any RelayTimer {
        let timer = ManualTimer(clock: clock)
        clock.timers.append(timer)
        return timer
    }

    func dialTarget(for relay: Relay) throws -> any ByteStream {
        events.append("dial")
        if let dialError { throw dialError }
        let stream = MemoryStream()
        dialled.append(stream)
        return stream
    }

    func preamble(for relay: Relay) -> Relay.Preamble { preambleToSend }
    func relayDidCompleteHandshake(_ relay: Relay) { events.append("handshake") }
    func relay(_ relay: Relay, didFailHandshake failure: TLSFailure) {
        events.append("handshake-failed:\(failure.kind.rawValue)")
        handshakeFailures.append(failure)
    }
    func relayDidFailToReachTarget(_ relay: Relay) { events.append("target-unreachable") }
    func relayDidClose(_ relay: Relay) {
        precondition(!closed, "relayDidClose twice")
        closed = true
        events.append("closed")
    }
}

struct TestError: Error, CustomStringConvertible {
    var description: String { "no route" }
}

let resetByPeer = UVError(code: -104, operation: "write")  // ECONNRESET
let timeouts = Relay.Timeouts(handshakeMs: 5_000, connectMs: 2_000, idleMs: 60_000, closeMs: 10_000)

/// A relay with its two streams; `established` runs the handshake and the target connect for the mode.
struct Harness {
    let host = RecordingHost()
    let client = MemoryStream()
    let relay: Relay
    var target: MemoryStream { host.dialled[0] }

    init(_ mode: Relay.Mode, timeouts: Relay.Timeouts = timeouts) {
        relay = Relay(id: 1, mode: mode, timeouts: timeouts, accepted: client, host: host)
    }

    static func established(_ mode: Relay.Mode, timeouts: Relay.Timeouts = timeouts) -> Harness {
        let h = Harness(mode, timeouts: timeouts)
        h.relay.start()
        switch mode {
        case .server:
            h.client.becameOpen()  // handshake done, admitted
            h.target.connected()
            h.target.becameOpen()
        case .client:
            h.target.connected()
            h.target.becameOpen()  // the remote verified
        }
        return h
    }

    /// Both streams report their close callbacks (as the loop would after `close()`).
    func closeCallbacks() {
        if client.closed { client.closeDone() }
        for stream in host.dialled where stream.closed { stream.closeDone() }
    }
}

@Suite struct RelayTests {
    // MARK: establishing

    @Test func serverModeDialsOnlyAfterTheClientIsAdmittedAndReadsOnlyOnceTheTargetIsUp() {
        let h = Harness(.server)
        h.relay.start()
        #expect(h.relay.state == .handshaking)
        #expect(h.client.opened)
        #expect(h.host.dialled.isEmpty, "no target connection before the handshake completed")

        h.client.becameOpen()
        #expect(h.host.events == ["handshake", "dial"])
        #expect(h.relay.state == .connectingTarget)
        #expect(h.target.opened)
        #expect(!h.client.reading, "the client is not read before the target is connected")

        h.target.connected()
        h.target.becameOpen()
        #expect(h.relay.state == .relaying(finished: []))
        #expect(h.client.reading && h.target.reading)
    }

    @Test func clientModeReadsTheApplicationOnlyAfterTheRemoteIsVerified() {
        let h = Harness(.client)
        h.relay.start()
        #expect(h.client.opened)
        #expect(h.host.events == ["dial"])
        #expect(h.relay.state == .connectingTarget)
        #expect(!h.client.reading)

        h.target.connected()
        #expect(h.relay.state == .handshaking)
        #expect(!h.client.reading, "no plaintext is read before the remote's certificate is verified")

        h.target.becameOpen()
        #expect(h.host.events == ["dial", "handshake"])
        #expect(h.relay.state == .relaying(finished: []))
        #expect(h.client.reading && h.target.reading)
    }

    @Test func preambleGoesFirstToTheTarget() {
        let h = Harness(.server)
        h.host.preambleToSend = .bytes(Array("PROXY".utf8))
        h.relay.start()
        h.client.becameOpen()
        h.target.connected()
        h.target.becameOpen()
        h.client.receive(Array("hello".utf8))
        #expect(h.target.written == Array("PROXYhello".utf8))
    }

    @Test func aPreambleThatCannotBeBuiltClosesBeforeDialling() {
        let h = Harness(.server)
        h.host.preambleToSend = .failed("no address")
        h.relay.start()
        h.client.becameOpen()
        #expect(h.host.dialled.isEmpty)
        #expect(h.relay.state == .closing)
        #expect(h.relay.closeCategory == .proxyHeaderFailed)
    }

    @Test func bytesFlowBothWaysAndAreCounted() {
        let h = Harness.established(.server)
        h.client.receive([1, 2, 3])
        h.target.receive([4, 5])
        #expect(h.target.written == [1, 2, 3])
        #expect(h.client.written == [4, 5])
        #expect(h.relay.bytesUp == 3 && h.relay.bytesDown == 2)
    }

    // MARK: half-close

    @Test(arguments: [Relay.Mode.server, .client])
    func clientFinishesFirstThenTarget(mode: Relay.Mode) {
        let h = Harness.established(mode)
        h.client.receive([1])
        h.client.reachEnd()
        #expect(h.relay.state == .relaying(finished: [.up]))
        #expect(h.target.outputShut, "the client's FIN is passed on")
        #expect(!h.client.outputShut)
        #expect(!h.client.reading)
        // The other direction still flows.
        h.target.receive([9, 9])
        #expect(h.client.written == [9, 9])
        h.target.reachEnd()
        #expect(h.client.outputShut)
        #expect(h.relay.state == .relaying(finished: [.up, .down]))
        h.target.shutDownDone()
        #expect(!h.client.closed, "not done before both shutdowns are out")
        h.client.shutDownDone()
        #expect(h.client.closed && h.target.closed)
        #expect(h.relay.closeCategory == .normal)
        h.closeCallbacks()
        #expect(h.relay.state == .closed)
        #expect(h.host.closed)
    }

    @Test(arguments: [Relay.Mode.server, .client])
    func targetFinishesFirst(mode: Relay.Mode) {
        let h = Harness.established(mode)
        h.target.reachEnd()
        #expect(h.relay.state == .relaying(finished: [.down]))
        #expect(h.client.outputShut && !h.target.outputShut)
        h.client.receive([7])
        #expect(h.target.written == [7], "the client may still send after the target finished")
        h.client.reachEnd()
        h.client.shutDownDone()
        h.target.shutDownDone()
        #expect(h.client.closed && h.target.closed && h.relay.closeCategory == .normal)
    }

    @Test func aHalfClosedConnectionIsBoundedByTheCloseTimeout() {
        let h = Harness.established(.server)
        h.client.reachEnd()
        h.host.clock.advance(by: timeouts.closeMs - 1)
        #expect(!h.client.closed)
        h.host.clock.advance(by: 1)
        #expect(h.client.closed && h.target.closed)
        #expect(h.relay.closeCategory == .closeTimeout)
    }

    // MARK: backpressure

    @Test func aSlowTargetPausesTheClientBetweenHighAndLowWater() {
        let h = Harness.established(.server)
        h.target.holdWrites = true
        let chunk = [UInt8](repeating: 0xAB, count: 64 << 10)
        var sent = 0
        while h.client.reading {
            h.client.receive(chunk)
            sent += chunk.count
        }
        #expect(sent >= Relay.highWater && sent < Relay.highWater + chunk.count, "paused as soon as the queue passed high water")
        #expect(h.target.queuedBytes == sent)
        #expect(h.target.reading, "the other direction is not paused")

        h.target.drain(to: Relay.lowWater + 1)
        #expect(!h.client.reading, "still above low water")
        h.target.drain(to: Relay.lowWater)
        #expect(h.client.reading, "resumed at low water")
    }

    @Test func aSlowClientPausesTheTarget() {
        let h = Harness.established(.client)
        h.client.holdWrites = true
        let chunk = [UInt8](repeating: 1, count: 256 << 10)
        for _ in 0..<4 { h.target.receive(chunk) }
        #expect(!h.target.reading && h.client.reading)
        h.client.drain(to: 0)
        #expect(h.target.reading)
    }

    @Test func aPausedDirectionThatFinishedIsNotResumed() {
        let h = Harness.established(.server)
        h.target.holdWrites = true
        h.client.receive([UInt8](repeating: 0, count: Relay.highWater))
        #expect(!h.client.reading)
        h.client.reachEnd()
        h.target.drain(to: 0)
        #expect(!h.client.reading, "input that ended is not read again")
    }

    // MARK: failures

    @Test func aTargetThatResetsMidWriteClosesBothSides() {
        let h = Harness.established(.server)
        h.target.failNextWrite = .write(resetByPeer)
        h.client.receive([1, 2, 3])
        #expect(h.client.closed && h.target.closed)
        #expect(h.relay.closeCategory == .targetError)
        #expect(h.relay.closeReason.contains("target write error"))
        h.closeCallbacks()
        #expect(h.host.closed)
    }

    @Test func aClientThatResetsClosesWithAClientError() {
        let h = Harness.established(.server)
        h.client.fail(.read(UVError(code: -104, operation: "read")))
        #expect(h.client.closed && h.target.closed)
        #expect(h.relay.closeCategory == .clientError)
    }

    @Test func aTLSErrorAfterTheHandshakeIsAClosedConnectionNotAHandshakeFailure() {
        let h = Harness.established(.server)
        h.client.fail(.tls(TLSFailure(kind: .protocolError, detail: "bad record mac")))
        #expect(h.relay.closeCategory == .tlsError)
        #expect(h.host.handshakeFailures.isEmpty)
        // The alert OpenSSL queued goes out before the FIN: both sides are shut down, not cut.
        #expect(h.client.outputShut && h.target.outputShut)
        #expect(!h.client.closed)
        h.client.shutDownDone()
        h.target.shutDownDone()
        #expect(h.client.closed && h.target.closed)
    }

    @Test func serverModeTargetRefusingTheConnectionClosesTheClientGracefully() {
        let h = Harness(.server)
        h.relay.start()
        h.client.becameOpen()
        h.target.fail(.connect(UVError(code: -111, operation: "connect")))
        #expect(h.host.events == ["handshake", "dial", "target-unreachable"])
        #expect(h.host.handshakeFailures.isEmpty, "server mode: the handshake itself succeeded")
        #expect(h.relay.closeCategory == .targetConnectFailed)
        #expect(h.relay.state == .closing)
        #expect(h.client.outputShut, "close_notify and FIN go to the client first")
        #expect(h.target.closed, "the target that never connected is simply closed")
        h.client.shutDownDone()
        #expect(h.client.closed)
    }

    @Test func clientModeUnreachableRemoteIsAHandshakeFailure() {
        let h = Harness(.client)
        h.host.dialError = TestError()
        h.relay.start()
        #expect(h.host.handshakeFailures.map(\.kind) == [.targetUnreachable])
        #expect(h.relay.closeCategory == .targetConnectFailed)
        #expect(!h.client.reading)
    }

    @Test func theConnectTimeoutIsTheInjectedClocks() {
        let h = Harness(.server)
        h.relay.start()
        h.client.becameOpen()
        h.host.clock.advance(by: timeouts.connectMs - 1)
        #expect(h.relay.state == .connectingTarget)
        h.host.clock.advance(by: 1)
        #expect(h.relay.closeCategory == .targetConnectFailed)
        #expect(h.relay.closeReason.contains("timeout"))
        #expect(h.target.closed)
    }

    // MARK: handshakes and timeouts

    @Test func aHandshakeThatNeverCompletesTimesOut() {
        let h = Harness(.server)
        h.relay.start()
        h.host.clock.advance(by: timeouts.handshakeMs)
        #expect(h.host.handshakeFailures.map(\.kind) == [.timeout])
        #expect(h.client.closed)
        #expect(h.host.dialled.isEmpty)
        h.closeCallbacks()
        #expect(h.host.closed)
    }

    @Test func anIdleConnectionIsClosedAfterTheIdleTimeoutAndActivityPostponesIt() {
        // The idle timer ticks every idle/4 and notices activity at a tick: a connection closes between
        // `idle` and `idle` + idle/4 after its last byte.
        let h = Harness.established(.server)
        let tick = timeouts.idleMs / 4
        h.host.clock.advance(by: timeouts.idleMs / 2)
        h.client.receive([1])
        h.host.clock.advance(by: timeouts.idleMs - 1)
        #expect(!h.client.closed, "activity half-way reset the idle clock")
        h.host.clock.advance(by: tick + 1)
        #expect(h.client.closed && h.relay.closeCategory == .idleTimeout)
    }

    @Test func aConnectionWithoutTrafficClosesAfterTheIdleTimeout() {
        let h = Harness.established(.client)
        h.host.clock.advance(by: timeouts.idleMs - 1)
        #expect(!h.client.closed)
        h.host.clock.advance(by: timeouts.idleMs / 4 + 1)
        #expect(h.client.closed && h.relay.closeCategory == .idleTimeout)
    }

    // MARK: max lifetime

    static let lifetime = Relay.Timeouts(handshakeMs: 5_000, connectMs: 2_000, idleMs: 60_000, closeMs: 10_000,
                                         maxLifetimeMs: 30_000)

    @Test(arguments: [Relay.Mode.server, .client])
    func aBusyConnectionIsClosedGracefullyAtItsMaxLifetime(mode: Relay.Mode) {
        let h = Harness(mode, timeouts: Self.lifetime)
        h.relay.start()
        h.host.clock.advance(by: 1_000)  // the handshake and the connect take a second: counted
        switch mode {
        case .server:
            h.client.becameOpen()
            h.target.connected()
            h.target.becameOpen()
        case .client:
            h.target.connected()
            h.target.becameOpen()
        }
        for _ in 0..<28 {
            h.client.receive([1])
            h.target.receive([2])
            h.host.clock.advance(by: 1_000)
        }
        #expect(h.relay.state == .relaying(finished: []), "busy, 1 ms short of the lifetime: still open")
        h.host.clock.advance(by: 1_000)
        #expect(h.relay.state == .closing)
        #expect(h.relay.closeCategory == .maxLifetime && h.relay.closeReason == "max lifetime")
        #expect(h.client.outputShut && h.target.outputShut, "close_notify and FIN go out both ways")
        #expect(!h.client.reading && !h.target.reading)
        #expect(!h.client.closed, "not cut: the shutdowns are waited for")
        h.client.shutDownDone()
        h.target.shutDownDone()
        #expect(h.client.closed && h.target.closed)
        h.closeCallbacks()
        #expect(h.host.closed)
        let timersClosed = h.host.clock.timers.allSatisfy { $0.closed }
        #expect(h.host.clock.timers.count == 2 && timersClosed, "both timers are closed with the relay")
    }

    @Test func aHalfClosedConnectionIsStillCappedByItsLifetime() {
        let h = Harness.established(.server, timeouts: Self.lifetime)
        h.host.clock.advance(by: 25_000)
        h.client.reachEnd()  // the close timeout would end it at 35 s, after the cap
        h.host.clock.advance(by: 4_999)
        h.target.receive([1])
        #expect(h.relay.state == .relaying(finished: [.up]))
        h.host.clock.advance(by: 1)
        #expect(h.relay.closeCategory == .maxLifetime)
        #expect(h.client.outputShut)
    }

    @Test func withoutACapNoSecondTimerIsMade() {
        let h = Harness.established(.server)
        #expect(h.host.clock.timers.count == 1)
        h.host.clock.advance(by: 59_000)
        h.client.receive([1])
        h.host.clock.advance(by: 59_000)
        #expect(h.relay.state == .relaying(finished: []))
    }

    @Test func activityIsNoticedOncePerChange() {
        let h = Harness.established(.server)
        #expect(h.relay.noticeActivity(now: 5), "the start counts as activity")
        #expect(!h.relay.noticeActivity(now: 6))
        h.target.receive([1, 2])
        #expect(h.relay.noticeActivity(now: 7))
        #expect(h.relay.lastActivity == 7)
        #expect(!h.relay.noticeActivity(now: 8))
        #expect(h.relay.lastActivity == 7)
    }

    @Test func aRefusedClientIsToldAndGivenTimeToReadTheAlert() {
        let h = Harness(.server)
        h.relay.start()
        h.client.reading = true  // the TLS stream reads its handshake by itself
        h.client.fail(.handshake(TLSFailure(kind: .denied, detail: "no rule matched")))
        #expect(h.host.handshakeFailures.map(\.kind) == [.denied])
        #expect(h.host.dialled.isEmpty, "nothing was dialled for a refused client")
        #expect(h.client.outputShut, "the alert and FIN go out")
        #expect(h.client.reading, "the client is still read (and its bytes dropped) until it leaves")
        h.client.shutDownDone()
        #expect(!h.client.closed, "lingering for the client's EOF")
        h.client.receive([0x17, 0x03, 0x03])  // its last flight: discarded
        h.client.reachEnd()
        #expect(h.client.closed)
        #expect(h.relay.closeCategory == .handshakeFailed)
    }

    @Test func aRefusedClientThatNeverLeavesIsCutAfterTheLinger() {
        let h = Harness(.server)
        h.relay.start()
        h.client.fail(.handshake(TLSFailure(kind: .unknownCA, detail: "unable to get local issuer certificate")))
        h.client.shutDownDone()
        h.host.clock.advance(by: Relay.lingerMs - 1)
        #expect(!h.client.closed)
        h.host.clock.advance(by: 1)
        #expect(h.client.closed)
    }

    @Test func aPeerThatLeavesDuringTheHandshakeIsClosedAtOnce() {
        let h = Harness(.server)
        h.relay.start()
        h.client.fail(.handshake(TLSFailure(kind: .peerClosed, detail: "reset")))
        #expect(h.client.closed)
        #expect(h.host.handshakeFailures.map(\.kind) == [.peerClosed])
    }

    @Test func onlyTheFirstHandshakeFailureIsRecorded() {
        let h = Harness(.server)
        h.relay.start()
        h.client.fail(.handshake(TLSFailure(kind: .denied, detail: "no rule matched")))
        h.host.clock.advance(by: timeouts.handshakeMs)  // the handshake timer was replaced by the linger
        h.client.fail(.handshake(TLSFailure(kind: .peerClosed, detail: "reset")))
        #expect(h.host.handshakeFailures.map(\.kind) == [.denied])
        #expect(h.relay.closeReason == "handshake failed")
    }

    @Test func clientModeRefusalByTheRemoteAfterItsHandshake() {
        // TLS 1.3: the remote judges our certificate after we consider the handshake done; its refusal
        // arrives as the first record and is still a handshake failure.
        let h = Harness.established(.client)
        h.target.fail(.handshake(TLSFailure(kind: .refusedByPeer, detail: "peer sent alert: certificate unknown")))
        #expect(h.host.handshakeFailures.map(\.kind) == [.refusedByPeer])
        #expect(h.client.closed && h.target.closed)
        #expect(h.client.written.isEmpty)
    }

    @Test func theApplicationLeavingBeforeTheRemoteIsVerifiedClosesQuietly() {
        let h = Harness(.client)
        h.relay.start()
        h.target.connected()
        h.client.reachEnd()
        #expect(h.relay.closeCategory == .clientGaveUp)
        #expect(h.client.closed && h.target.closed)
        #expect(h.host.handshakeFailures.isEmpty)
    }

    @Test func theRelayIsDoneOnlyWhenBothStreamsReportedTheirClose() {
        let h = Harness.established(.server)
        h.relay.close(.shutdown, reason: "shutting down")
        h.client.closeDone()
        #expect(!h.host.closed)
        h.target.closeDone()
        #expect(h.host.closed && h.relay.state == .closed)
    }
}

@Suite struct RelayImpossibleTransitionTests {
    @Test func startingTwiceStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            let h = Harness(.server)
            h.relay.start()
            h.relay.start()
        }
    }

    @Test func aClientModeHandshakeBeforeTheConnectStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            let h = Harness(.client)
            h.relay.start()
            h.target.becameOpen()  // opened without having connected: a stream cannot do this
        }
    }
}
