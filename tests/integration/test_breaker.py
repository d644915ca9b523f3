"""Circuit breakers (infergate_breaker_zone, infergate_breaker) in front of
a proxied origin: the breaker opens within min_requests failures, fails
fast without reaching the origin (counted there), probes after open=,
closes when the origin answers, re-opens on a failed probe with a longer
open time; 4xx never count; the state survives a reload; nginx -t
rejects bad arguments."""

import concurrent.futures
import time

import requests

from conftest import PROBLEM_BASE, assert_problem
from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa
from redis_fixtures import (redis_factory, redis_server,  # noqa: F401
                            store_origin)


ZONE = "infergate_breaker_zone brk 1m;\n"


def conf(origin, args="", location="/api/"):
    server = f"""
    location {location} {{
        infergate_breaker zone=brk {args};
        add_header X-Breaker $infergate_breaker always;
        {origin.proxy}
    }}"""
    return ZONE, server


def circuit_open(r):
    return (r.status_code == 503
            and r.headers.get("Content-Type") == "application/problem+json"
            and r.json().get("type") == PROBLEM_BASE + "circuit-open")


def test_opens_fails_fast_probes_and_closes(start_nginx, store_origin):
    o = store_origin
    http, server = conf(o, "min_requests=5 failures=50% window=10s "
                           "open=1500ms max_open=10s half_open=2")
    ngx = start_nginx(http=http, server=server, workers=2)
    url = ngx.url("/api/x")

    o.statuses["/api/x"] = 503
    seen = []
    for _ in range(5):
        r = requests.get(url, timeout=5)
        seen.append(r.status_code)
        assert not circuit_open(r)
        assert r.headers["X-Breaker"] == "closed"
    assert seen == [503] * 5
    assert o.count(path="/api/x") == 5

    # open: fast 503, Retry-After, the origin sees nothing
    t0 = time.time()
    for _ in range(20):
        r = requests.get(url, timeout=5)
        assert circuit_open(r), (r.status_code, r.text)
        assert_problem(r, 503, PROBLEM_BASE + "circuit-open")
        assert r.headers["X-Breaker"] == "open"
        ra = int(r.headers["Retry-After"])
        assert 1 <= ra <= 2
    assert time.time() - t0 < 1.0
    assert o.count(path="/api/x") == 5

    # the origin recovers; after open= the probes go through and close it
    o.statuses["/api/x"] = 200
    time.sleep(1.6)
    r = requests.get(url, timeout=5)
    assert r.status_code == 200
    assert r.headers["X-Breaker"] == "half_open"
    r = requests.get(url, timeout=5)
    assert r.status_code == 200
    assert r.headers["X-Breaker"] == "half_open"
    r = requests.get(url, timeout=5)
    assert r.status_code == 200
    assert r.headers["X-Breaker"] == "closed"
    assert o.count(path="/api/x") == 8
    assert "infergate_breaker: \"/api/\" open for" in ngx.error_log


def test_failed_probe_reopens_longer(start_nginx, store_origin):
    o = store_origin
    http, server = conf(o, "min_requests=2 open=1s max_open=8s half_open=1")
    ngx = start_nginx(http=http, server=server, workers=1)
    url = ngx.url("/api/y")
    o.statuses["/api/y"] = 502

    for _ in range(2):
        assert requests.get(url, timeout=5).status_code == 502
    assert circuit_open(requests.get(url, timeout=5))

    time.sleep(1.1)
    r = requests.get(url, timeout=5)               # the probe fails
    assert r.status_code == 502 and r.headers["X-Breaker"] == "half_open"
    r = requests.get(url, timeout=5)
    assert circuit_open(r)
    # second trip: 2s less up to 10% jitter
    assert int(r.headers["Retry-After"]) == 2
    time.sleep(1.1)
    assert circuit_open(requests.get(url, timeout=5))
    assert o.count(path="/api/y") == 3


