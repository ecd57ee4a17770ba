#!/usr/bin/env bash
# User and kernel CPU time per request of a proxy under wrk, split: how much of a request's
# cost is the proxy's own code and how much the kernel's (loopback TCP, wake-ups), which no
# user-space change can remove. Loopback only, bounded, stops what it starts by PID.
#
#   scripts/perf/cpu_split.sh [BIN|haproxy] [PATH] [SECONDS]
#     BIN      torii binary (default target/release/torii), or `haproxy` for the bench's
#              HAProxy config (../shared/bench/templates/haproxy.cfg) as a reference
#     PATH     /1k (a cache hit) or /nocache/1k (every request to the origin), default /nocache/1k
#     SECONDS  timed wrk run (default 5; a 1 s warm-up comes first)
#
# Pins like ../shared/bench: the server on CPU 1, the nginx origin and wrk (-t1 -c64) on
# CPU 0. Prints req/s and user, system and total µs per request of the server process
# (from /proc/PID/stat). Ports 19380 (origin) and 19384 (server); files in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/torii}
URLPATH=${2:-/nocache/1k}
SECS=${3:-5}
OUT=${OUT:-/tmp/torii-cpu-split}
. scripts/perf/origin.sh
start_pinned "$BIN" "$URLPATH"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$server/stat")
out=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" "http://127.0.0.1:19384$URLPATH")
read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$server/stat")
reqs=$(echo "$out" | awk '/requests in/{print $1}')
tick=$(getconf CLK_TCK)
echo "$out" | grep "Requests/sec"
python3 - "$reqs" "$u1" "$s1" "$u2" "$s2" "$tick" <<'PY'
import sys
n, u1, s1, u2, s2, tick = (int(x) for x in sys.argv[1:])
user = (u2 - u1) / tick * 1e6 / n
system = (s2 - s1) / tick * 1e6 / n
print(f"user {user:.1f} µs/req, system {system:.1f} µs/req, total {user + system:.1f}")
PY
