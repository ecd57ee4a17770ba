#!/usr/bin/env bash
# The pipeline_flush measurement of ../README.md: per response, system calls and server CPU
# (pinned, perf tracepoints) and user instructions and mallocs (callgrind), for the hit path
# (wrk -c64; -c8 under callgrind) and the pipelined scenario (100 connections x 24).
#
#   vendor/hyper-patches/measure/measure.sh BIN on|off
#
# `off` starts BIN with TORII_PF_OFF=1, which only a build with this one-line change in
# src/server.rs honours (made for the measurement, never committed):
#     .pipeline_flush(std::env::var_os("TORII_PF_OFF").is_none())
# Loopback only, bounded (3 s runs, SECS to change); origin 127.0.0.1:19480 (origin.py),
# torii 127.0.0.1:19484; stops what it starts by PID. Needs wrk, perf, valgrind, python3.
set -euo pipefail
BIN=$(realpath "$1"); MODE=$2; SECS=${SECS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../../.."
OUT=${OUT:-/tmp/torii-pf-measure}/$MODE; rm -rf "$OUT"; mkdir -p "$OUT"
LUA=../shared/bench/lib/wrk.lua
OP=19480; SP=19484
envx=(); [ "$MODE" = off ] && envx=(TORII_PF_OFF=1)
pids=(); trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
taskset -c 0 python3 "$HERE/origin.py" $OP & pids+=($!)
up() { for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$SP/1k" && return; sleep 0.2; done; echo "not up" >&2; exit 1; }
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
wrkrun() { # name args...
  local name=$1; shift
  taskset -c 0 wrk -t1 -d${SECS}s "$@" > "$OUT/wrk-$name.txt"
  awk '/requests in/{print $1}' "$OUT/wrk-$name.txt"
}
if [ -z "${SKIP_A:-}" ]; then
# --- A: syscalls + CPU time, pinned
env "${envx[@]}" taskset -c 1 "$BIN" proxy --listen 127.0.0.1:$SP --to http://127.0.0.1:$OP --workers 1 >"$OUT/torii.log" 2>&1 & srv=$!; pids+=($srv)
up
taskset -c 0 wrk -t1 -c64 -d1s http://127.0.0.1:$SP/1k >/dev/null
curl -sI http://127.0.0.1:$SP/1k | grep -i x-cache
ev=raw_syscalls:sys_enter; for c in recvfrom sendto read write readv writev sendmsg epoll_wait; do ev+=",syscalls:sys_enter_$c"; done
for sc in hit pipelined; do
  if [ $sc = hit ]; then args=(-c64 http://127.0.0.1:$SP/1k); else args=(-c100 -s $LUA http://127.0.0.1:$SP/1k -- 24); fi
  perf stat -x, -o "$OUT/perf-$sc.txt" -p $srv -e "$ev" & tr=$!
  sleep 0.3; c0=$(cpu $srv)
  n=$(wrkrun $sc "${args[@]}")
  c1=$(cpu $srv); kill -INT $tr; wait $tr || true
  tps=$(getconf CLK_TCK)
  echo "== $MODE $sc: requests $n, req/s $(awk -v n=$n -v s=$SECS 'BEGIN{printf "%.0f", n/s}'), server CPU us/req $(awk -v a=$c0 -v b=$c1 -v n=$n -v t=$tps 'BEGIN{printf "%.2f", (b-a)/t*1e6/n}')"
  awk -F, -v n="$n" '$3 ~ /sys_/ { name=$3; sub(/.*:sys_enter_?/, "", name); if (name=="") name="all"; printf "   %-12s %7.3f per request\n", name, $1/n }' "$OUT/perf-$sc.txt"
done
kill $srv; wait $srv 2>/dev/null || true
fi
# --- B: callgrind instructions per request
for sc in hit pipelined; do
  if [ $sc = hit ]; then args=(-c8 http://127.0.0.1:$SP/1k); else args=(-c100 -s $LUA http://127.0.0.1:$SP/1k -- 24); fi
  env "${envx[@]}" valgrind --tool=callgrind --callgrind-out-file="$OUT/cg-$sc.out" "$BIN" proxy --listen 127.0.0.1:$SP --to http://127.0.0.1:$OP --workers 1 >"$OUT/vg-$sc.log" 2>&1 & vg=$!; pids+=($vg)
  up; curl -s -o /dev/null http://127.0.0.1:$SP/1k
  n=$(SECS=4 wrkrun cg-$sc "${args[@]}")
  kill -INT $vg; wait $vg || true
  tot=$(callgrind_annotate "$OUT/cg-$sc.out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
  ns=$(python3 scripts/perf/calls.py "$OUT/cg-$sc.out" canonical_url 1 | awk 'NR==1{print $2}')
  echo "== $MODE $sc callgrind: requests (wrk) $n, served (canonical_url calls) $ns, instructions/request $((tot / ns)) (startup included)"
  n=$ns
  (python3 scripts/perf/calls.py "$OUT/cg-$sc.out" malloc "$n" 2>/dev/null | head -8) || true
done
