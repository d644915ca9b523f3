"""The Redis response cache (infergate_cache, infergate_cache_purge):
hits, tenant isolation, body-hashed POST keys, what is not cached,
stampede protection with leases, delete-after-write and its race, tags,
fail-open when Redis dies under load."""

import concurrent.futures
import json
import threading
import time

import requests

from conftest import bearer, make_key
from redis_fixtures import (redis_factory, redis_server,  # noqa: F401
                            store_origin)


KEYLEN = 4 + 16 + 1 + 64


def conf(redis, origin, cache="ttl=60s", extra="", http_extra="",
         location="/"):
    http = f"infergate_redis r {redis.address} timeout=200ms;\n{http_extra}"
    server = f"""
    location {location} {{
        infergate_cache redis=r {cache};
        {extra}
        add_header X-Status-Var $infergate_cache_status always;
        {origin.proxy}
    }}"""
    return http, server


def warm(ngx, path="/warm", headers=None, want=("MISS", "HIT")):
    deadline = time.time() + 10
    while True:
        r = requests.get(ngx.url(path), headers=headers, timeout=5)
        if r.headers.get("X-Cache-Status") in want or time.time() > deadline:
            assert r.headers.get("X-Cache-Status") in want, r.headers
            return r
        time.sleep(0.05)


def test_hit_serves_stored_response(start_nginx, redis_server, store_origin):
    http, server = conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx)
    r1 = requests.get(ngx.url("/item?x=1"))
    assert r1.headers["X-Cache-Status"] == "MISS"
    assert "Age" not in r1.headers
    time.sleep(1.1)
    r2 = requests.get(ngx.url("/item?x=1"))
    assert r2.status_code == 200
    assert r2.headers["X-Cache-Status"] == "HIT"
    assert r2.headers["X-Status-Var"] == "HIT"
    assert r2.headers["Content-Type"] == "application/json"
    assert r2.content == r1.content
    assert int(r2.headers["Age"]) >= 1
    assert store_origin.count("GET", "/item?x=1") == 1
    # other args: another entry
    r3 = requests.get(ngx.url("/item?x=2"))
    assert r3.headers["X-Cache-Status"] == "MISS"
    # keys are fixed-length digests: no raw request byte in Redis keys
    keys = redis_server.client().keys("*")
    assert keys and all(len(k) == KEYLEN for k in keys), keys
    assert not any(b"item" in k for k in keys)


def test_head_served_from_get_entry(start_nginx, redis_server, store_origin):
    http, server = conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    h = requests.head(ngx.url("/h"))
    assert h.headers["X-Cache-Status"] == "MISS"
    # a HEAD miss stores nothing (it has no body)
    assert requests.get(ngx.url("/h")).headers["X-Cache-Status"] == "MISS"
    h = requests.head(ngx.url("/h"))
    assert h.headers["X-Cache-Status"] == "HIT"
    assert h.content == b""


def test_tenants_do_not_share_entries(start_nginx, redis_server,
                                      store_origin):
    ka, la = make_key("tenant-a")
    kb, lb = make_key("tenant-b")
    http, server = conf(redis_server, store_origin,
                        extra="infergate_auth on;",
                        http_extra="infergate_keys keys.txt;\n")
    ngx = start_nginx(http=http, server=server, workers=1,
                      files={"keys.txt": f"{la}\n{lb}\n"})
    warm(ngx, headers=bearer(ka))
    assert requests.get(ngx.url("/t"), headers=bearer(ka)) \
        .headers["X-Cache-Status"] == "MISS"
    assert requests.get(ngx.url("/t"), headers=bearer(ka)) \
        .headers["X-Cache-Status"] == "HIT"
    rb = requests.get(ngx.url("/t"), headers=bearer(kb))
    assert rb.headers["X-Cache-Status"] == "MISS"
    assert store_origin.count("GET", "/t") == 2
    # two namespaces (the second fill lands just after its response)
    deadline = time.time() + 2
    while True:
        spaces = {k[:21] for k in redis_server.client().keys("igc:*")}
        if len(spaces) == 2 or time.time() > deadline:
            break
        time.sleep(0.02)
    assert len(spaces) == 2, spaces
    # unauthenticated: refused before the cache
    assert requests.get(ngx.url("/t")).status_code == 401


