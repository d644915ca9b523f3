"""API keys: infergate_keys, infergate_auth, infergate_model, the
infergate-keys tool, and what is (not) forwarded upstream."""

import hashlib
import re
import subprocess

import pytest
import requests

from conftest import (KEYS_TOOL, assert_problem, bearer, make_key)


ACME_KEY, ACME_LINE = make_key("acme")
GLOBEX_KEY, GLOBEX_LINE = make_key("globex", "models=credit-risk,fraud")
OTHER_KEY, _ = make_key("nobody")          # never written to the file

KEYS = f"""# tenants
{ACME_LINE}

   # an indented comment, then a blank line and CRLF
{GLOBEX_LINE}\r
"""

SERVER = """
location / {
    infergate_auth on;
    proxy_set_header X-Tenant $infergate_tenant;
    proxy_set_header X-Model $infergate_model;
    @PROXY@
}
location /open/ {
    @PROXY@
}
location /by-header/ {
    infergate_auth on;
    infergate_model $http_x_want_model;
    proxy_set_header X-Model $infergate_model;
    @PROXY@
}
"""


@pytest.fixture(scope="module")
def ngx(module_nginx):
    return module_nginx(http="infergate_keys keys.txt;", server=SERVER,
                        files={"keys.txt": KEYS})


def test_missing_key_401(ngx):
    r = requests.post(ngx.url("/v1/score"), json={"a": 1})
    body = assert_problem(r, 401)
    assert body["type"] == "https://infergate.dev/problems#unauthorized"
    www = r.headers.get("WWW-Authenticate", "")
    assert www.startswith("Bearer"), www
    assert 'realm="infergate"' in www, www
    # RFC 6750 3.1: no error code when the request had no credentials
    assert "invalid_token" not in www, www


def test_unknown_key_401_invalid_token(ngx):
    for headers in (bearer(OTHER_KEY), {"X-API-Key": OTHER_KEY}):
        r = requests.get(ngx.url("/v1/score"), headers=headers)
        body = assert_problem(r, 401)
        assert body["type"] == "https://infergate.dev/problems#unauthorized"
        www = r.headers.get("WWW-Authenticate", "")
        assert www.startswith("Bearer"), www
        assert 'realm="infergate"' in www, www
        assert 'error="invalid_token"' in www, www


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer " + "A" * 6000},
    {"X-API-Key": ""},
    {"X-API-Key": "igk_\x7f\x01"},
    {"Authorization": "Bearer igk_\u00e9\u00e8".encode("utf-8")},
])
def test_garbage_credentials_401_not_500(ngx, headers):
    r = requests.get(ngx.url("/v1/score"), headers=headers)
    assert_problem(r, 401)
    assert 'realm="infergate"' in r.headers.get("WWW-Authenticate", "")


def test_bearer_and_x_api_key_accepted_and_not_forwarded(ngx, origin):
    for path, headers in (("/v1/score?h=auth", bearer(ACME_KEY)),
                          ("/v1/score?h=xapi", {"X-API-Key": ACME_KEY})):
        r = requests.post(ngx.url(path), headers=headers, json={"x": 1})
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.json() == {"ok": True}
        up = origin.last(path)
        assert up["headers"].get("Authorization") is None, \
            "Authorization was forwarded upstream"
        assert up["headers"].get("X-API-Key") is None, \
            "X-API-Key was forwarded upstream"
        assert up["headers"].get("X-Tenant") == "acme"


def test_crlf_line_key_works(ngx, origin):
    r = requests.get(ngx.url("/v1/score?crlf"), headers=bearer(GLOBEX_KEY))
    assert r.status_code == 200, r.text
    assert origin.last("/v1/score?crlf")["headers"]["X-Tenant"] == "globex"


def test_auth_off_location_needs_no_key(ngx, origin):
    r = requests.get(ngx.url("/open/x"), headers={"X-API-Key": "whatever"})
    assert r.status_code == 200
    # auth is off here: nothing is stripped
    assert origin.last("/open/x")["headers"].get("X-API-Key") == "whatever"


@pytest.mark.parametrize("path,status", [
    ("/v2/models/credit-risk/infer", 200),
    ("/v2/models/credit-risk", 200),
    ("/v2/models/fraud/ready", 200),
    ("/v2/models/x/infer", 403),
    ("/v2/models/x", 403),
    ("/v2/models/credit/infer", 403),          # prefix of an allowed name
    ("/v2/models/credit-risk-2/infer", 403),   # extension of an allowed name
    ("/v1/score", 200),                        # no model: no check
])
def test_model_check_by_uri(ngx, origin, path, status):
    r = requests.post(ngx.url(path), headers=bearer(GLOBEX_KEY),
                      json={"x": 1})
    if status == 403:
        body = assert_problem(r, 403)
        assert body["type"] == "https://infergate.dev/problems#forbidden"
    else:
        assert r.status_code == 200, (path, r.status_code, r.text)


