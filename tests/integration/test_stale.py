"""Serve stale (infergate_cache ... stale_if_error= stale_while_revalidate=)
and RFC 9211 Cache-Status: an origin that fails (5xx, down) or a breaker
that is open gets answered from an expired entry within stale_if_error;
the response's own Cache-Control stale-if-error= counts when smaller;
stale-while-revalidate answers at once and refreshes once per key, across
two gateways sharing Redis."""

import concurrent.futures
import socket
import time

import requests

from conftest import PROBLEM_BASE
from infer_fixtures import backend_proc  # noqa: F401
from redis_fixtures import (redis_factory, redis_server,  # noqa: F401
                            store_origin)


def conf(redis, origin, cache, extra=""):
    http = (f"infergate_redis r {redis.address} timeout=200ms;\n"
            f"infergate_breaker_zone brk 1m;\n")
    server = f"""
    location / {{
        infergate_cache redis=r ttl_jitter=0% {cache};
        {extra}
        add_header X-Var $infergate_cache_status always;
        {origin.proxy}
    }}"""
    return http, server


def get(ngx, path, **kw):
    return requests.get(ngx.url(path), timeout=10, **kw)


def warm(ngx, path, headers=None):
    deadline = time.time() + 10
    while True:
        r = get(ngx, path, headers=headers)
        if r.headers.get("X-Cache-Status") == "HIT":
            return r
        assert time.time() < deadline, r.headers
        time.sleep(0.05)


def test_stale_if_error_on_origin_5xx(start_nginx, redis_server,
                                      store_origin):
    o = store_origin
    http, server = conf(redis_server, o, "ttl=1s stale_if_error=30s")
    ngx = start_nginx(http=http, server=server, workers=2)

    r = get(ngx, "/a")
    assert r.headers["X-Cache-Status"] == "MISS"
    assert r.headers["Cache-Status"] == "infergate; fwd=uri-miss; stored"
    body = r.content
    r = warm(ngx, "/a")
    assert r.headers["Cache-Status"].startswith("infergate; hit; ttl=")
    assert 0 <= int(r.headers["Cache-Status"].split("ttl=")[1]) <= 1

    time.sleep(1.2)
    for status in (500, 502, 503, 504):
        o.statuses["/a"] = status
        n = o.count(path="/a")
        r = get(ngx, "/a")
        assert r.status_code == 200, (status, r.status_code, r.text)
        assert r.content == body
        assert r.headers["X-Cache-Status"] == "STALE"
        assert r.headers["X-Var"] == "STALE"
        assert r.headers["Content-Type"] == "application/json"
        assert int(r.headers["Age"]) >= 1
        cs = r.headers["Cache-Status"]
        assert cs.startswith(f"infergate; fwd=stale; fwd-status={status}; "
                             f"ttl=-"), cs
        assert cs.endswith("detail=stale-if-error")
        assert "Retry-After" not in r.headers
        assert o.count(path="/a") == n + 1      # it did go to the origin

    # a 4xx is no error: passed on
    o.statuses["/a"] = 404
    r = get(ngx, "/a")
    assert r.status_code == 404
    assert r.headers["X-Cache-Status"] == "BYPASS"
    assert r.headers["Cache-Status"] == "infergate; fwd=stale; fwd-status=404"

    # recovery: the refetch is stored again
    o.statuses["/a"] = 200
    o.values["/a"] = "new"
    r = get(ngx, "/a")
    assert r.status_code == 200 and b"new" in r.content
    assert r.headers["Cache-Status"] == "infergate; fwd=stale; stored"
    assert warm(ngx, "/a").content == r.content


