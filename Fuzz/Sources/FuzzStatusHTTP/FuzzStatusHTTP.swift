// Fuzz target status-http: the status endpoint's HTTP request-head parser (HTTPRequestHead.parse in
// Sources/Proxy/StatusServer.swift; internal, reached with @testable import in this debug-only build), fed
// the whole input at once and in the chunks a socket would deliver (the server re-parses what it has
// after every read and answers the first result that is not `.incomplete`).
//
// Input: byte 0 is the chunk size for the incremental pass (1…256); the rest is the request.
@testable import Proxy
import FuzzSupport

@_cdecl("FuzzStatusHTTP_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, fuzz)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzReader(bytes(data, size))
    let chunk = Int(input.byte()) + 1
    let request = input.rest()

    let whole = HTTPRequestHead.parse(request)
    check(whole, request)

    // As the server sees it: the first answer that is not `.incomplete`, after each chunk.
    var received: [UInt8] = []
    var offset = 0
    while offset < request.count {
        let end = min(request.count, offset + chunk)
        received += request[offset..<end]
        offset = end
        let result = HTTPRequestHead.parse(received)
        check(result, received)
        if case .incomplete = result { continue }
        // A complete request line and head: what follows it (a body, a pipelined request) changes nothing.
        if case .request = result {
            fuzzCheck(whole == result, "request parsed differently once more bytes arrived: \(result) vs \(whole)")
        }
        break
    }
    return 0
}

func check(_ result: HTTPRequestHead.Parse, _ bytes: [UInt8]) {
    switch result {
    case .incomplete:
        fuzzCheck(bytes.count <= HTTPRequestHead.maxHeadBytes, "\(bytes.count) bytes still incomplete")
    case .request(let head):
        fuzzCheck(!head.method.isEmpty && head.method.allSatisfy(\.isUppercase), "method \(head.method)")
        fuzzCheck(head.path.utf8.first == UInt8(ascii: "/") && !head.path.utf8.contains(UInt8(ascii: "?")), "path \(head.path)")
        fuzzCheck(head.path.utf8.allSatisfy { $0 >= 0x21 && $0 < 0x7F }, "path with a space or control byte: \(head.path)")
    case .invalid(let status, let message):
        fuzzCheck([400, 431, 505].contains(status), "status \(status)")
        fuzzCheck(HTTPResponse.reasons[status] != nil && !message.isEmpty, "no reason for \(status)")
        _ = HTTPResponse.json(status, message).serialized(includeBody: true)
    }
}