def test_4xx_and_ratio_below_threshold_never_open(start_nginx, store_origin):
    o = store_origin
    http, server = conf(o, "min_requests=4 failures=60%")
    ngx = start_nginx(http=http, server=server, workers=1)

    o.statuses["/api/nf"] = 404
    for _ in range(10):
        assert requests.get(ngx.url("/api/nf"), timeout=5).status_code == 404

    # 50% failures < 60%: stays closed
    o.statuses["/api/bad"] = 500
    for i in range(10):
        p = "/api/bad" if i % 2 else "/api/good"
        r = requests.get(ngx.url(p), timeout=5)
        assert not circuit_open(r)
        assert r.headers["X-Breaker"] == "closed"
    assert o.count() == 20


def test_keys_are_separate(start_nginx, store_origin):
    o = store_origin
    http, server = conf(o, "key=$arg_m min_requests=2 open=30s")
    ngx = start_nginx(http=http, server=server, workers=1)
    o.statuses["/api/k"] = 503
    for _ in range(2):
        requests.get(ngx.url("/api/k?m=a"), timeout=5)
    assert circuit_open(requests.get(ngx.url("/api/k?m=a"), timeout=5))
    r = requests.get(ngx.url("/api/k?m=b"), timeout=5)
    assert r.status_code == 503 and not circuit_open(r)
    assert r.headers["X-Breaker"] == "closed"


def test_origin_503_for_5s_under_load(start_nginx, store_origin):
    """An origin that answers 503 for 5 s under 4 concurrent clients:
    the breaker opens, the fail-fast requests never reach the origin, and
    it closes once the origin is back."""
    o = store_origin
    http, server = conf(o, "min_requests=10 window=5s open=1s max_open=2s "
                           "half_open=2")
    ngx = start_nginx(http=http, server=server, workers=2)
    url = ngx.url("/api/load")
    o.statuses["/api/load"] = 503
    fail_until = time.time() + 5
    stop = time.time() + 9
    results = []

    def client():
        s = requests.Session()
        while time.time() < stop:
            if time.time() >= fail_until:
                o.statuses["/api/load"] = 200
            r = s.get(url, timeout=5)
            results.append((time.time(), r.status_code, circuit_open(r),
                            r.headers.get("X-Breaker")))
            time.sleep(0.01)

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for f in [ex.submit(client) for _ in range(4)]:
            f.result()

    fast = [x for x in results if x[2]]
    forwarded = [x for x in results if not x[2]]
    assert len(fast) > 50, len(fast)
    # every request the origin saw is one the breaker let through
    assert o.count(path="/api/load") == len(forwarded)
    # while the origin failed, most requests were failed fast (the share
    # over the whole run depends on how fast each phase ran on the machine)
    failing = [x for x in results if x[0] < fail_until]
    assert len([x for x in failing if not x[2]]) < len(failing) / 3
    # back to closed, and the last second is all 200
    tail = [x for x in results if x[0] > stop - 1]
    assert tail and all(x[1] == 200 and x[3] == "closed" for x in tail)


def test_state_survives_reload(start_nginx, store_origin):
    o = store_origin
    http, server = conf(o, "min_requests=2 open=30s")
    ngx = start_nginx(http=http, server=server, workers=1)
    o.statuses["/api/r"] = 503
    for _ in range(2):
        requests.get(ngx.url("/api/r"), timeout=5)
    assert circuit_open(requests.get(ngx.url("/api/r"), timeout=5))
    ngx.reload()
    r = requests.get(ngx.url("/api/r"), timeout=5)
    assert circuit_open(r)
    assert int(r.headers["Retry-After"]) > 20


