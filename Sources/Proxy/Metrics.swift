import CoreMetrics
import Prometheus
import Synchronization
import TLS

/// Why a connection ended, as a bounded label value (`reason` on `portcullis_connections_closed_total`).
/// The free-text reason stays in the audit line.
public enum CloseCategory: String, CaseIterable, Sendable {
    case normal
    case handshakeFailed = "handshake_failed"
    case targetConnectFailed = "target_connect_failed"
    case idleTimeout = "idle_timeout"
    /// `timeouts.max-lifetime` (`--max-conn-lifetime`) reached.
    case maxLifetime = "max_lifetime"
    case closeTimeout = "close_timeout"
    case clientError = "client_error"
    case targetError = "target_error"
    case tlsError = "tls_error"
    case reauthorizationFailed = "reauthorization_failed"
    case certificateExpired = "certificate_expired"
    case shutdown
    case limitReached = "limit_reached"
    /// Client mode: the local application closed before the remote server was verified.
    case clientGaveUp = "client_gave_up"
    /// `proxy-protocol: v2`: the header could not be built (unreadable address, oversized identity).
    case proxyHeaderFailed = "proxy_header_failed"
}

/// Event counts of one listener on one worker. Only that worker writes; the scraper reads under the same
/// (uncontended) lock, so counting costs no shared cache line between workers.
struct ListenerEventCounts {
    var accepted: UInt64 = 0
    var closed = [UInt64](repeating: 0, count: CloseCategory.allCases.count)
    var handshakesFull: UInt64 = 0
    var handshakesResumed: UInt64 = 0
    var failures = [UInt64](repeating: 0, count: TLSFailure.Kind.allCases.count)
    /// Allowed handshakes by the name of the rule that admitted the peer (bounded by the configuration).
    var allowedByRule: [String: UInt64] = [:]
    var denied: UInt64 = 0
    var targetConnectFailures: UInt64 = 0
    /// Connections refused because `accept` failed: [out of descriptors, any other reason].
    var acceptFailures: [UInt64] = [0, 0]
    /// Connections refused by a per-source handshake limit: [in progress, rate].
    var sourceLimitRefusals: [UInt64] = [0, 0]
    /// Times this worker stopped accepting because the listener reached `max-connections`.
    var acceptPauses: UInt64 = 0

    /// Connections accepted and not yet closed. Read from one worker's counts under its lock, so exact at a
    /// scrape, unlike the listener's slot count (which briefly holds a slot for an `accept` that may find
    /// nothing).
    var open: Int { Int(accepted) - Int(closed.reduce(0, +)) }

    mutating func add(_ other: ListenerEventCounts) {
        accepted += other.accepted
        for i in closed.indices { closed[i] += other.closed[i] }
        handshakesFull += other.handshakesFull
        handshakesResumed += other.handshakesResumed
        for i in failures.indices { failures[i] += other.failures[i] }
        allowedByRule.merge(other.allowedByRule, uniquingKeysWith: +)
        denied += other.denied
        targetConnectFailures += other.targetConnectFailures
        acceptFailures[0] += other.acceptFailures[0]
        acceptFailures[1] += other.acceptFailures[1]
        sourceLimitRefusals[0] += other.sourceLimitRefusals[0]
        sourceLimitRefusals[1] += other.sourceLimitRefusals[1]
        acceptPauses += other.acceptPauses
    }
}

/// The counters one worker keeps for one listener. Byte counts are relaxed atomics (added per chunk, by the
/// owning worker only); events take a lock the scraper rarely contends. Durations go straight into the
/// Prometheus histograms through swift-metrics timers (once per handshake / connection, never per chunk).
final class ListenerStats: Sendable {
    let listener: String
    let bytesUp = Atomic<UInt64>(0)
    let bytesDown = Atomic<UInt64>(0)
    private let events = Mutex(ListenerEventCounts())
    let handshakeDuration: CoreMetrics.Timer
    let connectionDuration: CoreMetrics.Timer

