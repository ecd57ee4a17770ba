"""RSS per idle keep-alive HTTP/1 connection of a torii binary (patch 04's measurement).

    python3 vendor/hyper-patches/measure/idle.py BIN PORT N

Needs origin.py running on 127.0.0.1:19480 and ../shared/bench/lib/idle_conns.py. Starts
BIN on 127.0.0.1:PORT (CPU 1), opens N idle connections in two steps, reads torii's RSS
right away and 1 s after each step (hibernation is at 250 ms), stops BIN.
"""
import subprocess, sys, time, json, os, resource
binp, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
srv = subprocess.Popen(["taskset", "-c", "1", binp, "proxy", "--listen", f"127.0.0.1:{port}", "--to", "http://127.0.0.1:19480", "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    time.sleep(1)
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/1k"], check=True)
    time.sleep(0.5)
    r0 = rss(srv.pid)
    cl = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../../shared/bench/lib/idle_conns.py"), "--port", str(port), "--count", str(n), "--steps", "2", "--hold", "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    steps = []
    for line in cl.stdout:
        ev = json.loads(line)
        if ev["event"] == "ready":
            early = rss(srv.pid); time.sleep(1.0); late = rss(srv.pid)
            steps.append((ev["open"], early, late))
            cl.stdin.write("\n"); cl.stdin.flush()
        elif ev["event"] == "closed":
            print("closed", ev); break
    cl.wait()
    (h, he, hl), (f, fe, fl) = steps[0], steps[-1]
    print(f"{binp}: before {r0} KiB; {f} conns: B/conn right away {(fe-r0)*1024/f:.0f}, after 1 s {(fl-r0)*1024/f:.0f}; marginal after 1 s {(fl-hl)*1024/(f-h):.0f}")
finally:
    srv.terminate(); srv.wait()
