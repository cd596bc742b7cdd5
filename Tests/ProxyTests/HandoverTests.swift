import EventLoop
import Logging
import Testing
@testable import Proxy

#if canImport(Glibc)
import Glibc
#endif

/// Socket activation and restart handover: which descriptors are ours, how they are named, matched to
/// listeners and spread over workers — with real sockets.
@Suite struct HandoverTests {
    let logger = Logger(label: "test")

    @Test func systemdDescriptorsAreOnlyForTheNamedPid() {
        #expect(InheritedSockets.systemdDescriptors(listenPID: "41", listenFDs: "2", names: nil, ownPID: 42).isEmpty)
        #expect(InheritedSockets.systemdDescriptors(listenPID: nil, listenFDs: "2", names: nil, ownPID: 42).isEmpty)
        #expect(InheritedSockets.systemdDescriptors(listenPID: "42", listenFDs: "0", names: nil, ownPID: 42).isEmpty)
        #expect(InheritedSockets.systemdDescriptors(listenPID: "42", listenFDs: "x", names: nil, ownPID: 42).isEmpty)
    }

    @Test func systemdDescriptorsStartAtThreeAndTakeTheirNames() {
        let passed = InheritedSockets.systemdDescriptors(listenPID: "42", listenFDs: "3", names: "valkey:unknown", ownPID: 42)
        #expect(passed.map(\.fd) == [3, 4, 5])
        // "unknown" is systemd's placeholder; a missing name is no name.
        #expect(passed.map(\.name) == ["valkey", nil, nil])
    }

    @Test func restartVariableRoundTrips() throws {
        let groups: [(name: String, fds: [Int32])] = [("valkey", [7, 8]), ("admin-1.x", [9])]
        let text = InheritedSockets.formatRestart(groups)
        #expect(text == "valkey=7,8;admin-1.x=9")
        let parsed = try InheritedSockets.parseRestart(text).get()
        #expect(parsed.map(\.name) == ["valkey", "admin-1.x"])
        #expect(parsed.map(\.fds) == [[7, 8], [9]])
    }

    @Test(arguments: ["valkey", "=7", "valkey=7,x", "valkey=2"])
    func restartVariableRejectsGarbage(_ text: String) {
        guard case .failure(let error) = InheritedSockets.parseRestart(text) else {
            Issue.record("'\(text)' parsed")
            return
        }
        #expect(!error.description.isEmpty)
    }

    @Test func adoptRefusesWhatIsNotAListeningTCPSocket() throws {
        var fds: [Int32] = [-1, -1]
        #expect(pipe(&fds) == 0)
        defer { fds.forEach { _ = close($0) } }
        #expect(throws: UVError.self) { try ListeningSocket.adopt(fd: fds[0]) }

        let unlistened = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { _ = close(unlistened) }
        do {
            _ = try ListeningSocket.adopt(fd: unlistened)
            Issue.record("an unlistened socket was adopted")
        } catch {
            #expect(error.operation.contains("is not listening"))
        }
    }

    @Test func adoptReportsTheBoundAddress() throws {
        let bound = try ListeningSocket.bind(ip: "127.0.0.1", port: 0, reusePort: false)
        defer { bound.close() }
        let (socket, address) = try ListeningSocket.adopt(fd: bound.fd)
        #expect(socket.port == bound.port)
        #expect(address.description == "127.0.0.1:\(bound.port)")
    }

