#if canImport(Glibc)
import Glibc
#endif

/// Reads a target process (and its descendants, for multi-process terminators) from /proc.
public enum ProcessStats {
    /// The process and every descendant (nginx and HAProxy master/worker trees).
    public static func tree(_ pid: Int32) -> [Int32] {
        var result = [pid]
        var index = 0
        while index < result.count {
            let current = result[index]
            index += 1
            for task in entries("/proc/\(current)/task") {
                let children = read("/proc/\(current)/task/\(task)/children") ?? ""
                result += children.split(separator: " ").compactMap { Int32($0) }
            }
        }
        return result
    }

    /// User + system CPU seconds of the process tree.
    public static func cpuSeconds(_ pid: Int32) -> Double {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return tree(pid).reduce(0.0) { total, p in
            guard let stat = read("/proc/\(p)/stat"), let close = stat.lastIndex(of: ")") else { return total }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return total }
            return total + (user + system) / ticks
        }
    }

    /// Resident set size of the tree in KiB (VmRSS summed; shared pages counted once per process).
    public static func rssKiB(_ pid: Int32) -> Int {
        tree(pid).reduce(0) { $0 + field(read("/proc/\($1)/status"), "VmRSS:") }
    }

    /// Proportional set size of the tree in KiB (shared pages divided among sharers), if readable.
    public static func pssKiB(_ pid: Int32) -> Int? {
        var total = 0
        for p in tree(pid) {
            guard let rollup = read("/proc/\(p)/smaps_rollup") else { return nil }
            total += field(rollup, "Pss:")
        }
        return total
    }

    private static func field(_ text: String?, _ name: String) -> Int {
        guard let text else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    static func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n > 0 { out += chunk[0..<n] }
            if n < chunk.count { break }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func entries(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
