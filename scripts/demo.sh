#!/usr/bin/env bash
# infergate demo (make demo [PORT=8080]): the whole stack on loopback.
# Builds a small credit-risk XGBoost model (fixed seed), a Bloom file of
# the user ids that exist, mints two API keys, starts a private
# redis-server and infergate-backend, writes an nginx.conf around
# conf/infergate.conf into build/demo, prints curl lines to paste, and
# runs nginx in the foreground.  Ctrl-C stops everything.
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

for f in "$module" "$keys_tool" "$build/infergate-audit" \
         "$build/infergate-backend" "$build/infergate-bloom" \
         "$build/infergate-models"; do
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
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket();
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if ! port_free "$port"; then
    echo "demo: port $port is busy; try: make demo PORT=18080" >&2
    exit 1
fi
origin_port=$(free_port)
redis_port=$(free_port)

rm -rf "$prefix"
mkdir -p "$prefix/schemas" "$prefix/logs" "$prefix/models" "$prefix/redis"
cp "$root/conf/schemas/score.json" "$root/conf/schemas/infer.json" \
   "$prefix/schemas/"

# -- the model: credit risk, XGBoost binary:logistic, fixed seed ------------
# The approval workflow (README "Model approval"): the vendor encrypts the
# model (AES-256-GCM, a key it hands to the operator), the risk team signs
# the encrypted file (Ed25519), the backend serves only what a trusted
# signer approved (--trust, --require-signed) and decrypts it in memory.
models_tool=$build/infergate-models
mkdir -p "$prefix/vendor" "$prefix/trust"
/usr/bin/python3 "$root/scripts/demo_model.py" \
    "$prefix/vendor/credit-risk.json" "$prefix/models/features.json"
(umask 077; "$models_tool" newkey vendor-2026 > "$prefix/model.key")
"$models_tool" encrypt --key "$prefix/model.key" \
    "$prefix/vendor/credit-risk.json" -o "$prefix/models/credit-risk.enc"
rm -f "$prefix/vendor/credit-risk.json"    # only the ciphertext is kept
"$models_tool" keygen "$prefix/risk-team" > /dev/null
mv "$prefix/risk-team.pub.pem" "$prefix/trust/"
"$models_tool" sign --key "$prefix/risk-team.pem" \
    "$prefix/models/credit-risk.enc" > /dev/null
"$models_tool" verify --trust "$prefix/trust" \
    "$prefix/models/credit-risk.enc" > /dev/null
