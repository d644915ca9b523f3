"""Triton binary requests (Inference-Header-Content-Length) where a schema
checks the body, and the scope of infergate_inflate's default.

- With infergate_schema on a location, only the JSON header (the first N
  bytes) is validated; the tensors after it are left to the infer
  handler.  Sent as tritonclient.http sends it (no Content-Type), as
  application/octet-stream and as application/json; gzip and binary
  together; chunked; spooled to a temp file.
- The shipped conf/infergate.conf serves a standard binary request with
  parameters.user_id through auth, limit, schema, Bloom, cache, inference.
- infergate_inflate unset is on only where the location reads JSON
  bodies; a plain proxy_pass location passes bodies and codings through.
- A chunked body with an empty last chunk reaches the infer handler.

Real nginx, real infergate-backend, real redis-server."""

import gzip
import json
import re
import struct
import subprocess
import time

import pytest
import requests

from conftest import (BUILD, PROBLEM_BASE, REPO, assert_problem, bearer,
                      free_port, make_key)
from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa
from redis_fixtures import redis_factory, redis_server  # noqa: F401


IHCL = "Inference-Header-Content-Length"


def triton_binary(values, shape=None, user_id=None, json_out=False,
                  name="input"):
    """tritonclient.http's default infer(): binary input, and binary
    outputs (binary_data_output) unless json_out asks for JSON ones.
    Returns (body, JSON header length)."""
    raw = struct.pack("<%df" % len(values), *values)
    req = {"inputs": [{"name": name, "shape": shape or [1, len(values)],
                       "datatype": "FP32",
                       "parameters": {"binary_data_size": len(raw)}}]}
    params = {}
    if user_id is not None:
        params["user_id"] = user_id
    if json_out:
        req["outputs"] = [{"name": "output",
                           "parameters": {"binary_data": False}}]
    else:
        params["binary_data_output"] = True
    req["parameters"] = params
    header = json.dumps(req).encode()
    return header + raw, len(header)


