#!/usr/bin/env bash
# Instructions and mallocs per request of torii's HTTP/2 cache hit, under callgrind: the
# sibling of callgrind.sh, with h2load instead of wrk. Stable on a noisy shared machine,
# where wall-clock figures are not. Loopback only, bounded.
#
#   scripts/perf/callgrind-h2.sh [BIN] [h2c|h2] [REQUESTS]
#     BIN       torii binary (default target/release/torii; build with --release first)
#     h2c|h2    cleartext HTTP/2 with prior knowledge (default), or HTTP/2 over TLS 1.3
#               (ALPN h2; a throwaway ECDSA P-256 certificate made with openssl)
#     REQUESTS  h2load requests on /1k under callgrind (default 20000), on 10 connections
#               with 10 concurrent streams each (scale.sh's h2c-hit and h2-hit use 100 x 10)
#
# Needs valgrind, h2load (nghttp2-client), openssl and nginx. Starts its own nginx origin on
# 127.0.0.1:19380 and torii on 127.0.0.1:19384, stops both by PID. Prints: requests,
# instructions per request, mallocs per request and their top callers. The output file
# stays in $OUT (default /tmp/torii-callgrind-h2) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/torii}
MODE=${2:-h2c}
REQS=${3:-20000}
OUT=${OUT:-/tmp/torii-callgrind-h2}
. scripts/perf/origin.sh
start_origin 19380
tls=()
case "$MODE" in
    h2c) scheme=http ;;
    h2)
        scheme=https
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -days 1 -subj /CN=localhost \
            -addext subjectAltName=IP:127.0.0.1 2>/dev/null
        tls=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")
        ;;
    *) echo "mode: h2c or h2, not $MODE" >&2; exit 2 ;;
esac
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" proxy --listen 127.0.0.1:19384 --to http://127.0.0.1:19380 --workers 1 "${tls[@]}" \
    >"$OUT/torii.log" 2>&1 &
vg=$!
pids+=($vg)
for _ in $(seq 100); do
    curl -sk -o /dev/null "$scheme://127.0.0.1:19384/1k" && break
    sleep 0.2
done
# The first request fills the cache; every one of h2load's is a hit.
curl -sk -o /dev/null "$scheme://127.0.0.1:19384/1k"
h2out=$(h2load -t1 -c10 -m10 -n"$REQS" "$scheme://127.0.0.1:19384/1k")
grep -q "Application protocol: $MODE" <<<"$h2out" || { echo "h2load did not speak $MODE" >&2; exit 1; }
reqs=$(awk '/^requests:/{print $8}' <<<"$h2out")
kill -INT "$vg"
wait "$vg" || true
total=$(callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "requests: $reqs ($MODE, succeeded)"
echo "instructions per request: $((total / reqs)) (startup included, ~1M in all)"
python3 scripts/perf/calls.py "$OUT/callgrind.out" malloc "$reqs"
