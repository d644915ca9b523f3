"""Open Inference Protocol through infergate_infer and infergate_backend:
every route, every datatype, nested and flat data, id echo, protocol
errors (400 {"error"}), 404 for unknown models, 413 for a batch that does
not fit a slot, the keys file's models= restriction, and composition with
auth, limits and schema in the same location.  Real nginx, real
infergate-backend with its builtin models."""

import json
import struct

import pytest
import requests

from conftest import (JSON_CT, assert_problem, bearer, make_key)
from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa


def infer_body(data, shape, dtype="FP32", name="input", **extra):
    body = {"inputs": [{"name": name, "shape": shape, "datatype": dtype,
                        "data": data}]}
    body.update(extra)
    return body


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def assert_error(resp, status, fragment=None):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"] == "application/json", resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]
    if fragment:
        assert fragment in body["error"], body
    return body["error"]


@pytest.fixture
def served(start_nginx, backend_proc):
    """nginx with one worker in front of a backend serving identity
    models: id (3 features), v (versions 1 and 2, 2 features)."""
    be = backend_proc("id=builtin:identity:3", "v:1=builtin:identity:2",
                      "v:2=builtin:identity:2")
    ngx = start_nginx(http=infer_http(be),
                      server="location /v2 { infergate_infer backend=be; }",
                      workers=1)
    wait_connected(ngx, 1)
    return ngx, be


def test_server_routes(served):
    ngx, _ = served
    r = requests.get(ngx.url("/v2"))
    assert r.status_code == 200
    assert r.json()["name"] == "infergate"
    assert r.json()["extensions"] == ["binary_tensor_data"]
    assert requests.get(ngx.url("/v2/")).status_code == 200

    r = requests.get(ngx.url("/v2/health/live"))
    assert r.status_code == 200 and r.content == b""
    r = requests.get(ngx.url("/v2/health/ready"))
    assert r.status_code == 200 and r.content == b""
    assert requests.head(ngx.url("/v2/health/ready")).status_code == 200

    assert_error(requests.get(ngx.url("/v2/health/dead")), 404)
    assert_error(requests.get(ngx.url("/v2/models/")), 404)
    assert_error(requests.get(ngx.url("/v2/models/id/explain")), 404)
    assert_error(requests.get(ngx.url("/v2/models/id/versions/")), 404)
    r = requests.post(ngx.url("/v2/health/live"), data=b"x")
    assert_error(r, 405)
    assert "GET" in r.headers["Allow"]
    assert_error(requests.get(ngx.url("/v2/models/id/infer")), 405)


def test_model_routes(served):
    ngx, _ = served
    r = requests.get(ngx.url("/v2/models/id"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": "id", "versions": ["1"], "platform": "builtin_identity",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "output", "datatype": "FP32",
                     "shape": [-1, 3]}]}

    r = requests.get(ngx.url("/v2/models/v"))
    assert sorted(r.json()["versions"]) == ["1", "2"]
    r = requests.get(ngx.url("/v2/models/v/versions/1"))
    assert r.status_code == 200 and r.json()["name"] == "v"

    assert requests.get(ngx.url("/v2/models/id/ready")).status_code == 200
    assert requests.get(
        ngx.url("/v2/models/v/versions/2/ready")).status_code == 200
    assert requests.get(ngx.url("/v2/models/nope/ready")).status_code == 400
    assert requests.get(
        ngx.url("/v2/models/v/versions/9/ready")).status_code == 400

    assert_error(requests.get(ngx.url("/v2/models/nope")), 404, "nope")
    assert_error(requests.post(ngx.url("/v2/models/nope/infer"),
                               json=infer_body([1, 2, 3], [1, 3])),
                 404, "unknown model \"nope\"")
    assert_error(requests.post(ngx.url("/v2/models/v/versions/7/infer"),
                               json=infer_body([1, 2], [1, 2])),
                 404, "version")


def test_infer_versions(served):
    ngx, _ = served
    for path, ver in (("/v2/models/v/infer", "2"),
                      ("/v2/models/v/versions/1/infer", "1"),
                      ("/v2/models/v/versions/2/infer", "2")):
        r = requests.post(ngx.url(path), json=infer_body([[1, 2]], [1, 2]))
        assert r.status_code == 200, r.text
        assert r.json()["model_name"] == "v"
        assert r.json()["model_version"] == ver


