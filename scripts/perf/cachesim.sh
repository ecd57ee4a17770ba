#!/usr/bin/env bash
# Cache misses per request of torii's hits over many stored objects, under callgrind's cache
# simulation: the "cache misses per lookup" of issue 21, on a machine whose VM exposes no
# hardware counters to perf. Deterministic for a given binary and load, unlike wall clock.
# Loopback only, bounded.
#
#   scripts/perf/cachesim.sh [BIN] [N] [MODE] [SECONDS]
#     BIN      torii binary (default target/release/torii; build with --release first)
#     N        objects stored first, /obj/00000000 ... (default 200000: ~300 MB, ten times
#              the simulated last-level cache)
#     MODE     keys of the measured hits (scale.lua): uniform (default) over the N keys,
#              zipf (0.99), or one (always the first key: the hit-1k reference)
#     SECONDS  measured wrk load (default 4), after 2 s that warm the simulated caches
#
# The cache simulated is fixed, not the host's, so runs compare across machines: L1 data
# 32 KiB 8-way, last level (LL) 32 MiB 16-way, 64-byte lines. It simulates user space only:
# the kernel's copy of a body into the socket, and TLB misses, are not counted.
# Storing N objects runs with callgrind's instrumentation off (a few minutes at the
# default N); it is switched on for the warm-up and the measured run.
#
# Needs valgrind, wrk and nginx (../shared/bench/setup.sh installs the last two). Starts its
# own nginx origin on 127.0.0.1:19380 and torii on 127.0.0.1:19384, stops both by PID.
# Prints per request: instructions, data reads and writes, L1 and LL data misses, and the
# functions with the most LL data misses (self cost: the function whose load missed).
# The output file stays in $OUT (default /tmp/torii-cachesim) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/torii}
N=${2:-200000}
MODE=${3:-uniform}
SECS=${4:-4}
OUT=${OUT:-/tmp/torii-cachesim}
case $MODE in uniform | zipf | one) ;; *) echo "MODE: uniform, zipf or one" >&2; exit 2 ;; esac
mkdir -p "$OUT"
. scripts/perf/origin.sh
write_origin 19380
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
nginx -c "$OUT/origin.conf" -p "$OUT" >/dev/null 2>&1 &
pids+=($!)
rm -f "$OUT/callgrind.out"
valgrind --tool=callgrind --cache-sim=yes --instr-atstart=no \
    --I1=32768,8,64 --D1=32768,8,64 --LL=33554432,16,64 \
    --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" proxy --listen 127.0.0.1:19384 --to http://127.0.0.1:19380 --workers 1 \
    --cache-memory 4GiB >"$OUT/torii.log" 2>&1 &
vg=$!
pids+=($vg)
for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:19384/obj/00000000" && break
    sleep 0.2
done
# Store keys 0 .. N-1 (and a few past N): rounds of new keys until N were asked for.
stored=0
for _ in $(seq 1000); do
    [ "$stored" -ge "$N" ] && break
    got=$(wrk -t1 -c8 -d5s -s scripts/perf/scale.lua "http://127.0.0.1:19384" -- \
        seq 1 "$stored" /obj/ | awk '/requests in/{print $1}')
    stored=$((stored + got))
done
echo "stored: $stored objects (keys 0 .. $((stored - 1)))"
load=(-s scripts/perf/scale.lua "http://127.0.0.1:19384" -- "$MODE" "$N" 0 /obj/)
callgrind_control --instr=on "$vg" >/dev/null
wrk -t1 -c8 -d2s "${load[@]}" >/dev/null
callgrind_control --zero "$vg" >/dev/null # count the measured run only
reqs=$(wrk -t1 -c8 -d"${SECS}s" "${load[@]}" 5 | awk '/requests in/{print $1}')
kill -INT "$vg"
wait "$vg" || true
echo "requests: $reqs ($MODE over $N keys)"
callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | python3 -c '
import re, sys
reqs = int(sys.argv[1])
events, rows = None, []
for line in sys.stdin:
    if line.startswith("Events shown:"):
        events = line.split(":", 1)[1].split()
    m = re.match(r"^\s*([\d,]+(?:\s+\([^)]*\))?(?:\s+[\d,.]+(?:\s+\([^)]*\))?)*)\s+(\S.*)$", line)
    if events and m:
        nums = [int(x.replace(",", "")) for x in re.findall(r"(?<![(\d.])[\d,]+(?![\d.%)])", m.group(1))]
        if len(nums) == len(events):
            rows.append((dict(zip(events, nums)), m.group(2)))
total = next(r for r, name in rows if "PROGRAM TOTALS" in name)
show = [("Ir", "instructions"), ("Dr", "data reads"), ("Dw", "data writes"),
        ("D1mr", "L1 read misses"), ("D1mw", "L1 write misses"),
        ("DLmr", "LL read misses"), ("DLmw", "LL write misses")]
for ev, label in show:
    print(f"{label:>16}: {total[ev] / reqs:9.1f} per request")
print("LL data misses per request, by function (top 12):")
funcs = [(r["DLmr"] + r["DLmw"], name) for r, name in rows
         if "PROGRAM TOTALS" not in name and not name.startswith(("=>", "events"))]
for misses, name in sorted(funcs, reverse=True)[:12]:
    if misses:
        print(f"{misses / reqs:8.2f}  {name[:140]}")
' "$reqs"
