// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets for Portcullis. A separate package so the main build never sees sanitizer flags.
// Build and run with scripts/fuzz (see docs/FUZZING.md); the build needs
//   swift build --scratch-path Fuzz/.build -Xswiftc -sanitize=fuzzer,address
// in debug (the default): the targets use `@testable import` for the two parsers that are internal.
//
// Each fuzz target is an executable whose `<Target>_main` (the entry point SwiftPM links as `main`) hands
// control to libFuzzer's driver (`LLVMFuzzerRunDriver`), passing the target's `fuzz` function.
let targets: [(name: String, dependencies: [Target.Dependency])] = [
    ("FuzzConfigYAML", []),
    ("FuzzPattern", []),
    ("FuzzPolicy", []),
    ("FuzzStatusHTTP", []),
    ("FuzzProxyHeader", []),
    ("FuzzIdentityDER", []),
    ("FuzzTLSServer", []),
    ("FuzzTLSClient", []),
]

let package = Package(
    name: "PortcullisFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Portcullis", path: ".."),
    ],
    targets: [
        // Declares libFuzzer's LLVMFuzzerRunDriver (provided by the fuzzer runtime that -sanitize=fuzzer links).
        .target(name: "CFuzzDriver"),
        .target(
            name: "FuzzSupport",
            dependencies: ["CFuzzDriver", .product(name: "PortcullisFuzzable", package: "Portcullis")]
        ),
    ] + targets.map { target in
        .executableTarget(
            name: target.name,
            dependencies: ["FuzzSupport", .product(name: "PortcullisFuzzable", package: "Portcullis")] + target.dependencies,
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        )
    }
)
