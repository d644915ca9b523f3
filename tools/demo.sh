#!/usr/bin/env bash
# infergate demo (make demo [PORT=8080]): mints two API keys, writes an
# nginx.conf around conf/infergate.conf into build/demo, prints curl lines
# to paste, and runs nginx in the foreground.  Ctrl-C stops it.
#
#   DEMO_CHECK=1 make demo   runs the printed curls itself, checks that
#                            each answers as printed, then stops.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${IG_BUILD:-$root/build}
module=$build/ngx_http_infergate_module.so
keys_tool=$build/infergate-keys
nginx=/usr/sbin/nginx
port=${PORT:-8080}
prefix=$build/demo

for f in "$module" "$keys_tool" "$build/infergate-audit"; do
    [ -e "$f" ] || { echo "demo: $f is missing; run make build" >&2; exit 1; }
done

port_free() {
    /usr/bin/python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

if ! port_free "$port"; then
    echo "demo: port $port is busy; try: make demo PORT=18080" >&2
    exit 1
fi
origin_port=$(/usr/bin/python3 -c 'import socket; s=socket.socket();
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

rm -rf "$prefix"
mkdir -p "$prefix/schemas" "$prefix/logs"
cp "$root/conf/schemas/score.json" "$prefix/schemas/score.json"

# -- keys ------------------------------------------------------------------
mint() {    # mint VAR TENANT OPTS... -> sets VAR to the key, appends line
    local var=$1 out
    shift
    out=$("$keys_tool" new "$@")
    printf -v "$var" '%s' "$(sed -n 's/^key: //p' <<<"$out")"
    sed -n 's/^line: //p' <<<"$out" >> "$prefix/keys.txt"
}
{
    echo "# infergate demo keys: sha256(key) tenant [options]"
} > "$prefix/keys.txt"
mint acme_key acme rate=5r/s burst=10
mint globex_key globex rate=1r/s burst=1 models=credit-risk

# -- the audit signing key (mode 0600, or nginx -t refuses it) ---------------
(umask 077; "$build/infergate-audit" keygen demo > "$prefix/audit.key")

# -- nginx.conf: conf/infergate.conf with the demo's ports -------------------
sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$port/g" \
    -e "s/127\.0\.0\.1:8081/127.0.0.1:$origin_port/g" \
    "$root/conf/infergate.conf" > "$prefix/infergate.conf"

user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"

cat > "$prefix/nginx.conf" <<EOF
$user_line
worker_processes 2;
master_process on;
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log info;
load_module $module;

events { worker_connections 1024; }

http {
    access_log $prefix/logs/access.log;
    client_body_temp_path $prefix/client_body_temp;
    proxy_temp_path $prefix/proxy_temp;
    fastcgi_temp_path $prefix/fastcgi_temp;
    uwsgi_temp_path $prefix/uwsgi_temp;
    scgi_temp_path $prefix/scgi_temp;

    infergate_audit $prefix/logs/audit.log key=$prefix/audit.key key_id=demo
                    flush=200ms;

    include infergate.conf;
}
EOF

ngx=("$nginx" -p "$prefix/" -c nginx.conf -e "$prefix/logs/error.log")
if [ "${IG_SANITIZE:-0}" = 1 ]; then
    # Debian's nginx is not instrumented: the ASan runtime must come first
    asan=$(realpath "$(gcc -print-file-name=libasan.so)")
    ngx=(env "LD_PRELOAD=$asan" "ASAN_OPTIONS=detect_leaks=0" "${ngx[@]}")
fi
if ! out=$("${ngx[@]}" -t 2>&1); then
    echo "$out" >&2
    exit 1
fi

# -- the curl lines ----------------------------------------------------------
url="http://127.0.0.1:$port/v1/score"
good='{"user_id":"u42","amount":125.5,"currency":"EUR","login_time":"2024-03-25T09:30:00Z","login_hour":9,"device_id":"2eb8aa08-aa98-11ea-b4aa-73b441d16380","tags":["web"]}'
bad='{"user_id":"42","amount":-5,"currency":"JPY","login_time":"03/25/2024","login_hour":31}'

curl_ok="curl -si $url -H 'Authorization: Bearer $acme_key' -H 'Content-Type: application/json' -d '$good'"
curl_bad="curl -s $url -H 'X-API-Key: $acme_key' -H 'Content-Type: application/json' -d '$bad'"
curl_nokey="curl -si $url -H 'Content-Type: application/json' -d '$good'"
curl_loop="for i in \$(seq 15); do curl -s -o /dev/null -w '%{http_code}\\n' $url -H 'Authorization: Bearer $globex_key' -H 'Content-Type: application/json' -d '$good'; done"

cat <<EOF

infergate demo: nginx on 127.0.0.1:$port, origin on 127.0.0.1:$origin_port
prefix $prefix (keys.txt, nginx.conf, infergate.conf, logs/)

  tenant acme    key $acme_key   (rate=5r/s burst=10)
  tenant globex  key $globex_key   (rate=1r/s burst=1, models=credit-risk)

1. Admitted: 200 from the origin, with RateLimit-Policy / RateLimit headers

$curl_ok

2. Schema rejection: 400 application/problem+json listing every bad field
   (/user_id pattern, /amount minimum, /currency enum, /login_time not
   RFC 3339, /login_hour maximum)

$curl_bad

3. No API key: 401 with WWW-Authenticate: Bearer realm="infergate"

$curl_nokey

4. Rate limit (globex: 1r/s, burst=1): 200 200, then 429 with Retry-After

$curl_loop

5. The signed audit trail: one ECS JSON line per request above, verified

tail -n 3 $prefix/logs/audit.log
$build/infergate-audit verify --live --key $prefix/audit.key $prefix/logs/audit.log

Ctrl-C stops nginx.
EOF

pid=""
cleanup() {
    trap - INT TERM EXIT
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -QUIT "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup INT TERM EXIT

"${ngx[@]}" &
pid=$!

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
if ! wait_port; then
    echo "demo: nginx did not start; see $prefix/logs/error.log" >&2
    exit 1
fi

if [ "${DEMO_CHECK:-0}" = 1 ]; then
    fail=0
    expect() {   # expect NAME REGEX OUTPUT
        if grep -Eq "$2" <<<"$3"; then
            echo "demo check: $1 ok"
        else
            echo "demo check: $1 FAILED, got:"; echo "$3" | head -30
            fail=1
        fi
    }
    expect "admitted 200" '^HTTP/1.1 200' "$(eval "$curl_ok")"
    out=$(eval "$curl_ok")
    expect "RateLimit headers" '^RateLimit: "tenants";r=[0-9]+;t=[0-9]+' \
        "$(tr -d '\r' <<<"$out")"
    out=$(eval "$curl_bad")
    for p in /user_id /amount /currency /login_time /login_hour; do
        expect "400 names $p" "\"pointer\": ?\"$p\"" "$out"
    done
    expect "400 says RFC 3339" 'RFC 3339' "$out"
    out=$(eval "$curl_nokey")
    expect "401" '^HTTP/1.1 401' "$out"
    expect "WWW-Authenticate" '^WWW-Authenticate: Bearer realm="infergate"' \
        "$(tr -d '\r' <<<"$out")"
    out=$(eval "$curl_loop" | tr '\n' ' ')
    expect "loop 200 200 then 429s" '^200 200 429 429 429' "$out"
    echo "demo check: loop printed: $out"
    sleep 0.5
    out=$("$build/infergate-audit" verify --live --key "$prefix/audit.key" \
          "$prefix/logs/audit.log" 2>&1 || true)
    expect "audit trail verifies" '^OK' "$out"
    exit $fail
fi

wait "$pid"
