"""
Admission at the boundaries of nginx's request processing: every location
a request reaches (try_files, error_page named and by URI, index,
rewrite ... last, X-Accel-Redirect) applies its own auth, limits and
schema; what already ran with the same configuration is not counted
twice; credentials are stripped wherever the request is proxied;
"satisfy any|all" combine auth with allow/deny and never switch off the
limits or the schema; subrequests (auth_request, mirror) are checked in
the precontent phase.
"""

import json
import re

import pytest
import requests

from conftest import (JSON_CT, QUOTA_TYPE, SCORE_SCHEMA, assert_problem,
                      bearer, make_key)
from redis_fixtures import redis_factory, redis_server  # noqa


ACME_KEY, ACME_LINE = make_key("acme")
PROBLEM = "https://infergate.dev/problems#"

VALID = json.dumps({"user_id": "u1", "amount": 1,
                    "login_time": "2024-03-25T10:00:00Z"})

# a body score.json accepts and this stricter schema refuses
STRICT = json.dumps({
    "type": "object", "required": ["user_id", "currency"],
    "properties": {"currency": {"enum": ["EUR"]}}})

HTTP = """
    infergate_keys @PREFIX@/keys.txt;
    infergate_limit_zone z 1m;
    infergate_limit_zone api 1m;
"""

# One server: a server-level limit (so the handlers run in the first
# location too, the case the old code got wrong) and one protected
# upstream location reached in every way nginx redirects.
SERVER = """
    infergate_limit zone=z rate=1000r/s burst=1000;

    location / {
        root @PREFIX@/html;
        error_page 404 = @api;
    }
    location /tf/ {
        try_files $uri @api;
    }
    location /ep-uri/ {
        root @PREFIX@/html;
        error_page 404 = /api/from-error-page;
    }
    location /ep-rewrite/ {
        root @PREFIX@/html;
        error_page 404 = /rw/x;
    }
    location /rw/ {
        rewrite ^ /api/from-rewrite last;
    }
    location /idx/ {
        root @PREFIX@/html;
        index index.html;
    }
    location = /idx/index.html {
        infergate_auth on;
        @PROXY@
    }
    location /xa/ {
        proxy_pass http://127.0.0.1:@PORT@/xa-upstream/;
    }
    location /xa-upstream/ {
        add_header X-Accel-Redirect /api/from-x-accel always;
        return 204;
    }
    location /xa-named/ {
        proxy_pass http://127.0.0.1:@PORT@/xa-named-upstream/;
    }
    location /xa-named-upstream/ {
        add_header X-Accel-Redirect @api always;
        return 204;
    }
    location /api/ {
        infergate_auth on;
        @PROXY@
    }
    location @api {
        infergate_auth on;
        @PROXY@
    }
"""

FILES = {"keys.txt": ACME_LINE + "\n", "html/idx/index.html": "index\n",
         "html/.keep": ""}

# (path that redirects, path the origin sees, how)
REDIRECTS = [
    ("/missing", "/missing", "error_page 404 = @api"),
    ("/tf/missing", "/tf/missing", "try_files $uri @api"),
    ("/ep-uri/missing", "/api/from-error-page", "error_page 404 = /uri"),
    ("/ep-rewrite/missing", "/api/from-rewrite",
     "error_page, then rewrite ... last"),
    ("/idx/", "/idx/index.html", "index"),
    ("/xa/go", "/api/from-x-accel", "X-Accel-Redirect /uri"),
    ("/xa-named/go", "/xa-named/go", "X-Accel-Redirect @named"),
]


@pytest.fixture(scope="module")
def ngx(module_nginx):
    return module_nginx(http=HTTP, server=SERVER, files=FILES)


@pytest.mark.parametrize("path,seen,how", REDIRECTS,
                         ids=[r[2] for r in REDIRECTS])
def test_redirect_target_requires_its_key(ngx, origin, path, seen, how):
    origin.clear()
    r = requests.get(ngx.url(path))
    assert_problem(r, 401, PROBLEM + "unauthorized")
    assert origin.find(path=seen) == [], \
        f"{how}: a request without a key reached the origin"

    r = requests.get(ngx.url(path), headers=bearer("igk_" + "0" * 32))
    assert_problem(r, 401, PROBLEM + "unauthorized")
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("path,seen,how", REDIRECTS,
                         ids=[r[2] for r in REDIRECTS])
