import EventLoop

/// Everything the control thread keeps about one listener, under its current name: a rename moves this one
/// value, a removal drops it.
struct ListenerRecord {
    /// The generation new connections get (replaced on every reload).
    var generation: Generation
    /// The runtime's own descriptors of the listening sockets (workers hold duplicates). They are what a
    /// SIGUSR2 restart hands over; closed when the listener goes away or is rebound, and when draining
    /// starts (nil from then on: the port stops accepting once the workers close theirs).
    var sockets: ListenerSockets?
    /// Where it actually listens (`127.0.0.1:8443`, with the port the system chose for port 0).
    var listenAddress: String
    /// Per worker: fresh descriptors of `sockets` not yet handed to the workers (at startup, and during a
    /// reload that rebinds the listener); empty once the workers took them over.
    var pendingSockets: [[ListeningSocket]] = []

    /// Active connections across all workers; outlives generations (and renames).
    var counters: ListenerCounters { generation.counters }

    /// Where the sockets came from: "bound", "systemd" or "restart".
    var source: String { sockets?.source ?? "bound" }

    /// Closes everything this record owns (its descriptors and any not yet handed to the workers) when the
    /// process could not start; a Unix socket file it bound itself is removed (one handed over stays: the old
    /// process still serves it).
    func closeSockets(removingBoundFile: Bool) {
        pendingSockets.joined().forEach { $0.close() }
        sockets?.close(removingFile: removingBoundFile && source == "bound")
    }
}
