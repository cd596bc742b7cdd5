#!/usr/bin/env bash
# Valkey/Redis behind Portcullis, end to end on one machine (see README.md, "Valkey / Redis"):
#
#   redis-cli --tls / redis-py ssl=True ──mTLS──▶ portcullis server :TLS ──▶ valkey-server 127.0.0.1:PLAIN
#   plain redis-py / redis-cli ─▶ portcullis client :PAIR ──mTLS──▶ portcullis server :TLS ──▶ (same server)
#
# Uses valkey-server/valkey-cli when installed, else redis-server/redis-cli (protocol-identical here).
# Checks: 10,000 keys SET/GET pipelined and compared; a 10 MB value round trip; a pub/sub subscription kept
# open across 1,000 messages (all received, in order); the intruder certificate refused without reaching the
# server (INFO stats total_connections_received read from the server's own loopback port, before and after).
# As root it installs what is missing (scripts/install-deps test); it builds the release binary (or uses
# $PORTCULLIS_BIN), stops everything it started by PID, and exits 0 only if every check passed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../_lib/example.sh
. "$here/../_lib/example.sh"

ex_deps openssl python3 curl
server_bin="$(command -v valkey-server || command -v redis-server || true)"
cli="$(command -v valkey-cli || command -v redis-cli || true)"
[[ -n "$server_bin" && -n "$cli" ]] || { echo "FAIL neither valkey-server nor redis-server is installed"; exit 1; }
python3 -c 'import redis' 2>/dev/null || { echo "FAIL the Python module 'redis' is missing (pip install redis)"; exit 1; }
ex_build
ex_workdir
ex_pki

plain=$(free_port) tls=$(free_port) pair=$(free_port) denied_pair=$(free_port)
ex_say "$(basename "$server_bin") on 127.0.0.1:$plain (plaintext, loopback only)"
start "$(basename "$server_bin")" server.log "$server_bin" --port "$plain" --bind 127.0.0.1 --save '' \
    --appendonly no --daemonize no --protected-mode yes
wait_for 10 "$(basename "$server_bin") to answer PING" "$cli" -h 127.0.0.1 -p "$plain" PING

ex_say "portcullis server on 127.0.0.1:$tls → 127.0.0.1:$plain, admits CN=app-1"
server_sidecar "$tls" "127.0.0.1:$plain" server-sidecar.log
server_pid=$last_pid
ex_say "portcullis client on 127.0.0.1:$pair → 127.0.0.1:$tls as app-1 (server must be DNS:localhost)"
client_sidecar "$pair" "$tls" client-sidecar.log app-1
ex_say "portcullis client on 127.0.0.1:$denied_pair → 127.0.0.1:$tls as intruder (the server sidecar refuses it)"
client_sidecar "$denied_pair" "$tls" intruder-sidecar.log intruder
echo

conns() { "$cli" -h 127.0.0.1 -p "$plain" INFO stats | tr -d '\r' | sed -n 's/^total_connections_received://p'; }
tlscli=("$cli" --tls --cacert ca.pem -h 127.0.0.1 -p "$tls")

# --- redis-cli --tls with a client certificate ------------------------------------------------------
out="$("${tlscli[@]}" --cert app-1.pem --key app-1.key SET greeting "hello through portcullis" 2>&1)"
check "redis-cli --tls as app-1: SET greeting → $out" test "$out" = OK
out="$("${tlscli[@]}" --cert app-1.pem --key app-1.key GET greeting 2>&1)"
check "redis-cli --tls as app-1: GET greeting → \"$out\"" test "$out" = "hello through portcullis"
out="$("$cli" -h 127.0.0.1 -p "$pair" GET greeting 2>&1)"
check "redis-cli without TLS through the client sidecar: GET greeting → \"$out\"" test "$out" = "hello through portcullis"

before=$(conns)
out="$("${tlscli[@]}" --cert intruder.pem --key intruder.key GET greeting 2>&1 | head -1 || true)"
after=$(conns)
# conns itself opens one plaintext connection per call, hence +1.
check "redis-cli --tls as intruder refused (\"$out\"); server connections $before → $after (+1 is our own INFO)" \
    test "$((after - before))" -eq 1 -a "$out" != "hello through portcullis"

# --- redis-py: keys, a big value, pub/sub, refusals (examples/valkey/check.py) --------------------------
while IFS= read -r line; do
    case "$line" in
    PASS\ *) pass "${line#PASS }" ;;
    FAIL\ *) fail "${line#FAIL }" ;;
    *) echo "$line" ;;
    esac
done < <(python3 "$here/check.py" --tls-port "$tls" --plain-port "$plain" --pair-port "$pair" \
    --denied-pair-port "$denied_pair" --certs "$PWD" 2>&1 || echo "FAIL check.py exited with an error")

echo
echo "What the sidecars logged (JSON, one line per connection):"
echo "  server sidecar, an admitted connection:"; show_log server-sidecar.log '"connection closed"'
echo "  server sidecar, the intruder refused:";   show_log server-sidecar.log '"handshake failed"'
echo "  client sidecar, a relayed connection:";   show_log client-sidecar.log '"connection closed"'
echo "  intruder's client sidecar:";              show_log intruder-sidecar.log '"connection closed"\|"handshake failed"'
ex_finish
