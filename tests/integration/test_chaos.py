"""
The chaos suite (`make chaos`; CI runs it): under steady load from local
client threads, with bounded duration, things break on purpose.  Each case
asserts no worker crash (the harness fails any test whose error.log has
"exited on signal", an alert or a sanitizer report), no hung request
(every request answered within its client timeout), only the expected
statuses, and one verifiable audit record for every answered request.
"""

import os
import socket
import subprocess
import time

import pytest

from chaos_load import Load
from conftest import BUILD, JSON_CT, bearer, make_key, nginx_env

pytestmark = pytest.mark.chaos

AUDIT_TOOL = BUILD / "infergate-audit"

SCHEMA = '{"type":"object","required":["user_id"],' \
         '"properties":{"user_id":{"type":"string"}}}'
BODY = '{"user_id":"u1"}'


def audit_key(tmp_path):
    out = subprocess.run([str(AUDIT_TOOL), "keygen", "k1"],
                         capture_output=True, text=True, check=True)
    path = tmp_path / "audit.key"
    path.write_text(out.stdout)
    os.chmod(path, 0o600)
    return path


def audit_records(*paths):
    import json
    out = []
    for p in paths:
        if p.exists():
            for line in p.read_text().splitlines():
                out.append(json.loads(line))
    return out