@pytest.mark.parametrize("dtype,data,expect", [
    ("FP32", [[0.1, -2.5, 3e10], [1e-40, -0.0, 7]],
     [f32(0.1), -2.5, f32(3e10), f32(1e-40), 0.0, 7.0]),
    ("FP64", [0.1, 1e-300, -1.5e30, 2.0, 3.0, 4.0],
     [f32(0.1), 0.0, f32(-1.5e30), 2.0, 3.0, 4.0]),
    ("INT32", [[2147483647, -2147483648, 0], [1, 2, 3]],
     [f32(2147483647), -2147483648.0, 0.0, 1.0, 2.0, 3.0]),
    ("INT64", [9223372036854775807, -9223372036854775808, 16777217,
               -1, 0, 1],
     [f32(9223372036854775807), -9223372036854775808.0, 16777216.0,
      -1.0, 0.0, 1.0]),
    ("BOOL", [[True, False, True], [False, False, True]],
     [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
])
def test_datatypes(served, dtype, data, expect):
    ngx, _ = served
    r = requests.post(ngx.url("/v2/models/id/infer"),
                      json=infer_body(data, [2, 3], dtype))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    out = r.json()
    assert out["model_name"] == "id" and out["model_version"] == "1"
    assert "id" not in out
    (o,) = out["outputs"]
    assert o["name"] == "output" and o["datatype"] == "FP32"
    assert o["shape"] == [2, 3]
    # every float comes back bit for bit
    assert [f32(x) for x in o["data"]] == expect


def test_null_is_missing(served):
    ngx, _ = served
    r = requests.post(ngx.url("/v2/models/id/infer"),
                      json=infer_body([None, 1, 2], [1, 3]))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [None, 1, 2]


def test_id_echo_and_members(served):
    ngx, _ = served
    weird = 'a"b\\c\u00e9\u2603\n\x01'
    body = infer_body([[1, 2, 3]], [1, 3], id=weird,
                      parameters={"priority": 1, "x": {"y": [1]}},
                      outputs=[{"name": "output",
                                "parameters": {"binary_data": False}}])
    body["inputs"][0]["parameters"] = {"p": "q"}
    r = requests.post(ngx.url("/v2/models/id/infer"), json=body)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == weird
    assert r.json()["outputs"][0]["data"] == [1, 2, 3]

    # members in any order, data first
    raw = (b'{"inputs":[{"data":[4,5,6],"datatype":"INT32","name":"input",'
           b'"shape":[1,3]}],"id":""}')
    r = requests.post(ngx.url("/v2/models/id/infer"), data=raw)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == ""
    assert r.json()["outputs"][0]["data"] == [4, 5, 6]


@pytest.mark.parametrize("body,fragment", [
    (b"", "empty"),
    (b"{", "malformed JSON"),
    (b"[1]", "JSON object"),
    (b'{"inputs":[]}', "no input tensor"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
     b'"data":[1,2,3],"bogus":1}]}', "unknown member \"bogus\""),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
     b'"data":[1,2,3],"data":[1,2,3]}]}', "duplicate"),
    (b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32",'
     b'"data":[1,2,3]}]}', "unknown input \"x\""),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP16",'
     b'"data":[1,2,3]}]}', "unsupported datatype"),
    (b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32",'
     b'"data":[1,2,3,4]}]}', "shape[1] is 4"),
    (b'{"inputs":[{"name":"input","shape":[3],"datatype":"FP32",'
     b'"data":[1,2,3]}]}', "2 dimensions"),
    (b'{"inputs":[{"name":"input","shape":[2,3],"datatype":"FP32",'
     b'"data":[1,2,3]}]}', "holds 3 values"),
    (b'{"inputs":[{"name":"input","shape":[0,3],"datatype":"FP32",'
     b'"data":[]}]}', "empty"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"INT32",'
     b'"data":[1.5,2,3]}]}', "integers"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"INT32",'
     b'"data":[2147483648,2,3]}]}', "out of range for INT32"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"BOOL",'
     b'"data":[1,0,1]}]}', "true or false"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
     b'"data":[1e39,0,1]}]}', "out of range for FP32"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
     b'"data":["1",0,1]}]}', "numbers or booleans"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
     b'"data":[1,2,3]}],"outputs":[{"name":"nope"}]}', "unknown output"),
    (b'{"id":7,"inputs":[]}', "\"id\" must be a string"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
     b'"data":[NaN,2,3]}]}', "malformed JSON"),
    (b'\xff', "malformed JSON"),
])
def test_malformed(served, body, fragment):
    ngx, _ = served
    r = requests.post(ngx.url("/v2/models/id/infer"), data=body)
    assert_error(r, 400, fragment)


