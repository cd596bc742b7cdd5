import EventLoop
import Streams
import TLS

/// One connection as its listener sees it: the `Relay` that moves its bytes, plus what the listener adds —
/// the generation it was accepted under, its counters, the target to dial, the PROXY v2 header, the remote's
/// session cache (client mode), and the facts its audit line reports. It is the relay's host: the relay
/// knows nothing of listeners, metrics or sockets.
///
/// Ownership: the worker keeps the connection (which owns the relay) in its table until `relayDidClose`.
/// - Warning: confined to its worker's loop thread.
final class Connection: RelayHost {
    unowned(unsafe) let worker: Worker  // the worker outlives every connection in its table
    /// The worker's loop, read for every chunk (`now`): unretained, as the worker is.
    private unowned(unsafe) let loop: Loop
    let generation: Generation
    let stats: ListenerStats
    /// The client's address, read at accept: it may be gone by the time the connection ends.
    let peerAddress: String
    /// Server mode with `proxy-protocol: v2`: the client's address and the one it connected to, read at accept.
    private let proxyAddresses: ProxyProtocolHeader.Addresses?
    /// A Unix client's process credentials (SO_PEERCRED), for the audit line.
    let unixPeer: StreamSocket.UnixPeer?
    /// Client mode: where this worker keeps the remote's latest session; `nil` once this connection stored one.
    private let sessionCache: ClientSessionCache?
    private(set) var relay: Relay!

    var id: UInt64 { relay.id }
    var settings: ListenerRuntimeSettings { generation.settings }
    var session: TLSSession? { relay.tlsSession }

    /// Wraps an accepted socket in the stream for its mode and builds the relay (not started).
    init(id: UInt64, worker: Worker, generation: Generation, stats: ListenerStats, sessionCache: ClientSessionCache?,
         accepted socket: StreamSocket) throws {
        self.worker = worker
        loop = worker.loop
        self.generation = generation
        self.stats = stats
        self.sessionCache = sessionCache
        peerAddress = socket.peerAddress
        unixPeer = socket.unixPeer
        if !generation.settings.proxyProtocolV2 {
            proxyAddresses = nil
        } else if let remote = socket.remoteAddress, let local = socket.localAddress {
            proxyAddresses = .inet(source: .init(ip: remote.ipBytes, port: remote.port), destination: .init(ip: local.ipBytes, port: local.port))
        } else if let peer = socket.unixPeer {
            // Unix clients are unnamed sockets: the source path stays empty, as haproxy sends it.
            proxyAddresses = .unix(source: "", destination: peer.path)
        } else {
            proxyAddresses = nil
        }
        let settings = generation.settings
        let timeouts = Relay.Timeouts(handshakeMs: settings.handshakeTimeoutMs, connectMs: settings.connectTimeoutMs,
                                      idleMs: settings.idleTimeoutMs, closeMs: settings.closeTimeoutMs,
                                      maxLifetimeMs: settings.maxLifetimeMs)
        switch settings.mode {
        case .server:
            let stream = try TLSStream(accepted: socket, context: generation.tls)
            relay = Relay(id: id, mode: .server, timeouts: timeouts, accepted: stream, host: self)
            relay.tlsSession = stream.session
        case .client:
            relay = Relay(id: id, mode: .client, timeouts: timeouts, accepted: PlainStream(accepted: socket), host: self)
        }
    }

    // MARK: RelayHost

    var now: UInt64 { loop.now }
    var preciseNow: UInt64 { Loop.monotonicNanoseconds }

    func makeTimer() -> any RelayTimer { Timer(loop: loop) }

    func dialTarget(for relay: Relay) throws -> any ByteStream {
        let endpoint: StreamEndpoint
        switch settings.target {
        case .tcp(let address): endpoint = .tcp(address)
        case .unix(let path): endpoint = .unix(path)
        }
        switch settings.mode {
        case .server:
            return try PlainStream(loop: loop, dialling: endpoint)
        case .client:
            let stream = try TLSStream(loop: loop, dialling: endpoint, context: generation.tls,
                                       sessionKeeper: sessionCache.map { ClientSessionKeeper(cache: $0, generation: generation.number) })
            relay.tlsSession = stream.session
            return stream
        }
    }