def test_metrics_count_transitions_and_fast_fails(start_nginx,
                                                 store_origin):
    o = store_origin
    http, server = conf(o, "min_requests=2 open=30s")
    server += """
    location = /metrics { infergate_metrics; }"""
    ngx = start_nginx(http=http, server=server, workers=1)
    o.statuses["/api/m"] = 503
    for _ in range(5):
        requests.get(ngx.url("/api/m"), timeout=5)
    text = requests.get(ngx.url("/metrics"), timeout=5).text
    assert 'infergate_breaker_transitions_total{to="open"} 1' in text
    assert "infergate_breaker_rejected_total 3" in text
    assert "infergate_breakers_open 1" in text
    assert 'infergate_breaker_state{zone="brk",key="/api/"} 1' in text


BAD = [
    ("infergate_breaker zone=brk failures=0%;", "failures"),
    ("infergate_breaker zone=brk failures=50;", "failures=50"),
    ("infergate_breaker zone=brk min_requests=x;", "min_requests=x"),
    ("infergate_breaker zone=brk open=never;", "open=never"),
    ("infergate_breaker zone=brk on=4xx;", "4xx"),
    ("infergate_breaker zone=brk half_open=0;", "half_open=0"),
    ("infergate_breaker zone=brk open=10s max_open=5s;", "max_open"),
    ("infergate_breaker min_requests=3;", "needs zone=NAME"),
    ("infergate_breaker zone=nosuch;", "unknown zone \"nosuch\""),
    ("infergate_breaker zone=brk bogus=1;", "bogus=1"),
]


def test_nginx_t_rejects_bad_args(nginx_t):
    for line, want in BAD:
        rc, out = nginx_t(http=ZONE, server=f"location / {{ {line} }}")
        assert rc != 0, line
        assert "infergate_breaker" in out and want in out, (line, out)
    rc, out = nginx_t(http="infergate_breaker_zone z 1k;")
    assert rc != 0 and "infergate_breaker_zone" in out, out
    rc, out = nginx_t(http=ZONE, server="location / { infergate_breaker "
                      "zone=brk on=timeout unavailable window=1m; }")
    assert rc == 0, out


# --------------------------------------------------------------------------
# the inference backend killed with a warm cache

