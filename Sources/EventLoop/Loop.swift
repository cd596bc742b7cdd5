import CLibUV
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One libuv event loop and the per-loop resources its streams share.
///
/// - Warning: a loop and everything created on it are confined to the thread that runs it. Debug builds check
///   this: while `run`/`runOnce` executes, handle operations documented "loop thread only" assert that they are
///   called on that thread (`isOnLoopThread`).
public final class Loop {
    /// Freed in `deinit` (only once libuv has closed the loop). `raw.pointee.data` points back at this object,
    /// unretained, so a handle can find its `Loop` (`Loop.owning`).
    let raw: UnsafeMutablePointer<uv_loop_t>
    /// The single receive buffer every read on this loop lands in; reads are consumed synchronously.
    let readBuffer: UnsafeMutableRawBufferPointer
    /// Fixed-size write buffers recycled through a free list, so the data path never mallocs per chunk.
    public let writeBuffers: BufferPool

    public static let readBufferSize = 64 * 1024

#if DEBUG
    /// The thread inside `run`/`runOnce`, as a bit pattern (0: the loop is not running). Debug builds only.
    private let runningThread = Atomic<UInt>(0)
#endif

    public init() throws(UVError) {
        raw = .allocate(capacity: 1)
        let rc = uv_loop_init(raw)
        if rc != 0 {
            raw.deallocate()
            throw UVError(code: rc, operation: "uv_loop_init")
        }
        readBuffer = .allocate(byteCount: Loop.readBufferSize, alignment: 16)
        // Room for 64 KiB of plaintext as TLS records (4 records of 16 KiB + 22 bytes overhead each).
        writeBuffers = BufferPool(capacity: Loop.readBufferSize + 1024)
        raw.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    /// The `Loop` of a libuv loop made by `init` (through the unretained back pointer in `data`).
    static func owning(_ raw: UnsafeMutablePointer<uv_loop_t>) -> Loop {
        Unmanaged<Loop>.fromOpaque(raw.pointee.data).takeUnretainedValue()
    }

    /// The owner closes every handle (and lets `run` return) before dropping the loop: handle callbacks
    /// reach the loop through unowned references, so it must not be torn down under them.
    deinit {
        let rc = uv_loop_close(raw)
        assert(rc == 0, "a Loop was dropped with open handles (\(rc)): close them before releasing the loop")
        guard rc == 0 else {
            // Release build: leak rather than free memory libuv still points into.
            return
        }
        raw.deallocate()
        readBuffer.deallocate()
    }

    /// Runs until no active handles remain or `stop()` is called.
    public func run() {
        running { uv_run(raw, UV_RUN_DEFAULT) }
    }

    /// Runs one iteration without blocking.
    public func runOnce() {
        running { uv_run(raw, UV_RUN_NOWAIT) }
    }

    /// Debug builds: records the calling thread as the loop's thread for the duration of `body`.
    @inline(__always)
    private func running(_ body: () -> Int32) {
#if DEBUG
        let previous = runningThread.exchange(Loop.currentThread, ordering: .relaxed)
        defer { runningThread.store(previous, ordering: .relaxed) }
#endif
        _ = body()
    }

    /// Whether the caller may use this loop's handles now: it is the thread running the loop, or the loop is not
    /// running (then its owner may set it up, or tear it down after `run` returned, from any one thread). Debug
    /// builds only: release builds record nothing and always answer true. For `assert`s.
    public var isOnLoopThread: Bool {
#if DEBUG
        let running = runningThread.load(ordering: .relaxed)
        return running == 0 || running == Loop.currentThread
#else
        return true
#endif
    }

#if DEBUG
    private static var currentThread: UInt { UInt(pthread_self()) }  // pthread_t is an integer on Linux
#endif

    public func stop() {
        uv_stop(raw)
    }

    /// The loop's cached clock in milliseconds.
    public var now: UInt64 { uv_now(raw) }

    /// A monotonic clock in nanoseconds (not cached).
    public static var monotonicNanoseconds: UInt64 { uv_hrtime() }
}

/// A fixed-capacity buffer from a `BufferPool`, with room in front for the libuv write request.
///
/// Layout of one allocation: `[uv_write_t | uv_buf_t | payload…]`; the write callback finds the whole
/// block from the request pointer and returns it to the pool, so a write costs no allocation.
public struct WriteBuffer {
    let block: UnsafeMutableRawPointer
    /// The payload area.
    public let bytes: UnsafeMutableRawBufferPointer

    static let headerSize: Int = {
        let raw = MemoryLayout<uv_write_t>.size + MemoryLayout<uv_buf_t>.size
        return (raw + 15) & ~15
    }()

    init(block: UnsafeMutableRawPointer, capacity: Int) {
        self.block = block
        self.bytes = UnsafeMutableRawBufferPointer(start: block + WriteBuffer.headerSize, count: capacity)
    }

    var request: UnsafeMutablePointer<uv_write_t> { block.assumingMemoryBound(to: uv_write_t.self) }
    var uvBuffer: UnsafeMutablePointer<uv_buf_t> {
        (block + MemoryLayout<uv_write_t>.size).assumingMemoryBound(to: uv_buf_t.self)
    }
}

/// A per-loop free list of `WriteBuffer`s of one capacity.
///
/// - Warning: call only on the owning loop's thread.
public final class BufferPool {
    public let capacity: Int
    // Taken and given back several times per request on one thread: no dynamic exclusivity checks.
    @exclusivity(unchecked) private var free: [UnsafeMutableRawPointer] = []
    /// Buffers kept for reuse; beyond this, returned buffers are released (bounds idle memory).
    private let maxCached: Int
    /// The fewest buffers cached at any moment since the last `releaseUnused()`: that many sat unused the
    /// whole time.
    @exclusivity(unchecked) private var lowestCached = 0

    init(capacity: Int, maxCached: Int = 256) {
        self.capacity = capacity
        self.maxCached = maxCached
        free.reserveCapacity(maxCached)
    }

    deinit {
        for block in free { block.deallocate() }
    }

    public func take() -> WriteBuffer {
        let block = free.popLast()
            ?? UnsafeMutableRawPointer.allocate(byteCount: WriteBuffer.headerSize + capacity, alignment: 16)
        lowestCached = min(lowestCached, free.count)
        return WriteBuffer(block: block, capacity: capacity)
    }

    public func give(_ buffer: WriteBuffer) {
        if free.count < maxCached {
            free.append(buffer.block)
        } else {
            buffer.block.deallocate()
        }
    }

    /// Frees the buffers that stayed in the cache since the previous call (none was needed in that interval),
    /// so memory taken by one burst is given back once traffic calms down, while a steady load keeps what it
    /// uses. Returns how many were freed.
    @discardableResult
    public func releaseUnused() -> Int {
        let unused = lowestCached
        for block in free.suffix(unused) { block.deallocate() }
        free.removeLast(unused)
        lowestCached = free.count
        return unused
    }

    /// Buffers currently cached (for tests and metrics).
    public var cachedCount: Int { free.count }
}