    init(listener: String, factory: PrometheusMetricsFactory) {
        self.listener = listener
        handshakeDuration = CoreMetrics.Timer(label: RuntimeMetrics.Name.handshakeDuration,
                                              dimensions: [("listener", listener)], factory: factory)
        connectionDuration = CoreMetrics.Timer(label: RuntimeMetrics.Name.connectionDuration,
                                               dimensions: [("listener", listener)], factory: factory)
    }

    func addBytes(_ count: UInt64, up: Bool) {
        if up { bytesUp.add(count, ordering: .relaxed) } else { bytesDown.add(count, ordering: .relaxed) }
    }

    func count(_ update: (inout ListenerEventCounts) -> Void) {
        events.withLock { update(&$0) }
    }

    var snapshot: ListenerEventCounts { events.withLock { $0 } }
}

/// Every metric of one runtime: per-worker counters (aggregated on scrape) and the Prometheus registry
/// they are exported through. Metric names are API: they are documented in the README.
final class RuntimeMetrics: Sendable {
    enum Name {
        static let connectionsAccepted = "portcullis_connections_accepted_total"
        static let connectionsActive = "portcullis_connections_active"
        static let connectionsClosed = "portcullis_connections_closed_total"
        static let handshakes = "portcullis_handshakes_total"
        static let handshakeFailures = "portcullis_handshake_failures_total"
        static let policyDecisions = "portcullis_policy_decisions_total"
        static let bytes = "portcullis_bytes_total"
        static let targetConnectFailures = "portcullis_target_connect_failures_total"
        static let acceptFailures = "portcullis_accept_failures_total"
        static let sourceLimitRefusals = "portcullis_source_limit_refusals_total"
        static let acceptPauses = "portcullis_accept_pauses_total"
        static let acceptPausedWorkers = "portcullis_accept_paused_workers"
        static let handshakeDuration = "portcullis_handshake_duration_seconds"
        static let connectionDuration = "portcullis_connection_duration_seconds"
        static let certificateExpiry = "portcullis_certificate_expiry_seconds"
        static let crlExpiry = "portcullis_crl_next_update_seconds"
        static let reloads = "portcullis_reloads_total"
        static let configGeneration = "portcullis_config_generation"
        static let startTime = "portcullis_start_time_seconds"
        static let buildInfo = "portcullis_build_info"
        static let sessionCacheEntries = "portcullis_tls_session_cache_entries"
        static let sessionCacheLookups = "portcullis_tls_session_cache_lookups_total"
    }

    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    private let all = Mutex<[ListenerStats]>([])
    private let reloadCounts = Mutex<(succeeded: UInt64, failed: UInt64)>((0, 0))

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        let ms = { (n: Int64) in Duration.milliseconds(n) }
        factory.durationHistogramBuckets = [
            Name.handshakeDuration: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000].map(ms),
            Name.connectionDuration: [10, 100, 1000, 10_000, 60_000, 300_000, 1_800_000, 3_600_000, 21_600_000, 86_400_000].map(ms),
        ]
        self.factory = factory
    }

    /// A fresh counter set for one worker's share of a listener (called when a worker first serves it).
    func makeStats(listener: String) -> ListenerStats {
        let stats = ListenerStats(listener: listener, factory: factory)
        all.withLock { $0.append(stats) }
        return stats
    }

    func noteReload(succeeded: Bool) {
        reloadCounts.withLock { if succeeded { $0.succeeded += 1 } else { $0.failed += 1 } }
    }

    /// Sums every worker's counters per listener name.
    func aggregate() -> [String: (events: ListenerEventCounts, bytesUp: UInt64, bytesDown: UInt64)] {
        let stats = all.withLock { $0 }
        var totals: [String: (events: ListenerEventCounts, bytesUp: UInt64, bytesDown: UInt64)] = [:]
        for entry in stats {
            var total = totals[entry.listener] ?? (ListenerEventCounts(), 0, 0)
            total.events.add(entry.snapshot)
            total.bytesUp += entry.bytesUp.load(ordering: .relaxed)
            total.bytesDown += entry.bytesDown.load(ordering: .relaxed)
            totals[entry.listener] = total
        }
        return totals
    }

    var reloads: (succeeded: UInt64, failed: UInt64) { reloadCounts.withLock { $0 } }
}

