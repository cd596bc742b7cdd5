import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

/// The ciphertext between one `SSL` and its socket, behind a custom BIO (OpenSSL never sees the socket).
///
/// Why not OpenSSL's memory BIOs: each copies every byte once more (the socket's bytes into the BIO, and the
/// records out of it), zero-fills what it grows (`BUF_MEM_grow_clean`), and keeps its largest size for the
/// connection's whole life. Here:
/// - input is read by OpenSSL straight from the caller's buffer while `TLSSession.receiving` runs; only a
///   partial record left at the end is copied, into a stash that is freed once drained;
/// - output is appended to one growable buffer the caller reads (or writes to the socket) in place and then
///   consumes; it is freed when empty and the connection goes quiet (`releaseIdleMemory`).
///
/// Ownership: owned by its `TLSSession`; the BIO's data pointer refers to it *unretained*, which is safe
/// because the BIO dies with the session's `SSL` (freed in the session's `deinit`, before this object).
/// - Warning: confined to its session's thread.
final class CiphertextBIO {
    // The stored properties are touched several times per record; their accesses never overlap (one thread,
    // no re-entrancy), so dynamic exclusivity checks are switched off for them.

    /// Bytes handed in by `TLSSession.receiving`, valid only during that call.
    @exclusivity(unchecked) private var lent: UnsafeRawBufferPointer = .init(start: nil, count: 0)
    @exclusivity(unchecked) private var lentConsumed = 0
    /// Received bytes OpenSSL has not read yet, kept past the call that lent them.
    @exclusivity(unchecked) private var stash = ByteQueue()
    /// Records OpenSSL wrote, not yet sent.
    @exclusivity(unchecked) private var output = ByteQueue()

    /// Received ciphertext not yet consumed by OpenSSL.
    var inputCount: Int { stash.count + lent.count - lentConsumed }
    /// Ciphertext waiting to be sent.
    var outputCount: Int { output.count }
    var pendingOutput: UnsafeRawBufferPointer { output.bytes }

    deinit {
        stash.release()
        output.release()
    }

    // MARK: the caller's side

    /// Lends `bytes` to OpenSSL for the duration of `body`; whatever it did not read is stashed afterwards.
    func lending<R, E: Error>(_ bytes: UnsafeRawBufferPointer, _ body: () throws(E) -> R) throws(E) -> R {
        precondition(lent.baseAddress == nil, "nested TLSSession.receiving")
        lent = bytes
        lentConsumed = 0
        defer {
            if lentConsumed < lent.count {
                stash.append(UnsafeRawBufferPointer(rebasing: lent[lentConsumed...]))
            }
            lent = .init(start: nil, count: 0)
            lentConsumed = 0
        }
        return try body()
    }

    /// Copies `bytes` into the stash (for callers that cannot scope their buffer).
    func append(_ bytes: UnsafeRawBufferPointer) {
        stash.append(bytes)
    }

    func consumeOutput(_ count: Int) {
        output.consume(count)
    }

    /// Frees both buffers if they are empty; returns false if anything is still held.
    func releaseIdleMemory() -> Bool {
        guard stash.count == 0, output.count == 0 else { return false }
        stash.release()
        output.release()
        return true
    }

    // MARK: OpenSSL's side

    fileprivate func read(into destination: UnsafeMutableRawPointer, max: Int) -> Int {
        var copied = stash.take(into: destination, max: max)
        let fromLent = min(max - copied, lent.count - lentConsumed)
        if fromLent > 0 {
            (destination + copied).copyMemory(from: lent.baseAddress! + lentConsumed, byteCount: fromLent)
            lentConsumed += fromLent
            copied += fromLent
        }
        return copied
    }

    fileprivate func write(_ source: UnsafeRawPointer, count: Int) {
        output.append(UnsafeRawBufferPointer(start: source, count: count))
    }

    // MARK: the BIO

