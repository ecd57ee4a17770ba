# Sourced by the scripts in this folder: writes the objects and the config of an nginx
# origin like ../shared/bench's (sendfile, keep-alive, /1k and /1m cacheable, /nocache/1k not)
# into $OUT, listening on 127.0.0.1:$1 (`write_origin`). Start it with:
#   nginx -c "$OUT/origin.conf" -p "$OUT"
write_origin() {
    local port=$1
    mkdir -p "$OUT/www/nocache" "$OUT/tmp"
    head -c 1024 /dev/urandom > "$OUT/www/1k"
    cp "$OUT/www/1k" "$OUT/www/nocache/1k"
    # /obj/KEY (cacheable) and /keys/nocache/KEY (not): any key, a body of the path then
    # filler, about 1 KiB; scale.lua's keys (callgrind.sh's per-request keys).
    local pad
    pad=$(head -c 1000 /dev/zero | tr '\0' 'x')
    head -c 1048576 /dev/urandom > "$OUT/www/1m"
    cat > "$OUT/origin.conf" <<CONF
worker_processes 1;
daemon off;
pid $OUT/origin.pid;
error_log $OUT/origin-error.log warn;
events { worker_connections 4096; }
http {
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    client_body_temp_path $OUT/tmp/body;
    proxy_temp_path $OUT/tmp/proxy;
    fastcgi_temp_path $OUT/tmp/fastcgi;
    uwsgi_temp_path $OUT/tmp/uwsgi;
    scgi_temp_path $OUT/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $OUT/www;
        location = /1k         { add_header Cache-Control "public, max-age=3600"; }
        location = /1m         { add_header Cache-Control "public, max-age=3600"; }
        location = /nocache/1k { add_header Cache-Control "no-store"; }
        location /obj/         { add_header Cache-Control "public, max-age=3600"; return 200 "\${uri}$pad"; }
        location /keys/nocache/ { add_header Cache-Control "no-store"; return 200 "\${uri}$pad"; }
    }
}
CONF
}

# Writes the origin (`write_origin`) and starts it on 127.0.0.1:$1, unpinned, for the
# scripts that run torii under valgrind. Sets `pids` (add the server under test's PID to
# it): every PID in it is stopped on exit, by `cleanup`.
start_origin() {
    write_origin "$1"
    pids=()
    trap cleanup EXIT
    nginx -c "$OUT/origin.conf" -p "$OUT" >/dev/null 2>&1 &
    pids+=($!)
}

cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }

# Starts the origin (port 19380) on CPU 0 and the server under test on CPU 1 (port 19384):
# torii binary $1, or `haproxy` for the bench's HAProxy config. Waits until $2 answers, then
# warms it up with 1 s of wrk. Sets $server (its PID) and stops both on exit, by PID.
start_pinned() {
    local bin=$1 path=$2
    write_origin 19380
    pids=()
    trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
    taskset -c 0 nginx -c "$OUT/origin.conf" -p "$OUT" >/dev/null 2>&1 &
    pids+=($!)
    if [ "$bin" = haproxy ]; then
        sed -e 's/@MAXCONN@/20000/g; s/@PORT@/19384/; s/@ORIGIN_PORT@/19380/' \
            ../shared/bench/templates/haproxy.cfg > "$OUT/haproxy.cfg"
        taskset -c 1 haproxy -f "$OUT/haproxy.cfg" -db >"$OUT/server.log" 2>&1 &
    else
        taskset -c 1 "$bin" proxy --listen 127.0.0.1:19384 --to http://127.0.0.1:19380 \
            --workers 1 --cache-memory "${CACHE_MEMORY:-256MiB}" >"$OUT/server.log" 2>&1 &
    fi
    server=$!
    pids+=($server)
    wait_up "$path" 0.1
    taskset -c 0 wrk -t1 -c64 -d1s "http://127.0.0.1:19384$path" >/dev/null
}

# Waits (up to 100 tries, $2 seconds apart) until the server on port 19384 answers $1.
wait_up() {
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:19384$1" && return
        sleep "$2"
    done
}
