import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// A joinable OS thread, for running one loop each.
public final class LoopThread: @unchecked Sendable {
    private var thread = pthread_t()

    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Starts `body` on a new thread.
    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        // +1 handed to the new thread, which takes it back (and so frees the Body) when `body` returns.
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        let rc = pthread_create(&thread, nil, { context in
            let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
            body.run()
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        _ = pc_thread_set_name(thread, String(name.prefix(15)))
    }

    public func join() {
        pthread_join(thread, nil)
    }
}

/// Gives up the CPU briefly (used while waiting for another thread to finish setting up).
public func yieldThread() {
    sched_yield()
}

/// Blocks the calling thread (the control thread of a benchmark; never a loop thread).
public func sleepSeconds(_ seconds: Double) {
    usleep(UInt32(max(0, seconds) * 1_000_000))
}