def outputs(resp):
    """The output floats, from a JSON or a binary answer."""
    assert resp.status_code == 200, (resp.status_code, resp.content[:400])
    hl = resp.headers.get(IHCL)
    if hl is None:
        return resp.json()["outputs"][0]["data"]
    header = json.loads(resp.content[:int(hl)])
    raw = resp.content[int(hl):]
    return list(struct.unpack("<%df" % (len(raw) // 4), raw)), header


def floats(resp):
    out = outputs(resp)
    return out[0] if isinstance(out, tuple) else out


# a schema as the shipped one: the caller's id in parameters
SCHEMA = {
    "type": "object",
    "required": ["inputs", "parameters"],
    "properties": {
        "parameters": {"type": "object", "required": ["user_id"],
                       "properties": {"user_id": {"type": "string"}}},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1},
    },
}

SERVER = """
location ~ ^/v2/models/[^/]+/infer$ {
    infergate_schema infer.json;
    infergate_infer backend=be;
}
location /spool/ {
    client_body_buffer_size 1k;
    rewrite ^/spool(/.*)$ $1 break;
    infergate_schema infer.json;
    infergate_infer backend=be;
}
location /noschema/ {
    rewrite ^/noschema(/.*)$ $1 break;
    infergate_infer backend=be;
}
location /plain {
    @PROXY@
}
location /authonly {
    infergate_auth off;
    @PROXY@
}
location /forced {
    infergate_inflate on;
    @PROXY@
}
location /schemaproxy {
    infergate_schema any.json;
    @PROXY@
}
location /bloomkey {
    infergate_bloom zone=ids key=$uid methods=POST;
    @PROXY@
}
location /limitkey {
    infergate_limit zone=z rate=100r/s burst=100 key=k:$uid;
    @PROXY@
}
location /again/ {
    # the body is read and checked here, then again, from the buffers
    # nginx kept, against the named location's schema
    client_body_buffer_size 1k;
    infergate_schema any.json;
    proxy_pass http://127.0.0.1:1;
    proxy_intercept_errors on;
    error_page 502 = @again;
}
location @again {
    rewrite ^/again(/.*)$ $1 break;
    infergate_schema infer.json;
    infergate_infer backend=be;
}
location /offinfer/ {
    infergate_inflate off;
    rewrite ^/offinfer(/.*)$ $1 break;
    infergate_infer backend=be;
}
"""

HTTP = """
infergate_json_var $uid /parameters/user_id;
infergate_bloom_zone ids 1m capacity=1000 error=0.01 file=ids.bloom;
infergate_limit_zone z 1m;
"""


@pytest.fixture(scope="module")
def edge(module_nginx, tmp_path_factory):
    from infer_fixtures import Backend
    import os
    import tempfile
    d = tempfile.mkdtemp(prefix="igbe")
    os.chmod(d, 0o755)
    be = Backend(d, ["id=builtin:identity:3"]).start()
    tmp = tmp_path_factory.mktemp("bloomb")
    (tmp / "ids.txt").write_text("u1\nu2\n")
    subprocess.run([str(BUILD / "infergate-bloom"), "build", "--capacity",
                    "1000", "--error", "0.01", str(tmp / "ids.txt"), "-o",
                    str(tmp / "ids.bloom")], check=True, capture_output=True)
    ngx = module_nginx(http=infer_http(be) + HTTP, server=SERVER, workers=1,
                       files={"infer.json": json.dumps(SCHEMA),
                              "any.json": "{}",
                              "ids.bloom": (tmp / "ids.bloom").read_bytes()})
    wait_connected(ngx, 1)
    yield ngx
    be.stop()


def post(ngx, path, body, jl, content_type=None, coding=None, extra=None):
    h = {IHCL: str(jl)}
    if content_type:
        h["Content-Type"] = content_type
    if coding:
        h["Content-Encoding"] = coding
    h.update(extra or {})
    return requests.post(ngx.url(path), data=body, headers=h, timeout=10)


# ---- 1. schema + binary -------------------------------------------------

@pytest.mark.parametrize("content_type", [None, "application/octet-stream",
                                          "application/json",
                                          "Application/Octet-Stream; x=1"])
@pytest.mark.parametrize("json_out", [False, True])
def test_binary_request_through_a_schema(edge, content_type, json_out):
    vals = [1.5, -2.0, 3.25]
    body, jl = triton_binary(vals, user_id="u1", json_out=json_out)
    r = post(edge, "/v2/models/id/infer", body, jl, content_type)
    if content_type is None:
        assert "Content-Type" not in r.request.headers
    assert floats(r) == vals
    assert (IHCL in r.headers) == (not json_out)


def test_binary_header_is_what_the_schema_checks(edge):
    # the JSON header lacks parameters.user_id: the schema refuses it
    body, jl = triton_binary([1, 2, 3])
    r = post(edge, "/v2/models/id/infer", body, jl)
    p = assert_problem(r, 400, PROBLEM_BASE + "invalid-body")
    assert any(e["pointer"] == "/parameters" for e in p["errors"]), p
    # the tail is not JSON, and is not parsed as JSON
    body, jl = triton_binary([float("nan"), 0.0, 1e30], user_id="u1")
    assert b"{" not in body[jl:] and len(body) > jl
    r = post(edge, "/v2/models/id/infer", body, jl)
    assert r.status_code == 200, r.text
    # the header covers the whole body (JSON tensors, no binary part)
    js = json.dumps({"inputs": [{"name": "input", "shape": [1, 3],
                                 "datatype": "FP32", "data": [1, 2, 3]}],
                     "parameters": {"user_id": "u1"}}).encode()
    r = post(edge, "/v2/models/id/infer", js, len(js),
             "application/octet-stream")
    assert floats(r) == [1, 2, 3]
    # the header of a JSON body, cut short by the header length
    body, jl = triton_binary([1, 2, 3], user_id="u1")
    r = post(edge, "/v2/models/id/infer", body, jl - 1)
    assert_problem(r, 400, PROBLEM_BASE + "malformed-json")


@pytest.mark.parametrize("value,fragment", [
    ("abc", "given once"), ("-1", "given once"), ("", "given once"),
    ("0", "raw binary request"), ("99999", "larger than the request body"),
])
def test_bad_header_length_is_400(edge, value, fragment):
    body, _ = triton_binary([1, 2, 3], user_id="u1")
    r = requests.post(edge.url("/v2/models/id/infer"), data=body,
                      headers={IHCL: value})
    p = assert_problem(r, 400, PROBLEM_BASE + "invalid-inference-header")
    assert fragment in p["detail"], p
    assert p["error"] == p["detail"]


def test_header_given_twice_is_400(edge):
    import socket
    body, jl = triton_binary([1, 2, 3], user_id="u1")
    req = (b"POST /v2/models/id/infer HTTP/1.1\r\nHost: x\r\n"
           b"Connection: close\r\nContent-Length: %d\r\n"
           b"Inference-Header-Content-Length: %d\r\n"
           b"Inference-Header-Content-Length: %d\r\n\r\n"
           % (len(body), jl, jl)) + body
    with socket.create_connection(("127.0.0.1", edge.port), 5) as s:
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), data[:300]
    assert b"invalid-inference-header" in payload
    assert b"given once" in payload


def test_octet_stream_without_binary_header_is_415(edge):
    body, _ = triton_binary([1, 2, 3], user_id="u1", json_out=True)
    js = json.dumps({"inputs": [{"name": "input", "shape": [1, 3],
                                 "datatype": "FP32", "data": [1, 2, 3]}],
                     "parameters": {"user_id": "u1"}}).encode()
    r = requests.post(edge.url("/v2/models/id/infer"), data=js,
                      headers={"Content-Type": "application/octet-stream"})
    assert_problem(r, 415, PROBLEM_BASE + "unsupported-media-type")
    r = post(edge, "/v2/models/id/infer", body, len(body) - 12,
             "text/plain")
    p = assert_problem(r, 415, PROBLEM_BASE + "unsupported-media-type")
    assert "octet-stream" in p["detail"]


@pytest.mark.parametrize("coding,enc", [("gzip", gzip.compress),
                                        ("deflate", __import__("zlib")
                                         .compress)])
@pytest.mark.parametrize("content_type", [None, "application/octet-stream"])
def test_gzip_and_binary_together(edge, coding, enc, content_type):
    """tritonclient.http with request_compression_algorithm: the header
    length counts the uncompressed JSON header."""
    vals = [4.0, 5.0, 6.0]
    body, jl = triton_binary(vals, user_id="u2")
    r = post(edge, "/v2/models/id/infer", enc(body), jl, content_type,
             coding)
    assert floats(r) == vals
    # the same without a schema (the infer handler alone)
    r = post(edge, "/noschema/v2/models/id/infer", enc(body), jl,
             content_type, coding)
    assert floats(r) == vals


@pytest.mark.parametrize("step", [1, 7, 64])
def test_chunked_binary_header_split_anywhere(edge, step):
    vals = [7.0, 8.0, 9.0]
    body, jl = triton_binary(vals, user_id="u1")

    def gen():
        for i in range(0, len(body), step):
            yield body[i:i + step]
    r = requests.post(edge.url("/v2/models/id/infer"), data=gen(),
                      headers={IHCL: str(jl)}, timeout=10)
    assert floats(r) == vals
    # gzip + chunked + binary
    data = gzip.compress(body)

    def gen2():
        for i in range(0, len(data), step):
            yield data[i:i + step]
    r = requests.post(edge.url("/v2/models/id/infer"), data=gen2(),
                      headers={IHCL: str(jl), "Content-Encoding": "gzip"},
                      timeout=10)
    assert floats(r) == vals


def test_spooled_binary_body(edge):
    """A body larger than client_body_buffer_size goes to a temp file."""
    rows = 200
    vals = [float(i % 97) for i in range(rows * 3)]
    body, jl = triton_binary(vals, shape=[rows, 3], user_id="u1")
    assert len(body) > 2048
    r = post(edge, "/spool/v2/models/id/infer", body, jl)
    assert floats(r) == vals
    r = post(edge, "/spool/v2/models/id/infer", gzip.compress(body), jl,
             coding="gzip")
    assert floats(r) == vals


@pytest.mark.parametrize("rows", [1, 200])
def test_binary_body_checked_again_after_a_redirect(edge, rows):
    edge.allowed_log.append(r"connect\(\) failed")
    vals = [float(i % 13) for i in range(rows * 3)]
    body, jl = triton_binary(vals, shape=[rows, 3], user_id="u1")
    r = post(edge, "/again/v2/models/id/infer", body, jl)
    assert floats(r) == vals
    # the second schema refuses what the first let through
    body, jl = triton_binary(vals, shape=[rows, 3])
    r = post(edge, "/again/v2/models/id/infer", body, jl)
    assert_problem(r, 400, PROBLEM_BASE + "invalid-body")


def test_chunked_json_with_empty_last_chunk(edge):
    """The infer handler copies the body buffer by buffer; the last,
    empty one of a chunked body has no memory (pos NULL): UBSan flags a
    memcpy from it (run with IG_SANITIZE=1 to see it)."""
    js = json.dumps({"inputs": [{"name": "input", "shape": [1, 3],
                                 "datatype": "FP32", "data": [1, 2, 3]}],
                     "parameters": {"user_id": "u1"}}).encode()

    def gen():
        yield js[:10]
        yield js[10:]
    for path in ("/noschema/v2/models/id/infer", "/v2/models/id/infer"):
        r = requests.post(edge.url(path), data=gen(), timeout=10)
        assert floats(r) == [1, 2, 3]


# ---- 2. infergate_inflate's default ---------------------------------------

def test_plain_proxy_keeps_its_coding(edge, origin):
    """No infergate body feature: bodies and codings pass untouched."""
    body = b'{"a": 1, "b": "' + b"x" * 500 + b'"}'
    for path in ("/plain", "/authonly"):
        origin.clear()
        r = requests.post(edge.url(path), data=gzip.compress(body),
                          headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200, (path, r.status_code, r.text)
        got = origin.last(path)
        assert got["body"] == gzip.compress(body), path
        assert got["headers"].get("Content-Encoding") == "gzip"
        # an unknown coding is the origin's business, not a 415 here
        origin.clear()
        r = requests.post(edge.url(path), data=b"\x00br-bytes",
                          headers={"Content-Encoding": "br"})
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert origin.last(path)["body"] == b"\x00br-bytes"


@pytest.mark.parametrize("path", ["/forced", "/schemaproxy", "/bloomkey",
                                  "/limitkey"])
def test_body_locations_inflate_by_default(edge, origin, path):
    body = json.dumps({"parameters": {"user_id": "u1"},
                       "pad": "y" * 300}).encode()
    origin.clear()
    r = requests.post(edge.url(path), data=gzip.compress(body),
                      headers={"Content-Encoding": "gzip",
                               "Content-Type": "application/json"})
    assert r.status_code == 200, (path, r.status_code, r.text)
    got = origin.last(path)
    assert got["body"] == body
    assert got["headers"].get("Content-Encoding") in (None, "identity")
    r = requests.post(edge.url(path), data=b"{}",
                      headers={"Content-Encoding": "br",
                               "Content-Type": "application/json"})
    assert_problem(r, 415, PROBLEM_BASE + "unsupported-content-encoding")


def test_infer_location_inflates_and_off_wins(edge):
    js = json.dumps({"inputs": [{"name": "input", "shape": [1, 3],
                                 "datatype": "FP32",
                                 "data": [1, 2, 3]}]}).encode()
    r = requests.post(edge.url("/noschema/v2/models/id/infer"),
                      data=gzip.compress(js),
                      headers={"Content-Encoding": "gzip"})
    assert floats(r) == [1, 2, 3]
    # explicit off on an infer location: the coded body is not JSON
    r = requests.post(edge.url("/offinfer/v2/models/id/infer"),
                      data=gzip.compress(js),
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400, r.text
    assert "error" in r.json()


# ---- the shipped configuration ------------------------------------------

USERS = ["u42", "u7"]


@pytest.fixture
def shipped(start_nginx, backend_proc, redis_server, tmp_path):
    be = backend_proc("credit-risk=builtin:identity:3")
    conf = (REPO / "conf" / "infergate.conf").read_text()
    port, oport = free_port(), free_port()
    subs = [
        (r"listen\s+127\.0\.0\.1:8080;", f"listen 127.0.0.1:{port};"),
        (r"127\.0\.0\.1:8081", f"127.0.0.1:{oport}"),
        (r"127\.0\.0\.1:6379", redis_server.address),
        (r"unix:/run/infergate/backend\.sock", f"unix:{be.sock}"),
    ]
    for pat, rep in subs:
        conf, n = re.subn(pat, rep, conf)
        assert n >= 1, ("conf/infergate.conf changed: no", pat)
    src = tmp_path / "users.txt"
    src.write_text("".join(u + "\n" for u in USERS))
    # the zone's geometry, as conf/infergate.conf declares it
    subprocess.run([str(BUILD / "infergate-bloom"), "build", "--capacity",
                    "1000000", "--error", "0.001", str(src), "-o",
                    str(tmp_path / "users.bloom")], check=True,
                   capture_output=True)
    key, line = make_key("acme")
    files = {"keys.txt": line + "\n",
             "users.bloom": (tmp_path / "users.bloom").read_bytes()}
    for p in (REPO / "conf" / "schemas").iterdir():
        files["schemas/" + p.name] = p.read_text()
    ngx = start_nginx(http=conf, files=files, workers=1)
    wait_connected(ngx, 1)
    ngx.key = key
    ngx.shipped_url = lambda path: f"http://127.0.0.1:{port}{path}"
    return ngx


def test_shipped_conf_serves_a_standard_binary_client(shipped):
    url = shipped.shipped_url("/v2/models/credit-risk/infer")
    key = shipped.key
    vals = [0.5, 1.5, 2.5]

    def send(body, jl, **kw):
        h = {IHCL: str(jl), **bearer(key), **kw}
        return requests.post(url, data=body, headers=h, timeout=10)

    # tritonclient's default: binary in, binary out, no Content-Type
    body, jl = triton_binary(vals, user_id="u42")
    assert floats(send(body, jl)) == vals
    # octet-stream, gzip + binary
    assert floats(send(body, jl, **{"Content-Type":
                                    "application/octet-stream"})) == vals
    assert floats(send(gzip.compress(body), jl,
                       **{"Content-Encoding": "gzip"})) == vals
    # JSON outputs are cached (binary ones are no-store): the second
    # identical request is a HIT
    body, jl = triton_binary([9.0, 8.0, 7.0], user_id="u7", json_out=True)
    seen = []
    for _ in range(30):
        r = send(body, jl)
        assert floats(r) == [9.0, 8.0, 7.0]
        seen.append(r.headers.get("X-Cache-Status"))
        if "HIT" in seen:
            break
        time.sleep(0.05)
    assert "HIT" in seen, seen
    # the Bloom key came from the binary request's JSON header
    body, jl = triton_binary(vals, user_id="u999")
    r = send(body, jl)
    assert r.status_code == 404, (r.status_code, r.text)
    # the schema checked that header
    body, jl = triton_binary(vals, user_id="not-an-id")
    assert_problem(send(body, jl), 400, PROBLEM_BASE + "invalid-body")
    # auth still first
    r = requests.post(url, data=body, headers={IHCL: str(jl)})
    assert r.status_code == 401
