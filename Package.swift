// swift-tools-version: 6.1
import PackageDescription

// Only the two bridge modules (EventLoop, TLS) import C; everything above them speaks Swift types.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("ExistentialAny"),
]

// The commit `portcullis version` prints: scripts/package sets PORTCULLIS_GIT_COMMIT (hex digits only; anything
// else, or unset, gives "unknown"). Only the tiny CBuildInfo target sees it, so a new commit recompiles one C file.
let gitCommit: String = {
    guard let value = Context.environment["PORTCULLIS_GIT_COMMIT"], (7...64).contains(value.count),
          value.allSatisfy({ $0.isHexDigit }) else { return "unknown" }
    return value.lowercased()
}()

let package = Package(
    name: "Portcullis",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "portcullis", targets: ["portcullis"]),
        // For the micro-benchmark package in Benchmarks/Micro (kept separate so the main build stays lean).
        .library(name: "PortcullisCore", targets: ["Policy", "TLS"]),
        // For the fuzz package in Fuzz/ (libFuzzer targets; kept separate so the main build has no sanitizer flags).
        .library(name: "PortcullisFuzzable", targets: ["Policy", "Config", "TLS", "Proxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
    ],
    targets: [
        .systemLibrary(name: "CLibUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // One shim target per C library, each including only that library (and libc).
        .target(name: "CUVShims", dependencies: ["CLibUV"]),
        .target(name: "COpenSSLShims", dependencies: ["COpenSSL"]),
        .target(name: "CSystemShims"),
        .target(name: "CBuildInfo", cSettings: [.define("PORTCULLIS_GIT_COMMIT", to: gitCommit)]),

        // Pure Swift: no C, no sockets. Config itself is pure Swift too; it uses TLS's parameter types
        // (TLSConfiguration.ProtocolVersion, .CRLScope) so that each exists once.
        .target(name: "Policy", swiftSettings: strictSettings),
        .target(name: "Config", dependencies: ["Policy", .product(name: "Yams", package: "Yams")], swiftSettings: strictSettings),

        // Bridges: the only modules that see libuv / OpenSSL.
        .target(name: "EventLoop", dependencies: ["CLibUV", "CUVShims", "CSystemShims"], swiftSettings: strictSettings),
        .target(name: "TLS", dependencies: ["COpenSSL", "COpenSSLShims", "Policy"], swiftSettings: strictSettings),
        // Process plumbing with libc only: descriptors, spawning the restart successor, the systemd notify socket.
        .target(name: "ProcessControl", dependencies: ["CSystemShims"], swiftSettings: strictSettings),

        // Byte streams over the two bridges: a plaintext stream and a TLS stream with one life and one
        // backpressure signal (no C of its own).
        .target(name: "Streams", dependencies: ["EventLoop", "TLS"], swiftSettings: strictSettings),

        .target(
            name: "Proxy",
            dependencies: [
                "EventLoop", "ProcessControl", "TLS", "Policy", "Streams",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        // The load generator: the same bridges as the proxy, no C of its own.
        .target(
            name: "Bench",
            dependencies: ["EventLoop", "TLS", "Policy", "Streams", .product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "portcullis",
            dependencies: [
                "Proxy", "Config", "Policy", "TLS", "Streams", "Bench", "CBuildInfo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),

        .testTarget(name: "PolicyTests", dependencies: ["Policy"], swiftSettings: strictSettings),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "Policy"], swiftSettings: strictSettings),
        // Tests may reach OpenSSL directly to build the objects they feed the bridge (sessions, stacks).
        .testTarget(name: "TLSTests", dependencies: ["TLS", "Policy", "COpenSSL"], swiftSettings: strictSettings),
        .testTarget(name: "BenchTests", dependencies: ["Bench", .product(name: "Histogram", package: "hdrhistogram-swift")],
                    swiftSettings: strictSettings),
        .testTarget(name: "ProxyTests", dependencies: ["Proxy", "Streams", "TLS", "EventLoop", .product(name: "Logging", package: "swift-log")],
                    swiftSettings: strictSettings),
    ]
)
