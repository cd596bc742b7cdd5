#if canImport(Glibc)
import Glibc
#endif

/// The symbolic links on the way to a file.
public enum SymbolicLinks {
    /// Every symbolic link met while resolving `path` (relative paths from the working directory), as the
    /// directory holding it and its name, in the order met. A file reached through links changes when one of
    /// them is replaced — a Kubernetes volume swaps its `..data` link, certbot re-points `live/…/cert.pem` —
    /// possibly in a directory other than the file's own. Resolution stops at a component that cannot be read
    /// (missing: the links met so far are still returned) and after 40 links (a loop).
    public static func traversed(resolving path: String) -> [(directory: String, name: String)] {
        var pending = components(of: path)
        var resolved: [String] = path.hasPrefix("/") ? [] : components(of: workingDirectory())
        var links: [(directory: String, name: String)] = []
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == "." { continue }
            if component == ".." {
                _ = resolved.popLast()  // `resolved` has no links left in it: its parent is the physical one
                continue
            }
            let directory = "/" + resolved.joined(separator: "/")
            guard let target = linkTarget(of: "/" + (resolved + [component]).joined(separator: "/")) else {
                guard errno == EINVAL else { break }  // not a link: a real directory or file
                resolved.append(component)
                continue
            }
            links.append((directory, component))
            if links.count > 40 { break }
            if target.hasPrefix("/") { resolved = [] }
            pending = components(of: target) + pending
        }
        return links
    }

    private static func components(of path: String) -> [String] {
        path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
    }

    /// The link's target, or nil with `errno` set (EINVAL: not a link).
    private static func linkTarget(of path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func workingDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "/" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
