# Shared by examples/{valkey,zeromq,nsq,generic}/run.sh (sourced, not run): dependencies, the release build,
# a throwaway PKI made with the openssl CLI, starting processes and stopping exactly those by PID, and the
# PASS/FAIL tally. Set PORTCULLIS_BIN=/path/to/portcullis to skip the build and use that binary.
# shellcheck shell=bash

ex_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ex_pids=()
ex_names=()
ex_passed=0
ex_failed=0
ex_keep="${KEEP_WORK:-}"

ex_say() { printf '==> %s\n' "$*"; }
pass() { ex_passed=$((ex_passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { ex_failed=$((ex_failed + 1)); printf 'FAIL %s\n' "$*"; }
# check "description" command...: PASS or FAIL by the command's exit status
check() { local what="$1"; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# Packages: as root, scripts/install-deps test installs whatever is missing; otherwise it only reports.
ex_deps() {
    if [[ $(id -u) -eq 0 ]]; then
        "$ex_root/scripts/install-deps" test
    else
        "$ex_root/scripts/install-deps" test || echo "(not root: install the packages above, then run again)" >&2
    fi
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "FAIL '$t' is not installed (run this script as root, or scripts/install-deps test)"; exit 1; }
    done
}

# As root (CI, containers) the sidecars say so: `server`, `client` and `run` refuse root without --user or
# --allow-root. On a real host, start them as root with --user instead (see the README, "Running as root").
root_args=()
if [[ "$(id -u)" == 0 ]]; then root_args=(--allow-root); fi

# The release binary (or $PORTCULLIS_BIN).
ex_build() {
    if [[ -n "${PORTCULLIS_BIN:-}" ]]; then
        bin="$(cd "$ex_root" && realpath -s "$PORTCULLIS_BIN")"
    else
        ex_say "swift build -c release --product portcullis"
        swift build -c release --product portcullis --package-path "$ex_root" >&2
        bin="$(swift build -c release --show-bin-path --package-path "$ex_root")/portcullis"
    fi
    [[ -x "$bin" ]] || { echo "FAIL no portcullis binary at $bin"; exit 1; }
    ex_say "binary: $bin"
}

# A scratch directory, removed at exit (KEEP_WORK=1 keeps it and prints where it is).
ex_workdir() {
    work="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-example.XXXXXX")"
    cd "$work"
}

# Stop every process we started, by PID: SIGTERM, then SIGKILL after 5 s.
ex_cleanup() {
    local i p
    for ((i = ${#ex_pids[@]} - 1; i >= 0; i--)); do
        p="${ex_pids[$i]}"
        kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
    done
    for p in "${ex_pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null || true
    done
    ex_pids=()
    if [[ -n "${work:-}" ]]; then
        if [[ -n "$ex_keep" ]]; then echo "work directory kept: $work"; else cd / && rm -rf "$work"; fi
    fi
}
trap ex_cleanup EXIT
trap 'exit 130' INT TERM

# start NAME LOGFILE command...: run in the background, remember its PID in $last_pid
start() {
    local name="$1" log="$2"; shift 2
    "$@" </dev/null >"$log" 2>&1 &
    last_pid=$!
    ex_pids+=("$last_pid")
    ex_names+=("$name")
}

# stop_pid PID: SIGTERM one process we started and wait for it (5 s, then SIGKILL)
stop_pid() {
    local p="$1"
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null || true
}

# A free loopback port (the kernel's pick; nothing listens there right now).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for SECONDS DESCRIPTION command...: poll until the command succeeds
wait_for() {
    local secs="$1" what="$2"; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { echo "FAIL timed out after ${secs}s waiting for $what"; return 1; }
        sleep 0.1
    done
}

# wait_listening PID LOGFILE: a portcullis process logged "listening"
wait_listening() {
    local pid="$1" log="$2" deadline=$((SECONDS + 20))
    until grep -q '"msg":"listening"' "$log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { echo "FAIL portcullis (pid $pid) exited:"; cat "$log"; exit 1; }
        ((SECONDS < deadline)) || { echo "FAIL portcullis (pid $pid) did not start listening:"; cat "$log"; exit 1; }
        sleep 0.05
    done
}

# port_open PORT: something accepts on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The throwaway PKI (ECDSA P-256, one day): ca.pem signs
#   server.pem    CN=localhost, DNS:localhost + IP:127.0.0.1, serverAuth (the server-mode sidecar)
#   app-1.pem     O=Example, OU=payments, CN=app-1, clientAuth (admitted)
#   intruder.pem  O=Example, CN=intruder, clientAuth (same CA, not admitted)
# and other-ca.pem, an unrelated CA.
ex_pki() {
    _ca() {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.pem" \
            -days 1 -subj "$2" -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    }
    _leaf() { # name subject extensions
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "$3" >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -sha256 \
            -extfile "$1.ext" -out "$1.pem" 2>/dev/null
        rm -f "$1.csr" "$1.ext"
    }
    _ca ca "/O=Example/CN=Example Throwaway CA"
    _ca other-ca "/O=Somebody Else/CN=Other CA"
    _leaf server "/O=Example/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
    _leaf app-1 "/O=Example/OU=payments/CN=app-1" "extendedKeyUsage=clientAuth"
    _leaf intruder "/O=Example/CN=intruder" "extendedKeyUsage=clientAuth"
    chmod 600 ./*.key
    ex_say "throwaway PKI in $PWD: ca.pem, server.pem (CN=localhost), app-1.pem (admitted), intruder.pem (refused)"
}

# server_sidecar LISTEN_PORT TARGET LOG [extra flags]: portcullis server admitting CN=app-1; sets $last_pid
server_sidecar() {
    local port="$1" target="$2" log="$3"; shift 3
    start "portcullis server :$port" "$log" "$bin" server --listen "127.0.0.1:$port" --target "$target" \
        --cert server.pem --key server.key --cacert ca.pem --allow-cn app-1 --log-format json "${root_args[@]}" "$@"
    wait_listening "$last_pid" "$log"
}

# client_sidecar LISTEN_PORT REMOTE_PORT LOG [CRED] [extra flags]: portcullis client presenting CRED (app-1)
# to the server sidecar on 127.0.0.1:REMOTE_PORT, expecting its certificate to name localhost; sets $last_pid
client_sidecar() {
    local port="$1" remote="$2" log="$3" cred="${4:-app-1}"; shift 4 || shift $#
    start "portcullis client :$port" "$log" "$bin" client --listen "127.0.0.1:$port" --target "127.0.0.1:$remote" \
        --cert "$cred.pem" --key "$cred.key" --cacert ca.pem --verify-dns localhost --log-format json "${root_args[@]}" "$@"
    wait_listening "$last_pid" "$log"
}

# show_log LOGFILE PATTERN [N]: the last N (1) JSON lines matching PATTERN, indented
show_log() { grep -- "$2" "$1" | tail -n "${3:-1}" | sed 's/^/    /'; }

# The verdict: exit 0 only if at least one check ran and none failed.
ex_finish() {
    echo
    if ((ex_failed == 0 && ex_passed > 0)); then
        echo "RESULT: all $ex_passed checks passed"
        exit 0
    fi
    echo "RESULT: $ex_failed of $((ex_passed + ex_failed)) checks FAILED"
    exit 1
}
