#!/usr/bin/env bash
# Portcullis against stunnel, HAProxy, nginx (stream) and hitch, configured alike, on loopback, in one interleaved
# run, measured with two load generators: `portcullis bench` (OpenSSL) and loadgen (Go crypto/tls, no OpenSSL).
#
#   swift build -c release                       # first: this script builds only loadgen (Benchmarks/loadgen)
#   Benchmarks/compare-peers.sh                  # 3 rounds × 5 s per run, both clients (the plan prints the time)
#   Benchmarks/compare-peers.sh --smoke          # 1 round × 1 s per run: validates the whole pipeline quickly
#   Benchmarks/compare-peers.sh --check-only     # start everything, run the admission checks, stop
#
# Options: --rounds R (3)  --duration D (5s)  --idle-connections N (2000)  --base-port P (23000)
#          --only CASES (comma list of hs-full,hs-resumed,tput-up,tput-down,lat-c1,lat-c32,idle,redis)
#          --client bench|loadgen|both (both: every case that loadgen has runs with each client in turn)
#          --out DIR (Benchmarks/results)  --keep (leave the work directory)
# Environment: PORTCULLIS_BIN (default .build/release/portcullis); PORTCULLIS_COMMIT (the commit the binary was
#          built from, when it is not HEAD; default: git rev-parse --short HEAD, +dirty if Sources/ has changes)
#
# What it does (see Benchmarks/README.md, "Peer comparison"):
#  1. As root, installs stunnel4, haproxy, nginx, libnginx-mod-stream, hitch (and golang-go for loadgen) when
#     missing. Without Go, the loadgen runs are skipped with a note.
#  2. Makes one PKI with openssl: ECDSA P-256 CA, server certificate for localhost, the allowed client
#     CN=bench-client, and refused ones (other CN, other CA, SAN tricks).
#  3. Starts plaintext backends (`portcullis bench backend --echo|--sink|--source`) and redis-server (plaintext
#     port for the terminators, plus its own TLS port with the same certificates).
#  4. Starts Portcullis, stunnel, HAProxy, nginx and hitch with the same policy: TLS 1.3 only,
#     TLS_AES_128_GCM_SHA256 only, X25519, same certificates, client certificate required and verified against
#     the same CA, only CN=bench-client admitted (hitch cannot: it admits any certificate from the CA), session
#     tickets on, two cores' worth of workers, one per-connection log line to a file (hitch: errors only); one
#     listener per backend (echo, sink, source, redis; hitch: one instance per backend).
#  5. Checks each terminator's admission behaviour with a Python ssl client, builds loadgen, then runs every
#     workload against each terminator and directly against the backends, interleaved (for each workload, for
#     each client, every target in turn), R rounds, every run bounded in time. loadgen runs hs-full,
#     hs-resumed, lat-c1, lat-c32 and idle; tput-* are `portcullis bench` only; redis is redis-benchmark.
#  6. Writes Benchmarks/results/<date>-<commit>[-smoke].{md,jsonl} and prints the table per client, the
#     bench-vs-loadgen agreement per case and the targets.
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
CLIENT=both
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
        --client) CLIENT=$2; shift ;;
        -h|--help) awk 'NR == 1 { next } /^#/ { print; next } { exit }' "$0"; exit 0 ;;
        *) echo "compare-peers: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
DUR_S=${DURATION%s}
case "$DUR_S" in ''|*[!0-9]*) echo "compare-peers: --duration must be whole seconds like 5s" >&2; exit 2 ;; esac
case "$CLIENT" in
    bench) CLIENTS="bench" ;; loadgen) CLIENTS="loadgen" ;; both) CLIENTS="bench loadgen" ;;
    *) echo "compare-peers: --client must be bench, loadgen or both" >&2; exit 2 ;;
esac

