#!/usr/bin/env bash
# Portcullis against stunnel, HAProxy and nginx (stream), configured alike, on loopback, in one interleaved run.
#
#   swift build -c release                       # first: this script builds nothing
#   Benchmarks/compare-peers.sh                  # 3 rounds × 5 s per run, about 15 minutes
#   Benchmarks/compare-peers.sh --smoke          # 1 round × 1 s per run: validates the whole pipeline quickly
#   Benchmarks/compare-peers.sh --check-only     # start everything, run the admission checks, stop
#
# Options: --rounds R (3)  --duration D (5s)  --idle-connections N (2000)  --base-port P (23000)
#          --only CASES (comma list of hs-full,hs-resumed,tput-up,tput-down,lat-c1,lat-c32,idle,redis)
#          --out DIR (Benchmarks/results)  --keep (leave the work directory)
# Environment: PORTCULLIS_BIN (default .build/release/portcullis); PORTCULLIS_COMMIT (the commit the binary was
#          built from, when it is not HEAD; default: git rev-parse --short HEAD, +dirty if Sources/ has changes)
#
# What it does (see Benchmarks/README.md, "Peer comparison"):
#  1. As root, installs stunnel4, haproxy, nginx and libnginx-mod-stream when missing.
#  2. Makes one PKI with openssl: ECDSA P-256 CA, server certificate for localhost, the allowed client
#     CN=bench-client, and refused ones (other CN, other CA, SAN tricks).
#  3. Starts plaintext backends (`portcullis bench backend --echo|--sink|--source`) and redis-server (plaintext
#     port for the terminators, plus its own TLS port with the same certificates).
#  4. Starts Portcullis, stunnel, HAProxy and nginx with the same policy: TLS 1.3 only,
#     TLS_AES_128_GCM_SHA256 only, X25519, same certificates, client certificate required and verified against
#     the same CA, only CN=bench-client admitted, session tickets on, two cores' worth of workers, one
#     per-connection log line to a file; one listener per backend (echo, sink, source, redis).
#  5. Checks each terminator's admission behaviour with a Python ssl client, then runs every workload against
#     each terminator and directly against the backends, interleaved, R rounds, every run bounded in time.
#  6. Writes Benchmarks/results/<date>-<commit>[-smoke].{md,jsonl} and prints the table.
# Loopback only. Every process it starts is stopped by PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
HELPER="$HERE/compare_peers.py"
BIN=${PORTCULLIS_BIN:-$ROOT/.build/release/portcullis}
# `run` refuses root without --user or --allow-root; the benchmark machine runs it as root.
ROOT_ARGS=()
if [ "$(id -u)" = 0 ]; then ROOT_ARGS=(--allow-root); fi
ROUNDS=3
DURATION=5s
IDLE_CONNS=2000
BASE=23000
OUT="$HERE/results"
SMOKE=0
CHECK_ONLY=0
KEEP=0
ONLY=""
CMDLINE="Benchmarks/compare-peers.sh $*"

while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1; ROUNDS=1; DURATION=1s; IDLE_CONNS=500 ;;
        --check-only) CHECK_ONLY=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --idle-connections) IDLE_CONNS=$2; shift ;;
        --base-port) BASE=$2; shift ;;
        --out) OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        --only) ONLY=$2; shift ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) echo "compare-peers: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
DUR_S=${DURATION%s}
case "$DUR_S" in ''|*[!0-9]*) echo "compare-peers: --duration must be whole seconds like 5s" >&2; exit 2 ;; esac

