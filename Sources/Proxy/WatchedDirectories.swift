import ProcessControl

/// Which directories to watch, and for which entry names, so that a change to any of `files` is seen: each
/// file's own directory, and the directory of every symbolic link on the way to it. A Kubernetes projected
/// volume with `items: [{key: tls.crt, path: tls/tls.crt}]` holds `tls/tls.crt -> ../..data/tls/tls.crt` and
/// swaps `..data` one level up, in a directory that holds none of the configured files.
func watchedDirectories(for files: [String]) -> [String: Set<String>] {
    var wanted: [String: Set<String>] = [:]
    for file in files {
        let (directory, name) = splitPath(file)
        wanted[directory, default: []].insert(name)
        for link in SymbolicLinks.traversed(resolving: file) {
            wanted[link.directory, default: []].insert(link.name)
        }
    }
    return wanted
}

func splitPath(_ path: String) -> (directory: String, name: String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let directory = String(path[..<slash])
    return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
}
