// A correct program that ThreadSanitizer reports on Linux: two threads increment a counter guarded by Swift's
// Synchronization.Mutex. The final count is always exact, yet TSan reports "Swift access race" / "data race"
// inside the `withLock` bodies once the threads contend (see docs/SANITIZERS.md):
//
//     swiftc -sanitize=thread -O tests/tsan/mutex_contention.swift -o /tmp/mutex_contention
//     TSAN_OPTIONS=exitcode=0 /tmp/mutex_contention
import Foundation
import Synchronization

final class Counter: Sendable {
    let state = Mutex<(count: Int, flips: Int)>((0, 0))
}

let counter = Counter()
let perThread = 300_000
let threads = (0..<2).map { _ in
    Thread {
        for _ in 0..<perThread { counter.state.withLock { $0.count += 1; $0.flips &+= 1 } }
    }
}
threads.forEach { $0.start() }
while counter.state.withLock({ $0.count }) < 2 * perThread { usleep(1000) }
let final = counter.state.withLock { $0.count }
print("count \(final) (expected \(2 * perThread))")
exit(final == 2 * perThread ? 0 : 1)