def test_post_key_hashes_body(start_nginx, redis_server, store_origin):
    store_origin.post_echo = True
    http, server = conf(redis_server, store_origin,
                        cache="ttl=60s methods=GET POST")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    a = {"user_id": "u1", "x": 1}
    b = {"user_id": "u1", "x": 2}
    r1 = requests.post(ngx.url("/score"), json=a)
    assert r1.headers["X-Cache-Status"] == "MISS"
    # the origin still got the body
    assert json.loads(r1.json()["echo"]) == a
    r2 = requests.post(ngx.url("/score"), json=a)
    assert r2.headers["X-Cache-Status"] == "HIT"
    assert r2.content == r1.content
    r3 = requests.post(ngx.url("/score"), json=b)
    assert r3.headers["X-Cache-Status"] == "MISS"
    assert json.loads(r3.json()["echo"]) == b
    assert store_origin.count("POST", "/score") == 2
    # a large body spooled to a temp file hashes the same way
    big = {"user_id": "u1", "pad": "z" * 200000}
    r4 = requests.post(ngx.url("/score"), json=big)
    r5 = requests.post(ngx.url("/score"), json=big)
    assert r4.headers["X-Cache-Status"] == "MISS"
    assert r5.headers["X-Cache-Status"] == "HIT"
    assert json.loads(r5.json()["echo"]) == big


def test_post_not_cached_by_default(start_nginx, redis_server, store_origin):
    store_origin.post_echo = True
    http, server = conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    for _ in range(2):
        r = requests.post(ngx.url("/p"), json={"a": 1})
        assert r.headers["X-Cache-Status"] == "BYPASS"
    assert store_origin.count("POST", "/p") == 2


def test_uncacheable_responses(start_nginx, redis_server, store_origin):
    store_origin.headers["/cookie"] = [("Set-Cookie", "s=1")]
    store_origin.headers["/private"] = [("Cache-Control", "private")]
    store_origin.headers["/nostore"] = [("Cache-Control", "no-store")]
    store_origin.statuses["/error"] = 500
    store_origin.statuses["/missing"] = 404
    store_origin.values["/big"] = "b" * 5000
    http, server = conf(redis_server, store_origin,
                        cache="ttl=60s max_size=2k")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    for path in ("/cookie", "/private", "/nostore", "/error", "/missing",
                 "/big"):
        for _ in range(2):
            r = requests.get(ngx.url(path))
            assert r.headers["X-Cache-Status"] == "BYPASS", (path, r.headers)
        assert store_origin.count("GET", path) == 2, path
    assert not redis_server.client().keys("igc:*") or \
        len(redis_server.client().keys("igc:*")) == 1   # /warm only
    # the leases were given back (just after each response), not left to
    # expire after lock_timeout (2 s)
    deadline = time.time() + 1
    while redis_server.client().keys("igl:*") and time.time() < deadline:
        time.sleep(0.02)
    assert not redis_server.client().keys("igl:*")


def test_ttl_and_jitter(start_nginx, redis_server, store_origin):
    http, server = conf(redis_server, store_origin,
                        cache="ttl=1s ttl_jitter=0%")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    requests.get(ngx.url("/ttl"))
    assert requests.get(ngx.url("/ttl")).headers["X-Cache-Status"] == "HIT"
    time.sleep(1.3)
    assert requests.get(ngx.url("/ttl")).headers["X-Cache-Status"] == "MISS"


