# Latency of the shared tier's paths: two `torii proxy --redis` nodes, one redis-server,
# a small threaded origin (1 KiB bodies, max-age=600), sequential keep-alive requests.
# Measures cold misses with Redis up, first requests at node B served from Redis, memory
# hits, and cold misses / hits while Redis is killed (SIGKILL) and hung (SIGSTOP).
# Every process it starts is stopped by its PID at the end.
#
#   cargo build && N=500 python3 benches/shared_tier_latency.py target/debug/torii
#
# Last run (debug build, 2-vCPU VM shared with other builds, Redis on loopback):
#   A: cold miss, Redis up -> origin                     p50 0.82 ms  p99 1.84 ms  max   3.7 ms
#   B: first request per URL, from the shared tier       p50 0.32 ms  p99 1.27 ms  max   3.3 ms
#   B: memory hits                                       p50 0.17 ms  p99 0.24 ms  max   0.6 ms
#   B: cold miss, Redis killed (breaker opens after 3)   p50 0.47 ms  p99 1.03 ms  max 101.8 ms
#   B: memory hits, Redis killed                         p50 0.16 ms  p99 0.21 ms  max   0.3 ms
#   A: cold miss, Redis restarted                        p50 0.82 ms  p99 2.99 ms  max   3.2 ms
#   A: cold miss, Redis hung (SIGSTOP)                   p50 0.47 ms  p99 1.34 ms  max 103.2 ms
# (all 500 of each answered 200; the max is the one request that met a 100 ms Redis
# timeout; after a failed call the lease is skipped, and after 3 the breaker opens.)
"""Latency of the shared tier paths with two torii nodes and one redis-server.
Usage: python3 measure.py TORII_BIN"""
import http.client, json, os, signal, socket, subprocess, sys, time

BIN = sys.argv[1]
N = int(os.environ.get("N", "300"))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")

procs = []
def spawn(args, **kw):
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    procs.append(p); return p

rport = free_port()
def start_redis():
    p = spawn(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    wait_port(rport); return p
redis = start_redis()

# Origin: a tiny threaded HTTP server answering Cache-Control: max-age=600, 1 KiB bodies.
origin_port = free_port()
origin_code = f'''
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        body = (self.path * 64).encode()[:1024]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "max-age=600")
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(("127.0.0.1", {origin_port}), H).serve_forever()
'''
spawn([sys.executable, "-c", origin_code]); wait_port(origin_port)

nodes = []
for _ in range(2):
    port, admin = free_port(), free_port()
    spawn([BIN, "proxy", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
           "--to", f"http://127.0.0.1:{origin_port}", "--workers", "1",
           "--redis", f"redis://127.0.0.1:{rport}"])
    wait_port(port); wait_port(admin); nodes.append((port, admin))
(a, a_admin), (b, b_admin) = nodes
time.sleep(0.3)

conns = {}
def get(port, path):
    c = conns.get(port)
    if c is None:
        c = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t = time.perf_counter()
    c.request("GET", path, headers={"Host": "shop.test"})
    r = c.getresponse(); r.read()
    dt = time.perf_counter() - t
    assert r.status == 200, r.status
    return dt * 1e3, r.getheader("x-cache")

def report(name, samples, want=None):
    lat = sorted(s[0] for s in samples)
    xs = {}
    for s in samples: xs[s[1]] = xs.get(s[1], 0) + 1
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"{name:58s} n={len(lat):4d} p50={p(.5):6.2f} ms p99={p(.99):6.2f} ms max={lat[-1]:7.2f} ms  x-cache={xs}")

def stat(admin):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    c.request("GET", "/stats.json"); return json.loads(c.getresponse().read())["cache"]["shared"]

run = str(time.time_ns())
# 1. node A: cold misses to the origin (Redis up: lookup + lease + double-check + origin)
report("A: cold miss, Redis up -> origin", [get(a, f"/u/{run}/{i}") for i in range(N)])
time.sleep(0.5)
# 2. node B: the same URLs, served from the shared tier (one Redis GET each)
report("B: first request per URL, from the shared tier", [get(b, f"/u/{run}/{i}") for i in range(N)])
# 3. node B: memory hits
report("B: memory hits", [get(b, f"/u/{run}/{i}") for i in range(N)])
# 4. Redis killed: cold misses and hits on B
redis.send_signal(signal.SIGKILL); redis.wait()
report("B: cold miss, Redis killed (breaker opens after 3)", [get(b, f"/k/{run}/{i}") for i in range(N)])
report("B: memory hits, Redis killed", [get(b, f"/u/{run}/{i}") for i in range(N)])
print("   B breaker:", stat(b_admin)["breaker"], " errors:", stat(b_admin)["errors"], " skipped:", stat(b_admin)["skipped"])
# 5. Redis back, then hung (SIGSTOP): cold misses on A
redis = start_redis()
time.sleep(1.5)
report("A: cold miss, Redis restarted", [get(a, f"/r/{run}/{i}") for i in range(N)])
redis.send_signal(signal.SIGSTOP)
report("A: cold miss, Redis hung (SIGSTOP)", [get(a, f"/s/{run}/{i}") for i in range(N)])
print("   A breaker:", stat(a_admin)["breaker"], " errors:", stat(a_admin)["errors"], " skipped:", stat(a_admin)["skipped"])
redis.send_signal(signal.SIGCONT)

for p in procs:
    p.kill(); p.wait()