say() { printf '• %s\n' "$*" >&2; }
die() { printf 'compare-peers: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ 1. tools
PKGS="stunnel4 haproxy nginx libnginx-mod-stream"
missing=""
command -v stunnel >/dev/null || missing="$missing stunnel4"
command -v haproxy >/dev/null || missing="$missing haproxy"
command -v nginx >/dev/null || missing="$missing nginx"
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing="$missing libnginx-mod-stream"
command -v redis-server >/dev/null || missing="$missing redis-server"
command -v redis-benchmark >/dev/null || missing="$missing redis-tools"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        say "installing:$missing"
        # Debian starts services on install; policy-rc.d keeps them from taking ports here.
        DEBIAN_FRONTEND=noninteractive apt-get install -y $missing >/dev/null || die "apt-get install failed"
    else
        echo "compare-peers: missing packages. Run as root, or first: sudo apt-get install -y$missing" >&2
        exit 1
    fi
fi
for t in openssl python3 jq ss; do command -v $t >/dev/null || die "'$t' is needed"; done
[ -x "$BIN" ] || die "no Portcullis binary at $BIN: run 'swift build -c release' first (or set PORTCULLIS_BIN)"

HAVE_BENCH=1
if ! "$BIN" bench backend --help 2>&1 | grep -q -- '--echo'; then
    HAVE_BENCH=0
    if [ $SMOKE = 0 ] && [ $CHECK_ONLY = 0 ]; then
        die "$BIN has no 'bench' subcommand (rebuild from the current tree: swift build -c release)"
    fi
    say "NOTE: $BIN has no 'bench' subcommand yet: stand-in Python backends, and only the admission checks, redis-benchmark and openssl speed run"
fi

ulimit -n 20000 2>/dev/null || true
[ "$(ulimit -n)" -ge $((IDLE_CONNS * 2 + 500)) ] || die "open-file limit $(ulimit -n) is too low for $IDLE_CONNS idle connections"

# ------------------------------------------------------------------ work dir, process bookkeeping
WORK=$(mktemp -d /tmp/portcullis-peers.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ $KEEP = 1 ] || [ $rc != 0 ]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ports: backends BASE+1..4, redis TLS BASE+5; terminator k at BASE+10k+{1 echo, 2 sink, 3 source, 4 redis}
P_ECHO=$((BASE + 1)); P_SINK=$((BASE + 2)); P_SOURCE=$((BASE + 3)); P_REDIS=$((BASE + 4)); P_REDIS_TLS=$((BASE + 5))
P_NGX_DENY=$((BASE + 9))
TERMINATORS="portcullis stunnel haproxy nginx"
declare -A IDX=([portcullis]=1 [stunnel]=2 [haproxy]=3 [nginx]=4)
port_of() { # terminator kind → port
    local k=${IDX[$1]}
    case $2 in echo) echo $((BASE + 10 * k + 1)) ;; sink) echo $((BASE + 10 * k + 2)) ;;
        source) echo $((BASE + 10 * k + 3)) ;; redis) echo $((BASE + 10 * k + 4)) ;; esac
}
for p in $(seq $((BASE + 1)) $((BASE + 49))); do
    if ss -Hltn "sport = :$p" | grep -q .; then die "port $p is in use (choose another --base-port)"; fi
done
wait_port() { # port pid name
    for _ in $(seq 100); do
        if ss -Hltn "sport = :$1" | grep -q .; then return 0; fi
        kill -0 "$2" 2>/dev/null || die "$3 exited during start-up (log: $WORK/$3.log): $(tail -3 "$WORK/$3.log" 2>/dev/null)"
        sleep 0.1
    done
    die "$3 did not listen on $1 within 10 s (log: $WORK/$3.log)"
}