def test_origin_down_and_past_stale_window(start_nginx, redis_server,
                                          store_origin):
    o = store_origin
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]           # nobody listens there
    s.close()
    http, server = conf(redis_server, o, "ttl=1s stale_if_error=2s")
    server = server.replace(o.proxy, "proxy_pass http://$up; "
                            "proxy_connect_timeout 1s;")
    server = server.replace("location / {", "location / {\n"
                            f"set $up 127.0.0.1:{o.port};\n"
                            f"if ($http_x_dead) {{ set $up 127.0.0.1:{dead}; }}")
    ngx = start_nginx(http=http, server=server, workers=1)
    ngx.allowed_log.append(r"connect\(\) failed")
    body = warm(ngx, "/b").content
    time.sleep(1.1)
    r = get(ngx, "/b", headers={"X-Dead": "1"})
    assert r.status_code == 200 and r.content == body
    assert r.headers["X-Cache-Status"] == "STALE"
    assert "fwd-status=502" in r.headers["Cache-Status"]
    time.sleep(2.1)
    r = get(ngx, "/b", headers={"X-Dead": "1"})
    assert r.status_code == 502
    assert r.headers["X-Cache-Status"] == "BYPASS"
    # gone from Redis after ttl + stale_if_error
    assert r.headers["Cache-Status"] == \
        "infergate; fwd=uri-miss; fwd-status=502"


def test_response_stale_if_error_smaller_wins(start_nginx, redis_server,
                                              store_origin):
    o = store_origin
    o.headers["/c"] = (("Cache-Control", "max-age=1, stale-if-error=1"),)
    http, server = conf(redis_server, o, "ttl=60s stale_if_error=60s")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx, "/c")
    time.sleep(1.2)
    o.statuses["/c"] = 503
    assert get(ngx, "/c").headers["X-Cache-Status"] == "STALE"
    time.sleep(1.2)
    r = get(ngx, "/c")
    assert r.status_code == 503
    assert r.headers["X-Cache-Status"] == "BYPASS"


def test_no_stale_without_the_option(start_nginx, redis_server,
                                     store_origin):
    o = store_origin
    http, server = conf(redis_server, o, "ttl=1s")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx, "/d")
    time.sleep(1.2)
    o.statuses["/d"] = 503
    r = get(ngx, "/d")
    assert r.status_code == 503
    assert r.headers["X-Cache-Status"] == "BYPASS"
    # without stale_if_error, Redis kept the entry for ttl only
    assert r.headers["Cache-Status"] == \
        "infergate; fwd=uri-miss; fwd-status=503"


def test_breaker_open_answers_stale_or_fails_fast(start_nginx, redis_server,
                                                  store_origin):
    o = store_origin
    http, server = conf(redis_server, o, "ttl=1s stale_if_error=60s",
                        "infergate_breaker zone=brk min_requests=3 "
                        "open=30s;")
    server += "\n    location = /metrics { infergate_metrics; }"
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx, "/cached")
    time.sleep(1.1)
    o.statuses["/cached"] = 503
    o.statuses["/other"] = 503
    for _ in range(3):
        get(ngx, "/other")
    n = o.count()
    r = get(ngx, "/other")
    assert r.status_code == 503
    assert r.json()["type"] == PROBLEM_BASE + "circuit-open"
    assert int(r.headers["Retry-After"]) >= 20
    r = get(ngx, "/cached")
    assert r.status_code == 200 and r.headers["X-Cache-Status"] == "STALE"
    assert "fwd-status=503" in r.headers["Cache-Status"]
    assert o.count() == n                   # neither reached the origin
    text = get(ngx, "/metrics").text
    assert 'infergate_cache_requests_total{result="stale"} 1' in text, [l for l in text.splitlines() if 'cache_req' in l]


def test_bypass_reasons(start_nginx, redis_server, store_origin):
    o = store_origin
    http, server = conf(redis_server, o, "ttl=10s")
    ngx = start_nginx(http=http, server=server, workers=1)
    r = requests.delete(ngx.url("/e"), timeout=5)
    assert r.headers["Cache-Status"] == "infergate; fwd=method"
    r = get(ngx, "/e", headers={"Cache-Control": "no-store"})
    assert r.headers["Cache-Status"] == "infergate; fwd=request"
    r = get(ngx, "/e", headers={"Cookie": "a=b"})
    assert r.headers["Cache-Status"] == "infergate; fwd=bypass"


