import EventLoop
public import Histogram
import Synchronization
import TLS

/// One measured run: what was asked, what came out. Rendered as a table row or one JSON object.
public struct BenchResult: Sendable {
    public var workload: String
    public var target: String
    public var parameters: [(String, String)] = []
    public var values: [(String, Double)] = []
    public var latency: Histogram<UInt64>?
    public var errors: [String: Int] = [:]
    public var elapsedSeconds: Double = 0
    public var targetCPUSeconds: Double?

    public func value(_ name: String) -> Double? { values.first { $0.0 == name }?.1 }
}

/// Runs `body` on `threads` OS threads, each with its own loop, and returns their partial results.
func onThreads<Partial: Sendable>(_ threads: Int, _ body: @escaping @Sendable (Int) -> Partial) -> [Partial] {
    ignoreSIGPIPE()  // a target that resets must count as an error, not end the run
    let collected = Mutex<[Partial]>([])
    let workers = (0..<threads).map { index in
        LoopThread(name: "bench-\(index)") {
            let partial = body(index)
            collected.withLock { $0.append(partial) }
        }
    }
    workers.forEach { $0.join() }
    return collected.withLock { $0 }
}

func resolve(_ target: BenchTarget) throws -> SocketAddress {
    if let address = try? SocketAddress(ip: target.host, port: target.port) { return address }
    guard let address = try SocketAddress.resolve(host: target.host, port: target.port).first else {
        throw BenchError("cannot resolve '\(target.host)'")
    }
    return address
}

public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

func newHistogram() -> Histogram<UInt64> {
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    histogram.autoResize = true
    return histogram
}

struct Partial: Sendable {
    var count = 0
    var resumed = 0
    var bytesUp = 0
    /// Throughput to a plaintext target: bytes the kernel had taken by the deadline (the rest of `bytesUp`
    /// was still queued then, and is flushed before the FIN).
    var bytesUpByDeadline = 0
    var bytesDown = 0
    var histogram = newHistogram()
    var errors: [String: Int] = [:]
    var firstReady: UInt64 = .max
    var end: UInt64 = 0
}

public enum Workloads {
    // MARK: handshakes

    /// New connections as fast as `concurrency` parallel slots allow: full handshakes, or with `resume`,
    /// resumptions of each slot's last session (the first handshake of each slot is full).
    public static func handshakes(target: BenchTarget, concurrency: Int, threads: Int, durationSeconds: Double,
                                  resume: Bool) throws -> BenchResult {
        let address = try resolve(target)
        let started = Loop.monotonicNanoseconds
        let deadline = started + UInt64(durationSeconds * 1e9)
        let perThread = split(concurrency, threads)
        let partials = onThreads(perThread.count) { index -> Partial in
            var partial = Partial()
            guard let loop = try? Loop() else { return partial }
            var sessions = [ResumableSession?](repeating: nil, count: perThread[index])
            func startSlot(_ slot: Int) {
                guard Loop.monotonicNanoseconds < deadline else { return }
                let begin = Loop.monotonicNanoseconds
                do {
                    let client = try BenchClient(loop: loop, target: target, address: address,
                                                 resume: resume ? sessions[slot] : nil)
                    client.onReady = { client in
                        partial.count += 1
                        _ = partial.histogram.record((Loop.monotonicNanoseconds - begin) / 1000)
                        if client.isResumed { partial.resumed += 1 }
                        if resume, let session = client.session?.copySession() { sessions[slot] = session }
                        client.close()
                    }
                    client.onClosed = { _, error in
                        if let error { partial.errors[error, default: 0] += 1 }
                        startSlot(slot)
                    }
                } catch {
                    partial.errors["setup", default: 0] += 1
                }
            }
            for slot in 0..<perThread[index] { startSlot(slot) }
            loop.run()
            return partial
        }
        let merged = merge(partials)
        let elapsed = Double(Loop.monotonicNanoseconds - started) / 1e9
        var result = BenchResult(workload: resume ? "handshake-resumed" : "handshake", target: target.description)
        result.parameters = [("concurrency", "\(concurrency)"), ("threads", "\(perThread.count)"),
                             ("duration_s", "\(durationSeconds)"), ("resume", "\(resume)")]
        result.values = [("handshakes", Double(merged.count)), ("handshakes_per_second", Double(merged.count) / elapsed)]
        if resume {
            result.values.append(("resumed_fraction", merged.count == 0 ? 0 : Double(merged.resumed) / Double(merged.count)))
        }
        result.latency = merged.histogram
        result.errors = merged.errors
        result.elapsedSeconds = elapsed
        return result
    }

