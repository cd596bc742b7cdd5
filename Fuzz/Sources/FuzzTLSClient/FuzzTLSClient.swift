// Fuzz target tls-client: a client-role TLSSession that has sent its ClientHello, fed arbitrary ciphertext as
// if from the server (ServerHello, and with TLS 1.2 the server's certificate in the clear, which reaches the
// verify callback and the identity extraction). See TLSFixture.pump for the input layout (2 bytes of
// chunking, then the server's bytes; seeds start with real server flights).
import FuzzSupport
import TLS

@_cdecl("FuzzTLSClient_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    _ = TLSFixture.client
    return runLibFuzzer(argc, argv, fuzz)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let session = try? TLSSession(context: TLSFixture.client) else { fatalError("SSL_new failed") }
    guard case .needsInput = session.handshake() else { fatalError("no ClientHello") }
    TLSFixture.pump(session, bytes(data, size))
    return 0
}
