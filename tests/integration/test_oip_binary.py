"""The Open Inference Protocol as Triton's and KServe's HTTP clients
speak it: the binary tensor data extension in both directions, with and
without Content-Type, JSON and binary outputs, 1 and 64 rows, every
datatype the gateway decodes, the size checks, and the statistics
extension.  Requests are built byte for byte as tritonclient.http builds
them (tritonclient/http/_utils.py _get_inference_request, _infer_input.py
and _requested_output.py; the client is not packaged in Debian), and
responses are read as its InferResult reads them.  Every response body,
success and error, is checked against the KServe v2 REST schemas in
tests/kserve/.  Real nginx, real infergate-backend."""

import json
import os
import struct
import time

import jsonschema
import pytest
import requests

from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa
from redis_fixtures import redis_factory, redis_server  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
KSERVE = os.path.join(HERE, "..", "kserve")


def schema(name):
    with open(os.path.join(KSERVE, name + ".json")) as f:
        s = json.load(f)
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


SERVER, MODEL, INFER, ERROR, STATS = (
    schema("server_metadata"), schema("model_metadata"),
    schema("inference_response"), schema("error"), schema("statistics"))


METRICS = "location = /metrics { infergate_metrics; }"
LOC = "location /v2 { infergate_infer backend=be; }"

# numpy's dtype letters for struct, as tritonclient's np.tobytes() gives
PACK = {"BOOL": "?", "INT32": "i", "INT64": "q", "FP32": "f", "FP64": "d"}


# ---- the client side, as tritonclient.http does it --------------------

class Input:
    """InferInput: set_data_from_numpy(binary_data=True) by default."""

    def __init__(self, name, shape, datatype, values, binary=True):
        self.name, self.shape, self.datatype = name, shape, datatype
        self.values, self.binary = values, binary

    def raw(self):
        if self.datatype == "BYTES":
            # serialize_byte_tensor: 4-byte LE length, then the bytes
            return b"".join(struct.pack("<I", len(v)) + v
                            for v in self.values)
        return struct.pack("<%d%s" % (len(self.values),
                                      PACK[self.datatype]), *self.values)

    def tensor(self):
        t = {"name": self.name, "shape": self.shape,
             "datatype": self.datatype}
        if self.binary:
            t["parameters"] = {"binary_data_size": len(self.raw())}
        else:
            t["data"] = list(self.values)
        return t


def request_body(inputs, outputs=None, request_id=""):
    """_get_inference_request: (body, json_size or None)."""
    req = {}
    params = {}
    if request_id != "":
        req["id"] = request_id
    req["inputs"] = [i.tensor() for i in inputs]
    if outputs is not None:
        req["outputs"] = [{"name": n, "parameters": {"binary_data": b}}
                          for n, b in outputs]
    else:
        # no outputs: all of them, as binary
        params["binary_data_output"] = True
    if params:
        req["parameters"] = params
    body = json.dumps(req).encode()
    json_size = len(body)
    raw = b"".join(i.raw() for i in inputs if i.binary)
    if any(i.binary for i in inputs):
        return body + raw, json_size
    return body, None


def infer(ngx, model, inputs, outputs=None, content_type=None,
          request_id="", headers=None):
    body, json_size = request_body(inputs, outputs, request_id)
    h = dict(headers or {})
    if json_size is not None:
        h["Inference-Header-Content-Length"] = str(json_size)
    if content_type:
        h["Content-Type"] = content_type
    return requests.post(ngx.url(f"/v2/models/{model}/infer"), data=body,
                         headers=h, timeout=10)


