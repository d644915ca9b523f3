"""Redis Cluster (infergate_redis NAME cluster=A,B,C): a real 6-node
cluster (3 primaries, 3 replicas, redis-cli --cluster create) and three
nginx instances.  The slot map comes from CLUSTER SLOTS; commands go to
the slot of their first key's hash tag (a tenant's keys share one);
MOVED and ASK are followed and counted; a killed primary and a reshard
under load give no 5xx with fail=open."""

import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import bearer, make_key
from redis_fixtures import redis_cluster, store_origin  # noqa: F401

TENANTS = [f"tenant{i}" for i in range(9)]


def gateways(start_nginx, cluster, origin, n=3, limit="", workers=2,
             cache="ttl=60s tag=user:$arg_user", params=""):
    keys = {t: make_key(t) for t in TENANTS}
    http = (f"infergate_redis r cluster={cluster.seeds} timeout=300ms "
            f"connect_timeout=300ms {params};\n"
            f"infergate_keys keys.txt;\n")
    if limit:
        http += "infergate_limit_zone z 1m;\n"
    server = f"""
    location /items/ {{
        infergate_auth on;
        {limit}
        infergate_cache redis=r {cache};
        infergate_cache_purge redis=r;
        add_header X-IG-Limit $infergate_limit_status always;
        {origin.proxy}
    }}
    location /users/ {{
        infergate_auth on;
        infergate_cache_purge redis=r tag=user:$arg_user;
        {origin.proxy}
    }}
    location = /metrics {{ infergate_metrics; infergate_audit off; }}"""
    files = {"keys.txt": "\n".join(line for _, line in keys.values()) + "\n"}
    gws = [start_nginx(http=http, server=server, files=files,
                       workers=workers) for _ in range(n)]
    for g in gws:
        g.allowed_log.append(r".*infergate_redis.*")
    # one Host for all: the cache key has the host in it
    hdr = {t: {**bearer(k), "Host": "api.test"} for t, (k, _) in keys.items()}
    for g in gws:
        wait_hit(g, "/items/warm", hdr[TENANTS[0]])
    return gws, hdr


def wait_hit(g, path, headers, timeout=15):
    deadline = time.time() + timeout
    while True:
        r = requests.get(g.url(path), headers=headers, timeout=5)
        if r.headers.get("X-Cache-Status") == "HIT" or \
                time.time() > deadline:
            return r
        time.sleep(0.05)


def metric(g, name, labels=""):
    text = requests.get(g.url("/metrics")).text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\d+)", text,
                  re.M)
    return int(m.group(1)) if m else 0


def test_cache_hits_across_shards(start_nginx, redis_cluster, store_origin):
    gws, hdr = gateways(start_nginx, redis_cluster, store_origin)
    for t in TENANTS:
        r = requests.get(gws[0].url("/items/x"), headers=hdr[t])
        assert r.status_code == 200
        for g in gws:
            r = requests.get(g.url("/items/x"), headers=hdr[t])
            assert r.headers["X-Cache-Status"] == "HIT", (t, r.headers)
    assert store_origin.count("GET", "/items/x") == len(TENANTS)
    # the tenants' entries live on more than one shard, each tenant's
    # keys (entry, lease, tag set) on one
    where = redis_cluster.keys("ig*")
    assert sum(1 for ks in where.values() if ks) >= 2, where
    tags = {}
    for port, ks in where.items():
        for k in ks:
            tag = re.match(rb"ig[a-z]:\{([0-9a-f]{14})\}:", k).group(1)
            tags.setdefault(tag, set()).add(port)
    assert all(len(p) == 1 for p in tags.values()), tags
    # a stable cluster: our CRC16 slot routing agrees with Redis's, so no
    # command was ever redirected
    for g in gws:
        assert metric(g, "infergate_redis_redirects_total",
                      '{kind="moved"}') == 0
        assert metric(g, "infergate_redis_errors_total") == 0


def test_stampede_across_gateways(start_nginx, redis_cluster, store_origin):
    gws, hdr = gateways(start_nginx, redis_cluster, store_origin)
    store_origin.slow("/items/hot", 0.5)
    h = hdr[TENANTS[3]]

    def get(i):
        return requests.get(gws[i % 3].url("/items/hot"), headers=h,
                            timeout=10)

    with ThreadPoolExecutor(50) as ex:
        rs = list(ex.map(get, range(50)))
    assert all(r.status_code == 200 for r in rs)
    assert store_origin.count("GET", "/items/hot") == 1, \
        [r.headers.get("X-Cache-Status") for r in rs]