def test_tenant_without_models_may_use_any_model(ngx, origin):
    r = requests.post(ngx.url("/v2/models/x/infer"), headers=bearer(ACME_KEY),
                      json={"x": 1})
    assert r.status_code == 200, r.text
    assert origin.last("/v2/models/x/infer")["headers"]["X-Model"] == "x"


def test_model_variable_forwarded(ngx, origin):
    r = requests.post(ngx.url("/v2/models/credit-risk/infer"),
                      headers=bearer(GLOBEX_KEY), json={})
    assert r.status_code == 200
    up = origin.last("/v2/models/credit-risk/infer")
    assert up["headers"].get("X-Model") == "credit-risk"


def test_model_by_infergate_model_directive(ngx, origin):
    h = dict(bearer(GLOBEX_KEY))
    r = requests.get(ngx.url("/by-header/a"),
                     headers={**h, "X-Want-Model": "credit-risk"})
    assert r.status_code == 200, r.text
    assert origin.last("/by-header/a")["headers"]["X-Model"] == "credit-risk"

    r = requests.get(ngx.url("/by-header/b"),
                     headers={**h, "X-Want-Model": "x"})
    body = assert_problem(r, 403)
    assert body["type"] == "https://infergate.dev/problems#forbidden"

    # infergate_model overrides the URI: the URI names an allowed model
    # but the configured value does not
    r = requests.get(ngx.url("/by-header/v2/models/credit-risk/infer"),
                     headers={**h, "X-Want-Model": "x"})
    assert_problem(r, 403)

    # an empty model is no model: no check
    r = requests.get(ngx.url("/by-header/c"), headers=h)
    assert r.status_code == 200, r.text


def test_403_for_unknown_model_before_anything_upstream(ngx, origin):
    origin.clear()
    r = requests.post(ngx.url("/v2/models/nope/infer"),
                      headers=bearer(GLOBEX_KEY), json={})
    assert_problem(r, 403)
    assert not origin.find("/v2/models/nope/infer")


# -- the infergate-keys tool ------------------------------------------------

def test_keys_tool_new_and_hash():
    r = subprocess.run([str(KEYS_TOOL), "new", "acme", "rate=5r/s",
                        "burst=10", "models=a,b"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    m = re.search(r"^key: (igk_\S+)$", r.stdout, re.M)
    assert m, r.stdout
    key = m.group(1)
    m = re.search(r"^line: ([0-9a-f]{64}) acme (.*)$", r.stdout, re.M)
    assert m, r.stdout
    assert m.group(1) == hashlib.sha256(key.encode()).hexdigest()
    opts = m.group(2).split()
    assert set(opts) == {"rate=5r/s", "burst=10", "models=a,b"}, opts

    h = subprocess.run([str(KEYS_TOOL), "hash", key], capture_output=True,
                       text=True, timeout=10)
    assert h.returncode == 0, h.stderr
    assert h.stdout.strip() == hashlib.sha256(key.encode()).hexdigest()


def test_minted_key_authenticates(start_nginx, origin):
    r = subprocess.run([str(KEYS_TOOL), "new", "initech"],
                       capture_output=True, text=True, timeout=10)
    key = re.search(r"^key: (\S+)$", r.stdout, re.M).group(1)
    line = re.search(r"^line: (.*)$", r.stdout, re.M).group(1)
    ngx = start_nginx(http="infergate_keys keys.txt;",
                      server="location / { infergate_auth on; "
                             "proxy_set_header X-Tenant $infergate_tenant; "
                             "@PROXY@ }",
                      files={"keys.txt": line + "\n"})
    r = requests.get(ngx.url("/minted"), headers=bearer(key))
    assert r.status_code == 200, r.text
    assert origin.last("/minted")["headers"]["X-Tenant"] == "initech"


def test_model_in_log_is_escaped(start_nginx):
    """The model comes from the URI: a %0d%0a in it must not start a
    forged line in error.log (the 403 is logged at info)."""
    ngx = start_nginx(http="infergate_keys keys.txt;", server=SERVER,
                      files={"keys.txt": KEYS})
    ngx.allowed_log.append(r".*\[info\].*may not use model.*")
    forged = "/v2/models/x%0d%0a%5balert%5d%20forged%22%5c%ff/infer"
    r = requests.get(ngx.url(forged), headers=bearer(GLOBEX_KEY))
    body = assert_problem(r, 403)
    # the problem+json detail carries the model JSON-escaped
    assert body["detail"].startswith(
        'tenant "globex" may not use model "x\r\n')
    log = ngx.error_log
    assert "forged" in log
    for ln in log.splitlines():
        assert not ln.startswith("[alert]"), ln
    assert 'model "x\\x0d\\x0a[alert] forged\\x22\\x5c\\xff"' in log, \
        log[-2000:]
