#!/usr/bin/env bash
# torii at scale, side by side with nginx proxy_cache, Varnish malloc and HAProxy cache
# (issue 21): millions of stored objects, uniform and Zipf keys, memory per object, misses
# that store and evict, TLS 1.3 and HTTP/2, the disk tier. Not part of CI; about 19
# minutes at defaults (most of it storing 10^6 objects in each server).
#
#   scripts/perf/scale.sh [--objects N] [--seconds S] [--warmup S] [--miss-cache MiB]
#                         [--churn-seconds S] [--disk-objects N]
#                         [--only nginx,varnish,haproxy,torii] [--scenarios a,b] [--torii BIN]
#                         [--out FILE.json] [--keep]
#   scenarios: hit-1k pass-1k h2c-hit memory-per-object hit-many hit-zipf miss-store
#              churn-bound tls-hit tls-handshake tls-resume h2-hit disk-hit
#   quick run: scripts/perf/scale.sh --objects 100000 --seconds 5
#
# Run from the project root with ../shared/bench beside it: its /proc helpers, process
# handling and peer templates (templates/*.conf, *.vcl, *.cfg) are reused, with cache sizes
# raised for N objects and TLS / h2c listeners added. Pinning as there: the server under
# test on CPU 1, wrk, h2load and the nginx origin on CPU 0 (BENCH_SERVER_CPUS /
# BENCH_LOAD_CPUS). Loopback only (ports 19480-19483, SCALE_PORT_BASE), every load run
# bounded, every process stopped by its process group at the end, on failure or on Ctrl-C;
# files live in a temp dir removed at the end (kept with --keep). stdout: one Markdown
# table and the targets; the last line reads `N of M targets held`. Needs nginx, varnishd,
# haproxy, wrk, h2load (nghttp2-client), openssl, taskset, python3, and cargo for the
# handshake scenarios' client (scripts/perf/tlsload, built on first use).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx wrk h2load openssl taskset python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "scale.sh: $tool is missing" >&2; exit 2; }
done
exec python3 "$here/scale.py" "$@"
