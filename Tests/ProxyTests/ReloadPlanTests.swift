import Policy
import Testing
@testable import Proxy

/// `ReloadPlan`: what a reload adds, removes, renames, rebinds and re-authorizes, from the two listener
/// sets alone.
@Suite struct ReloadPlanTests {
    typealias Listener = ReloadPlan.Listener

    static let allowAll = AccessPolicy(allowAll: true)
    /// No rule: admits nobody.
    static let denyAll = AccessPolicy()
    static let trustA: [UInt8] = [0xA]
    static let trustB: [UInt8] = [0xB]

    static func listener(_ name: String, _ port: UInt16, host: String = "127.0.0.1", reauthorize: Bool = true,
                         policy: AccessPolicy? = allowAll, trust: [UInt8] = trustA) -> Listener {
        Listener(name: name, listen: ListenerConfiguration.Listen.tcp(host: host, port: port).description, reauthorize: reauthorize,
                 policy: policy, trustDigest: trust)
    }

    static func listener(_ name: String, at listen: ListenerConfiguration.Listen) -> Listener {
        Listener(name: name, listen: listen.description, policy: allowAll, trustDigest: trustA)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let testDescription: String
        let current: [Listener]
        let next: [Listener]
        var added: [String] = []
        var removed: [String] = []
        var renamed: [String: String] = [:]
        var rebound: [String] = []
        var reauthorize: Set<String> = []
    }

