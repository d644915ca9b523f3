"""
/metrics through real nginx, parsed with the real Prometheus text parser
(python3-prometheus-client): requests by tenant, action and status summed
across workers, refusal counters, histograms, audit counters, the tenant
label bound, and figures that survive a reload.
"""

import os
import subprocess

import pytest
import requests

from conftest import BUILD, JSON_CT, bearer, make_key

prom = pytest.importorskip("prometheus_client.parser")

AUDIT_TOOL = BUILD / "infergate-audit"

SCHEMA = '{"type":"object","required":["user_id"],' \
         '"properties":{"user_id":{"type":"string"}}}'


def scrape(ngx, path="/metrics"):
    r = requests.get(ngx.url(path))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in prom.text_string_to_metric_families(r.text)}
    return fams, r.text


def settled(ngx, family, name=None, expect=None, timeout=3, **labels):
    """Scrapes until value(...) == expect: a worker counts a request in its
    log phase, just after the response went out, so a scrape answered by
    another worker may come a moment before the count."""
    import time
    deadline = time.time() + timeout
    while True:
        fams, text = scrape(ngx)
        if value(fams, family, name, **labels) == expect \
                or time.time() > deadline:
            return fams, text
        time.sleep(0.05)


def value(fams, family, name=None, **labels):
    """Sum of the samples of family (sample name `name`) whose labels
    include `labels`."""
    name = name or family
    total = 0
    found = False
    for s in fams[family].samples:
        if s.name == name and all(s.labels.get(k) == v
                                  for k, v in labels.items()):
            total += s.value
            found = True
    return total if found else None


def audit_key(tmp_path):
    out = subprocess.run([str(AUDIT_TOOL), "keygen", "k1"],
                         capture_output=True, text=True, check=True)
    path = tmp_path / "audit.key"
    path.write_text(out.stdout)
    os.chmod(path, 0o600)
    return path


