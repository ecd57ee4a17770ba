#!/usr/bin/env bash
# Two torii builds (or one build under two environments) side by side on the same stored
# objects, in alternating runs: a before/after comparison that the machine's drift does
# not decide. On this shared VM one scenario's server CPU per request moves by ±10 % from
# one run to the next (hit-1k: 7.5 to 10.1 µs within an hour), so a single run of each
# build can show a change that is not there; here both servers are up and stored at once,
# and every round runs A then B back to back. Run it A/A (one binary twice) to see the
# spread left: on this VM, on a noisy afternoon, the same binary's B/A came out 0.96 to 1.22
# over three 3 s rounds, 0.995 to 1.03 over five 5 s rounds. Loopback only, bounded, stops
# what it starts by PID.
#
#   scripts/perf/ab.sh [BIN_A] [BIN_B]
#     BIN_A, BIN_B  torii binaries (default target/release/torii for both)
#   environment:
#     ENV_A, ENV_B  extra environment for A and B, `NAME=value` (e.g. ENV_B=GLIBC_TUNABLES=...)
#     N             objects stored in each before the runs (default 1000000), /obj/00000000 ...
#     ROUNDS        rounds per mode (default 4); SECS seconds per run (default 5)
#     MODES         scale.lua key modes (default "one uniform zipf": hit-1k's one key,
#                   uniform and Zipf 0.99 keys over the N)
#     MEMORY        each server's --cache-memory (default 4GiB: no eviction at the default N)
#
# Pins like scale.sh: both servers on CPU 1 (only one is loaded at a time), the nginx origin
# and wrk (-t1 -c64) on CPU 0. Prints per mode each round's server CPU µs per request (from
# /proc/PID/stat) for A and B, their means and B/A, then each server's PSS and huge pages.
# Ports 19380 (origin), 19384/19385 (A/B), 19484/19485 (their admin listeners); files in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN_A=${1:-target/release/torii}
BIN_B=${2:-$BIN_A}
N=${N:-1000000}
ROUNDS=${ROUNDS:-4}
SECS=${SECS:-5}
MODES=${MODES:-one uniform zipf}
MEMORY=${MEMORY:-4GiB}
OUT=${OUT:-/tmp/torii-ab}
mkdir -p "$OUT"
. scripts/perf/origin.sh
write_origin 19380
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
taskset -c 0 nginx -c "$OUT/origin.conf" -p "$OUT" >/dev/null 2>&1 &
pids+=($!)

# start BIN PORT ENV: a pinned torii; its PID in $started.
start() {
    local envs=()
    [ -n "$3" ] && envs=("$3")
    env "${envs[@]}" taskset -c 1 "$1" proxy --listen "127.0.0.1:$2" \
        --to http://127.0.0.1:19380 --workers 1 --cache-memory "$MEMORY" \
        --admin "127.0.0.1:$(($2 + 100))" >"$OUT/server-$2.log" 2>&1 &
    started=$!
    pids+=($started)
}
start "$BIN_A" 19384 "${ENV_A:-}"
A=$started
start "$BIN_B" 19385 "${ENV_B:-}"
B=$started

stores() {
    curl -sf "http://127.0.0.1:$(($1 + 100))/metrics" |
        awk '/^torii_cache_stores_total/ {n = int($2)} END {print n + 0}'
}
for port in 19384 19385; do
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/obj/00000000" && break; sleep 0.1; done
    # keys 0 .. N-1 in order until the server has stored N (at most 10 minutes)
    taskset -c 0 wrk -t1 -c64 -d600s -s scripts/perf/scale.lua "http://127.0.0.1:$port" -- \
        wrap "$N" 0 /obj/ >/dev/null &
    w=$!
    pids+=($w)
    until [ "$(stores $port)" -ge "$N" ]; do
        kill -0 $w 2>/dev/null || { echo "ab.sh: $port stored $(stores $port) of $N in 10 minutes" >&2; exit 1; }
        sleep 1
    done
    kill $w
    wait $w 2>/dev/null || true
done

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run PID PORT MODE: server CPU µs per request of one timed wrk run.
run() {
    local t0 t1 reqs
    t0=$(cpu "$1")
    reqs=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" -s scripts/perf/scale.lua "http://127.0.0.1:$2" -- \
        "$3" "$N" 0 /obj/ | awk '/requests in/ {print $1}')
    t1=$(cpu "$1")
    awk -v r="$reqs" -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", d * 1e6 / hz / r}'
}
echo "server CPU µs per request, A = $BIN_A ${ENV_A:-}, B = $BIN_B ${ENV_B:-}; N = $N, ${SECS} s runs"
for mode in $MODES; do
    as=() bs=()
    for _ in $(seq "$ROUNDS"); do
        as+=("$(run $A 19384 "$mode")")
        bs+=("$(run $B 19385 "$mode")")
    done
    python3 - "$mode" "${as[*]}" "${bs[*]}" <<'PY'
import statistics, sys
mode, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
ma, mb = statistics.mean(a), statistics.mean(b)
print(f"{mode:8} A {' '.join(f'{x:6.2f}' for x in a)}  mean {ma:6.2f}")
print(f"{'':8} B {' '.join(f'{x:6.2f}' for x in b)}  mean {mb:6.2f}   B/A {mb / ma:.3f}")
PY
done
for p in $A $B; do
    awk -v pid="$p" '/^Pss:/ {pss = $2} /^AnonHugePages:/ {h = $2} END {printf "PID %s: PSS %d MiB, anonymous huge pages %d MiB\n", pid, pss / 1024, h / 1024}' "/proc/$p/smaps_rollup"
done
