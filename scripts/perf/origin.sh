# Sourced by the scripts in this folder: writes the objects and the config of an nginx
# origin like ../shared/bench's (sendfile, keep-alive, /1k and /1m cacheable, /nocache/1k not)
# into $OUT, listening on 127.0.0.1:$1. Start it with:
#   nginx -c "$OUT/origin.conf" -p "$OUT"
write_origin() {
    local port=$1
    mkdir -p "$OUT/www/nocache" "$OUT/tmp"
    head -c 1024 /dev/urandom > "$OUT/www/1k"
    cp "$OUT/www/1k" "$OUT/www/nocache/1k"
    head -c 1048576 /dev/urandom > "$OUT/www/1m"
    cat > "$OUT/origin.conf" <<CONF
worker_processes 1;
daemon off;
pid $OUT/origin.pid;
error_log $OUT/origin-error.log warn;
events { worker_connections 4096; }
http {
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
    }
}
CONF
}