def test_ttl_jitter_range(start_nginx, redis_server, store_origin):
    http, server = conf(redis_server, store_origin,
                        cache="ttl=100s ttl_jitter=20%")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    for i in range(30):
        requests.get(ngx.url(f"/j{i}"))
    time.sleep(0.3)
    c = redis_server.client()
    ttls = [c.pttl(k) for k in c.keys("igc:*")]
    assert len(ttls) >= 30
    assert all(79000 <= t <= 120000 for t in ttls), ttls
    assert max(ttls) - min(ttls) > 2000, "no jitter"


def test_stampede_one_origin_request(start_nginx, redis_server,
                                     store_origin):
    store_origin.slow("/cold", 0.5)
    http, server = conf(redis_server, store_origin,
                        cache="ttl=60s lock_timeout=5s")
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx)
    warm(ngx, "/warm2")
    barrier = threading.Barrier(50)

    def one(_):
        s = requests.Session()
        barrier.wait()
        return s.get(ngx.url("/cold"), timeout=20)

    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        rs = list(ex.map(one, range(50)))
    assert all(r.status_code == 200 for r in rs)
    assert len({r.content for r in rs}) == 1
    statuses = [r.headers["X-Cache-Status"] for r in rs]
    assert statuses.count("MISS") == 1, statuses
    assert statuses.count("HIT") == 49, statuses
    assert store_origin.count("GET", "/cold") == 1


def test_lock_timeout_bounds_the_wait(start_nginx, redis_server,
                                      store_origin):
    store_origin.slow("/slowfill", 2.0)
    http, server = conf(redis_server, store_origin,
                        cache="ttl=60s lock_timeout=300ms")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    t = threading.Thread(target=requests.get, args=(ngx.url("/slowfill"),))
    t.start()
    time.sleep(0.2)
    store_origin.slow("/slowfill", 0)
    t0 = time.time()
    r = requests.get(ngx.url("/slowfill"))
    waited = time.time() - t0
    t.join()
    # it waited for the lease at most lock_timeout, then went to the origin
    assert r.headers["X-Cache-Status"] == "MISS"
    assert 0.05 < waited < 1.0, waited
    assert store_origin.count("GET", "/slowfill") == 2


def purge_conf(redis, origin, cache="ttl=60s", purge=""):
    http = f"infergate_redis r {redis.address} timeout=200ms;\n"
    server = f"""
    location /items/ {{
        infergate_cache redis=r {cache};
        infergate_cache_purge {purge};
        {origin.proxy}
    }}
    location /users/ {{
        infergate_cache_purge redis=r tag=user:$arg_user;
        {origin.proxy}
    }}"""
    return http, server


def test_write_purges_entry(start_nginx, redis_server, store_origin):
    http, server = purge_conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx, "/items/warm")
    assert requests.get(ngx.url("/items/1")).json()["value"] == "initial"
    r = requests.get(ngx.url("/items/1"))
    assert r.headers["X-Cache-Status"] == "HIT"
    w = requests.put(ngx.url("/items/1"), data="v2")
    assert w.status_code == 200
    r = requests.get(ngx.url("/items/1"))
    assert r.json()["value"] == "v2", r.headers
    assert r.headers["X-Cache-Status"] == "MISS"
    assert requests.get(ngx.url("/items/1")).headers["X-Cache-Status"] \
        == "HIT"
    # DELETE purges too
    requests.delete(ngx.url("/items/1"))
    assert requests.get(ngx.url("/items/1")).json()["value"] == "initial"