def test_write_and_tag_purge_across_gateways(start_nginx, redis_cluster,
                                             store_origin):
    gws, hdr = gateways(start_nginx, redis_cluster, store_origin)
    for t in TENANTS[:4]:
        h = hdr[t]
        a, b, c = gws
        requests.get(a.url("/items/1"), headers=h)
        assert requests.get(b.url("/items/1"), headers=h) \
            .headers["X-Cache-Status"] == "HIT"
        assert requests.put(c.url("/items/1"), data=f"v-{t}",
                            headers=h).status_code == 200
        r = requests.get(a.url("/items/1"), headers=h)
        assert r.json()["value"] == f"v-{t}", r.headers
        # tags: a write for one user drops that user's entries only
        for p in ("/items/a?user=u1", "/items/c?user=u2"):
            requests.get(a.url(p), headers=h)
            assert requests.get(b.url(p), headers=h) \
                .headers["X-Cache-Status"] == "HIT"
        requests.post(c.url("/users/x?user=u1"), data="new", headers=h)
        assert requests.get(b.url("/items/a?user=u1"), headers=h) \
            .headers["X-Cache-Status"] == "MISS"
        assert requests.get(b.url("/items/c?user=u2"), headers=h) \
            .headers["X-Cache-Status"] == "HIT"


def test_cluster_wide_limit_across_gateways(start_nginx, redis_cluster,
                                            store_origin):
    gws, hdr = gateways(
        start_nginx, redis_cluster, store_origin,
        limit="infergate_limit zone=z rate=6r/m burst=5 redis=r;",
        cache="ttl=60s")
    # the limit's keys, one per tenant, spread over the shards; each
    # tenant's bucket is shared by the three gateways
    codes = {}
    for t in TENANTS[:4]:
        for i in range(12):
            # wait_hit above may have used tenant0's budget
            r = requests.get(gws[i % 3].url(f"/items/l{i}"), headers=hdr[t])
            codes.setdefault(t, []).append(r.status_code)
    for t in TENANTS[1:4]:
        assert codes[t].count(200) == 6, codes
        assert codes[t].count(429) == 6, codes
    assert sum(1 for ks in redis_cluster.keys("igr:*").values() if ks) >= 1


def load(gws, hdr, stop, out):
    def run(n):
        s = requests.Session()
        i = 0
        while not stop.is_set():
            t = TENANTS[i % len(TENANTS)]
            r = s.get(gws[n].url(f"/items/k{i % 13}"), headers=hdr[t],
                      timeout=10)
            out.append((r.status_code, r.headers.get("X-Cache-Status")))
            i += 1
    threads = [threading.Thread(target=run, args=(n,)) for n in range(3)
               for _ in range(2)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.chaos
def test_primary_killed_under_load(start_nginx, redis_cluster, store_origin):
    gws, hdr = gateways(start_nginx, redis_cluster, store_origin)
    stop, out = threading.Event(), []
    threads = load(gws, hdr, stop, out)
    try:
        time.sleep(1)
        victim = redis_cluster.primaries()[0]
        victim.stop()
        redis_cluster.wait_ok(30)
        time.sleep(1)
        # every tenant hits again, whichever shard it is on
        for t in TENANTS:
            r = wait_hit(gws[1], "/items/after", hdr[t])
            assert r.headers["X-Cache-Status"] == "HIT", t
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert out and all(s == 200 for s, _ in out), \
        [s for s in out if s[0] != 200][:5]
    assert any(c == "HIT" for _, c in out)


@pytest.mark.chaos
def test_reshard_under_load_follows_moved_and_ask(start_nginx, redis_cluster,
                                                  store_origin):
    gws, hdr = gateways(start_nginx, redis_cluster, store_origin)
    prim = redis_cluster.primaries()
    src, dst = prim[0], prim[1]
    stop, out = threading.Event(), []
    threads = load(gws, hdr, stop, out)
    try:
        time.sleep(1)
        subprocess.run(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{src.port}",
             "--cluster-from", src.node_id(), "--cluster-to", dst.node_id(),
             "--cluster-slots", str(redis_cluster.slots_of(src)),
             "--cluster-yes",
             "--cluster-pipeline", "10"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=120)
        redis_cluster.wait_ok(30)
        time.sleep(1)
        for t in TENANTS:
            r = wait_hit(gws[2], "/items/after", hdr[t])
            assert r.headers["X-Cache-Status"] == "HIT", t
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert out and all(s == 200 for s, _ in out), \
        [s for s in out if s[0] != 200][:5]
    # all of src's slots moved (src, left with none, may since have
    # become dst's replica, with dst's keys)
    assert redis_cluster.slots_of(src) == 0
    redirects = sum(metric(g, "infergate_redis_redirects_total",
                           '{kind="moved"}') +
                    metric(g, "infergate_redis_redirects_total",
                           '{kind="ask"}') for g in gws)
    assert redirects > 0


def _migrate_slot_keys(src, dst, slot):
    """Half a reshard of one slot: dst IMPORTING, src MIGRATING, its keys
    MIGRATEd; the slot map still names src, which now answers ASK."""
    sc, dc = src.client(), dst.client()
    dc.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING",
                       src.node_id())
    sc.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING",
                       dst.node_id())
    keys = sc.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
    assert keys
    sc.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000,
                       "KEYS", *keys)