model_sha=$(sha256sum "$prefix/models/credit-risk.enc" | cut -d' ' -f1)
features=$(/usr/bin/python3 -c '
import json, sys
f = json.load(open(sys.argv[1]))
print(" ".join(f["features"] if isinstance(f, dict) else f))' \
    "$prefix/models/features.json")

# one applicant, feature by feature (names not listed here get 0)
row=$(/usr/bin/python3 -c '
import sys
v = {"amount": 950.0, "login_hour": 3, "account_age_days": 12,
     "failed_logins_24h": 4, "new_device": 1, "foreign_ip": 1,
     "txn_count_7d": 1, "avg_amount_30d": 80.0, "credit_limit": 1000.0}
print(",".join(str(float(v.get(n, 0))) for n in sys.argv[1:]))' $features)
nfeatures=$(wc -w <<<"$features")

# -- the user ids that exist: u1..u5000 --------------------------------------
seq -f 'u%g' 1 5000 | "$build/infergate-bloom" build --capacity 1000000 \
    --error 0.001 - -o "$prefix/users.bloom" >/dev/null

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
    -e "s/127\.0\.0\.1:6379/127.0.0.1:$redis_port/g" \
    -e "s|/run/infergate/backend.sock|$prefix/backend.sock|g" \
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
base="http://127.0.0.1:$port"
infer="$base/v2/models/credit-risk/infer"
score="$base/v1/score"
json="-H 'Content-Type: application/json'"
req='{"id":"demo-1","parameters":{"user_id":"u42","login_time":"2026-11-22T03:12:00Z"},"inputs":[{"name":"input__0","shape":[1,'$nfeatures'],"datatype":"FP32","data":['$row']}]}'
ghost='{"id":"demo-2","parameters":{"user_id":"u99999999","login_time":"2026-11-22T03:12:00Z"},"inputs":[{"name":"input__0","shape":[1,'$nfeatures'],"datatype":"FP32","data":['$row']}]}'
bad='{"parameters":{"user_id":"42","login_time":"03/25/2024 10:00"},"inputs":[{"name":"input__0","shape":[0],"datatype":"FP16","data":[]}]}'
good='{"user_id":"u42","amount":125.5,"currency":"EUR","login_time":"2024-03-25T09:30:00Z","login_hour":9}'

curl_infer="curl -si $infer -H 'Authorization: Bearer $acme_key' $json -d '$req'"
curl_ghost="curl -si $infer -H 'Authorization: Bearer $acme_key' $json -d '$ghost'"
curl_bad="curl -s $infer -H 'X-API-Key: $acme_key' $json -d '$bad'"
curl_nokey="curl -si $infer $json -d '$req'"
curl_gzip="printf '%s' '$req' | gzip | curl -si $infer -H 'Authorization: Bearer $acme_key' $json -H 'Content-Encoding: gzip' --data-binary @-"
curl_meta="curl -s $base/v2/models/credit-risk -H 'Authorization: Bearer $acme_key'"
curl_loop="for i in \$(seq 15); do curl -s -o /dev/null -w '%{http_code}\\n' $score -H 'Authorization: Bearer $globex_key' $json -d '$good'; done"
curl_metrics="curl -s $base/metrics | grep -E '^infergate_(requests_total|cache_requests_total|bloom|backend_batch_size_count)'"

cat <<EOF

infergate demo: nginx on 127.0.0.1:$port, redis on 127.0.0.1:$redis_port,
infergate-backend on $prefix/backend.sock (model credit-risk, version 1,
features: $features)
prefix $prefix (keys.txt, nginx.conf, infergate.conf, models/, logs/)

  tenant acme    key $acme_key   (rate=5r/s burst=10)
  tenant globex  key $globex_key   (rate=1r/s burst=1, models=credit-risk)

1. Score one applicant as a standard Open Inference Protocol client sends
   it (the ids in "parameters"): auth, rate limit, schema (user_id, RFC
   3339 login_time), Bloom (u42 exists), cache MISS, the backend's XGBoost
   model

$curl_infer

2. The same request again: X-Cache-Status: HIT, from Redis, no model run

$curl_infer

3. A user id that cannot exist: 404 problem+json #unknown-id, before Redis
   or the backend

$curl_ghost

4. A bad body: 400 application/problem+json naming every bad field

$curl_bad

5. No API key: 401 with WWW-Authenticate: Bearer realm="infergate"

$curl_nokey

   The same body gzip-coded (tritonclient.http with
   request_compression_algorithm="gzip"; it sends no Content-Type, which
   is taken as JSON too): inflated at the edge, the same cache entry, HIT

$curl_gzip

6. Model metadata (Open Inference Protocol)

$curl_meta

7. Rate limit (globex: 1r/s, burst=1): 200 200, then 429 with Retry-After

$curl_loop

8. Prometheus metrics

$curl_metrics

9. The signed audit trail: one ECS JSON line per request above, verified

tail -n 3 $prefix/logs/audit.log
$build/infergate-audit verify --live --key $prefix/audit.key $prefix/logs/audit.log

Ctrl-C stops nginx, the backend and redis.
EOF

pid=""
redis_pid=""
backend_pid=""
stop_pid() {
    local p=$1
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
        kill -"${2:-TERM}" "$p" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    fi
}
cleanup() {
    trap - INT TERM EXIT
    stop_pid "$pid" QUIT
    stop_pid "$backend_pid" TERM
    stop_pid "$redis_pid" TERM
}
trap cleanup INT TERM EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$prefix/redis" > "$prefix/logs/redis.log" &
redis_pid=$!

backend=("$build/infergate-backend" --socket "$prefix/backend.sock"
         --model "credit-risk:1=$prefix/models/credit-risk.enc#sha256=$model_sha#key=$prefix/model.key#signer=risk-team"
         --trust "$prefix/trust" --require-signed --device auto)
if [ "${IG_SANITIZE:-0}" = 1 ]; then
    backend=(env "ASAN_OPTIONS=detect_leaks=1" "${backend[@]}")
fi
"${backend[@]}" 2> "$prefix/logs/backend.log" &
backend_pid=$!

for _ in $(seq 200); do
    [ -S "$prefix/backend.sock" ] && break
    kill -0 "$backend_pid" 2>/dev/null || break
    sleep 0.05
done
if [ ! -S "$prefix/backend.sock" ]; then
    echo "demo: the backend did not start; see $prefix/logs/backend.log" >&2
    tail -5 "$prefix/logs/backend.log" >&2
    exit 1
fi

"${ngx[@]}" &
pid=$!

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
if ! wait_port "$port" || ! wait_port "$redis_port"; then
    echo "demo: nginx or redis did not start; see $prefix/logs/" >&2
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
    # the workers attach to the backend asynchronously: wait for ready
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v2/health/ready")
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    out=$(eval "$curl_infer" | tr -d '\r')
    expect "scored 200" '^HTTP/1.1 200' "$out"
    expect "cache MISS" '^X-Cache-Status: MISS' "$out"
    expect "outputs" '"outputs":\[\{"name":"output__0"' "$out"
    expect "id echoed" '"id":"demo-1"' "$out"
    expect "RateLimit headers" '^RateLimit: "tenants";r=[0-9]+;t=[0-9]+' "$out"
    sleep 0.5
    out=$(eval "$curl_infer" | tr -d '\r')
    expect "cache HIT" '^X-Cache-Status: HIT' "$out"
    out=$(eval "$curl_ghost" | tr -d '\r')
    expect "unknown id 404" '^HTTP/1.1 404' "$out"
    expect "unknown-id type" 'problems#unknown-id' "$out"
    out=$(eval "$curl_bad")
    for p in /parameters/user_id /parameters/login_time /inputs/0/shape/0 \
             /inputs/0/datatype /inputs/0/data; do
        expect "400 names $p" "\"pointer\": ?\"$p\"" "$out"
    done
    out=$(eval "$curl_nokey" | tr -d '\r')
    expect "401" '^HTTP/1.1 401' "$out"
    expect "WWW-Authenticate" '^WWW-Authenticate: Bearer realm="infergate"' \
        "$out"
    out=$(eval "$curl_gzip" | tr -d '\r')
    expect "gzip body: the same entry" '^X-Cache-Status: HIT' "$out"
    expect "gzip body scored" '"outputs":\[\{"name":"output__0"' "$out"
    out=$(eval "$curl_meta")
    expect "metadata" '"name":"credit-risk"' "$out"
    out=$(eval "$curl_loop" | tr '\n' ' ')
    expect "loop 200 200 then 429s" '^200 200 429 429 429' "$out"
    echo "demo check: loop printed: $out"
    out=$(eval "$curl_metrics")
    expect "metrics" 'infergate_requests_total\{tenant="acme",action="infer",status="200"\} 1' "$out"
    expect "metrics cache hit" 'infergate_requests_total\{tenant="acme",action="cache_hit",status="200"\} 2' "$out"
    sleep 0.5
    out=$("$build/infergate-audit" verify --live --key "$prefix/audit.key" \
          "$prefix/logs/audit.log" 2>&1 || true)
    expect "audit trail verifies" '^OK' "$out"
    out=$(cat "$prefix/logs/audit.log")
    expect "audit: inference fields" \
        '"action":"infer".*"cache":"MISS","bloom":"hit","batch_size":1' "$out"
    expect "audit: cache hit" '"action":"cache_hit".*"cache":"HIT"' "$out"
    expect "audit: unknown id" '"action":"unknown_id".*"bloom":"miss"' "$out"
    exit $fail
fi

wait "$pid"