def test_tag_purge(start_nginx, redis_server, store_origin):
    http, server = purge_conf(redis_server, store_origin,
                              cache="ttl=60s tag=user:$arg_user")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx, "/items/warm")
    for p in ("/items/a?user=u1", "/items/b?user=u1", "/items/c?user=u2"):
        requests.get(ngx.url(p))
        assert requests.get(ngx.url(p)).headers["X-Cache-Status"] == "HIT"
    tags = redis_server.client().keys("igt:*")
    # u1, u2 and the warm-up's empty user
    assert len(tags) == 3 and all(len(t) == KEYLEN for t in tags)
    requests.post(ngx.url("/users/x?user=u1"), data="new")
    assert requests.get(ngx.url("/items/a?user=u1")) \
        .headers["X-Cache-Status"] == "MISS"
    assert requests.get(ngx.url("/items/b?user=u1")) \
        .headers["X-Cache-Status"] == "MISS"
    assert requests.get(ngx.url("/items/c?user=u2")) \
        .headers["X-Cache-Status"] == "HIT"


def test_slow_fill_never_stores_stale_value(start_nginx, redis_server,
                                            store_origin):
    """The classic race: a slow read starts (and reads v1), a write
    completes, the slow read finishes: its fill must not land."""
    http, server = purge_conf(redis_server, store_origin,
                              cache="ttl=60s lock_timeout=5s")
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx, "/items/warm")
    requests.put(ngx.url("/items/race"), data="v1")
    store_origin.slow("/items/race", 1.0)
    out = {}
    t = threading.Thread(target=lambda: out.update(
        slow=requests.get(ngx.url("/items/race"), timeout=10)))
    t.start()
    time.sleep(0.3)
    w = requests.put(ngx.url("/items/race"), data="v2")
    assert w.status_code == 200
    t.join()
    assert out["slow"].json()["value"] == "v1"   # it did read the old value
    store_origin.slow("/items/race", 0)
    time.sleep(0.1)
    r = requests.get(ngx.url("/items/race"))
    assert r.json()["value"] == "v2", r.headers
    r = requests.get(ngx.url("/items/race"))
    assert r.json()["value"] == "v2"
    assert r.headers["X-Cache-Status"] == "HIT"


def test_fail_open_when_redis_dies_under_load(start_nginx, redis_server,
                                              store_origin):
    http, server = conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx)
    stop = threading.Event()
    results = []
    lock = threading.Lock()

    def load(n):
        s = requests.Session()
        i = 0
        while not stop.is_set():
            t = time.time()
            try:
                r = s.get(ngx.url(f"/load{n}-{i % 5}"), timeout=5)
                res = (r.status_code, r.headers.get("X-Cache-Status"),
                       time.time() - t)
            except requests.RequestException as e:
                res = (0, str(e), time.time() - t)
            with lock:
                results.append(res)
            i += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    redis_server.stop()
    time.sleep(1.0)
    redis_server.start()
    time.sleep(2.5)
    stop.set()
    for t in threads:
        t.join()
    assert len(results) > 50
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:10]
    statuses = {r[1] for r in results}
    assert "BYPASS" in statuses and "HIT" in statuses, statuses
    # no request slower than the Redis timeout plus origin time
    assert max(r[2] for r in results) < 1.5, max(r[2] for r in results)
    # and it came back by itself
    assert results[-1][1] in ("HIT", "MISS")


def test_commands_per_hit(start_nginx, redis_server, store_origin):
    http, server = conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx, "/c", want=("HIT",))
    redis_server.reset_stats()
    for _ in range(20):
        assert requests.get(ngx.url("/c")).headers["X-Cache-Status"] == "HIT"
    stats = redis_server.commandstats()
    # one GET per hit and nothing else (INFO itself comes after the reset)
    assert stats.get("get") == 20, stats
    assert set(stats) <= {"get", "config|resetstat", "info"}, stats
    # a miss: GET, the lease script, then the fill script
    redis_server.reset_stats()
    assert requests.get(ngx.url("/c2")).headers["X-Cache-Status"] == "MISS"
    time.sleep(0.2)
    stats = redis_server.commandstats()
    assert stats.get("evalsha") == 2, stats