    // MARK: throughput

    public enum Direction: String, Sendable { case up, down, both }

    /// `streams` connections moving bulk data: up (we write, the target must sink or echo), down (we read,
    /// the target must be a source), both (echo).
    public static func throughput(target: BenchTarget, streams: Int, threads: Int, writeSize: Int,
                                  direction: Direction, durationSeconds: Double) throws -> BenchResult {
        let address = try resolve(target)
        let perThread = split(streams, threads)
        let durationNs = UInt64(durationSeconds * 1e9)
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: writeSize, alignment: 16)
        defer { payload.deallocate() }
        for i in 0..<writeSize { payload[i] = UInt8(truncatingIfNeeded: i &* 31) }
        let source = UnsafeRawBufferPointer(payload)
        let shared = SendableBytes(source)
        let partials = onThreads(perThread.count) { index -> Partial in
            var partial = Partial()
            guard let loop = try? Loop() else { return partial }
            var clients: [BenchClient] = []
            let stopTimer = Timer(loop: loop)
            func pump(_ client: BenchClient) {
                while client.phase == .ready && client.inFlight < (1 << 20) {
                    client.send(shared.bytes)
                    partial.bytesUp += shared.bytes.count
                }
            }
            for _ in 0..<perThread[index] {
                guard let client = try? BenchClient(loop: loop, target: target, address: address) else {
                    partial.errors["setup", default: 0] += 1
                    continue
                }
                clients.append(client)
                client.onReady = { client in
                    let now = Loop.monotonicNanoseconds
                    if partial.firstReady == .max {
                        partial.firstReady = now
                        stopTimer.start(after: durationNs / 1_000_000) {
                            partial.end = Loop.monotonicNanoseconds
                            partial.bytesUpByDeadline = partial.bytesUp
                            for client in clients {
                                if target.tls == nil {
                                    // Plaintext: what is still queued goes out before the FIN, so `bytes_up` is
                                    // exactly what the target receives; the rate counts what the kernel had
                                    // taken by the deadline.
                                    partial.bytesUpByDeadline -= client.inFlight
                                    client.finish()
                                } else {
                                    client.close(sendCloseNotify: false)
                                }
                            }
                            stopTimer.close()
                        }
                    }
                    if direction != .down { pump(client) }
                }
                client.onWritable = { client in if direction != .down { pump(client) } }
                client.onData = { _, n in partial.bytesDown += n }
                client.onClosed = { _, error in
                    if let error, partial.end == 0 { partial.errors[error, default: 0] += 1 }
                    if clients.allSatisfy({ $0.phase == .closed }) { stopTimer.close() }
                }
            }
            loop.run()
            if partial.end == 0 { partial.end = Loop.monotonicNanoseconds }
            return partial
        }
        let merged = merge(partials)
        let elapsed = merged.firstReady == .max ? 0 : Double(merged.end - merged.firstReady) / 1e9
        var result = BenchResult(workload: "throughput", target: target.description)
        result.parameters = [("streams", "\(streams)"), ("threads", "\(perThread.count)"), ("write_size", "\(writeSize)"),
                             ("direction", direction.rawValue), ("duration_s", "\(durationSeconds)")]
        let mbUp = elapsed > 0 ? Double(target.tls == nil ? merged.bytesUpByDeadline : merged.bytesUp) / elapsed / 1e6 : 0
        let mbDown = elapsed > 0 ? Double(merged.bytesDown) / elapsed / 1e6 : 0
        result.values = [("bytes_up", Double(merged.bytesUp)), ("bytes_down", Double(merged.bytesDown)),
                         ("mb_per_second_up", mbUp), ("mb_per_second_down", mbDown)]
        result.errors = merged.errors
        result.elapsedSeconds = elapsed
        return result
    }

    // MARK: latency

    /// Request/response against an echo target: each connection sends `messageSize` bytes and waits for
    /// them back (closed loop), or with `rate` sends on a fixed schedule regardless of replies (open loop),
    /// measuring from the *intended* send time so that a stall cannot hide its own delay.
    public static func latency(target: BenchTarget, connections: Int, threads: Int, messageSize: Int,
                               durationSeconds: Double, rate: Double?) throws -> BenchResult {
        let address = try resolve(target)
        let perThread = split(connections, threads)
        let durationNs = UInt64(durationSeconds * 1e9)
        let message = UnsafeMutableRawBufferPointer.allocate(byteCount: messageSize, alignment: 16)
        defer { message.deallocate() }
        message.initializeMemory(as: UInt8.self, repeating: 0x61)
        let shared = SendableBytes(UnsafeRawBufferPointer(message))
        let perConnectionInterval = rate.map { UInt64(Double(connections) / $0 * 1e9) }
        let partials = onThreads(perThread.count) { index -> Partial in
            var partial = Partial()
            guard let loop = try? Loop() else { return partial }
            final class State {
                var received = 0
                var sentAt: [UInt64] = []  // intended send times of outstanding requests (FIFO)
                var head = 0
                var schedule = OpenLoopSchedule(start: 0, interval: 1)
            }
            var clients: [(BenchClient, State)] = []
            let tick = Timer(loop: loop)
            let stop = Timer(loop: loop)
            var measuring = false
            func finish() {
                partial.end = Loop.monotonicNanoseconds
                measuring = false
                tick.close()
                stop.close()
                clients.forEach { $0.0.close(sendCloseNotify: false) }
            }
            func begin() {
                guard !measuring, partial.firstReady == .max else { return }
                measuring = true
                partial.firstReady = Loop.monotonicNanoseconds
                stop.start(after: durationNs / 1_000_000) { finish() }
                if let interval = perConnectionInterval {
                    for (index, (_, state)) in clients.enumerated() {
                        // Stagger the connections so the total rate is smooth, not bursts of N.
                        let offset = UInt64(index) * interval / UInt64(max(1, clients.count))
                        state.schedule = OpenLoopSchedule(start: partial.firstReady + offset, interval: interval)
                    }
                    tick.start(after: 1, repeat: 1) {
                        let now = Loop.monotonicNanoseconds
                        for (client, state) in clients where client.phase == .ready {
                            state.schedule.forEachDue(now: now) { intended in
                                state.sentAt.append(intended)
                                client.send(shared.bytes)
                            }
                        }
                    }
                } else {
                    for (client, state) in clients {
                        state.sentAt.append(Loop.monotonicNanoseconds)
                        client.send(shared.bytes)
                    }
                }
            }
            var ready = 0
            for _ in 0..<perThread[index] {
                guard let client = try? BenchClient(loop: loop, target: target, address: address) else {
                    partial.errors["setup", default: 0] += 1
                    continue
                }
                let state = State()
                clients.append((client, state))
                client.onReady = { _ in
                    ready += 1
                    if ready == clients.count { begin() }
                }
                client.onData = { client, n in
                    state.received += n
                    while state.received >= messageSize && state.head < state.sentAt.count {
                        state.received -= messageSize
                        let now = Loop.monotonicNanoseconds
                        if measuring {
                            _ = partial.histogram.record((now - state.sentAt[state.head]) / 1000)
                            partial.count += 1
                        }
                        state.head += 1
                        if state.head > 4096 {
                            state.sentAt.removeFirst(state.head)
                            state.head = 0
                        }
                        if perConnectionInterval == nil && measuring {
                            state.sentAt.append(now)
                            client.send(shared.bytes)
                        }
                    }
                }
                client.onClosed = { _, error in
                    if let error, measuring { partial.errors[error, default: 0] += 1 }
                    if !measuring && partial.firstReady == .max {
                        ready += 0
                        if clients.allSatisfy({ $0.0.phase == .closed }) {
                            tick.close()
                            stop.close()
                        }
                    }
                }
            }
            loop.run()
            if partial.end == 0 { partial.end = Loop.monotonicNanoseconds }
            return partial
        }
        let merged = merge(partials)
        let elapsed = merged.firstReady == .max ? 0 : Double(merged.end - merged.firstReady) / 1e9
        var result = BenchResult(workload: "latency", target: target.description)
        result.parameters = [("connections", "\(connections)"), ("threads", "\(perThread.count)"),
                             ("message_size", "\(messageSize)"), ("duration_s", "\(durationSeconds)"),
                             ("rate", rate.map { "\($0)" } ?? "closed-loop")]
        result.values = [("requests", Double(merged.count)),
                         ("requests_per_second", elapsed > 0 ? Double(merged.count) / elapsed : 0)]
        result.latency = merged.histogram
        result.errors = merged.errors
        result.elapsedSeconds = elapsed
        return result
    }

    // MARK: idle connections

    /// Opens `connections` and holds them idle; reports the target's memory growth per connection.
    public static func idle(target: BenchTarget, connections: Int, pid: Int32, settleSeconds: Double = 1) throws -> BenchResult {
        let address = try resolve(target)
        let rssBefore = ProcessStats.rssKiB(pid)
        let pssBefore = ProcessStats.pssKiB(pid)
        let progress = Progress()
        ignoreSIGPIPE()
        let thread = LoopThread(name: "bench-idle") {
            guard let loop = try? Loop() else { return }
            var clients: [BenchClient] = []
            var wakeup: AsyncWakeup?
            wakeup = try? AsyncWakeup(loop: loop) {
                clients.forEach { $0.close(sendCloseNotify: false) }
                wakeup?.close()
            }
            progress.setStopper(wakeup?.sender)
            // Open in waves so the target's accept queue is not overrun.
            var opened = 0
            let opener = Timer(loop: loop)
            opener.start(after: 0, repeat: 10) {
                let wave = min(200, connections - opened)
                for _ in 0..<wave {
                    guard let client = try? BenchClient(loop: loop, target: target, address: address) else {
                        progress.failed()
                        continue
                    }
                    client.onReady = { _ in progress.ready() }
                    client.onClosed = { _, error in if error != nil { progress.failed() } }
                    clients.append(client)
                }
                opened += wave
                if opened >= connections { opener.close() }
            }
            loop.run()
        }
        let started = Loop.monotonicNanoseconds
        while progress.settled < connections && Loop.monotonicNanoseconds - started < 60_000_000_000 {
            usleepSeconds(0.05)
        }
        usleepSeconds(settleSeconds)
        let rssAfter = ProcessStats.rssKiB(pid)
        let pssAfter = ProcessStats.pssKiB(pid)
        let ready = progress.readyCount
        progress.stop()
        thread.join()
        var result = BenchResult(workload: "idle", target: target.description)
        result.parameters = [("connections", "\(connections)"), ("pid", "\(pid)"), ("settle_s", "\(settleSeconds)")]
        result.values = [("connections_open", Double(ready)),
                         ("rss_kb_before", Double(rssBefore)), ("rss_kb_after", Double(rssAfter)),
                         ("rss_kb_per_connection", ready > 0 ? Double(rssAfter - rssBefore) / Double(ready) : 0)]
        if let before = pssBefore, let after = pssAfter {
            result.values.append(("pss_kb_per_connection", ready > 0 ? Double(after - before) / Double(ready) : 0))
        }
        result.errors = progress.failures > 0 ? ["connect-or-handshake": progress.failures] : [:]
        result.elapsedSeconds = Double(Loop.monotonicNanoseconds - started) / 1e9
        return result
    }

    // MARK: helpers

    static func split(_ total: Int, _ threads: Int) -> [Int] {
        let count = max(1, min(threads, total))
        return (0..<count).map { total / count + ($0 < total % count ? 1 : 0) }
    }

    static func merge(_ partials: [Partial]) -> Partial {
        var merged = Partial()
        for partial in partials {
            merged.count += partial.count
            merged.resumed += partial.resumed
            merged.bytesUp += partial.bytesUp
            merged.bytesUpByDeadline += partial.bytesUpByDeadline
            merged.bytesDown += partial.bytesDown
            merged.histogram.add(partial.histogram)
            merged.errors.merge(partial.errors, uniquingKeysWith: +)
            merged.firstReady = min(merged.firstReady, partial.firstReady)
            merged.end = max(merged.end, partial.end)
        }
        return merged
    }
}

