#!/usr/bin/env bash
# infergate Bloom guard benchmark (part of make bench): one nginx worker
# pinned to one core, wrk pinned to another, keep-alive GETs, in one run:
#   (a) plain proxying to a local origin (the baseline)
#   (h) infergate_bloom with a known id (filter check, then the proxy)
#   (r) infergate_bloom with an unknown id: 404 problem+json, no origin
# The filter holds 1,000,000 ids at error=0.01 (1.2 MiB zone).
# Medians of RUNS interleaved runs of SECONDS_PER_RUN each.
#
# Env: RUNS (3), SECONDS_PER_RUN (5), WARMUP (2), CONNS (32),
#      NGINX_CPU / WRK_CPU (default: the last two CPUs we may run on).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${IG_BUILD:-$root/build}
module=$build/ngx_http_infergate_module.so
tool=$build/infergate-bloom
nginx=/usr/sbin/nginx
runs=${RUNS:-3}
secs=${SECONDS_PER_RUN:-5}
warmup=${WARMUP:-2}
conns=${CONNS:-32}
prefix=$build/bench-bloom

for f in "$module" "$tool"; do
    [ -e "$f" ] || { echo "bench: $f is missing; run make build" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "bench: wrk is not installed" >&2; exit 1; }

cpus=($(/usr/bin/python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))'))
if [ ${#cpus[@]} -lt 2 ]; then
    echo "bench: needs 2 CPUs, have ${#cpus[@]}" >&2
    exit 1
fi
ngx_cpu=${NGINX_CPU:-${cpus[-1]}}
wrk_cpu=${WRK_CPU:-${cpus[-2]}}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket();
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
oport=$(free_port)
while [ "$oport" = "$port" ]; do oport=$(free_port); done

rm -rf "$prefix"
mkdir -p "$prefix"
seq -f 'u%.0f' 1 1000000 > "$prefix/ids.txt"
"$tool" build --capacity 1000000 --error 0.01 "$prefix/ids.txt" \
    -o "$prefix/users.bloom" >/dev/null

user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
mask=$(/usr/bin/python3 -c "print(format(1 << $ngx_cpu, 'b'))")

cat > "$prefix/nginx.conf" <<EOF
$user_line
worker_processes 1;
worker_cpu_affinity $mask;
master_process on;
daemon on;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
load_module $module;

events { worker_connections 4096; }

http {
    access_log off;
    client_body_temp_path $prefix/client_body_temp;
    proxy_temp_path $prefix/proxy_temp;
    fastcgi_temp_path $prefix/fastcgi_temp;
    uwsgi_temp_path $prefix/uwsgi_temp;
    scgi_temp_path $prefix/scgi_temp;
    keepalive_requests 1000000;

    infergate_bloom_zone users 2m capacity=1000000 error=0.01
                         file=$prefix/users.bloom save_every=off;

    upstream origin {
        server 127.0.0.1:$oport;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:$port;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location /a/ {
            proxy_pass http://origin;
        }

        location ~ ^/b/(\w+)$ {
            infergate_bloom zone=users key=\$1;
            proxy_pass http://origin;
        }
    }

    server {
        listen 127.0.0.1:$oport;
        keepalive_requests 1000000;
        location / {
            default_type application/json;
            return 200 '{"score": 0.12, "model": "credit-risk"}\n';
        }
    }
}
EOF

ngx=("$nginx" -p "$prefix/" -c nginx.conf -e "$prefix/error.log")
"${ngx[@]}"
cleanup() {
    local pid
    pid=$(cat "$prefix/nginx.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done

# an absent id the filter surely refuses
absent=""
for i in $(seq 100); do
    if ! "$tool" test "$prefix/users.bloom" "x$i" >/dev/null; then
        absent="x$i"
        break
    fi
done

declare -A url=([a]="/a/u123456" [h]="/b/u123456" [r]="/b/$absent")
declare -A want=([a]=200 [h]=200 [r]=404)
for c in a h r; do
    code=$(curl -s -o /dev/null -w '%{http_code}' \
        "http://127.0.0.1:$port${url[$c]}")
    if [ "$code" != "${want[$c]}" ]; then
        echo "bench: ${url[$c]} answered $code, not ${want[$c]}" >&2
        exit 1
    fi
done

run_wrk() {   # run_wrk CONFIG SECONDS -> "req/s p99_ms"
    local out rps p99
    out=$(taskset -c "$wrk_cpu" wrk -t1 -c"$conns" -d"${2}s" --latency \
        "http://127.0.0.1:$port${url[$1]}" 2>&1)
    echo "$out" >> "$prefix/wrk.log"
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v=$2; u=v; sub(/[a-z]+$/, "", v);
               sub(/^[0-9.]+/, "", u);
               f = (u == "us") ? 0.001 : (u == "s") ? 1000 : 1;
               printf "%.3f", v * f}' <<<"$out")
    echo "$rps $p99"
}

echo "infergate bloom bench: nginx 1 worker on CPU $ngx_cpu, wrk -t1" \
     "-c$conns on CPU $wrk_cpu, GET, $runs x ${secs}s per config"
for c in a h r; do run_wrk "$c" "$warmup" >/dev/null; done

results=$prefix/results.txt
: > "$results"
for i in $(seq "$runs"); do
    case $((i % 3)) in
        1) order="a h r" ;; 2) order="h r a" ;; 0) order="r a h" ;;
    esac
    for c in $order; do
        read -r r p < <(run_wrk "$c" "$secs")
        echo "$c $r $p" >> "$results"
    done
done

/usr/bin/python3 - "$results" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    c, r, p = line.split()
    runs.setdefault(c, []).append((float(r), float(p)))
names = {"a": "(a) plain proxy",
         "h": "(h) bloom hit + proxy",
         "r": "(r) bloom reject (404, no origin)"}
print(f"{'config (medians)':<36} {'req/s':>9} {'range':>13} {'p99 ms':>8}")
for c in "ahr":
    rs = [x[0] for x in runs[c]]
    print(f"{names[c]:<36} {statistics.median(rs):>9.0f} "
          f"{min(rs):>6.0f}-{max(rs):<6.0f} "
          f"{statistics.median(x[1] for x in runs[c]):>8.3f}")
a = statistics.median(x[0] for x in runs["a"])
for c in "hr":
    m = statistics.median(x[0] for x in runs[c])
    print(f"{names[c]} / plain proxy: {m / a:.3f}")
EOF