def test_backend_kill9_warm_cache(start_nginx, backend_proc, redis_server):
    """kill -9 of the backend: the cached keys are answered (STALE), the
    rest fail fast with 503 + Retry-After once the breaker opens (within
    min_requests failures, plus the requests already in flight), probes
    go through after open=, and the restarted backend closes it."""
    be = backend_proc("id=builtin:identity:3")
    http = (f"infergate_redis r {redis_server.address} timeout=200ms;\n"
            + ZONE + infer_http(be, "timeout=2s"))
    server = """
    location /v2 {
        infergate_cache redis=r ttl=1s ttl_jitter=0% stale_if_error=60s
                        methods=POST;
        infergate_breaker zone=brk min_requests=5 window=1s open=1s
                          max_open=2s half_open=2;
        add_header X-Breaker $infergate_breaker always;
        infergate_infer backend=be;
    }"""
    ngx = start_nginx(http=http, server=server, workers=2)
    wait_connected(ngx, 2)
    url = ngx.url("/v2/models/id/infer")

    def body(i):
        return {"inputs": [{"name": "input", "shape": [1, 3],
                            "datatype": "FP32", "data": [i, i + 1, i + 2]}]}

    cached = list(range(3))       # few keys: the clients collide on them
    answers = {}
    for i in cached:
        r = requests.post(url, json=body(i), timeout=5)
        assert r.status_code == 200
        answers[i] = r.content
    for i in cached:
        deadline = time.time() + 5
        while requests.post(url, json=body(i), timeout=5).headers.get(
                "X-Cache-Status") != "HIT":
            assert time.time() < deadline
            time.sleep(0.02)
    # all expired: stale from now on; the warm-up's successes have left
    # the breaker's window
    time.sleep(1.1)

    be.kill9()
    kill_at = time.time()
    results = []
    stop = time.time() + 3.0

    def client(k):
        s = requests.Session()
        n = 0
        while time.time() < stop:
            n += 1
            i = cached[n % len(cached)] if n % 2 else 1000 + k * 10000 + n
            t0 = time.time()
            r = s.post(url, json=body(i), timeout=5)
            t1 = time.time()
            typ = ""
            if r.headers.get("Content-Type") == "application/problem+json":
                typ = r.json()["type"].split("#")[1]
            results.append((t0, t1, i in answers, r.status_code,
                            r.headers.get("X-Cache-Status"), typ,
                            r.headers.get("Retry-After"),
                            r.content == answers.get(i),
                            r.headers.get("X-Breaker")))

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for f in [ex.submit(client, k) for k in range(4)]:
            f.result()

    hit = [x for x in results if x[2]]
    miss = [x for x in results if not x[2]]
    assert len(hit) > 20 and len(miss) > 20
    # 0 errors for the cached keys: the stored answer, STALE
    assert all(x[3] == 200 and x[4] == "STALE" and x[7] for x in hit), \
        [x for x in hit if x[3] != 200][:3]
    # the rest: 503, first from the dead backend, then fast from the breaker
    assert all(x[3] == 503 for x in miss)
    assert all(x[6] for x in miss)                    # Retry-After
    fast = [x for x in miss if x[5] == "circuit-open"]
    assert len(fast) > len(miss) / 2
    first_open = min(x[1] for x in fast)
    admitted = [x for x in results if x[0] < first_open and x[8] == "closed"]
    # the breaker opened within min_requests failures (plus what the 4
    # clients had in flight); every admitted request failed (a cached key
    # was then answered stale)
    assert 5 <= len(admitted) <= 5 + 4, len(admitted)
    assert "(5 of 5 failed)" in ngx.error_log
    # "fast": far below what a wait would cost (the backend's timeout=2s,
    # the fill lease's lock_timeout=2s); the bound leaves room for a
    # sanitized build sharing two CPUs with another test worker
    lat = sorted(x[1] - x[0] for x in fast)
    assert lat[int(len(lat) * 0.99) - 1] < 0.5, lat[-5:]
    # the stale answers are fast too: nobody waits on another request's
    # fill lease for an entry that can answer a failure
    lat = sorted(x[1] - x[0] for x in hit)
    assert lat[int(len(lat) * 0.99) - 1] < 0.5, lat[-5:]

    # restart: after open= the probes get through and close the breaker
    be.start()
    deadline = time.time() + 15
    states = set()
    n = 0
    while True:
        n += 1
        r = requests.post(url, json=body(900000 + n), timeout=5)
        states.add(r.headers.get("X-Breaker"))
        if r.status_code == 200 and r.headers["X-Breaker"] == "closed":
            break
        assert time.time() < deadline, (r.status_code, r.text, states)
        time.sleep(0.05)
    assert "half_open" in states
    assert "infergate_breaker: \"id\" closed" in ngx.error_log


def test_audit_record_has_breaker_state(start_nginx, store_origin,
                                        tmp_path):
    from test_audit import keyfile, records, requests_only
    o = store_origin
    key = keyfile(tmp_path)
    http, server = conf(o, "min_requests=2 open=30s")
    http += (f"infergate_audit @PREFIX@/audit.log key={key} key_id=k1 "
             f"flush=100ms;\n")
    ngx = start_nginx(http=http, server=server, workers=1)
    o.statuses["/api/au"] = 503
    for _ in range(3):
        requests.get(ngx.url("/api/au"), timeout=5)
    time.sleep(0.5)
    recs = requests_only(records(ngx.prefix / "audit.log"))
    assert [r["infergate"].get("breaker") for r in recs] == \
        ["closed", "closed", "open"]
    assert recs[-1]["event"]["action"] == "circuit_open"
    assert recs[-1]["http"]["response"]["status_code"] == 503


