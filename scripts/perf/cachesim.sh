#!/usr/bin/env bash
# Cache misses per request of torii's hits over many stored objects, and of misses that
# store and evict, under callgrind's cache simulation: the "cache misses per lookup" of
# issue 21, on a machine whose VM exposes no hardware counters to perf. Deterministic for
# a given binary and load, unlike wall clock. Loopback only, bounded.
#
#   scripts/perf/cachesim.sh [BIN] [N] [MODE] [SECONDS]
#     BIN      torii binary (default target/release/torii; build with --release first)
#     N        objects stored first, /obj/00000000 ... (default 200000: ~300 MB, ten times
#              the simulated last-level cache)
#     MODE     keys of the measured requests (scale.lua): hits on uniform (default) keys
#              over the N, zipf (0.99) keys, or one key (the first: the hit-1k reference);
#              or a new key each, stored (store: miss-store, torii's memory tier at
#              $CACHE_MEMORY, default 64MiB, so every store evicts) or answered no-store
#              (pass: the same tier and store before, then /keys/nocache/KEY)
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
memory=4GiB
case $MODE in
    uniform | zipf | one) ;;
    store | pass) memory=${CACHE_MEMORY:-64MiB} ;;
    *) echo "MODE: uniform, zipf, one, store or pass" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
. scripts/perf/origin.sh
start_origin 19380
rm -f "$OUT/callgrind.out"
valgrind --tool=callgrind --cache-sim=yes --instr-atstart=no \
    --I1=32768,8,64 --D1=32768,8,64 --LL=33554432,16,64 \
    --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" proxy --listen 127.0.0.1:19384 --to http://127.0.0.1:19380 --workers 1 \
    --cache-memory "$memory" >"$OUT/torii.log" 2>&1 &
vg=$!
pids+=($vg)
wait_up /obj/00000000 0.6 # under valgrind: up to a minute
# Store keys 0 .. N-1 (and a few past N): rounds of new keys until N were asked for.
stored=0
for _ in $(seq 1000); do
    [ "$stored" -ge "$N" ] && break
    got=$(wrk -t1 -c8 -d5s -s scripts/perf/scale.lua "http://127.0.0.1:19384" -- \
        seq 1 "$stored" /obj/ | awk '/requests in/{print $1}')
    stored=$((stored + got))
done
echo "stored: $stored objects (keys 0 .. $((stored - 1)))"
lua=(-s scripts/perf/scale.lua "http://127.0.0.1:19384" --)
case $MODE in
    # new keys from 10^8 on: the warm-up's, then the measured run's from 10^8 + 10^7
    store) warm=("${lua[@]}" seq 1 100000000 /obj/) load=("${lua[@]}" seq 1 110000000 /obj/) ;;
    pass)
        warm=("${lua[@]}" seq 1 100000000 /keys/nocache/)
        load=("${lua[@]}" seq 1 110000000 /keys/nocache/)
        ;;
    *) warm=("${lua[@]}" "$MODE" "$N" 0 /obj/) load=("${warm[@]}" 5) ;;
esac
callgrind_control --instr=on "$vg" >/dev/null
wrk -t1 -c8 -d2s "${warm[@]}" >/dev/null
callgrind_control --zero "$vg" >/dev/null # count the measured run only
reqs=$(wrk -t1 -c8 -d"${SECS}s" "${load[@]}" | awk '/requests in/{print $1}')
kill -INT "$vg"
wait "$vg" || true
echo "requests: $reqs ($MODE over $N keys)"
callgrind_annotate --sort=DLmr,DLmw "$OUT/callgrind.out" 2>/dev/null | python3 -c '
import re, sys
reqs = int(sys.argv[1])
events, rows, listing = None, [], False


def parse(line, count):
    """`count` event columns (each "N" or "N (P%)" or ".") then a name; None if not so."""
    values, rest = [], line.strip()
    for _ in range(count):
        m = re.match(r"(\.|[\d,]+)(\s+\(\s*[\d.]+%\))?\s+", rest)
        if not m:
            return None
        values.append(0 if m.group(1) == "." else int(m.group(1).replace(",", "")))
        rest = rest[m.end():]
    return values, rest


for line in sys.stdin:
    if line.startswith("Events shown:"):
        events = line.split(":", 1)[1].split()
    elif "file:function" in line:
        listing = True
    elif line.startswith("-- Auto-annotated source"):
        listing = False
    elif events and (listing or "PROGRAM TOTALS" in line):
        got = parse(line, len(events))
        if got and not got[1].startswith("=>"):
            rows.append((dict(zip(events, got[0])), got[1]))
total = next(r for r, name in rows if "PROGRAM TOTALS" in name)
show = [("Ir", "instructions"), ("Dr", "data reads"), ("Dw", "data writes"),
        ("D1mr", "L1 read misses"), ("D1mw", "L1 write misses"),
        ("DLmr", "LL read misses"), ("DLmw", "LL write misses")]
for ev, label in show:
    print(f"{label:>16}: {total[ev] / reqs:9.1f} per request")
print("LL data misses per request, by function (top 12; a function inlined elsewhere is")
print("listed under its own source file, then the function it was inlined into):")
funcs = [(r["DLmr"] + r["DLmw"], name) for r, name in rows if "PROGRAM TOTALS" not in name]
for misses, name in sorted(funcs, reverse=True)[:12]:
    if misses:
        name = re.sub(r"^.*/(?:library|src|registry/src/[^/]+)/", "", name)
        print(f"{misses / reqs:8.2f}  {name[:150]}")
' "$reqs"
