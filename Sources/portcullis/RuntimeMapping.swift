import Config
import Policy
import Proxy
import TLS

extension RuntimeConfiguration {
    /// Maps a validated configuration (from flags or a file) onto the runtime's configuration.
    /// `configPath` is set for a file: error messages then name keys (`listeners[0].tls.cert`) instead of
    /// flags, and the file itself is watched for changes.
    init(_ file: PortcullisConfiguration, configPath: String?) {
        let listeners = file.listeners.enumerated().map { index, settings in
            ListenerConfiguration(settings, keyPrefix: configPath.map { "\($0): listeners[\(index)]" })
        }
        self.init(listeners: listeners)
        workers = file.workers
        shutdownTimeoutMs = file.shutdownTimeoutMs
        sessionCacheSize = file.sessionCacheSize
        handshakeLimits = RuntimeConfiguration.HandshakeLimits(inProgress: file.handshakeLimits.inProgress,
                                                               perSource: file.handshakeLimits.perSource,
                                                               ratePerSource: file.handshakeLimits.ratePerSource)
        version = Portcullis.version
        quietHandshakeFailures = file.log.quietHandshakeFailures
        if let settings = file.status {
            status = ListenerConfiguration.Listen(settings.listen)
            statusHTTPS = settings.https
            statusSettingName = configPath.map { "\($0): status.listen" } ?? "--status"
        }
        var files = configPath.map { [$0] } ?? []
        for listener in file.listeners {
            let tls = listener.tls
            files += [tls.certificatePath, tls.keyPath, tls.keyPassphrasePath, tls.keystorePath, tls.keystorePasswordPath,
                      tls.caPath].compactMap { $0 } + tls.crlPaths
        }
        watchedFiles = files
    }
}

extension ListenerConfiguration {
    init(_ settings: ListenerSettings, keyPrefix: String?) {
        let isClient = settings.mode == .client
        var tls = TLSConfiguration(role: isClient ? .client : .server)
        tls.certificatePath = settings.tls.certificatePath
        tls.keyPath = settings.tls.keyPath
        tls.keyPassphrasePath = settings.tls.keyPassphrasePath
        tls.keystorePath = settings.tls.keystorePath
        if let file = settings.tls.keystorePasswordPath {
            tls.keystorePassword = .file(file)
        } else if let secret = settings.tls.keystorePassword {
            tls.keystorePassword = .given(secret)
        }
        tls.caPath = settings.tls.caPath
        tls.crlPaths = settings.tls.crlPaths
        tls.crlScope = settings.tls.crlScope
        tls.tolerateExpiredCRL = settings.tls.crlExpired == .warn
        tls.minimumVersion = settings.tls.minimumVersion
        tls.cipherSuites = settings.tls.cipherSuites
        tls.groups = settings.tls.groups
        tls.sessionTickets = settings.tls.sessionTickets
        tls.sessionTicketCount = settings.tls.sessionTicketCount
        if isClient {
            tls.serverName = settings.serverName
            tls.verifyServerName = settings.verifyServerName
        }
        self.init(listen: Listen(settings.listen), target: settings.target, tls: tls, policy: settings.policy)
        allowsNonLoopbackListen = !isClient || settings.unsafeListen
        name = settings.name
        mode = isClient ? .client : .server
        handshakeTimeoutMs = settings.timeouts.handshake
        connectTimeoutMs = settings.timeouts.connect
        idleTimeoutMs = settings.timeouts.idle
        closeTimeoutMs = settings.timeouts.close
        maxLifetimeMs = settings.timeouts.maxLifetime
        maxConnections = settings.maxConnections
        reauthorize = settings.reauthorize
        closeAtCertExpiry = settings.closeAtCertExpiry
        proxyProtocolV2 = settings.proxyProtocol == .v2
        if settings.tls.keystorePassword != nil { names.keystorePassword = "--storepass" }
        if let prefix = keyPrefix {
            names.listen = "\(prefix).listen"
            names.target = "\(prefix).target"
            names.certificate = "\(prefix).tls.cert"
            names.key = "\(prefix).tls.key"
            names.keyPassphrase = "\(prefix).tls.key-passphrase-file"
            names.keystore = "\(prefix).tls.keystore"
            names.keystorePassword = "\(prefix).tls.keystore-password-file"
            names.caBundle = "\(prefix).tls.cacert"
            names.crl = "\(prefix).tls.crl"
            names.tls = "\(prefix).tls"
        }
    }
}

extension ListenerConfiguration.Listen {
    /// The runtime's form of a validated listen address.
    init(_ address: ListenAddress) {
        switch address {
        case .tcp(let host, let port): self = .tcp(host: host, port: port)
        case .unix(let path): self = .unix(path: path)
        case .systemd(let name): self = .systemd(name: name)
        }
    }
}