def test_nginx_t_rejects_bad_stale_args(nginx_t):
    for bad in ("stale_if_error=x", "stale_while_revalidate=-1",
                "stale_if_error=8d"):
        rc, out = nginx_t(http="infergate_redis r 127.0.0.1:1;",
                          server=f"location / {{ infergate_cache redis=r "
                                 f"ttl=1s {bad}; }}")
        assert rc != 0 and "infergate_cache" in out and bad in out, out


def test_stale_while_revalidate_one_refresh_two_gateways(
        start_nginx, redis_server, store_origin):
    """A slow origin (1 s): after expiry, clients of two gateways sharing
    Redis get the stale answer at once, and the origin sees exactly one
    refresh for the key; the refreshed entry is then served."""
    o = store_origin
    http, server = conf(redis_server, o,
                        "ttl=1s stale_while_revalidate=30s lock_timeout=5s")
    g1 = start_nginx(http=http, server=server, workers=2)
    g2 = start_nginx(http=http, server=server, workers=2)
    # the same Host on both: the key holds the host and port
    host = {"Host": "api.example"}
    warm(g1, "/s", host)
    assert get(g2, "/s", headers=host).headers["X-Cache-Status"] == "HIT"
    assert o.count(path="/s") == 1
    o.values["/s"] = "refreshed"
    o.slow("/s", 1.0)
    time.sleep(1.2)

    def one(k):
        g = (g1, g2)[k % 2]
        t0 = time.time()
        # a new connection each: a refresh holds its client's connection
        r = requests.get(g.url("/s"), timeout=10,
                         headers={"Connection": "close", **host})
        return time.time() - t0, r

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        out = list(ex.map(one, range(16)))
    for dt, r in out:
        assert r.status_code == 200
        assert r.headers["X-Cache-Status"] == "STALE", r.headers
        assert b"initial" in r.content
        cs = r.headers["Cache-Status"]
        assert cs.startswith("infergate; fwd=stale; ttl=-"), cs
        assert cs.endswith("detail=stale-while-revalidate")
        assert dt < 0.5, dt
    # the refresh lands; exactly one reached the origin
    deadline = time.time() + 5
    while True:
        r = get(g2, "/s", headers=host)
        if r.headers["X-Cache-Status"] == "HIT":
            break
        assert time.time() < deadline, r.headers
        time.sleep(0.1)
    assert b"refreshed" in r.content
    assert b"refreshed" in get(g1, "/s", headers=host).content
    assert o.count(path="/s") == 2


def test_stale_while_revalidate_refresh_failure_keeps_entry(
        start_nginx, redis_server, store_origin):
    o = store_origin
    http, server = conf(redis_server, o,
                        "ttl=1s stale_while_revalidate=30s")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx, "/f")
    time.sleep(1.1)
    o.statuses["/f"] = 500
    for _ in range(3):
        r = requests.get(ngx.url("/f"), timeout=5,
                         headers={"Connection": "close"})
        assert r.status_code == 200
        assert r.headers["X-Cache-Status"] == "STALE"
        time.sleep(0.2)
    # each refresh failed (500, not stored): the next request retried
    assert o.count(path="/f") == 4
    assert "background refresh got 500" in ngx.error_log


def test_stale_answers_do_not_wait_on_the_lease(start_nginx, redis_server,
                                                store_origin):
    """Many clients on one expired key while the origin fails at once
    (the breaker is open): none waits on another's fill lease (polled
    every 20 ms until the filler gives up), all are answered stale."""
    o = store_origin
    http, server = conf(redis_server, o, "ttl=1s stale_if_error=60s",
                        "infergate_breaker zone=brk min_requests=2 "
                        "open=60s;")
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx, "/hot")
    o.statuses["/x"] = 503
    for _ in range(2):
        get(ngx, "/x")
    time.sleep(1.1)

    def client(_):
        s = requests.Session()
        out = []
        for _ in range(15):
            t0 = time.time()
            r = s.get(ngx.url("/hot"), timeout=5)
            out.append((time.time() - t0, r.status_code,
                        r.headers.get("X-Cache-Status")))
        return out

    redis_server.reset_stats()
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        res = [x for f in ex.map(client, range(12)) for x in f]
    assert all(s == 200 and c == "STALE" for _, s, c in res)
    # per request: the GET, the lease script's GET and, for the one that
    # took the lease, the release's: at most 3.  A waiter polling the
    # lease every 20 ms adds more (5.2 per request before the fix)
    gets = redis_server.commandstats().get("get", 0)
    assert gets <= len(res) * 3, (gets, len(res))