def start(start_nginx, tmp_path, tenants="", workers=2):
    keys = [make_key(t) for t in ("acme", "globex", "initech")]
    ngx = start_nginx(workers=workers, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_limit_zone z 1m;
        {tenants}
        infergate_audit @PREFIX@/audit.log key={audit_key(tmp_path)}
                        key_id=k1 flush=100ms;
    """, server="""
        location /auth { infergate_auth on; @PROXY@ }
        location /limited {
            infergate_auth on;
            infergate_limit zone=z rate=1r/m burst=0;
            @PROXY@
        }
        location /schema {
            infergate_auth on;
            infergate_schema @PREFIX@/s.json;
            @PROXY@
        }
        location = /metrics { infergate_metrics; infergate_audit off; }
    """, files={"keys.txt": "".join(line + "\n" for _, line in keys),
                "s.json": SCHEMA})
    return ngx, [k for k, _ in keys]


def test_requests_by_tenant_action_status(start_nginx, tmp_path):
    ngx, (acme, globex, _) = start(start_nginx, tmp_path)
    s = requests.Session()

    for _ in range(7):
        assert s.get(ngx.url("/auth"), headers=bearer(acme)).status_code \
            == 200
    for _ in range(3):
        assert s.get(ngx.url("/auth")).status_code == 401
    assert s.get(ngx.url("/limited"), headers=bearer(globex)).status_code \
        == 200
    assert s.get(ngx.url("/limited"), headers=bearer(globex)).status_code \
        == 429
    r = s.post(ngx.url("/schema"), data='{"user_id": 1}',
               headers={**JSON_CT, **bearer(acme)})
    assert r.status_code == 400

    # two workers answer: the figures are summed over both
    fams, text = settled(ngx, "infergate_requests",
                         "infergate_requests_total", 13)

    assert value(fams, "infergate_requests", "infergate_requests_total",
                 tenant="acme", action="request", status="200") == 7
    assert value(fams, "infergate_requests", "infergate_requests_total",
                 tenant="none", action="unauthorized", status="401") == 3
    assert value(fams, "infergate_requests", "infergate_requests_total",
                 tenant="globex", action="rate_limited", status="429") == 1
    assert value(fams, "infergate_requests", "infergate_requests_total",
                 tenant="acme", action="schema_rejected",
                 status="400") == 1
    assert value(fams, "infergate_rate_limited",
                 "infergate_rate_limited_total") == 1
    assert value(fams, "infergate_schema_rejects",
                 "infergate_schema_rejects_total") == 1

    # every counted request went into the latency histogram
    total = value(fams, "infergate_requests", "infergate_requests_total")
    assert total == 13
    count = value(fams, "infergate_request_duration_seconds",
                  "infergate_request_duration_seconds_count")
    assert count == total
    inf = value(fams, "infergate_request_duration_seconds",
                "infergate_request_duration_seconds_bucket", le="+Inf")
    assert inf == total

    # the scrape itself is not an infergate request: not counted
    fams, _ = scrape(ngx)
    assert value(fams, "infergate_requests",
                 "infergate_requests_total") == total


def test_audit_counters(start_nginx, tmp_path):
    ngx, (acme, _, _) = start(start_nginx, tmp_path, workers=1)

    for _ in range(5):
        requests.get(ngx.url("/auth"), headers=bearer(acme))

    # the audit buffer is flushed every 100 ms
    import time
    deadline = time.time() + 5
    while True:
        fams, _ = scrape(ngx)
        recs = value(fams, "infergate_audit_records",
                     "infergate_audit_records_total")
        if recs >= 6 or time.time() > deadline:
            break
        time.sleep(0.1)

    # chain_start + 5 requests
    assert recs == 6
    assert value(fams, "infergate_audit_bytes",
                 "infergate_audit_bytes_total") \
        == (ngx.prefix / "audit.log").stat().st_size
    assert value(fams, "infergate_audit_lost_records",
                 "infergate_audit_lost_records_total") == 0


def test_tenant_labels_are_bounded(start_nginx, tmp_path):
    ngx, keys = start(start_nginx, tmp_path,
                      tenants="infergate_metrics_tenants 2;")

    for k in keys:
        for _ in range(2):
            assert requests.get(ngx.url("/auth"),
                                headers=bearer(k)).status_code == 200

    fams, _ = settled(ngx, "infergate_requests", "infergate_requests_total",
                      6)
    tenants = {s.labels["tenant"]
               for s in fams["infergate_requests"].samples}
    assert len(tenants) == 3, tenants
    assert "other" in tenants
    assert value(fams, "infergate_requests", "infergate_requests_total",
                 tenant="other") == 2


def test_figures_survive_reload(start_nginx, tmp_path):
    ngx, (acme, _, _) = start(start_nginx, tmp_path)

    for _ in range(4):
        requests.get(ngx.url("/auth"), headers=bearer(acme))

    ngx.reload()

    for _ in range(2):
        requests.get(ngx.url("/auth"), headers=bearer(acme))

    fams, _ = settled(ngx, "infergate_requests", "infergate_requests_total",
                      6, tenant="acme", action="request", status="200")
    assert value(fams, "infergate_requests", "infergate_requests_total",
                 tenant="acme", action="request", status="200") == 6


def test_bad_configuration(nginx_t):
    rc, out = nginx_t(http="infergate_metrics_tenants 0;")
    assert rc != 0
    assert "infergate_metrics_tenants" in out
    assert "1 to 4096" in out

    rc, out = nginx_t(server="location /m { infergate_metrics on; }")
    assert rc != 0
    assert "infergate_metrics" in out

    rc, out = nginx_t(server="location /m { infergate_metrics; }")
    assert rc == 0, out

    # the bound lives in the main conf now: once, not "last one wins"
    rc, out = nginx_t(http="infergate_metrics_tenants 5; "
                           "infergate_metrics_tenants 6;",
                      server="location /m { infergate_metrics; }")
    assert rc != 0 and "is duplicate" in out, out


def test_method_not_allowed(start_nginx, tmp_path):
    ngx, _ = start(start_nginx, tmp_path, workers=1)
    assert requests.post(ngx.url("/metrics"), data="x").status_code == 405
    assert requests.head(ngx.url("/metrics")).status_code == 200


# -- cache and inference figures ---------------------------------------------

from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa
from redis_fixtures import redis_factory, redis_server  # noqa


def test_cache_and_backend_figures(start_nginx, backend_proc, redis_server):
    be = backend_proc("id=builtin:identity:3")
    k, line = make_key("acme")
    ngx = start_nginx(workers=1, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_redis r {redis_server.address} timeout=200ms;
        {infer_http(be)}
    """, server="""
        location /v2 {
            infergate_auth on;
            infergate_cache redis=r ttl=60s methods=POST;
            infergate_infer backend=be;
        }
        location = /metrics { infergate_metrics; }
    """, files={"keys.txt": line + "\n"})
    wait_connected(ngx, 1)

    def infer(i):
        body = ('{"inputs":[{"name":"input","shape":[1,3],'
                f'"datatype":"FP32","data":[{i},2,3]}}]}}')
        return requests.post(ngx.url("/v2/models/id/infer"), data=body,
                             headers={**JSON_CT, **bearer(k)})

    import time
    for i in range(3):
        r = infer(i)
        assert r.status_code == 200, r.text
        assert r.headers["X-Cache-Status"] == "MISS"
    time.sleep(0.3)                 # fills land after the responses
    for i in range(2):
        r = infer(i)
        assert r.headers["X-Cache-Status"] == "HIT", r.headers

    fams, _ = settled(ngx, "infergate_requests", "infergate_requests_total",
                      5)
    assert value(fams, "infergate_cache_requests",
                 "infergate_cache_requests_total", result="miss") == 3
    assert value(fams, "infergate_cache_requests",
                 "infergate_cache_requests_total", result="hit") == 2
    assert value(fams, "infergate_requests", "infergate_requests_total",
                 tenant="acme", action="infer", status="200") == 3
    assert value(fams, "infergate_requests", "infergate_requests_total",
                 tenant="acme", action="cache_hit", status="200") == 2
    assert value(fams, "infergate_backend_requests",
                 "infergate_backend_requests_total", result="ok") == 3
    assert value(fams, "infergate_backend_batch_size",
                 "infergate_backend_batch_size_count") == 3
    assert value(fams, "infergate_backend_batch_size",
                 "infergate_backend_batch_size_bucket", le="1") == 3
    assert value(fams, "infergate_backend_duration_seconds",
                 "infergate_backend_duration_seconds_count") == 3
    assert value(fams, "infergate_cache_fills",
                 "infergate_cache_fills_total") == 3
    # one worker, connections=2 (the default)
    assert value(fams, "infergate_redis_connections") == 2

    # Redis gone: the gauge drops, reconnects are counted
    redis_server.stop()
    deadline = time.time() + 5
    while True:
        fams, _ = scrape(ngx)
        if value(fams, "infergate_redis_connections") == 0 \
                or time.time() > deadline:
            break
        time.sleep(0.1)
    assert value(fams, "infergate_redis_connections") == 0
    time.sleep(0.5)
    fams, _ = scrape(ngx)
    assert value(fams, "infergate_redis_reconnects",
                 "infergate_redis_reconnects_total") > 0

    # backend gone: answered 503, counted as unavailable
    be.stop()
    time.sleep(0.3)
    r = infer(9)
    assert r.status_code == 503
    fams, _ = settled(ngx, "infergate_backend_requests",
                      "infergate_backend_requests_total", 1,
                      result="unavailable")
    assert value(fams, "infergate_backend_requests",
                 "infergate_backend_requests_total",
                 result="unavailable") == 1