def _finish_slot(cluster, dst, slot):
    for x in cluster.primaries():
        x.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE",
                                   dst.node_id())


def test_lookup_during_reshard_follows_ask_and_moved(
        start_nginx, redis_cluster, store_origin):
    """A cache lookup (a plain GET, not a script) that meets ASK or MOVED
    is sent again where the slot is: the redirect is counted and the
    lookup still hits (it used to skip the cache)."""
    gws, hdr = gateways(start_nginx, redis_cluster, store_origin, n=2,
                        workers=1)
    h = hdr[TENANTS[5]]
    before = {k for ks in redis_cluster.keys("igc:*").values() for k in ks}
    requests.get(gws[0].url("/items/rs"), headers=h)
    for g in gws:
        assert wait_hit(g, "/items/rs", h).headers["X-Cache-Status"] == "HIT"
    new = [(x, k) for x in redis_cluster.primaries()
           for k in x.client().keys("igc:*") if k not in before]
    assert len(new) == 1, new
    src, key = new[0]
    dst = next(x for x in redis_cluster.primaries() if x is not src)
    slot = src.client().execute_command("CLUSTER", "KEYSLOT", key)
    origin_gets = store_origin.count("GET", "/items/rs")

    # ASK: the map still names src (CLUSTER SLOTS does not change while
    # a slot migrates), so every lookup meets ASK
    _migrate_slot_keys(src, dst, slot)
    ask0 = metric(gws[0], "infergate_redis_redirects_total", '{kind="ask"}')
    for _ in range(3):
        r = requests.get(gws[0].url("/items/rs"), headers=h)
        assert r.headers["X-Cache-Status"] == "HIT", r.headers
    assert metric(gws[0], "infergate_redis_redirects_total",
                  '{kind="ask"}') >= ask0 + 3

    # MOVED: gws[1] has not looked since, its map is at most a second
    # old; the first lookup after the slot moves meets MOVED (or, if the
    # map was read in between, goes straight to dst): a hit either way
    moved0 = metric(gws[1], "infergate_redis_redirects_total",
                    '{kind="moved"}')
    _finish_slot(redis_cluster, dst, slot)
    r = requests.get(gws[1].url("/items/rs"), headers=h)
    assert r.headers["X-Cache-Status"] == "HIT", r.headers
    moved = metric(gws[1], "infergate_redis_redirects_total",
                   '{kind="moved"}') - moved0
    assert moved <= 1
    assert store_origin.count("GET", "/items/rs") == origin_gets


def test_reload_keeps_serving(start_nginx, redis_cluster, store_origin):
    gws, hdr = gateways(start_nginx, redis_cluster, store_origin, n=1)
    g = gws[0]
    for t in TENANTS[:3]:
        wait_hit(g, "/items/rl", hdr[t])
    g.reload()
    for t in TENANTS[:3]:
        r = wait_hit(g, "/items/rl", hdr[t], timeout=5)
        assert r.headers["X-Cache-Status"] == "HIT", t
    assert "open socket" not in g.error_log


def test_read_from_replica(start_nginx, redis_cluster, store_origin):
    """Cache lookups (the first GET) go to each slot's replica; the
    scripts (lease, fill, purge) to its primary."""
    gws, hdr = gateways(start_nginx, redis_cluster, store_origin,
                        params="read_from=replica")
    for x in redis_cluster.nodes:
        x.reset_stats()
    for t in TENANTS:
        requests.get(gws[0].url("/items/r"), headers=hdr[t])
        # replication is asynchronous: a lookup may find the replica behind
        r = wait_hit(gws[1], "/items/r", hdr[t], timeout=5)
        assert r.headers["X-Cache-Status"] == "HIT", t
    replicas = [x for x in redis_cluster.live() if not x.is_primary()]
    gets = sum(x.commandstats().get("get", 0) for x in replicas)
    evals = sum(x.commandstats().get("evalsha", 0) for x in replicas)
    assert gets >= len(TENANTS), gets
    assert evals == 0


@pytest.mark.parametrize("line,msg", [
    ("infergate_redis r cluster=localhost:7000;", "invalid cluster address"),
    ("infergate_redis r cluster=127.0.0.1:7000 db=1;", "db= with cluster="),
    ("infergate_redis r 127.0.0.1:7000 cluster=127.0.0.1:7001;",
     "replaces the address"),
    ("infergate_redis r 127.0.0.1:7000 read_from=replica;",
     "read_from=replica without cluster="),
    ("infergate_redis r cluster=127.0.0.1:7000 read_from=any;",
     "invalid parameter"),
])
def test_cluster_config_errors(nginx_t, line, msg):
    rc, out = nginx_t(http=line)
    assert rc != 0
    assert "infergate_redis" in out and msg in out, out
