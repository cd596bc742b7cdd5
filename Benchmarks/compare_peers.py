#!/usr/bin/env python3
"""Helpers for Benchmarks/compare-peers.sh (not meant to be run by hand).

  compare_peers.py validate  --name N --port P --certs DIR          admission checks of one terminator
  compare_peers.py treecpu   PID                                    CPU seconds of PID and its descendants
  compare_peers.py treemem   PID                                    RSS/PSS KiB of PID and its descendants
  compare_peers.py sample    --pid PID --while PID2                 max tree RSS/PSS while PID2 runs
  compare_peers.py backend   --echo|--sink|--source --listen H:P    stand-in backend (only when `portcullis
                                                                    bench backend` does not exist yet)
  compare_peers.py redis-csv FILE                                   redis-benchmark --csv → JSON
  compare_peers.py speed     DIR                                    openssl speed outputs → JSON
  compare_peers.py report    --jsonl F --md F --meta F              the Markdown table

Everything only touches loopback and the files it is given.
"""
import argparse, json, os, re, socket, ssl, statistics, sys, threading, time

CLK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- process tree accounting

def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def tree_cpu(pid):
    total = 0
    for p in tree(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime + stime of the process (all its threads)
    return total / CLK


def tree_mem(pid):
    rss = pss = 0
    for p in tree(pid):
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


# ---------------------------------------------------------------- admission checks

def _ctx(certs, client, maxv=None, suites=None):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(os.path.join(certs, "ca.pem"))
    if client:
        c.load_cert_chain(os.path.join(certs, f"{client}.pem"), os.path.join(certs, f"{client}.key"))
    if maxv:
        c.maximum_version = maxv
    return c


def _try(port, ctx, session=None, payload=b"portcullis-check\n"):
    """Returns (outcome, detail, ssl_obj_info). outcome: echoed | refused | error."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        t = ctx.wrap_socket(s, server_hostname="localhost", session=session)
    except (ssl.SSLError, OSError) as e:
        s.close()
        return "refused", f"in handshake: {e.__class__.__name__}: {getattr(e, 'reason', None) or e}", None
    info = {"version": t.version(), "cipher": t.cipher()[0], "reused": t.session_reused}
    try:
        t.sendall(payload)
        got = b""
        while len(got) < len(payload):
            b = t.recv(4096)
            if not b:
                break
            got += b
        info["session"] = t.session
        if got == payload:
            return "echoed", "", info
        return "refused", "EOF after the handshake (no echo)", info
    except (ssl.SSLError, OSError) as e:
        return "refused", f"after the handshake: {getattr(e, 'reason', None) or e}", info
    finally:
        try:
            t.close()
        except OSError:
            pass


def validate(a):
    rows, ok_all = [], True

    def row(check, expect, outcome, detail):
        nonlocal ok_all
        ok = outcome == expect
        ok_all &= ok or expect == "either"
        rows.append({"check": check, "expect": expect, "got": outcome, "detail": detail,
                     "pass": ok or expect == "either"})

    o, d, info = _try(a.port, _ctx(a.certs, "client"))
    row("allowed client CN=bench-client", "echoed", o,
        f"{info['version']} {info['cipher']}" if info else d)
    if info and (info["version"] != "TLSv1.3" or info["cipher"] != "TLS_AES_128_GCM_SHA256"):
        row("negotiated TLSv1.3 TLS_AES_128_GCM_SHA256", "echoed", "wrong-params",
            f"{info['version']} {info['cipher']}")
    # resumption: the tickets arrive with the first read, so take the session after the echo
    if info and info.get("session") is not None:
        ctx = _ctx(a.certs, "client")
        o1, d1, i1 = _try(a.port, ctx)
        o2, d2, i2 = _try(a.port, ctx, session=i1["session"] if i1 else None)
        row("session resumption (ticket)", "echoed", o2 if (i2 and i2["reused"]) else "not-resumed",
            "resumed" if (i2 and i2["reused"]) else (d2 or "full handshake again"))
    else:
        row("session resumption (ticket)", "echoed", "no-ticket", "no session after the echo")
    for who, what in [("denied", "denied client CN=intruder"),
                      ("nocert", "no client certificate"),
                      ("rogue", "client certificate from another CA"),
                      ("sanonly", "CN=intruder with DNS SAN bench-client"),
                      ("cnsan", "CN=bench-client with DNS SAN other.example"),
                      ("splice", "CN=intruder, O='x,CN=bench-client'")]:
        client = None if who == "nocert" else who
        ctx = _ctx(a.certs, client)
        o, d, _ = _try(a.port, ctx)
        expect = "echoed" if who == "cnsan" else "refused"
        row(what, expect, o, d)
    o, d, _ = _try(a.port, _ctx(a.certs, "client", maxv=ssl.TLSVersion.TLSv1_2))
    row("TLS 1.2 client", "refused", o, d)
    json.dump({"name": a.name, "port": a.port, "pass": ok_all, "checks": rows}, sys.stdout)
    print()
    return 0


# ---------------------------------------------------------------- stand-in backends

def backend(a):
    host, port = a.listen.rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(4096)
    chunk = b"\0" * 65536

    def serve(c):
        try:
            if a.source:
                while True:
                    c.sendall(chunk)
            buf = bytearray(65536)
            while True:
                n = c.recv_into(buf)
                if not n:
                    break
                if a.echo:
                    c.sendall(memoryview(buf)[:n])
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


# ---------------------------------------------------------------- parsers

def redis_csv(path):
    out = {}
    lines = [l.strip() for l in open(path) if l.strip()]
    if not lines or not lines[0].startswith('"test"'):
        return {"error": "no CSV output", "raw": "\n".join(lines[-3:])}
    head = [h.strip('"') for h in lines[0].split(",")]
    for l in lines[1:]:
        vals = [v.strip('"') for v in l.split(",")]
        rec = dict(zip(head, vals))
        name = rec.pop("test").split()[0].lower()
        out[name] = {k: float(v) for k, v in rec.items()}
    return out


def speed(d):
    res = {}
    txt = open(os.path.join(d, "speed-aes.txt")).read()
    m = re.search(r"^AES-128-GCM\s+(.*)$", txt, re.M)
    if m:
        vals = [float(v.rstrip("k")) * 1000 for v in m.group(1).split()]
        sizes = [16, 64, 256, 1024, 8192, 16384][: len(vals)]
        res["aes_128_gcm_bytes_per_s"] = dict(zip(map(str, sizes), vals))
    txt = open(os.path.join(d, "speed-ecdsa.txt")).read()
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)\s+([\d.]+)", txt)
    if m:
        res["ecdsa_p256_sign_per_s"] = float(m.group(3))
        res["ecdsa_p256_verify_per_s"] = float(m.group(4))
    txt = open(os.path.join(d, "speed-x25519.txt")).read()
    m = re.search(r"253 bits ecdh \(X25519\)\s+([\d.]+)s\s+([\d.]+)", txt)
    if m:
        res["x25519_ops_per_s"] = float(m.group(2))
    if {"ecdsa_p256_sign_per_s", "ecdsa_p256_verify_per_s", "x25519_ops_per_s"} <= res.keys():
        # one full mTLS 1.3 handshake, server side: 1 ECDSA sign (CertificateVerify), 2 verifies (the
        # client certificate's CA signature, the client's CertificateVerify), X25519 keygen + derive.
        # The client does the mirror image on the same two cores.
        side = (1 / res["ecdsa_p256_sign_per_s"] + 2 / res["ecdsa_p256_verify_per_s"]
                + 2 / res["x25519_ops_per_s"])
        res["server_side_crypto_ms_per_full_handshake"] = side * 1000
        res["full_handshakes_per_s_bound_one_core_server_only"] = 1 / side
        res["full_handshakes_per_s_bound_two_cores_client_and_server"] = 2 / (2 * side)
    return res


# ---------------------------------------------------------------- report

TERMS = ["direct", "portcullis", "stunnel", "haproxy", "nginx", "hitch", "redis-tls"]
PEERS = ["stunnel", "haproxy", "nginx", "hitch"]
TITLE = {"direct": "direct (plaintext)", "portcullis": "Portcullis", "stunnel": "stunnel",
         "haproxy": "HAProxy", "nginx": "nginx", "hitch": "hitch", "redis-tls": "redis native TLS"}
CLIENTS = ["bench", "loadgen", "redis-benchmark"]
CLIENT_TITLE = {"bench": "portcullis bench", "loadgen": "loadgen (Go)", "redis-benchmark": "redis-benchmark"}
NOMINAL_NOISE = 1.10  # with a single round there is no spread to judge by: a nominal ±10 %


def dig(o, path):
    for k in path.split("."):
        if not isinstance(o, dict) or k not in o:
            return None
        o = o[k]
    return o


def client_of(r):
    # lines written before the `client` field existed all came from portcullis bench (or redis-benchmark)
    return r.get("client") or ("redis-benchmark" if r.get("case") == "redis" else "bench")


def report(a):
    runs = [json.loads(l) for l in open(a.jsonl) if l.strip()]
    meta = json.load(open(a.meta))
    per = {}  # (workload, client, target) -> list of runs
    for r in runs:
        if r.get("case") and r.get("peer"):
            per.setdefault((r["case"], client_of(r), r["peer"]), []).append(r)

    def value(r, fn):
        if r.get("error"):
            return None
        try:
            v = fn(r)
        except (TypeError, ZeroDivisionError, KeyError):
            v = None
        return float(v) if isinstance(v, (int, float)) else None

    def med(workload, client, target, fn):
        vals = [v for v in (value(r, fn) for r in per.get((workload, client, target), [])) if v is not None]
        return statistics.median(vals) if vals else None

    def cpu_of(r):
        c = dig(r, "cpu.target_seconds")  # the client's --pid/-pid reading (process tree, around the measured phase)
        return c if c is not None else r.get("tree_cpu_seconds")  # ours (around the whole client process)

    def cpu_per(unit_fn, scale):
        def f(r):
            u = unit_fn(r)
            c = cpu_of(r)
            return None if not u or c is None else c / u * scale
        return f

    hs = lambda r: dig(r, "results.handshakes")
    reqs = lambda r: dig(r, "results.requests")
    gb_up = lambda r: dig(r, "results.bytes_up") / 1e9
    gb_down = lambda r: dig(r, "results.bytes_down") / 1e9

    # (label, workload, extractor, better: hi|lo, fmt, target: (kind, x, text) or None)
    # kinds: ratio (Portcullis ≥ x × best peer), lowest (Portcullis ≤ best peer), max (Portcullis ≤ x absolute)
    M = [
        ("full mTLS handshakes/s (c=16; direct: TCP connects/s)", "hs-full", lambda r: dig(r, "results.handshakes_per_second"), "hi", "{:.0f}", ("ratio", 1.25, "full handshakes/s ≥ 1.25× best peer")),
        ("  proxy CPU ms / full handshake", "hs-full", cpu_per(hs, 1000), "lo", "{:.2f}", ("lowest", None, "lowest proxy CPU per full handshake")),
        ("  handshake p99 µs (full)", "hs-full", lambda r: dig(r, "results.latency_us.p99"), "lo", "{:.0f}", None),
        ("  handshake errors (full, all kinds)", "hs-full", lambda r: sum((dig(r, "results.errors") or {}).values()), "lo", "{:.0f}", None),
        ("resumed handshakes/s (c=16)", "hs-resumed", lambda r: dig(r, "results.handshakes_per_second"), "hi", "{:.0f}", ("ratio", 1.25, "resumed handshakes/s ≥ 1.25× best peer")),
        ("  resumed fraction", "hs-resumed", lambda r: dig(r, "results.resumed_fraction"), "hi", "{:.3f}", None),
        ("  proxy CPU ms / resumed handshake", "hs-resumed", cpu_per(hs, 1000), "lo", "{:.2f}", None),
        ("1 stream up MB/s (client→sink)", "tput-up", lambda r: dig(r, "results.mb_per_second_up"), "hi", "{:.0f}", ("ratio", 1.0, "single stream up not below best peer")),
        ("  proxy CPU s / GB up", "tput-up", cpu_per(gb_up, 1), "lo", "{:.2f}", None),
        ("1 stream down MB/s (source→client)", "tput-down", lambda r: dig(r, "results.mb_per_second_down"), "hi", "{:.0f}", ("ratio", 1.0, "single stream down not below best peer")),
        ("  proxy CPU s / GB down", "tput-down", cpu_per(gb_down, 1), "lo", "{:.2f}", None),
        ("c=1 64 B echo req/s", "lat-c1", lambda r: dig(r, "results.requests_per_second"), "hi", "{:.0f}", None),
        ("  c=1 p50 µs", "lat-c1", lambda r: dig(r, "results.latency_us.p50"), "lo", "{:.0f}", ("lowest", None, "c=1 64 B echo: lowest p50")),
        ("  c=1 p99 µs", "lat-c1", lambda r: dig(r, "results.latency_us.p99"), "lo", "{:.0f}", ("lowest", None, "c=1 64 B echo: lowest p99")),
        ("c=32 64 B echo req/s", "lat-c32", lambda r: dig(r, "results.requests_per_second"), "hi", "{:.0f}", ("ratio", 1.2, "c=32 64 B echo req/s ≥ 1.2× best peer")),
        ("  c=32 p99 µs", "lat-c32", lambda r: dig(r, "results.latency_us.p99"), "lo", "{:.0f}", None),
        ("  proxy CPU µs / request (c=32)", "lat-c32", cpu_per(reqs, 1e6), "lo", "{:.1f}", None),
        ("idle RSS KiB / conn (tree, sampled)", "idle", lambda r: r.get("tree_rss_kb_per_connection"), "lo", "{:.1f}", ("max", 16, "idle RSS ≤ 16 KiB per connection")),
        ("  idle PSS KiB / conn (tree, sampled)", "idle", lambda r: r.get("tree_pss_kb_per_connection"), "lo", "{:.1f}", None),
        ("  idle RSS KiB / conn (client's -pid reading)", "idle", lambda r: dig(r, "results.rss_kb_per_connection"), "lo", "{:.1f}", None),
        ("redis-benchmark SET req/s (c=32)", "redis", lambda r: dig(r, "results.set.rps"), "hi", "{:.0f}", ("ratio", 1.2, "redis SET req/s ≥ 1.2× best peer")),
        ("redis-benchmark GET req/s (c=32)", "redis", lambda r: dig(r, "results.get.rps"), "hi", "{:.0f}", ("ratio", 1.2, "redis GET req/s ≥ 1.2× best peer")),
        ("  redis GET p99 ms", "redis", lambda r: dig(r, "results.get.p99_latency_ms"), "lo", "{:.3f}", None),
    ]
    cols = [t for t in TERMS if any(k[2] == t for k in per)]
    clients = [c for c in CLIENTS if any(k[1] == c for k in per)]

    def best_peer(vals, better):
        peers = {p: vals[p] for p in PEERS if vals.get(p) is not None}
        if not peers:
            return None, None
        bp = max(peers, key=peers.get) if better == "hi" else min(peers, key=peers.get)
        return bp, peers[bp]

    def round_ratios(w, c, fn, better):
        """Portcullis ÷ best peer in each round (the best peer of that round)."""
        rounds = sorted({r.get("round") for t in PEERS + ["portcullis"] for r in per.get((w, c, t), [])} - {None})
        out = []
        for rd in rounds:
            vals = {}
            for t in PEERS + ["portcullis"]:
                vs = [v for v in (value(r, fn) for r in per.get((w, c, t), []) if r.get("round") == rd) if v is not None]
                vals[t] = vs[0] if vs else None
            _, best = best_peer(vals, better)
            if vals["portcullis"] is not None and best:
                out.append(vals["portcullis"] / best)
        return out

    out = []
    out.append("| metric (median of %s rounds) | client | " % meta.get("rounds") + " | ".join(TITLE[c] for c in cols)
               + " | Portcullis ÷ best peer | target |")
    out.append("|---" * (len(cols) + 4) + "|")
    stats = {}  # (label, client) -> {ratio, best, verdict, spread, n}
    for label, w, fn, better, fmt, rule in M:
        for c in clients:
            vals = {t: med(w, c, t, fn) for t in cols}
            if all(v is None for v in vals.values()):
                continue
            cells = [fmt.format(vals[t]) if vals[t] is not None else "—" for t in cols]
            ratio, verdict = "", ""
            pc = vals.get("portcullis")
            bp, best = best_peer(vals, better)
            if bp and pc is not None:
                st = {"pc": pc, "best_peer": bp, "ratio": pc / best if best else None}
                if best:
                    ratio = f"{pc / best:.2f} (vs {TITLE[bp]})"
                    if w == "redis" and vals.get("redis-tls"):
                        ratio += f"; native {pc / vals['redis-tls']:.2f}"
                if rule:
                    kind, x, _ = rule
                    if kind == "ratio":
                        ok = bool(best) and pc / best >= x
                        verdict = f"≥{x}×: " + ("met" if ok else "not met")
                    elif kind == "lowest":
                        ok = pc <= best
                        verdict = "lowest: " + ("met" if ok else "not met")
                    else:  # max
                        ok = pc <= x
                        verdict = f"≤{x}: " + ("met" if ok else "not met")
                    st["ok"] = ok
                rr = round_ratios(w, c, fn, better)
                st["n"] = len(rr)
                st["spread"] = (max(rr) / min(rr)) if len(rr) >= 2 and min(rr) > 0 else None
                stats[(label, c)] = st
            out.append(f"| {label} | {CLIENT_TITLE[c]} | " + " | ".join(cells) + f" | {ratio} | {verdict} |")
    table = "\n".join(out)

    # agreement: the same ratio from the two load generators, against the rounds' own spread
    agree_lines, decided = [], {}
    for label, w, fn, better, fmt, rule in M:
        if not rule:
            continue
        b, l = stats.get((label, "bench")), stats.get((label, "loadgen"))
        if not (b and l and b.get("ratio") and l.get("ratio")):
            continue
        diff = max(b["ratio"], l["ratio"]) / min(b["ratio"], l["ratio"])
        spreads = [s for s in (b["spread"], l["spread"]) if s is not None]
        if spreads:
            noise = max(spreads)
            noise_txt = (f"round-to-round spread of the ratio: bench ×{b['spread']:.2f}, " if b["spread"] else "bench —, ") \
                + (f"loadgen ×{l['spread']:.2f}" if l["spread"] else "loadgen —")
        else:
            noise = NOMINAL_NOISE
            noise_txt = f"one round: no spread to judge by, nominal ×{NOMINAL_NOISE:.2f}"
        head = (f"- **{w}** · {label.strip()}: Portcullis ÷ best peer = {b['ratio']:.2f} (vs {TITLE[b['best_peer']]}) "
                f"with portcullis bench, {l['ratio']:.2f} (vs {TITLE[l['best_peer']]}) with loadgen; they differ by "
                f"×{diff:.2f}; {noise_txt}")
        if diff > noise:
            decided[label.strip()] = "loadgen"
            agree_lines.append(head + " → **disagree beyond the noise: trust loadgen** (independent client: it "
                               "shares no code with the terminators' TLS library, and its CPU cost per operation is "
                               "what a real client pays; portcullis bench is lighter per operation and leaves more "
                               "of the 2 cores to the terminator).")
        else:
            decided[label.strip()] = "both"
            agree_lines.append(head + " → agree within the noise.")

    # targets: the verdict per client; where the clients disagree, the agreement decides
    tgt = ["| target | " + " | ".join(CLIENT_TITLE[c] for c in clients) + " | verdict |",
           "|---" * (len(clients) + 2) + "|"]
    for label, w, fn, better, fmt, rule in M:
        if not rule:
            continue
        cells, oks = [], {}
        for c in clients:
            st = stats.get((label, c))
            if st and "ok" in st:
                oks[c] = st["ok"]
                shown = f"{st['pc']:.1f} KiB" if rule[0] == "max" else f"{st['ratio']:.2f}×" if st.get("ratio") else "?"
                cells.append(("met" if st["ok"] else "not met") + f" ({shown})")
            else:
                cells.append("—")
        if not oks:
            continue
        vs = set(oks.values())
        if len(vs) == 1:
            verdict = "met" if vs.pop() else "not met"
        elif decided.get(label.strip()) == "loadgen":
            verdict = ("met" if oks["loadgen"] else "not met") + " (clients disagree beyond noise: loadgen's)"
        else:
            verdict = "undecided (the clients differ within the noise)"
        tgt.append(f"| {rule[2]} | " + " | ".join(cells) + f" | {verdict} |")
    targets = "\n".join(tgt)

    warn = []
    for (w, c, t), rs in sorted(per.items()):
        for r in rs:
            if r.get("error"):
                warn.append(f"- {w} {CLIENT_TITLE[c]} {t} round {r.get('round')}: run failed: {r['error']}")
            elif w == "hs-resumed" and (dig(r, "results.resumed_fraction") or 0) < 0.9:
                warn.append(f"- {w} {CLIENT_TITLE[c]} {t} round {r.get('round')}: resumed fraction "
                            f"{dig(r, 'results.resumed_fraction')} < 0.9 (not measuring resumption)")
            suite = dig(r, "results.suite")
            if suite and suite != "TLS_AES_128_GCM_SHA256":
                warn.append(f"- {w} {CLIENT_TITLE[c]} {t} round {r.get('round')}: negotiated {suite}")
    # every client of a case should have a line for every target the case has (each terminator at least)
    terminators = {v["name"] for v in meta.get("validation") or []}
    for w in sorted({k[0] for k in per}):
        targets_w = {k[2] for k in per if k[0] == w} | terminators
        for c in sorted({k[1] for k in per if k[0] == w}):
            for t in sorted(targets_w - {k[2] for k in per if k[0] == w and k[1] == c}):
                warn.append(f"- {w} {CLIENT_TITLE[c]} {t}: no run")

    md = [f"# Peer comparison {meta['date']} ({meta['commit']}{', SMOKE' if meta.get('smoke') else ''})", ""]
    md.append(f"Machine: {meta['machine']}")
    md.append("")
    md.append("Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    md.append("")
    md.append(f"Command: `{meta['command']}` — {meta['rounds']} round(s) × {meta['duration']} per run, interleaved "
              "(for each workload, for each client, every target in turn), median over rounds. Clients: "
              + ", ".join(CLIENT_TITLE[c] for c in clients) + ". Load average before: "
              f"{meta.get('loadavg_before')}; after: {meta.get('loadavg_after', '?')}.")
    md.append("")
    if meta.get("notes"):
        for n in meta["notes"]:
            md.append(f"- {n}")
        md.append("")
    md += ["## Results", "", table, ""]
    md += ["## Do the two clients agree? (Portcullis ÷ best peer, per case)", ""]
    md += agree_lines or ["- no case was run with both clients"]
    md += ["", "## Targets", "", targets, ""]
    if warn:
        md += ["## Warnings", ""] + warn + [""]
    cb = meta.get("crypto_bound") or {}
    if cb:
        aes = cb.get("aes_128_gcm_bytes_per_s", {}).get("16384")
        md.append("Crypto bound (`openssl speed`, one core): "
                  + (f"AES-128-GCM {aes / 1e6:.0f} MB/s at 16 KiB; " if aes else "")
                  + f"ECDSA P-256 {cb.get('ecdsa_p256_sign_per_s', 0):.0f} sign/s, "
                  f"{cb.get('ecdsa_p256_verify_per_s', 0):.0f} verify/s; X25519 {cb.get('x25519_ops_per_s', 0):.0f} op/s "
                  f"→ {cb.get('server_side_crypto_ms_per_full_handshake', 0):.2f} ms of server-side public-key "
                  f"crypto per full mTLS handshake; with client and server sharing the 2 cores, at most "
                  f"{cb.get('full_handshakes_per_s_bound_two_cores_client_and_server', 0):.0f} full handshakes/s.")
        md.append("")
    if meta.get("validation"):
        md.append("Admission checks (Python `ssl` client) per terminator: " + "; ".join(
            f"{v['name']} {'all as expected' if v['pass'] else 'DIFFERS: ' + ', '.join(c['check'] + ' → ' + c['got'] for c in v['checks'] if not c['pass'])}"
            for v in meta["validation"]))
        md.append("")
    open(a.md, "w").write("\n".join(md) + "\n")
    print(table)
    print()
    print("Agreement (Portcullis ÷ best peer, portcullis bench vs loadgen):")
    print("\n".join(agree_lines) if agree_lines else "- no case was run with both clients")
    print()
    print(targets)
    if warn:
        print()
        print("Warnings:")
        print("\n".join(warn))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    v = sp.add_parser("validate"); v.add_argument("--name"); v.add_argument("--port", type=int); v.add_argument("--certs")
    t = sp.add_parser("treecpu"); t.add_argument("pid", type=int)
    t = sp.add_parser("treemem"); t.add_argument("pid", type=int)
    s = sp.add_parser("sample"); s.add_argument("--pid", type=int); s.add_argument("--while", dest="w", type=int)
    b = sp.add_parser("backend"); b.add_argument("--listen")
    for k in ("echo", "sink", "source"):
        b.add_argument(f"--{k}", action="store_true")
    r = sp.add_parser("redis-csv"); r.add_argument("file")
    r = sp.add_parser("speed"); r.add_argument("dir")
    r = sp.add_parser("report"); r.add_argument("--jsonl"); r.add_argument("--md"); r.add_argument("--meta")
    a = ap.parse_args()
    if a.cmd == "validate":
        return validate(a)
    if a.cmd == "treecpu":
        print(f"{tree_cpu(a.pid):.2f}"); return 0
    if a.cmd == "treemem":
        print("%d %d" % tree_mem(a.pid)); return 0
    if a.cmd == "sample":
        mx = (0, 0)
        while os.path.exists(f"/proc/{a.w}") and open(f"/proc/{a.w}/stat").read().split()[2] != "Z":
            m = tree_mem(a.pid)
            if m[0] > mx[0]:
                mx = m
            time.sleep(0.1)
        print("%d %d" % mx); return 0
    if a.cmd == "backend":
        return backend(a)
    if a.cmd == "redis-csv":
        print(json.dumps(redis_csv(a.file))); return 0
    if a.cmd == "speed":
        print(json.dumps(speed(a.dir))); return 0
    if a.cmd == "report":
        return report(a)


if __name__ == "__main__":
    sys.exit(main())
