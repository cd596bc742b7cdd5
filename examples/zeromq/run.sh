#!/usr/bin/env bash
# ZeroMQ through a Portcullis pair, end to end on one machine (see README.md, "ZeroMQ"):
#
#   REQ connect ─▶ portcullis client :REQ ──mTLS──▶ portcullis server :TLS_REP ─▶ REP bind 127.0.0.1:REP
#   SUB connect ─▶ portcullis client :SUB ──mTLS──▶ portcullis server :TLS_PUB ─▶ PUB bind 127.0.0.1:PUB
#
# libzmq has no TLS transport, so both ends speak plain ZMTP to loopback and the sidecars carry it over mTLS.
# Checks (examples/zeromq/check.py, pyzmq): 10,000 request/replies matched; 100,000 published messages all
# received in order (the subscriber connects first and the publisher waits until a SYNC message got through);
# a REQ through a client sidecar holding the intruder's certificate gets nothing and the REP server sees
# nothing; the REP path's server sidecar is stopped with SIGTERM mid-stream and a new one started on the same
# port, and ZeroMQ reconnects by itself and replies resume.
# As root it installs what is missing (scripts/install-deps test); it builds the release binary (or uses
# $PORTCULLIS_BIN), stops everything it started by PID, and exits 0 only if every check passed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../_lib/example.sh
. "$here/../_lib/example.sh"

ex_deps openssl python3
python3 -c 'import zmq' 2>/dev/null || { echo "FAIL the Python module 'zmq' is missing (pip install pyzmq)"; exit 1; }
ex_build
ex_workdir
ex_pki

rep=$(free_port) pub=$(free_port) tls_rep=$(free_port) tls_pub=$(free_port)
req=$(free_port) sub=$(free_port) denied=$(free_port)
# ZMTP connections never end on their own, so a drain would wait out the whole shutdown timeout: keep it short.
server_flags=(--shutdown-timeout 1s)
ex_say "REP binds 127.0.0.1:$rep and PUB binds 127.0.0.1:$pub (in check.py, plaintext, loopback only)"
ex_say "portcullis server :$tls_rep → :$rep and :$tls_pub → :$pub, admitting CN=app-1"
server_sidecar "$tls_rep" "127.0.0.1:$rep" server-rep.log "${server_flags[@]}"
rep_sidecar_pid=$last_pid
server_sidecar "$tls_pub" "127.0.0.1:$pub" server-pub.log "${server_flags[@]}"
ex_say "portcullis client :$req → :$tls_rep and :$sub → :$tls_pub as app-1; :$denied → :$tls_rep as intruder"
client_sidecar "$req" "$tls_rep" client-req.log app-1
client_sidecar "$sub" "$tls_pub" client-sub.log app-1
client_sidecar "$denied" "$tls_rep" client-denied.log intruder
echo

# The replacement server sidecar for the restart check is started by check.py; we stop it by its PID.
restart_cmd=("$bin" server --listen "127.0.0.1:$tls_rep" --target "127.0.0.1:$rep" --cert server.pem
    --key server.key --cacert ca.pem --allow-cn app-1 --log-format json "${server_flags[@]}" "${root_args[@]}")
set +e
python3 "$here/check.py" --rep-bind "$rep" --req-port "$req" --pub-bind "$pub" --sub-port "$sub" \
    --denied-req-port "$denied" --restart-pid "$rep_sidecar_pid" --restart-log server-rep-2.log \
    --pid-file server-rep-2.pid -- "${restart_cmd[@]}" >check.out 2>&1
set -e
[[ -s server-rep-2.pid ]] && ex_pids+=("$(cat server-rep-2.pid)")
while IFS= read -r line; do
    case "$line" in
    PASS\ *) pass "${line#PASS }" ;;
    FAIL\ *) fail "${line#FAIL }" ;;
    *) echo "$line" ;;
    esac
done <check.out
grep -q '^PASS restart' check.out || fail "the restart check did not complete"

echo
echo "What the sidecars logged:"
echo "  the old REP-path server sidecar, stopped mid-stream:"
show_log server-rep.log '"shutting down\|"stopped"' 2
show_log server-rep.log '"connection closed"' 1
echo "  the client sidecar, connections the restart cut and the reconnect:"
show_log client-req.log '"connection closed"\|"handshake failed"' 3
echo "  the replacement server sidecar:"
show_log server-rep-2.log '"listening"' 1
echo "  the intruder refused by the server sidecar:"
show_log server-rep.log '"handshake failed"' 1
ex_finish
