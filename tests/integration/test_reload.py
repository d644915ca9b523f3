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