@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_redirect_target_strips_credentials(ngx, origin, path, seen, how,
                                            header):
    origin.clear()
    value = f"Bearer {ACME_KEY}" if header == "Authorization" else ACME_KEY
    r = requests.get(ngx.url(path), headers={header: value})
    assert r.status_code == 200, f"{how}: {r.status_code} {r.text}"
    got = origin.find(path=seen)
    assert len(got) == 1, f"{how}: origin saw {len(got)} requests"
    h = got[0]["headers"]
    assert h.get("Authorization") is None and h.get("X-API-Key") is None, \
        f"{how}: credentials reached the origin: {dict(h)}"


def test_error_page_by_uri_turns_post_into_get(ngx, origin):
    """nginx makes the error_page redirect a GET: still authenticated."""
    origin.clear()
    r = requests.post(ngx.url("/ep-uri/missing"), data=b"{}",
                      headers=JSON_CT)
    assert_problem(r, 401)
    r = requests.post(ngx.url("/ep-uri/missing"), data=b"{}",
                      headers={**JSON_CT, **bearer(ACME_KEY)})
    assert r.status_code == 200, r.text
    assert origin.last("/api/from-error-page")["method"] == "GET"


# --------------------------------------------------------------------------
# limits across a redirect

LIMIT_SERVER = """
    infergate_limit zone=z rate=1/m burst=2;

    location /same/ {
        try_files $uri @same;
    }
    location @same {
        @PROXY@
    }
    location /other/ {
        try_files $uri @other;
    }
    location @other {
        infergate_limit zone=api rate=1r/m burst=0;
        @PROXY@
    }
    location /otherkey/ {
        try_files $uri @otherkey;
    }
    location @otherkey {
        infergate_limit zone=z rate=1r/m burst=0 key=$uri;
        @PROXY@
    }
"""


