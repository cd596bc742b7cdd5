#!/usr/bin/env bash
# RocketMQ's Java side behind Portcullis, end to end on one machine (see README.md in this directory):
#
#   Java client (JDK TLS 1.3, PKCS#12 keystore) ──mTLS──▶ portcullis "broker"  :TLS ──▶ frame echo 127.0.0.1:B
#                                               ──mTLS──▶ portcullis "namesrv" :TLS ──▶ frame echo 127.0.0.1:N
#
# No RocketMQ broker is installable from Debian or PyPI, so two small Python services stand in for the
# broker's and the name server's plaintext remoting ports: they echo RocketMQ-remoting-like frames (4-byte
# length + payload). The client is a real JDK program (RemotingTlsClient.java, compiled here with javac).
# Checks: 1,000 frames through the broker listener and 100 through the name-server listener come back intact
# over TLS 1.3; a keystore whose certificate is not allowlisted, one from another CA and a plaintext client
# are refused, and the echo services see no connection from any of them.
# As root it installs what is missing (scripts/install-deps test); it builds the release binary (or uses
# $PORTCULLIS_BIN), stops everything it started by PID, and exits 0 only if every check passed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../_lib/example.sh
. "$here/../_lib/example.sh"

ex_deps openssl python3 java javac keytool
ex_build
ex_workdir
ex_pki
# A client certificate from an unrelated CA (same CN as the admitted one), to show the unknown-CA refusal.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout stranger.key -out stranger.csr \
    -subj "/O=Example/OU=payments/CN=app-1" 2>/dev/null
printf '%s\n' "extendedKeyUsage=clientAuth" >stranger.ext
openssl x509 -req -in stranger.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -days 1 \
    -extfile stranger.ext -out stranger.pem 2>/dev/null

# What a Java application is handed: a PKCS#12 keystore with its certificate and key, a truststore with the CA.
pass=changeit
for who in app-1 intruder stranger; do
    openssl pkcs12 -export -in "$who.pem" -inkey "$who.key" -name "$who" -out "$who.p12" -passout "pass:$pass"
done
keytool -importcert -noprompt -storetype PKCS12 -keystore truststore.p12 -storepass "$pass" \
    -alias example-ca -file ca.pem >/dev/null 2>&1
ex_say "keystores: app-1.p12 (admitted), intruder.p12 (not allowlisted), stranger.p12 (other CA); truststore.p12 (the CA)"
mkdir classes
javac -d classes "$here/RemotingTlsClient.java"

broker=$(free_port) namesrv=$(free_port) broker_tls=$(free_port) namesrv_tls=$(free_port)
ex_say "frame echo standing in for the broker on 127.0.0.1:$broker and the name server on 127.0.0.1:$namesrv"
start "broker stand-in" broker.log python3 -u "$here/frame_echo.py" "$broker"
start "name server stand-in" namesrv.log python3 -u "$here/frame_echo.py" "$namesrv"
wait_for 10 "broker stand-in" grep -q listening broker.log
wait_for 10 "name server stand-in" grep -q listening namesrv.log

cat >portcullis.yaml <<YAML
# Two listeners in one process, as examples/rocketmq/portcullis.yaml, on loopback ports for this run.
log: {format: json, level: info}
shutdown-timeout: 5s
x-rocketmq-tls: &rocketmq-tls {cert: server.pem, key: server.key, cacert: ca.pem}
listeners:
  - name: namesrv
    mode: server
    listen: 127.0.0.1:$namesrv_tls
    target: 127.0.0.1:$namesrv
    tls: *rocketmq-tls
    timeouts: {handshake: 5s, connect: 3s, idle: 5m, close: 10s}
    policy:
      rules:
        - {name: producers, ou: payments, cn: app-1}
  - name: broker
    mode: server
    listen: 127.0.0.1:$broker_tls
    target: 127.0.0.1:$broker
    tls: *rocketmq-tls
    timeouts: {handshake: 5s, connect: 3s, idle: 0s, close: 30s}
    policy:
      rules:
        - {name: producers, ou: payments, cn: app-1}
YAML
ex_say "portcullis run --config portcullis.yaml: namesrv 127.0.0.1:$namesrv_tls → :$namesrv, broker 127.0.0.1:$broker_tls → :$broker"
start "portcullis run" portcullis.log "$bin" run --config portcullis.yaml "${root_args[@]}"
pc=$last_pid
deadline=$((SECONDS + 20))
until [[ $(grep -c '"msg":"listening"' portcullis.log 2>/dev/null) -ge 2 ]]; do
    kill -0 "$pc" 2>/dev/null && ((SECONDS < deadline)) || { echo "FAIL portcullis did not start:"; cat portcullis.log; exit 1; }
    sleep 0.05
done
echo

accepted() { grep -c 'accepted' "$1" || true; }
java_client() { java -cp classes RemotingTlsClient 127.0.0.1 "$@"; }

# --- the admitted keystore -------------------------------------------------------------------------------
out="$(java_client "$broker_tls" app-1.p12 "$pass" truststore.p12 "$pass" 1000 2>&1)" || true
check "Java client (app-1.p12) → broker listener: ${out#PASS roundtrip }" grep -q '^PASS' <<<"$out"
out="$(java_client "$namesrv_tls" app-1.p12 "$pass" truststore.p12 "$pass" 100 2>&1)" || true
check "Java client (app-1.p12) → name-server listener: ${out#PASS roundtrip }" grep -q '^PASS' <<<"$out"
sleep 0.3
check "broker stand-in: $(grep 'closed after' broker.log | tail -1)" grep -q 'closed after 1000 frames' broker.log

# --- refusals ------------------------------------------------------------------------------------------
refused() { # description keystore
    local before after out
    before=$(accepted broker.log)
    out="$(java_client "$broker_tls" "$2" "$pass" truststore.p12 "$pass" 1 --expect-refused 2>&1)" || true
    sleep 0.3
    after=$(accepted broker.log)
    check "$1 refused: ${out#PASS refused }; connections the broker saw: $before → $after" \
        test "$before" = "$after" -a "${out:0:4}" = PASS
}
refused "Java client with intruder.p12 (same CA, not allowlisted)" intruder.p12
# The JDK's key manager only offers a certificate issued by a CA the server asks for (the CertificateRequest
# lists ca.pem), so with stranger.p12 it sends no certificate at all: handshake.error=no-certificate.
refused "Java client with stranger.p12 (another CA)" stranger.p12
before=$(accepted broker.log)
plain="$(python3 - "$broker_tls" <<'PY'
import socket, struct, sys
# A RocketMQ client without tls.enable=true: a plaintext remoting frame to the TLS port.
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(struct.pack(">I", 5) + b"hello")
try:
    d = s.recv(100)
    print("closed by the sidecar" if d == b"" else f"got {len(d)} bytes back")
except OSError as e:
    print(f"closed by the sidecar ({e.__class__.__name__})")
PY
)"
sleep 0.3
check "plaintext client (no tls.enable) refused: $plain; connections the broker saw: $before → $(accepted broker.log)" \
    test "$before" = "$(accepted broker.log)" -a "${plain:0:6}" = closed

echo
ex_say "what the sidecar logged (portcullis.log):"
for pattern in '"msg":"connection closed".*"listener":"broker"' '"handshake.error":"denied"' \
    '"handshake.error":"no-certificate"' '"handshake.error":"protocol"'; do
    show_log portcullis.log "$pattern" || true
done
ex_finish
