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
location /echo {
    infergate_schema any.json;
    proxy_set_header X-CL $content_length;
    proxy_set_header X-CE $http_content_encoding;
    @PROXY@
}
location /raw {
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