    func preamble(for relay: Relay) -> Relay.Preamble {
        guard settings.proxyProtocolV2 else { return .none }
        guard let addresses = proxyAddresses else {
            return .failed("PROXY header: the client's address could not be read")
        }
        let identity = session?.peerIdentity
        let facts = ProxyProtocolHeader.TLSFacts(
            version: session?.protocolVersion ?? "", cipher: session?.cipherName ?? "", resumed: session?.isResumed ?? false,
            commonName: identity?.commonName, peerURI: identity.flatMap { $0.spiffeID ?? $0.uris.first },
            ruleName: session?.decision?.ruleName, serverName: session?.serverNameIndication, connectionID: relay.id)
        guard let header = ProxyProtocolHeader.encode(addresses: addresses, tls: facts) else {
            return .failed("PROXY header: the client's identity is too long for a PROXY v2 header")
        }
        return .bytes(header)
    }

    /// Server mode: counted among the worker's handshakes in progress until this one ends (`Worker.admit`).
    var inHandshakeCount = false
    /// The client's address as a key for the per-source limits (only when one is on).
    var sourceKey: [UInt8]?

    func relayDidCompleteHandshake(_ relay: Relay) {
        worker.handshakeEnded(self)
        stats.handshakeDuration.recordNanoseconds(Int64(truncatingIfNeeded: preciseNow &- relay.handshakeStartedAt))
        let resumed = session?.isResumed ?? false
        let rule = admission?.metricsRule
        stats.count { counts in
            if resumed { counts.handshakesResumed += 1 } else { counts.handshakesFull += 1 }
            if let rule { counts.allowedByRule[rule, default: 0] += 1 }
        }
    }

    func relay(_ relay: Relay, didFailHandshake failure: TLSFailure) {
        worker.handshakeEnded(self)
        let denied = session?.decision.map { !$0.isAllowed } ?? false
        stats.count { counts in
            counts.failures[failure.kind.index] += 1
            if denied { counts.denied += 1 }
        }
    }

    func relayDidFailToReachTarget(_ relay: Relay) {
        stats.count { $0.targetConnectFailures += 1 }
    }

    /// Bytes already added to the listener's counters.
    private var reportedBytes = (up: 0, down: 0)
    /// The record buffers were given back after a quiet sweep; activity since makes OpenSSL take new ones.
    var buffersReleased = false

    /// Adds the bytes relayed since the previous call to the listener's counters (from the worker's sweep
    /// and at the close, rather than an atomic add per chunk).
    func reportBytes() {
        let up = relay.bytesUp, down = relay.bytesDown
        if up != reportedBytes.up { stats.addBytes(UInt64(up &- reportedBytes.up), up: true) }
        if down != reportedBytes.down { stats.addBytes(UInt64(down &- reportedBytes.down), up: false) }
        reportedBytes = (up, down)
    }

    func relayDidClose(_ relay: Relay) {
        worker.handshakeEnded(self)
        worker.connectionDidClose(self)
    }

    // MARK: facts for the audit line and metrics

    /// What admitted the peer: a policy rule, or (client mode without identity rules) the server name it was
    /// verified against.
    enum Admission {
        case rule(String)
        case serverName(String)

        /// For the audit line: the rule, or `server-name=<name>`.
        var auditRule: String {
            switch self {
            case .rule(let name): return name
            case .serverName(let name): return "server-name=" + name
            }
        }

        /// For metrics: the rule, or `server-name` (the name itself would add a label value per target).
        var metricsRule: String {
            switch self {
            case .rule(let name): return name
            case .serverName: return "server-name"
            }
        }
    }

    var admission: Admission? {
        let configuration = generation.tls.configuration
        if settings.mode == .client, configuration.verifyServerName, let name = configuration.serverName {
            return .serverName(name)
        }
        return session?.decision?.ruleName.map(Admission.rule)
    }
}

/// Client mode: a connection's view of its worker's `ClientSessionCache`, bound to the generation that
/// verifies the server (a session from another generation is not offered).
private final class ClientSessionKeeper: SessionKeeper {
    let cache: ClientSessionCache
    let generation: UInt64

    init(cache: ClientSessionCache, generation: UInt64) {
        self.cache = cache
        self.generation = generation
    }

    func sessionToOffer() -> ResumableSession? { cache.session(for: generation) }
    func keep(_ session: ResumableSession) { cache.store(session, generation: generation) }
}