# ------------------------------------------------------------------ 2. PKI
say "PKI (ECDSA P-256) in $WORK/pki"
PKI=$WORK/pki; mkdir -p "$PKI"
(
    cd "$PKI"
    q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; }
    mkca() { q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.pem" \
        -days 30 -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign; }
    mkcert() { # name subject ca extensions
        q openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
        printf '%b\n' "$4" > "$1.ext"
        q openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 30 -extfile "$1.ext" -out "$1.pem"
    }
    mkca ca "Portcullis bench CA"
    mkca rogueca "Rogue CA"
    mkcert server "/CN=localhost" ca "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    mkcert client "/CN=bench-client/O=Portcullis bench" ca "extendedKeyUsage=clientAuth"
    mkcert denied "/CN=intruder/O=Portcullis bench" ca "extendedKeyUsage=clientAuth"
    mkcert rogue "/CN=bench-client" rogueca "extendedKeyUsage=clientAuth"
    mkcert sanonly "/CN=intruder" ca "subjectAltName=DNS:bench-client\nextendedKeyUsage=clientAuth"
    mkcert cnsan "/CN=bench-client" ca "subjectAltName=DNS:other.example\nextendedKeyUsage=clientAuth"
    mkcert splice "/CN=intruder/O=x,CN=bench-client" ca "extendedKeyUsage=clientAuth"
    cat server.pem server.key > server-combined.pem   # HAProxy wants both in one file
    chmod 644 ./*.key ./*.pem
)
TLSARGS=(--cert "$PKI/client.pem" --key "$PKI/client.key" --cacert "$PKI/ca.pem" --server-name localhost)

# ------------------------------------------------------------------ 3. backends
start() { # name cmd… : runs in the background, log in $WORK/name.log, PID recorded
    local name=$1; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}
for kind in echo sink source; do
    port_var=P_${kind^^}
    if [ $HAVE_BENCH = 1 ]; then
        start "backend-$kind" "$BIN" bench backend "--$kind" --listen "127.0.0.1:${!port_var}"
    else
        start "backend-$kind" python3 "$HELPER" backend "--$kind" --listen "127.0.0.1:${!port_var}"
    fi
done
wait_port $P_ECHO "$PID_backend_echo" backend-echo
wait_port $P_SINK "$PID_backend_sink" backend-sink
wait_port $P_SOURCE "$PID_backend_source" backend-source

REDIS_TLS=1
if ! ldd "$(command -v redis-server)" | grep -q libssl; then REDIS_TLS=0; fi
REDIS_ARGS=(--bind 127.0.0.1 --port $P_REDIS --save '' --appendonly no --protected-mode no --daemonize no
    --dir "$WORK" --logfile "$WORK/redis.log")
if [ $REDIS_TLS = 1 ]; then
    REDIS_ARGS+=(--tls-port $P_REDIS_TLS --tls-cert-file "$PKI/server.pem" --tls-key-file "$PKI/server.key"
        --tls-ca-cert-file "$PKI/ca.pem" --tls-auth-clients yes --tls-protocols TLSv1.3
        --tls-ciphersuites TLS_AES_128_GCM_SHA256 --tls-session-caching yes)
fi
start redis redis-server "${REDIS_ARGS[@]}"
wait_port $P_REDIS "$PID_redis" redis
[ $REDIS_TLS = 1 ] && wait_port $P_REDIS_TLS "$PID_redis" redis

# ------------------------------------------------------------------ 4. terminators
# Portcullis: its configuration file (cipher-suites exists only there)
{
    echo "log: {format: text, level: info}"
    echo "workers: 2"
    echo "listeners:"
    for kind in echo sink source redis; do
        case $kind in echo) t=$P_ECHO ;; sink) t=$P_SINK ;; source) t=$P_SOURCE ;; redis) t=$P_REDIS ;; esac
        cat <<EOF
  - name: $kind
    listen: 127.0.0.1:$(port_of portcullis $kind)
    target: 127.0.0.1:$t
    tls:
      cert: $PKI/server.pem
      key: $PKI/server.key
      cacert: $PKI/ca.pem
      min-version: "1.3"
      cipher-suites: TLS_AES_128_GCM_SHA256
      groups: X25519
      session-tickets: true
    policy:
      rules:
        - {name: bench, cn: bench-client}
EOF
    done
} > "$WORK/portcullis.yaml"
"$BIN" check --config "$WORK/portcullis.yaml" >"$WORK/portcullis-check.log" 2>&1 \
    || die "portcullis check failed: $(tail -3 "$WORK/portcullis-check.log")"

# stunnel 5.68: thread per connection (its default and only multi-core model here).
# CN allowlist: stunnel has no subject/CN matcher. checkHost calls X509_check_host(), which matches DNS SANs
# and falls back to the CN only when the certificate has no DNS SAN. With these client certificates (no DNS
# SAN) it acts as a CN check; the admission checks below show where it differs (SAN tricks).
{
    echo "foreground = yes"
    echo "syslog = no"
    echo "output = $WORK/stunnel-out.log"
    echo "pid ="
    echo "debug = notice"
    for kind in echo sink source redis; do
        case $kind in echo) t=$P_ECHO ;; sink) t=$P_SINK ;; source) t=$P_SOURCE ;; redis) t=$P_REDIS ;; esac
        cat <<EOF
[$kind]
accept = 127.0.0.1:$(port_of stunnel $kind)
connect = 127.0.0.1:$t
cert = $PKI/server.pem
key = $PKI/server.key
CAfile = $PKI/ca.pem
verifyChain = yes
requireCert = yes
checkHost = bench-client
sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
curves = X25519
sessionCacheSize = 20000
sessionCacheTimeout = 3600
EOF
    done
} > "$WORK/stunnel.conf"

# HAProxy 2.6: nbthread 2, verify at bind, CN ACL after the handshake (the client sees EOF, not an alert).
{
    cat <<EOF
global
    nbthread 2
    maxconn 8000
    log stdout format short local0 info
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-bind-curves X25519
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout client-fin 60s
EOF
    for kind in echo sink source redis; do
        case $kind in echo) t=$P_ECHO ;; sink) t=$P_SINK ;; source) t=$P_SOURCE ;; redis) t=$P_REDIS ;; esac
        cat <<EOF
frontend fe_$kind
    bind 127.0.0.1:$(port_of haproxy $kind) ssl crt $PKI/server-combined.pem ca-file $PKI/ca.pem verify required ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 curves X25519
    log-format "%ci:%cp [%t] %ft %b %Tw/%Tc/%Tt %U/%B %ts cn=%[ssl_c_s_dn(CN)] %sslv %sslc"
    tcp-request session reject unless { ssl_c_s_dn(CN) -m str bench-client }
    default_backend be_$kind
backend be_$kind
    server s1 127.0.0.1:$t
EOF
    done
} > "$WORK/haproxy.cfg"
haproxy -c -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 || die "haproxy -c failed: $(tail -5 "$WORK/haproxy-check.log")"

# nginx 1.22 stream: worker_processes 2; a map on $ssl_client_s_dn (RFC 2253) picks the upstream, and clients
# that are not CN=bench-client go to a local server that closes at once (EOF after the handshake).
{
    cat <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log notice;
events { worker_connections 10000; }
stream {
    log_format audit '\$remote_addr [\$time_local] \$server_port \$status \$bytes_received/\$bytes_sent \$session_time \$ssl_protocol \$ssl_cipher \$ssl_session_reused "\$ssl_client_s_dn"';
    access_log $WORK/nginx-access.log audit buffer=64k flush=1s;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    ssl_ecdh_curve X25519;
    ssl_certificate $PKI/server.pem;
    ssl_certificate_key $PKI/server.key;
    ssl_client_certificate $PKI/ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_tickets on;
    ssl_session_cache shared:STREAM:20m;
    ssl_session_timeout 1h;
    proxy_connect_timeout 5s;
    proxy_timeout 1h;
    server { listen 127.0.0.1:$P_NGX_DENY; return ""; }
EOF
    for kind in echo sink source redis; do
        case $kind in echo) t=$P_ECHO ;; sink) t=$P_SINK ;; source) t=$P_SOURCE ;; redis) t=$P_REDIS ;; esac
        cat <<EOF
    map \$ssl_client_s_dn \$up_$kind { "~(^|(?<!\\\\\\\\),)CN=bench-client(,|\$)" 127.0.0.1:$t; default 127.0.0.1:$P_NGX_DENY; }
    server { listen 127.0.0.1:$(port_of nginx $kind) ssl; proxy_pass \$up_$kind; }
EOF
    done
    echo "}"
} > "$WORK/nginx.conf"
nginx -t -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx-check.log" 2>&1 || die "nginx -t failed: $(tail -5 "$WORK/nginx-check.log")"

start_terminator() { # name: start it, wait until all four listeners are up
    case $1 in
        portcullis) start portcullis "$BIN" run --config "$WORK/portcullis.yaml" "${ROOT_ARGS[@]}" ;;
        stunnel) start stunnel stunnel "$WORK/stunnel.conf" ;;
        haproxy) start haproxy haproxy -db -f "$WORK/haproxy.cfg" ;;
        nginx) start nginx nginx -c "$WORK/nginx.conf" -p "$WORK" -g "daemon off;" ;;
    esac
    local pv=PID_$1 kind
    for kind in echo sink source redis; do wait_port "$(port_of "$1" $kind)" "${!pv}" "$1"; done
}
restart_terminator() { # name: stop it by PID (SIGTERM, then SIGKILL after 10 s), start a fresh process
    local pv=PID_$1 old keep=() p
    old=${!pv}
    kill -TERM "$old" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$old" 2>/dev/null || true
    wait "$old" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$old" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
    # the listeners must be gone before the new process binds (SO_REUSEPORT would share them otherwise)
    for _ in $(seq 50); do
        ss -Hltn "sport = :$(port_of "$1" echo)" | grep -q . || break
        sleep 0.1
    done
    mv "$WORK/$1.log" "$WORK/$1.log.$old" 2>/dev/null || true
    start_terminator "$1"
}
say "starting Portcullis, stunnel, HAProxy, nginx"
for t in $TERMINATORS; do start_terminator "$t"; done

# ------------------------------------------------------------------ 5a. admission checks
say "admission checks (Python ssl client: allowed, denied, no certificate, other CA, SAN tricks, TLS 1.2, resumption)"
: > "$WORK/validation.jsonl"
for t in $TERMINATORS; do
    python3 "$HELPER" validate --name "$t" --port "$(port_of $t echo)" --certs "$PKI" >> "$WORK/validation.jsonl"
done
python3 - "$WORK/validation.jsonl" >&2 <<'EOF'
import json, sys
for l in open(sys.argv[1]):
    v = json.loads(l)
    print(f"  {v['name']:<11} " + ("all as expected" if v["pass"] else "DIFFERS"))
    for c in v["checks"]:
        print(f"      {'ok ' if c['pass'] else 'NO '} {c['check']:<42} expect {c['expect']:<7} got {c['got']:<11} {c['detail']}")
EOF
if [ $CHECK_ONLY = 1 ]; then say "--check-only: stopping"; exit 0; fi

# ------------------------------------------------------------------ crypto bound
say "crypto bound: openssl speed (AES-128-GCM, ECDSA P-256, X25519)"
SPEED_S=$([ $SMOKE = 1 ] && echo 1 || echo 3)
openssl speed -seconds $SPEED_S -evp aes-128-gcm > "$WORK/speed-aes.txt" 2>/dev/null
openssl speed -seconds $SPEED_S ecdsap256 > "$WORK/speed-ecdsa.txt" 2>/dev/null
openssl speed -seconds $SPEED_S ecdhx25519 > "$WORK/speed-x25519.txt" 2>/dev/null
CRYPTO=$(python3 "$HELPER" speed "$WORK")

# ------------------------------------------------------------------ 5b. the interleaved runs
if [ -n "${PORTCULLIS_COMMIT:-}" ]; then
    COMMIT=$PORTCULLIS_COMMIT
else
    COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$ROOT" status --porcelain -- Sources Package.swift 2>/dev/null)" ]; then COMMIT="$COMMIT+dirty"; fi
fi
DATE=$(date -u +%Y-%m-%d)
SUFFIX=$([ $SMOKE = 1 ] && echo "-smoke" || echo "")$([ -n "$ONLY" ] && echo "-${ONLY//,/-}" || echo "")
mkdir -p "$OUT"
JSONL="$OUT/$DATE-$COMMIT$SUFFIX.jsonl"
MD="$OUT/$DATE-$COMMIT$SUFFIX.md"
: > "$JSONL"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

WORKLOADS="hs-full hs-resumed tput-up tput-down lat-c1 lat-c32 idle redis"
if [ -n "$ONLY" ]; then
    for c in ${ONLY//,/ }; do case " $WORKLOADS " in *" $c "*) ;; *) die "--only: unknown case '$c'" ;; esac; done
    WORKLOADS=${ONLY//,/ }
fi
REDIS_N=$((10000 * DUR_S))
targets_for() { # workload → targets
    case $1 in
        hs-resumed|idle) echo "$TERMINATORS" ;;
        redis) echo "direct $TERMINATORS$([ $REDIS_TLS = 1 ] && echo ' redis-tls')" ;;
        *) echo "direct $TERMINATORS" ;;
    esac
}
nruns=0; nidle=0; nredis=0
for w in $WORKLOADS; do for t in $(targets_for $w); do
    case $w in idle) nidle=$((nidle + 1)) ;; redis) nredis=$((nredis + 1)) ;; *) nruns=$((nruns + 1)) ;; esac
done; done
# bench runs: duration + ~2 s start-up; idle: ~IDLE_CONNS/400 s + 2; redis-benchmark: 2 × REDIS_N at ~8k req/s
EST=$((ROUNDS * (nruns * (DUR_S + 2) + nidle * (IDLE_CONNS / 400 + 2) + nredis * (2 * REDIS_N / 8000 + 1)) + 20))
say "plan: $ROUNDS round(s) × ($nruns bench runs of $DURATION + $nidle idle runs of $IDLE_CONNS connections + $nredis redis-benchmark runs of 2 × $REDIS_N requests) ≈ $((EST / 60)) min $((EST % 60)) s; results → $MD"
[ $HAVE_BENCH = 1 ] || say "no 'portcullis bench': only the redis-benchmark runs happen"

pid_of() { case $1 in direct) echo "" ;; redis-tls) echo "$PID_redis" ;; *) local v=PID_$1; echo "${!v}" ;; esac; }
target_port() { # target kind
    case $1 in
        direct) case $2 in echo) echo $P_ECHO ;; sink) echo $P_SINK ;; source) echo $P_SOURCE ;; redis) echo $P_REDIS ;; esac ;;
        redis-tls) echo $P_REDIS_TLS ;;
        *) port_of "$1" "$2" ;;
    esac
}

run_one() { # round workload target
    local r=$1 w=$2 t=$3 pid port kind args=() cpu0 cpu1 out rc
    pid=$(pid_of "$t")
    case $w in
        hs-full) kind=echo; args=(handshake --concurrency 16 --duration "$DURATION") ;;
        hs-resumed) kind=echo; args=(handshake --concurrency 16 --duration "$DURATION" --resume) ;;
        tput-up) kind=sink; args=(throughput --streams 1 --write-size 64KiB --direction up --duration "$DURATION") ;;
        tput-down) kind=source; args=(throughput --streams 1 --write-size 64KiB --direction down --duration "$DURATION") ;;
        lat-c1) kind=echo; args=(latency --connections 1 --message-size 64 --duration "$DURATION") ;;
        lat-c32) kind=echo; args=(latency --connections 32 --message-size 64 --duration "$DURATION") ;;
        idle) kind=echo; args=(idle --connections "$IDLE_CONNS") ;;
        redis) kind=redis ;;
    esac
    port=$(target_port "$t" $kind)
    local base="{\"peer\":\"$t\",\"round\":$r,\"case\":\"$w\",\"duration_s\":$DUR_S,\"target_port\":$port"
    cpu0=$([ -n "$pid" ] && python3 "$HELPER" treecpu "$pid" || echo null)
    local t0=$(date +%s.%N)
    if [ $w = redis ]; then
        local rargs=(-h 127.0.0.1 -p "$port" -c 32 -n $REDIS_N -t set,get --csv)
        [ "$t" != direct ] && rargs+=(--tls --cert "$PKI/client.pem" --key "$PKI/client.key" --cacert "$PKI/ca.pem" --sni localhost)
        set +e
        timeout -s INT $((DUR_S * 12 + 30)) redis-benchmark "${rargs[@]}" > "$WORK/rb.csv" 2>"$WORK/rb.err"; rc=$?
        set -e
        out="{\"tool\":\"redis-benchmark\",\"command\":\"redis-benchmark ${rargs[*]}\",\"exit\":$rc,\"results\":$(python3 "$HELPER" redis-csv "$WORK/rb.csv")}"
        [ $rc = 0 ] || out=$(jq -c --arg e "exit $rc: $(tail -2 "$WORK/rb.err")" '. + {error:$e}' <<<"$out")
    else
        local cmd=("$BIN" bench "${args[@]}" --target "127.0.0.1:$port" --json)
        if [ "$t" = direct ]; then cmd+=(--plaintext); else cmd+=("${TLSARGS[@]}"); fi
        [ -n "$pid" ] && cmd+=(--pid "$pid")
        set +e
        if [ $w = idle ]; then
            local rss0 pss0 mx
            # a fresh process: memory freed after earlier runs stays in the allocator (and HAProxy's pools),
            # so a warm process would hide the per-connection cost
            restart_terminator "$t"
            pid=$(pid_of "$t")
            cmd=("$BIN" bench "${args[@]}" --target "127.0.0.1:$port" --json "${TLSARGS[@]}" --pid "$pid")
            cpu0=$(python3 "$HELPER" treecpu "$pid")
            read -r rss0 pss0 < <(python3 "$HELPER" treemem "$pid")
            timeout -s INT $((DUR_S * 4 + 120)) "${cmd[@]}" > "$WORK/bench.out" 2>"$WORK/bench.err" &
            local bp=$!
            mx=$(python3 "$HELPER" sample --pid "$pid" --while $bp)
            wait $bp; rc=$?
            read -r rss1 pss1 <<<"$mx"
        else
            timeout -s INT $((DUR_S * 4 + 60)) "${cmd[@]}" > "$WORK/bench.out" 2>"$WORK/bench.err"; rc=$?
        fi
        set -e
        out=$(tail -1 "$WORK/bench.out")
        if ! jq -e . >/dev/null 2>&1 <<<"$out"; then
            out=$(jq -nc --arg e "exit $rc, no JSON: $(tail -2 "$WORK/bench.err" | tr '\n' ' ')" --arg c "${cmd[*]}" '{error:$e, command:$c}')
        elif [ $rc != 0 ]; then
            out=$(jq -c --arg e "exit $rc: $(tail -2 "$WORK/bench.err" | tr '\n' ' ')" '. + {error:$e}' <<<"$out")
        fi
        if [ $w = idle ]; then
            out=$(jq -c --argjson n "$IDLE_CONNS" --argjson r0 "$rss0" --argjson p0 "$pss0" --argjson r1 "$rss1" --argjson p1 "$pss1" \
                '. + {tree_rss_kb_before:$r0, tree_rss_kb_peak:$r1, tree_pss_kb_before:$p0, tree_pss_kb_peak:$p1,
                      tree_rss_kb_per_connection:(($r1-$r0)/$n), tree_pss_kb_per_connection:(($p1-$p0)/$n)}' <<<"$out")
        fi
    fi
    local t1=$(date +%s.%N)
    cpu1=$([ -n "$pid" ] && python3 "$HELPER" treecpu "$pid" || echo null)
    local tc=null; [ -n "$pid" ] && tc=$(python3 -c "print(round($cpu1-$cpu0,3))")
    jq -c --argjson b "$base,\"tree_cpu_seconds\":$tc,\"wall_seconds\":$(python3 -c "print(round($t1-$t0,3))"),\"loadavg_after\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" \
        '. + $b' <<<"$out" >> "$JSONL"
    # one progress line
    jq -r '"  r\(.round) \(.case) \(.peer): " + (if .error then "ERROR " + .error
        elif .case == "redis" then "SET \(.results.set.rps // "?") GET \(.results.get.rps // "?") req/s"
        else ([.results.handshakes_per_second, .results.resumed_fraction, .results.mb_per_second_up, .results.mb_per_second_down,
               .results.requests_per_second, .results.latency_us.p99, .tree_rss_kb_per_connection]
              | map(select(. != null)) | map(tostring) | join(" ")) end)
        + "  (proxy cpu \(.tree_cpu_seconds) s)"' <<<"$(tail -1 "$JSONL")" >&2
}

for r in $(seq 1 "$ROUNDS"); do
    say "round $r/$ROUNDS"
    for w in $WORKLOADS; do
        [ $HAVE_BENCH = 0 ] && [ $w != redis ] && continue
        for t in $(targets_for $w); do run_one "$r" "$w" "$t"; done
    done
done

# ------------------------------------------------------------------ 6. report
vers() { "$@" 2>&1 | head -1; }
jq -n \
    --arg date "$DATE" --arg commit "$COMMIT" --argjson smoke "$SMOKE" --argjson rounds "$ROUNDS" \
    --arg duration "$DURATION" --arg command "${PORTCULLIS_BIN:+PORTCULLIS_BIN=$PORTCULLIS_BIN }$CMDLINE" \
    --arg machine "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r)" \
    --arg lb "$LOAD_BEFORE" --arg la "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg portcullis "$("$BIN" --version 2>&1 | head -1) (binary $(sha256sum "$BIN" | cut -c1-12), built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'))" --arg openssl "$(openssl version)" \
    --arg stunnel "$(stunnel -version 2>&1 | grep -m1 '^stunnel' | cut -d' ' -f2)" \
    --arg haproxy "$(haproxy -v | head -1 | cut -d' ' -f3)" --arg nginx "$(nginx -v 2>&1 | cut -d/ -f2)" \
    --arg redis "$(redis-server --version | cut -d' ' -f3 | cut -d= -f2)" \
    --argjson crypto "$CRYPTO" --slurpfile val "$WORK/validation.jsonl" --argjson idle "$IDLE_CONNS" \
    --argjson redis_tls "$REDIS_TLS" --argjson redis_n "$REDIS_N" \
    '{date:$date, commit:$commit, smoke:($smoke==1), rounds:$rounds, duration:$duration, command:$command,
      machine:$machine, loadavg_before:$lb, loadavg_after:$la, crypto_bound:$crypto, validation:$val,
      versions:{portcullis:$portcullis, openssl:$openssl, stunnel:$stunnel, haproxy:$haproxy, nginx:$nginx, redis:$redis},
      notes:[
        "Client and terminators share the same 2 cores: every figure includes the load generator'"'"'s own cost.",
        "Proxy CPU = utime+stime of the terminator and all its descendants (nginx: master + 2 workers) from /proc/PID/stat, before and after each run.",
        "Idle memory: each terminator is restarted (fresh process) before its idle run; peak of the summed VmRSS/PSS (smaps_rollup) of its process tree while \($idle) idle mTLS connections are open, minus the value before, divided by \($idle).",
        "Per-connection log line to a file for all four (Portcullis audit line, stunnel notice level, HAProxy tcplog to stdout, nginx stream access_log buffered 64k).",
        "Refusal point: Portcullis and stunnel refuse inside the handshake (alert); HAProxy (tcp-request session reject) and nginx (map → a server that closes) after it, with EOF.",
        (if $redis_tls == 1 then "redis native TLS: the same redis-server 7.0 process (its --tls-port, --tls-auth-clients yes, TLS 1.3, TLS_AES_128_GCM_SHA256, io-threads 1); it has no CN allowlist. redis-benchmark -c 32 -n \($redis_n) -t set,get."
         else "redis-server here is built without TLS: the native-TLS line is skipped." end)
      ]}' > "$WORK/meta.json"
python3 "$HELPER" report --jsonl "$JSONL" --md "$MD" --meta "$WORK/meta.json"
cp "$WORK/meta.json" "${MD%.md}.meta.json"
say "wrote $MD, $JSONL"
