"""Order of the checks: auth (401/403), then limit (429), then body
(415/400)."""

import json

import requests

from conftest import (QUOTA_TYPE, SCORE_SCHEMA, assert_problem, bearer,
                      make_key)


VALID = json.dumps({"user_id": "u1", "amount": 1,
                    "login_time": "2024-03-25T10:00:00Z"}).encode()
INVALID = json.dumps({"user_id": 1, "amount": -1}).encode()
MALFORMED = b'{"user_id": '
DEEP = b"[" * 10000 + b"]" * 10000


def test_order_auth_limit_body(start_nginx, origin):
    acme, la = make_key("acme")
    globex, lg = make_key("globex", "models=credit-risk rate=1r/m burst=0")
    ngx = start_nginx(
        http="infergate_keys keys.txt; infergate_limit_zone z 1m;",
        server="""
        location / {
            infergate_auth on;
            infergate_limit zone=z rate=1r/m burst=2;
            infergate_schema score.json;
            @PROXY@
        }""",
        files={"keys.txt": f"{la}\n{lg}\n",
               "score.json": SCORE_SCHEMA.read_text()})
    s = requests.Session()
    ct = {"Content-Type": "application/json"}
    txt = {"Content-Type": "text/plain"}

    # unauthenticated + bad body / bad media type -> 401
    for body, h in ((INVALID, ct), (MALFORMED, ct), (VALID, txt),
                    (b"", ct), (DEEP, ct)):
        assert_problem(s.post(ngx.url("/v1/score"), data=body, headers=h),
                       401)

    # forbidden model + bad body -> 403, and 403s consume no quota
    for _ in range(3):
        r = s.post(ngx.url("/v2/models/other/infer"), data=MALFORMED,
                   headers={**ct, **bearer(globex)})
        assert_problem(r, 403)
    r = s.post(ngx.url("/v2/models/credit-risk/infer"), data=VALID,
               headers={**ct, **bearer(globex)})
    assert r.status_code == 200, \
        f"403s consumed globex's quota (burst 0): {r.status_code} {r.text}"

    # acme: 3 admissible at once.  Body errors come after the limit, so
    # they consume quota; then even a hostile body gets 429.
    h = {**ct, **bearer(acme)}
    assert_problem(s.post(ngx.url("/v1/score"), data=INVALID, headers=h),
                   400)
    assert_problem(s.post(ngx.url("/v1/score"), data=VALID,
                          headers={**txt, **bearer(acme)}), 415)
    r = s.post(ngx.url("/v1/score"), data=VALID, headers=h)
    assert r.status_code == 200, r.text
    origin.clear()
    for body, hh in ((MALFORMED, h), (INVALID, h), (DEEP, h), (b"", h),
                     (VALID, {**txt, **bearer(acme)}), (VALID, h)):
        r = s.post(ngx.url("/v1/score"), data=body, headers=hh)
        assert_problem(r, 429, QUOTA_TYPE)
        assert "errors" not in r.json()
    assert not origin.find()


def test_limit_before_body_on_401_free_location(start_nginx):
    ngx = start_nginx(http="infergate_limit_zone z 1m;", server="""
        location / {
            infergate_limit zone=z rate=1r/m;
            infergate_schema any.json;
            @PROXY@
        }""", files={"any.json": '{"type": "object"}'})
    s = requests.Session()
    ct = {"Content-Type": "application/json"}
    assert s.post(ngx.url("/"), data=b"{}", headers=ct).status_code == 200
    assert_problem(s.post(ngx.url("/"), data=b"{oops", headers=ct), 429,
                   QUOTA_TYPE)
    assert_problem(s.post(ngx.url("/"), data=b"{}",
                          headers={"Content-Type": "text/plain"}), 429,
                   QUOTA_TYPE)


def test_refused_access_consumes_no_quota(start_nginx):
    """Limits run after access (precontent phase): a 401 under either
    "satisfy", or a deny, charges nothing."""
    acme, la = make_key("acme")
    ngx = start_nginx(
        http="infergate_keys keys.txt; infergate_limit_zone z 1m;",
        server="""
        location /any/ {
            satisfy any;
            allow 192.0.2.1;
            deny all;
            infergate_auth on;
            infergate_limit zone=z rate=1r/m burst=0 key=all;
            @PROXY@
        }
        location /all/ {
            deny all;
            infergate_auth on;
            infergate_limit zone=z rate=1r/m burst=0 key=all;
            @PROXY@
        }""",
        files={"keys.txt": f"{la}\n"})
    s = requests.Session()
    for _ in range(3):
        assert_problem(s.get(ngx.url("/any/x")), 401)
        assert s.get(ngx.url("/all/x"), headers=bearer(acme)).status_code \
            == 403
    # the one admission of key=all is still there
    assert s.get(ngx.url("/any/x"), headers=bearer(acme)).status_code == 200
    assert_problem(s.get(ngx.url("/any/x"), headers=bearer(acme)), 429,
                   QUOTA_TYPE)
