"""What real KServe v2 / Triton HTTP clients send and see at the edge:
gzip and deflate request bodies built as tritonclient.http builds them
(request_compression_algorithm=...), a decompression bomb (413), corrupt
and truncated streams (400), unknown codings (415), no Content-Type, the
KServe "error" member on every refusal, infergate_json_var in limit,
Bloom and cache keys.  Real nginx, real infergate-backend, real redis."""

import gzip
import json
import zlib

import pytest
import requests

from conftest import PROBLEM_BASE, assert_problem, bearer, make_key
from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa


def triton_body(data, shape, dtype="FP32", name="input", params=None):
    """The JSON tritonclient.http.InferenceServerClient.infer() sends
    with binary_data=False."""
    body = {"inputs": [{"name": name, "shape": shape, "datatype": dtype,
                        "data": data}]}
    if params is not None:
        body["parameters"] = params
    return json.dumps(body).encode()


def gz(b):
    # tritonclient.http: gzip.compress(request_body)
    return gzip.compress(b)


def dfl(b):
    # tritonclient.http: zlib.compress(request_body)
    return zlib.compress(b)


def triton_headers(coding=None, key=None):
    """tritonclient.http sends no Content-Type; Content-Encoding when
    request_compression_algorithm is set."""
    h = {}
    if coding:
        h["Content-Encoding"] = coding
    if key:
        h.update(bearer(key))
    return h


def nocontent_type(session_headers):
    # requests adds no Content-Type for data=bytes; make that explicit
    assert "Content-Type" not in session_headers


INFER_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1},
    },
}

SERVER = """
location ~ ^/v2/models/[^/]+/infer$ {
    infergate_schema infer.json;
    infergate_infer backend=be;
}
location /v2 {
    infergate_infer backend=be;
}
location /gz/ {
    # the README's two lines: responses compressed by nginx's gzip filter
    gzip       on;
    gzip_types application/json application/problem+json;
    rewrite    ^/gz(/.*)$ $1 break;
    infergate_schema infer.json;
    infergate_infer backend=be;
}
location /echo {
    infergate_schema any.json;
    proxy_set_header X-CL $content_length;
    proxy_set_header X-CE $http_content_encoding;
    @PROXY@
}
location /raw {
    # a plain proxy inflates only when told (test_clients_binary_edge.py
    # has the default, off there)
    infergate_inflate on;
    proxy_set_header X-CE $http_content_encoding;
    @PROXY@
}
location /small {
    client_max_body_size 32k;
    infergate_schema any.json;
    @PROXY@
}
location /smallraw {
    client_max_body_size 32k;
    infergate_inflate on;
    @PROXY@
}
location /off {
    infergate_inflate off;
    @PROXY@
}
location /offschema {
    infergate_inflate off;
    infergate_schema any.json;
    @PROXY@
}
"""


@pytest.fixture(scope="module")
def edge(module_nginx, tmp_path_factory):
    from infer_fixtures import Backend
    import tempfile, os
    d = tempfile.mkdtemp(prefix="igbe")
    os.chmod(d, 0o755)
    be = Backend(d, ["id=builtin:identity:3"]).start()
    ngx = module_nginx(http=infer_http(be), server=SERVER, workers=1,
                       files={"infer.json": json.dumps(INFER_SCHEMA),
                              "any.json": "{}"})
    wait_connected(ngx, 1)
    yield ngx
    be.stop()


def infer_url(ngx):
    return ngx.url("/v2/models/id/infer")


@pytest.mark.parametrize("coding,enc", [("gzip", gz), ("deflate", dfl),
                                        ("GZIP", gz), ("x-gzip", gz)])
@pytest.mark.parametrize("path", ["/v2/models/id/infer",  # schema + infer
                                  "/v2/models/id/versions/1/infer"])
def test_compressed_infer_as_tritonclient_sends_it(edge, coding, enc, path):
    body = triton_body([1.5, 2, 3], [1, 3])
    r = requests.post(edge.url(path), data=enc(body),
                      headers=triton_headers(coding))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [1.5, 2, 3]


