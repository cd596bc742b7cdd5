// RemotingTlsClient: what a RocketMQ Java client does on the wire, with only the JDK.
//
// Opens TLS 1.3 with the JDK's own stack (SunJSSE): the client certificate and key come from a PKCS#12
// keystore, the CAs it trusts from a PKCS#12 truststore, the server's host name is checked (HTTPS endpoint
// identification). Then it sends COUNT frames framed like RocketMQ remoting commands (a 4-byte big-endian
// length, then that many bytes) and checks that each one comes back intact. Compiled and run by run.sh:
//
//   java RemotingTlsClient HOST PORT KEYSTORE.p12 KEYSTORE_PASS TRUSTSTORE.p12 TRUSTSTORE_PASS COUNT [--expect-refused]
//
// Prints PASS/FAIL lines; exit 0 when the outcome is the expected one (COUNT round trips, or a refusal).
import java.io.DataInputStream;
import java.io.BufferedOutputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.KeyStore;
import java.util.Arrays;
import java.util.Random;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

public final class RemotingTlsClient {
    public static void main(String[] args) throws Exception {
        if (args.length < 7) {
            System.err.println("usage: RemotingTlsClient HOST PORT KEYSTORE.p12 PASS TRUSTSTORE.p12 PASS COUNT [--expect-refused]");
            System.exit(2);
        }
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        int count = Integer.parseInt(args[6]);
        boolean expectRefused = args.length > 7 && args[7].equals("--expect-refused");

        KeyStore keyStore = load(args[2], args[3]);
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keyStore, args[3].toCharArray());
        KeyStore trustStore = load(args[4], args[5]);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trustStore);
        SSLContext ctx = SSLContext.getInstance("TLSv1.3");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);

        String who = expectRefused ? "refused" : "roundtrip";
        String stage = "connect";
        try (SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(host, port)) {
            s.setSoTimeout(10_000);
            s.setTcpNoDelay(true); // request/response traffic: do not let Nagle hold small frames
            s.setEnabledProtocols(new String[] {"TLSv1.3"});
            SSLParameters params = s.getSSLParameters();
            params.setEndpointIdentificationAlgorithm("HTTPS"); // the server certificate must name HOST
            s.setSSLParameters(params);
            stage = "handshake";
            s.startHandshake();
            stage = "first exchange";
            String negotiated = s.getSession().getProtocol() + " " + s.getSession().getCipherSuite();
            String server = s.getSession().getPeerPrincipal().getName();
            // One write (one TLS record) per frame, as Netty writes a whole encoded command.
            DataOutputStream out = new DataOutputStream(new BufferedOutputStream(s.getOutputStream(), 1 << 17));
            DataInputStream in = new DataInputStream(s.getInputStream());
            Random rnd = new Random(42);
            long bytes = 0;
            for (int i = 0; i < count; i++) {
                // Sizes like remoting commands: mostly small headers and bodies, now and then a 64 KiB batch.
                int size = (i % 100 == 99) ? 65536 : 16 + rnd.nextInt(4096);
                byte[] payload = new byte[size];
                rnd.nextBytes(payload);
                out.writeInt(size);
                out.write(payload);
                out.flush();
                int len = in.readInt();
                if (len != size) {
                    fail(who, "message " + i + ": frame length " + len + ", sent " + size);
                }
                byte[] back = new byte[len];
                in.readFully(back);
                if (!Arrays.equals(back, payload)) {
                    fail(who, "message " + i + ": " + size + " bytes came back different");
                }
                bytes += size;
                stage = "exchange";
            }
            if (expectRefused) {
                fail(who, "not refused: " + count + " messages went through as " + negotiated);
            }
            System.out.println("PASS " + who + " " + count + " length-prefixed messages (" + bytes
                + " payload bytes) echoed intact over " + negotiated + "; server " + server);
        } catch (IOException e) { // SSLHandshakeException, SSLException, SocketException, EOFException
            String what = e.getClass().getName() + ": " + e.getMessage() + " (during the " + stage + ")";
            if (expectRefused) {
                System.out.println("PASS " + who + " the JDK reported " + what);
                return;
            }
            fail(who, what);
        }
    }

    private static KeyStore load(String path, String pass) throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(path)) {
            ks.load(in, pass.toCharArray());
        }
        return ks;
    }

    private static void fail(String who, String why) {
        System.out.println("FAIL " + who + " " + why);
        System.exit(1);
    }
}
