#!/usr/bin/env bash
# Any TCP/HTTP service behind Portcullis, end to end on one machine (see README.md, "Generic"):
#
#   curl --cert / openssl s_client ──mTLS──▶ portcullis server :TLS ──▶ python3 -m http.server 127.0.0.1:HTTP
#   curl http:// (no TLS) ─▶ portcullis client :PAIR ──mTLS──▶ portcullis server :TLS ──▶ (same server)
#
# Checks: openssl s_client with the admitted certificate gets the page over TLS 1.3; curl --cert downloads a
# 1 MiB file intact (sha256); curl with the intruder's certificate, with no certificate, and with a
# certificate from another CA is refused, and the HTTP server logs no request for any of them; plain curl
# through the client sidecar gets the same file.
# As root it installs what is missing (scripts/install-deps test); it builds the release binary (or uses
# $PORTCULLIS_BIN), stops everything it started by PID, and exits 0 only if every check passed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../_lib/example.sh
. "$here/../_lib/example.sh"

ex_deps openssl python3 curl
ex_build
ex_workdir
ex_pki
# A certificate from an unrelated CA, to show the unknown-CA refusal.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout stranger.key -out stranger.csr \
    -subj "/O=Example/CN=app-1" 2>/dev/null
printf '%s\n' "extendedKeyUsage=clientAuth" >stranger.ext
openssl x509 -req -in stranger.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -days 1 \
    -extfile stranger.ext -out stranger.pem 2>/dev/null

mkdir www
echo "hello through portcullis" >www/hello.txt
head -c 1048576 /dev/urandom >www/blob.bin
want="$(sha256sum <www/blob.bin | cut -d' ' -f1)"

http=$(free_port) tls=$(free_port) pair=$(free_port)
ex_say "python3 -m http.server on 127.0.0.1:$http (plaintext, loopback only)"
start "http.server" http.log python3 -u -m http.server --bind 127.0.0.1 --directory www "$http"
wait_for 10 "http.server" port_open "$http"
ex_say "portcullis server on 127.0.0.1:$tls → 127.0.0.1:$http, admits CN=app-1"
server_sidecar "$tls" "127.0.0.1:$http" server-sidecar.log
ex_say "portcullis client on 127.0.0.1:$pair → 127.0.0.1:$tls as app-1"
client_sidecar "$pair" "$tls" client-sidecar.log app-1
echo

requests() { grep -c '"GET ' http.log || true; }
tcurl=(curl -sS --max-time 10 --cacert ca.pem --resolve "localhost:$tls:127.0.0.1")

# --- openssl s_client ---------------------------------------------------------------------------------
out="$(printf 'GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n' |
    timeout 10 openssl s_client -connect "127.0.0.1:$tls" -servername localhost -CAfile ca.pem \
        -verify_return_error -cert app-1.pem -key app-1.key -brief -ign_eof 2>s_client.err || true)"
proto="$(sed -n 's/^Protocol version: //p' s_client.err)"
check "openssl s_client as app-1: \"$(grep -a 'hello' <<<"$out" || true)\" over ${proto:-?}" \
    grep -q "hello through portcullis" <<<"$out"

# --- curl --cert --------------------------------------------------------------------------------------
got="$("${tcurl[@]}" --cert app-1.pem --key app-1.key "https://localhost:$tls/blob.bin" | sha256sum | cut -d' ' -f1)"
check "curl --cert app-1.pem https://localhost:$tls/blob.bin: 1 MiB, sha256 ${got:0:16}… (want ${want:0:16}…)" \
    test "$got" = "$want"
code="$("${tcurl[@]}" --cert app-1.pem --key app-1.key -o /dev/null -w '%{http_code}' "https://localhost:$tls/hello.txt")"
check "curl --cert app-1.pem https://localhost:$tls/hello.txt → HTTP $code" test "$code" = 200

refused() { # description, curl args...
    local what="$1"; shift
    local before after err rc=0
    before=$(requests)
    err="$("${tcurl[@]}" "$@" -o /dev/null "https://localhost:$tls/hello.txt" 2>&1)" || rc=$?
    sleep 0.2
    after=$(requests)
    check "$what refused: curl exit $rc, \"$err\"; requests the HTTP server saw: $before → $after" \
        test "$rc" -ne 0 -a "$before" = "$after"
}
refused "curl with the intruder's certificate" --cert intruder.pem --key intruder.key
refused "curl without a client certificate"
refused "curl with a certificate from another CA" --cert stranger.pem --key stranger.key

# --- plain curl through the client sidecar -------------------------------------------------------------
got="$(curl -sS --max-time 10 "http://127.0.0.1:$pair/blob.bin" | sha256sum | cut -d' ' -f1)"
check "plain curl http://127.0.0.1:$pair/blob.bin through the client sidecar: sha256 ${got:0:16}…" \
    test "$got" = "$want"

echo
echo "What the sidecars logged:"
echo "  server sidecar, an admitted request:"; show_log server-sidecar.log '"connection closed"'
echo "  server sidecar, the refusals:";        show_log server-sidecar.log '"handshake failed"' 3
echo "  client sidecar:";                      show_log client-sidecar.log '"connection closed"'
ex_finish
