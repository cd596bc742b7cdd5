// Fuzz target config-yaml: the YAML configuration reader (Yams' parser, then Portcullis's hand-written walk
// of the node tree, every validator it calls, and the effective-configuration renderers on success).
import Config
import FuzzSupport

@_cdecl("FuzzConfigYAML_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, fuzz)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: bytes(data, size), as: UTF8.self)
    do {
        // checkFiles: false, so referenced certificates need not exist (as for examples and templates).
        let configuration = try PortcullisConfiguration.parse(yaml: text, source: "/fuzz/portcullis.yaml", checkFiles: false)
        fuzzCheck(!configuration.effectiveDescription().isEmpty, "empty effective description")
        fuzzCheck(!configuration.effectiveJSON().isEmpty, "empty effective JSON")
    } catch {
        // Every rejection is one line naming the source file.
        fuzzCheck(error.message.hasPrefix("/fuzz/portcullis.yaml"), "message without its source: \(error.message)")
    }
    return 0
}