    /// Makes a BIO (one reference, for `SSL_set_bio`) reading and writing through `io`.
    static func makeBIO(for io: CiphertextBIO) -> OpaquePointer? {
        guard let method = method, let bio = BIO_new(method) else { return nil }
        BIO_set_data(bio, Unmanaged.passUnretained(io).toOpaque())
        BIO_set_init(bio, 1)
        return bio
    }

    private static func io(_ bio: OpaquePointer?) -> CiphertextBIO? {
        guard let bio, let data = BIO_get_data(bio) else { return nil }
        return Unmanaged<CiphertextBIO>.fromOpaque(data).takeUnretainedValue()
    }

    /// One method table for the process (OpenSSL keeps the pointer; it is never freed).
    nonisolated(unsafe) private static let method: OpaquePointer? = {
        guard let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "portcullis ciphertext") else {
            return nil
        }
        BIO_meth_set_read_ex(method) { bio, buffer, size, readBytes in
            BIO_clear_flags(bio, Int32(BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY))
            guard let io = CiphertextBIO.io(bio), let buffer, size > 0 else { return 0 }
            let n = io.read(into: UnsafeMutableRawPointer(buffer), max: size)
            readBytes?.pointee = n
            guard n > 0 else {
                // Nothing yet: "try again later", as a non-blocking socket would say.
                BIO_set_flags(bio, Int32(BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY))
                return 0
            }
            return 1
        }
        BIO_meth_set_write_ex(method) { bio, buffer, size, written in
            BIO_clear_flags(bio, Int32(BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY))
            guard let io = CiphertextBIO.io(bio), let buffer else { return 0 }
            io.write(UnsafeRawPointer(buffer), count: size)
            written?.pointee = size
            return 1
        }
        BIO_meth_set_ctrl(method) { bio, command, _, _ in
            switch command {
            case BIO_CTRL_FLUSH: return 1  // writes are complete when made (libssl treats 0 as an error)
            case BIO_CTRL_PENDING: return CiphertextBIO.io(bio).map { $0.inputCount } ?? 0
            case BIO_CTRL_WPENDING: return CiphertextBIO.io(bio).map { $0.outputCount } ?? 0
            default: return 0
            }
        }
        return method
    }()
}

/// A FIFO of bytes in one malloc'd block: appended at the end, consumed from the front, compacted when the
/// front gap is in the way, freed by `release`.
struct ByteQueue {
    private var storage: UnsafeMutableRawPointer?
    private var capacity = 0
    private var start = 0
    private var end = 0

    var count: Int { end - start }

    var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.map { UnsafeRawPointer($0 + start) }, count: end - start)
    }

    mutating func append(_ source: UnsafeRawBufferPointer) {
        guard let base = source.baseAddress, !source.isEmpty else { return }
        if end + source.count > capacity {
            if start > 0 && count + source.count <= capacity {
                // Room at the front: move the live bytes down instead of growing.
                storage!.copyMemory(from: storage! + start, byteCount: count)
            } else {
                let needed = count + source.count
                let grown = Swift.max(needed, capacity * 2, 4096)
                let fresh = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 16)
                if let storage {
                    fresh.copyMemory(from: storage + start, byteCount: count)
                    storage.deallocate()
                }
                storage = fresh
                capacity = grown
            }
            end -= start
            start = 0
        }
        (storage! + end).copyMemory(from: base, byteCount: source.count)
        end += source.count
    }

    /// Moves up to `max` bytes from the front into `destination`; returns the count.
    mutating func take(into destination: UnsafeMutableRawPointer, max: Int) -> Int {
        let n = Swift.min(max, count)
        guard n > 0 else { return 0 }
        destination.copyMemory(from: storage! + start, byteCount: n)
        consume(n)
        return n
    }

    mutating func consume(_ n: Int) {
        precondition(n >= 0 && n <= count, "consumed \(n) of \(count) bytes")
        start += n
        if start == end {
            start = 0
            end = 0
        }
    }

    mutating func release() {
        storage?.deallocate()
        storage = nil
        capacity = 0
        start = 0
        end = 0
    }
}
