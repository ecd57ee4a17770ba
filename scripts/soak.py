#!/usr/bin/env python3
"""Bounded soak of a real torii binary on loopback (Python standard library only).

Two in-process origins, torii in front of them (`torii run` with a generated config), and
for --seconds a mix of: cache hits, misses, purges (admin API), config reloads (SIGHUP),
upstream deaths and revivals, slow-header and slow-reading clients. Every response is
parsed strictly and checked (status, body, X-Cache, Via). At the end the load stops and
the script checks that torii's file descriptors are back to their idle count and that its
memory returned to the plateau it reached after the first round.

    scripts/soak.py [--torii target/debug/torii] [--seconds 60]

Exit status 0 when every check passed; 1 with the reasons otherwise. Every process it
starts is stopped by PID; nothing but 127.0.0.1 is contacted.
"""

import argparse
import http.client
import http.server
import json
import os
import random
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

BIG = bytes((i * 7 + 3) % 251 for i in range(256 * 1024))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Origin:
    """A threaded HTTP origin on a fixed port that can die and come back."""

    def __init__(self, name):
        self.name = name
        self.port = free_port()
        self.server = None
        self.hits = 0
        self.lock = threading.Lock()

    def handler(origin):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with origin.lock:
                    origin.hits += 1
                path = self.path.split("?")[0]
                headers = {}
                if path.startswith("/hit/"):
                    body = f"hit {path}\n".encode()
                    headers["Cache-Control"] = "public, max-age=30"
                    headers["Surrogate-Key"] = "soak " + path.split("/")[2]
                elif path.startswith("/miss/"):
                    body = f"miss {path}\n".encode()
                    headers["Cache-Control"] = "no-store"
                elif path == "/big":
                    body = BIG
                    headers["Cache-Control"] = "public, max-age=30"
                elif path == "/slow":
                    time.sleep(0.2)
                    body = b"slow\n"
                    headers["Cache-Control"] = "no-store"
                else:
                    body = b"ok\n"
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(n)
                body = f"got {len(data)}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def start(self):
        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", self.port), self.handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def expected_body(path):
    if path.startswith("/hit/"):
        return f"hit {path}\n".encode()
    if path.startswith("/miss/"):
        return f"miss {path}\n".encode()
    if path == "/big":
        return BIG
    if path == "/slow":
        return b"slow\n"
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.events = []
        self.start = time.time()

    def event(self, what):
        with self.lock:
            self.events.append(f"t={time.time() - self.start:.2f}s {what}")

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, why):
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(f"t={time.time() - self.start:.2f}s {why}")


def client_loop(port, stop, stats, seed):
    rng = random.Random(seed)
    conn = None
    retry = None
    while not stop.is_set():
        reused = conn is not None and retry is None
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        r = rng.random()
        if retry is not None:
            path, retry = retry, None
        elif r < 0.6:
            path = f"/hit/{int(rng.paretovariate(1.2)) % 200}"
        elif r < 0.85:
            path = f"/miss/{rng.randrange(1000)}"
        elif r < 0.9:
            path = "/big"
        elif r < 0.95:
            path = "/slow"
        else:
            path = "/upload"
        try:
            if path == "/upload":
                data = os.urandom(rng.randrange(1, 64 * 1024))
                conn.request("POST", path, body=data)
                want = f"got {len(data)}\n".encode()
            else:
                conn.request("GET", path)
                want = expected_body(path)
            resp = conn.getresponse()
            body = resp.read()
            stats.count(f"status {resp.status}")
            if resp.getheader("Via") != "1.1 torii":
                stats.fail(f"{path}: no Via: 1.1 torii")
            if resp.status == 200:
                if body != want:
                    stats.fail(f"{path}: wrong body ({len(body)} bytes)")
                cache = resp.getheader("X-Cache")
                if path != "/upload" and cache not in ("HIT", "MISS", "STALE", "REVALIDATED", "BYPASS"):
                    stats.fail(f"{path}: X-Cache {cache!r}")
                stats.count(f"x-cache {cache}")
            elif resp.status not in (502, 503, 504):
                stats.fail(f"{path}: status {resp.status}")
            elif path.startswith("/hit/") or path == "/big":
                # One origin at a time dies; a GET is retried on the other.
                stats.count(f"GET error {resp.status}")
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            # A keep-alive connection closed by the server as the request went out (its
            # idle timeout, a reload): clients retry such a request once on a new
            # connection (RFC 9112 §9.3.1). A request on a fresh connection, or a second
            # failure, is a real failure.
            conn.close()
            conn = None
            if reused and path != "/upload":
                stats.count("keep-alive close race (retried)")
                retry = path
                continue
            stats.fail(f"{path}: {type(e).__name__}: {e}")
        except (http.client.HTTPException, OSError) as e:
            stats.fail(f"{path}: {type(e).__name__}: {e}")
            conn.close()
            conn = None
    if conn:
        conn.close()


def slow_clients(port, stop, stats):
    """Slow-header clients (cut off by header_timeout) and clients that read slowly."""
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /hit/1 HTTP/1.1\r\nHost: soak\r\n")
            stop.wait(0.5)
            s.close()
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /big HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            got = 0
            while not stop.is_set():
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += len(chunk)
                time.sleep(0.002)
            s.close()
            stats.count("slow reader done")
        except OSError as e:
            stats.count(f"slow client {type(e).__name__}")