def test_compressed_body_reaches_proxy_inflated(edge, origin):
    body = b'{"a": [' + b",".join(b"%d" % i for i in range(5000)) + b"]}"
    for path in ("/echo", "/raw"):
        origin.clear()
        r = requests.post(edge.url(path + "?gz"), data=gz(body),
                          headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200, r.text
        got = origin.last(path + "?gz")
        assert got["body"] == body
        assert got["headers"].get("Content-Length") == str(len(body))
        assert got["headers"].get("Content-Encoding") in (None, "identity")


def test_chunked_compressed_body(edge, origin):
    body = triton_body(list(range(3)), [1, 3])
    data = gz(body)

    def gen():
        for i in range(0, len(data), 7):
            yield data[i:i + 7]
    r = requests.post(infer_url(edge), data=gen(),
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [0, 1, 2]


def test_multi_member_gzip(edge, origin):
    body = b'{"x": "' + b"y" * 3000 + b'"}'
    data = gz(body[:1000]) + gz(body[1000:])
    origin.clear()
    r = requests.post(edge.url("/echo?mm"), data=data,
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert origin.last("/echo?mm")["body"] == body


BOMB = gzip.compress(b"0" * (10 * 1024 * 1024))  # 10 MB of zeros


@pytest.mark.parametrize("path", ["/v2/models/id/infer", "/v2/models/id",
                                  "/small", "/smallraw"])
def test_decompression_bomb_is_413(edge, origin, path):
    assert len(BOMB) < 64 * 1024
    origin.clear()
    r = requests.post(edge.url(path), data=BOMB,
                      headers={"Content-Encoding": "gzip"})
    p = assert_problem(r, 413, PROBLEM_BASE + "body-too-large")
    assert "client_max_body_size" in p["error"]
    assert not origin.find(path)


@pytest.mark.parametrize("data,coding", [
    (b"not gzip at all", "gzip"),
    (gz(b'{"a":1}')[:-6], "gzip"),            # cut in the trailer
    (gz(b'{"a":1}')[:12], "gzip"),            # cut in the stream
    (gz(b'{"a":1}') + b"garbage", "gzip"),     # not another member
    (bytes(b ^ 0x55 if i == 15 else b
           for i, b in enumerate(gz(b'{"a":1}' * 50))), "gzip"),
    (dfl(b'{"a":1}') + b"x", "deflate"),
    (gz(b'{"a":1}'), "deflate"),               # wrong coding
    (b"\x00\x01\x02", "deflate"),
])
@pytest.mark.parametrize("path", ["/v2/models/id/infer", "/v2/models/id",
                                  "/echo", "/raw"])
def test_corrupt_stream_is_400(edge, origin, data, coding, path):
    origin.clear()
    r = requests.post(edge.url(path + "?bad"), data=data,
                      headers={"Content-Encoding": coding})
    p = assert_problem(r, 400, PROBLEM_BASE + "corrupt-encoding")
    assert p["error"] == p["detail"]
    assert not origin.find(path + "?bad")


@pytest.mark.parametrize("coding,enc", [("gzip", gz), ("deflate", dfl)])
def test_mutated_streams_never_crash(edge, origin, coding, enc):
    import random
    rnd = random.Random(1913)
    body = json.dumps({"k": list(range(300)), "s": "x" * 500}).encode()
    good = enc(body)
    seen = set()
    for i in range(150):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            pos = rnd.randrange(len(data))
            if op < 0.5:
                data[pos] = rnd.randrange(256)
            elif op < 0.75:
                del data[pos:pos + rnd.randint(1, 40)]
            else:
                data[pos:pos] = bytes(rnd.randrange(256)
                                      for _ in range(rnd.randint(1, 8)))
        r = requests.post(edge.url("/echo?m%d" % i), data=bytes(data),
                          headers={"Content-Encoding": coding})
        seen.add(r.status_code)
        assert r.status_code in (200, 400), (i, r.status_code, r.text)
        if r.status_code == 400:
            p = assert_problem(r, 400)
            assert p["type"] in (PROBLEM_BASE + "corrupt-encoding",
                                 PROBLEM_BASE + "malformed-json",
                                 PROBLEM_BASE + "invalid-body"), p
    assert 400 in seen


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip", "compress"])
@pytest.mark.parametrize("path", ["/v2/models/id/infer", "/v2/models/id",
                                  "/echo"])
def test_unknown_coding_is_415(edge, coding, path):
    r = requests.post(edge.url(path), data=b"{}",
                      headers={"Content-Encoding": coding})
    p = assert_problem(r, 415, PROBLEM_BASE + "unsupported-content-encoding")
    assert r.headers.get("Accept-Encoding") == "gzip, deflate"
    assert p["error"]


def test_identity_and_off(edge, origin):
    body = triton_body([1, 2, 3], [1, 3])
    r = requests.post(infer_url(edge), data=body,
                      headers={"Content-Encoding": "identity"})
    assert r.status_code == 200, r.text
    # infergate_inflate off: passed through untouched
    origin.clear()
    r = requests.post(edge.url("/off"), data=gz(body),
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200
    got = origin.last("/off")
    assert got["body"] == gz(body)
    assert got["headers"].get("Content-Encoding") == "gzip"
    # ... and a schema there cannot read it
    r = requests.post(edge.url("/offschema"), data=gz(body),
                      headers={"Content-Encoding": "gzip"})
    assert_problem(r, 415, PROBLEM_BASE + "unsupported-content-encoding")
    assert r.headers.get("Accept-Encoding") == "identity"


def test_response_compressed_by_nginx_gzip(edge):
    body = triton_body([1.0] * 3, [1, 3])
    r = requests.post(edge.url("/gz/v2/models/id/infer"), data=gz(body),
                      headers={"Content-Encoding": "gzip",
                               "Accept-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Encoding") == "gzip", r.headers
    assert r.json()["outputs"][0]["data"] == [1.0, 1.0, 1.0]
    # nginx's gzip filter compresses 200, 403 and 404 only
    r = requests.post(edge.url("/gz/v2/models/id/infer"), data=b"{]",
                      headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in r.headers
    assert_problem(r, 400)
    r = requests.post(edge.url("/gz/v2/models/id/infer"), data=body,
                      headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert "Content-Encoding" not in r.headers


def test_no_content_type_is_json(edge):
    body = triton_body([1, 2, 3], [1, 3])
    r = requests.post(infer_url(edge), data=body)
    assert "Content-Type" not in r.request.headers
    assert r.status_code == 200, r.text
    # a wrong one is still refused
    r = requests.post(infer_url(edge), data=body,
                      headers={"Content-Type": "text/plain"})
    p = assert_problem(r, 415)
    assert p["error"] == p["detail"]


# -- infergate_json_var, and "error" on every refusal -------------------------


import subprocess  # noqa: E402
from conftest import BUILD  # noqa: E402

KNOWN_USERS = ["u1", "u2", "u3", "u42"]

VARS_HTTP = """
infergate_keys keys.txt;
infergate_limit_zone z 1m;
infergate_redis r {redis} timeout=200ms;
infergate_bloom_zone users 1m capacity=1000 error=0.001
                     file=@PREFIX@/users.bloom;
infergate_backend down unix:@PREFIX@/nothing.sock;
infergate_json_var $uid /parameters/user_id;
infergate_json_var $first_input /inputs/0/name;
infergate_json_var $deep /a~1b/~0/1;
"""

VARS_SERVER = """
location ~ ^/v2/models/down/infer$ {
    infergate_infer backend=down;
}
location ~ ^/v2/models/[^/]+/infer$ {
    infergate_auth on;
    infergate_limit zone=z rate=2r/m key=$uid;
    infergate_schema infer.json;
    infergate_bloom zone=users key=$uid methods=POST;
    infergate_infer backend=be;
}
location /down/ {
    infergate_infer backend=down;
}
location /lim {
    infergate_limit zone=z rate=1r/m key=lim:$uid;
    infergate_schema any.json;
    @PROXY@
}
location /bloom {
    infergate_schema any.json;
    infergate_bloom zone=users key=$uid methods=POST;
    @PROXY@
}
location /cache {
    infergate_schema any.json;
    infergate_cache redis=r ttl=60s methods=POST key=$uid;
    @PROXY@
}
location /hdr {
    infergate_schema any.json;
    proxy_set_header X-Uid $uid;
    proxy_set_header X-First $first_input;
    proxy_set_header X-Deep $deep;
    @PROXY@
}
location /noschema {
    proxy_set_header X-Uid $uid;
    @PROXY@
}
location /nsbloom {
    # no schema: the Bloom key still reads the body (any JSON)
    infergate_bloom zone=users key=$uid methods=POST;
    proxy_set_header X-Uid $uid;
    @PROXY@
}
location /gzcache {
    infergate_cache redis=r ttl=60s methods=POST;
    @PROXY@
}
location /nslim {
    infergate_limit zone=z rate=1r/m key=nslim:$uid;
    @PROXY@
}
"""


@pytest.fixture(scope="module")
def vars_ngx(module_nginx, tmp_path_factory, redis_server_module):
    from infer_fixtures import Backend
    import os
    import tempfile
    d = tempfile.mkdtemp(prefix="igbe")
    os.chmod(d, 0o755)
    be = Backend(d, ["id=builtin:identity:3",
                     "other=builtin:identity:3"]).start()
    tmp = tmp_path_factory.mktemp("bloom")
    src = tmp / "ids.txt"
    src.write_text("".join(u + "\n" for u in KNOWN_USERS))
    subprocess.run([str(BUILD / "infergate-bloom"), "build", "--capacity",
                    "1000", "--error", "0.001", str(src), "-o",
                    str(tmp / "ids.bloom")], check=True,
                   capture_output=True)
    key, line = make_key("acme", "models=id")
    ngx = module_nginx(
        http=infer_http(be) + VARS_HTTP.format(
            redis=redis_server_module.address),
        server=VARS_SERVER, workers=1,
        files={"infer.json": json.dumps(INFER_SCHEMA), "any.json": "{}",
               "keys.txt": line + "\n",
               "users.bloom": (tmp / "ids.bloom").read_bytes()})
    wait_connected(ngx, 1)
    ngx.key = key
    yield ngx
    be.stop()


@pytest.fixture(scope="module")
def redis_server_module(tmp_path_factory):
    from redis_fixtures import RedisServer
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


def test_json_var_values(vars_ngx, origin):
    body = {"parameters": {"user_id": "u7", "x": [1]},
            "inputs": [{"name": "in0"}, {"name": "in1"}],
            "a/b": {"~": [True, None, 3]}}
    origin.clear()
    r = requests.post(vars_ngx.url("/hdr?1"), data=json.dumps(body))
    assert r.status_code == 200, r.text
    h = origin.last("/hdr?1")["headers"]
    assert h.get("X-Uid") == "u7"
    assert h.get("X-First") == "in0"
    assert h.get("X-Deep") == "null"
    # numbers as written, escapes unescaped; an object there is no value
    body = {"parameters": {"user_id": 12.50}, "inputs": {"0": {"name": 1}},
            "a/b": {"~": [0, "\u00e9\"x"]}}
    r = requests.post(vars_ngx.url("/hdr?2"), data=json.dumps(body),
                      headers={"Content-Encoding": "identity"})
    assert r.status_code == 200, r.text
    h = origin.last("/hdr?2")["headers"]
    assert h.get("X-Uid") == "12.50" or h.get("X-Uid") == "12.5"
    assert h.get("X-First") == "1"   # /inputs/0 of an object: member "0"
    r = requests.post(vars_ngx.url("/hdr?3"),
                      data=gz(json.dumps({"parameters": {"user_id": {"a": 1}},
                                          "inputs": {"0": {"name": "m"}}})
                              .encode()),
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    h = origin.last("/hdr?3")["headers"]
    assert h.get("X-Uid") is None
    assert h.get("X-First") == "m"
    # no schema on the location: the body is not parsed, no value
    r = requests.post(vars_ngx.url("/noschema"),
                      data=json.dumps({"parameters": {"user_id": "u1"}}))
    assert r.status_code == 200
    assert origin.last("/noschema")["headers"].get("X-Uid") is None


def test_json_var_keys_without_schema(vars_ngx, origin):
    def post(path, uid, **kw):
        return requests.post(vars_ngx.url(path), data=json.dumps(
            {"parameters": {"user_id": uid}}), **kw)
    origin.clear()
    r = post("/nsbloom", "u2")
    assert r.status_code == 200, r.text
    assert origin.last("/nsbloom")["headers"].get("X-Uid") == "u2"
    assert_problem(post("/nsbloom", "u404"), 404)
    # not JSON: refused, so that the key is not dodged
    p = assert_problem(requests.post(vars_ngx.url("/nsbloom"), data=b"{x"),
                       400)
    assert p["error"]
    assert post("/nslim", "a1").status_code == 200
    assert post("/nslim", "a2").status_code == 200
    assert_problem(post("/nslim", "a1"), 429)
    r = post("/nslim", "a3", headers={"Content-Type": "text/plain"})
    assert_problem(r, 415)


def test_json_var_in_limit_key(vars_ngx, origin):
    # rate=1r/m keyed on parameters.user_id: the body is read before the
    # limit on this location, compressed or not
    def post(uid, coding=None):
        b = json.dumps({"parameters": {"user_id": uid}}).encode()
        h = {}
        if coding:
            b = gz(b)
            h["Content-Encoding"] = coding
        return requests.post(vars_ngx.url("/lim"), data=b, headers=h)
    assert post("ua").status_code == 200
    r = post("ua", "gzip")
    p = assert_problem(r, 429)
    assert p["error"] == p["detail"]
    assert post("ub", "gzip").status_code == 200
    assert post("ub").status_code == 429
    assert post("uc").status_code == 200


def test_json_var_in_bloom_key(vars_ngx, origin):
    for uid in KNOWN_USERS:
        r = requests.post(vars_ngx.url("/bloom"),
                          data=gz(json.dumps({"parameters": {"user_id": uid}})
                                  .encode()),
                          headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200, (uid, r.text)
    for uid in ("u9999", "nobody"):
        r = requests.post(vars_ngx.url("/bloom"),
                          data=json.dumps({"parameters": {"user_id": uid}}))
        p = assert_problem(r, 404)
        assert p["error"] == p["detail"]


def test_json_var_in_cache_key(vars_ngx, origin):
    origin.clear()
    seen = []
    for i in range(2):
        r = requests.post(vars_ngx.url("/cache"),
                          data=json.dumps({"parameters": {"user_id": "c1"},
                                           "n": i}))
        assert r.status_code == 200, r.text
        seen.append(r.headers.get("X-Cache-Status"))
    # the key is the user id alone: the second body is a hit
    assert seen[0] == "MISS", seen
    for _ in range(50):
        r = requests.post(vars_ngx.url("/cache"),
                          data=json.dumps({"parameters": {"user_id": "c1"},
                                           "n": 9}))
        if r.headers.get("X-Cache-Status") == "HIT":
            break
        import time
        time.sleep(0.05)
    assert r.headers.get("X-Cache-Status") == "HIT", r.headers
    r = requests.post(vars_ngx.url("/cache"),
                      data=json.dumps({"parameters": {"user_id": "c2"}}))
    assert r.headers.get("X-Cache-Status") == "MISS", r.headers


def test_cache_body_key_is_the_inflated_body(vars_ngx, origin):
    import time
    body = json.dumps({"q": "same", "n": [1, 2, 3]}).encode()
    r = requests.post(vars_ngx.url("/gzcache"), data=body,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.headers.get("X-Cache-Status") == "MISS", r.headers
    for coding, enc in (("gzip", gz), ("deflate", dfl)):
        for _ in range(50):
            r = requests.post(vars_ngx.url("/gzcache"), data=enc(body),
                              headers={"Content-Type": "application/json",
                                       "Content-Encoding": coding})
            if r.headers.get("X-Cache-Status") == "HIT":
                break
            time.sleep(0.05)
        assert r.headers.get("X-Cache-Status") == "HIT", (coding, r.headers)


def test_standard_client_through_the_chain(vars_ngx):
    url = vars_ngx.url("/v2/models/id/infer")
    body = triton_body([1, 2, 3], [1, 3], params={"user_id": "u42"})
    r = requests.post(url, data=gz(body),
                      headers=triton_headers("gzip", vars_ngx.key))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [1, 2, 3]


def refusal(resp, status):
    """The KServe v2 REST error shape beside the problem members."""
    p = assert_problem(resp, status)
    assert isinstance(p.get("error"), str) and p["error"], p
    assert p["error"] == p["detail"]
    return p


def test_every_refusal_has_error(vars_ngx):
    url = vars_ngx.url("/v2/models/id/infer")
    key = vars_ngx.key
    good = triton_body([1, 2, 3], [1, 3], params={"user_id": "u1"})
    refusal(requests.post(url, data=good), 401)
    refusal(requests.post(vars_ngx.url("/v2/models/other/infer"), data=good,
                          headers=bearer(key)), 403)
    refusal(requests.post(url, data=good, headers={
        **bearer(key), "Content-Type": "text/plain"}), 415)
    refusal(requests.post(url, data=good, headers={
        **bearer(key), "Content-Encoding": "br"}), 415)
    refusal(requests.post(url, data=b'{"inputs": 1}', headers=bearer(key)),
            400)
    refusal(requests.post(url, data=b'{"inputs": [', headers=bearer(key)),
            400)
    refusal(requests.post(url, data=b"\x1f\x8b garbage", headers={
        **bearer(key), "Content-Encoding": "gzip"}), 400)
    refusal(requests.post(url, data=BOMB, headers={
        **bearer(key), "Content-Encoding": "gzip"}), 413)
    unknown = triton_body([1, 2, 3], [1, 3], params={"user_id": "zz"})
    refusal(requests.post(url, data=unknown, headers=bearer(key)), 404)
    refusal(requests.post(vars_ngx.url("/v2/models/down/infer"),
                          data=good), 503)
    codes = []
    lim = triton_body([1, 2, 3], [1, 3], params={"user_id": "u3"})
    for _ in range(4):
        r = requests.post(url, data=lim, headers=bearer(key))
        codes.append(r.status_code)
        if r.status_code == 429:
            refusal(r, 429)
            break
    assert 429 in codes, codes


def test_json_var_config_errors(nginx_t):
    for line, msg in [
        ("infergate_json_var uid /a;", "invalid variable name"),
        ("infergate_json_var $u a/b;", "is not a JSON pointer"),
        ("infergate_json_var $u \"\";", "is not a JSON pointer"),
        ("infergate_json_var $u /a~2;", "must be followed by 0 or 1"),
        ("infergate_json_var $u /a; infergate_json_var $U /b;",
         "is duplicate"),
        ("infergate_json_var $infergate_x /a;", "the module's own"),
        ("infergate_json_var $a-b /a;", "invalid variable name"),
    ]:
        rc, out = nginx_t(http=line)
        assert rc != 0, (line, out)
        assert "infergate_json_var" in out and msg in out, (line, out)
    rc, out = nginx_t(http="infergate_json_var $uid /parameters/user_id;",
                      server="location /x { infergate_json_var $a /b; }")
    assert rc != 0 and "not allowed here" in out, out
    rc, out = nginx_t(http="infergate_json_var $uid /parameters/user_id;"
                           "infergate_limit_zone z 1m;",
                      server="location /x { infergate_limit zone=z "
                             "rate=1r/s key=$uid; return 204; }")
    assert rc == 0, out


def test_limit_key_declared_before_its_json_var(start_nginx, origin):
    # the limit (inherited from http{}) names $who before
    # infergate_json_var declares it: the body is still read first
    ngx = start_nginx(
        http="infergate_limit_zone z 1m;\n"
             "infergate_limit zone=z rate=1r/m key=w:$who;\n"
             "infergate_json_var $who /meta/who;\n",
        server="location /w { infergate_schema any.json; @PROXY@ }",
        files={"any.json": "{}"})

    def post(who):
        return requests.post(ngx.url("/w"), data=json.dumps(
            {"meta": {"who": who}}), headers={"Content-Encoding": "identity"})
    assert post("a").status_code == 200
    assert post("b").status_code == 200
    assert_problem(post("a"), 429)
    assert post("c").status_code == 200