/// Point-in-time facts the scraper sets as gauges (owned by the control thread).
struct GaugeSnapshot {
    struct Listener {
        let name: String
        let active: Int
        /// Workers holding this listener at its `max-connections` (not accepting) now.
        let pausedWorkers: Int
        let certificateNotAfter: Int64?
        let crlNextUpdate: Int64?
    }
    let listeners: [Listener]
    let configGeneration: UInt64
    let startTime: Int64
    let version: String
    let now: Int64
    /// The process-wide TLS session store.
    let sessionCache: (entries: Int, hits: UInt64, misses: UInt64)
}

/// Turns the aggregated counters into Prometheus text through the registry. Counters are pushed as deltas
/// since the previous scrape, so the registry's counters stay monotonic. Confined to the control thread.
final class MetricsExporter {
    private let metrics: RuntimeMetrics
    private var exported: [String: UInt64] = [:]
    /// Gauges set by the previous scrape: one not set again (a removed listener's) is unregistered.
    private var gauges: [String: Prometheus.Gauge] = [:]
    private var gaugesThisScrape: [String: Prometheus.Gauge] = [:]
    private var buffer: [UInt8] = []

    init(metrics: RuntimeMetrics) {
        self.metrics = metrics
    }

    private func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        // The descriptor joins its parts with "_"; the whole name as metricName keeps it verbatim.
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// One series' identity: name and label pairs.
    private func seriesKey(_ name: String, _ labels: [(String, String)]) -> String {
        name + "{" + labels.map { $0.0 + "=" + $0.1 }.joined(separator: ",") + "}"
    }

    private func counter(_ name: String, _ help: String, _ labels: [(String, String)], total: UInt64) {
        let key = seriesKey(name, labels)
        let previous = exported[key] ?? 0
        let counter = metrics.registry.makeCounter(descriptor: descriptor(name, help), labels: labels)
        if total > previous { counter.increment(by: Int64(total - previous)) }
        exported[key] = max(total, previous)
    }

    private func gauge(_ name: String, _ help: String, _ labels: [(String, String)], _ value: Double) {
        let gauge = metrics.registry.makeGauge(descriptor: descriptor(name, help), labels: labels)
        gauge.set(to: value)
        gaugesThisScrape[seriesKey(name, labels)] = gauge
    }

