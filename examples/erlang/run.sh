#!/usr/bin/env bash
# Erlang distribution whose only path between two nodes is a pair of Portcullis sidecars each way, end to end
# on one machine (see README.md in this directory):
#
#   a@127.0.0.1 ─plain─▶ client sidecar :A→B ─mTLS─▶ server sidecar :B-TLS ─plain─▶ b's dist port 127.0.0.1:PB
#   b@127.0.0.1 ─plain─▶ client sidecar :B→A ─mTLS─▶ server sidecar :A-TLS ─plain─▶ a's dist port 127.0.0.1:PA
#
# No epmd: both nodes run with -start_epmd false and the portcullis_epmd module (this directory), which maps
# the peer's node name to the local client sidecar's port; each node listens on one fixed port on loopback.
# Checks (dist_check.erl): b dials a first and does rpc:call and a 1 MB echo b→a; then a drops that
# connection, dials b itself and does the same a→b; each side sees its connection go to its client sidecar.
# A third node with the right cookie but a certificate the server sidecar does not admit cannot connect, and
# a client sidecar pointed at the wrong node refuses it (its certificate names another node).
# As root it installs what is missing (scripts/install-deps test); it builds the release binary (or uses
# $PORTCULLIS_BIN), stops every process it started by PID, and exits 0 only if every check passed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../_lib/example.sh
. "$here/../_lib/example.sh"

ex_deps openssl python3 erl erlc
ex_build
ex_workdir
epmd_before=no
port_open 4369 && epmd_before=yes

# --- a throwaway PKI: one certificate per node, used by both of its sidecars --------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 \
    -subj "/O=Example/CN=Cluster CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