    @Test func listenersTakeSocketsByNameThenByAddress() throws {
        let a = try ListeningSocket.bind(ip: "127.0.0.1", port: 0, reusePort: false)
        let b = try ListeningSocket.bind(ip: "127.0.0.1", port: 0, reusePort: false)
        let c = try ListeningSocket.bind(ip: "127.0.0.1", port: 0, reusePort: false)
        let address = { (s: ListeningSocket) in "127.0.0.1:\(s.port)" }
        var inherited = InheritedSockets(entries: [
            // One socket unit, two ListenStream=: FileDescriptorName= names both alike.
            .init(name: "valkey", socket: a, address: address(a), source: .systemd),
            .init(name: "valkey", socket: b, address: address(b), source: .systemd),
            .init(name: nil, socket: c, address: address(c), source: .systemd),
        ])
        let valkeyTaken = inherited.take(listener: "valkey", address: address(b))
        let valkey = try #require(valkeyTaken)
        #expect(valkey.sockets.map(\.fd) == [b.fd])
        #expect(valkey.source == .systemd)
        let otherTaken = inherited.take(listener: "other", address: address(a))
        let other = try #require(otherTaken)
        #expect(other.sockets.map(\.fd) == [a.fd])
        let unnamedTaken = inherited.take(listener: "third", address: address(c))
        let unnamed = try #require(unnamedTaken)
        #expect(unnamed.sockets.map(\.fd) == [c.fd])
        #expect(inherited.take(listener: "none", address: "127.0.0.1:1") == nil)
        [a, b, c].forEach { $0.close() }
    }

    @Test func restartSocketsGoByNameOnlyAndAllOfThem() throws {
        let a = try ListeningSocket.bind(ip: "127.0.0.1", port: 0, reusePort: true)
        let b = try ListeningSocket.bind(ip: "127.0.0.1", port: a.port, reusePort: true)
        let address = "127.0.0.1:\(a.port)"
        var inherited = InheritedSockets(entries: [
            .init(name: "server", socket: a, address: address, source: .restart),
            .init(name: "server", socket: b, address: address, source: .restart),
        ])
        #expect(inherited.take(listener: "renamed", address: address) == nil)
        // Configured as port 0: every worker's socket goes to it, wherever the old process bound them.
        let handedOver = inherited.take(listener: "server", address: "127.0.0.1:0")
        let taken = try #require(handedOver)
        #expect(taken.sockets.map(\.fd) == [a.fd, b.fd])
        #expect(taken.source == .restart)
        [a, b].forEach { $0.close() }
    }

    @Test func systemdNameListenersTakeOnlyTheirNameOrTheirRestartGroup() throws {
        let web = try ListeningSocket.bind(ip: "127.0.0.1", port: 0, reusePort: false)
        let api = try ListeningSocket.bind(ip: "0.0.0.0", port: 0, reusePort: false)
        let handed = try ListeningSocket.bind(ip: "127.0.0.1", port: 0, reusePort: false)
        defer { [web, api, handed].forEach { $0.close() } }
        var inherited = InheritedSockets(entries: [
            .init(name: "web", socket: web, address: "127.0.0.1:\(web.port)", source: .systemd),
            .init(name: "api", socket: api, address: "0.0.0.0:\(api.port)", source: .systemd, isLocal: false),
            .init(name: "front", socket: handed, address: "127.0.0.1:\(handed.port)", source: .restart),
        ])
        #expect(inherited.systemdNames == ["web", "api"])
        // A systemd socket is never taken under the listener's name, and a restart group never under the fd name.
        #expect(inherited.take(listener: "web", systemdName: "other") == nil)
        #expect(inherited.take(listener: "x", systemdName: "front") == nil)
        let byNameTaken = inherited.take(listener: "x", systemdName: "web")
        let byName = try #require(byNameTaken)
        #expect(byName.sockets.map(\.fd) == [web.fd] && byName.source == .systemd && byName.nonLocalAddress == nil)
        let exposedTaken = inherited.take(listener: "y", systemdName: "api")
        let exposed = try #require(exposedTaken)
        #expect(exposed.nonLocalAddress == "0.0.0.0:\(api.port)")
        // After a SIGUSR2 restart the sockets come back under the listener's name.
        let restartedTaken = inherited.take(listener: "front", systemdName: "web")
        let restarted = try #require(restartedTaken)
        #expect(restarted.sockets.map(\.fd) == [handed.fd] && restarted.source == .restart)
        #expect(inherited.systemdNames.isEmpty)
    }