def test_noscript_falls_back_to_eval(start_nginx, redis_server,
                                     store_origin):
    http, server = conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx, "/n", want=("HIT",))
    redis_server.client().script_flush()
    redis_server.reset_stats()
    assert requests.get(ngx.url("/n2")).headers["X-Cache-Status"] == "MISS"
    time.sleep(0.2)     # the fill's NOSCRIPT costs it one more round trip
    assert requests.get(ngx.url("/n2")).headers["X-Cache-Status"] == "HIT"
    stats = redis_server.commandstats()
    # the lease script and the fill script: each EVALSHA got NOSCRIPT and
    # was sent again as EVAL, which loads it for the next time
    assert stats.get("eval") == 2, stats
    assert stats.get("evalsha") == 2, stats
    requests.get(ngx.url("/n3"))
    time.sleep(0.2)
    stats = redis_server.commandstats()
    assert stats.get("eval") == 2 and stats.get("evalsha") == 4, stats


def test_large_entry(start_nginx, redis_server, store_origin):
    """A reply far above hiredis's 16 KiB read: level-triggered events
    keep reading until the whole value is in."""
    store_origin.values["/large"] = "L" * 600000
    http, server = conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    r1 = requests.get(ngx.url("/large"))
    assert r1.headers["X-Cache-Status"] == "MISS"
    for _ in range(3):
        r2 = requests.get(ngx.url("/large"), timeout=5)
        assert r2.headers["X-Cache-Status"] == "HIT"
        assert r2.content == r1.content
    assert store_origin.count("GET", "/large") == 1


def test_post_after_schema_and_user_tag(start_nginx, redis_server,
                                        store_origin):
    """The body read by infergate_schema is hashed as is, and a member of
    the validated body can tag the entry; a write for that user purges
    it."""
    from conftest import SCORE_SCHEMA
    store_origin.post_echo = True
    http = f"infergate_redis r {redis_server.address} timeout=200ms;\n"
    server = f"""
    location /score {{
        infergate_schema score.json;
        infergate_cache redis=r ttl=60s methods=POST
                        tag=user:$infergate_json_user_id;
        {store_origin.proxy}
    }}
    location /users/ {{
        infergate_cache_purge redis=r tag=user:$arg_user;
        {store_origin.proxy}
    }}"""
    ngx = start_nginx(http=http, server=server, workers=1,
                      files={"score.json": SCORE_SCHEMA.read_text()})
    warm(ngx, "/users/warm", want=("BYPASS", None))
    body = {"user_id": "u42", "amount": 10,
            "login_time": "2024-01-01T10:00:00Z"}
    deadline = time.time() + 5
    while True:
        r = requests.post(ngx.url("/score"), json=body)
        if r.headers.get("X-Cache-Status") == "HIT" or time.time() > deadline:
            break
        time.sleep(0.05)
    assert r.headers["X-Cache-Status"] == "HIT"
    assert json.loads(r.json()["echo"]) == body
    bad = requests.post(ngx.url("/score"), json={"user_id": "x"})
    assert bad.status_code == 400
    assert "X-Cache-Status" not in bad.headers
    requests.put(ngx.url("/users/u42?user=u42"), data="changed")
    r = requests.post(ngx.url("/score"), json=body)
    assert r.headers["X-Cache-Status"] == "MISS"


def test_audit_records_cache_hit(start_nginx, redis_server, store_origin,
                                 tmp_path):
    from test_audit import keyfile, records, requests_only
    key = keyfile(tmp_path)
    http, server = conf(
        redis_server, store_origin,
        http_extra=f"infergate_audit @PREFIX@/audit.log key={key} "
                   f"key_id=k1 flush=100ms;\n")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    requests.get(ngx.url("/aud"))
    assert requests.get(ngx.url("/aud")).headers["X-Cache-Status"] == "HIT"
    ngx.stop()
    recs = [r for r in requests_only(records(ngx.prefix / "audit.log"))
            if r["url"]["path"] == "/aud"]
    assert [r["event"]["action"] for r in recs][-1] == "cache_hit", recs
    assert len(recs) == 2


