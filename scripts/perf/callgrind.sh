#!/usr/bin/env bash
# Instructions and mallocs per request of torii's hit or pass path, under callgrind: stable
# on a noisy shared machine, where wall-clock figures are not. Loopback only, bounded.
#
#   scripts/perf/callgrind.sh [BIN] [PATH] [SECONDS]
#     BIN      torii binary (default target/release/torii; build with --release first)
#     PATH     /1k (a cache hit) or /nocache/1k (every request to the origin), default /1k;
#              a PATH ending in / is a prefix and every request asks for a new key under it
#              (scale.lua's seq): /obj/ is miss-store (each response stored; torii's memory
#              tier is $CACHE_MEMORY, default 1MiB, so once full each store evicts), and
#              /keys/nocache/ the same requests answered no-store (a pass with new keys)
#     SECONDS  wrk load under callgrind (default 4)
#
# Needs valgrind, wrk and nginx (../shared/bench/setup.sh installs the last two). Starts its
# own nginx origin on 127.0.0.1:19380 and torii on 127.0.0.1:19384, stops both by PID.
# Prints: requests, instructions per request, mallocs per request and their top callers.
# The output file stays in $OUT (default /tmp/torii-callgrind) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/torii}
URLPATH=${2:-/1k}
SECS=${3:-4}
OUT=${OUT:-/tmp/torii-callgrind}
. scripts/perf/origin.sh
start_origin 19380
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" proxy --listen 127.0.0.1:19384 --to http://127.0.0.1:19380 --workers 1 \
    --cache-memory "${CACHE_MEMORY:-1MiB}" \
    >"$OUT/torii.log" 2>&1 &
vg=$!
pids+=($vg)
if [[ $URLPATH == */ ]]; then
    # warm-up: SECONDS of new keys from 90,000,001 on (more than fill the 1 MiB cache);
    # the measured run's keys start at 0
    wait_up "${URLPATH}90000000" 0.2
    wrk -t1 -c8 -d"${SECS}s" -s scripts/perf/scale.lua "http://127.0.0.1:19384" -- \
        seq 1 90000001 "$URLPATH" >/dev/null
    callgrind_control --zero "$vg" >/dev/null  # count the measured run only
    load=(-s scripts/perf/scale.lua "http://127.0.0.1:19384" -- seq 1 0 "$URLPATH")
else
    wait_up "$URLPATH" 0.2
    curl -s -o /dev/null "http://127.0.0.1:19384$URLPATH"
    load=("http://127.0.0.1:19384$URLPATH")
fi
reqs=$(wrk -t1 -c8 -d"${SECS}s" "${load[@]}" | awk '/requests in/{print $1}')
kill -INT "$vg"
wait "$vg" || true
total=$(callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "requests: $reqs"
echo "instructions per request: $((total / reqs)) (startup included, ~1M in all)"
python3 scripts/perf/calls.py "$OUT/callgrind.out" malloc "$reqs"