def test_metrics_state_per_key_escaped(start_nginx, store_origin):
    o = store_origin
    http, server = conf(o, "key=$http_x_k min_requests=100")
    server += """
    location = /metrics { infergate_metrics; }"""
    ngx = start_nginx(http=http, server=server, workers=1)
    requests.get(ngx.url("/api/z"), headers={"X-K": 'a"b\\c\xe9'},
                 timeout=5)
    requests.get(ngx.url("/api/z"), headers={"X-K": "plain"}, timeout=5)
    text = requests.get(ngx.url("/metrics"), timeout=5).text
    assert 'infergate_breaker_state{zone="brk",key="plain"} 0' in text
    assert 'infergate_breaker_state{zone="brk",key="a_b_c_"} 0' in text


def test_open_time_capped_by_max_open(start_nginx, store_origin):
    o = store_origin
    http, server = conf(o, "min_requests=1 open=1s max_open=1s half_open=1")
    ngx = start_nginx(http=http, server=server, workers=1)
    o.statuses["/api/cap"] = 503
    url = ngx.url("/api/cap")
    assert requests.get(url, timeout=5).status_code == 503
    for trip in range(3):
        r = requests.get(url, timeout=5)
        assert circuit_open(r), trip
        assert r.headers["Retry-After"] == "1", trip    # never doubled
        time.sleep(1.05)
        r = requests.get(url, timeout=5)            # the probe fails
        assert r.headers["X-Breaker"] == "half_open" and not circuit_open(r)


# --------------------------------------------------------------------------
# readiness of the pool with breakers (issue 14 section 3)

def test_ready_answers_for_breakers(start_nginx, backend_proc):
    """/v2/models/{m}/ready and /v2/health/ready answer for the pool: a
    model whose breaker (default key: the model) is open is not ready,
    although its backend serves it; half-open is ready again (the probes
    need traffic).  The ready GETs never pass through the breaker: they
    are neither fast-failed nor counted, nor do they use up probes."""
    be = backend_proc("id=builtin:identity:3", "bad=builtin:fail:3")
    http = ZONE + infer_http(be, "timeout=2s")
    server = """
    location /v2 {
        infergate_breaker zone=brk min_requests=3 window=10s open=2s
                          max_open=4s half_open=2;
        add_header X-Breaker $infergate_breaker always;
        infergate_infer backend=be;
    }"""
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_connected(ngx, 1)

    def ready(path):
        return requests.get(ngx.url(path), timeout=5)

    def infer(m):
        return requests.post(
            ngx.url(f"/v2/models/{m}/infer"), timeout=5,
            json={"inputs": [{"name": "input", "shape": [1, 3],
                              "datatype": "FP32", "data": [1, 2, 3]}]})

    assert ready("/v2/health/ready").status_code == 200
    assert ready("/v2/models/bad/ready").status_code == 200
    assert ready("/v2/models/id/ready").status_code == 200

    for _ in range(3):
        r = infer("bad")
        assert r.status_code >= 500 and not circuit_open(r), r.status_code
    assert circuit_open(infer("bad"))
    assert infer("id").status_code == 200

    # open: "bad" is not ready (400, no fast-fail problem); "id" is
    t0 = time.time()
    for _ in range(5):
        r = ready("/v2/models/bad/ready")
        assert r.status_code == 400, (r.status_code, r.text)
        assert not r.headers.get("X-Breaker")
        assert ready("/v2/models/id/ready").status_code == 200
        assert ready("/v2/health/ready").status_code == 400
    assert time.time() - t0 < 1.5

    # after open=: half-open is ready; the ready GETs take no probe
    time.sleep(max(0, t0 + 2.1 - time.time()))
    for _ in range(5):
        assert ready("/v2/models/bad/ready").status_code == 200
        assert ready("/v2/health/ready").status_code == 200
    r = infer("bad")
    assert r.headers["X-Breaker"] == "half_open" and not circuit_open(r)
    # the failed probe opens it again
    assert circuit_open(infer("bad"))
    assert ready("/v2/models/bad/ready").status_code == 400
    assert ready("/v2/health/ready").status_code == 400
    # the other model's key is its own
    assert ready("/v2/models/id/ready").status_code == 200
