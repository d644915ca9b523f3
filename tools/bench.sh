#!/usr/bin/env bash
# infergate benchmark (make bench): one nginx worker pinned to one core,
# wrk pinned to another, keep-alive, the same ~300-byte JSON POST.
#   (a) plain proxying to a local origin (upstream keepalive, `return 200`)
#   (b) the same location with infergate_auth + infergate_limit (never hit)
#       + infergate_schema conf/schemas/score.json
# Warm-up, then RUNS interleaved runs of SECONDS_PER_RUN each per config
# (the order alternates run by run); medians, with the min-max spread.
# Small VMs are noisy (vCPUs packed on one host core at times): the spread
# shows how far to trust the medians.
#
# Env: RUNS (5), SECONDS_PER_RUN (6), WARMUP (3), CONNS (32),
#      NGINX_CPU / WRK_CPU (default: the last two CPUs we may run on).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${IG_BUILD:-$root/build}
module=$build/ngx_http_infergate_module.so
keys_tool=$build/infergate-keys
nginx=/usr/sbin/nginx
runs=${RUNS:-5}
secs=${SECONDS_PER_RUN:-6}
warmup=${WARMUP:-3}
conns=${CONNS:-32}
prefix=$build/bench

for f in "$module" "$keys_tool"; do
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
cp "$root/conf/schemas/score.json" "$prefix/score.json"
out=$("$keys_tool" new bench)
key=$(sed -n 's/^key: //p' <<<"$out")
sed -n 's/^line: //p' <<<"$out" > "$prefix/keys.txt"
(umask 077; "$build/infergate-audit" keygen bench > "$prefix/audit.key")

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

    infergate_keys keys.txt;
    infergate_limit_zone bench 10m;

    upstream origin {
        server 127.0.0.1:$oport;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:$port;
        client_body_buffer_size 64k;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location /a {
            proxy_pass http://origin;
        }

        location /b {
            infergate_auth on;
            infergate_limit zone=bench rate=1000000r/s burst=1000000;
            infergate_schema score.json;
            proxy_pass http://origin;
        }

        location /c {
            infergate_auth on;
            infergate_limit zone=bench rate=1000000r/s burst=1000000;
            infergate_schema score.json;
            infergate_audit $prefix/audit.log key=$prefix/audit.key
                            key_id=bench;
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

body='{"user_id":"u1234567","amount":125.5,"currency":"EUR","login_time":"2024-03-25T09:30:00Z","login_hour":9,"account_age_days":420,"device_id":"2eb8aa08-aa98-11ea-b4aa-73b441d16380","tags":["web","mobile","returning","eu-west","card-present","loyalty-gold","low-risk"]}'
cat > "$prefix/post.lua" <<EOF
wrk.method = "POST"
wrk.body   = '$body'
wrk.headers["Content-Type"]  = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
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

# Both locations must answer 200 with this exact request.
for loc in a b c; do
    code=$(curl -s -o "$prefix/check-$loc.out" -w '%{http_code}' \
        "http://127.0.0.1:$port/$loc" -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $key" --data-binary "$body")
    if [ "$code" != 200 ]; then
        echo "bench: /$loc answered $code:" >&2
        cat "$prefix/check-$loc.out" >&2
        exit 1
    fi
done

worker_pid() {
    pgrep -P "$(cat "$prefix/nginx.pid")" | head -1
}

cpu_ticks() {   # utime + stime of the nginx worker, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}

run_wrk() {   # run_wrk LOC SECONDS -> "req/s p99_ms cpu_us_per_request"
    local out rps p99 non2xx wpid t0 t1 nreq cpu
    wpid=$(worker_pid)
    t0=$(cpu_ticks "$wpid")
    out=$(taskset -c "$wrk_cpu" wrk -t1 -c"$conns" -d"${2}s" --latency \
        -s "$prefix/post.lua" "http://127.0.0.1:$port/$1" 2>&1)
    t1=$(cpu_ticks "$wpid")
    echo "$out" >> "$prefix/wrk.log"
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' <<<"$out")
    if [ -n "$non2xx" ]; then
        echo "bench: /$1 had $non2xx non-2xx responses" >&2
        exit 1
    fi
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    nreq=$(awk '/requests in/ {print $1}' <<<"$out")
    p99=$(awk '$1 == "99%" {v=$2; u=v; sub(/[a-z]+$/, "", v);
               sub(/^[0-9.]+/, "", u);
               f = (u == "us") ? 0.001 : (u == "s") ? 1000 : 1;
               printf "%.3f", v * f}' <<<"$out")
    cpu=$(awk -v t="$((t1 - t0))" -v n="$nreq" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.3f", t / hz / n * 1e6}')
    echo "$rps $p99 $cpu"
}

echo "infergate bench: nginx 1 worker on CPU $ngx_cpu, wrk -t1 -c$conns on" \
     "CPU $wrk_cpu, ${#body}-byte POST, $runs x ${secs}s per config"
echo "warming up (${warmup}s each)..."
for c in a b c; do run_wrk "$c" "$warmup" >/dev/null; done

results=$prefix/results.txt
: > "$results"
for i in $(seq "$runs"); do
    # rotate the order so that drift in the machine hits every config
    case $((i % 3)) in
        1) order="a b c" ;; 2) order="b c a" ;; 0) order="c a b" ;;
    esac
    line="  run $i:"
    for c in $order; do
        read -r r p u < <(run_wrk "$c" "$secs")
        echo "$c $r $p $u" >> "$results"
        line="$line ($c) $r req/s p99 $p ms $u us CPU/req;"
    done
    echo "$line"
done

/usr/bin/python3 - "$results" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    c, r, p, u = line.split()
    runs.setdefault(c, []).append((float(r), float(p), float(u)))
med = {c: [statistics.median(x[i] for x in v) for i in range(3)]
       for c, v in runs.items()}
names = {"a": "(a) plain proxy",
         "b": "(b) auth + limit + schema + proxy",
         "c": "(c) (b) + signed audit record"}
print()
print(f"{'config (medians)':<36} {'req/s':>9} {'range':>13} {'p99 ms':>8} "
      f"{'CPU us/req':>10}")
print(f"{'-' * 36} {'-' * 9} {'-' * 13} {'-' * 8} {'-' * 10}")
for c in "abc":
    rs = [x[0] for x in runs[c]]
    print(f"{names[c]:<36} {med[c][0]:>9.0f} "
          f"{min(rs):>6.0f}-{max(rs):<6.0f} {med[c][1]:>8.3f} "
          f"{med[c][2]:>10.2f}")
print()
for label, x, y in (("admission (b vs a)", "b", "a"),
                    ("audit (c vs b)", "c", "b")):
    rr = med[x][0] / med[y][0]
    added = (1 / med[x][0] - 1 / med[y][0]) * 1e6
    cpu_ratio = med[y][2] / med[x][2]
    cpu_added = med[x][2] - med[y][2]
    print(f"{label:<20} req/s ratio {rr:.3f} (1/{x} - 1/{y} = {added:+.2f} us)"
          f"; CPU ratio {cpu_ratio:.3f} (adds {cpu_added:+.2f} us CPU/req)")
print("CPU us/req is the nginx worker's own time (utime+stime) per request;"
      " the worker also serves the origin, so each request costs it a proxy"
      " pass and an origin answer.")
for c in "abc":
    rs = [x[0] for x in runs[c]]
    if max(rs) - min(rs) > 0.2 * med[c][0]:
        print(f"note: ({c}) req/s varied by more than 20% between runs; "
              f"trust the CPU figures over req/s on this machine")
EOF
