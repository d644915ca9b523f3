"""nginx -s reload: no errors under load, limiter state kept, keys file
re-read, a refused reload keeps the old configuration."""

import json
import threading
import time

import requests

from conftest import SCORE_SCHEMA, assert_problem, bearer, make_key


VALID = json.dumps({"user_id": "u1", "amount": 1,
                    "login_time": "2024-03-25T10:00:00Z"}).encode()


def test_reload_under_load(start_nginx):
    key, line = make_key("acme")
    ngx = start_nginx(
        http="infergate_keys keys.txt; infergate_limit_zone z 1m;",
        server="""
        location / {
            infergate_auth on;
            infergate_limit zone=z rate=100000r/s burst=10000;
            infergate_schema score.json;
            @PROXY@
        }""",
        files={"keys.txt": line + "\n",
               "score.json": SCORE_SCHEMA.read_text()})
    stop = threading.Event()
    statuses, errors = [], []

    # one connection per request: an idle keep-alive connection closed by
    # a retiring worker races with the client's next request (plain HTTP
    # keep-alive behaviour, not something the module can prevent)
    def load():
        headers = {**bearer(key), "Content-Type": "application/json",
                   "Connection": "close"}
        while not stop.is_set():
            try:
                r = requests.post(ngx.url("/v1/score"), data=VALID,
                                  headers=headers, timeout=10)
                statuses.append(r.status_code)
            except requests.RequestException as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        for _ in range(3):
            ngx.reload()
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, f"{len(errors)} connection errors, e.g. {errors[:3]}"
    bad = {s for s in statuses if s not in (200, 429)}
    assert not bad, f"unexpected statuses {bad}"
    assert statuses.count(200) > 50, f"only {statuses.count(200)} 200s"


def test_limiter_state_survives_reload(start_nginx):
    ngx = start_nginx(http="infergate_limit_zone z 1m;", server="""
        location / { infergate_limit zone=z rate=1r/m burst=1; @PROXY@ }""")
    s = requests.Session()
    assert [s.get(ngx.url("/")).status_code for _ in range(3)] == \
        [200, 200, 429]
    for i in range(3):
        ngx.reload()
        r = requests.get(ngx.url("/"))
        assert r.status_code == 429, \
            f"limiter state lost by reload #{i + 1}: {r.status_code}"
        assert 'r=0' in r.headers.get("RateLimit", ""), r.headers


def test_keys_file_reloaded(start_nginx):
    k1, l1 = make_key("acme")
    k2, l2 = make_key("globex")
    ngx = start_nginx(http="infergate_keys keys.txt;", server="""
        location / { infergate_auth on;
                     proxy_set_header X-Tenant $infergate_tenant;
                     @PROXY@ }""", files={"keys.txt": l1 + "\n"})
    assert requests.get(ngx.url("/"), headers=bearer(k1)).status_code == 200
    assert_problem(requests.get(ngx.url("/"), headers=bearer(k2)), 401)

    ngx.write("keys.txt", l2 + "\n")
    ngx.reload()
    assert requests.get(ngx.url("/"), headers=bearer(k2)).status_code == 200
    r = requests.get(ngx.url("/"), headers=bearer(k1))
    assert_problem(r, 401)
    assert 'error="invalid_token"' in r.headers.get("WWW-Authenticate", "")


def test_refused_reload_keeps_old_config(start_nginx):
    k1, l1 = make_key("acme")
    ngx = start_nginx(http="infergate_keys keys.txt;", server="""
        location / { infergate_auth on; @PROXY@ }""",
        files={"keys.txt": l1 + "\n"})
    ngx.write("keys.txt", l1 + "\nnot-a-digest tenant\n")
    log = ngx.reload_expect_failure()
    assert "keys.txt:2" in log, log
    assert requests.get(ngx.url("/"), headers=bearer(k1)).status_code == 200


def test_failed_reload_then_respawned_workers(start_nginx, tmp_path):
    """Issue 11 §6: metrics.c kept the zone pointer and tenant count, and
    metrics.c/audit.c their variable indexes, in statics written while
    parsing.  A reload that fails after parsing (here: a port already in
    use) freed that configuration, and every worker respawned after a
    kill -9 used the freed zone struct on its first request (heap
    use-after-free under SANITIZE=1).  Now the state lives in the main
    conf of the cycle the worker runs."""
    import os
    import signal
    import socket
    import subprocess
    import re

    from conftest import BUILD, free_port

    tool = BUILD / "infergate-audit"
    out = subprocess.run([str(tool), "keygen", "k1"], capture_output=True,
                         text=True, check=True)
    akey = tmp_path / "audit.key"
    akey.write_text(out.stdout)
    os.chmod(akey, 0o600)

    key, line = make_key("acme")
    ngx = start_nginx(workers=2, http=f"""
        infergate_keys @PREFIX@/keys.txt;
        infergate_metrics_tenants 4;
        infergate_audit @PREFIX@/audit.log key={akey} key_id=k1
                        flush=100ms;
        """, server="""
        location /auth { infergate_auth on; @PROXY@ }
        location = /metrics { infergate_metrics; infergate_audit off; }
        """, files={"keys.txt": line + "\n"})
    assert requests.get(ngx.url("/auth"), headers=bearer(key)) \
        .status_code == 200

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        conf = (ngx.prefix / "nginx.conf").read_text()
        good = conf
        # a different tenant bound and more variables, and a second listen
        # that cannot bind: the master parses all of it, then gives up
        conf = conf.replace("infergate_metrics_tenants 4;",
                            "infergate_metrics_tenants 9;\n"
                            "    map $uri $ig_a { default 1; }\n"
                            "    map $uri $ig_b { default 2; }")
        conf = conf.replace(f"listen 127.0.0.1:{ngx.port};",
                            f"listen 127.0.0.1:{ngx.port};\n"
                            f"        listen 127.0.0.1:{port};")
        assert conf != good
        (ngx.prefix / "nginx.conf").write_text(conf)
        offset = len(ngx.error_log)
        old = set(ngx.worker_pids())
        os.kill(ngx.master, signal.SIGHUP)
        deadline = time.time() + 20
        while "still could not bind" not in ngx.error_log[offset:]:
            assert time.time() < deadline, ngx.error_log[offset:]
            time.sleep(0.05)
        time.sleep(0.3)
        assert set(ngx.worker_pids()) == old, "the reload was not refused"
        ngx.allowed_log.append(r".*\[emerg\].*bind\(\) to .* failed.*")
        ngx.allowed_log.append(r".*\[emerg\].*still could not bind.*")
        ngx.allowed_log.append(r".*exited on signal 9.*")
        (ngx.prefix / "nginx.conf").write_text(good)

        for pid in old:
            os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 20
        while True:
            cur = set(ngx.worker_pids())
            if len(cur) >= 2 and not (cur & old):
                break
            assert time.time() < deadline, "workers not respawned"
            time.sleep(0.05)
        time.sleep(0.2)

        for _ in range(6):
            s = requests.Session()
            r = s.get(ngx.url("/auth"), headers=bearer(key))
            assert r.status_code == 200
            m = s.get(ngx.url("/metrics"))
            assert m.status_code == 200
            assert 'tenant="acme"' in m.text, m.text[:2000]
        assert set(ngx.worker_pids()) - old == cur, \
            "a respawned worker died:\n" + ngx.error_log[-3000:]
        crashed = re.findall(r".*exited on signal (?!9\b).*",
                             ngx.error_log[offset:])
        assert not crashed, crashed
    finally:
        busy.close()
