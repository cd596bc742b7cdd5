import Foundation
import Policy
import TLS

/// The TLS contexts the session targets use, loaded from the throwaway PKI committed in Fuzz/PKI (made once
/// with openssl, valid for 100 years; see docs/FUZZING.md). Fixed rather than minted per run so that the
/// committed server flights in Fuzz/Corpus/tls-client carry a certificate the client context verifies: the
/// fuzzer then gets past chain verification into the identity check and the rest of the TLS 1.2 handshake.
/// TLS 1.2 is allowed so that more of the handshake is plaintext (and reachable by the fuzzer).
public enum TLSFixture {
    public static let server: TLSContext = make(.server)
    public static let client: TLSContext = make(.client)

    /// Fuzz/PKI, found from this source file (the fuzz package is only ever built in place).
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("PKI").path

    private static func make(_ role: TLSConfiguration.Role) -> TLSContext {
        var configuration = TLSConfiguration(role: role)
        configuration.caPath = directory + "/ca.pem"
        configuration.minimumVersion = .tls12
        let policy: AccessPolicy?
        switch role {
        case .server:
            configuration.certificatePath = directory + "/server.pem"
            configuration.keyPath = directory + "/server.key"
            policy = AccessPolicy(rules: [try! AccessRule(name: "clients", matchers: [try! Matcher(kind: .cn, value: "client-*")])])
        case .client:
            configuration.certificatePath = directory + "/client.pem"
            configuration.keyPath = directory + "/client.key"
            configuration.serverName = "localhost"
            policy = nil
        }
        do {
            return try TLSContext(configuration: configuration, policy: policy)
        } catch {
            fatalError("cannot load the fuzzing PKI from \(directory): \(error)")
        }
    }

    /// Feeds `input` to `session` as ciphertext from the peer, the way the TLS stream does: chunk by chunk,
    /// handshaking until it completes, then reading (and echoing what was read), and discarding whatever the
    /// session wants to send. Input: byte 0 is the chunk size in units of 16 bytes (0: everything at once),
    /// byte 1's low bit chooses lent (`receiving`) or copied (`receive`) ciphertext; the rest is ciphertext.
    public static func pump(_ session: TLSSession, _ input: [UInt8]) {
        guard input.count >= 2 else { return }
        let chunk = input[0] == 0 ? Int.max : Int(input[0]) * 16
        let lend = input[1] & 1 == 0
        let ciphertext = input[2...]
        var plaintext = [UInt8](repeating: 0, count: 16 * 1024)
        session.consumeOutput(session.pendingOutputCount)

        /// One step after new ciphertext arrived; false once the connection is over.
        func step() -> Bool {
            defer { session.consumeOutput(session.pendingOutputCount) }
            if !session.isHandshakeComplete {
                switch session.handshake() {
                case .failed: return false
                case .needsInput: return true
                case .complete:
                    _ = session.protocolVersion
                    _ = session.cipherName
                    _ = session.serverNameIndication
                }
            }
            while true {
                let result = plaintext.withUnsafeMutableBytes { session.read(into: $0) }
                switch result {
                case .bytes(let count):
                    if plaintext.withUnsafeBytes({ session.write(UnsafeRawBufferPointer(rebasing: $0[..<count])) }) != nil {
                        return false
                    }
                case .needsInput: return true
                case .closed, .failed: return false
                }
            }
        }

        var offset = ciphertext.startIndex
        while offset < ciphertext.endIndex {
            let end = ciphertext.endIndex - offset > chunk ? offset + chunk : ciphertext.endIndex
            let going = ciphertext[offset..<end].withUnsafeBytes { bytes in
                if lend { return session.receiving(bytes) { step() } }
                session.receive(bytes)
                return step()
            }
            offset = end
            if !going { break }
        }
        session.sendCloseNotify()
        session.consumeOutput(session.pendingOutputCount)
    }
}
