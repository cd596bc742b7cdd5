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
            status = settings.listen
            statusHTTPS = settings.https
            statusSettingName = configPath.map { "\($0): status.listen" } ?? "--status"
        }
        var files = configPath.map { [$0] } ?? []
        for listener in file.listeners {
            let tls = listener.tls
            files += [tls.certificatePath, tls.keyPath, tls.caPath] + tls.crlPaths
            if let passphrase = tls.keyPassphrasePath { files.append(passphrase) }
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
        self.init(listenHost: settings.listen.host, listenPort: settings.listen.port, target: settings.target, tls: tls,
                  policy: settings.policy)
        name = settings.name
        mode = isClient ? .client : .server
        handshakeTimeoutMs = settings.timeouts.handshake
        connectTimeoutMs = settings.timeouts.connect
        idleTimeoutMs = settings.timeouts.idle
        closeTimeoutMs = settings.timeouts.close
        maxConnections = settings.maxConnections
        reauthorize = settings.reauthorize
        closeAtCertExpiry = settings.closeAtCertExpiry
        proxyProtocolV2 = settings.proxyProtocol == .v2
        if let prefix = keyPrefix {
            names.listen = "\(prefix).listen"
            names.target = "\(prefix).target"
            names.certificate = "\(prefix).tls.cert"
            names.key = "\(prefix).tls.key"
            names.keyPassphrase = "\(prefix).tls.key-passphrase-file"
            names.caBundle = "\(prefix).tls.cacert"
            names.crl = "\(prefix).tls.crl"
            names.tls = "\(prefix).tls"
        }
    }
}