    static let cases: [Case] = [
        Case(testDescription: "unix socket unchanged: kept",
             current: [listener("a", at: .unix(path: "/run/p/a.sock"))],
             next: [listener("a", at: .unix(path: "/run/p/a.sock"))]),
        Case(testDescription: "unix socket path changed: rebind",
             current: [listener("a", at: .unix(path: "/run/p/a.sock"))],
             next: [listener("a", at: .unix(path: "/run/p/b.sock"))],
             rebound: ["a"]),
        Case(testDescription: "unix socket under a new name: rename (the socket is taken over)",
             current: [listener("a", at: .unix(path: "/run/p/a.sock"))],
             next: [listener("b", at: .unix(path: "/run/p/a.sock"))],
             renamed: ["b": "a"]),
        Case(testDescription: "TCP to unix socket: rebind",
             current: [listener("a", 8001)],
             next: [listener("a", at: .unix(path: "/run/p/a.sock"))],
             rebound: ["a"]),
        Case(testDescription: "systemd socket unchanged: kept; under a new name: rename",
             current: [listener("a", at: .systemd(name: "web")), listener("b", at: .systemd(name: "admin"))],
             next: [listener("a", at: .systemd(name: "web")), listener("c", at: .systemd(name: "admin"))],
             renamed: ["c": "b"]),
        Case(testDescription: "systemd name changed: rebind (refused by the runtime: systemd passes sockets at start only)",
             current: [listener("a", at: .systemd(name: "web"))],
             next: [listener("a", at: .systemd(name: "web2"))],
             rebound: ["a"]),
        Case(testDescription: "nothing changed: empty plan",
             current: [listener("a", 8001), listener("b", 8002)],
             next: [listener("a", 8001), listener("b", 8002)]),
        Case(testDescription: "add",
             current: [listener("a", 8001)],
             next: [listener("a", 8001), listener("b", 8002)],
             added: ["b"]),
        Case(testDescription: "remove",
             current: [listener("a", 8001), listener("b", 8002)],
             next: [listener("a", 8001)],
             removed: ["b"]),
        Case(testDescription: "rename: a vanished name's address under a new name",
             current: [listener("a", 8001), listener("b", 8002)],
             next: [listener("a", 8001), listener("c", 8002)],
             renamed: ["c": "b"]),
        Case(testDescription: "rename needs the same host as well as the same port",
             current: [listener("a", 8001)],
             next: [listener("b", 8001, host: "0.0.0.0")],
             added: ["b"], removed: ["a"]),
        Case(testDescription: "new name on a new address is remove + add, not a rename",
             current: [listener("a", 8001)],
             next: [listener("b", 8002)],
             added: ["b"], removed: ["a"]),
        Case(testDescription: "a kept name is never taken by a rename",
             current: [listener("a", 8001)],
             next: [listener("a", 8003), listener("b", 8001)],
             added: ["b"], rebound: ["a"]),
        Case(testDescription: "each vanished listener is renamed once: the first new name (next order) wins",
             current: [listener("a", 8001)],
             next: [listener("c", 8001), listener("b", 8001)],
             added: ["b"], renamed: ["c": "a"]),
        Case(testDescription: "the first vanished listener (current order) on the address is the one renamed",
             current: [listener("a", 8001), listener("b", 8001)],
             next: [listener("c", 8001)],
             removed: ["b"], renamed: ["c": "a"]),
        Case(testDescription: "rebind: same name, new port",
             current: [listener("a", 8001)],
             next: [listener("a", 8009)],
             rebound: ["a"]),
        Case(testDescription: "rebind: same name, new host",
             current: [listener("a", 8001)],
             next: [listener("a", 8001, host: "::1")],
             rebound: ["a"]),
        Case(testDescription: "rename and rebind in one reload",
             current: [listener("a", 8001), listener("b", 8002)],
             next: [listener("c", 8001), listener("b", 8003)],
             renamed: ["c": "a"], rebound: ["b"]),
        Case(testDescription: "policy change: reauthorize",
             current: [listener("a", 8001), listener("b", 8002)],
             next: [listener("a", 8001, policy: denyAll), listener("b", 8002)],
             reauthorize: ["a"]),
        Case(testDescription: "policy removed: reauthorize",
             current: [listener("a", 8001)],
             next: [listener("a", 8001, policy: nil)],
             reauthorize: ["a"]),
        Case(testDescription: "trust change (CA or CRL files): reauthorize",
             current: [listener("a", 8001), listener("b", 8002)],
             next: [listener("a", 8001), listener("b", 8002, trust: trustB)],
             reauthorize: ["b"]),
        Case(testDescription: "reauthorize off: no re-check despite a policy and trust change",
             current: [listener("a", 8001)],
             next: [listener("a", 8001, reauthorize: false, policy: denyAll, trust: trustB)]),
        Case(testDescription: "reauthorize is read on the next side",
             current: [listener("a", 8001, reauthorize: false)],
             next: [listener("a", 8001, reauthorize: true, trust: trustB)],
             reauthorize: ["a"]),
        Case(testDescription: "a renamed listener compares against the one it continues",
             current: [listener("a", 8001, policy: denyAll), listener("b", 8002)],
             next: [listener("c", 8001), listener("b", 8002)],
             renamed: ["c": "a"], reauthorize: ["c"]),
        Case(testDescription: "a rebound listener with new trust is rebound and re-checked",
             current: [listener("a", 8001)],
             next: [listener("a", 8002, trust: trustB)],
             rebound: ["a"], reauthorize: ["a"]),
        Case(testDescription: "an added listener is never re-checked",
             current: [],
             next: [listener("a", 8001, policy: denyAll)],
             added: ["a"]),
        Case(testDescription: "order: added in the next order, removed in the current order",
             current: [listener("z", 8001), listener("y", 8002), listener("keep", 8000)],
             next: [listener("keep", 8000), listener("n2", 8011), listener("n1", 8012)],
             added: ["n2", "n1"], removed: ["z", "y"]),
    ]

    @Test(arguments: cases)
    func plan(_ example: Case) {
        let plan = ReloadPlan(current: example.current, next: example.next)
        #expect(plan.added == example.added)
        #expect(plan.removed == example.removed)
        #expect(plan.renamed == example.renamed)
        #expect(plan.rebound == example.rebound)
        #expect(plan.reauthorize == example.reauthorize)
        #expect(plan.isEmpty == (example.added.isEmpty && example.removed.isEmpty && example.renamed.isEmpty
                                 && example.rebound.isEmpty && example.reauthorize.isEmpty))
        for listener in example.next {
            #expect(plan.needsSockets(listener.name) == (example.added + example.rebound).contains(listener.name))
        }
    }

    @Test func renamedDescriptionIsOldArrowNewSorted() {
        let plan = ReloadPlan(current: [Self.listener("b", 8002), Self.listener("a", 8001)],
                              next: [Self.listener("y", 8002), Self.listener("x", 8001)])
        #expect(plan.renamed == ["y": "b", "x": "a"])
        #expect(plan.renamedDescription == "a->x,b->y")
    }
}
