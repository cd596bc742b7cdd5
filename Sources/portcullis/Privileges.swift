import ArgumentParser
import Logging
import Policy
import Proxy

#if canImport(Glibc)
import Glibc
#endif

/// Process options of `server`, `client` and `run` (not configuration keys: they concern the process, not a
/// listener): which user and group to become once the sockets are bound and the keys are loaded.
struct PrivilegeOptions: ParsableArguments {
    @Option(help: "After binding and loading keys, switch to this user (name or UID) and its groups; the switch is irreversible.")
    var user: String?
    @Option(help: "After binding and loading keys, switch to this group (name or GID); default with --user: the user's primary group.")
    var group: String?
    @Flag(name: .customLong("allow-root"), help: "Run as root without --user (refused otherwise).")
    var allowRoot = false
}

/// Who to become: resolved before anything is bound, so an unknown name fails fast.
struct PrivilegeDrop {
    /// The user's name (for initgroups and the log), when `--user` was given.
    var userName: String?
    var uid: uid_t?
    var gid: gid_t?

    /// Refuses root without `--user` or `--allow-root`, and resolves the names. `nil` when there is nothing to do.
    static func plan(_ options: PrivilegeOptions) throws -> PrivilegeDrop? {
        if geteuid() == 0 && options.user == nil && !options.allowRoot {
            throw CommandFailure(
                message: "refusing to run as root: a proxy facing the network should not keep root; pass --user NAME to drop to that user after binding and loading keys, or --allow-root to run as root anyway",
                code: 2)
        }
        guard options.user != nil || options.group != nil else { return nil }
        var drop = PrivilegeDrop()
        if let user = options.user {
            guard let entry = lookUpUser(user) else {
                throw CommandFailure(message: "--user \(quoted(user)): no such user: give a user name or UID from /etc/passwd, e.g. --user nobody", code: 2)
            }
            drop.userName = entry.name
            drop.uid = entry.uid
            drop.gid = entry.gid
        }
        if let group = options.group {
            guard let gid = lookUpGroup(group) else {
                throw CommandFailure(message: "--group \(quoted(group)): no such group: give a group name or GID from /etc/group, e.g. --group nogroup", code: 2)
            }
            drop.gid = gid
        }
        return drop
    }

    /// Becomes the planned user and group: supplementary groups, then the group, then the user (in that order:
    /// after setuid the others are no longer allowed). Verifies the result, and that root cannot be regained.
    /// `socketFiles` (the `unix:` listeners' sockets, bound as root) are given to the user and group first.
    func apply(logger: Logger, socketFiles: [String] = []) throws {
        let flag = uid != nil ? "--user" : "--group"
        let subject = userName.map { quoted($0) } ?? gid.map { "gid \($0)" } ?? ""
        if geteuid() != 0 {
            // Without root nothing can be switched; asking for what we already are is fine.
            if (uid ?? getuid()) == getuid() && (gid ?? getgid()) == getgid() { return }
            throw CommandFailure(message: "\(flag) \(subject): only root can switch users and groups (running as uid \(getuid())): start as root, or drop \(flag)")
        }
        for path in socketFiles {
            // lchown: the file is the socket we just bound; never follow a link someone put in its place.
            try check(lchown(path, uid ?? uid_t.max, gid ?? gid_t.max), flag, subject, "chown '\(path)'")
        }
        if let gid {
            if let userName {
                try check(initgroups(userName, gid), flag, subject, "initgroups")
            } else {
                var groups = [gid]
                try check(setgroups(1, &groups), flag, subject, "setgroups")
            }
            try check(setgid(gid), flag, subject, "setgid(\(gid))")
        }
        if let uid { try check(setuid(uid), flag, subject, "setuid(\(uid))") }

        let (realUID, effectiveUID, realGID, effectiveGID) = (getuid(), geteuid(), getgid(), getegid())
        guard uid.map({ realUID == $0 && effectiveUID == $0 }) ?? true, gid.map({ realGID == $0 && effectiveGID == $0 }) ?? true else {
            throw CommandFailure(message: "\(flag) \(subject): the switch did not take (uid \(realUID)/\(effectiveUID), gid \(realGID)/\(effectiveGID)): not serving")
        }
        // Irreversible: a non-root user must not be able to become root again (the saved IDs were replaced too).
        if let uid, uid != 0, setuid(0) == 0 || seteuid(0) == 0 {
            throw CommandFailure(message: "\(flag) \(subject): root could be regained after the switch: not serving")
        }
        var metadata: Logger.Metadata = ["uid": "\(getuid())", "gid": "\(getgid())"]
        if let userName { metadata["user"] = "\(userName)" }
        logger.info("dropped privileges", metadata: metadata)
    }

    private func check(_ rc: Int32, _ flag: String, _ subject: String, _ call: String) throws {
        guard rc != 0 else { return }
        let reason = String(cString: strerror(errno))
        throw CommandFailure(message: "\(flag) \(subject): cannot switch: \(call) failed: \(reason)")
    }

    private static func lookUpUser(_ text: String) -> (name: String, uid: uid_t, gid: gid_t)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        if getpwnam_r(text, &entry, &buffer, buffer.count, &result) == 0, let found = result {
            return (String(cString: found.pointee.pw_name), found.pointee.pw_uid, found.pointee.pw_gid)
        }
        // A numeric UID must have an entry too: without one there is no primary group to take.
        guard let number = UInt32(text), getpwuid_r(number, &entry, &buffer, buffer.count, &result) == 0, let found = result else {
            return nil
        }
        return (String(cString: found.pointee.pw_name), found.pointee.pw_uid, found.pointee.pw_gid)
    }

    private static func lookUpGroup(_ text: String) -> gid_t? {
        var entry = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        if getgrnam_r(text, &entry, &buffer, buffer.count, &result) == 0, let found = result { return found.pointee.gr_gid }
        guard let number = UInt32(text) else { return nil }
        if getgrgid_r(number, &entry, &buffer, buffer.count, &result) == 0, let found = result { return found.pointee.gr_gid }
        return number  // a bare GID without a name in /etc/group is still a group
    }
}

/// Warns once per file when a private key, a keystore or their password files are readable by group or others.
func warnAboutReadableKeys(_ configuration: RuntimeConfiguration, logger: Logger) {
    var seen: Set<String> = []
    for listener in configuration.listeners {
        var keystorePasswordFile: String?
        if case .file(let path)? = listener.tls.keystorePassword { keystorePasswordFile = path }
        let secrets = [listener.tls.keyPath, listener.tls.keyPassphrasePath, listener.tls.keystorePath, keystorePasswordFile]
        for path in secrets.compactMap({ $0 }) where seen.insert(path).inserted {
            var info = stat()
            guard stat(path, &info) == 0, info.st_mode & 0o077 != 0 else { continue }
            logger.warning("key file readable by group or others", metadata: [
                "file": "\(path)", "file.mode": "0\(String(info.st_mode & 0o777, radix: 8))", "fix": "chmod 600 \(path)",
            ])
        }
    }
}

private func quoted(_ text: String) -> String { singleQuoted(text, limit: 64) }
