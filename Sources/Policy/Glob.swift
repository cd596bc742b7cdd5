/// The matching engine behind `Pattern`: a glob compiled once into flat tables of literal byte runs.
///
/// - `*` matches any run of bytes inside one segment (never the separator).
/// - `**` is a whole segment and matches one or more whole, non-empty segments.
/// - With no separator the value is one segment and `*` matches any run, including the empty one.
/// - With a separator, a segment that is only wildcards never matches an empty segment.
///
/// No regex, no allocation and no reference counting while matching: the tables hold only trivial values
/// and the value's UTF-8 is scanned in place. A pattern without wildcards is one length check and a compare.
final class Glob: Sendable {
    struct Invalid: Error {
        var reason: String
    }

    private struct Segment {
        /// `**`: one or more whole segments.
        var isGlobstar: Bool
        /// This segment's literal runs are `runs[firstRun ..< firstRun + runCount]`; the runs are split at `*`,
        /// so `app-*` has the runs `app-` and ``, and a literal segment has exactly one run.
        var firstRun: Int
        var runCount: Int
    }

    private struct Run {
        var start: Int
        var end: Int
        var count: Int { end - start }
    }

    private let segments: [Segment]
    private let runs: [Run]
    /// The literal runs' bytes, lowercased when `caseInsensitive`; for a literal pattern, the whole pattern.
    private let bytes: [UInt8]
    private let separator: UInt8
    private let hasSeparator: Bool
    private let caseInsensitive: Bool
    let isLiteral: Bool

    /// Compiles `pattern`. `unit` names a segment in messages ("label", "path segment").
    init(_ pattern: some Collection<UInt8>, separator: UInt8?, caseInsensitive: Bool, unit: String) throws(Invalid) {
        let star = UInt8(ascii: "*")
        let pattern = Array(pattern)
        let parts = separator.map { pattern.split(separator: $0, omittingEmptySubsequences: false) } ?? [pattern[...]]
        var segments: [Segment] = []
        var runs: [Run] = []
        var bytes: [UInt8] = []
        for part in parts {
            if part.elementsEqual([star, star]) {
                guard separator != nil else { throw Invalid(reason: "'**' only spans labels or path segments; use '*' here") }
                segments.append(Segment(isGlobstar: true, firstRun: runs.count, runCount: 0))
                continue
            }
            if part.indices.dropFirst().contains(where: { part[$0] == star && part[$0 - 1] == star }) {
                if separator == nil { throw Invalid(reason: "'**' only spans labels or path segments; use '*' here") }
                throw Invalid(reason: "'**' must be a whole \(unit)")
            }
            let segmentRuns = part.split(separator: star, omittingEmptySubsequences: false)
            segments.append(Segment(isGlobstar: false, firstRun: runs.count, runCount: segmentRuns.count))
            for run in segmentRuns {
                runs.append(Run(start: bytes.count, end: bytes.count + run.count))
                bytes += caseInsensitive ? run.map(asciiLowercase) : Array(run)
            }
        }
        self.isLiteral = segments.allSatisfy { !$0.isGlobstar && $0.runCount == 1 }
        self.segments = segments
        self.runs = runs
        self.bytes = isLiteral ? (caseInsensitive ? pattern.map(asciiLowercase) : pattern) : bytes
        self.separator = separator ?? 0
        self.hasSeparator = separator != nil
        self.caseInsensitive = caseInsensitive
    }

    func matches(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        bytes.withUnsafeBufferPointer { bytes in
            if isLiteral {
                return text.count == bytes.count && equal(bytes[...], text, at: 0)
            }
            return segments.withUnsafeBufferPointer { segments in
                runs.withUnsafeBufferPointer { runs in
                    Match(glob: self, segments: segments, runs: runs, bytes: bytes, text: text).match(from: 0, at: 0)
                }
            }
        }
    }

    /// The tables and the text, borrowed for one match.
    private struct Match {
        let glob: Glob
        let segments: UnsafeBufferPointer<Segment>
        let runs: UnsafeBufferPointer<Run>
        let bytes: UnsafeBufferPointer<UInt8>
        let text: UnsafeBufferPointer<UInt8>

        /// Does `segments[index...]` match the text from `start` (the beginning of a segment) to its end?
        func match(from index: Int, at start: Int) -> Bool {
            let isLastSegment = index == segments.count - 1
            let segment = segments[index]
            if !segment.isGlobstar {
                let end = segmentEnd(from: start)
                guard matchRuns(segment, start, end) else { return false }
                if isLastSegment { return end == text.count }
                guard end < text.count else { return false }
                return match(from: index + 1, at: end + 1)
            }
            var position = start
            while true {
                let end = segmentEnd(from: position)
                if end == position { return false }  // `**` never spans an empty segment
                if end == text.count { return isLastSegment }
                if !isLastSegment && match(from: index + 1, at: end + 1) { return true }
                position = end + 1
            }
        }

        @inline(__always)
        private func segmentEnd(from start: Int) -> Int {
            guard glob.hasSeparator else { return text.count }
            var index = start
            while index < text.count && text[index] != glob.separator { index += 1 }
            return index
        }

        /// Matches `text[lo..<hi]` against one segment's runs (leftmost placement is exact for `*`-only globs).
        private func matchRuns(_ segment: Segment, _ lo: Int, _ hi: Int) -> Bool {
            let first = runs[segment.firstRun]
            if segment.runCount == 1 {
                return hi - lo == first.count && glob.equal(bytes[first.start..<first.end], text, at: lo)
            }
            if glob.hasSeparator && hi == lo { return false }  // a wildcard never matches an empty segment
            let last = runs[segment.firstRun + segment.runCount - 1]
            guard hi - lo >= first.count + last.count,
                  glob.equal(bytes[first.start..<first.end], text, at: lo),
                  glob.equal(bytes[last.start..<last.end], text, at: hi - last.count)
            else { return false }
            var position = lo + first.count
            let limit = hi - last.count
            for runIndex in (segment.firstRun + 1)..<(segment.firstRun + segment.runCount - 1) {
                let run = runs[runIndex]
                if run.count == 0 { continue }
                var found = false
                while position + run.count <= limit {
                    if glob.equal(bytes[run.start..<run.end], text, at: position) {
                        found = true
                        break
                    }
                    position += 1
                }
                guard found else { return false }
                position += run.count
            }
            return true
        }
    }

    @inline(__always)
    private func equal(_ run: Slice<UnsafeBufferPointer<UInt8>>, _ text: UnsafeBufferPointer<UInt8>, at offset: Int) -> Bool {
        var textIndex = offset
        if caseInsensitive {
            for byte in run {
                if byte != asciiLowercase(text[textIndex]) { return false }
                textIndex += 1
            }
        } else {
            for byte in run {
                if byte != text[textIndex] { return false }
                textIndex += 1
            }
        }
        return true
    }
}

@inline(__always)
func asciiLowercase(_ byte: UInt8) -> UInt8 {
    byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
}

extension String {
    /// Runs `body` over the UTF-8 bytes in place (native strings), copying only when the storage is foreign.
    @inline(__always)
    func withUTF8Bytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let result = utf8.withContiguousStorageIfAvailable(body) { return result }
        var copy = self
        return copy.withUTF8(body)
    }
}