def verify(key, *paths):
    r = subprocess.run([str(AUDIT_TOOL), "verify", "--key", str(key),
                        *[str(p) for p in paths]],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def start(start_nginx, tmp_path, extra_server="", body_timeout="60s"):
    key = audit_key(tmp_path)
    k, line = make_key("acme")
    ngx = start_nginx(workers=2, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_limit_zone z 1m;
        infergate_audit @PREFIX@/audit.log key={key} key_id=k1
                        flush=100ms;
        client_body_timeout {body_timeout};
    """, server=f"""
        location /score {{
            infergate_auth on;
            infergate_limit zone=z rate=100000r/s burst=100000;
            infergate_schema @PREFIX@/s.json;
            @PROXY@
        }}
        {extra_server}
    """, files={"keys.txt": line + "\n", "s.json": SCHEMA})
    return ngx, k, key


def post_score(ngx, k):
    headers = {**JSON_CT, **bearer(k)}

    def issue(s, timeout):
        return s.post(ngx.url("/score"), data=BODY, headers=headers,
                      timeout=timeout)
    return issue


def assert_audited(ngx, key, load, files=None, lost_ok=False):
    """Every answered request has exactly one record, and the files
    verify (records stated lost allowed when lost_ok)."""
    files = files or [ngx.prefix / "audit.log"]
    recs = audit_records(*files)
    ids = {}
    for r in recs:
        eid = r.get("event", {}).get("id")
        if eid:
            ids[eid] = ids.get(eid, 0) + 1
    answered = load.answered_ids()
    missing = [i for i in answered if i not in ids]
    dup = [i for i, n in ids.items() if n > 1]
    assert not dup, dup[:5]
    rc, out = verify(key, *files)
    if not lost_ok:
        assert not missing, (len(missing), len(answered))
        assert rc == 0, out
    return missing, out


def test_reload_every_second_under_load(start_nginx, tmp_path):
    ngx, k, key = start(start_nginx, tmp_path)

    with Load(post_score(ngx, k), threads=4, timeout=5) as load:
        for _ in range(5):
            time.sleep(1)
            ngx.reload()
        time.sleep(0.5)

    ngx.stop()

    st = load.statuses()
    assert set(st) == {200}, (st, load.errors()[:5])
    assert load.max_latency() < 5
    assert sum(st.values()) > 100
    assert_audited(ngx, key, load)


def test_audit_disk_unwritable_keeps_serving(start_nginx, tmp_path):
    ngx, k, key = start(start_nginx, tmp_path)
    log = ngx.prefix / "audit.log"
    ngx.allowed_log.append(r".*infergate_audit: write to .* failed.*")

    with Load(post_score(ngx, k), threads=3, timeout=5) as load:
        time.sleep(0.8)
        # the disk "fills": the path now leads to /dev/full, every write
        # fails with ENOSPC after the reopen
        os.rename(log, ngx.prefix / "audit.log.1")
        os.symlink("/dev/full", log)
        subprocess.run(ngx._cmd("-s", "reopen"), check=True,
                       env=nginx_env(ngx.prefix), capture_output=True)
        time.sleep(1.5)
        # and recovers
        os.unlink(log)
        subprocess.run(ngx._cmd("-s", "reopen"), check=True,
                       env=nginx_env(ngx.prefix), capture_output=True)
        time.sleep(1.0)

    ngx.stop()

    st = load.statuses()
    assert set(st) == {200}, (st, load.errors()[:5])
    assert load.max_latency() < 5

    errors = [ln for ln in ngx.error_log.splitlines()
              if "infergate_audit: write to" in ln]
    assert errors, "the write failure was not logged"
    # logged at most once a second by each worker (the outage lasted about
    # 1.5 s, so at most 3 distinct seconds each)
    import re
    per = {}
    for ln in errors:
        pid = re.search(r"\[error\] (\d+)#", ln).group(1)
        sec = ln[:19]
        per.setdefault(pid, []).append(sec)
    for pid, secs in per.items():
        assert len(secs) == len(set(secs)), secs       # once a second
        assert len(secs) <= 3, secs

    files = [ngx.prefix / "audit.log.1", log]
    missing, out = assert_audited(ngx, key, load, files, lost_ok=True)
    # what is missing is exactly what the end records say was lost
    recs = audit_records(*files)
    lost = sum(r["infergate"].get("lost", 0) for r in recs
               if r["event"]["action"] == "chain_end")
    assert lost >= len(missing) > 0, (lost, len(missing))
    assert "records lost" in out


def test_slow_clients_trickling_bodies(start_nginx, tmp_path):
    ngx, k, key = start(start_nginx, tmp_path, body_timeout="1s")

    def trickle():
        s = socket.create_connection(("127.0.0.1", ngx.port))
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + k.encode() + b"\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"user_id\":")
        return s

    slow = [trickle() for _ in range(20)]
    t0 = time.monotonic()

    with Load(post_score(ngx, k), threads=3, timeout=5) as load:
        # a byte every 0.3 s: each read resets nothing past the timeout
        # of 1 s between reads, so they stay open until they stop
        for _ in range(4):
            for s in slow:
                s.sendall(b" ")
            time.sleep(0.3)
        time.sleep(2.0)

    # the trickling clients were cut off by client_body_timeout, with an
    # answer or a close, and not later than a few seconds
    for s in slow:
        s.settimeout(5)
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:80]
        s.close()
    assert time.monotonic() - t0 < 15

    ngx.stop()

    st = load.statuses()
    assert set(st) == {200}, (st, load.errors()[:5])
    assert load.max_latency() < 2
    assert_audited(ngx, key, load)

    # the cut-off requests are in the trail too
    recs = audit_records(ngx.prefix / "audit.log")
    assert sum(1 for r in recs
               if r.get("http", {}).get("response", {})
                   .get("status_code") == 408) >= 1


# -- Redis and the backend killed and restarted -------------------------------

from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa
from redis_fixtures import redis_factory, redis_server  # noqa


def test_redis_killed_and_restarted_under_load(start_nginx, tmp_path,
                                               redis_server):
    """The cache fails open (BYPASS, the origin answers), cluster limits
    with fail=open admit; nothing 5xx, nothing slower than the Redis
    timeout plus the origin; the connection comes back by itself."""
    key = audit_key(tmp_path)
    k, line = make_key("acme")
    ngx = start_nginx(workers=2, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_limit_zone z 1m;
        infergate_redis r {redis_server.address} timeout=100ms
                        connect_timeout=100ms;
        infergate_audit @PREFIX@/audit.log key={key} key_id=k1
                        flush=100ms;
    """, server="""
        location /score {
            infergate_auth on;
            infergate_limit zone=z rate=100000r/s burst=100000
                            redis=r fail=open;
            infergate_schema @PREFIX@/s.json;
            infergate_cache redis=r ttl=60s methods=POST;
            @PROXY@
        }
    """, files={"keys.txt": line + "\n", "s.json": SCHEMA})
    ngx.allowed_log.append(r".*infergate_redis.*")

    cache_states = {}

    def issue(s, timeout):
        r = s.post(ngx.url("/score"), data=BODY,
                   headers={**JSON_CT, **bearer(k)}, timeout=timeout)
        st = r.headers.get("X-Cache-Status", "-")
        cache_states[st] = cache_states.get(st, 0) + 1
        return r

    with Load(issue, threads=3, timeout=5) as load:
        time.sleep(1.0)
        redis_server.stop()
        time.sleep(1.5)
        redis_server.start()
        time.sleep(3.0)
        hits_before = cache_states.get("HIT", 0)
        time.sleep(1.0)
        hits_after = cache_states.get("HIT", 0)

    ngx.stop()

    st = load.statuses()
    assert set(st) == {200}, (st, load.errors()[:5])
    # no request waited much longer than the Redis timeout plus the origin
    assert load.max_latency() < 1.0, load.max_latency()
    assert cache_states.get("BYPASS", 0) > 0, cache_states
    # back by itself: hits again after the restart
    assert hits_after > hits_before, cache_states
    assert_audited(ngx, key, load)


def test_backend_killed_and_restarted_under_load(start_nginx, tmp_path,
                                                 backend_proc):
    """kill -9 of the backend: in-flight and new requests get a fast 503
    with Retry-After, none hangs; a restarted backend is picked up without
    an nginx reload."""
    be = backend_proc("id=builtin:identity:3")
    key = audit_key(tmp_path)
    k, line = make_key("acme")
    ngx = start_nginx(workers=2, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_audit @PREFIX@/audit.log key={key} key_id=k1
                        flush=100ms;
        {infer_http(be, "timeout=2s")}
    """, server="""
        location /v2 {
            infergate_auth on;
            infergate_infer backend=be;
        }
    """, files={"keys.txt": line + "\n"})
    wait_connected(ngx, 2)

    body = ('{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
            '"data":[1,2,3]}]}')
    retry_after = []

    def issue(s, timeout):
        r = s.post(ngx.url("/v2/models/id/infer"), data=body,
                   headers={**JSON_CT, **bearer(k)}, timeout=timeout)
        if r.status_code == 503:
            retry_after.append(r.headers.get("Retry-After"))
        return r

    with Load(issue, threads=4, timeout=5) as load:
        time.sleep(1.0)
        be.kill9()
        t_kill = time.monotonic()
        time.sleep(1.0)
        be.start()
        t_back = time.monotonic()
        time.sleep(2.5)

    ngx.stop()

    st = load.statuses()
    assert set(st) <= {200, 503}, (st, load.errors()[:5])
    assert st.get(503, 0) > 0 and st.get(200, 0) > 0, st
    assert all(v for v in retry_after), "503 without Retry-After"
    # every 503 was fast: failed at once, never after a timeout
    slow = [o for o in load.outcomes if o.status == 503 and o.latency > 0.1]
    assert not slow, [o.latency for o in slow][:5]
    # traffic resumed after the restart, without a reload
    after = [o for o in load.outcomes if o.t > t_back + 1.0]
    assert after and all(o.status == 200 for o in after), \
        {o.status for o in after}
    assert max(o.latency for o in load.outcomes) < 2.5
    assert_audited(ngx, key, load)
    assert t_back - t_kill >= 1.0


def test_pool_member_killed_and_restarted_under_load(start_nginx, tmp_path,
                                                     backend_proc):
    """A pool of two backends, one killed (kill -9) under load: every
    request answered 200 (the in-flight ones retried once on the other),
    none hangs; the restarted member is picked up again (slow start)."""
    q = ["--queue-timeout-us", "5000000"]
    a = backend_proc("id=builtin:sleep:3:5000", extra=q)
    b = backend_proc("id=builtin:sleep:3:5000", extra=q)
    key = audit_key(tmp_path)
    k, line = make_key("acme")
    ngx = start_nginx(workers=2, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_audit @PREFIX@/audit.log key={key} key_id=k1
                        flush=100ms;
        infergate_backend be unix:{a.sock} unix:{b.sock} timeout=2s
                          slow_start=1s;
    """, server="""
        location /v2 {
            infergate_auth on;
            infergate_infer backend=be;
        }
    """, files={"keys.txt": line + "\n"})
    wait_connected(ngx, 4)

    body = ('{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
            '"data":[1,2,3]}]}')

    def issue(s, timeout):
        return s.post(ngx.url("/v2/models/id/infer"), data=body,
                      headers={**JSON_CT, **bearer(k)}, timeout=timeout)

    with Load(issue, threads=6, timeout=5) as load:
        time.sleep(1.0)
        since = len(ngx.error_log)
        b.kill9()
        time.sleep(1.0)
        b.start()
        wait_connected(ngx, 2, since=since)
        time.sleep(2.0)

    ngx.stop()

    st = load.statuses()
    assert set(st) == {200}, (st, load.errors()[:5])
    assert max(o.latency for o in load.outcomes) < 2.5
    assert_audited(ngx, key, load)



def test_backend_killed_warm_cache_breaker_under_load(start_nginx, tmp_path,
                                                      backend_proc,
                                                      redis_server):
    """kill -9 of the backend behind a breaker, with a warm cache: the
    cached bodies keep being answered (STALE), the others get a fast 503
    with Retry-After (the breaker opens), and after the restart the
    breaker's probes close it and everything is 200 again."""
    be = backend_proc("id=builtin:identity:3")
    key = audit_key(tmp_path)
    k, line = make_key("acme")
    ngx = start_nginx(workers=2, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_redis r {redis_server.address} timeout=200ms;
        infergate_breaker_zone brk 1m;
        infergate_audit @PREFIX@/audit.log key={key} key_id=k1
                        flush=100ms;
        {infer_http(be, "timeout=2s")}
    """, server="""
        location /v2 {
            infergate_auth on;
            infergate_cache redis=r ttl=1s stale_if_error=60s methods=POST;
            infergate_breaker zone=brk min_requests=10 window=2s open=500ms
                              max_open=1s half_open=2;
            infergate_infer backend=be;
        }
    """, files={"keys.txt": line + "\n"})
    wait_connected(ngx, 2)

    def body(i):
        return ('{"inputs":[{"name":"input","shape":[1,3],'
                f'"datatype":"FP32","data":[{i},2,3]}}]}}')

    cached = {}
    seq = [0]
    by_kind = {"cached": {}, "other": {}}

    def issue(s, timeout):
        seq[0] += 1
        n = seq[0]
        warm = n % 2 == 0
        i = n % 5 if warm else 1000 + n
        r = s.post(ngx.url("/v2/models/id/infer"), data=body(i),
                   headers={**JSON_CT, **bearer(k)}, timeout=timeout)
        kind = "cached" if warm and i in cached else "other"
        st = (r.status_code, r.headers.get("X-Cache-Status"),
              bool(r.headers.get("Retry-After")) if r.status_code == 503
              else None)
        by_kind[kind][st] = by_kind[kind].get(st, 0) + 1
        if warm and r.status_code == 200:
            cached[i] = True
        return r

    with Load(issue, threads=4, timeout=5) as load:
        time.sleep(1.5)
        assert len(cached) == 5
        be.kill9()
        t_kill = time.monotonic()
        time.sleep(2.0)
        be.start()
        t_back = time.monotonic()
        time.sleep(3.0)

    ngx.stop()

    st = load.statuses()
    assert set(st) <= {200, 503}, (st, load.errors()[:5])
    # the cached bodies were always answered
    assert all(s == 200 for s, _, _ in by_kind["cached"]), by_kind
    assert any(c == "STALE" for _, c, _ in by_kind["cached"]), by_kind
    # the others: 503 with Retry-After, all fast (a cache lookup in Redis
    # comes first: a looser bound than without a cache)
    assert all(ra for s, _, ra in by_kind["other"] if s == 503), by_kind
    slow = [o for o in load.outcomes if o.status == 503 and o.latency > 0.3]
    assert not slow, [o.latency for o in slow][:5]
    after = [o for o in load.outcomes if o.t > t_back + 2.0]
    assert after and all(o.status == 200 for o in after), \
        {o.status for o in after}
    assert "infergate_breaker: \"id\" open for" in ngx.error_log
    assert t_back - t_kill >= 2.0
    assert_audited(ngx, key, load)