/// Fixed-rate send times for open-loop load: every request has an *intended* time, independent of when
/// replies arrive, so latency measured from it includes any queueing a stall causes (no coordinated omission).
struct OpenLoopSchedule {
    private(set) var next: UInt64
    let interval: UInt64

    init(start: UInt64, interval: UInt64) {
        self.next = start
        self.interval = max(1, interval)
    }

    /// Calls `body` with each intended send time that is due by `now`, in order, and advances.
    mutating func forEachDue(now: UInt64, _ body: (UInt64) -> Void) {
        while next <= now {
            body(next)
            next += interval
        }
    }
}

/// Read-only bytes shared by the load threads (immutable for the whole run).
struct SendableBytes: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
}

/// Counters the idle workload's loop thread reports to the measuring thread.
final class Progress: Sendable {
    private let state = Mutex<(ready: Int, failed: Int, stopper: AsyncWakeup.Sender?)>((0, 0, nil))
    func ready() { state.withLock { $0.ready += 1 } }
    func failed() { state.withLock { $0.failed += 1 } }
    func setStopper(_ sender: AsyncWakeup.Sender?) { state.withLock { $0.stopper = sender } }
    func stop() { state.withLock { $0.stopper?.send(); $0.stopper = nil } }
    var settled: Int { state.withLock { $0.ready + $0.failed } }
    var readyCount: Int { state.withLock { $0.ready } }
    var failures: Int { state.withLock { $0.failed } }
}

func usleepSeconds(_ seconds: Double) {
    EventLoop.sleepSeconds(seconds)
}
