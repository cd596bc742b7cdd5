#!/usr/bin/env bash
# Two Portcullis binaries (e.g. before and after a change) side by side, interleaved, on one sink backend:
# single-stream throughput (MB/s and proxy CPU-s/GB) and full-handshake rate (handshakes/s and CPU-ms each).
#
#   Benchmarks/ab-binaries.sh OLD_BIN NEW_BIN [ROUNDS=3] [DURATION=5s]
#
# Prints one JSON line per run (from `portcullis bench … --json`, plus "binary": "old"|"new"), then the
# medians and new/old ratios. The load generator is NEW_BIN's `bench`. Loopback only; every process it
# starts is stopped by PID on exit.
set -euo pipefail
OLD=$(realpath "$1") NEW=$(realpath "$2") ROUNDS=${3:-3} DURATION=${4:-5s}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"

ossl() { openssl "$@" >/dev/null 2>&1; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 -subj "/CN=ab CA"
for n in server client; do
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr -subj "/CN=ab-$n"
    if [ $n = server ]; then ext="subjectAltName=DNS:localhost,IP:127.0.0.1"; else ext="extendedKeyUsage=clientAuth"; fi
    echo "$ext" > $n.ext
    ossl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile $n.ext -out $n.pem
done

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SINK=$(port)
"$NEW" bench backend --sink --listen 127.0.0.1:$SINK 2>/dev/null & PIDS+=($!)
declare -A PORT PID
for which in old new; do
    bin=$OLD; [ $which = new ] && bin=$NEW
    PORT[$which]=$(port)
    # Binaries from before the privilege drop know no --allow-root (and need none).
    ROOT_ARGS=()
    if [ "$(id -u)" = 0 ] && "$bin" server --help 2>&1 | grep -q -- --allow-root; then ROOT_ARGS=(--allow-root); fi
    "$bin" server --listen 127.0.0.1:${PORT[$which]} --target 127.0.0.1:$SINK --cert server.pem --key server.key \
        --cacert ca.pem --allow-cn ab-client --workers 2 --log-level error "${ROOT_ARGS[@]}" 2>/dev/null &
    PID[$which]=$!; PIDS+=($!)
done
for which in old new; do   # both must accept before any load, or the comparison means nothing
    for _ in $(seq 50); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', ${PORT[$which]}), 0.2)" 2>/dev/null && continue 2
        sleep 0.1
    done
    echo "ab-binaries: the $which binary is not accepting on 127.0.0.1:${PORT[$which]}" >&2; exit 1
done
TLS=(--cert client.pem --key client.key --cacert ca.pem --server-name localhost --duration "$DURATION" --json)
for round in $(seq "$ROUNDS"); do
    for which in old new; do
        t=127.0.0.1:${PORT[$which]}
        "$NEW" bench throughput --target $t "${TLS[@]}" --pid ${PID[$which]} --streams 1 --direction up \
            | sed "s/^{/{\"binary\":\"$which\",\"round\":$round,/"
        "$NEW" bench handshake --target $t "${TLS[@]}" --pid ${PID[$which]} --concurrency 8 \
            | sed "s/^{/{\"binary\":\"$which\",\"round\":$round,/"
    done
done | tee runs.jsonl | tee "${AB_KEEP_RUNS:-/dev/null}"
python3 - runs.jsonl <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"binary"')]
def med(binary, workload, path):
    vals = []
    for r in runs:
        if r["binary"] != binary or r["workload"] != workload:
            continue
        v = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    return statistics.median(vals) if vals else float("nan")
rows = [("throughput", ("results", "mb_per_second_up"), "single-stream MB/s (higher is better)"),
        ("throughput", ("cpu", "per_gb_s"), "proxy CPU-s per GB (lower is better)"),
        ("handshake", ("results", "handshakes_per_second"), "full handshakes/s, c=8 (higher is better)"),
        ("handshake", ("cpu", "per_handshake_ms"), "proxy CPU-ms per handshake (lower is better)")]
print(f"\nmedians of {len(runs) // 4} interleaved rounds")
print("| measure | old | new | new/old |\n|---|---|---|---|")
for workload, path, label in rows:
    o, n = med("old", workload, path), med("new", workload, path)
    print(f"| {label} | {o:.3f} | {n:.3f} | {n / o:.3f} |")
EOF
