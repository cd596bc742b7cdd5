import Foundation
import Histogram
import Testing
@testable import Bench

@Suite struct BenchTests {
    @Test(arguments: [(16, 2, [8, 8]), (5, 2, [3, 2]), (1, 4, [1]), (7, 3, [3, 2, 2])])
    func splitsLoadEvenlyAcrossThreads(_ total: Int, _ threads: Int, _ expected: [Int]) {
        #expect(Workloads.split(total, threads) == expected)
        #expect(Workloads.split(total, threads).reduce(0, +) == total)
    }

    @Test func mergingPartialsAddsCountsAndHistograms() {
        var a = Partial(), b = Partial()
        a.count = 3; b.count = 4
        a.bytesUp = 10; b.bytesUp = 5
        for v in [100, 200, 300] as [UInt64] { _ = a.histogram.record(v) }
        for v in [1000, 2000, 3000, 4000] as [UInt64] { _ = b.histogram.record(v) }
        a.errors = ["eof": 1]; b.errors = ["eof": 2, "connect-ECONNREFUSED": 1]
        a.firstReady = 50; b.firstReady = 40
        a.end = 90; b.end = 100
        let merged = Workloads.merge([a, b])
        #expect(merged.count == 7)
        #expect(merged.bytesUp == 15)
        #expect(merged.histogram.totalCount == 7)
        #expect(merged.histogram.max >= 4000 && merged.histogram.min <= 100)
        #expect(merged.histogram.valueAtPercentile(50) >= 300)
        #expect(merged.errors == ["eof": 3, "connect-ECONNREFUSED": 1])
        #expect(merged.firstReady == 40 && merged.end == 100)
    }

    @Test func jsonIsOneParsableObjectWithTheDocumentedFields() throws {
        var result = BenchResult(workload: "latency", target: "127.0.0.1:1 (TLS)")
        result.parameters = [("connections", "2"), ("note", "quote \" and \\ backslash")]
        result.values = [("requests", 10), ("requests_per_second", 12.5)]
        var histogram = newHistogram()
        for v in 1...100 as ClosedRange<UInt64> { _ = histogram.record(v) }
        result.latency = histogram
        result.errors = ["eof": 1]
        result.elapsedSeconds = 0.8
        result.targetCPUSeconds = 0.5
        let text = result.json(version: "9.9", machine: [("cpus", "2")])
        #expect(!text.contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["tool"] as? String == "portcullis bench")
        #expect((object["parameters"] as? [String: String])?["note"] == "quote \" and \\ backslash")
        let results = try #require(object["results"] as? [String: Any])
        #expect(results["requests"] as? Int == 10)
        let latency = try #require(results["latency_us"] as? [String: Any])
        #expect(latency["p50"] as? Int == 50)
        #expect(latency["count"] as? Int == 100)
        let cpu = try #require(object["cpu"] as? [String: Any])
        #expect(cpu["per_request_us"] as? Double == 50_000)
    }

    @Test func openLoopScheduleKeepsItsRateWhateverTheTickTiming() {
        // 1 ms interval; the ticker wakes late (at 0, 3.5 ms, 3.6 ms, 10 ms): every intended time is still
        // produced exactly once, in order, and none early.
        var schedule = OpenLoopSchedule(start: 0, interval: 1_000_000)
        var produced: [UInt64] = []
        for now: UInt64 in [0, 3_500_000, 3_600_000, 10_000_000] {
            schedule.forEachDue(now: now) { intended in
                #expect(intended <= now)
                produced.append(intended)
            }
        }
        #expect(produced == (0...10).map { UInt64($0) * 1_000_000 })
        #expect(schedule.next == 11_000_000)
    }
}