def test_chunked_and_large_body(served):
    """A body that arrives chunked and one larger than the client body
    buffer (spooled to a temp file) decode the same."""
    ngx, _ = served
    rows = [[i, i + 0.5, -i] for i in range(1000)]
    payload = json.dumps(infer_body(rows, [1000, 3])).encode()
    assert len(payload) > 16384

    def gen():
        for i in range(0, len(payload), 1000):
            yield payload[i:i + 1000]

    for data in (payload, gen()):
        r = requests.post(ngx.url("/v2/models/id/infer"), data=data)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [1000, 3]
        assert r.json()["outputs"][0]["data"][-3:] == [999, 999.5, -999]


def test_too_large_413(start_nginx, backend_proc):
    be = backend_proc("id=builtin:identity:3", extra=["--slot-bytes", "1024"])
    ngx = start_nginx(http=infer_http(be),
                      server="location /v2 { infergate_infer backend=be; }",
                      workers=1)
    wait_connected(ngx, 1)
    ok = requests.post(ngx.url("/v2/models/id/infer"),
                       json=infer_body([[1, 2, 3]] * 60, [60, 3]))
    assert ok.status_code == 200, ok.text
    r = requests.post(ngx.url("/v2/models/id/infer"),
                      json=infer_body([[1, 2, 3]] * 100, [100, 3]))
    assert_problem(r, 413)
    # a protocol error is still reported as such
    r = requests.post(ngx.url("/v2/models/id/infer"),
                      json=infer_body([[1, 2, 3]] * 100, [101, 3]))
    assert_error(r, 400, "holds 300 values")
    # the slot went back: the next one is served
    assert requests.post(ngx.url("/v2/models/id/infer"),
                         json=infer_body([1, 2, 3], [1, 3])).status_code \
        == 200


def test_backend_absent(start_nginx, backend_proc):
    be = backend_proc("id=builtin:identity:3", start=False)
    ngx = start_nginx(http=infer_http(be),
                      server="location /v2 { infergate_infer backend=be; }",
                      workers=1)
    assert requests.get(ngx.url("/v2/health/live")).status_code == 200
    assert requests.get(ngx.url("/v2/health/ready")).status_code == 400
    assert requests.get(ngx.url("/v2/models/id/ready")).status_code == 400
    r = requests.post(ngx.url("/v2/models/id/infer"),
                      json=infer_body([1, 2, 3], [1, 3]))
    assert_problem(r, 503)
    assert r.headers["Retry-After"] == "1"
    assert_problem(requests.get(ngx.url("/v2/models/id")), 503)

    # it comes up later: the worker connects without a reload
    be.start()
    wait_connected(ngx, 1)
    r = requests.post(ngx.url("/v2/models/id/infer"),
                      json=infer_body([1, 2, 3], [1, 3]))
    assert r.status_code == 200, r.text
    assert requests.get(ngx.url("/v2/health/ready")).status_code == 200


SCHEMA = json.dumps({
    "type": "object",
    "required": ["inputs"],
    "properties": {"inputs": {"type": "array", "maxItems": 1}},
})


def test_auth_limit_schema_models(start_nginx, backend_proc):
    be = backend_proc("id=builtin:identity:3", "other=builtin:identity:3")
    only_id, only_id_line = make_key("acme", "models=id")
    anyk, any_line = make_key("globex")
    http = (infer_http(be) + "\ninfergate_keys keys.txt;\n"
            "infergate_limit_zone z 1m;\n")
    server = """
        location ~ ^/v2/models/[^/]+(/versions/[^/]+)?/infer$ {
            infergate_auth on;
            infergate_limit zone=z rate=4r/m burst=4;
            infergate_schema infer.json;
            infergate_infer backend=be;
        }
        location /v2 {
            infergate_auth on;
            infergate_infer backend=be;
        }
    """
    ngx = start_nginx(http=http, server=server, workers=1,
                      files={"keys.txt": only_id_line + "\n" + any_line
                             + "\n", "infer.json": SCHEMA})
    wait_connected(ngx, 1)
    url = ngx.url("/v2/models/id/infer")
    good = infer_body([1, 2, 3], [1, 3])

    # no key: 401 before anything else
    assert_problem(requests.post(url, json=good), 401)

    r = requests.post(url, json=good, headers=bearer(only_id))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [1, 2, 3]

    # models=: the other model is forbidden for this tenant
    r = requests.post(ngx.url("/v2/models/other/infer"), json=good,
                      headers=bearer(only_id))
    assert_problem(r, 403)
    r = requests.post(ngx.url("/v2/models/other/infer"), json=good,
                      headers=bearer(anyk))
    assert r.status_code == 200, r.text

    # the schema refuses before the codec sees the body
    r = requests.post(url, json={"id": "x"},
                      headers={**bearer(anyk), **JSON_CT})
    assert_problem(r, 400)
    # a schema-valid body with a protocol error: the protocol's 400
    r = requests.post(url, json=infer_body([1, 2], [1, 2]),
                      headers=bearer(anyk))
    assert_error(r, 400, "shape")

    # the GET routes next to it: auth and models= apply, no schema
    r = requests.get(ngx.url("/v2/models/id"), headers=bearer(only_id))
    assert r.status_code == 200 and r.json()["name"] == "id", r.text
    assert requests.get(ngx.url("/v2/health/ready"),
                        headers=bearer(only_id)).status_code == 200
    assert_problem(requests.get(ngx.url("/v2/models/other"),
                                headers=bearer(only_id)), 403)
    assert_problem(requests.get(ngx.url("/v2/models/id")), 401)

    # the limit: quota 4 per minute for a tenant, then 429
    codes = [requests.post(url, json=good, headers=bearer(only_id))
             .status_code for _ in range(8)]
    assert 429 in codes, codes
    assert codes[0] == 200, codes


