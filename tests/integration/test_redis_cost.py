"""What each feature costs Redis per request, measured with INFO
commandstats and INFO stats (total_net_input_bytes, _output_bytes) on a
real server: the figures in docs/scaling.md.  Each case asserts a ceiling
so that the document stays true; run with -s to print the figures."""

import json
import time

import requests

from conftest import bearer, make_key
from redis_fixtures import (redis_factory, redis_server,  # noqa: F401
                            store_origin)

N = 40


def stats(srv):
    c = srv.client()
    info = c.info("stats")
    cs = c.info("commandstats")
    cmds = {k.replace("cmdstat_", ""): v["calls"] for k, v in cs.items()}
    usec = sum(v["usec"] for k, v in cs.items()
               if k.replace("cmdstat_", "") in ("get", "evalsha", "eval"))
    return (cmds, info["total_net_input_bytes"],
            info["total_net_output_bytes"], usec)


def measure(srv, fn):
    srv.client().config_resetstat()
    for i in range(N):
        fn(i)
    time.sleep(0.2)
    cmds, bin_, bout, usec = stats(srv)
    for k in ("config|resetstat", "info", "config"):
        cmds.pop(k, None)
    return {"commands": {k: round(v / N, 2) for k, v in cmds.items()},
            "per_request": round(sum(cmds.values()) / N, 2),
            "bytes_in": round(bin_ / N), "bytes_out": round(bout / N),
            "redis_usec": round(usec / N, 2)}


def test_cost_per_request(start_nginx, redis_server, store_origin, tmp_path):
    k, line = make_key("acme")
    h = {**bearer(k), "Host": "api.test"}
    http = f"""
        infergate_redis r {redis_server.address} timeout=200ms;
        infergate_keys keys.txt;
        infergate_limit_zone z 1m;
    """
    server = f"""
        location /c/ {{
            infergate_auth on;
            infergate_cache redis=r ttl=60s tag=user:$arg_user;
            infergate_cache_purge redis=r;
            {store_origin.proxy}
        }}
        location /l/ {{
            infergate_auth on;
            infergate_limit zone=z rate=100000r/s burst=100000 redis=r;
            {store_origin.proxy}
        }}
        location /plain/ {{ {store_origin.proxy} }}"""
    ngx = start_nginx(http=http, server=server, workers=1,
                      files={"keys.txt": line + "\n"})
    deadline = time.time() + 10
    while time.time() < deadline:
        requests.get(ngx.url("/c/warm"), headers=h)
        if requests.get(ngx.url("/c/warm"), headers=h) \
                .headers.get("X-Cache-Status") == "HIT":
            break
        time.sleep(0.05)

    s = requests.Session()
    out = {
        "cache_miss_and_fill": measure(
            redis_server,
            lambda i: s.get(ngx.url(f"/c/m{i}?user=u"), headers=h)),
        "cache_hit": measure(
            redis_server,
            lambda i: s.get(ngx.url(f"/c/m{i}?user=u"), headers=h)),
        "write_purge": measure(
            redis_server,
            lambda i: s.put(ngx.url(f"/c/m{i}?user=u"), data="x",
                            headers=h)),
        "cluster_limit": measure(
            redis_server,
            lambda i: s.get(ngx.url(f"/l/x{i}"), headers=h)),
        "no_redis_feature": measure(
            redis_server, lambda i: s.get(ngx.url(f"/plain/{i}"))),
    }
    (tmp_path / "cost.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))

    # commandstats counts the calls inside a script too: "per_request"
    # is every command Redis ran, "scripts" the EVALSHA round trips
    def scripts(case):
        c = out[case]["commands"]
        return c.get("evalsha", 0) + c.get("eval", 0)

    assert out["cache_hit"]["commands"] == {"get": 1.0}, out
    assert scripts("cache_miss_and_fill") == 2.0, out
    assert out["cache_miss_and_fill"]["per_request"] <= 10.5, out
    # the purge before the write (waited for; it leaves the write lease)
    # and the one after its 2xx
    assert scripts("write_purge") == 2.0, out
    assert out["write_purge"]["per_request"] <= 7.5, out
    assert scripts("cluster_limit") == 1.0, out
    assert out["cluster_limit"]["per_request"] <= 4.5, out
    assert out["no_redis_feature"]["per_request"] == 0, out
