"""Cluster-wide limits: infergate_limit ... redis=NAME [fail=open|closed]
runs GCRA in Redis, so gateway instances sharing a server share one
limit; Redis down or late: fail open (FAIL_OPEN) or closed (503)."""

import re
import time

import requests

from conftest import QUOTA_TYPE, assert_problem, bearer, make_key, ratelimit
from redis_fixtures import redis_factory, redis_server  # noqa: F401


def conf(redis, limit, auth_keys=None, params="timeout=100ms"):
    http = f"infergate_redis r {redis.address} {params};\n"
    files = {}
    if auth_keys:
        http += "infergate_keys keys.txt;\n"
        files["keys.txt"] = "\n".join(auth_keys) + "\n"
    server = f"""
    location / {{
        {"infergate_auth on;" if auth_keys else ""}
        infergate_limit {limit};
        add_header X-IG-Limit $infergate_limit_status always;
        @PROXY@
    }}"""
    return http, server, files


def wait_ready(ngx, redis, headers=None):
    """The first requests after start may find the connection still
    coming up (FAIL_OPEN); wait until Redis decides, then clear."""
    deadline = time.time() + 10
    while time.time() < deadline:
        r = requests.get(ngx.url("/ready"), headers=headers)
        if r.headers.get("X-IG-Limit") == "PASSED":
            break
        time.sleep(0.05)
    redis.client().flushdb()


def test_two_instances_share_one_limit(start_nginx, redis_server):
    http, server, files = conf(redis_server,
                               "zone=shared rate=6r/m burst=5 redis=r")
    a = start_nginx(http=http, server=server, files=files, workers=2)
    b = start_nginx(http=http, server=server, files=files, workers=2)
    wait_ready(a, redis_server)
    wait_ready(b, redis_server)
    codes = []
    for i in range(12):
        ngx = a if i % 2 == 0 else b
        codes.append(requests.get(ngx.url(f"/x{i}")).status_code)
    # one bucket of burst + 1 for both instances, not one each
    assert codes.count(200) == 6, codes
    assert codes.count(429) == 6, codes
    assert codes[:6] == [200] * 6
    r = requests.get(a.url("/y"))
    body = assert_problem(r, 429, QUOTA_TYPE)
    assert body["violated-policies"] == ["shared"]
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["X-IG-Limit"] == "REJECTED"
    _, cur = ratelimit(r)
    assert cur["shared"]["r"] == 0
    # the state lives in Redis under a digest key
    keys = redis_server.client().keys("igr:*")
    assert len(keys) == 1 and len(keys[0]) == 4 + 64


def test_headers_on_admitted(start_nginx, redis_server):
    http, server, files = conf(redis_server,
                               "zone=h rate=60r/m burst=9 redis=r")
    ngx = start_nginx(http=http, server=server, files=files, workers=1)
    wait_ready(ngx, redis_server)
    r = requests.get(ngx.url("/h"))
    assert r.status_code == 200
    assert r.headers["X-IG-Limit"] == "PASSED"
    pol, cur = ratelimit(r)
    assert cur["h"]["r"] == 9, cur
    assert pol["h"]["q"] == 60 and pol["h"]["w"] == 60, pol
    r = requests.get(ngx.url("/h"))
    assert ratelimit(r)[1]["h"]["r"] == 8


def test_per_tenant(start_nginx, redis_server):
    ka, la = make_key("ta")
    kb, lb = make_key("tb")
    http, server, files = conf(redis_server,
                               "zone=t rate=2r/m burst=1 redis=r",
                               auth_keys=[la, lb])
    ngx = start_nginx(http=http, server=server, files=files, workers=1)
    wait_ready(ngx, redis_server, headers=bearer(ka))
    sa = [requests.get(ngx.url("/"), headers=bearer(ka)).status_code
          for _ in range(3)]
    sb = [requests.get(ngx.url("/"), headers=bearer(kb)).status_code
          for _ in range(3)]
    assert sa == [200, 200, 429], sa
    assert sb == [200, 200, 429], sb


def test_fail_open(start_nginx, redis_server):
    http, server, files = conf(redis_server,
                               "zone=fo rate=1r/m redis=r fail=open")
    ngx = start_nginx(http=http, server=server, files=files, workers=1)
    wait_ready(ngx, redis_server)
    redis_server.stop()
    for _ in range(3):
        t = time.time()
        r = requests.get(ngx.url("/fo"))
        assert r.status_code == 200
        assert r.headers["X-IG-Limit"] == "FAIL_OPEN"
        assert "RateLimit" not in r.headers
        assert time.time() - t < 0.5


def test_fail_open_when_redis_hangs(start_nginx, redis_server):
    http, server, files = conf(redis_server, "zone=fh rate=1r/m redis=r")
    ngx = start_nginx(http=http, server=server, files=files, workers=1)
    wait_ready(ngx, redis_server)
    redis_server.pause()
    try:
        t = time.time()
        r = requests.get(ngx.url("/fh"))
        took = time.time() - t
    finally:
        redis_server.resume()
    assert r.status_code == 200
    assert r.headers["X-IG-Limit"] == "FAIL_OPEN"
    # timeout=100ms: no longer than that plus the proxying
    assert took < 0.6, took


def test_fail_closed(start_nginx, redis_server):
    http, server, files = conf(redis_server,
                               "zone=fc rate=100r/s redis=r fail=closed")
    ngx = start_nginx(http=http, server=server, files=files, workers=1)
    wait_ready(ngx, redis_server)
    assert requests.get(ngx.url("/fc")).status_code == 200
    redis_server.stop()
    r = requests.get(ngx.url("/fc"))
    assert_problem(r, 503)
    assert re.fullmatch(r"\d+", r.headers["Retry-After"])
    redis_server.start()
    deadline = time.time() + 8
    while time.time() < deadline:
        r = requests.get(ngx.url("/fc"))
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200


def test_config_errors(nginx_t):
    rc, out = nginx_t(http="infergate_limit_zone z 1m;",
                      server="location / { infergate_limit zone=z rate=1r/s "
                             "fail=closed; }")
    assert rc != 0 and '"fail=" needs "redis="' in out, out
    rc, out = nginx_t(server="location / { infergate_limit zone=z "
                             "rate=1r/s redis=nope; }")
    assert rc != 0 and 'redis server "nope"' in out, out


def test_local_and_redis_limits_together(start_nginx, redis_server):
    http = (f"infergate_redis r {redis_server.address} timeout=200ms;\n"
            "infergate_limit_zone l 1m;\n")
    server = """
    location / {
        infergate_limit zone=l rate=60r/m burst=4;
        infergate_limit zone=c rate=60r/m burst=1 redis=r;
        add_header X-IG-Limit $infergate_limit_status always;
        @PROXY@
    }"""
    ngx = start_nginx(http=http, server=server, workers=1)
    deadline = time.time() + 10
    while time.time() < deadline:
        if requests.get(ngx.url("/")).headers.get("X-IG-Limit") == "PASSED":
            break
        time.sleep(0.05)
    redis_server.client().flushdb()
    time.sleep(2.1)   # the local bucket refills what the warm-up took
    rs = [requests.get(ngx.url("/")) for _ in range(3)]
    assert [r.status_code for r in rs] == [200, 200, 429]
    body = assert_problem(rs[2], 429, QUOTA_TYPE)
    assert body["violated-policies"] == ["c"]
    pol, cur = ratelimit(rs[1])
    assert set(pol) == {"l", "c"}
    assert cur["c"]["r"] == 0 and cur["l"]["r"] == 3, cur
