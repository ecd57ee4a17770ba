#!/usr/bin/env bash
# System calls per request of a proxy under wrk, by kind, and the reads that found nothing
# (EAGAIN): the kernel half of a request's cost, which `cpu_split.sh` measures in time,
# counted. Counts are stable where times are not; tracepoints barely slow the server.
# Loopback only, bounded, stops what it starts by PID.
#
#   scripts/perf/syscalls.sh [BIN|haproxy] [PATH] [SECONDS]
#     BIN      torii binary (default target/release/torii), or `haproxy` for the bench's
#              HAProxy config (../shared/bench/templates/haproxy.cfg) as a reference
#     PATH     /1k (a cache hit) or /nocache/1k (every request to the origin), default /nocache/1k;
#              a PATH ending in / asks for a new key under it with each request (/obj/:
#              miss-store, after 5 s of new keys to fill the cache; see callgrind.sh)
#     SECONDS  timed wrk run (default 3)
#
# Pins like cpu_split.sh. Needs perf (Debian linux-perf), wrk and nginx. Ports 19380
# (origin) and 19384 (server); files in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/torii}
URLPATH=${2:-/nocache/1k}
SECS=${3:-3}
OUT=${OUT:-/tmp/torii-syscalls}
. scripts/perf/origin.sh
if [[ $URLPATH == */ ]]; then
    export CACHE_MEMORY=${CACHE_MEMORY:-64MiB}  # full after the 5 s of new keys
    start_pinned "$BIN" "${URLPATH}90000000"
    taskset -c 0 wrk -t1 -c64 -d5s -s scripts/perf/scale.lua "http://127.0.0.1:19384" -- \
        seq 1 90000001 "$URLPATH" >/dev/null
    load=(-s scripts/perf/scale.lua "http://127.0.0.1:19384" -- seq 1 0 "$URLPATH")
else
    start_pinned "$BIN" "$URLPATH"
    load=("http://127.0.0.1:19384$URLPATH")
fi
ev=raw_syscalls:sys_enter
for c in recvfrom sendto read write readv writev epoll_wait epoll_ctl; do
    ev+=",syscalls:sys_enter_$c"
done
perf stat -x, -o "$OUT/perf.txt" -p "$server" \
    -e "$ev" -e syscalls:sys_exit_recvfrom --filter 'ret == -11' \
    -e syscalls:sys_exit_read --filter 'ret == -11' &
tracer=$!
pids+=($tracer)
sleep 0.5
reqs=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" "${load[@]}" |
    awk '/requests in/{print $1}')
kill -INT "$tracer"
wait "$tracer" || true
echo "requests: $reqs (counts start 0.5 s before wrk)"
awk -F, -v n="$reqs" '$3 ~ /sys_/ {
    name = $3; sub(/.*:sys_enter_?/, "", name); sub(/.*:sys_exit_/, "EAGAIN ", name)
    if (name == "") name = "all"
    printf "%-18s %6.2f per request\n", name, $1 / n }' "$OUT/perf.txt"