    @Test func aUnixSocketIsAdoptedAndDuplicatedAsUnix() throws {
        let path = "/tmp/portcullis-unit-\(getpid()).sock"
        let bound = try ListeningSocket.bindUnix(path: path)
        defer {
            bound.close()
            UnixSocketFile(path: path)?.remove()
        }
        let (socket, address) = try ListeningSocket.adopt(fd: bound.fd, allowUnix: true)
        #expect(socket.isUnix && address.isUnix && address.description == "unix:\(path)")
        let copy = try socket.duplicate()
        defer { copy.close() }
        #expect(copy.isUnix, "a duplicated Unix socket must stay a pipe for the listener")
        // The file is removed only while it is the one identified.
        let file = try #require(UnixSocketFile(path: path))
        #expect(UnixSocketFile(path: "/etc/hostname") == nil)
        #expect(file.remove())
        #expect(!file.remove())
    }

    @Test(arguments: [(1, 3), (4, 2), (2, 2), (3, 2)])
    func socketsAreSpreadOverWorkersWithFreshDescriptors(sockets count: Int, workers: Int) throws {
        let first = try ListeningSocket.bind(ip: "127.0.0.1", port: 0, reusePort: true)
        var sockets = [first]
        for _ in 1..<count { sockets.append(try ListeningSocket.bind(ip: "127.0.0.1", port: first.port, reusePort: true)) }
        defer { sockets.forEach { $0.close() } }
        let spread = try InheritedSockets.distribute(sockets, workers: workers)
        defer { spread.joined().forEach { $0.close() } }
        #expect(spread.count == workers)
        #expect(spread.allSatisfy { !$0.isEmpty }, "a worker without a socket would not accept")
        // Every socket is served by some worker, and no descriptor is shared (each worker closes its own).
        #expect(spread.joined().count == max(count, workers))
        let fds = spread.joined().map(\.fd)
        #expect(Set(fds).count == fds.count)
        #expect(Set(fds).isDisjoint(with: sockets.map(\.fd)))
        #expect(spread.joined().allSatisfy { $0.port == first.port })
    }

    @Test func watchdogIsOursOnlyForOurPidOrNone() {
        func period(_ pid: String?) -> UInt64? {
            SystemdNotifier(notifySocket: "@portcullis-unit-test", watchdogUsec: "200000", watchdogPID: pid,
                            ownPID: 42, logger: logger).watchdogMicroseconds
        }
        #expect(period(nil) == 200_000)
        #expect(period("42") == 200_000)
        #expect(period("1") == nil)
        let noSocket = SystemdNotifier(notifySocket: nil, watchdogUsec: "200000", watchdogPID: nil, ownPID: 42, logger: logger)
        #expect(noSocket.watchdogMicroseconds == nil && !noSocket.isActive)
    }

    @Test func notifySocketMustBeAPathOrAbstract() {
        let relative = SystemdNotifier(notifySocket: "run/notify", watchdogUsec: nil, watchdogPID: nil, ownPID: 1, logger: logger)
        #expect(!relative.isActive)
        let abstract = SystemdNotifier(notifySocket: "@x", watchdogUsec: "0", watchdogPID: nil, ownPID: 1, logger: logger)
        #expect(abstract.isActive && abstract.watchdogMicroseconds == nil)
        #expect(abstract.variablesForSuccessor == ["NOTIFY_SOCKET=@x"])
    }
}

@Suite("Write-buffer cache")
struct BufferPoolTests {
    @Test func buffersUnusedForAWholeIntervalAreFreed() throws {
        let loop = try Loop()
        let pool = loop.writeBuffers
        var taken = (0..<10).map { _ in pool.take() }
        taken.forEach(pool.give)
        taken = []
        #expect(pool.cachedCount == 10)
        #expect(pool.releaseUnused() == 0)       // the first interval started with an empty cache
        let busy = (0..<3).map { _ in pool.take() }
        busy.forEach(pool.give)
        #expect(pool.releaseUnused() == 7)       // 3 were needed at once; 7 sat unused throughout
        #expect(pool.cachedCount == 3)
        #expect(pool.releaseUnused() == 3)       // a quiet interval: everything goes
        #expect(pool.cachedCount == 0)
        let again = pool.take()                  // and the pool still works
        pool.give(again)
        #expect(pool.cachedCount == 1)
    }
}
