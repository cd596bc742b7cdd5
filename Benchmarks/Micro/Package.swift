// swift-tools-version: 6.1
import PackageDescription

// Micro benchmarks for Portcullis (package-benchmark). A separate package so the main build never pulls in
// the benchmark harness. Run with ./run.sh ci|full; see README.md.
let package = Package(
    name: "PortcullisMicroBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Portcullis", path: "../.."),
        // The repository was renamed from package-benchmark; 1.38 warns on the legacy identifier. Only the
        // MallocInterposer trait: the default RuntimeInterposer trait would pull swift-runtime-interposer (not
        // needed: retain/release counts are not measured here, and it is not mirrored on our machines).
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // OpenSSL directly, only for the "PEM parse only" reference point of the identity suite.
        .systemLibrary(name: "CBenchOpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .executableTarget(
            name: "PortcullisBenchmarks",
            dependencies: [
                .product(name: "PortcullisCore", package: "Portcullis"),
                .product(name: "Benchmark", package: "benchmark"),
                "CBenchOpenSSL",
            ],
            path: "Benchmarks/PortcullisBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