def test_stale_while_revalidate_inference_post(start_nginx, redis_server,
                                               backend_proc):
    """The background refresh of a cached inference POST: a clone with
    the same body goes to the backend and its answer is stored."""
    from infer_fixtures import infer_http, wait_connected
    be = backend_proc("id=builtin:identity:3")
    http = (f"infergate_redis r {redis_server.address} timeout=200ms;\n"
            + infer_http(be, "timeout=2s"))
    server = """
    location /v2 {
        infergate_cache redis=r ttl=1s ttl_jitter=0%
                        stale_while_revalidate=30s methods=POST;
        infergate_infer backend=be;
    }"""
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_connected(ngx, 1)
    url = ngx.url("/v2/models/id/infer")
    body = {"inputs": [{"name": "input", "shape": [1, 3],
                        "datatype": "FP32", "data": [7, 8, 9]}]}
    first = requests.post(url, json=body, timeout=5)
    assert first.status_code == 200
    assert requests.post(url, json=body, timeout=5).headers[
        "X-Cache-Status"] == "HIT"
    time.sleep(1.1)
    r = requests.post(url, json=body, timeout=5,
                      headers={"Connection": "close"})
    assert r.status_code == 200 and r.headers["X-Cache-Status"] == "STALE"
    assert r.content == first.content
    deadline = time.time() + 5
    while True:
        r = requests.post(url, json=body, timeout=5)
        if r.headers["X-Cache-Status"] == "HIT":
            break
        assert time.time() < deadline, r.headers
        time.sleep(0.05)
    assert r.json() == first.json()
    assert int(r.headers["Age"]) <= 1


def test_malformed_stored_values_bypass(start_nginx, redis_server,
                                        store_origin):
    """Hostile or corrupt values under an entry's key: never a crash, a
    wrong answer or a stale answer from garbage; the origin answers."""
    o = store_origin
    http, server = conf(redis_server, o, "ttl=60s stale_if_error=60s "
                        "stale_while_revalidate=60s")
    ngx = start_nginx(http=http, server=server, workers=1)
    ngx.allowed_log.append(r"malformed entry")
    warm(ngx, "/m")
    rc = redis_server.client()
    keys = [k for k in rc.keys("igc*")]
    assert len(keys) == 1
    now = int(time.time() * 1000)
    bad = [
        b"200 1700000000 x99999999999999999999999:1:1 2 a/b{}",
        b"200 1700000000 x:1:1 2 a/b{}",
        b"200 1700000000 x1:1 2 a/b{}",
        b"200 1700000000 x1:1:1:1 2 a/b{}",
        b"200 1700000000 x-5:0:0 2 a/b{}",
        b"200 1700000000 x" + str(now - 1000).encode() + b":x:1 2 a/b{}",
        b"200 1700000000 x" + str(now - 1000).encode() + b":1:1 999 a/b{}",
        b"999 1700000000 x" + str(now - 1000).encode() + b":60000:0 2 a/b{}",
        b"200 x 2 a/b{}",
        b"200",
        b"",
    ]
    o.statuses["/m"] = 503
    for v in bad:
        rc.set(keys[0], v, px=60000)
        r = get(ngx, "/m")
        assert r.status_code == 503, (v, r.status_code, r.headers)
        assert r.headers["X-Cache-Status"] in ("BYPASS", "MISS"), v
