public import EventLoop
public import TLS

/// Bytes a stream read: borrowed (valid only during the callback: they live in the loop's read buffer) or
/// owned (a pooled buffer the receiver now owns: pass it on to `write`, which consumes it, or give it back).
public enum StreamChunk {
    case borrowed(UnsafeRawBufferPointer)
    case owned(WriteBuffer, count: Int)

    public var count: Int {
        switch self {
        case .borrowed(let bytes): return bytes.count
        case .owned(_, let count): return count
        }
    }

    public var bytes: UnsafeRawBufferPointer {
        switch self {
        case .borrowed(let bytes): return bytes
        case .owned(let buffer, let count): return UnsafeRawBufferPointer(rebasing: buffer.bytes[0..<count])
        }
    }
}

/// Why a stream failed. Before the stream opened, `connect` and `handshake` say which step; after, the
/// others.
public enum StreamFailure: Error, Sendable, CustomStringConvertible {
    /// The TCP (or Unix) connect of a dialled stream.
    case connect(UVError)
    /// The TLS handshake, including everything that ends a connection before it (the peer closing or
    /// resetting, a refusal, a timeout the owner reports).
    case handshake(TLSFailure)
    case read(UVError)
    case write(UVError)
    /// A TLS error after the handshake (a bad record, an alert).
    case tls(TLSFailure)

    public var description: String {
        switch self {
        case .connect(let error): return "connect: \(error.message)"
        case .handshake(let failure): return "handshake: \(failure)"
        case .read(let error): return "read error: \(error.message)"
        case .write(let error): return "write error: \(error.message)"
        case .tls(let failure): return "TLS error: \(failure.detail)"
        }
    }
}

/// What a stream tells its owner, on the loop's thread.
public protocol ByteStreamObserver: AnyObject {
    /// A dialled stream's TCP (or Unix) connection is up; a TLS stream starts its handshake now.
    func streamDidConnect(_ stream: any ByteStream)
    /// Ready for data: connected, and for TLS the handshake is complete and the peer verified.
    func streamDidOpen(_ stream: any ByteStream)
    /// Plaintext read (only while reading is started).
    func stream(_ stream: any ByteStream, didRead chunk: StreamChunk)
    /// The peer will send nothing more (TCP FIN, or TLS close_notify), after everything it sent was read.
    func streamDidReachEnd(_ stream: any ByteStream)
    /// Queued bytes went to the kernel: `queuedBytes` fell.
    func streamDidFlush(_ stream: any ByteStream)
    /// Our end of the stream is shut (everything queued, and for TLS close_notify, went out before the FIN).
    func streamDidShutDown(_ stream: any ByteStream)
    func stream(_ stream: any ByteStream, didFail failure: StreamFailure)
    /// Closed and freed; nothing follows.
    func streamDidClose(_ stream: any ByteStream)
}

/// A byte stream over a socket: plaintext (`PlainStream`) or TLS (`TLSStream`), with the same life and the
/// same backpressure signal, so a relay moves bytes between two of them without knowing which is which.
///
/// Backpressure: `write` never refuses bytes; what the kernel does not take at once is queued and counted
/// in `queuedBytes`, and `streamDidFlush` reports when it shrinks. The owner stops feeding a stream whose
/// queue is too long.
/// - Warning: confined to its loop's thread.
public protocol ByteStream: AnyObject {
    /// Who hears this stream's events. Not retained: the observer must outlive the stream's callbacks — it owns
    /// the stream (a relay), or keeps itself alive until `streamDidClose`, the last one (a bench client).
    var observer: (any ByteStreamObserver)? { get set }
    /// Bytes written and not yet handed to the kernel (for TLS: ciphertext, including handshake records).
    var queuedBytes: Int { get }
    /// Accepted plain stream: reports open at once. Accepted TLS stream: runs the handshake. Dialled stream:
    /// connects (then handshakes, for TLS).
    func open()
    func startReading()
    func stopReading()
    /// Sends the chunk (consuming an owned buffer); bytes the kernel does not take at once are queued.
    func write(_ chunk: StreamChunk) throws(StreamFailure)
    /// Gives back a chunk this stream handed out and the owner will not pass on (an owned buffer returns to
    /// its pool; a borrowed one needs nothing).
    func discard(_ chunk: StreamChunk)
    /// No more writes: once queued bytes are out (TLS: after close_notify, when the handshake completed, or a
    /// pending alert), the FIN follows; `streamDidShutDown` reports it. Reading may go on.
    func shutdownOutput()
    /// Closes now; queued bytes are dropped.
    func close()
}
