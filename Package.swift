// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "netprobe",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "ProbeResults", targets: ["ProbeResults"]),
        .library(name: "ProbeEngine", targets: ["ProbeEngine"]),
        .library(name: "Diagnosis", targets: ["Diagnosis"]),
        .executable(name: "netprobe", targets: ["netprobe"]),
        .library(name: "NetSim", targets: ["NetSim"]),
        .library(name: "ProbeConfig", targets: ["ProbeConfig"]),
        .library(name: "InfluxSink", targets: ["InfluxSink"]),
        .library(name: "ProbeService", targets: ["ProbeService"]),
        .executable(name: "netsim", targets: ["netsim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // The sink's HTTP client (see ServerWriter for why not URLSession).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // The /metrics and /probe HTTP server (PrometheusExporter): swift-nio underneath,
        // on its own event-loop threads, never on the probe loop's.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        // Hummingbird's own lifecycle library: a graceful stop of the server at `run`'s end.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        // The HTTP parts Hummingbird's pipeline carries (the exporter's connection guard).
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        .target(
            name: "CSystemShims",
            path: "CSystemShims",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("cap")]
        ),
        .target(
            // The values every side shares: results, addresses, outcomes, the schema.
            name: "ProbeResults"
        ),
        .target(
            // `check`'s verdicts: network, server or neither, and where on the path.
            name: "Diagnosis",
            dependencies: ["ProbeResults"]
        ),
        .target(
            name: "ProbeEngine",
            dependencies: [
                "ProbeResults",
                "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),
        .executableTarget(
            name: "netprobe",
            dependencies: [
                "ProbeResults",
                "CSystemShims",
                "ProbeEngine",
                "ProbeConfig",
                "InfluxSink",
                "ProbeService",
                "Diagnosis",
                "Dashboards",
                "PrometheusExporter",
                "WebView",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Release builds link with lld (it ships with the Swift toolchain) for less
            // resident memory (BENCHMARKS.md, "What the resident set is made of"):
            // - the functions `run` and `ping` execute go first in .text (netprobe.order,
            //   made by Tests/Benchmarks/link-order.sh): the kernel maps 64 KiB around
            //   every code page touched, so packed hot code is about 6 MB less;
            // - relative relocations packed as DT_RELR (glibc 2.36+, Debian 12): the
            //   dynamic loader no longer reads 3 MB of them at every start.
            linkerSettings: [
                .unsafeFlags(["-use-ld=lld",
                              "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/deploy/link-order/netprobe.order",
                              "-Xlinker", "--no-warn-symbol-ordering",
                              "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"],
                             .when(configuration: .release)),
            ]
        ),
        .target(
            name: "ProbeConfig",
            dependencies: [
                "ProbeResults",
                // The config decodes into the shared vocabulary (TCPProbeMode,
                // AddressPreference), not twins of it; the sink reads its `InfluxAPI`.
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(
            name: "InfluxSink",
            dependencies: [
                "ProbeResults",
                "ProbeConfig",
                "CZlib",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "ProbeService",
            dependencies: [
                "ProbeResults",
                "ProbeEngine",
                "ProbeConfig",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "PrometheusExporter",
            dependencies: [
                // Never the engine: /probe runs probes through OnDemandProber (ProbeResults).
                "ProbeResults",
                "ProbeConfig",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "WebView",
            dependencies: [
                // A sink like the others: rounds through RoundObserver, settings from the
                // config, verdicts from Diagnosis; never the engine or the service.
                "ProbeResults",
                "ProbeConfig",
                "Diagnosis",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                // InfluxHistory trusts the server's configured CA (ca_file), as the sink does.
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Dashboards",
            dependencies: ["ProbeResults", "ProbeConfig"]
        ),
        .target(
            name: "CZlib",
            linkerSettings: [.linkedLibrary("z")]
        ),
        .target(
            name: "NetSim",
            dependencies: [
                "ProbeResults",
                "CSystemShims",
                "ProbeEngine",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .executableTarget(
            name: "netsim",
            dependencies: [
                "NetSim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Named apart from NetSim (the library): the two folders must not differ only by case.
            path: "Sources/NetSimTool"
        ),
        .testTarget(
            name: "NetSimTests",
            // ProbeService, ProbeConfig, InfluxSink and TestSupport: `run` with traces into a real influxd (TracedRunTests);
            // WebView: the live view over a run against the simulator (LiveViewLossTests).
            dependencies: ["ProbeResults", "NetSim", "ProbeEngine", "netprobe", "netsim", "ProbeService", "ProbeConfig", "InfluxSink", "TestSupport", "WebView"]
        ),
        .testTarget(
            name: "ProbeConfigTests",
            dependencies: ["ProbeResults", "ProbeConfig", "InfluxSink"],
            resources: [.copy("Fixtures")]
        ),
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "InfluxSinkTests",
            dependencies: ["InfluxSink", "ProbeResults", "ProbeConfig", "TestSupport", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "DiagnosisTests",
            dependencies: ["Diagnosis", "ProbeResults", "ProbeEngine"]
        ),
        .testTarget(
            name: "ProbeEngineTests",
            dependencies: ["ProbeResults", "ProbeEngine", "CSystemShims", "TestSupport"]
        ),
        .testTarget(
            name: "DashboardsTests",
            dependencies: ["ProbeResults", "Dashboards", "ProbeConfig", "TestSupport", "netprobe"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "ProbeServiceTests",
            dependencies: ["ProbeResults", "ProbeService", "ProbeEngine", "ProbeConfig", "InfluxSink", "TestSupport"]
        ),
        .testTarget(
            name: "PrometheusExporterTests",
            // WebView: the live view's browser test reads its grid and colour scale.
            dependencies: ["ProbeResults", "PrometheusExporter", "ProbeService", "ProbeEngine", "ProbeConfig", "TestSupport", "netprobe", "Dashboards", "WebView",
                           .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "WebViewTests",
            dependencies: ["WebView", "ProbeResults", "ProbeConfig", "Diagnosis", "TestSupport"]
        ),
        .testTarget(
            name: "IntegrationTests",
            // ProbeService, ProbeConfig and InfluxSink: `run` with MTU traces into a real influxd
            // over a RouterChain (PathMTURouterTests).
            dependencies: ["ProbeResults", "ProbeEngine", "netprobe", "TestSupport", "ProbeService", "ProbeConfig", "InfluxSink"]
        ),
    ]
)
