// Fuzz target tls-server: a server-role TLSSession (Sources/TLS/TLSSession.swift, CiphertextBIO.swift, the
// verify and ticket callbacks) fed arbitrary ciphertext as if from a client. See TLSFixture.pump for the
// input layout (2 bytes of chunking, then the client's bytes; seeds start with real ClientHellos).
import FuzzSupport
import TLS

@_cdecl("FuzzTLSServer_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    _ = TLSFixture.server
    return runLibFuzzer(argc, argv, fuzz)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let session = try? TLSSession(context: TLSFixture.server) else { fatalError("SSL_new failed") }
    TLSFixture.pump(session, bytes(data, size))
    return 0
}
