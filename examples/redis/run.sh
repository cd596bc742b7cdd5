#!/usr/bin/env bash
# Valkey/Redis behind a Portcullis server-mode sidecar, end to end on one machine:
#   redis-server on 127.0.0.1:16379 (plaintext, loopback only)
#   portcullis on 127.0.0.1:16380 (TLS 1.3, client certificate required, admits CN=app-1 only)
#   redis-cli --tls with app-1's certificate: SET/GET works; with intruder's certificate: refused.
# As root, installs redis-server/redis-tools if missing. Stops what it started on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/../.."
"$root/scripts/install-deps" test >/dev/null
swift build -c release --product portcullis --package-path "$root" >/dev/null
bin="$(swift build -c release --show-bin-path --package-path "$root")/portcullis"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

# A throwaway PKI: CA, server certificate for localhost, an allowed and a refused client.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 -subj "/CN=Example CA" 2>/dev/null
issue() { # name subject extensions
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue app-1 "/O=Example/OU=payments/CN=app-1" "extendedKeyUsage=clientAuth"
issue intruder "/O=Example/CN=intruder" "extendedKeyUsage=clientAuth"

redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no --daemonize no >redis.log 2>&1 &
pids+=($!)
"$bin" server --listen 127.0.0.1:16380 --target 127.0.0.1:16379 \
    --cert server.pem --key server.key --cacert ca.pem --allow-cn app-1 2>portcullis.log &
pids+=($!)
for _ in $(seq 50); do redis-cli -p 16379 ping >/dev/null 2>&1 && grep -q listening portcullis.log && break; sleep 0.1; done

tls=(--tls --cacert ca.pem -h 127.0.0.1 -p 16380)
echo "SET through the sidecar as app-1:   $(redis-cli "${tls[@]}" --cert app-1.pem --key app-1.key SET greeting hello)"
echo "GET through the sidecar as app-1:   $(redis-cli "${tls[@]}" --cert app-1.pem --key app-1.key GET greeting)"
echo "GET as intruder (refused):          $(redis-cli "${tls[@]}" --cert intruder.pem --key intruder.key GET greeting 2>&1 | head -1)"
echo
echo "portcullis log:"
cat portcullis.log
