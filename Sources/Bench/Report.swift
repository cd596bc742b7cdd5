import Histogram
import Policy

#if canImport(Glibc)
import Glibc
#endif

extension BenchResult {
    static let percentiles: [(String, Double)] = [("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)]

    /// One JSON object (one line): tool, version, workload, target, parameters, machine, results, CPU.
    public func json(version: String, machine: [(String, String)]) -> String {
        var fields: [String] = [
            "\"tool\":\"portcullis bench\"", "\"version\":\(jsonString(version))", "\"workload\":\(jsonString(workload))",
            "\"target\":\(jsonString(target))",
            "\"parameters\":{" + parameters.map { "\(jsonString($0.0)):\(jsonString($0.1))" }.joined(separator: ",") + "}",
            "\"machine\":{" + machine.map { "\(jsonString($0.0)):\(jsonString($0.1))" }.joined(separator: ",") + "}",
        ]
        var results = values.map { "\(jsonString($0.0)):\(number($0.1))" }
        if let latency, latency.totalCount > 0 {
            let parts = BenchResult.percentiles.map { "\"\($0.0)\":\(latency.valueAtPercentile($0.1))" }
                + ["\"max\":\(latency.max)", "\"mean\":\(number(latency.mean))", "\"count\":\(latency.totalCount)"]
            results.append("\"latency_us\":{" + parts.joined(separator: ",") + "}")
        }
        results.append("\"errors\":{" + errors.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\($0.value)" }.joined(separator: ",") + "}")
        results.append("\"elapsed_s\":\(number(elapsedSeconds))")
        fields.append("\"results\":{" + results.joined(separator: ",") + "}")
        if let cpu = targetCPUSeconds {
            var parts = ["\"target_seconds\":\(number(cpu))"]
            if let n = value("handshakes"), n > 0 { parts.append("\"per_handshake_ms\":\(number(cpu / n * 1000))") }
            if let n = value("requests"), n > 0 { parts.append("\"per_request_us\":\(number(cpu / n * 1e6))") }
            let bytes = (value("bytes_up") ?? 0) + (value("bytes_down") ?? 0)
            if bytes > 0 { parts.append("\"per_gb_s\":\(number(cpu / (bytes / 1e9)))") }
            fields.append("\"cpu\":{" + parts.joined(separator: ",") + "}")
        }
        return "{" + fields.joined(separator: ",") + "}"
    }

    /// A readable block: the numbers that matter, latency percentiles, errors.
    public var table: String {
        var lines = ["\(workload) → \(target)  (" + parameters.map { "\($0.0)=\($0.1)" }.joined(separator: " ") + ")"]
        for (name, value) in values { lines.append("  \(pad(name, 26)) \(format(value))") }
        if let latency, latency.totalCount > 0 {
            let parts = BenchResult.percentiles.map { "\($0.0) \(latency.valueAtPercentile($0.1))" } + ["max \(latency.max)"]
            lines.append("  \(pad("latency µs", 26)) " + parts.joined(separator: "  "))
        }
        if let cpu = targetCPUSeconds { lines.append("  \(pad("target CPU seconds", 26)) \(format(cpu))") }
        if !errors.isEmpty {
            lines.append("  \(pad("errors", 26)) " + errors.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}

/// This machine, for the JSON `machine` object.
public func machineFacts(openSSL: String) -> [(String, String)] {
    var name = utsname()
    uname(&name)
    func field<T>(_ value: T) -> String {
        withUnsafeBytes(of: value) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
    }
    return [("cpus", "\(sysconf(Int32(_SC_NPROCESSORS_ONLN)))"), ("kernel", field(name.release)),
            ("arch", field(name.machine)), ("openssl", openSSL)]
}

func number(_ value: Double) -> String {
    guard value.isFinite else { return "null" }
    if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
    return String(format3(value))
}

func format3(_ value: Double) -> String {
    let scaled = (value * 1000).rounded() / 1000
    return "\(scaled)"
}

func format(_ value: Double) -> String {
    if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
    return format3(value)
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}
