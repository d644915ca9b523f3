"""Redis behind Sentinel (infergate_redis NAME sentinel=A,B,C master=M):
the gateways ask the sentinels for the primary, confirm it with ROLE, and
follow a failover (SENTINEL FAILOVER under load) without a reload.  Real
processes: one primary, one replica, three redis-sentinel."""

import re
import threading
import time

import pytest
import requests

from redis_fixtures import (sentinel_set, redis_factory,  # noqa: F401
                            store_origin)
from test_redis import wait_status


def conf(sset, origin, params="timeout=200ms"):
    http = (f"infergate_redis r sentinel={sset.addresses} "
            f"master={sset.MASTER} {params};\n")
    server = f"""
    location / {{
        infergate_limit zone=z rate=100000r/s burst=100000 redis=r
                        fail=open;
        add_header X-IG-Limit $infergate_limit_status always;
        infergate_cache redis=r ttl=60s;
        {origin.proxy}
    }}"""
    return http, server


def test_sentinel_names_the_primary(start_nginx, sentinel_set, store_origin):
    http, server = conf(sentinel_set, store_origin)
    ngx = start_nginx(http=http, server=server, workers=2)
    wait_status(ngx, "/warm", ("MISS", "HIT"))
    requests.get(ngx.url("/s"))
    r = requests.get(ngx.url("/s"))
    assert r.headers["X-Cache-Status"] == "HIT"
    assert store_origin.count("GET", "/s") == 1
    assert sentinel_set.primary.client().keys("igc:*")
    assert (f'the primary of "igm" is 127.0.0.1:{sentinel_set.primary.port}'
            in ngx.error_log)


@pytest.mark.chaos
def test_failover_under_load_is_followed(start_nginx, sentinel_set,
                                         store_origin):
    gws = []
    for _ in range(2):
        http, server = conf(sentinel_set, store_origin)
        gws.append(start_nginx(http=http, server=server, workers=2))
    for g in gws:
        wait_status(g, "/warm", ("HIT",))

    statuses = []
    stop = threading.Event()

    def load(g, n):
        s = requests.Session()
        i = 0
        while not stop.is_set():
            r = s.get(g.url(f"/load{n}-{i % 20}"), timeout=5)
            statuses.append((r.status_code, r.headers.get("X-Cache-Status"),
                             r.headers.get("X-IG-Limit")))
            i += 1

    threads = [threading.Thread(target=load, args=(g, n))
               for n, g in enumerate(gws) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        new = sentinel_set.failover()
        # the gateways follow: a fresh key is stored and hit again on
        # every gateway (the old primary, now a replica, refuses writes)
        for n, g in enumerate(gws):
            r = wait_status(g, f"/after{n}", ("HIT",), timeout=15)
            assert r.headers["X-Cache-Status"] == "HIT", g.error_log[-3000:]
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)

    assert statuses and all(s == 200 for s, _, _ in statuses), \
        [s for s in statuses if s[0] != 200][:5]
    assert any(c == "HIT" for _, c, _ in statuses)
    # the cluster-wide limit failed open only around the switch, and
    # decides in Redis again afterwards
    fo = sum(1 for _, _, lim in statuses if lim == "FAIL_OPEN")
    assert fo < len(statuses) / 2, (fo, len(statuses))
    assert statuses[-1][2] == "PASSED", statuses[-5:]
    assert new.client().keys("igc:*")
    for g in gws:
        assert f'the primary of "igm" is 127.0.0.1:{new.port}' in g.error_log
        # the subscription saw the switch (the poll is the fallback)
        assert re.search(r'\+switch-master igm 127\.0\.0\.1 \d+ 127\.0\.0\.1 '
                         rf'{new.port}', g.error_log), g.error_log[-3000:]


@pytest.mark.parametrize("line,msg", [
    ("infergate_redis r sentinel=127.0.0.1:26379;",
     "sentinel= and master= together"),
    ("infergate_redis r 127.0.0.1:6379 master=m;",
     "sentinel= and master= together"),
    ("infergate_redis r sentinel=localhost:26379 master=m;",
     "invalid sentinel address"),
    ("infergate_redis r sentinel=127.0.0.1 master=m;",
     "invalid sentinel address"),
    ("infergate_redis r sentinel=127.0.0.1:1,,127.0.0.1:2 master=m;",
     "invalid sentinel address"),
    ("infergate_redis r 127.0.0.1:6379 sentinel=127.0.0.1:1 master=m;",
     "replaces the address"),
    ("infergate_redis r sentinel=127.0.0.1:1 master=m "
     "cluster=127.0.0.1:2;",
     "given once"),
])
def test_sentinel_config_errors(nginx_t, line, msg):
    rc, out = nginx_t(http=line)
    assert rc != 0
    assert "infergate_redis" in out and msg in out, out


def test_sentinel_config_accepted(nginx_t):
    rc, out = nginx_t(http="infergate_redis r sentinel=127.0.0.1:26379,"
                           "[::1]:26380 master=mymaster timeout=1s;")
    assert rc == 0, out
