#!/usr/bin/env bash
# Installs the Debian packages infergate needs, only those missing.
# As root it runs apt-get; otherwise it names what is missing and fails.
set -euo pipefail

pkgs=(
    gcc make clang libclang-rt-14-dev
    nginx nginx-dev libpcre2-dev libssl-dev libyajl-dev libxxhash-dev
    libhiredis-dev redis-server libcmocka-dev
    python3-pytest python3-pytest-xdist python3-requests python3-redis
    wrk curl
    libopenblas-dev libonnx-dev libprotobuf-c-dev protobuf-c-compiler
    libxgboost-dev python3-xgboost python3-torch python3-onnx python3-numpy
    python3-prometheus-client
    libnginx-mod-http-lua lua-nginx-redis lua-nginx-string lua-cjson
    python3-matplotlib
    python3-grpcio python3-grpc-tools python3-jsonschema protobuf-compiler
    nghttp2-client
    redis-sentinel
)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
         | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "infergate: missing Debian packages: ${missing[*]}" >&2
    echo "infergate: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi

echo "infergate: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# nginx's postinst would start a system nginx on :80; keep it from doing so.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
