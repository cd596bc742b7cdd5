import EventLoop
import ProcessControl
import Logging

/// Listening sockets this process did not bind: passed by systemd (socket activation: `LISTEN_PID`,
/// `LISTEN_FDS`, `LISTEN_FDNAMES`) or by the Portcullis process that started us on SIGUSR2
/// (`PORTCULLIS_INHERITED_FDS`). Using the very same sockets — not new ones on the same port — is what keeps
/// connections queued in their accept queues from being refused across a restart.
struct InheritedSockets {
    enum Source: String {
        case systemd
        case restart
    }

    struct Entry {
        /// The listener name it was passed for (FileDescriptorName=, or ours); nil when unnamed.
        let name: String?
        let socket: ListeningSocket
        let address: String
        let source: Source
        /// A Unix socket or an IP loopback address.
        var isLocal = true
    }

    static let restartVariable = "PORTCULLIS_INHERITED_FDS"
    /// The restart group holding the status endpoint's socket ('@' never appears in a listener name).
    static let statusGroup = "@status"
    static let readyVariable = "PORTCULLIS_READY_FD"
    static let systemdVariables = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]
    /// sd_listen_fds(3): passed descriptors start at 3.
    static let firstSystemdFD: Int32 = 3

    private(set) var entries: [Entry] = []
    /// The names systemd passed sockets under, taken or not (for error messages).
    private(set) var passedSystemdNames: [String] = []
    /// Restart handover: the status endpoint's socket and its address (`127.0.0.1:9100`, `unix:/path`).
    private(set) var status: (socket: ListeningSocket, address: String)?
    /// Restart handover: the pipe on which to tell the old process we are accepting.
    private(set) var readyFD: Int32?

    init(entries: [Entry] = [], readyFD: Int32? = nil) {
        self.entries = entries
        self.readyFD = readyFD
    }

    /// Reads and unsets the variables, adopts every passed descriptor (checking that it is a listening TCP
    /// or Unix stream socket; one that is not is logged and closed). Call before other threads start.
    static func fromEnvironment(logger: Logger) -> InheritedSockets {
        let value = { (name: String) in ProcessControl.getenv(name) }
        let restart = value(restartVariable)
        let ready = value(readyVariable)
        let systemd = systemdDescriptors(listenPID: value("LISTEN_PID"), listenFDs: value("LISTEN_FDS"),
                                         names: value("LISTEN_FDNAMES"), ownPID: ProcessControl.pid)
        (systemdVariables + [restartVariable, readyVariable]).forEach(ProcessControl.unsetenv)

        var passed: [(fd: Int32, name: String?, source: Source)] = systemd.map { ($0.fd, $0.name, .systemd) }
        if let restart {
            switch parseRestart(restart) {
            case .success(let groups):
                for (name, fds) in groups { passed += fds.map { ($0, name, .restart) } }
            case .failure(let problem):
                logger.error("ignoring \(restartVariable): \(problem.description)", metadata: ["value": "\(restart)"])
            }
        }
        var inherited = InheritedSockets()
        for item in passed {
            do {
                if item.name == statusGroup && item.source == .restart {
                    let (socket, address) = try ListeningSocket.adopt(fd: item.fd, allowUnix: true)
                    inherited.status = (socket, address.description)
                    continue
                }
                let (socket, address) = try ListeningSocket.adopt(fd: item.fd, allowUnix: true)
                inherited.entries.append(Entry(name: item.name, socket: socket, address: address.description, source: item.source,
                                               isLocal: address.isUnix || address.isLoopback))
            } catch {
                logger.warning("inherited descriptor is unusable: closing it", metadata: [
                    "fd": "\(item.fd)", "listen.source": "\(item.source.rawValue)", "error": "\(error)",
                ])
                Descriptor.close(item.fd)
            }
        }
        inherited.passedSystemdNames = inherited.systemdNames
        if let ready, let fd = Int32(ready), fd >= 0 {
            // Ours alone: nothing we start later may inherit it.
            if (try? Descriptor.setCloseOnExec(fd)) != nil { inherited.readyFD = fd }
        }
        return inherited
    }

    /// The descriptors systemd passed to *this* process: LISTEN_PID must be our pid (the variables may have
    /// leaked from a parent), LISTEN_FDS their count from fd 3, LISTEN_FDNAMES their colon-separated names.
    static func systemdDescriptors(listenPID: String?, listenFDs: String?, names: String?, ownPID: Int32) -> [(fd: Int32, name: String?)] {
        guard let listenPID, Int32(listenPID) == ownPID, let count = listenFDs.flatMap(Int32.init), count > 0 else { return [] }
        let nameList = names.map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        return (0..<count).map { index in
            let name = Int(index) < nameList.count ? nameList[Int(index)] : nil
            return (firstSystemdFD + index, name.flatMap { $0.isEmpty || $0 == "unknown" ? nil : $0 })
        }
    }

    struct FormatError: Error, CustomStringConvertible {
        let description: String
    }

    /// Parses "name=fd,fd;name2=fd" (listener names never contain '=', ',' or ';').
    static func parseRestart(_ value: String) -> Result<[(name: String, fds: [Int32])], FormatError> {
        var groups: [(name: String, fds: [Int32])] = []
        for group in value.split(separator: ";") {
            let parts = group.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty else {
                return .failure(FormatError(description: "'\(group)' is not name=fd[,fd…]"))
            }
            var fds: [Int32] = []
            for text in parts[1].split(separator: ",") {
                guard let fd = Int32(text), fd >= 3 else {
                    return .failure(FormatError(description: "'\(text)' in '\(group)' is not a descriptor number (3 or more)"))
                }
                fds.append(fd)
            }
            groups.append((String(parts[0]), fds))
        }
        return .success(groups)
    }

    static func formatRestart(_ groups: [(name: String, fds: [Int32])]) -> String {
        groups.map { "\($0.name)=\($0.fds.map(String.init).joined(separator: ","))" }.joined(separator: ";")
    }

    /// Removes and returns the sockets for a listener: those passed under its name (only those on its exact
    /// address when some are: a socket unit's FileDescriptorName= names all its sockets alike), else
    /// (systemd without a matching name) those bound to exactly its listen address. Nil: bind as usual.
    mutating func take(listener name: String, address: String) -> (sockets: [ListeningSocket], source: Source, address: String)? {
        var picked = entries.indices.filter { entries[$0].name == name }
        let exact = picked.filter { entries[$0].address == address }
        if !exact.isEmpty { picked = exact }
        if picked.isEmpty {
            picked = entries.indices.filter { entries[$0].source == .systemd && entries[$0].address == address }
        }
        guard !picked.isEmpty else { return nil }
        let taken = picked.map { entries[$0] }
        for index in picked.reversed() { entries.remove(at: index) }
        return (taken.map(\.socket), taken[0].source, taken[0].address)
    }

    /// A `systemd:NAME` listener's sockets: those handed over under the listener's name by the process we
    /// replace (SIGUSR2), else those systemd passed as `NAME` (FileDescriptorName=). Nil when there are none.
    /// `nonLocalAddress`: the first that is neither a Unix socket nor on loopback.
    mutating func take(listener name: String, systemdName: String) -> (sockets: [ListeningSocket], source: Source, address: String, nonLocalAddress: String?)? {
        var picked = entries.indices.filter { entries[$0].source == .restart && entries[$0].name == name }
        if picked.isEmpty {
            picked = entries.indices.filter { entries[$0].source == .systemd && entries[$0].name == systemdName }
        }
        guard !picked.isEmpty else { return nil }
        let taken = picked.map { entries[$0] }
        for index in picked.reversed() { entries.remove(at: index) }
        return (taken.map(\.socket), taken[0].source, taken.map(\.address).joined(separator: ","),
                taken.first { !$0.isLocal }?.address)
    }

    /// The status endpoint's `systemd:NAME` sockets: those systemd passed as `NAME`. Nil when there are none.
    mutating func take(systemdName: String) -> [ListeningSocket]? {
        let picked = entries.indices.filter { entries[$0].source == .systemd && entries[$0].name == systemdName }
        guard !picked.isEmpty else { return nil }
        let taken = picked.map { entries[$0].socket }
        for index in picked.reversed() { entries.remove(at: index) }
        return taken
    }

    /// The names systemd passed sockets under that no listener took yet (for an error message).
    var systemdNames: [String] {
        var seen: [String] = []
        for entry in entries where entry.source == .systemd {
            let name = entry.name ?? "(unnamed)"
            if !seen.contains(name) { seen.append(name) }
        }
        return seen
    }

    /// The status socket handed over by the previous process, if it is on `address` (a status address
    /// changed in the file takes effect at the restart: the old socket is then closed, a new one bound).
    /// `address` nil: whatever the previous process served on (a `systemd:NAME` endpoint, whose socket only
    /// systemd could name).
    mutating func takeStatus(address: String?) -> ListeningSocket? {
        guard let status, address == nil || status.address == address else { return nil }
        self.status = nil
        return status.socket
    }

    /// Closes every socket no listener claimed, with a warning each (it would otherwise queue connections
    /// nobody accepts).
    mutating func closeUnclaimed(logger: Logger) {
        status?.socket.close()
        status = nil
        for entry in entries {
            logger.warning("inherited socket matches no listener: closing it", metadata: [
                "fd": "\(entry.socket.fd)", "listen.address": "\(entry.address)",
                "listen.fd_name": "\(entry.name ?? "")", "listen.source": "\(entry.source.rawValue)",
            ])
            entry.socket.close()
        }
        entries = []
    }

    /// Takes the ready descriptor (once).
    mutating func takeReadyFD() -> Int32? {
        defer { readyFD = nil }
        return readyFD
    }

    /// Spreads a listener's sockets over the workers: with at least as many sockets as workers, worker i
    /// takes sockets i, i+n, …; with fewer, workers share them through duplicated descriptors (one accept
    /// queue). Every returned descriptor is new; the caller keeps owning `sockets`.
    static func distribute(_ sockets: [ListeningSocket], workers: Int) throws(UVError) -> [[ListeningSocket]] {
        var result = [[ListeningSocket]](repeating: [], count: workers)
        do {
            if sockets.count >= workers {
                for (index, socket) in sockets.enumerated() { result[index % workers].append(try socket.duplicate()) }
            } else {
                for index in 0..<workers { result[index].append(try sockets[index % sockets.count].duplicate()) }
            }
        } catch {
            result.joined().forEach { $0.close() }
            throw error
        }
        return result
    }
}