def admin(admin_port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    c.request(method, path, body=json.dumps(body) if body else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def chaos(torii, origins, admin_port, cfg_path, write_config, stop, stats):
    rng = random.Random(7)
    step = 0
    while not stop.wait(0.5):
        step += 1
        try:
            kind = rng.choice(["purge-url", "purge-tag", "purge-prefix"])
            if kind == "purge-url":
                body = {"url": f"http://soak/hit/{rng.randrange(20)}"}
            elif kind == "purge-tag":
                body = {"tag": str(rng.randrange(20))}
            else:
                body = {"prefix": "/hit/1"}
            status, _ = admin(admin_port, "POST", "/purge", body)
            stats.count(f"purge {status}")
            if status != 200:
                stats.fail(f"purge {body}: {status}")
        except OSError as e:
            stats.fail(f"purge: {e}")
        if step % 8 == 0:
            write_config(variant=step // 8)
            torii.send_signal(signal.SIGHUP)
            stats.count("reload")
            stats.event("reload")
        if step % 12 == 0:
            victim = origins[(step // 12) % len(origins)]
            victim.kill()
            stats.count("origin killed")
            stats.event(f"origin {victim.name} killed")
            stop.wait(2)
            victim.start()
            stats.event(f"origin {victim.name} back")


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_round(port, admin_port, torii, origins, cfg, write_config, seconds, stats):
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(port, stop, stats, i)) for i in range(8)]
    threads.append(threading.Thread(target=slow_clients, args=(port, stop, stats)))
    threads.append(threading.Thread(
        target=chaos, args=(torii, origins, admin_port, cfg, write_config, stop, stats)))
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    for o in origins:
        if o.server is None:
            o.start()


def wait_quiet(pid, idle_fds, seconds):
    """Waits until torii's fd count is back to `idle_fds` (idle connections time out)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc_fds(pid) <= idle_fds:
            return True
        time.sleep(0.25)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torii", default="target/debug/torii")
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()

    origins = [Origin("a"), Origin("b")]
    for o in origins:
        o.start()
    port, admin_port = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="torii-soak-")
    cfg = os.path.join(tmp, "torii.toml")

    def write_config(variant=0):
        # Reloads alternate a route's fixed answer, so each reload really changes the config.
        with open(cfg + ".new", "w") as f:
            f.write(f"""
[server]
listen = ["127.0.0.1:{port}"]
admin = "127.0.0.1:{admin_port}"
workers = 2
drain_timeout = "5s"
[limits]
header_timeout = "2s"
idle_timeout = "2s"
body_timeout = "2s"
[log]
access = "off"
[cache]
memory = "32MiB"
[upstreams.app]
servers = ["127.0.0.1:{origins[0].port}", "127.0.0.1:{origins[1].port}"]
connect_timeout = "1s"
response_timeout = "5s"
pool_idle_timeout = "2s"
retries = 2
retry_budget = 0.5
breaker = {{ failures = 3, ejection = "1s", max_ejection = "4s" }}
[[routes]]
path = "/version"
respond = {{ status = 200, body = "v{variant}\\n" }}
[[routes]]
upstream = "app"
[routes.cache]
grace = "10s"
stale_if_error = "1m"
""")
        os.replace(cfg + ".new", cfg)

    write_config()
    torii = subprocess.Popen([args.torii, "run", "--config", cfg],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "torii.log"), "w"))
    problems = []
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or torii.poll() is not None:
                    raise SystemExit("torii did not start; see " + os.path.join(tmp, "torii.log"))
                time.sleep(0.1)
        time.sleep(0.5)
        idle_fds = proc_fds(torii.pid)
        stats = Stats()
        half = args.seconds / 2
        run_round(port, admin_port, torii, origins, cfg, write_config, half, stats)
        if not wait_quiet(torii.pid, idle_fds, 15):
            problems.append(f"after round 1: {proc_fds(torii.pid)} fds open, {idle_fds} when idle")
        plateau = proc_rss_kib(torii.pid)
        run_round(port, admin_port, torii, origins, cfg, write_config, half, stats)
        quiet = wait_quiet(torii.pid, idle_fds, 15)
        end_fds = proc_fds(torii.pid)
        end_rss = proc_rss_kib(torii.pid)
        if not quiet:
            problems.append(f"fd leak: {end_fds} fds open at the end, {idle_fds} when idle")
        # The second round ran the same load; memory must not keep growing (the cache is
        # bounded at 32 MiB, so a plateau plus a little slack).
        if end_rss > plateau * 1.25 + 16 * 1024:
            problems.append(f"memory grew: {plateau} KiB after round 1, {end_rss} KiB after round 2")
        if torii.poll() is not None:
            problems.append(f"torii exited with {torii.returncode}")
        problems.extend(stats.failures)
        report = {
            "seconds": args.seconds,
            "counts": dict(sorted(stats.counts.items())),
            "fds": {"idle": idle_fds, "end": end_fds},
            "rss_kib": {"plateau": plateau, "end": end_rss},
            "problems": problems,
        }
        if problems:
            report["events"] = stats.events
        print(json.dumps(report, indent=2))
    finally:
        if torii.poll() is None:
            torii.send_signal(signal.SIGTERM)
            try:
                torii.wait(10)
            except subprocess.TimeoutExpired:
                torii.kill()
        for o in origins:
            o.kill()
    if problems:
        print("soak: FAILED", file=sys.stderr)
        sys.exit(1)
    print("soak: ok", file=sys.stderr)


if __name__ == "__main__":
    main()
