import Policy
import TLS

/// What a reload changes, computed from the current and the next listener sets alone: no I/O, no loop, no
/// sockets. `ServerRuntime.applyReload` builds the next generations, computes the plan, then executes it.
struct ReloadPlan: Equatable, Sendable {
    /// One listener as the plan sees it: its name, its configured listen address, and what decides who
    /// is admitted.
    struct Listener: Equatable, Sendable {
        var name: String
        /// The configured address as written canonically (`ListenerConfiguration.Listen.description`).
        var listen: String
        /// Re-check live connections when what decides admission changed (read on the next side).
        var reauthorize: Bool
        /// The access policy of the listener's TLS context.
        var policy: AccessPolicy?
        /// SHA-256 over the CA and CRL files (`TLSContext.trustDigest`).
        var trustDigest: [UInt8]

        init(name: String, listen: String, reauthorize: Bool = true, policy: AccessPolicy?, trustDigest: [UInt8]) {
            self.name = name
            self.listen = listen
            self.reauthorize = reauthorize
            self.policy = policy
            self.trustDigest = trustDigest
        }

        func listensAtSameAddress(as other: Listener) -> Bool {
            listen == other.listen
        }
    }

    /// New names that are not renames, in the next configuration's order.
    let added: [String]
    /// Current names that neither stay nor were renamed, in the current configuration's order.
    let removed: [String]
    /// New name → old name. A listener that disappears by name while a new name appears on the same
    /// configured listen address (host and port, Unix path or systemd name) is a rename: the new name takes over the sockets (binding
    /// again would collide with our own port). Each new name (in the next order) takes the first such
    /// vanished listener (in the current order) that no earlier new name took.
    let renamed: [String: String]
    /// Listeners kept under the same name whose configured listen address changed, in the next order.
    let rebound: [String]
    /// Listeners (next names) whose live connections must be re-checked: `reauthorize` is on and the
    /// policy or the trust digest differs from the listener it continues (the same name, or the renamed one).
    let reauthorize: Set<String>

    init(current: [Listener], next: [Listener]) {
        let currentNames = Set(current.map(\.name))
        let nextNames = Set(next.map(\.name))
        var renamed: [String: String] = [:]
        for listener in next where !currentNames.contains(listener.name) {
            if let old = current.first(where: {
                !nextNames.contains($0.name) && !renamed.values.contains($0.name) && $0.listensAtSameAddress(as: listener)
            }) {
                renamed[listener.name] = old.name
            }
        }
        var rebound: [String] = []
        var reauthorize = Set<String>()
        for listener in next {
            let previousName = renamed[listener.name] ?? listener.name
            guard let old = current.first(where: { $0.name == previousName }) else { continue }
            if !old.listensAtSameAddress(as: listener) { rebound.append(listener.name) }
            if listener.reauthorize && (old.policy != listener.policy || old.trustDigest != listener.trustDigest) {
                reauthorize.insert(listener.name)
            }
        }
        self.renamed = renamed
        self.rebound = rebound
        self.reauthorize = reauthorize
        added = next.map(\.name).filter { !currentNames.contains($0) && renamed[$0] == nil }
        removed = current.map(\.name).filter { !nextNames.contains($0) && !renamed.values.contains($0) }
    }

    /// The listener needs sockets of its own: added, or rebound on a new address.
    func needsSockets(_ name: String) -> Bool {
        added.contains(name) || rebound.contains(name)
    }

    /// Nothing about the listener set changes (generations are still rebuilt).
    var isEmpty: Bool {
        added.isEmpty && removed.isEmpty && renamed.isEmpty && rebound.isEmpty && reauthorize.isEmpty
    }

    /// The `listeners.renamed` log field: `old->new`, sorted.
    var renamedDescription: String {
        renamed.map { "\($0.value)->\($0.key)" }.sorted().joined(separator: ",")
    }
}

extension ReloadPlan.Listener {
    /// The plan's view of a configured listener and the TLS context built for it.
    init(_ listener: ListenerConfiguration, tls: TLSContext) {
        self.init(name: listener.name, listen: listener.listenDescription, reauthorize: listener.reauthorize, policy: tls.policy, trustDigest: tls.trustDigest)
    }
}
