#!/usr/bin/env bash
# NSQ through Portcullis, end to end on one machine (see README.md, "NSQ"):
#
#   producer ─▶ portcullis client :PROD ──mTLS──▶ portcullis server :TLS ─▶ nsqd --tcp-address 127.0.0.1:TCP
#   consumer ─▶ portcullis client :CONS ──mTLS──▶          (same)
#
# nsqd is NOT packaged by Debian 12 and PyPI has only client libraries (pynsq), so this script cannot install
# it: when `nsqd` is not on PATH it says so, prints SKIP and exits 0. Install nsqd from the NSQ project's
# release archive (any nsqd 1.x binary; put it on PATH) and run this again to get the real run.
# Checks (examples/nsq/check.py, NSQ's TCP protocol V2 written out): the consumer SUBscribes first, the
# producer MPUBlishes 10,000 messages, the consumer receives and FINishes all of them with equal bodies; a
# producer through a client sidecar holding the intruder's certificate is refused and nsqd's message_count
# (read from its own loopback HTTP port) does not move. nsqd's own TLS (--tls-required) stays off.
# As root it installs what is missing (scripts/install-deps test); it builds the release binary (or uses
# $PORTCULLIS_BIN), stops everything it started by PID, and exits 0 only if every check passed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v nsqd >/dev/null; then
    echo "SKIP examples/nsq: nsqd is not installed and cannot be installed here: Debian 12 has no nsqd package"
    echo "     and PyPI has only NSQ client libraries (pynsq). Put an nsqd 1.x binary from the NSQ project's"
    echo "     releases on PATH and run this script again."
    exit 0
fi

# shellcheck source=../_lib/example.sh
. "$here/../_lib/example.sh"
ex_deps openssl python3 curl
ex_build
ex_workdir
ex_pki

tcp=$(free_port) http=$(free_port) tls=$(free_port) prod=$(free_port) cons=$(free_port) denied=$(free_port)
mkdir nsqd-data
ex_say "nsqd: TCP 127.0.0.1:$tcp, HTTP 127.0.0.1:$http (plaintext, loopback only; its own TLS off)"
start nsqd nsqd.log nsqd --tcp-address="127.0.0.1:$tcp" --http-address="127.0.0.1:$http" \
    --broadcast-address=127.0.0.1 --data-path="$PWD/nsqd-data"
wait_for 10 "nsqd /ping" curl -fsS "http://127.0.0.1:$http/ping"
ex_say "portcullis server on 127.0.0.1:$tls → 127.0.0.1:$tcp, admits CN=app-1"
server_sidecar "$tls" "127.0.0.1:$tcp" server-sidecar.log
ex_say "portcullis client :$prod (producer) and :$cons (consumer) → :$tls as app-1; :$denied as intruder"
client_sidecar "$prod" "$tls" client-producer.log app-1
client_sidecar "$cons" "$tls" client-consumer.log app-1
client_sidecar "$denied" "$tls" client-denied.log intruder
echo

set +e
python3 "$here/check.py" --producer-port "$prod" --consumer-port "$cons" --denied-port "$denied" \
    --http-port "$http" >check.out 2>&1
set -e
while IFS= read -r line; do
    case "$line" in
    PASS\ *) pass "${line#PASS }" ;;
    FAIL\ *) fail "${line#FAIL }" ;;
    *) echo "$line" ;;
    esac
done <check.out

echo
echo "What the sidecars logged:"
echo "  server sidecar, admitted:";           show_log server-sidecar.log '"connection closed"'
echo "  server sidecar, the intruder refused:"; show_log server-sidecar.log '"handshake failed"'
echo "  producer's client sidecar:";          show_log client-producer.log '"connection closed"'
ex_finish
