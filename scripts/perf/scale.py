#!/usr/bin/env python3
"""torii at scale, side by side with nginx, Varnish and HAProxy (issue 21).

Run it through scripts/perf/scale.sh from the project root, with ../shared/bench beside
the project (its helpers and peer templates are reused). Python 3 standard library only.

Each server runs three times, fresh each time, pinned to the server CPU; wrk, h2load and
the nginx origin run on the load CPU:

  store  cache big enough for N objects: hit-1k and pass-1k (references), h2c-hit, then
         the store is warmed with N 1 KiB objects (memory-per-object), then hit-many and
         hit-zipf in three alternating rounds with hit-1k's one key (hit-1k-beside, the
         reference of their ratio targets: runs seconds apart, not minutes)
  full   a small cache (--miss-cache MiB), filled past its size first: miss-store
  churn  torii only: miss-store for --churn-seconds at a 64 MiB cache, PSS sampled (churn-bound)
  tls    TLS 1.3 (ECDSA P-256) listener: tls-hit (wrk), tls-handshake and tls-resume (a new
         connection per request: tlsload, below), h2-hit over TLS (h2load)
  disk   torii only: a 1 MiB memory tier and a disk tier (disk-hit; nginx's hit-many is the
         reference: its proxy_cache reads files)

The handshake scenarios' client is scripts/perf/tlsload (rustls, built here with cargo on
first use): wrk's OpenSSL 3.0 spent ~330 µs of its core per full handshake, more than the
servers, so it measured itself; tlsload spends ~210 µs, offering the suites in a
browser's order (AES-128-GCM first).

stdout: one Markdown table, the targets, and last the line `N of M targets held`.
Progress goes to stderr.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LUA = os.path.join(HERE, "scale.lua")
SHARED = os.environ.get("SCALE_SHARED_BENCH", os.path.join(ROOT, "..", "shared", "bench"))
if not os.path.isfile(os.path.join(SHARED, "bench.py")):
    sys.exit(f"scale.py: ../shared/bench not found at {SHARED} (set SCALE_SHARED_BENCH)")
sys.path.insert(0, SHARED)
import bench as B  # noqa: E402  the shared harness: /proc helpers, processes, templates

PEERS = ["nginx", "varnish", "haproxy"]
SERVERS = PEERS + ["torii"]
NAMES = {"nginx": "nginx", "varnish": "Varnish", "haproxy": "HAProxy", "torii": "torii"}
SCENARIOS = ["hit-1k", "pass-1k", "h2c-hit", "memory-per-object", "hit-many", "hit-zipf",
             "miss-store", "churn-bound", "tls-hit", "tls-handshake", "tls-resume", "h2-hit", "disk-hit"]
NOT_DONE = []
BODY_SIZE = 1024
MISS_BASE = 10_000_000       # miss-store keys start here (store keys are 0..N-1 < this)
ZIPF_BASE = 60_000_000       # the Zipf set of the scan check (miss-store)
BESIDE_ROUNDS = 3           # alternating rounds of hit-1k-beside, hit-many and hit-zipf
HOT = MISS_BASE - 1          # the one key of hit-1k, tls-hit and h2-hit (outside the store's keys)
HIT_TOLERANCE = 0.001        # origin requests allowed during a hit run, as a share
PASS_TOLERANCE = 0.05        # |origin / client requests - 1| allowed when every request misses
SAMPLE_KEYS = 200            # random stored keys checked after warming
OTHER_LOAD_WARN = 15.0
LOAD_BOUND_WARN = 90.0        # load CPU busy % above which, with the server below 97 %, the
                              # client may be the limit (and the server's µs/request rise)


def load_bound(res):
    """A warning when the load CPU, not the server, was near its limit, else None."""
    load = res.get("load_cpu_busy_pct") or 0
    if load > LOAD_BOUND_WARN and res.get("server_cpu_pct", 100) < 97:
        return (f"load CPU at {load:.0f}% and the server at {res['server_cpu_pct']:.0f}%: "
                f"the client may be the limit (fewer requests per wake-up, more µs each)")
    return None


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


SCAN_LIMIT_S = 90            # the scan's top-up to 10x the cache stops here (slow servers)


class ScaleError(Exception):
    pass


def key_path(prefix, k):
    return f"{prefix}{k:08d}"


def body_for(path):
    """What the origin answers for path: the path, then filler up to 1 KiB."""
    pad = PADS["/nocache/" if path.startswith("/nocache/") else "/obj/"]
    return (path + pad).encode()


PADS = {}


def make_pads():
    for prefix in ("/obj/", "/nocache/"):
        n = BODY_SIZE - len(key_path(prefix, 0))
        PADS[prefix] = B.make_body(n, prefix).decode()


def pss_kib(pids):
    """Proportional set size of a process tree (shared pages counted once), in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def du_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------
# origin log: counted without the flush wait when polling


