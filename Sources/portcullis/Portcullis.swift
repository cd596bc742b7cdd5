import ArgumentParser
import CBuildInfo
import Config
import Logging
import Proxy

#if canImport(Glibc)
import Glibc
#endif

struct Portcullis: ParsableCommand {
    static let version = "0.1.0"
    /// The git commit this binary was built from; "unknown" unless built by scripts/package (see Package.swift).
    static let gitCommit = String(cString: pc_build_git_commit())

    static let configuration = CommandConfiguration(
        commandName: "portcullis",
        abstract: "An mTLS sidecar: TLS 1.3 with required client certificates in front of plaintext services.",
        version: version,
        subcommands: [ServerCommand.self, ClientCommand.self, RunCommand.self, CheckCommand.self, BenchCommand.self, DemoCommand.self, VersionCommand.self]
    )
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version, the git commit and the libraries in use.")

    func run() {
        print("portcullis \(Portcullis.version) (commit \(Portcullis.gitCommit))")
        print(Proxy.libraryVersions)
    }
}

/// Writes one line to stderr (Swift 6 forbids touching the global `stderr`).
func printError(_ message: String) {
    let flattened = message.split(separator: "\n", omittingEmptySubsequences: true).joined(separator: " ")
    var line = Array((flattened + "\n").utf8)
    _ = line.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

/// Parses and runs, reporting any usage error as one line (the flag, the value, the fix) instead of a usage dump.
@main
enum Main {
    static func main() {
        do {
            let name = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
            let arguments = try ghostunnelCompatible(Array(CommandLine.arguments.dropFirst()),
                                                     asGhostunnel: name == GhostunnelFlags.invocationName)
            var command = try Portcullis.parseAsRoot(arguments)
            try command.run()
        } catch let exit as ExitCode {
            Glibc.exit(exit.rawValue)
        } catch let failure as CommandFailure {
            printError("portcullis: \(failure.message)")
            Glibc.exit(failure.code)
        } catch {
            let code = Portcullis.exitCode(for: error)
            if code == .success {
                print(Portcullis.fullMessage(for: error))
                Glibc.exit(0)
            }
            let message = Portcullis.message(for: error)
            printError("portcullis: \(message.isEmpty ? "\(error)" : message) (see 'portcullis --help')")
            Glibc.exit(code.rawValue)
        }
    }
}

/// `server` and `client` command lines with ghostunnel's spellings rewritten to ours (`GhostunnelFlags`), and,
/// when the binary runs under the name `ghostunnel`, ghostunnel's defaults where ours differ; a ghostunnel
/// flag that means nothing here is one line and exit code 2.
func ghostunnelCompatible(_ arguments: [String], asGhostunnel: Bool) throws -> [String] {
    guard let command = arguments.first, let mode = ListenerMode(rawValue: command), command == "server" || command == "client" else {
        return arguments
    }
    do {
        let ours = try GhostunnelFlags.rewrite(Array(arguments.dropFirst()), mode: mode)
        return [command] + (asGhostunnel ? GhostunnelFlags.ghostunnelDefaults(ours) : ours)
    } catch {
        throw CommandFailure(message: error.description, code: 2)
    }
}

/// A failure already phrased for the user: one line, and the exit code.
struct CommandFailure: Error {
    let message: String
    var code: Int32 = 1
}