say() { printf '• %s\n' "$*" >&2; }
die() { printf 'compare-peers: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ 1. tools
PATH=$PATH:/usr/sbin:/sbin   # hitch, haproxy and nginx live in /usr/sbin
missing=""
command -v stunnel >/dev/null || missing="$missing stunnel4"
command -v haproxy >/dev/null || missing="$missing haproxy"
command -v nginx >/dev/null || missing="$missing nginx"
command -v hitch >/dev/null || missing="$missing hitch"
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
# loadgen needs Go (golang-go, 1.19 or later); without it the loadgen runs are skipped, the rest goes on
HAVE_LOADGEN=0
case " $CLIENTS " in *" loadgen "*)
    if ! command -v go >/dev/null && [ "$(id -u)" = 0 ]; then
        say "installing: golang-go (for loadgen)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y golang-go >/dev/null 2>&1 || true
    fi
    if command -v go >/dev/null; then
        HAVE_LOADGEN=1
    else
        say "NOTE: no Go toolchain (install golang-go as root): loadgen runs skipped, portcullis bench only"
        CLIENTS=${CLIENTS/loadgen/}
    fi ;;
esac
[ -x "$BIN" ] || die "no Portcullis binary at $BIN: run 'swift build -c release' first (or set PORTCULLIS_BIN)"

HAVE_BENCH=1
if ! "$BIN" bench backend --help 2>&1 | grep -q -- '--echo'; then
    HAVE_BENCH=0
    if [ $SMOKE = 0 ] && [ $CHECK_ONLY = 0 ]; then
        die "$BIN has no 'bench' subcommand (rebuild from the current tree: swift build -c release)"
    fi
    say "NOTE: $BIN has no 'bench' subcommand yet: stand-in Python backends, and only the admission checks, redis-benchmark, loadgen and openssl speed run"
    CLIENTS=${CLIENTS/bench/}
fi

ulimit -n 20000 2>/dev/null || true
[ "$(ulimit -n)" -ge $((IDLE_CONNS * 2 + 500)) ] || die "open-file limit $(ulimit -n) is too low for $IDLE_CONNS idle connections"

# ------------------------------------------------------------------ work dir, process bookkeeping
WORK=$(mktemp -d /tmp/portcullis-peers.XXXXXX)
HITCH_LOGS=$WORK   # as root: a directory of its own, see the hitch section
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
    if [ $KEEP = 1 ] || [ $rc != 0 ]; then
        say "work directory kept: $WORK$([ "$HITCH_LOGS" != "$WORK" ] && echo " (hitch logs: $HITCH_LOGS)")"
    else
        rm -rf "$WORK"
        [ "$HITCH_LOGS" = "$WORK" ] || rm -rf "$HITCH_LOGS"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ports: backends BASE+1..4, redis TLS BASE+5, nginx's refusal server BASE+9; terminator k (1 Portcullis,
