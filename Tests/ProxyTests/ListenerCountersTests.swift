import Synchronization
import Testing
@testable import Proxy

/// A counter a `@Sendable` waker can capture.
private final class Tally: Sendable {
    private let atomic = Atomic<Int>(0)
    func add() { atomic.add(1, ordering: .sequentiallyConsistent) }
    var count: Int { atomic.load(ordering: .sequentiallyConsistent) }
}

/// `max-connections` as a semaphore: slots, holders, and the wake that a freed slot sends them.
@Suite struct ListenerCountersTests {
    @Test func slotsStopAtTheLimitAndAReleaseWakesEveryHolderOnce() {
        let counters = ListenerCounters()
        #expect(counters.acquire(limit: 2) && counters.acquire(limit: 2))
        #expect(!counters.acquire(limit: 2))
        let wakes = Tally()
        counters.hold(worker: 0) { wakes.add() }
        counters.hold(worker: 1) { wakes.add() }
        #expect(counters.holdingWorkers == 2)
        counters.release()
        #expect(wakes.count == 2 && counters.holdingWorkers == 0)
        counters.release()
        #expect(wakes.count == 2, "a holder is woken once per hold")
        #expect(counters.active.load(ordering: .relaxed) == 0)
    }

    @Test func aWorkerThatStopsHoldingIsNotWoken() {
        let counters = ListenerCounters()
        #expect(counters.acquire(limit: 1))
        let woken = Tally()
        counters.hold(worker: 3) { woken.add() }
        counters.stopHolding(worker: 3)
        counters.release()
        #expect(woken.count == 0)
    }

    @Test func noLimitAlwaysAdmits() {
        let counters = ListenerCounters()
        for _ in 0..<100 { #expect(counters.acquire(limit: 0)) }
        #expect(counters.active.load(ordering: .relaxed) == 100)
    }

    /// Two threads race the last close against the pause: the holder must always be woken or find the slot.
    @Test func theLastCloseAndAPauseNeverLoseTheWakeup() async {
        for _ in 0..<2_000 {
            let counters = ListenerCounters()
            #expect(counters.acquire(limit: 1))
            let woken = Tally()
            async let closing: Void = counters.release()
            async let pausing: Bool = {
                if counters.acquire(limit: 1) { return true }
                counters.hold(worker: 0) { woken.add() }
                if counters.acquire(limit: 1) {
                    counters.stopHolding(worker: 0)
                    return true
                }
                return false
            }()
            _ = await closing
            let gotSlot = await pausing
            #expect(gotSlot || woken.count == 1, "a held worker was never woken")
        }
    }
}