node_cert() { # name subject dns
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=DNS:$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
node_cert node-a "/O=Example/OU=erlang-cluster/CN=node-a" node-a.cluster.internal
node_cert node-b "/O=Example/OU=erlang-cluster/CN=node-b" node-b.cluster.internal
node_cert intruder "/O=Example/OU=laptops/CN=intruder" intruder.example.org
chmod 600 ./*.key
ex_say "throwaway PKI in $PWD: ca.pem; node-a.pem, node-b.pem (OU=erlang-cluster); intruder.pem (OU=laptops)"

mkdir ebin
erlc -o ebin "$here/portcullis_epmd.erl" "$here/dist_check.erl"
ex_say "compiled portcullis_epmd and dist_check into $PWD/ebin"

pa=$(free_port) pb=$(free_port) a_tls=$(free_port) b_tls=$(free_port) a_to_b=$(free_port) b_to_a=$(free_port)
c_to_b=$(free_port) wrong=$(free_port)
cookie="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"

# --- the sidecars ---------------------------------------------------------------------------------------
server() { # log, listen, target, node cert
    start "portcullis server :$2" "$1" "$bin" server --listen "127.0.0.1:$2" --target "127.0.0.1:$3" \
        --cert "$4.pem" --key "$4.key" --cacert ca.pem --allow-ou erlang-cluster \
        --idle-timeout 0 --log-format json "${root_args[@]}"
    wait_listening "$last_pid" "$1"
}
client() { # log, listen, remote TLS port, node cert, the name the remote certificate must carry
    start "portcullis client :$2" "$1" "$bin" client --listen "127.0.0.1:$2" --target "127.0.0.1:$3" \
        --cert "$4.pem" --key "$4.key" --cacert ca.pem --override-server-name "$5" --log-format json "${root_args[@]}"
    wait_listening "$last_pid" "$1"
}
ex_say "node a: dist on 127.0.0.1:$pa; server sidecar 127.0.0.1:$a_tls → :$pa; client sidecar 127.0.0.1:$a_to_b → b"
server server-a.log "$a_tls" "$pa" node-a
client client-a-to-b.log "$a_to_b" "$b_tls" node-a node-b.cluster.internal
ex_say "node b: dist on 127.0.0.1:$pb; server sidecar 127.0.0.1:$b_tls → :$pb; client sidecar 127.0.0.1:$b_to_a → a"
server server-b.log "$b_tls" "$pb" node-b
client client-b-to-a.log "$b_to_a" "$a_tls" node-b node-a.cluster.internal

# --- the nodes ------------------------------------------------------------------------------------------
node() { # log, name, own dist port, then: -portcullis_epmd pairs and -eval
    local log="$1" name="$2" port="$3"; shift 3
    start "erl $name" "$log" erl -noshell -name "$name@127.0.0.1" -setcookie "$cookie" \
        -start_epmd false -epmd_module portcullis_epmd -pa ebin \
        -kernel inet_dist_listen_min "$port" inet_dist_listen_max "$port" \
        -kernel inet_dist_use_interface '{127,0,0,1}' "$@"
}
node a.log a "$pa" -portcullis_epmd b@127.0.0.1 "$a_to_b" -eval "dist_check:a([\"b@127.0.0.1\", \"$a_to_b\"])"
node_a=$last_pid
wait_for 20 "node a" grep -q READY a.log
listeners_on() { # PORT: the local addresses listening on it (from /proc/net/tcp and tcp6)
    python3 - "$1" <<'PY'
import sys
port = int(sys.argv[1])
for path in ("/proc/net/tcp", "/proc/net/tcp6"):
    for row in open(path).read().splitlines()[1:]:
        f = row.split()
        addr, p = f[1].rsplit(":", 1)
        if f[3] == "0A" and int(p, 16) == port:
            print("127.0.0.1" if addr == "0100007F" else addr)
PY
}
check "node a's distribution port $pa listens on $(listeners_on "$pa" | tr '\n' ' ')only" \
    test "$(listeners_on "$pa")" = 127.0.0.1
node b.log b "$pb" -portcullis_epmd a@127.0.0.1 "$b_to_a" -eval "dist_check:b([\"a@127.0.0.1\", \"$b_to_a\"])"
node_b=$last_pid
echo

node_wait() { # pid seconds: sets node_rc to the node's exit status ("timeout": stopped by PID at the deadline)
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$1" 2>/dev/null; then stop_pid "$1"; node_rc=timeout; return; fi
    node_rc=0
    wait "$1" 2>/dev/null || node_rc=$?
}
node_wait "$node_a" 90
rc_a=$node_rc
node_wait "$node_b" 10
rc_b=$node_rc
tally() { # the PASS/FAIL lines a node printed
    local line
    while IFS= read -r line; do
        case "$line" in PASS\ *) pass "${line#PASS }" ;; FAIL\ *) fail "${line#FAIL }" ;; esac
    done < <(grep -E '^(PASS|FAIL) ' "$1" || true)
}
tally b.log
tally a.log
check "both nodes stopped with init:stop(0) (a: $rc_a, b: $rc_b)" test "$rc_a" = 0 -a "$rc_b" = 0
admitted() { grep -c '"msg":"connection closed".*"policy.rule":"ou=erlang-cluster"' "$1" || true; }
check "server sidecar b admitted $(admitted server-b.log) connection(s) from $(grep -o '"tls.peer.subject":"[^"]*"' server-b.log | sort -u | tr '\n' ' ')" \
    test "$(admitted server-b.log)" -ge 1
check "server sidecar a admitted $(admitted server-a.log) connection(s) from $(grep -o '"tls.peer.subject":"[^"]*"' server-a.log | sort -u | tr '\n' ' ')" \
    test "$(admitted server-a.log)" -ge 1

# --- refusals -------------------------------------------------------------------------------------------
ex_say "node c: the right cookie, but its client sidecar presents intruder.pem (OU=laptops)"
client client-c-to-b.log "$c_to_b" "$b_tls" intruder node-b.cluster.internal
# b stopped with a; start it again, alone, for c to knock on.
node b2.log b "$pb" -eval 'io:format("READY~n"), timer:sleep(60000), init:stop(0)'
node_b2=$last_pid
wait_for 20 "node b (again)" grep -q READY b2.log
node c.log c "$(free_port)" -portcullis_epmd b@127.0.0.1 "$c_to_b" -eval 'dist_check:intruder(["b@127.0.0.1"])'
node_c=$last_pid
node_wait "$node_c" 30
rc_c=$node_rc
tally c.log
check "node c stopped (exit $rc_c)" test "$rc_c" = 0
check "server sidecar b refused intruder: $(grep -o '"handshake.detail":"[^"]*"' server-b.log | tail -1)" \
    grep -q '"handshake.error":"denied"' server-b.log
stop_pid "$node_b2"

ex_say "a client sidecar that expects node-b.cluster.internal but is pointed at node a's sidecar"
client client-wrong.log "$wrong" "$a_tls" node-b node-b.cluster.internal
before=$(admitted server-a.log)
got="$(python3 - "$wrong" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"\x00\x15N")  # the start of a distribution handshake (send_name)
try:
    d = s.recv(100)
    print("closed by the client sidecar" if d == b"" else f"got {len(d)} bytes")
except OSError as e:
    print(f"closed by the client sidecar ({e.__class__.__name__})")
PY
)"
sleep 0.3
check "wrong server refused by the client sidecar: $got; $(grep -o '"msg":"[^"]*".*"handshake.detail":"[^"]*"' client-wrong.log | tail -1 | sed 's/"config.generation.*"handshake.detail"/… "handshake.detail"/')" \
    test "${got:0:6}" = closed -a "$(admitted server-a.log)" = "$before"

if [[ $epmd_before == no ]]; then
    check "no epmd was started (nothing listens on 127.0.0.1:4369)" bash -c '! (exec 3<>/dev/tcp/127.0.0.1/4369) 2>/dev/null'
fi

echo
ex_say "what the sidecars logged:"
for f in server-b.log server-a.log client-a-to-b.log; do
    show_log "$f" '"msg":"connection closed"' || true
done
show_log server-b.log '"handshake.error":"denied"' || true
show_log client-wrong.log '"handshake failed"\|"refused"\|"verification"' || true
ex_finish