def result(resp):
    """InferResult: the JSON header, then each binary output in order.
    Returns (header, {output name: floats})."""
    assert resp.status_code == 200, (resp.status_code, resp.content[:300])
    hl = resp.headers.get("Inference-Header-Content-Length")
    if hl is None:
        assert resp.headers["Content-Type"] == "application/json"
        header = resp.json()
        raw = b""
    else:
        assert resp.headers["Content-Type"] == "application/octet-stream"
        header = json.loads(resp.content[:int(hl)])
        raw = resp.content[int(hl):]
    INFER.validate(header)
    values, off = {}, 0
    for o in header["outputs"]:
        size = o.get("parameters", {}).get("binary_data_size")
        if size is None:
            values[o["name"]] = o["data"]
            continue
        assert o["datatype"] == "FP32" and "data" not in o
        values[o["name"]] = list(struct.unpack(
            "<%df" % (size // 4), raw[off:off + size]))
        off += size
    assert off == len(raw), "binary data left over"
    return header, values


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def assert_error(resp, status, *fragments):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    ERROR.validate(body)
    for frag in fragments:
        assert frag in body["error"], (frag, body)
    return body["error"]


# ---- fixtures ---------------------------------------------------------

@pytest.fixture
def served(start_nginx, backend_proc):
    """identity models, with a metrics zone (statistics on)."""
    be = backend_proc("id=builtin:identity:3", "v:1=builtin:identity:2",
                      "v:2=builtin:identity:2", "wide=builtin:identity:8")
    ngx = start_nginx(http=infer_http(be), server=LOC + "\n" + METRICS,
                      workers=1)
    wait_connected(ngx, 1)
    return ngx


# ---- metadata ---------------------------------------------------------

def test_server_metadata_lists_extensions(served, start_nginx,
                                          backend_proc):
    r = requests.get(served.url("/v2"))
    assert r.status_code == 200
    SERVER.validate(r.json())
    assert r.json()["extensions"] == ["binary_tensor_data", "statistics"]

    r = requests.get(served.url("/v2/models/id"))
    MODEL.validate(r.json())

    # no metrics zone, no statistics: not advertised, and a clear 404
    be = backend_proc("id=builtin:identity:3")
    ngx = start_nginx(http=infer_http(be), server=LOC, workers=1)
    wait_connected(ngx, 1)
    r = requests.get(ngx.url("/v2"))
    SERVER.validate(r.json())
    assert r.json()["extensions"] == ["binary_tensor_data"]
    assert_error(requests.get(ngx.url("/v2/models/id/stats")), 404,
                 "infergate_metrics")


# ---- binary tensors, as the client sends them by default ---------------

@pytest.mark.parametrize("rows", [1, 64])
@pytest.mark.parametrize("content_type", [None, "application/octet-stream"])
def test_client_default_binary_both_ways(served, rows, content_type):
    vals = [i * 0.25 - 3 for i in range(rows * 8)]
    r = infer(served, "wide", [Input("input", [rows, 8], "FP32", vals)],
              content_type=content_type, request_id="req-7")
    header, out = result(r)
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert header["id"] == "req-7"
    assert header["model_name"] == "wide"
    assert header["outputs"][0]["shape"] == [rows, 8]
    assert header["outputs"][0]["parameters"] == {
        "binary_data_size": rows * 8 * 4}
    assert out["output"] == [f32(v) for v in vals]


@pytest.mark.parametrize("rows", [1, 64])
def test_binary_in_json_out(served, rows):
    vals = [float(i) for i in range(rows * 3)]
    r = infer(served, "id", [Input("input", [rows, 3], "FP32", vals)],
              outputs=[("output", False)])
    assert "Inference-Header-Content-Length" not in r.headers
    _, out = result(r)
    assert out["output"] == vals


@pytest.mark.parametrize("rows", [1, 64])
def test_json_in_binary_out(served, rows):
    vals = [float(-i) for i in range(rows * 3)]
    r = infer(served, "id",
              [Input("input", [rows, 3], "FP32", vals, binary=False)],
              outputs=[("output", True)], content_type="application/json")
    _, out = result(r)
    assert "Inference-Header-Content-Length" in r.headers
    assert out["output"] == vals

    # binary_data=False everywhere is plain JSON, as before
    r = infer(served, "id",
              [Input("input", [rows, 3], "FP32", vals, binary=False)],
              outputs=[("output", False)])
    assert r.headers["Content-Type"] == "application/json"
    _, out = result(r)
    assert out["output"] == vals


@pytest.mark.parametrize("dtype,vals,expect", [
    ("FP32", [0.1, -2.5, float("nan"), 1e30, 7, -0.0],
     [f32(0.1), -2.5, None, f32(1e30), 7.0, 0.0]),
    ("FP64", [0.1, 1e-300, -1.5e30, 2.0, 3.0, 4.0],
     [f32(0.1), 0.0, f32(-1.5e30), 2.0, 3.0, 4.0]),
    ("INT32", [2147483647, -2147483648, 0, 1, 2, 3],
     [f32(2147483647), -2147483648.0, 0.0, 1.0, 2.0, 3.0]),
    ("INT64", [9223372036854775807, -9223372036854775808, 16777217,
               -1, 0, 1],
     [f32(9223372036854775807), -9223372036854775808.0, 16777216.0,
      -1.0, 0.0, 1.0]),
    ("BOOL", [True, False, True, False, False, True],
     [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
])
@pytest.mark.parametrize("tile", [1, 32])
def test_binary_datatypes(served, dtype, vals, expect, tile):
    vals, expect = vals * tile, expect * tile
    r = infer(served, "id", [Input("input", [2 * tile, 3], dtype, vals)],
              outputs=[("output", False)])
    _, out = result(r)
    # JSON output: 9 digits that read back as the float; NaN as null
    assert [None if v is None else f32(v) for v in out["output"]] == expect
    r = infer(served, "id", [Input("input", [2 * tile, 3], dtype, vals)])
    _, out = result(r)
    got = [None if v != v else v for v in out["output"]]
    assert got == expect


def test_bytes_is_refused_clearly(served):
    r = infer(served, "id", [Input("input", [1, 3], "BYTES",
                                   [b"a", b"bc", b""])])
    assert_error(r, 400, "unsupported datatype \"BYTES\"")


def test_raw_binary_request(served):
    # Inference-Header-Content-Length: 0: the body is the input's rows
    raw = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    r = requests.post(served.url("/v2/models/id/infer"), data=raw,
                      headers={"Inference-Header-Content-Length": "0"})
    header, out = result(r)
    assert header["outputs"][0]["shape"] == [2, 3]
    assert out["output"] == [1, 2, 3, 4, 5, 6]
    r = requests.post(served.url("/v2/models/id/infer"), data=raw[:20],
                      headers={"Inference-Header-Content-Length": "0"})
    assert_error(r, 400, "whole rows", "not a multiple of 12")


# ---- what a wrong request gets ------------------------------------------

def test_binary_too_large_413(start_nginx, backend_proc):
    be = backend_proc("id=builtin:identity:3", extra=["--slot-bytes", "1024"])
    ngx = start_nginx(http=infer_http(be), server=LOC, workers=1)
    wait_connected(ngx, 1)
    _, out = result(infer(ngx, "id", [Input("input", [60, 3], "FP32",
                                            [1.0] * 180)]))
    assert len(out["output"]) == 180
    r = infer(ngx, "id", [Input("input", [100, 3], "FP32", [1.0] * 300)])
    assert r.status_code == 413, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    # the slot went back
    result(infer(ngx, "id", [Input("input", [1, 3], "FP32", [1.0] * 3)]))


def test_size_mismatch_names_the_input(served):
    inp = Input("input", [1, 3], "FP32", [1, 2, 3])
    body, json_size = request_body([inp])
    url = served.url("/v2/models/id/infer")
    hdr = {"Inference-Header-Content-Length": str(json_size)}

    # announced size wrong for the shape
    req = json.loads(body[:json_size])
    req["inputs"][0]["parameters"]["binary_data_size"] = 8
    j = json.dumps(req).encode()
    r = requests.post(url, data=j + inp.raw()[:8], headers={
        "Inference-Header-Content-Length": str(len(j))})
    assert_error(r, 400, "input \"input\"", "\"binary_data_size\" is 8",
                 "shape [1,3] of FP32 needs 12")

    # the body is cut short
    r = requests.post(url, data=body[:-4], headers=hdr)
    assert_error(r, 400, "input \"input\"", "only 8 bytes")

    # bytes left over
    r = requests.post(url, data=body + b"\0\0\0\0", headers=hdr)
    assert_error(r, 400, "16 bytes of binary data", "take 12")

    # FP64 shape with FP32 bytes
    req["inputs"][0]["datatype"] = "FP64"
    req["inputs"][0]["parameters"]["binary_data_size"] = 12
    j = json.dumps(req).encode()
    r = requests.post(url, data=j + inp.raw(), headers={
        "Inference-Header-Content-Length": str(len(j))})
    assert_error(r, 400, "input \"input\"", "FP64 needs 24")


@pytest.mark.parametrize("value", ["abc", "-1", "99999", "1.5", ""])
def test_bad_header_length(served, value):
    body, _ = request_body([Input("input", [1, 3], "FP32", [1, 2, 3])])
    r = requests.post(served.url("/v2/models/id/infer"), data=body,
                      headers={"Inference-Header-Content-Length": value})
    assert_error(r, 400, "inference header size should be in range (0, %d)"
                 % len(body))


def test_header_without_binary_data_says_so(served):
    # the header, but the input has neither data nor binary_data_size
    j = json.dumps({"inputs": [{"name": "input", "shape": [1, 3],
                                "datatype": "FP32"}]}).encode()
    r = requests.post(served.url("/v2/models/id/infer"), data=j,
                      headers={"Inference-Header-Content-Length":
                               str(len(j))})
    assert_error(r, 400, "lacks \"data\"", "binary data was expected")

    # binary_data_size without the header
    body, _ = request_body([Input("input", [1, 3], "FP32", [1, 2, 3])])
    r = requests.post(served.url("/v2/models/id/infer"), data=body)
    assert_error(r, 400, "lacks the Inference-Header-Content-Length header")


def test_protocol_errors_match_the_schema(served):
    for r in (requests.get(served.url("/v2/models/nope")),
              requests.get(served.url("/v2/models/nope/stats")),
              requests.get(served.url("/v2/models/v/versions/9/stats")),
              requests.post(served.url("/v2/models/id/infer"), data=b"{"),
              requests.get(served.url("/v2/models/id/infer"))):
        assert r.status_code in (400, 404, 405), r.text
        ERROR.validate(r.json())


# ---- statistics -----------------------------------------------------------

def stats(ngx, path):
    r = requests.get(ngx.url(path), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    STATS.validate(r.json())
    return r.json()["model_stats"]


def wait_stats(ngx, path, cond, timeout=8.0):
    deadline = time.time() + timeout
    while True:
        r = requests.get(ngx.url(path), timeout=10)
        if r.status_code == 200:
            STATS.validate(r.json())
            if cond(r.json()["model_stats"]):
                return r.json()["model_stats"]
        if time.time() > deadline:
            raise AssertionError(f"{path}: {r.status_code} {r.text}")
        time.sleep(0.1)


def test_statistics(served):
    before = time.time() * 1000
    for rows in (1, 4, 64):
        result(infer(served, "id",
                     [Input("input", [rows, 3], "FP32", [1.0] * rows * 3)]))
    result(infer(served, "v", [Input("input", [2, 2], "FP32", [1.0] * 4)]))
    # a refused request reaches no model
    assert_error(infer(served, "id", [Input("input", [1, 4], "FP32",
                                            [1.0] * 4)]), 400)

    ms = wait_stats(served, "/v2/models/id/stats",
                    lambda m: m and m[0]["inference_count"] == 69)
    assert len(ms) == 1
    m = ms[0]
    assert m["name"] == "id" and m["version"] == "1"
    st = m["inference_stats"]
    assert st["success"]["count"] == 3
    assert st["fail"]["count"] == 0
    assert st["queue"]["count"] == 3
    assert st["compute_infer"]["count"] == 3
    assert st["success"]["ns"] == st["queue"]["ns"] + st["compute_infer"]["ns"]
    assert st["success"]["ns"] > 0
    assert 1 <= m["execution_count"] <= 3
    assert before - 5000 <= m["last_inference"] <= time.time() * 1000 + 5000

    # every version without /versions/, one with it; all models
    vs = wait_stats(served, "/v2/models/v/stats",
                    lambda m: any(x["inference_count"] for x in m))
    assert sorted(x["version"] for x in vs) == ["1", "2"]
    assert {x["version"]: x["inference_count"] for x in vs} == \
        {"1": 0, "2": 2}
    one = stats(served, "/v2/models/v/versions/1/stats")
    assert [x["version"] for x in one] == ["1"]
    assert one[0]["last_inference"] == 0
    allm = stats(served, "/v2/models/stats")
    assert sorted((x["name"], x["version"]) for x in allm) == [
        ("id", "1"), ("v", "1"), ("v", "2"), ("wide", "1")]

    assert_error(requests.get(served.url("/v2/models/nope/stats")), 404,
                 "unknown model \"nope\"")
    assert_error(requests.post(served.url("/v2/models/id/stats"), data="x"),
                 405)


# ---- through the response cache ------------------------------------------

def test_cached_binary_answer_stays_readable(start_nginx, backend_proc,
                                             redis_server):
    """A binary answer replayed by infergate_cache must be one the client
    can read: the cache keeps status, type and body only, so without its
    Inference-Header-Content-Length a HIT would be unreadable.  Binary
    answers are therefore not stored (Cache-Control: no-store); JSON
    answers still are."""
    be = backend_proc("id=builtin:identity:3")
    ngx = start_nginx(
        http=infer_http(be) + f"\ninfergate_redis r {redis_server.address} "
        "timeout=200ms;",
        server="location /v2 { infergate_cache redis=r ttl=60s "
               "methods=POST; infergate_infer backend=be; }", workers=1)
    wait_connected(ngx, 1)

    inp = [Input("input", [1, 3], "FP32", [1.0, 2.0, 3.0])]
    for _ in range(3):
        r = infer(ngx, "id", inp)
        _, out = result(r)
        assert out["output"] == [1.0, 2.0, 3.0]
        assert r.headers.get("X-Cache-Status") != "HIT", r.headers

    js = [Input("input", [1, 3], "FP32", [1.0, 2.0, 3.0], binary=False)]
    seen = set()
    for _ in range(20):
        r = infer(ngx, "id", js, outputs=[("output", False)])
        _, out = result(r)
        assert out["output"] == [1.0, 2.0, 3.0]
        seen.add(r.headers.get("X-Cache-Status"))
        if "HIT" in seen:
            break
        time.sleep(0.05)
    assert "HIT" in seen, seen
