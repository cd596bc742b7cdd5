// swift-tools-version: 6.1
import PackageDescription

// Micro benchmarks for Portcullis (package-benchmark). A separate package so the main build never pulls in
// the benchmark harness. Run with ./run.sh ci|full; see README.md.
let package = Package(
    name: "PortcullisMicroBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Portcullis", path: "../.."),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // OpenSSL directly, only for the "PEM parse only" reference point of the identity suite.
        .systemLibrary(name: "CBenchOpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .executableTarget(
            name: "PortcullisBenchmarks",
            dependencies: [
                .product(name: "PortcullisCore", package: "Portcullis"),
                .product(name: "Benchmark", package: "package-benchmark"),
                "CBenchOpenSSL",
            ],
            path: "Benchmarks/PortcullisBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