@pytest.mark.parametrize("http,server,message", [
    ("infergate_backend be tcp:127.0.0.1:1;", "",
     "infergate_backend: \"tcp:127.0.0.1:1\": the address must be"),
    ("infergate_backend be unix:/x timeout=abc;", "",
     "infergate_backend: invalid timeout \"abc\""),
    ("infergate_backend be unix:/x timeout=0;", "",
     "infergate_backend: invalid timeout"),
    ("infergate_backend be unix:/x max_inflight=0;", "",
     "infergate_backend: max_inflight must be between 1 and 4096"),
    ("infergate_backend be unix:/x max_inflight=99999;", "",
     "infergate_backend: max_inflight must be between"),
    ("infergate_backend be unix:/x colour=red;", "",
     "infergate_backend: unknown parameter \"colour=red\""),
    ("infergate_backend be unix:/x; infergate_backend be unix:/y;", "",
     "infergate_backend: \"be\" is duplicate"),
    ("infergate_backend be unix:/" + "x" * 120 + ";", "",
     "is too long"),
    ("", "location /v2 { infergate_infer backend=nope; }",
     "infergate_infer: unknown backend \"nope\""),
    ("infergate_backend be unix:/x;",
     "location /v2 { infergate_infer be; }",
     "infergate_infer: expected \"backend=NAME\""),
    ("infergate_backend be unix:/x;",
     "location /v2 { infergate_infer backend=be; infergate_infer "
     "backend=be; }", "\"infergate_infer\" directive is duplicate"),
])
def test_config_errors(nginx_t, http, server, message):
    rc, out = nginx_t(http=http, server=server)
    assert rc != 0, out
    assert message in out, out


def test_config_ok(nginx_t):
    rc, out = nginx_t(http="infergate_backend be unix:/nonexistent.sock "
                           "timeout=250ms max_inflight=8;",
                      server="location /v2 { infergate_infer backend=be; }")
    assert rc == 0, out


def test_real_xgboost_model_end_to_end(start_nginx, backend_proc, tmp_path):
    """A real XGBoost model through nginx: FP64 rows with missing values
    (null) answer what xgboost's own predict gives."""
    xgb = pytest.importorskip("xgboost")
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(3)
    X = rng.random((400, 5))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 2]) > 1).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 5},
                        xgb.DMatrix(X, label=y, missing=np.nan), 30)
    path = tmp_path / "risk.json"
    booster.save_model(str(path))
    rows = X[:64]
    want = booster.predict(xgb.DMatrix(rows, missing=np.nan))

    be = backend_proc(f"risk={path}", extra=["--device", "cpu"])
    ngx = start_nginx(http=infer_http(be),
                      server="location /v2 { infergate_infer backend=be; }",
                      workers=1)
    wait_connected(ngx, 1)
    meta = requests.get(ngx.url("/v2/models/risk")).json()
    assert meta["platform"] == "xgboost_json", meta
    (inp,) = meta["inputs"]
    assert inp["shape"] == [-1, 5], meta

    data = [[None if np.isnan(v) else float(v) for v in row] for row in rows]
    r = requests.post(ngx.url("/v2/models/risk/infer"), json={
        "id": "xgb", "inputs": [{"name": inp["name"], "shape": [64, 5],
                                 "datatype": "FP64", "data": data}]})
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["shape"][0] == 64
    got = np.array(out["data"], dtype="float32")
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-6