def test_same_limit_after_redirect_counts_once(start_nginx):
    """The server-level limit runs in /same/ and again in @same (same zone,
    same key): each request is counted once, so burst=2 admits 3."""
    ngx = start_nginx(http=HTTP, server=LIMIT_SERVER.replace("1/m", "1r/m"),
                      files=FILES)
    s = requests.Session()
    codes = [s.get(ngx.url("/same/x")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes


def test_other_limit_after_redirect_is_charged(start_nginx):
    """@other has a limit of its own (zone api, burst 0): the second
    request is refused there, although the server-level limit passed."""
    ngx = start_nginx(http=HTTP, server=LIMIT_SERVER.replace("1/m", "1r/m"),
                      files=FILES)
    s = requests.Session()
    assert s.get(ngx.url("/other/x")).status_code == 200
    r = s.get(ngx.url("/other/x"))
    body = assert_problem(r, 429, QUOTA_TYPE)
    assert body["violated-policies"] == ["api"]


def test_same_zone_other_key_after_redirect_is_charged(start_nginx):
    ngx = start_nginx(http=HTTP, server=LIMIT_SERVER.replace("1/m", "1r/m"),
                      files=FILES)
    s = requests.Session()
    assert s.get(ngx.url("/otherkey/x")).status_code == 200
    assert_problem(s.get(ngx.url("/otherkey/x")), 429, QUOTA_TYPE)
    # another $uri is another key of the same zone
    assert s.get(ngx.url("/otherkey/y")).status_code == 200


def test_redis_limits_across_redirect(start_nginx, redis_server):
    """Cluster-wide limits: the same one after try_files is counted once
    (one EVALSHA per request); another one in the named location is
    charged, and the request resumes after both Redis replies."""
    ngx = start_nginx(http=HTTP + f"""
        infergate_redis r {redis_server.address} timeout=500ms;""",
                      server="""
        infergate_limit zone=rz rate=1r/m burst=2 redis=r fail=closed;
        location /same/ { try_files $uri @same; }
        location @same { @PROXY@ }
        location /other/ { try_files $uri @other; }
        location @other {
            infergate_limit zone=rz2 rate=1r/m burst=0 redis=r fail=closed;
            @PROXY@
        }""", files=FILES)
    import time
    deadline = time.time() + 10
    while requests.get(ngx.url("/health")).status_code == 503:
        assert time.time() < deadline, "Redis never connected"
        time.sleep(0.1)
    # /health has no limit location: it used one of the server's 3
    s = requests.Session()
    redis_server.reset_stats()
    codes = [s.get(ngx.url("/same/x")).status_code for _ in range(3)]
    assert codes == [200, 200, 429], codes
    stats = redis_server.commandstats()
    assert stats.get("evalsha", 0) + stats.get("eval", 0) == 3, stats

    redis_server.client().flushall()
    assert s.get(ngx.url("/other/x")).status_code == 200
    body = assert_problem(s.get(ngx.url("/other/x")), 429, QUOTA_TYPE)
    assert body["violated-policies"] == ["rz2"]


# --------------------------------------------------------------------------
# the body across a redirect

SCHEMA_SERVER = """
    client_body_buffer_size 1k;

    location /v/ {
        infergate_schema @PREFIX@/score.json;
        try_files $uri @strict;
    }
    location @strict {
        infergate_schema @PREFIX@/strict.json;
        @PROXY@
    }
    location /same-schema/ {
        infergate_schema @PREFIX@/score.json;
        try_files $uri @score;
    }
    location @score {
        infergate_schema @PREFIX@/score.json;
        proxy_set_header X-User $infergate_json_user_id;
        @PROXY@
    }
    location /cache-read/ {
        try_files $uri @strict;
    }
"""


@pytest.fixture(scope="module")
def schema_ngx(module_nginx):
    return module_nginx(server=SCHEMA_SERVER, files={
        "score.json": SCORE_SCHEMA.read_text(), "strict.json": STRICT})


def test_body_checked_again_by_another_schema(schema_ngx, origin):
    origin.clear()
    r = requests.post(schema_ngx.url("/v/x"), data=VALID, headers=JSON_CT)
    body = assert_problem(r, 400, PROBLEM + "invalid-body")
    assert any(e["pointer"] == "" or "currency" in e["detail"]
               for e in body["errors"]), body
    assert origin.find(path="/v/x") == []

    ok = json.dumps({"user_id": "u1", "amount": 1, "currency": "EUR",
                     "login_time": "2024-03-25T10:00:00Z"})
    r = requests.post(schema_ngx.url("/v/x"), data=ok, headers=JSON_CT)
    assert r.status_code == 200, r.text
    assert origin.last("/v/x")["body"] == ok.encode()


def test_body_in_temp_file_checked_again(schema_ngx, origin):
    """Larger than client_body_buffer_size: validated again from the
    temp file, and still sent upstream whole."""
    tags = ["t" * 30] * 8
    big = {"user_id": "u1", "amount": 1, "currency": "EUR",
           "login_time": "2024-03-25T10:00:00Z", "tags": tags,
           "device_id": "123e4567-e89b-12d3-a456-426614174000"}
    data = json.dumps(big, indent=200)
    assert len(data) > 2048
    origin.clear()
    r = requests.post(schema_ngx.url("/v/big"), data=data, headers=JSON_CT)
    assert r.status_code == 200, r.text
    assert origin.last("/v/big")["body"] == data.encode()

    bad = dict(big, currency="USD")
    r = requests.post(schema_ngx.url("/v/big"),
                      data=json.dumps(bad, indent=200), headers=JSON_CT)
    assert_problem(r, 400, PROBLEM + "invalid-body")


def test_same_schema_after_redirect(schema_ngx, origin):
    origin.clear()
    r = requests.post(schema_ngx.url("/same-schema/x"), data=VALID,
                      headers=JSON_CT)
    assert r.status_code == 200, r.text
    got = origin.last("/same-schema/x")
    assert got["body"] == VALID.encode()
    assert got["headers"].get("X-User") == "u1"
    r = requests.post(schema_ngx.url("/same-schema/x"), data="{",
                      headers=JSON_CT)
    assert_problem(r, 400, PROBLEM + "malformed-json")


def test_schema_only_in_redirect_target(schema_ngx, origin):
    origin.clear()
    r = requests.post(schema_ngx.url("/cache-read/x"), data=VALID,
                      headers=JSON_CT)
    assert_problem(r, 400, PROBLEM + "invalid-body")
    r = requests.post(schema_ngx.url("/cache-read/x"), data="{}",
                      headers={"Content-Type": "text/plain"})
    assert_problem(r, 415)


# --------------------------------------------------------------------------
# satisfy

SATISFY_SERVER = """
    location /any-allowed/ {
        satisfy any;
        allow 127.0.0.1;
        deny all;
        infergate_auth on;
        infergate_limit zone=z rate=1r/m burst=1;
        infergate_schema @PREFIX@/score.json;
        @PROXY@
    }
    location /any-other/ {
        satisfy any;
        allow 192.0.2.1;
        deny all;
        infergate_auth on;
        infergate_limit zone=api rate=1r/m burst=1;
        @PROXY@
    }
    location /all-allowed/ {
        satisfy all;
        allow 127.0.0.1;
        deny all;
        infergate_auth on;
        @PROXY@
    }
    location /all-denied/ {
        satisfy all;
        allow 192.0.2.1;
        deny all;
        infergate_auth on;
        @PROXY@
    }
"""


@pytest.fixture
def satisfy_ngx(start_nginx):
    return start_nginx(http=HTTP, server=SATISFY_SERVER, files={
        **FILES, "score.json": SCORE_SCHEMA.read_text()})


def test_satisfy_any_allowed_address_still_limited_and_checked(satisfy_ngx,
                                                              origin):
    ngx = satisfy_ngx
    s = requests.Session()
    origin.clear()
    # admitted by address, without a key
    r = s.post(ngx.url("/any-allowed/x"), data=VALID, headers=JSON_CT)
    assert r.status_code == 200, r.text
    assert "WWW-Authenticate" not in r.headers
    # the body is still checked (this one counts: burst 1 → 2 admitted)
    r = s.post(ngx.url("/any-allowed/x"), data='{"user_id": 1}',
               headers=JSON_CT)
    assert_problem(r, 400, PROBLEM + "invalid-body")
    # and the limit still holds
    r = s.post(ngx.url("/any-allowed/x"), data=VALID, headers=JSON_CT)
    assert_problem(r, 429, QUOTA_TYPE)
    assert len(origin.find(path="/any-allowed/x")) == 1


def test_satisfy_any_key_admits_from_other_address(satisfy_ngx, origin):
    ngx = satisfy_ngx
    s = requests.Session()
    origin.clear()
    r = s.get(ngx.url("/any-other/x"), headers=bearer(ACME_KEY))
    assert r.status_code == 200, r.text
    assert origin.last("/any-other/x")["headers"].get("Authorization") \
        is None
    # neither admits: our 401, as problem+json
    r = s.get(ngx.url("/any-other/x"))
    assert_problem(r, 401, PROBLEM + "unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = s.get(ngx.url("/any-other/x"), headers=bearer("igk_" + "1" * 32))
    assert_problem(r, 401)
    # limits apply to the admitted key (burst 1: one more, then 429)
    assert s.get(ngx.url("/any-other/x"),
                 headers=bearer(ACME_KEY)).status_code == 200
    assert_problem(s.get(ngx.url("/any-other/x"), headers=bearer(ACME_KEY)),
                   429, QUOTA_TYPE)


def test_satisfy_all_needs_address_and_key(satisfy_ngx, origin):
    ngx = satisfy_ngx
    s = requests.Session()
    assert_problem(s.get(ngx.url("/all-allowed/x")), 401)
    assert s.get(ngx.url("/all-allowed/x"),
                 headers=bearer(ACME_KEY)).status_code == 200
    # deny refuses before the key is looked at
    r = s.get(ngx.url("/all-denied/x"), headers=bearer(ACME_KEY))
    assert r.status_code == 403, r.text


def test_satisfy_any_with_auth_basic(start_nginx, origin, tmp_path):
    """Two authentication modules under satisfy any: either admits."""
    ngx = start_nginx(http=HTTP, server="""
        location /both/ {
            satisfy any;
            auth_basic "realm";
            auth_basic_user_file @PREFIX@/htpasswd;
            infergate_auth on;
            @PROXY@
        }""", files={**FILES, "htpasswd": "alice:{PLAIN}secret\n"})
    s = requests.Session()
    assert s.get(ngx.url("/both/x"), auth=("alice", "secret")).status_code \
        == 200
    assert s.get(ngx.url("/both/x"), headers=bearer(ACME_KEY)).status_code \
        == 200
    r = s.get(ngx.url("/both/x"))
    assert r.status_code == 401


# --------------------------------------------------------------------------
# subrequests skip the access phase: auth is checked in precontent

SUBREQ_SERVER = """
    location /guarded/ {
        auth_request /ig-auth;
        @PROXY@
    }
    location = /ig-auth {
        internal;
        infergate_auth on;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_pass http://@ORIGIN@/authcheck;
    }
    location /guarded-return/ {
        auth_request /ig-auth-return;
        @PROXY@
    }
    location = /ig-auth-return {
        internal;
        infergate_auth on;
        return 204;
    }
    location /keyed-auth-request/ {
        infergate_auth on;
        auth_request /ext-auth;
        @PROXY@
    }
    location = /ext-auth {
        internal;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_pass http://@ORIGIN@/ext-auth;
    }
    location /mirrored/ {
        mirror /ig-mirror;
        @PROXY@
    }
    location = /ig-mirror {
        internal;
        infergate_auth on;
        proxy_pass http://@ORIGIN@/mirror-copy;
    }
"""


def test_auth_request_subrequest_checks_key(start_nginx, origin):
    ngx = start_nginx(http=HTTP, server=SUBREQ_SERVER, files=FILES)
    origin.clear()
    r = requests.get(ngx.url("/guarded/x"))
    assert r.status_code == 401, r.text
    assert origin.find(path="/guarded/x") == []
    assert origin.find(path="/authcheck") == []

    r = requests.get(ngx.url("/guarded/x"), headers=bearer(ACME_KEY))
    assert r.status_code == 200, r.text
    # the subrequest's copy lost the key; the main request is not ours
    assert origin.last("/authcheck")["headers"].get("Authorization") is None


def test_auth_request_target_with_return(start_nginx, origin):
    """The check runs in the subrequest's rewrite phase, before the
    location's own "return 204" could answer."""
    ngx = start_nginx(http=HTTP, server=SUBREQ_SERVER, files=FILES)
    origin.clear()
    assert requests.get(ngx.url("/guarded-return/x")).status_code == 401
    r = requests.get(ngx.url("/guarded-return/x"),
                     headers=bearer("igk_" + "2" * 32))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers.get("WWW-Authenticate", "")
    assert origin.find(path="/guarded-return/x") == []
    r = requests.get(ngx.url("/guarded-return/x"), headers=bearer(ACME_KEY))
    assert r.status_code == 200, r.text


def test_key_not_sent_to_auth_request_server(start_nginx, origin):
    """In a location with infergate_auth on, a subrequest into a location
    without it (an external auth_request server) gets no key of ours;
    a credential that is not ours (no such key) still goes through."""
    ngx = start_nginx(http=HTTP, server=SUBREQ_SERVER, files=FILES)
    origin.clear()
    r = requests.get(ngx.url("/keyed-auth-request/x"),
                     headers=bearer(ACME_KEY))
    assert r.status_code == 200, r.text
    ext = origin.last("/ext-auth")["headers"]
    assert ext.get("Authorization") is None, dict(ext)
    main = origin.last("/keyed-auth-request/x")["headers"]
    assert main.get("Authorization") is None, dict(main)

    origin.clear()
    r = requests.get(ngx.url("/keyed-auth-request/x"),
                     headers={"Authorization": "Bearer not-ours"})
    assert_problem(r, 401)
    assert origin.last("/ext-auth")["headers"]["Authorization"] == \
        "Bearer not-ours"


def test_mirror_subrequest_checks_key(start_nginx, origin):
    import time
    ngx = start_nginx(http=HTTP, server=SUBREQ_SERVER, files=FILES)
    origin.clear()
    r = requests.get(ngx.url("/mirrored/x"))
    assert r.status_code == 200, r.text
    r = requests.get(ngx.url("/mirrored/y"), headers=bearer(ACME_KEY))
    assert r.status_code == 200, r.text
    deadline = time.time() + 5
    while not origin.find(path="/mirror-copy") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    copies = origin.find(path="/mirror-copy")
    assert len(copies) == 1, copies
    assert copies[0]["headers"].get("Authorization") is None
    # the main request keeps its own headers (its location has no auth)
    assert origin.last("/mirrored/y")["headers"]["Authorization"] == \
        f"Bearer {ACME_KEY}"