# 2 stunnel, 3 HAProxy, 4 nginx, 5 hitch) at BASE+10k+{1 echo, 2 sink, 3 source, 4 redis}
P_ECHO=$((BASE + 1)); P_SINK=$((BASE + 2)); P_SOURCE=$((BASE + 3)); P_REDIS=$((BASE + 4)); P_REDIS_TLS=$((BASE + 5))
P_NGX_DENY=$((BASE + 9))
TERMINATORS="portcullis stunnel haproxy nginx hitch"
declare -A IDX=([portcullis]=1 [stunnel]=2 [haproxy]=3 [nginx]=4 [hitch]=5)
port_of() { # terminator kind → port
    local k=${IDX[$1]}
    case $2 in echo) echo $((BASE + 10 * k + 1)) ;; sink) echo $((BASE + 10 * k + 2)) ;;
        source) echo $((BASE + 10 * k + 3)) ;; redis) echo $((BASE + 10 * k + 4)) ;; esac
}
for p in $(seq $((BASE + 1)) $((BASE + 59))); do
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
    cat server.pem server.key > server-combined.pem   # HAProxy and hitch want both in one file
    chmod 644 ./*.key ./*.pem
)
TLSARGS=(--cert "$PKI/client.pem" --key "$PKI/client.key" --cacert "$PKI/ca.pem" --server-name localhost)
LGTLS=(-cert "$PKI/client.pem" -key "$PKI/client.key" -cacert "$PKI/ca.pem" -servername localhost)

# ------------------------------------------------------------------ 3. backends
start() { # name cmd… : runs in the background, log in $WORK/name.log, PID recorded
    local name=$1; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}
# SIGPIPE ignored: `portcullis bench backend` does not ignore it itself, and a source backend writing to a client
# that has just closed (the end of every tput-down run) is killed by it; ignored signals survive exec
for kind in echo sink source; do
    port_var=P_${kind^^}
    if [ $HAVE_BENCH = 1 ]; then
        start "backend-$kind" bash -c 'trap "" PIPE; exec "$@"' backend "$BIN" bench backend "--$kind" --listen "127.0.0.1:${!port_var}"
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

# hitch 1.7: one backend per process, so one instance per listener (hitch-echo, -sink, -source, -redis), each
# with workers = 2 (a master, 2 workers, an OCSP helper); a case measures the instance of its listener.
# No CN/subject allowlist: it admits every client whose certificate chains to the CA (the admission checks show
# it). No per-connection access log: log-level 1 writes errors only (a line for a connection that ends without
# close_notify or fails its handshake); level 2 writes ~10 debug lines per connection. Resumption: hitch has no
# ticket option; OpenSSL's default stateless tickets are on, with the key made before the workers fork (either
# worker resumes). It refuses to run workers as root: as root they run as nobody, and their log files go to a
# directory nobody owns: every 60 s a hitch worker stat()s its log file and reopens it when that fails (the work
# directory is 0700 root), and a failed reopen leaves a NULL FILE that segfaults both workers at the next line.
HITCH_DROP=""
if [ "$(id -u)" = 0 ]; then
    HITCH_GROUP=$(getent group nogroup >/dev/null && echo nogroup || id -gn nobody)
    HITCH_DROP="user = \"nobody\"
group = \"$HITCH_GROUP\""
    HITCH_LOGS=$(mktemp -d /tmp/portcullis-peers-hitch.XXXXXX)
    chown "nobody:$HITCH_GROUP" "$HITCH_LOGS"
fi
for kind in echo sink source redis; do
    case $kind in echo) t=$P_ECHO ;; sink) t=$P_SINK ;; source) t=$P_SOURCE ;; redis) t=$P_REDIS ;; esac
    cat > "$WORK/hitch-$kind.conf" <<EOF
frontend = "[127.0.0.1]:$(port_of hitch $kind)"
backend = "[127.0.0.1]:$t"
pem-file = "$PKI/server-combined.pem"
tls-protos = TLSv1.3
ciphersuites = "TLS_AES_128_GCM_SHA256"
ecdh-curve = "X25519"
client-verify = required
client-verify-ca = "$PKI/ca.pem"
workers = 2
backlog = 1024
daemon = off
log-level = 1
log-filename = "$HITCH_LOGS/hitch-$kind-out.log"
$HITCH_DROP
EOF
    if [ -n "$HITCH_DROP" ]; then
        : > "$HITCH_LOGS/hitch-$kind-out.log"
        chown "nobody:$HITCH_GROUP" "$HITCH_LOGS/hitch-$kind-out.log"
    fi
    hitch --test --config="$WORK/hitch-$kind.conf" >"$WORK/hitch-check.log" 2>&1 \
        || die "hitch --test failed: $(tail -5 "$WORK/hitch-check.log")"
done

proc_of() { # terminator kind → the name of the process serving that listener (hitch: one per listener)
    if [ "$1" = hitch ]; then echo "hitch-$2"; else echo "$1"; fi
}
procs_of() { # terminator → its process names
    if [ "$1" = hitch ]; then echo "hitch-echo hitch-sink hitch-source hitch-redis"; else echo "$1"; fi
}
start_terminator() { # name: start it, wait until all four listeners are up
    local kind pv
    case $1 in
        portcullis) start portcullis "$BIN" run --config "$WORK/portcullis.yaml" "${ROOT_ARGS[@]}" ;;
        stunnel) start stunnel stunnel "$WORK/stunnel.conf" ;;
        haproxy) start haproxy haproxy -db -f "$WORK/haproxy.cfg" ;;
        nginx) start nginx nginx -c "$WORK/nginx.conf" -p "$WORK" -g "daemon off;" ;;
        hitch) for kind in echo sink source redis; do start "hitch-$kind" hitch --config="$WORK/hitch-$kind.conf"; done ;;
    esac
    for kind in echo sink source redis; do
        pv=PID_$(proc_of "$1" $kind); pv=${pv//-/_}
        wait_port "$(port_of "$1" $kind)" "${!pv}" "$(proc_of "$1" $kind)"
    done
}
restart_terminator() { # name: stop its process(es) by PID (SIGTERM, then SIGKILL after 10 s), start fresh ones
    local name pv old olds=() keep=() p kind
    for name in $(procs_of "$1"); do pv=PID_${name//-/_}; olds+=("${!pv}"); done
    for old in "${olds[@]}"; do kill -TERM "$old" 2>/dev/null || true; done
    for old in "${olds[@]}"; do
        for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$old" 2>/dev/null || true
        wait "$old" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do case " ${olds[*]} " in *" $p "*) ;; *) keep+=("$p") ;; esac; done
    PIDS=("${keep[@]}")
    # the listeners must be gone before the new process binds (SO_REUSEPORT would share them otherwise)
    for kind in echo sink source redis; do
        for _ in $(seq 50); do
            ss -Hltn "sport = :$(port_of "$1" $kind)" | grep -q . || break
            sleep 0.1
        done
    done
    for name in $(procs_of "$1"); do
        pv=PID_${name//-/_}
        mv "$WORK/$name.log" "$WORK/$name.log.${!pv}" 2>/dev/null || true
    done
    start_terminator "$1"
}
say "starting Portcullis, stunnel, HAProxy, nginx, hitch"
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

# loadgen (Go crypto/tls): built into the work directory, nothing written to the tree
LOADGEN=""
if [ $HAVE_LOADGEN = 1 ]; then
    say "building loadgen (Go crypto/tls): Benchmarks/loadgen/build.sh"
    if LOADGEN=$("$HERE/loadgen/build.sh" "$WORK/loadgen" 2>"$WORK/loadgen-build.log") && [ -x "$LOADGEN" ]; then
        LOADGEN_VERSION="loadgen (Go crypto/tls, $(go version | cut -d' ' -f3))"
    else
        say "NOTE: loadgen did not build ($(tail -2 "$WORK/loadgen-build.log" | tr '\n' ' ')): loadgen runs skipped"
        LOADGEN=""; HAVE_LOADGEN=0; CLIENTS=${CLIENTS/loadgen/}
    fi
fi
LOADGEN_VERSION=${LOADGEN_VERSION:-not used}

REDIS_N=$((10000 * DUR_S))
clients_for() { # workload → clients (loadgen has no throughput workload; redis is measured by redis-benchmark)
    local c out=""
    case $1 in
        redis) echo redis-benchmark; return ;;
        tput-up|tput-down) case " $CLIENTS " in *" bench "*) echo bench ;; esac; return ;;
    esac
    for c in $CLIENTS; do out="$out $c"; done
    echo $out
}
targets_for() { # workload → targets
    case $1 in
        hs-resumed|idle) echo "$TERMINATORS" ;;
        redis) echo "direct $TERMINATORS$([ $REDIS_TLS = 1 ] && echo ' redis-tls')" ;;
        *) echo "direct $TERMINATORS" ;;
    esac
}
nbench=0; nlg=0; nidle=0; nredis=0
for w in $WORKLOADS; do for c in $(clients_for $w); do for t in $(targets_for $w); do
    case $w:$c in idle:*) nidle=$((nidle + 1)) ;; redis:*) nredis=$((nredis + 1)) ;; *:bench) nbench=$((nbench + 1)) ;;
        *) nlg=$((nlg + 1)) ;; esac
done; done; done
# bench runs: duration + ~2 s start-up; loadgen: + ~1 s; idle: restart ~2 s + ~IDLE_CONNS/400 s + 2;
# redis-benchmark: 2 × REDIS_N at ~8k req/s
EST=$((ROUNDS * (nbench * (DUR_S + 2) + nlg * (DUR_S + 1) + nidle * (IDLE_CONNS / 400 + 4) + nredis * (2 * REDIS_N / 8000 + 1)) + 20))
say "plan: clients: ${CLIENTS:-none} (+ redis-benchmark); $ROUNDS round(s) × ($nbench bench + $nlg loadgen runs of $DURATION + $nidle idle runs of $IDLE_CONNS connections + $nredis redis-benchmark runs of 2 × $REDIS_N requests) ≈ $((EST / 60)) min $((EST % 60)) s; results → $MD"
[ -n "${CLIENTS// /}" ] || say "no load generator available: only the redis-benchmark runs happen"
for w in $WORKLOADS; do
    [ -n "$(clients_for $w)" ] || say "NOTE: $w is not run: it needs portcullis bench (loadgen has no throughput workload)"
done

pid_of() { # target kind → the PID whose process tree serves it
    case $1 in
        direct) echo "" ;;
        redis-tls) echo "$PID_redis" ;;
        *) local v=PID_$(proc_of "$1" "$2"); v=${v//-/_}; echo "${!v}" ;;
    esac
}
target_port() { # target kind
    case $1 in
        direct) case $2 in echo) echo $P_ECHO ;; sink) echo $P_SINK ;; source) echo $P_SOURCE ;; redis) echo $P_REDIS ;; esac ;;
        redis-tls) echo $P_REDIS_TLS ;;
        *) port_of "$1" "$2" ;;
    esac
}
kind_of() { # workload → backend kind
    case $1 in tput-up) echo sink ;; tput-down) echo source ;; redis) echo redis ;; *) echo echo ;; esac
}
client_cmd() { # client workload target port pid → CMD (the load generator's command line)
    local c=$1 w=$2 t=$3 port=$4 pid=$5 args=()
    if [ "$c" = bench ]; then
        case $w in
            hs-full) args=(handshake --concurrency 16 --duration "$DURATION") ;;
            hs-resumed) args=(handshake --concurrency 16 --duration "$DURATION" --resume) ;;
            tput-up) args=(throughput --streams 1 --write-size 64KiB --direction up --duration "$DURATION") ;;
            tput-down) args=(throughput --streams 1 --write-size 64KiB --direction down --duration "$DURATION") ;;
            lat-c1) args=(latency --connections 1 --message-size 64 --duration "$DURATION") ;;
            lat-c32) args=(latency --connections 32 --message-size 64 --duration "$DURATION") ;;
            idle) args=(idle --connections "$IDLE_CONNS") ;;
        esac
        CMD=("$BIN" bench "${args[@]}" --target "127.0.0.1:$port" --json)
        if [ "$t" = direct ]; then CMD+=(--plaintext); else CMD+=("${TLSARGS[@]}"); fi
        [ -n "$pid" ] && CMD+=(--pid "$pid")
    else
        case $w in
            hs-full) args=(handshake -c 16 -d "$DURATION") ;;
            hs-resumed) args=(handshake -c 16 -d "$DURATION" -resume) ;;
            lat-c1) args=(rr -c 1 -size 64 -d "$DURATION") ;;
            lat-c32) args=(rr -c 32 -size 64 -d "$DURATION") ;;
            idle) args=(idle -n "$IDLE_CONNS" -settle 1s) ;;
        esac
        CMD=("$LOADGEN" "${args[@]}" -target "127.0.0.1:$port" -json -suite TLS_AES_128_GCM_SHA256 -group X25519)
        if [ "$t" = direct ]; then CMD+=(-plaintext); else CMD+=("${LGTLS[@]}"); fi
        [ -n "$pid" ] && CMD+=(-pid "$pid")
    fi
    return 0
}

run_one() { # round workload client target
    local r=$1 w=$2 c=$3 t=$4 pid port kind cpu0 cpu1 out rc rss0 pss0 rss1 pss1 mx
    kind=$(kind_of $w)
    pid=$(pid_of "$t" $kind)
    port=$(target_port "$t" $kind)
    local base="{\"client\":\"$c\",\"peer\":\"$t\",\"round\":$r,\"case\":\"$w\",\"duration_s\":$DUR_S,\"target_port\":$port"
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
        set +e
        if [ $w = idle ]; then
            # a fresh process: memory freed after earlier runs stays in the allocator (and HAProxy's pools),
            # so a warm process would hide the per-connection cost
            restart_terminator "$t"
            pid=$(pid_of "$t" $kind)
            client_cmd "$c" $w "$t" "$port" "$pid"
            cpu0=$(python3 "$HELPER" treecpu "$pid")
            read -r rss0 pss0 < <(python3 "$HELPER" treemem "$pid")
            timeout -s INT $((DUR_S * 4 + 120)) "${CMD[@]}" > "$WORK/bench.out" 2>"$WORK/bench.err" &
            local bp=$!
            mx=$(python3 "$HELPER" sample --pid "$pid" --while $bp)
            wait $bp; rc=$?
            read -r rss1 pss1 <<<"$mx"
        else
            client_cmd "$c" $w "$t" "$port" "$pid"
            timeout -s INT $((DUR_S * 4 + 60)) "${CMD[@]}" > "$WORK/bench.out" 2>"$WORK/bench.err"; rc=$?
        fi
        set -e
        out=$(tail -1 "$WORK/bench.out")
        if ! jq -e . >/dev/null 2>&1 <<<"$out"; then
            out=$(jq -nc --arg e "exit $rc, no JSON: $(tail -2 "$WORK/bench.err" | tr '\n' ' ')" --arg c "${CMD[*]}" '{error:$e, command:$c}')
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
    jq -r '"  r\(.round) \(.case) \(.client) \(.peer): " + (if .error then "ERROR " + .error
        elif .case == "redis" then "SET \(.results.set.rps // "?") GET \(.results.get.rps // "?") req/s"
        else ([.results.handshakes_per_second, .results.resumed_fraction, .results.mb_per_second_up, .results.mb_per_second_down,
               .results.requests_per_second, .results.latency_us.p99, .tree_rss_kb_per_connection]
              | map(select(. != null)) | map(tostring) | join(" "))
             + (if ((.results.errors // {}) | length) > 0 then " errors \(.results.errors | tostring)" else "" end) end)
        + "  (proxy cpu \(.tree_cpu_seconds) s)"' <<<"$(tail -1 "$JSONL")" >&2
}

for r in $(seq 1 "$ROUNDS"); do
    say "round $r/$ROUNDS"
    for w in $WORKLOADS; do
        for c in $(clients_for $w); do
            for t in $(targets_for $w); do run_one "$r" "$w" "$c" "$t"; done
        done
    done
done

# ------------------------------------------------------------------ 6. report
# workers that died during the run (their CPU time is lost from the tree, their connections reset)
CRASHES=""
n=$(cat "$HITCH_LOGS"/hitch-*-out.log 2>/dev/null | grep -c 'was terminated by signal' || true)
[ "${n:-0}" = 0 ] || CRASHES="$CRASHES hitch: $n worker(s) killed by a signal (hitch-*-out.log)."
n=$(grep -c 'exited on signal' "$WORK/nginx-error.log" 2>/dev/null || true)
[ "${n:-0}" = 0 ] || CRASHES="$CRASHES nginx: $n worker(s) exited on a signal (nginx-error.log)."
[ -z "$CRASHES" ] || say "WARNING:$CRASHES"
jq -n \
    --arg date "$DATE" --arg commit "$COMMIT" --argjson smoke "$SMOKE" --argjson rounds "$ROUNDS" \
    --arg duration "$DURATION" --arg command "${PORTCULLIS_BIN:+PORTCULLIS_BIN=$PORTCULLIS_BIN }$CMDLINE" \
    --arg machine "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r)" \
    --arg lb "$LOAD_BEFORE" --arg la "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg portcullis "$("$BIN" --version 2>&1 | head -1) (binary $(sha256sum "$BIN" | cut -c1-12), built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'))" --arg openssl "$(openssl version)" \
    --arg stunnel "$(stunnel -version 2>&1 | grep -m1 '^stunnel' | cut -d' ' -f2)" \
    --arg haproxy "$(haproxy -v | head -1 | cut -d' ' -f3)" --arg nginx "$(nginx -v 2>&1 | cut -d/ -f2)" \
    --arg redis "$(redis-server --version | cut -d' ' -f3 | cut -d= -f2)" \
    --arg hitch "$(hitch --version 2>&1 | head -1 | cut -d' ' -f2)" --arg loadgen "$LOADGEN_VERSION" \
    --arg clients "${CLIENTS# }" --arg crashes "$CRASHES" \
    --argjson crypto "$CRYPTO" --slurpfile val "$WORK/validation.jsonl" --argjson idle "$IDLE_CONNS" \
    --argjson redis_tls "$REDIS_TLS" --argjson redis_n "$REDIS_N" \
    '{date:$date, commit:$commit, smoke:($smoke==1), rounds:$rounds, duration:$duration, command:$command,
      machine:$machine, loadavg_before:$lb, loadavg_after:$la, crypto_bound:$crypto, validation:$val,
      clients:($clients | split(" ") | map(select(. != ""))),
      versions:{portcullis:$portcullis, openssl:$openssl, stunnel:$stunnel, haproxy:$haproxy, nginx:$nginx, hitch:$hitch,
                redis:$redis, loadgen:$loadgen},
      notes:([
        "Client and terminators share the same 2 cores: every figure includes the load generator'"'"'s own cost.",
        "Two load generators: `portcullis bench` (OpenSSL, on Portcullis'"'"'s own event loops) and loadgen (Go crypto/tls, shares no code with the terminators'"'"' TLS library). `portcullis bench` is lighter per operation and leaves more CPU to the terminator on this 2-core machine: that raises every terminator'"'"'s absolute rates but should leave the ratios comparable. When the two clients'"'"' ratios disagree beyond the round-to-round spread, trust loadgen: its cost per operation is what a real client pays.",
        "Handshake success: `portcullis bench handshake` counts a handshake when the server'"'"'s session ticket arrives; `loadgen handshake` when its 1-byte probe comes back through the terminator from the echo backend (so a loadgen handshake also costs a backend connect and one relayed byte each way). Both need the full handshake on the server side, including the client-certificate check.",
        "Proxy CPU = utime+stime of the terminator and all its descendants (nginx: master + 2 workers; hitch: the instance'"'"'s master, 2 workers and OCSP helper) from /proc/PID/stat, before and after each run.",
        "Idle memory: each terminator is restarted (fresh process) before its idle run; peak of the summed VmRSS/PSS (smaps_rollup) of its process tree while \($idle) idle mTLS connections are open, minus the value before, divided by \($idle).",
        "Per-connection log line to a file for Portcullis (audit line), stunnel (notice level), HAProxy (tcplog to stdout) and nginx (stream access_log buffered 64k). hitch has no per-connection access log: log-level 1 (errors only: a line for connections that end without close_notify or fail the handshake) to a file; its level 2 is ~10 debug lines per connection.",
        "hitch 1.7 has one backend per process: four hitch instances, one per listener (echo, sink, source, redis), each with workers = 2 (its workers pin themselves to CPUs #0 and #1); every case measures the instance of its listener. As root its workers run as nobody (it refuses root workers). Session resumption: OpenSSL'"'"'s default stateless tickets (hitch has no option for them). backlog 1024 (its default is 100).",
        "CN allowlist: hitch has none (client-verify = required only checks the chain to the CA), so it admits CN=intruder and the SAN/DN tricks: see the admission checks. stunnel'"'"'s checkHost is a host-name check (DNS SAN first, CN only without one). Everyone else admits only CN=bench-client.",
        "Refusal point: Portcullis, stunnel and hitch (no or untrusted certificate) refuse inside the handshake (alert); HAProxy (tcp-request session reject) and nginx (map → a server that closes) after it, with EOF.",
        (if $redis_tls == 1 then "redis native TLS: the same redis-server 7.0 process (its --tls-port, --tls-auth-clients yes, TLS 1.3, TLS_AES_128_GCM_SHA256, io-threads 1); it has no CN allowlist. redis-benchmark -c 32 -n \($redis_n) -t set,get."
         else "redis-server here is built without TLS: the native-TLS line is skipped." end)
      ] + (if $crashes == "" then [] else ["WARNING: worker processes died during the run:" + $crashes + " Their figures are suspect."] end))}' > "$WORK/meta.json"
python3 "$HELPER" report --jsonl "$JSONL" --md "$MD" --meta "$WORK/meta.json"
cp "$WORK/meta.json" "${MD%.md}.meta.json"
say "wrote $MD, $JSONL"