class Origin(B.OriginLog):
    def peek(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines


# --------------------------------------------------------------------------
# configurations


def patch(text, old, new, what):
    if old not in text:
        raise ScaleError(f"{what}: template no longer contains {old!r}")
    return text.replace(old, new, 1)


def render(template, dest, values):
    B.render(template, dest, values)
    with open(dest) as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def origin_config(ctx):
    path = os.path.join(ctx.run, "origin.conf")
    text = render("origin.nginx.conf", path, ctx.values)
    locs = ""
    for prefix, cc in (("/obj/", "public, max-age=3600"), ("/nocache/", "no-store")):
        locs += (f"        location {prefix} {{ add_header Cache-Control \"{cc}\"; "
                 f"return 200 \"${{uri}}{PADS[prefix]}\"; }}\n")
    text = re.sub(r"        location = /1k .*\n        location = /1m .*\n        location = /nocache/1k .*\n",
                  lambda m: locs, text)
    if "location /obj/" not in text:
        raise ScaleError("origin.nginx.conf: its locations changed; update scale.py")
    write(path, text)
    return path


def cache_sizes(ctx, phase):
    """MiB per server for this phase."""
    if phase == "store":
        n = ctx.objects
        return {"torii": max(256, n * 4 // 1024 + 64), "varnish": max(256, n * 4 // 1024 + 64),
                "haproxy": min(4095, max(256, n * 3 // 1024 + 64)),
                "nginx": max(1024, n * 8 // 1024 + 1024),
                "nginx_keys": max(16, n // 4000 + 16)}
    m = ctx.miss_cache if phase == "full" else 64  # tls and churn: 64 MiB
    return {"torii": m, "varnish": m, "haproxy": m, "nginx": m, "nginx_keys": 16}


def server_argv(ctx, name, phase):
    run, sizes = ctx.run, cache_sizes(ctx, phase)
    values = dict(ctx.values, PORT=ctx.ports["plain"])
    if name == "nginx":
        path = os.path.join(run, f"nginx-{phase}.conf")
        text = render("nginx.conf", path, values)
        cache_dir = os.path.join(run, f"nginx-cache-{phase}")
        text = patch(text, f"proxy_cache_path {run}/nginx-cache ", f"proxy_cache_path {cache_dir} ", "nginx.conf")
        text = patch(text, "keys_zone=bench:16m", f"keys_zone=bench:{sizes['nginx_keys']}m", "nginx.conf")
        text = patch(text, "max_size=1g", f"max_size={sizes['nginx']}m", "nginx.conf")
        listen = f"listen 127.0.0.1:{ctx.ports['plain']} backlog=4096;"
        text = patch(text, listen, listen + f"""
        listen 127.0.0.1:{ctx.ports['tls']} ssl http2 backlog=4096;
        listen 127.0.0.1:{ctx.ports['h2c']} http2 backlog=4096;
        ssl_certificate {ctx.cert};
        ssl_certificate_key {ctx.key};
        ssl_protocols TLSv1.3;
        http2_max_concurrent_streams 128;""", "nginx.conf")
        write(path, text)
        return [ctx.bins["nginx"], "-p", run + "/", "-c", path], cache_dir
    if name == "varnish":
        render("varnish.vcl", os.path.join(run, "varnish.vcl"), values)
        text = render("varnishd.args", os.path.join(run, f"varnishd-{phase}.args"), values)
        args = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if "malloc,256m" not in args:
            raise ScaleError("varnishd.args: no malloc,256m to resize; update scale.py")
        args[args.index("malloc,256m")] = f"malloc,{sizes['varnish']}m"
        args += ["-p", "feature=+http2"]
        return [ctx.bins["varnishd"]] + args, None
    if name == "haproxy":
        path = os.path.join(run, f"haproxy-{phase}.cfg")
        text = render("haproxy.cfg", path, values)
        text = re.sub(r"total-max-size 256\b", f"total-max-size {sizes['haproxy']}", text)
        if f"total-max-size {sizes['haproxy']}" not in text:
            raise ScaleError("haproxy.cfg: no total-max-size 256 to resize; update scale.py")
        bind = f"bind 127.0.0.1:{ctx.ports['plain']}"
        text = patch(text, bind, bind + f"""
    bind 127.0.0.1:{ctx.ports['tls']} ssl crt {ctx.pem} alpn h2,http/1.1 ssl-min-ver TLSv1.3
    bind 127.0.0.1:{ctx.ports['h2c']} proto h2""", "haproxy.cfg")
        write(path, text)
        return [ctx.bins["haproxy"], "-db", "-f", path], None
    if name == "torii":
        if phase == "disk":
            disk = os.path.join(run, "torii-disk")
            return [ctx.torii, "proxy", "--listen", f"127.0.0.1:{ctx.ports['plain']}", "--to", ctx.origin_url,
                    "--workers", "1", "--cache-memory", "1MiB", "--cache-disk", disk,
                    "--cache-disk-size", f"{ctx.disk_objects * 8 // 1024 + 64}MiB"], disk
        if phase == "tls":
            argv = [ctx.torii, "proxy", "--listen", f"127.0.0.1:{ctx.ports['tls']}",
                    "--tls-cert", ctx.cert, "--tls-key", ctx.key]
        else:
            argv = [ctx.torii, "proxy", "--listen", f"127.0.0.1:{ctx.ports['plain']}"]
        return argv + ["--to", ctx.origin_url, "--workers", "1",
                       "--cache-memory", f"{sizes['torii']}MiB"], None
    raise ScaleError(f"unknown server {name}")


# --------------------------------------------------------------------------
# HTTP helpers


def get(ctx, url_port, path, tls=False, conn=None):
    if conn is None:
        if tls:
            c = ssl.create_default_context()
            c.check_hostname = False
            c.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection("127.0.0.1", url_port, timeout=10, context=c)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=10)
    conn.request("GET", path, headers={"User-Agent": "torii-scale-sanity"})
    r = conn.getresponse()
    body = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body, conn


def check_hits(ctx, srv, port, paths, tls=False, first_may_miss=True):
    """GET each path (filling it), then again: the origin must see none of the repeats and
    a hit header, where the server has one, must say HIT. Returns evidence."""
    out = {}
    conn = None
    if first_may_miss:
        for p in paths:
            status, h, body, conn = get(ctx, port, p, tls, conn)
            if status != 200 or body != body_for(p):
                raise ScaleError(f"GET {p}: status {status}, {len(body)} bytes (want 200 and its 1 KiB body)")
        if tls:
            out["tls"] = {"version": conn.sock.version(), "cipher": conn.sock.cipher()[0]}
        time.sleep(0.3)  # a store may finish a moment after the response (nginx renames a file)
    n0 = ctx.origin.count()
    verdicts = []
    for p in paths:
        status, h, body, conn = get(ctx, port, p, tls, conn)
        if status != 200 or body != body_for(p):
            raise ScaleError(f"GET {p} (repeat): status {status}, {len(body)} bytes")
        verdicts.append(B.hit_header(srv, h))
    if tls and "tls" not in out:
        out["tls"] = {"version": conn.sock.version(), "cipher": conn.sock.cipher()[0]}
    conn.close()
    seen = ctx.origin.count() - n0
    out.update({"repeats": len(paths), "origin_requests": seen, "last_headers": B.cache_headers(h)})
    if tls and out["tls"]["version"] != "TLSv1.3":
        raise ScaleError(f"TLS version {out['tls']['version']}, not TLSv1.3")
    return out, seen, verdicts


def require_hits(ctx, srv, port, paths, tls=False, first_may_miss=True):
    out, seen, verdicts = check_hits(ctx, srv, port, paths, tls, first_may_miss)
    if seen:
        raise ScaleError(f"not served from cache: the origin saw {seen} of {len(paths)} repeat requests")
    if False in verdicts:
        raise ScaleError(f"the origin log shows hits but the server's header says miss: {out['last_headers']}")
    out["hit_header"] = "HIT" if all(verdicts) else "none (origin log only)"
    return out


def require_pass(ctx, srv, port, paths):
    n0 = ctx.origin.count()
    conn = None
    for p in paths:
        status, h, body, conn = get(ctx, port, p, conn=conn)
        if status != 200 or body != body_for(p):
            raise ScaleError(f"GET {p}: status {status}, {len(body)} bytes")
    conn.close()
    seen = ctx.origin.count() - n0
    if seen != len(paths):
        raise ScaleError(f"every request should reach the origin: it saw {seen} of {len(paths)}")
    return {"requests": len(paths), "origin_requests": seen}


# --------------------------------------------------------------------------
# load: wrk and h2load on the load CPU, server CPU from /proc


def measure(ctx, srv_proc, cmd, seconds, parse, sigint_when=None, limit=None):
    """Run a load generator; returns its parsed figures plus server CPU and origin counts.
    sigint_when: a function polled every 0.2 s; when true, wrk gets SIGINT (it then stops
    and prints its summary)."""
    pids = srv_proc.tree()
    c0 = B.cpu_seconds(pids)
    stat0 = B.cpu_times()
    o0 = ctx.origin.count()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         text=True, start_new_session=True)
    B.LOAD_CHILDREN.add(p)
    limit = limit or seconds + 30
    try:
        if sigint_when:
            while p.poll() is None:
                if sigint_when():
                    os.kill(p.pid, signal.SIGINT)
                    break
                if time.monotonic() - t0 > limit:
                    os.kill(p.pid, signal.SIGINT)
                    break
                time.sleep(0.2)
        out, err = p.communicate(timeout=limit + 30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise ScaleError(f"{os.path.basename(cmd[3])} did not finish in time")
    finally:
        if p.poll() is not None:
            B.LOAD_CHILDREN.discard(p)
    wall = time.monotonic() - t0
    c1 = B.cpu_seconds(pids)
    stat1 = B.cpu_times()
    res = parse(out, err, p.returncode)
    res["origin_requests"] = ctx.origin.count() - o0
    res["wall_s"] = round(wall, 2)
    srv_cpu = c1 - c0
    res["server_cpu_pct"] = round(100 * srv_cpu / wall, 1)
    res["server_us_per_req"] = round(srv_cpu * 1e6 / max(1, res["requests"]), 2)
    busy_srv = B.busy_pct(stat0, stat1, B.parse_cpu_list(ctx.server_cpus)) or 0
    res["load_cpu_busy_pct"] = B.busy_pct(stat0, stat1, B.parse_cpu_list(ctx.load_cpus))
    res["other_on_server_cpu_pct"] = round(max(0.0, busy_srv - res["server_cpu_pct"]), 1)
    return res


def parse_wrk(out, err, rc):
    m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
    if rc != 0 or not m:
        raise ScaleError(f"wrk failed (rc={rc}): {(err or out).strip()[-400:]}")
    res = json.loads(m.group(1))
    res["req_per_s"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def parse_h2load(out, err, rc):
    m = re.search(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", out, re.M)
    r = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out, re.M)
    proto = re.search(r"^Application protocol: (\S+)", out, re.M)
    if rc != 0 or not m or not r:
        raise ScaleError(f"h2load failed (rc={rc}): {(err or out).strip()[-400:]}")
    dur = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    ok = int(r.group(4))
    res = {"requests": ok, "duration_us": int(dur * 1e6), "req_per_s": ok / dur if dur else 0,
           "errors": {"failed": int(r.group(5)), "errored": int(r.group(6)), "timeout": int(r.group(7))},
           "protocol": proto.group(1) if proto else "?"}
    lat = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if lat:
        res["time_for_request"] = {"min": lat.group(1), "max": lat.group(2), "mean": lat.group(3)}
    return res


def wrk_cmd(ctx, url, conns, seconds, lua_args):
    return (["taskset", "-c", ctx.load_cpus, ctx.bins["wrk"], "-t1", f"-c{conns}", f"-d{seconds}s",
             "--timeout", "5s", "--latency", "-s", LUA, url, "--"] + [str(a) for a in lua_args])


TLSLOAD_DIR = os.path.join(HERE, "tlsload")
TLSLOAD = os.path.join(TLSLOAD_DIR, "target", "release", "tlsload")


def build_tlsload():
    """Builds scripts/perf/tlsload (release) with cargo; quick when it is up to date."""
    cargo = shutil.which("cargo")
    if not cargo:
        raise SystemExit("tls-handshake and tls-resume need cargo, to build scripts/perf/tlsload")
    r = subprocess.run([cargo, "build", "--release", "--quiet", "--manifest-path",
                        os.path.join(TLSLOAD_DIR, "Cargo.toml")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=900)
    if r.returncode != 0 or not os.access(TLSLOAD, os.X_OK):
        raise SystemExit(f"building scripts/perf/tlsload failed:\n{r.stdout[-2000:]}")


def tlsload_cmd(ctx, port, path, seconds, mode, conns=64):
    """tlsload: `conns` connections at a time, each a new TLS 1.3 connection for one GET of
    path (Connection: close); mode `full` (no resumption) or `resume` (each connection
    resumes the session of the one before it)."""
    return ["taskset", "-c", ctx.load_cpus, TLSLOAD, f"127.0.0.1:{port}", path, ctx.cert,
            str(seconds), str(conns), mode]


def parse_tlsload(out, err, rc):
    m = re.search(r"^TLSLOADJSON (\{.*\})$", out, re.M)
    if rc != 0 or not m:
        raise ScaleError(f"tlsload failed (rc={rc}): {(err or out).strip()[-400:]}")
    d = json.loads(m.group(1))
    n = d["requests"]
    return {"requests": n, "req_per_s": n / max(1e-9, d["seconds"]),
            "errors": {"failed": d["errors"]} if d["errors"] else {},
            "resumed_share": round(d["resumed"] / max(1, n), 3)}


def h2load_cmd(ctx, url, seconds):
    return ["taskset", "-c", ctx.load_cpus, ctx.bins["h2load"], "-t1", "-c100", "-m10",
            "-D", str(seconds), url]


def timed(ctx, proc, scheme, path_or_mode, kind="wrk", conns=64, expect="hit", lua=None, seconds=None):
    """Warm-up, then the timed run (`seconds`, default --seconds); validity from the origin log."""
    seconds = seconds or ctx.seconds
    port = ctx.ports["tls" if scheme == "https" else ("h2c" if kind == "h2c" else "plain")]
    if kind == "h2c" and proc.name in ("varnish", "torii"):
        port = ctx.ports["plain"]  # both take HTTP/2 prior knowledge on their plain port
    url_scheme = "https" if scheme == "https" else "http"
    warm, run = lua
    if kind == "wrk":
        url = f"{url_scheme}://127.0.0.1:{port}/"
        if ctx.warmup:
            measure(ctx, proc, wrk_cmd(ctx, url, conns, ctx.warmup, warm), ctx.warmup, parse_wrk)
        res = measure(ctx, proc, wrk_cmd(ctx, url, conns, seconds, run), seconds, parse_wrk)
    else:
        url = f"{url_scheme}://127.0.0.1:{port}{path_or_mode}"
        if ctx.warmup:
            measure(ctx, proc, h2load_cmd(ctx, url, ctx.warmup), ctx.warmup, parse_h2load)
        res = measure(ctx, proc, h2load_cmd(ctx, url, seconds), seconds, parse_h2load)
        want = "h2" if scheme == "https" else "h2c"
        if res["protocol"] != want:
            raise ScaleError(f"h2load spoke {res['protocol']}, not {want}")
    warnings = []
    errs = {k: v for k, v in res["errors"].items() if v}
    if errs:
        warnings.append(f"load generator errors {errs}")
    o = res["origin_requests"]
    if expect == "hit" and o > HIT_TOLERANCE * res["requests"]:
        warnings.append(f"origin saw {o} requests during a hit run (misses measured)")
        res["invalid"] = True
    if expect == "miss" and abs(o / max(1, res["requests"]) - 1) > PASS_TOLERANCE:
        warnings.append(f"origin saw {o} requests for {res['requests']} client requests")
        res["invalid"] = True
    if res["other_on_server_cpu_pct"] > OTHER_LOAD_WARN:
        warnings.append(f"CPU contention: other work took {res['other_on_server_cpu_pct']:.0f}% of the server CPU")
    if load_bound(res):
        warnings.append(load_bound(res))
    if not proc.alive():
        warnings.append("server died during the run")
        res["invalid"] = True
    res["warnings"] = warnings
    return res


# --------------------------------------------------------------------------
# phases


def start_server(ctx, name, phase):
    argv, cache_dir = server_argv(ctx, name, phase)
    proc = B.Proc(name, argv, ctx.server_cpus, os.path.join(ctx.run, f"{name}-{phase}.log"))
    proc.cache_dir = cache_dir
    log(f"== {name} / {phase}: {' '.join(argv)}")
    proc.start()
    if phase == "tls":
        wait_tls(proc, ctx.ports["tls"], ctx.start_timeout)
    else:
        B.wait_ready(proc, ctx.ports["plain"], ctx.start_timeout)
    return proc


def wait_tls(proc, port, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ScaleError(f"{proc.name} exited; log tail:\n{proc.log_tail()}")
        try:
            c = ssl.create_default_context()
            c.check_hostname = False
            c.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                with c.wrap_socket(s):
                    return
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise ScaleError(f"{proc.name}: no TLS on port {port} after {timeout:.0f} s ({last})")


def stop_server(proc):
    # nginx's cache files (one per object) go with the temp dir at the end: deleting 10^6
    # files here would take the load CPU's time between runs for nothing
    proc.stop()


def combine(runs):
    """One result of several timed runs of a scenario: requests and CPU summed, the figures
    derived from the sums; each run's req/s and µs per request kept under "rounds"."""
    wall = sum(r["wall_s"] for r in runs)
    reqs = sum(r["requests"] for r in runs)
    cpu_us = sum(r["server_us_per_req"] * r["requests"] for r in runs)
    loads = [r["load_cpu_busy_pct"] for r in runs]  # None where /proc/stat gave no figure
    res = {
        "requests": reqs,
        "wall_s": round(wall, 2),
        "req_per_s": reqs / sum(r["duration_us"] / 1e6 for r in runs),
        "server_us_per_req": round(cpu_us / max(1, reqs), 2),
        "server_cpu_pct": round(100 * cpu_us / 1e6 / wall, 1),
        "load_cpu_busy_pct": (None if None in loads else
                              round(sum(v * r["wall_s"] for v, r in zip(loads, runs)) / wall, 1)),
        "other_on_server_cpu_pct": round(sum(r["other_on_server_cpu_pct"] * r["wall_s"] for r in runs) / wall, 1),
        "origin_requests": sum(r["origin_requests"] for r in runs),
        "errors": {k: sum(r["errors"].get(k, 0) for r in runs) for k in runs[0]["errors"]},
        "warnings": sorted({w for r in runs for w in r.get("warnings", [])}),
        "rounds": [[round(r["req_per_s"]), r["server_us_per_req"]] for r in runs],
    }
    if any(r.get("invalid") for r in runs):
        res["invalid"] = True
    return res


def run_scenario(out, sc, fn):
    if sc not in out["want"]:
        return
    log(f"   {sc} ...")
    try:
        r = fn()
    except (ScaleError, OSError, http.client.HTTPException, ValueError) as e:
        r = {"failed": f"{type(e).__name__}: {e}" if not isinstance(e, ScaleError) else str(e)}
    out["scenarios"][sc] = r
    log("   -> " + summary(r))


def summary(r):
    if "failed" in r:
        return "FAILED: " + r["failed"]
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    if "end_kib" in r:
        s = (f"{r['requests']:,} misses, {r['server_us_per_req']:.1f} µs/req, PSS (s, MiB): "
             + ", ".join(f"{t}: {kib / 1024:.0f}" for t, kib in r["samples"]))
    elif "bytes_per_object" in r:
        s = (f"{r['bytes_per_object']:,.0f} B/object (PSS {r['pss_kib_before'] / 1024:.0f} -> "
             f"{r['pss_kib_after'] / 1024:.0f} MiB)")
    else:
        s = (f"{r['req_per_s']:,.0f} req/s, {r['server_us_per_req']:.1f} µs/req, server CPU "
             f"{r['server_cpu_pct']:.0f}% (busy: other {r['other_on_server_cpu_pct']:.0f}%, load CPU "
             f"{r['load_cpu_busy_pct']:.0f}%), origin reqs {r['origin_requests']}")
    if r.get("warnings"):
        s += "  WARN: " + "; ".join(r["warnings"])
    return s


def warm_store(ctx, name, proc, n=None):
    """N sequential keys over 64 connections until the origin has served them all."""
    n = n or ctx.objects
    target = ctx.origin.count() + n
    url = f"http://127.0.0.1:{ctx.ports['plain']}/"
    cmd = wrk_cmd(ctx, url, 64, 100000, ["wrap", n, 0, "/obj/"])
    limit = 120 + n / 1500
    res = measure(ctx, proc, cmd, 0, parse_wrk, sigint_when=lambda: ctx.origin.peek() >= target, limit=limit)
    stored = res["origin_requests"]
    log(f"   warmed {n:,} objects: {stored:,} origin requests in {res['wall_s']} s "
        f"({stored / res['wall_s']:,.0f}/s), server {res['server_cpu_pct']}% CPU")
    if stored < n:
        raise ScaleError(f"warming stopped after {res['wall_s']} s with {stored:,} of {n:,} objects fetched")
    time.sleep(1.0)
    # every object must be there: a sample of random keys, each served without the origin
    rnd = random.Random(7)
    keys = sorted(rnd.sample(range(n), min(n, SAMPLE_KEYS)))
    ev, seen, verdicts = check_hits(ctx, name, ctx.ports["plain"], [key_path("/obj/", k) for k in keys],
                                    first_may_miss=False)
    ev["sampled_keys"] = len(keys)
    ev["store_rate_per_s"] = round(stored / res["wall_s"])
    ev["store_server_us_per_req"] = round(res["server_cpu_pct"] / 100 * res["wall_s"] * 1e6 / max(1, stored), 1)
    ev["warm_wrk_requests"] = res["requests"]
    if seen:
        ev["warning"] = f"{seen} of {len(keys)} sampled stored keys were not in the cache"
    return ev, seen


def phase_store(ctx, name, out):
    want = out["want"]
    need = {"hit-1k", "pass-1k", "h2c-hit", "memory-per-object", "hit-many", "hit-zipf"} & want
    if not need:
        return
    proc = start_server(ctx, name, "store")
    try:
        one = key_path("/obj/", HOT)

        def hit_1k():
            sanity = require_hits(ctx, name, ctx.ports["plain"], [one] * 20)
            r = timed(ctx, proc, "http", None, lua=(["one", 1, HOT], ["one", 1, HOT]))
            r["sanity"] = sanity
            return r

        def pass_1k():
            sanity = require_pass(ctx, name, ctx.ports["plain"], [key_path("/nocache/", k) for k in range(20)])
            r = timed(ctx, proc, "http", None, expect="miss",
                      lua=(["one", 1, 0, "/nocache/"], ["one", 1, 1, "/nocache/"]))
            r["sanity"] = sanity
            return r

        def h2c_hit():
            sanity = require_hits(ctx, name, ctx.ports["plain"], [one] * 20)
            return dict(timed(ctx, proc, "http", one, kind="h2c", lua=(None, None)), sanity=sanity)

        run_scenario(out, "hit-1k", hit_1k)
        run_scenario(out, "pass-1k", pass_1k)
        run_scenario(out, "h2c-hit", h2c_hit)
        if not ({"memory-per-object", "hit-many", "hit-zipf"} & want):
            return
        time.sleep(1.0)
        pss0 = pss_kib(proc.tree())
        log(f"   warming {ctx.objects:,} objects (PSS before {pss0 / 1024:.0f} MiB) ...")
        try:
            ev, missing = warm_store(ctx, name, proc)
        except (ScaleError, OSError, http.client.HTTPException) as e:
            for sc in ("memory-per-object", "hit-many", "hit-zipf"):
                if sc in want:
                    out["scenarios"][sc] = {"failed": f"warming: {e}"}
            log(f"   warming FAILED: {e}")
            return
        out["warm"] = ev
        pss1 = pss_kib(proc.tree())

        def memory():
            n = ctx.objects
            r = {"objects": n, "pss_kib_before": pss0, "pss_kib_after": pss1,
                 "bytes_per_object": (pss1 - pss0) * 1024 / n, "warnings": []}
            if proc.cache_dir:
                r["disk_bytes"] = du_bytes(proc.cache_dir)
                r["disk_bytes_per_object"] = r["disk_bytes"] / n
            if missing:
                r["warnings"].append(ev["warning"])
                r["invalid"] = True
            return r

        run_scenario(out, "memory-per-object", memory)
        n = ctx.objects
        # hit-many and hit-zipf in alternating rounds with hit-1k's one key on this server
        # (hit-1k-beside): their targets are ratios to a one-key hit, and on this VM a
        # scenario's µs per request drifts by up to ±10 % over the minutes between hit-1k
        # and them (docs/perf-scale.md, the ninth round). Each round runs the three back to
        # back; each scenario's figures are over all its rounds (its "rounds" keep each).
        plan = [("hit-1k-beside", lambda i: (["one", 1, HOT], ["one", 1, HOT])),
                ("hit-many", lambda i: (["uniform", n, 0, "/obj/", 11 + 2 * i], ["uniform", n, 0, "/obj/", 12 + 2 * i])),
                ("hit-zipf", lambda i: (["zipf", n, 0, "/obj/", 21 + 2 * i], ["zipf", n, 0, "/obj/", 22 + 2 * i]))]
        plan = [(sc, lua) for sc, lua in plan if sc == "hit-1k-beside" or sc in want]
        if len(plan) > 1:
            secs = max(2, round(ctx.seconds / BESIDE_ROUNDS))
            runs = {sc: [] for sc, _ in plan}
            log(f"   hit-1k, hit-many, hit-zipf in {BESIDE_ROUNDS} alternating rounds of {secs} s ...")
            try:
                for i in range(BESIDE_ROUNDS):
                    for sc, lua in plan:
                        runs[sc].append(timed(ctx, proc, "http", None, lua=lua(i), seconds=secs))
            except (ScaleError, OSError, http.client.HTTPException, ValueError) as e:
                for sc, _ in plan:
                    out["scenarios"][sc] = {"failed": str(e)}
                log(f"   FAILED: {e}")
            else:
                for sc, _ in plan:
                    out["scenarios"][sc] = combine(runs[sc])
                    log(f"   {sc} -> " + summary(out["scenarios"][sc]))
    finally:
        stop_server(proc)


def phase_full(ctx, name, out):
    if "miss-store" not in out["want"]:
        return
    proc = start_server(ctx, name, "full")
    try:
        def miss_store():
            fill = ctx.miss_cache * 1024 * 1024 // BODY_SIZE * 2
            target = ctx.origin.count() + fill
            url = f"http://127.0.0.1:{ctx.ports['plain']}/"
            cmd = wrk_cmd(ctx, url, 64, 100000, ["seq", fill, MISS_BASE, "/obj/"])
            t0 = time.monotonic()
            measure(ctx, proc, cmd, 0, parse_wrk, sigint_when=lambda: ctx.origin.peek() >= target,
                    limit=60 + fill / 1500)
            log(f"   prefilled {fill:,} keys ({2 * ctx.miss_cache} MiB of bodies into a "
                f"{ctx.miss_cache} MiB cache) in {time.monotonic() - t0:.1f} s")
            # the scan check: a Zipf set over 10x the cache's objects, its hit ratio (from
            # the origin log) before and right after miss-store's stream of one-hit keys
            zipf_keys = fill * 5
            zipf = lambda seed, secs: wrk_cmd(ctx, url, 64, secs, ["zipf", zipf_keys, ZIPF_BASE, "/obj/", seed])
            measure(ctx, proc, zipf(41, ctx.seconds), ctx.seconds, parse_wrk)
            zb = measure(ctx, proc, zipf(42, ctx.seconds), ctx.seconds, parse_wrk)
            time.sleep(1.0)
            pss0 = pss_kib(proc.tree())
            start = MISS_BASE + fill + 1000
            r = timed(ctx, proc, "http", None, expect="miss",
                      lua=(["seq", 1, start, "/obj/"], ["seq", 1, start + 5_000_000, "/obj/"]))
            time.sleep(1.0)
            r["prefill_keys"] = fill
            r["pss_kib_before"], r["pss_kib_after"] = pss0, pss_kib(proc.tree())
            # the cache is full: the first key stored is gone
            o0 = ctx.origin.count()
            status, _, _, conn = get(ctx, ctx.ports["plain"], key_path("/obj/", MISS_BASE))
            conn.close()
            r["first_key_evicted"] = ctx.origin.count() > o0
            # the scan goes on to 10x the cache's worth of one-hit keys (bounded in time)
            scan_target = ctx.miss_cache * 1024 * 1024 // BODY_SIZE * 10
            more = scan_target - r["requests"]
            if more > 0:
                o1 = ctx.origin.count()
                measure(ctx, proc, wrk_cmd(ctx, url, 64, 100000, ["seq", more, start + 10_000_000, "/obj/"]),
                        0, parse_wrk, sigint_when=lambda: ctx.origin.peek() >= o1 + more, limit=SCAN_LIMIT_S)
                scanned = r["requests"] + ctx.origin.count() - o1
            else:
                scanned = r["requests"]
            # the first 2 s after the scan: a cache that lost its hot set is refilling then
            za = measure(ctx, proc, zipf(43, 2), 2, parse_wrk)
            r["scan"] = {"zipf_keys": zipf_keys, "scan_keys": scanned,
                         "hit_ratio_before": 1 - zb["origin_requests"] / max(1, zb["requests"]),
                         "hit_ratio_after": 1 - za["origin_requests"] / max(1, za["requests"])}
            if not r["first_key_evicted"]:
                r["warnings"].append("the first prefilled key was still cached: the cache may not have been full")
            return r

        run_scenario(out, "miss-store", miss_store)
    finally:
        stop_server(proc)


def phase_tls(ctx, name, out):
    want = {"tls-hit", "tls-handshake", "tls-resume", "h2-hit"} & out["want"]
    if not want:
        return
    if name == "varnish":
        for sc in want:
            out["scenarios"][sc] = {"skipped": "Varnish has no TLS (it needs a TLS proxy such as hitch)"}
        return
    proc = start_server(ctx, name, "tls")
    try:
        one = key_path("/obj/", HOT)

        def tls_hit():
            sanity = require_hits(ctx, name, ctx.ports["tls"], [one] * 20, tls=True)
            r = timed(ctx, proc, "https", None, lua=(["one", 1, HOT], ["one", 1, HOT]))
            r["sanity"] = sanity
            return r

        def h2_hit():
            sanity = require_hits(ctx, name, ctx.ports["tls"], [one] * 20, tls=True)
            return dict(timed(ctx, proc, "https", one, kind="h2", lua=(None, None)), sanity=sanity)

        def handshakes(mode):
            sanity = require_hits(ctx, name, ctx.ports["tls"], [one] * 20, tls=True)
            port = ctx.ports["tls"]
            if ctx.warmup:
                measure(ctx, proc, tlsload_cmd(ctx, port, one, ctx.warmup, mode), ctx.warmup, parse_tlsload)
            r = measure(ctx, proc, tlsload_cmd(ctx, port, one, ctx.seconds, mode), ctx.seconds, parse_tlsload)
            r["warnings"] = []
            if r["errors"]:
                r["warnings"].append(f"load generator errors {r['errors']}")
            if mode == "full" and r["resumed_share"] > 0:
                r["warnings"].append(f"{r['resumed_share']:.0%} of the sessions were resumed")
                r["invalid"] = True
            if mode == "resume" and r["resumed_share"] < 0.9:
                r["warnings"].append(f"only {r['resumed_share']:.0%} of the sessions were resumed")
            if r["origin_requests"] > HIT_TOLERANCE * r["requests"]:
                r["warnings"].append(f"origin saw {r['origin_requests']} requests during a hit run")
                r["invalid"] = True
            if load_bound(r):
                r["warnings"].append(load_bound(r))
            if not proc.alive():
                r["warnings"].append("server died during the run")
                r["invalid"] = True
            r["sanity"] = sanity
            return r

        def tls_handshake():
            return handshakes("full")

        def tls_resume():
            return handshakes("resume")

        run_scenario(out, "tls-hit", tls_hit)
        run_scenario(out, "tls-handshake", tls_handshake)
        run_scenario(out, "tls-resume", tls_resume)
        run_scenario(out, "h2-hit", h2_hit)
    finally:
        stop_server(proc)


def phase_churn(ctx, name, out):
    """torii only: miss-store for --churn-seconds at a 64 MiB cache, PSS sampled every 10 s."""
    if "churn-bound" not in out["want"]:
        return
    if name != "torii":
        out["scenarios"]["churn-bound"] = {"skipped": "torii only (time)"}
        return
    proc = start_server(ctx, name, "churn")
    try:
        def churn():
            time.sleep(1.0)
            base = pss_kib(proc.tree())
            fill = 64 * 1024 * 1024 // BODY_SIZE * 2
            target = ctx.origin.count() + fill
            url = f"http://127.0.0.1:{ctx.ports['plain']}/"
            measure(ctx, proc, wrk_cmd(ctx, url, 64, 100000, ["seq", fill, MISS_BASE, "/obj/"]), 0, parse_wrk,
                    sigint_when=lambda: ctx.origin.peek() >= target, limit=60 + fill / 1500)
            start = MISS_BASE + fill + 1000
            samples, reqs, cpu_us, origin, t0 = [], 0, 0.0, 0, time.monotonic()
            chunk = 10
            for i in range(max(1, ctx.churn_seconds // chunk)):
                r = measure(ctx, proc, wrk_cmd(ctx, url, 64, chunk, ["seq", 1, start + i * 2_000_000, "/obj/"]),
                            chunk, parse_wrk)
                reqs += r["requests"]
                origin += r["origin_requests"]
                cpu_us += r["server_us_per_req"] * r["requests"]
                samples.append((round(time.monotonic() - t0), pss_kib(proc.tree())))
            cap = 64 * 1024
            end = samples[-1][1]
            after_1m = [kib for t, kib in samples if t >= 60]
            grow = (max(after_1m) - after_1m[0]) if len(after_1m) > 1 else None
            r = {"requests": reqs, "origin_requests": origin, "server_us_per_req": cpu_us / max(1, reqs),
                 "baseline_kib": base, "samples": samples, "end_kib": end,
                 "bound_kib": base + cap * 1.15, "growth_after_1m_kib": grow, "warnings": []}
            if abs(origin / max(1, reqs) - 1) > PASS_TOLERANCE:
                r["warnings"].append(f"origin saw {origin} requests for {reqs} client requests")
                r["invalid"] = True
            return r

        run_scenario(out, "churn-bound", churn)
    finally:
        stop_server(proc)


def phase_disk(ctx, name, out):
    """torii with a 1 MiB memory tier and a disk tier: hits read files. nginx's proxy_cache
    always keeps bodies in files, so its hit-many is its disk hit; the other peers have none."""
    if "disk-hit" not in out["want"]:
        return
    if name != "torii":
        out["scenarios"]["disk-hit"] = {"skipped": "nginx: its hit-many is its disk hit (proxy_cache reads files)"
                                        if name == "nginx" else f"{NAMES[name]} keeps its cache in memory"}
        return
    proc = start_server(ctx, name, "disk")
    try:
        def disk_hit():
            n = ctx.disk_objects
            ev, missing = warm_store(ctx, name, proc, n)
            if missing:
                raise ScaleError(ev["warning"])
            r = timed(ctx, proc, "http", None, lua=(["uniform", n, 0, "/obj/", 31], ["uniform", n, 0, "/obj/", 32]))
            r["objects"] = n
            r["warm"] = ev
            r["disk_bytes"] = du_bytes(proc.cache_dir)
            return r

        run_scenario(out, "disk-hit", disk_hit)
    finally:
        stop_server(proc)


def bench_server(ctx, name):
    out = {"scenarios": {}, "want": set(ctx.scenarios)}
    for phase in (phase_store, phase_full, phase_churn, phase_tls, phase_disk):
        try:
            phase(ctx, name, out)
        except (ScaleError, OSError, B.BenchError) as e:
            log(f"   {name}: FAILED: {e}")
            out.setdefault("failures", []).append(str(e))
    out["want"] = sorted(out["want"])
    return out


# --------------------------------------------------------------------------
# report


def usable(r):
    return r is not None and "failed" not in r and "skipped" not in r and not r.get("invalid")


def fmt_int(v):
    return f"{v:,.0f}"


def cell(r, memory=False):
    if r is None:
        return "—"
    if "skipped" in r:
        return "n/a"
    if "failed" in r:
        return "FAIL"
    mark = "!" if r.get("invalid") or r.get("warnings") else ""
    if "end_kib" in r:
        return (f"PSS {r['baseline_kib'] / 1024:,.0f} → {r['end_kib'] / 1024:,.0f} MiB · "
                f"{r['server_us_per_req']:.1f} µs{mark}")
    if memory:
        v = r["bytes_per_object"]
        s = f"{0 if abs(v) < 0.5 else v:,.0f} B{mark}"  # no "-0 B" for a preallocated cache
        if "disk_bytes_per_object" in r:
            s += f" (+{r['disk_bytes_per_object']:,.0f} B on disk)"
        return s
    return f"{r['req_per_s']:,.0f} · {r['server_us_per_req']:.1f} µs · {r['server_cpu_pct']:.0f}%{mark}"


def targets(ctx, results):
    """[(scenario, description, held: True/False/None)]"""
    def g(s, sc):
        return results.get(s, {}).get("scenarios", {}).get(sc)

    def best_peer(sc, key, lower=False):
        best = None
        for p in PEERS:
            r = g(p, sc)
            if usable(r):
                v = r[key]
                if best is None or (v < best[0] if lower else v > best[0]):
                    best = (v, NAMES[p])
        return best

    t = {sc: g("torii", sc) for sc in SCENARIOS + ["hit-1k-beside"]}
    out = []

    def add(sc, text, ok):
        out.append((sc, text, ok))

    def us(sc):
        return t[sc]["server_us_per_req"]

    # The one-key reference measured in the same rounds (hit-1k-beside), else hit-1k's run.
    ref = "hit-1k-beside" if usable(t["hit-1k-beside"]) else "hit-1k"
    ref_text = "hit-1k's in the same rounds" if ref == "hit-1k-beside" else "hit-1k's"
    if "hit-many" in ctx.scenarios:
        if usable(t["hit-many"]) and usable(t[ref]):
            ratio = us("hit-many") / us(ref)
            add("hit-many", f"server µs/request ≤ 1.3× {ref_text}: {us('hit-many'):.1f} vs {us(ref):.1f} "
                f"= {ratio:.2f}×", ratio <= 1.3)
        else:
            add("hit-many", "server µs/request ≤ 1.3× hit-1k's: not measured", None)
        bp = best_peer("hit-many", "req_per_s")
        if usable(t["hit-many"]) and bp:
            ratio = t["hit-many"]["req_per_s"] / bp[0]
            add("hit-many", f"req/s ≥ best peer's: {t['hit-many']['req_per_s']:,.0f} vs {bp[1]} {bp[0]:,.0f} "
                f"= {ratio:.2f}×", ratio >= 1.0)
        else:
            add("hit-many", "req/s ≥ best peer's: not measured", None)
    if "hit-zipf" in ctx.scenarios:
        if usable(t["hit-zipf"]) and usable(t[ref]):
            ratio = us("hit-zipf") / us(ref)
            add("hit-zipf", f"server µs/request ≤ 1.1× {ref_text}: {us('hit-zipf'):.1f} vs {us(ref):.1f} "
                f"= {ratio:.2f}×", ratio <= 1.1)
        else:
            add("hit-zipf", "server µs/request ≤ 1.1× hit-1k's: not measured", None)
    if "memory-per-object" in ctx.scenarios:
        r = t["memory-per-object"]
        key = len(f"127.0.0.1:{ctx.ports['plain']}") + len(key_path("/obj/", 0))
        budget = BODY_SIZE + key + 100
        if usable(r):
            add("memory-per-object", f"RSS − baseline ≤ Σ(body + key) + 100 B × N = {budget:,} B/object "
                f"(1,024 B body + {key} B key, Host + path): {r['bytes_per_object']:,.0f} B/object "
                f"= {r['bytes_per_object'] / budget:.2f}× the budget", r["bytes_per_object"] <= budget)
        else:
            add("memory-per-object", f"RSS − baseline ≤ {budget:,} B/object: not measured", None)
    if "miss-store" in ctx.scenarios:
        if usable(t["miss-store"]) and usable(t["pass-1k"]):
            ratio = us("miss-store") / us("pass-1k")
            add("miss-store", f"server µs/request ≤ 1.2× pass-1k's: {us('miss-store'):.1f} vs "
                f"{us('pass-1k'):.1f} = {ratio:.2f}×", ratio <= 1.2)
        else:
            add("miss-store", "server µs/request ≤ 1.2× pass-1k's: not measured", None)
    if "miss-store" in ctx.scenarios:
        r = t["miss-store"]
        if r and "scan" in r:
            sc_ = r["scan"]
            b_, a_ = sc_["hit_ratio_before"], sc_["hit_ratio_after"]
            add("miss-store", f"a Zipf set's hit ratio not hurt by the scan ({sc_['scan_keys']:,} one-hit keys, "
                f"{sc_['scan_keys'] * BODY_SIZE / 2**20 / ctx.miss_cache:.1f}× the cache): {b_:.1%} before, "
                f"{a_:.1%} in the 2 s right after (held if ≥ 0.9× before)", a_ >= 0.9 * b_)
        else:
            add("miss-store", "a Zipf set's hit ratio not hurt by the scan: not measured", None)
    if "churn-bound" in ctx.scenarios:
        r = t["churn-bound"]
        if usable(r):
            over = r["end_kib"] - r["baseline_kib"]
            add("churn-bound", f"PSS ≤ baseline + 64 MiB cache + 15 % ({r['bound_kib'] / 1024:,.0f} MiB) after "
                f"{r['samples'][-1][0]} s of misses: {r['end_kib'] / 1024:,.0f} MiB (baseline "
                f"{r['baseline_kib'] / 1024:,.0f}, +{over / 1024:,.0f} MiB = {over / 65536:.2f}× the cache size)",
                r["end_kib"] <= r["bound_kib"])
            g_ = r["growth_after_1m_kib"]
            if g_ is not None:
                add("churn-bound", f"no growth after the first minute: {g_ / 1024:+,.1f} MiB from "
                    f"60 s to {r['samples'][-1][0]} s (held if ≤ 1 MiB)", g_ <= 1024)
            else:
                add("churn-bound", "no growth after the first minute: the run was shorter than 70 s", None)
        else:
            add("churn-bound", "RSS within the cache size + 15 % + baseline: not measured", None)
    if "tls-hit" in ctx.scenarios:
        bp = best_peer("tls-hit", "server_us_per_req", lower=True)
        if usable(t["tls-hit"]) and bp:
            ratio = us("tls-hit") / bp[0]
            add("tls-hit", f"server µs/request ≤ best peer's: {us('tls-hit'):.1f} vs {bp[1]} {bp[0]:.1f} "
                f"= {ratio:.2f}×", ratio <= 1.0)
        else:
            add("tls-hit", "server µs/request ≤ best peer's: not measured", None)
    if "tls-handshake" in ctx.scenarios:
        bp = best_peer("tls-handshake", "req_per_s")
        if usable(t["tls-handshake"]) and bp:
            ratio = t["tls-handshake"]["req_per_s"] / bp[0]
            add("tls-handshake", f"full handshakes/s ≥ best peer's: {t['tls-handshake']['req_per_s']:,.0f} vs "
                f"{bp[1]} {bp[0]:,.0f} = {ratio:.2f}×", ratio >= 1.0)
        else:
            add("tls-handshake", "handshakes/s ≥ best peer's: not measured", None)
    if "disk-hit" in ctx.scenarios:
        ng = g("nginx", "hit-many")
        if usable(t["disk-hit"]) and usable(ng):
            ratio = us("disk-hit") / ng["server_us_per_req"]
            add("disk-hit", f"server µs/request ≤ nginx's proxy_cache hit (its hit-many): {us('disk-hit'):.1f} vs "
                f"{ng['server_us_per_req']:.1f} = {ratio:.2f}×", ratio <= 1.0)
        else:
            add("disk-hit", "server µs/request ≤ nginx's proxy_cache hit: not measured", None)
    for sc, label in (("h2-hit", "h2 over TLS"), ("h2c-hit", "h2c")):
        if sc not in ctx.scenarios:
            continue
        bp = best_peer(sc, "req_per_s")
        if usable(t[sc]) and bp:
            ratio = t[sc]["req_per_s"] / bp[0]
            add(sc, f"{label}: req/s ≥ 1.5× best peer's: {t[sc]['req_per_s']:,.0f} vs {bp[1]} {bp[0]:,.0f} "
                f"= {ratio:.2f}×", ratio >= 1.5)
        else:
            add(sc, f"{label}: req/s ≥ 1.5× best peer's: not measured", None)
    return out


ROW_LABELS = {
    "hit-1k": "hit-1k (reference: one key)",
    "pass-1k": "pass-1k (reference: no-store)",
    "hit-1k-beside": "hit-1k beside them (one key, in rounds alternating with hit-many and hit-zipf)",
    "hit-many": "hit-many (N keys, uniform)",
    "hit-zipf": "hit-zipf (N keys, Zipf 0.99)",
    "memory-per-object": "memory-per-object (PSS − baseline) / N",
    "miss-store": "miss-store (new key each, cache full)",
    "tls-hit": "tls-hit (TLS 1.3, HTTP/1.1 keep-alive)",
    "tls-handshake": "tls-handshake (a new TLS 1.3 connection per hit, full handshakes; tlsload, 64 at a time)",
    "tls-resume": "tls-handshake, resumed (as above, each connection resuming the session of the one before)",
    "h2-hit": "h2-hit, h2 over TLS (100 × 10 streams)",
    "h2c-hit": "h2-hit, h2c (100 × 10 streams)",
    "churn-bound": "churn-bound (miss-store at a 64 MiB cache, torii only)",
    "disk-hit": "disk-hit (uniform over the disk tier's objects; memory tier 1 MiB)",
}
ROW_ORDER = ["hit-1k", "pass-1k", "hit-many", "hit-zipf", "memory-per-object", "miss-store",
             "churn-bound", "tls-hit", "tls-handshake", "tls-resume", "h2-hit", "h2c-hit", "disk-hit"]


def markdown(ctx, report):
    res = report["results"]
    servers = report["servers"]
    m = report["meta"]
    L = []
    L.append(f"### torii at scale — {m['started']} — {m['cpu_model']}, {m['nproc']} CPUs, {m['kernel']}")
    L.append("")
    L.append(f"N = {ctx.objects:,} objects of 1 KiB (disk-hit: {ctx.disk_objects:,} on torii's disk tier); {ctx.seconds} s per timed run after a {ctx.warmup} s "
             f"warm-up; servers on CPU {ctx.server_cpus}, wrk/h2load and the nginx origin on CPU "
             f"{ctx.load_cpus}; miss-store cache {ctx.miss_cache} MiB, prefilled with twice that. "
             "Cells: req/s · server CPU µs per request · server CPU % of a core "
             "(memory: bytes per stored object). `!` = a warning below. Background load before the run: "
             + ", ".join(f"{k} {v}%" for k, v in m["background_busy_pct"].items()) + ".")
    L.append("")
    head = ["scenario"] + [NAMES[s] for s in servers] + ["torii target", "held"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|---|" + "|".join(["---:"] * len(servers)) + "|---|---|")
    tg = targets(ctx, res)
    by_sc = {}
    for sc, text, ok in tg:
        by_sc.setdefault(sc, []).append((text, ok))
    rows = [sc for sc in ROW_ORDER if sc in ctx.scenarios]
    if any("warm" in res.get(s, {}) for s in servers):
        at = [rows.index(sc) for sc in ("memory-per-object", "hit-many", "hit-zipf") if sc in rows]
        rows.insert(min(at) if at else len(rows), "warm")
    if "miss-store" in rows:
        rows.insert(rows.index("miss-store") + 1, "scan")
    if any("hit-1k-beside" in res.get(s, {}).get("scenarios", {}) for s in servers):
        at = [rows.index(sc) for sc in ("hit-many", "hit-zipf") if sc in rows]
        rows.insert(min(at) if at else len(rows), "hit-1k-beside")
    for sc in rows:
        if sc == "scan":
            cells = []
            for s in servers:
                x = res.get(s, {}).get("scenarios", {}).get("miss-store") or {}
                z = x.get("scan")
                cells.append(f"{z['hit_ratio_before']:.1%} → {z['hit_ratio_after']:.1%}" if z else "—")
            L.append("| scan: Zipf hit ratio before → right after miss-store | " + " | ".join(cells) + " | "
                     "see miss-store | |")
            continue
        if sc == "warm":
            cells = []
            for s in servers:
                w = res.get(s, {}).get("warm")
                cells.append(f"{w['store_rate_per_s']:,} · {w['store_server_us_per_req']:.1f} µs" if w else "—")
            L.append("| warm: storing N objects, no eviction (objects/s · µs) | " + " | ".join(cells) + " | | |")
            continue
        cells = [cell(res.get(s, {}).get("scenarios", {}).get(sc), memory=sc == "memory-per-object")
                 for s in servers]
        if sc == "disk-hit" and "nginx" in servers and res["nginx"].get("scenarios", {}).get("hit-many"):
            cells[servers.index("nginx")] = cell(res["nginx"]["scenarios"]["hit-many"]) + " (its hit-many)"
        tcells = by_sc.get(sc, [])
        ttext = "; ".join(t for t, _ in tcells) or "reference"
        held = " ".join("yes" if ok else ("no" if ok is False else "—") for _, ok in tcells) or ""
        L.append(f"| {ROW_LABELS[sc]} | " + " | ".join(cells) + f" | {ttext} | {held} |")
    for sc in NOT_DONE:
        L.append(f"| {sc} | " + " | ".join(["not done"] * len(servers)) + " | not done in this round | — |")
    L.append("")
    notes = []
    for s in servers:
        r = res.get(s, {})
        for f in r.get("failures", []):
            notes.append(f"- {NAMES[s]}: FAILED: {f.splitlines()[0]}")
        for sc, x in r.get("scenarios", {}).items():
            if sc in ("disk-hit", "churn-bound") and "skipped" in x:
                continue  # only torii has a disk tier beside its memory tier; nginx's row is its hit-many
            if "failed" in x:
                notes.append(f"- {NAMES[s]} / {sc}: FAIL: {x['failed'].splitlines()[0]}")
            if "skipped" in x:
                notes.append(f"- {NAMES[s]} / {sc}: not run: {x['skipped']}")
            for w in x.get("warnings", []):
                notes.append(f"- {NAMES[s]} / {sc}: {w}")
            if (x.get("load_cpu_busy_pct") or 0) >= 95 and x.get("server_cpu_pct", 100) < 90:
                notes.append(f"- {NAMES[s]} / {sc}: the load CPU was {x['load_cpu_busy_pct']:.0f}% busy and the "
                             f"server {x['server_cpu_pct']:.0f}%: the load generator and origin, not the server, "
                             "set this req/s")
        ms = r.get("scenarios", {}).get("miss-store")
        if ms and "pss_kib_after" in ms:
            notes.append(f"- {NAMES[s]} miss-store: PSS {ms['pss_kib_before'] / 1024:,.0f} MiB after the prefill, "
                         f"{ms['pss_kib_after'] / 1024:,.0f} MiB after the run, with a {ctx.miss_cache} MiB cache; "
                         f"first prefilled key evicted: {'yes' if ms.get('first_key_evicted') else 'NO'}")
        mem = r.get("scenarios", {}).get("memory-per-object")
        if mem and "pss_kib_after" in mem:
            notes.append(f"- {NAMES[s]} memory: PSS {mem['pss_kib_before'] / 1024:,.0f} MiB before warming, "
                         f"{mem['pss_kib_after'] / 1024:,.0f} MiB with N objects"
                         + (f"; cache files on disk {mem['disk_bytes'] / 2**20:,.0f} MiB (bodies in the page "
                            "cache, not in the process)" if "disk_bytes" in mem else "")
                         + ("; its cache (`total-max-size`) is allocated and touched at start, so it is "
                            "in the baseline, not in the difference" if s == "haproxy" else ""))
    if notes:
        L.append("Notes, warnings and failures:")
        L.append("")
        L.extend(notes)
        L.append("")
    L.append("Sanity: every hit scenario was preceded by repeat GETs that the origin never saw (and a HIT "
             "header where the server sends one), and its timed run counted the origin's log (`!` if over "
             f"{HIT_TOLERANCE:.1%} of the requests); after warming, {SAMPLE_KEYS} random stored keys were "
             "fetched again without an origin request; miss-store and pass-1k runs must reach the origin for "
             "every request (±5 %); miss-store checks that the first prefilled key was evicted.")
    L.append("")
    L.append("Versions: " + "; ".join(f"{k}: {v}" for k, v in report["versions"].items()))
    L.append("")
    L.append("Targets:")
    L.append("")
    held = 0
    for sc, text, ok in tg:
        held += 1 if ok else 0
        L.append(f"- {'HELD' if ok else ('NOT HELD' if ok is False else 'NOT MEASURED')} — {sc}: {text}")
    L.append("- reported, no target: tls-handshake with session resumption (the tls-resume row)")
    if ctx.churn_seconds < 600:
        L.append(f"- not measured: churn-bound for the peers and for the issue's 10 minutes (here {ctx.churn_seconds} s)")
    else:
        L.append("- not measured: churn-bound for the peers (it is a target of torii's alone)")
    L.append("")
    L.append(f"{held} of {len(tg)} targets held")
    return "\n".join(L)


# --------------------------------------------------------------------------
# main


class Ctx:
    pass


def main():
    env = os.environ
    ap = argparse.ArgumentParser(description="torii at scale against nginx, Varnish and HAProxy (issue 21).")
    ap.add_argument("--objects", type=int, default=1_000_000, help="N stored objects (default 1,000,000)")
    ap.add_argument("--seconds", type=int, default=6, help="seconds per timed run (default 6)")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of load before each timed run (default 1)")
    ap.add_argument("--miss-cache", type=int, default=64, help="MiB of cache for miss-store (default 64)")
    ap.add_argument("--churn-seconds", type=int, default=90, help="churn-bound's length (default 90; "
                    "issue 21 asks for 600)")
    ap.add_argument("--disk-objects", type=int, help="objects on torii's disk tier for disk-hit "
                    "(default min(N, 50,000))")
    ap.add_argument("--only", help="servers, comma-separated: " + ",".join(SERVERS))
    ap.add_argument("--scenarios", help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--torii", default=env.get("TORII_BIN", os.path.join(ROOT, "target", "release", "torii")),
                    help="torii binary (default target/release/torii, env TORII_BIN)")
    ap.add_argument("--out", help="write every figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()
    if not (1000 <= args.objects < HOT):
        raise SystemExit(f"--objects must be 1000..{HOT - 1}")
    if not (1 <= args.seconds <= 120) or not (0 <= args.warmup <= 30) or not (4 <= args.miss_cache <= 1024):
        raise SystemExit("--seconds 1..120, --warmup 0..30, --miss-cache 4..1024")

    ctx = Ctx()
    ctx.objects, ctx.seconds, ctx.warmup, ctx.miss_cache = args.objects, args.seconds, args.warmup, args.miss_cache
    ctx.start_timeout = 30.0
    ctx.churn_seconds = args.churn_seconds
    if not (10 <= ctx.churn_seconds <= 3600):
        raise SystemExit("--churn-seconds must be 10..3600")
    ctx.disk_objects = args.disk_objects or min(ctx.objects, 50_000)
    if not (1000 <= ctx.disk_objects < HOT):
        raise SystemExit("--disk-objects must be 1000..9999998")
    servers = B.parse_list(args.only, SERVERS, "server") if args.only else list(SERVERS)
    ctx.scenarios = B.parse_list(args.scenarios, SCENARIOS, "scenario") if args.scenarios else list(SCENARIOS)
    ctx.torii = os.path.abspath(args.torii)
    if "torii" in servers and not os.access(ctx.torii, os.X_OK):
        raise SystemExit(f"no torii binary at {ctx.torii} (--torii BIN or TORII_BIN)")

    need = {"nginx": "nginx", "wrk": "wrk", "taskset": "taskset", "h2load": "h2load", "openssl": "openssl"}
    if "varnish" in servers:
        need["varnishd"] = "varnishd"
    if "haproxy" in servers:
        need["haproxy"] = "haproxy"
    ctx.bins = {k: B.which(v) for k, v in need.items()}
    missing = [k for k, v in ctx.bins.items() if not v]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (../shared/bench/setup.sh; h2load: nghttp2-client)")
    if {"tls-handshake", "tls-resume"} & set(ctx.scenarios) and set(servers) - {"varnish"}:
        log("building scripts/perf/tlsload ...")
        build_tlsload()

    avail = sorted(os.sched_getaffinity(0))
    ctx.server_cpus = env.get("BENCH_SERVER_CPUS", "1" if 1 in avail else str(avail[-1]))
    ctx.load_cpus = env.get("BENCH_LOAD_CPUS", "0" if 0 in avail else str(avail[0]))
    os.sched_setaffinity(0, B.parse_cpu_list(ctx.load_cpus))

    base = int(env.get("SCALE_PORT_BASE", "19480"))
    ctx.ports = {"origin": base, "plain": base + 1, "tls": base + 2, "h2c": base + 3}
    busy = [f"{k}:{p}" for k, p in ctx.ports.items() if not B.port_free(p)]
    if busy:
        raise SystemExit(f"ports in use on 127.0.0.1: {', '.join(busy)} (another run? set SCALE_PORT_BASE)")
    ctx.origin_url = f"http://127.0.0.1:{ctx.ports['origin']}"
    soft, _ = B.raise_nofile(20000)

    versions = {"nginx": B.first_line([ctx.bins["nginx"], "-v"]), "wrk": B.first_line([ctx.bins["wrk"], "-v"]),
                "h2load": B.first_line([ctx.bins["h2load"], "--version"])}
    if "varnish" in servers:
        versions["varnish"] = B.first_line([ctx.bins["varnishd"], "-V"])
    if "haproxy" in servers:
        versions["haproxy"] = B.first_line([ctx.bins["haproxy"], "-v"])
    if "torii" in servers:
        versions["torii"] = env.get("TORII_VERSION") or B.first_line([ctx.torii, "--version"])
        # the commit of the checkout the binary was built in (target/release/torii), if any
        src = os.path.dirname(os.path.dirname(os.path.dirname(ctx.torii)))
        rev = subprocess.run(["git", "-C", src, "log", "-1", "--format=%h %cs"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        if rev.returncode == 0 and rev.stdout.strip() and "TORII_VERSION" not in env:
            versions["torii"] += f" (binary of {src} at {rev.stdout.strip()})"
    cpu_model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    t0 = B.cpu_times()
    time.sleep(1.0)
    t1 = B.cpu_times()
    background = {f"cpu{c}": B.busy_pct(t0, t1, {c}) for c in sorted(t1)}
    log("background load before the run: " + ", ".join(f"{k} {v}%" for k, v in background.items()))

    ctx.run = tempfile.mkdtemp(prefix="torii-scale-")
    os.chmod(ctx.run, 0o755)
    failed_hard = False

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    report = {"meta": {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "kernel": platform.release(), "cpu_model": cpu_model, "nproc": os.cpu_count(),
                       "objects": ctx.objects, "seconds": ctx.seconds, "warmup": ctx.warmup,
                       "miss_cache_mib": ctx.miss_cache, "background_busy_pct": background,
                       "server_cpus": ctx.server_cpus, "load_cpus": ctx.load_cpus, "ports": ctx.ports},
              "versions": versions, "servers": servers, "scenarios": ctx.scenarios, "results": {}}
    started = time.monotonic()
    try:
        os.makedirs(os.path.join(ctx.run, "tmp"))
        make_pads()
        ctx.cert, ctx.key = os.path.join(ctx.run, "cert.pem"), os.path.join(ctx.run, "key.pem")
        ctx.pem = os.path.join(ctx.run, "haproxy.pem")
        subprocess.run([ctx.bins["openssl"], "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ctx.key, "-out", ctx.cert,
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        with open(ctx.pem, "w") as f:
            f.write(open(ctx.cert).read() + open(ctx.key).read())
        ctx.values = {"RUN": ctx.run, "ORIGIN_PORT": ctx.ports["origin"],
                      "USER_DIRECTIVE": "user root root;" if os.geteuid() == 0 else "",
                      "NOFILE": soft, "WORKER_CONNECTIONS": 4096, "MAXCONN": 4096,
                      "VARNISH_THREADS_MAX": 5000, "BODY_1K": ""}
        conf = origin_config(ctx)
        ctx.origin_proc = B.Proc("origin", [ctx.bins["nginx"], "-p", ctx.run + "/", "-c", conf],
                                 ctx.load_cpus, os.path.join(ctx.run, "origin.log"))
        ctx.origin_proc.start()
        B.wait_ready(ctx.origin_proc, ctx.ports["origin"], 15)
        ctx.origin = Origin(os.path.join(ctx.run, "origin-access.log"))
        for p in (key_path("/obj/", 123), key_path("/nocache/", 5)):
            status, h, body, conn = get(ctx, ctx.ports["origin"], p)
            conn.close()
            if status != 200 or body != body_for(p) or len(body) != BODY_SIZE:
                raise ScaleError(f"origin GET {p}: status {status}, {len(body)} bytes")
        log(f"origin on {ctx.origin_url}; run dir {ctx.run}")
        for name in servers:
            report["results"][name] = bench_server(ctx, name)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping")
        failed_hard = True
    except (ScaleError, B.BenchError, OSError, subprocess.SubprocessError) as e:
        log(f"ERROR: {e}")
        failed_hard = True
    finally:
        B.stop_all()
    report["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2, default=list)
            f.write("\n")
    if report["results"]:
        print(markdown(ctx, report))
    if args.keep:
        log(f"kept {ctx.run}")
    else:
        shutil.rmtree(ctx.run, ignore_errors=True)
    log(f"done in {report['meta']['elapsed_s']} s")
    return 1 if failed_hard else 0


if __name__ == "__main__":
    sys.exit(main())