import pytest  # noqa: E402


@pytest.mark.parametrize("line,msg", [
    ("infergate_cache ttl=1s;", "needs redis=NAME"),
    ("infergate_cache redis=r;", "needs ttl=TIME"),
    ("infergate_cache redis=r ttl=0;", "invalid parameter"),
    ("infergate_cache redis=r ttl=1s ttl_jitter=80%;",
     "ttl_jitter must be between 0% and 50%"),
    ("infergate_cache redis=r ttl=1s ttl_jitter=5;", "invalid parameter"),
    ("infergate_cache redis=r ttl=1s methods=GET PUT;",
     'method "PUT" cannot be cached'),
    ("infergate_cache redis=r ttl=1s statuses=200 500;",
     'status "500" cannot be cached'),
    ("infergate_cache redis=r ttl=1s statuses=301;",
     'status "301" cannot be cached (200 to 299)'),
    ("infergate_cache redis=r ttl=1s max_size=huge;", "invalid parameter"),
    ("infergate_cache redis=r ttl=1s lock_timeout=x;", "invalid parameter"),
    ("infergate_cache redis=r ttl=1s bogus=1;", "invalid parameter"),
    ("infergate_cache redis=r ttl=1s; infergate_cache redis=r ttl=2s;",
     "is duplicate"),
    ("infergate_cache_purge tag=x;", "needs redis=NAME"),
    ("infergate_cache_purge redis=r nope;", "invalid parameter"),
])
def test_cache_config_errors(nginx_t, line, msg):
    rc, out = nginx_t(http="infergate_redis r 127.0.0.1:6379;",
                      server=f"location / {{ {line} }}")
    assert rc != 0, out
    assert "infergate_cache" in out and msg in out, out


def test_cache_config_ok(nginx_t):
    rc, out = nginx_t(
        http="infergate_redis r 127.0.0.1:6379;",
        server="location / { infergate_cache redis=r ttl=5m "
               "methods=GET HEAD POST statuses=200 203 tag=a:$arg_a "
               "tag=b key=$uri max_size=64k ttl_jitter=0% "
               "lock_timeout=500ms; infergate_cache_purge key=$uri "
               "tag=a:$arg_a; }")
    assert rc == 0, out


def test_stampede_across_two_instances(start_nginx, redis_server,
                                       store_origin):
    store_origin.slow("/cold2", 0.5)
    http, server = conf(redis_server, store_origin,
                        cache="ttl=60s lock_timeout=5s")
    a = start_nginx(http=http, server=server, workers=2)
    b = start_nginx(http=http, server=server, workers=2)
    # behind one load balancer both gateways see the same Host (the key
    # covers the host and its non-default port)
    host = {"Host": "api.example"}
    for ngx in (a, b):
        warm(ngx, headers=host)
        warm(ngx, "/warm2", headers=host)
    barrier = threading.Barrier(40)

    def one(i):
        s = requests.Session()
        barrier.wait()
        return s.get((a if i % 2 else b).url("/cold2"), headers=host,
                     timeout=20)

    with concurrent.futures.ThreadPoolExecutor(40) as ex:
        rs = list(ex.map(one, range(40)))
    assert all(r.status_code == 200 for r in rs)
    assert [r.headers["X-Cache-Status"] for r in rs].count("MISS") == 1
    assert store_origin.count("GET", "/cold2") == 1


def test_stored_status_is_replayed(start_nginx, redis_server, store_origin):
    store_origin.statuses["/created"] = 203
    http, server = conf(redis_server, store_origin,
                        cache="ttl=60s statuses=200 203")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    assert requests.get(ngx.url("/created")).status_code == 203
    r = requests.get(ngx.url("/created"))
    assert r.headers["X-Cache-Status"] == "HIT"
    assert r.status_code == 203
    assert store_origin.count("GET", "/created") == 1