    func render(_ gauges: GaugeSnapshot) -> [UInt8] {
        typealias N = RuntimeMetrics.Name
        let totals = metrics.aggregate()
        var names = Set(totals.keys)
        gauges.listeners.forEach { names.insert($0.name) }
        for name in names.sorted() {
            let l = ("listener", name)
            let total = totals[name] ?? (ListenerEventCounts(), 0, 0)
            let events = total.events
            counter(N.connectionsAccepted, "Connections accepted.", [l], total: events.accepted)
            for (i, category) in CloseCategory.allCases.enumerated() {
                counter(N.connectionsClosed, "Connections closed, by reason.", [l, ("reason", category.rawValue)], total: events.closed[i])
            }
            counter(N.handshakes, "TLS handshakes, by result (full, resumed, failed).", [l, ("result", "full")], total: events.handshakesFull)
            counter(N.handshakes, "TLS handshakes, by result (full, resumed, failed).", [l, ("result", "resumed")], total: events.handshakesResumed)
            counter(N.handshakes, "TLS handshakes, by result (full, resumed, failed).", [l, ("result", "failed")],
                    total: events.failures.reduce(0, +))
            for (i, reason) in TLSFailure.Kind.allCases.enumerated() {
                counter(N.handshakeFailures, "Failed TLS handshakes, by reason.", [l, ("reason", reason.rawValue)], total: events.failures[i])
            }
            for (rule, count) in events.allowedByRule {
                counter(N.policyDecisions, "Access-policy decisions, by rule (denials have rule=\"\").",
                        [l, ("decision", "allow"), ("rule", rule)], total: count)
            }
            counter(N.policyDecisions, "Access-policy decisions, by rule (denials have rule=\"\").",
                    [l, ("decision", "deny"), ("rule", "")], total: events.denied)
            counter(N.bytes, "Plaintext bytes relayed: up = client to target, down = target to client.", [l, ("direction", "up")], total: total.bytesUp)
            counter(N.bytes, "Plaintext bytes relayed: up = client to target, down = target to client.", [l, ("direction", "down")], total: total.bytesDown)
            counter(N.targetConnectFailures, "Failed connections to the target.", [l], total: events.targetConnectFailures)
            counter(N.acceptFailures, "Connections refused because accept failed, by reason (fd_limit: no descriptor left).",
                    [l, ("reason", "fd_limit")], total: events.acceptFailures[0])
            counter(N.acceptFailures, "Connections refused because accept failed, by reason (fd_limit: no descriptor left).",
                    [l, ("reason", "other")], total: events.acceptFailures[1])
            counter(N.sourceLimitRefusals, "Connections refused by a per-source handshake limit, by limit.",
                    [l, ("limit", "handshakes_per_source")], total: events.sourceLimitRefusals[0])
            counter(N.sourceLimitRefusals, "Connections refused by a per-source handshake limit, by limit.",
                    [l, ("limit", "handshake_rate_per_source")], total: events.sourceLimitRefusals[1])
            counter(N.acceptPauses, "Times a worker stopped accepting because the listener reached max-connections (clients wait in the accept queue).",
                    [l], total: events.acceptPauses)
        }
        for listener in gauges.listeners {
            let l = ("listener", listener.name)
            gauge(N.connectionsActive, "Connections open now.", [l], Double(listener.active))
            gauge(N.acceptPausedWorkers, "Workers not accepting now because the listener is at max-connections.", [l],
                  Double(listener.pausedWorkers))
            if let notAfter = listener.certificateNotAfter {
                gauge(N.certificateExpiry, "Seconds until this listener's certificate expires (negative: expired).", [l],
                      Double(notAfter - gauges.now))
            }
            if let nextUpdate = listener.crlNextUpdate {
                gauge(N.crlExpiry, "Seconds until the earliest CRL nextUpdate (negative: a CRL is stale).", [l],
                      Double(nextUpdate - gauges.now))
            }
        }
        let reloads = metrics.reloads
        counter(N.reloads, "Configuration reloads, by result.", [("result", "success")], total: reloads.succeeded)
        counter(N.reloads, "Configuration reloads, by result.", [("result", "failure")], total: reloads.failed)
        gauge(N.configGeneration, "Configuration generation (1 at start, +1 per successful reload).", [], Double(gauges.configGeneration))
        gauge(N.sessionCacheEntries, "Resumable TLS sessions kept in memory (all server-mode listeners).", [],
              Double(gauges.sessionCache.entries))
        counter(N.sessionCacheLookups, "Session tickets offered by clients, by whether a live session was found (hit) or not (miss).",
                [("result", "hit")], total: gauges.sessionCache.hits)
        counter(N.sessionCacheLookups, "Session tickets offered by clients, by whether a live session was found (hit) or not (miss).",
                [("result", "miss")], total: gauges.sessionCache.misses)
        gauge(N.startTime, "Process start time, seconds since the Unix epoch.", [], Double(gauges.startTime))
        gauge(N.buildInfo, "Always 1; the labels say what is running.", [("version", gauges.version)], 1)
        for (key, stale) in self.gauges where gaugesThisScrape[key] == nil { metrics.registry.unregisterGauge(stale) }
        self.gauges = gaugesThisScrape
        gaugesThisScrape = [:]
        buffer.removeAll(keepingCapacity: true)
        metrics.registry.emit(into: &buffer)
        return buffer
    }
}

extension CloseCategory {
    /// Position in `ListenerEventCounts.closed`.
    var index: Int { CloseCategory.allCases.firstIndex(of: self)! }
}

extension TLSFailure.Kind {
    /// Position in `ListenerEventCounts.failures`.
    var index: Int { TLSFailure.Kind.allCases.firstIndex(of: self)! }
}
