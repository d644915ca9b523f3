"""inference.GRPCInferenceService over HTTP/2 (cleartext, prior
knowledge) from an infergate_infer location, with Debian's python3-grpcio
as the client and stubs generated at test time from
ngx_module/ngx_http_infergate_grpc.proto: every RPC, raw and typed
tensors, 1 and 256 rows, every refusal as its gRPC code (admission ones
as Trailers-Only through problem.c), grpc-timeout, a client cancelling
mid-call, concurrency, a message cut short, a compressed message and
malformed protobuf.  Real nginx, real infergate-backend."""

import importlib
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, make_key
from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa

grpc = pytest.importorskip("grpc")

PROTO = REPO / "ngx_module" / "ngx_http_infergate_grpc.proto"
SVC = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """(messages, stubs) generated from our .proto by grpc_tools."""
    out = tmp_path_factory.mktemp("stubs")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc",
                    f"-I{PROTO.parent}", f"--python_out={out}",
                    f"--grpc_python_out={out}", str(PROTO)], check=True)
    sys.path.insert(0, str(out))
    try:
        m = importlib.import_module("ngx_http_infergate_grpc_pb2")
        s = importlib.import_module("ngx_http_infergate_grpc_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return m, s


LOCATION = "location / { infergate_infer backend=be; }"


def serve(start_nginx, backend_proc, models=None, http="", server=LOCATION,
          files=None, extra=()):
    be = backend_proc(*(models or ("id=builtin:identity:3",
                                   "v:1=builtin:identity:2",
                                   "v:2=builtin:identity:2")), extra=extra)
    ngx = start_nginx(http=infer_http(be) + "\n" + http, server=server,
                      workers=1, listen="http2", files=files)
    wait_connected(ngx, 1)
    return ngx, be


class Client:
    def __init__(self, ngx, pb, metadata=()):
        self.m, s = pb
        self.ch = grpc.insecure_channel(f"127.0.0.1:{ngx.port}")
        self.stub = s.GRPCInferenceServiceStub(self.ch)
        self.md = list(metadata)

    def __getattr__(self, name):
        call = getattr(self.stub, name)
        return lambda req, **kw: call(req, metadata=self.md, timeout=kw.pop(
            "timeout", 10), **kw)

    def raw(self, method, data, timeout=10):
        """the method with bytes as they are: (code, details)"""
        f = self.ch.unary_unary(SVC + method,
                                request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
        try:
            return grpc.StatusCode.OK, f(data, metadata=self.md,
                                         timeout=timeout)
        except grpc.RpcError as e:
            return e.code(), e.details()

    def close(self):
        self.ch.close()


def infer_req(m, values, shape, dtype="FP32", raw=False, name="input",
              model="id", **kw):
    t = m.ModelInferRequest.InferInputTensor(name=name, datatype=dtype,
                                             shape=shape)
    req = m.ModelInferRequest(model_name=model, inputs=[t], **kw)
    fmt = {"FP32": "f", "FP64": "d", "INT32": "i", "INT64": "q",
           "BOOL": "?"}[dtype]
    if raw:
        req.raw_input_contents.append(struct.pack(f"<{len(values)}{fmt}",
                                                  *values))
    else:
        field = {"FP32": "fp32_contents", "FP64": "fp64_contents",
                 "INT32": "int_contents", "INT64": "int64_contents",
                 "BOOL": "bool_contents"}[dtype]
        getattr(req.inputs[0].contents, field).extend(values)
    return req


def outputs(resp):
    o = resp.outputs[0]
    if resp.raw_output_contents:
        b = resp.raw_output_contents[0]
        return list(struct.unpack(f"<{len(b) // 4}f", b))
    return list(o.contents.fp32_contents)


def expect(code, fn, *a, fragment=None, **kw):
    with pytest.raises(grpc.RpcError) as ei:
        fn(*a, **kw)
    assert ei.value.code() == code, (ei.value.code(), ei.value.details())
    if fragment:
        assert fragment in ei.value.details(), ei.value.details()
    return ei.value


def test_server_rpcs(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    m = c.m
    assert c.ServerLive(m.ServerLiveRequest()).live is True
    assert c.ServerReady(m.ServerReadyRequest()).ready is True
    md = c.ServerMetadata(m.ServerMetadataRequest())
    assert md.name == "infergate" and md.version == "1.0"
    c.close()


def test_model_ready_and_metadata(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    m = c.m
    assert c.ModelReady(m.ModelReadyRequest(name="id")).ready is True
    assert c.ModelReady(m.ModelReadyRequest(name="v", version="2")).ready
    assert c.ModelReady(m.ModelReadyRequest(name="nope")).ready is False
    assert c.ModelReady(m.ModelReadyRequest(name="v",
                                            version="9")).ready is False

    md = c.ModelMetadata(m.ModelMetadataRequest(name="v"))
    assert md.name == "v" and sorted(md.versions) == ["1", "2"]
    assert md.platform
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == \
        [("input", "FP32", [-1, 2])]
    assert [t.name for t in md.outputs] == ["output"]

    expect(grpc.StatusCode.NOT_FOUND, c.ModelMetadata,
           m.ModelMetadataRequest(name="nope"), fragment='"nope"')
    expect(grpc.StatusCode.NOT_FOUND, c.ModelMetadata,
           m.ModelMetadataRequest(name="v", version="7"),
           fragment='version "7"')
    c.close()


@pytest.mark.parametrize("rows", [1, 256])
@pytest.mark.parametrize("raw", [False, True])
def test_infer_rows(start_nginx, backend_proc, pb, rows, raw):
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    vals = [float(i % 97) + 0.5 for i in range(rows * 3)]
    resp = c.ModelInfer(infer_req(c.m, vals, [rows, 3], raw=raw, id="r-1"))
    assert resp.model_name == "id" and resp.id == "r-1"
    o = resp.outputs[0]
    assert (o.name, o.datatype, list(o.shape)) == ("output", "FP32",
                                                   [rows, 3])
    # the answer mirrors the request: raw for raw, typed for typed
    assert bool(resp.raw_output_contents) == raw
    assert outputs(resp) == vals
    c.close()


@pytest.mark.parametrize("dtype,vals,want", [
    ("BOOL", [True, False, True], [1.0, 0.0, 1.0]),
    ("INT32", [-5, 0, 2147483647], [-5.0, 0.0, 2147483648.0]),
    ("INT64", [-(2 ** 40), 7, 1], [-(2.0 ** 40), 7.0, 1.0]),
    ("FP64", [0.25, -1e30, 3.0], [0.25, struct.unpack(
        "f", struct.pack("f", -1e30))[0], 3.0]),
])
def test_infer_datatypes(start_nginx, backend_proc, pb, dtype, vals, want):
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    for raw in (False, True):
        resp = c.ModelInfer(infer_req(c.m, vals, [1, 3], dtype, raw=raw))
        assert outputs(resp) == want, (dtype, raw)
    c.close()


def test_infer_versions(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    r = c.ModelInfer(infer_req(c.m, [1, 2], [1, 2], model="v",
                               model_version="1"))
    assert (r.model_name, r.model_version) == ("v", "1")
    r = c.ModelInfer(infer_req(c.m, [1, 2], [1, 2], model="v"))
    assert r.model_version == "2"
    expect(grpc.StatusCode.NOT_FOUND, c.ModelInfer,
           infer_req(c.m, [1, 2], [1, 2], model="v", model_version="3"))
    expect(grpc.StatusCode.NOT_FOUND, c.ModelInfer,
           infer_req(c.m, [1, 2, 3], [1, 3], model="nope"),
           fragment='unknown model "nope"')
    c.close()


def test_infer_invalid_argument(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    m = c.m
    bad = grpc.StatusCode.INVALID_ARGUMENT

    expect(bad, c.ModelInfer, infer_req(m, [1, 2, 3], [1, 3], name="x"),
           fragment='unknown input "x"')
    expect(bad, c.ModelInfer, infer_req(m, [1, 2, 3, 4], [1, 4]),
           fragment="shape[1] is 4, the model needs 3")
    expect(bad, c.ModelInfer, infer_req(m, [1, 2, 3], [3]),
           fragment="must have 2 dimensions")
    expect(bad, c.ModelInfer, infer_req(m, [], [0, 3]),
           fragment="must not be empty")
    expect(bad, c.ModelInfer, infer_req(m, [1, 2], [1, 3]),
           fragment="contents holds 2 values")
    expect(bad, c.ModelInfer, infer_req(m, [1, 2], [1, 3], raw=True),
           fragment="raw_input_contents[0] holds 8 bytes")

    r = infer_req(m, [1, 2, 3], [1, 3])
    r.inputs[0].datatype = "FP16"
    expect(bad, c.ModelInfer, r, fragment='unsupported datatype "FP16"')

    r = infer_req(m, [1, 2, 3], [1, 3])
    r.inputs[0].datatype = "INT32"      # fp32_contents with INT32
    expect(bad, c.ModelInfer, r, fragment="INT32 data goes in the contents")

    r = infer_req(m, [1, 2, 3], [1, 3], raw=True)
    r.inputs[0].contents.fp32_contents.extend([1, 2, 3])
    expect(bad, c.ModelInfer, r, fragment="use one")

    r = infer_req(m, [1, 2, 3], [1, 3])
    r.inputs[0].ClearField("contents")
    expect(bad, c.ModelInfer, r, fragment="has no data")

    r = infer_req(m, [1, 2, 3], [1, 3])
    r.inputs.append(r.inputs[0])
    expect(bad, c.ModelInfer, r, fragment="one input tensor")

    r = infer_req(m, [1, 2, 3], [1, 3])
    r.outputs.add(name="nope")
    expect(bad, c.ModelInfer, r, fragment='unknown output "nope"')

    r = infer_req(m, [1, 2, 3], [1, 3], raw=True, dtype="FP64")
    r.raw_input_contents[0] = struct.pack("<3d", 1, 1e300, 2)
    expect(bad, c.ModelInfer, r, fragment="out of range")

    # the gateway still answers after all of that
    assert outputs(c.ModelInfer(infer_req(m, [1, 2, 3], [1, 3]))) == \
        [1, 2, 3]
    c.close()


def test_too_many_rows(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc,
                   extra=("--slot-bytes", "4096"))
    c = Client(ngx, pb)
    vals = [1.0] * 3000
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, c.ModelInfer,
           infer_req(c.m, vals, [1000, 3]), fragment="send fewer rows")
    c.close()


def test_unknown_method_and_malformed(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    code, details = c.raw("RepositoryIndex", b"")
    assert code == grpc.StatusCode.UNIMPLEMENTED, (code, details)
    assert "RepositoryIndex" in details

    # malformed protobuf: a truncated varint, a wrong wire type, a
    # length past the end
    for junk in (b"\x0a\xff", b"\x0a\x05ab", b"\x08\xff\xff\xff",
                 b"\x2a\x80\x80\x80\x80\x10"):
        for method in ("ModelInfer", "ModelMetadata", "ModelReady",
                       "ServerLive"):
            code, details = c.raw(method, junk)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, \
                (method, junk, code, details)
            assert "malformed" in details
    assert c.ServerLive(c.m.ServerLiveRequest()).live
    c.close()


def curl_grpc(ngx, method, body, headers=()):
    """a hand-made call: (response headers and trailers as one dict,
    body) through curl --http2-prior-knowledge"""
    args = ["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-D",
            "/dev/stderr", "-H", "content-type: application/grpc",
            "-H", "te: trailers", "--data-binary", "@-"]
    for h in headers:
        args += ["-H", h]
    args.append(f"http://127.0.0.1:{ngx.port}{SVC}{method}")
    r = subprocess.run(args, input=body, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    hdrs = {}
    for ln in r.stderr.decode().splitlines():
        if ":" in ln and not ln.startswith("HTTP/"):
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        elif ln.startswith("HTTP/"):
            hdrs[":status"] = ln.split()[1]
    return hdrs, r.stdout


def frame(msg, flag=0, length=None):
    return struct.pack(">BI", flag, len(msg) if length is None
                       else length) + msg


def test_framing(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc)
    m, _ = pb
    ok = m.ServerLiveRequest().SerializeToString()

    h, body = curl_grpc(ngx, "ServerLive", frame(ok))
    assert h[":status"] == "200" and h["grpc-status"] == "0", h
    assert h["content-type"] == "application/grpc"
    assert m.ServerLiveResponse.FromString(body[5:]).live
    assert struct.unpack(">BI", body[:5]) == (0, len(body) - 5)

    msg = infer_req(m, [1, 2, 3], [1, 3]).SerializeToString()
    cases = [
        (frame(msg)[:-4], "13", "cut short"),         # a body cut short
        (frame(msg)[:3], "13", "incomplete length prefix"),
        (b"", "13", "no request message"),
        (frame(msg) + frame(msg), "13", "one request message"),
        (frame(msg, length=64 << 20), "8", "larger than"),
        (frame(msg, flag=1), "13", "without a grpc-encoding"),
        (frame(msg, flag=7), "13", "compressed flag"),
    ]
    for data, code, frag in cases:
        h, body = curl_grpc(ngx, "ModelInfer", data)
        assert h[":status"] == "200", h
        assert h.get("grpc-status") == code, (data[:8], h)
        assert frag in h["grpc-message"].replace("%20", " "), h
        assert body == b""          # Trailers-Only

    # grpc-message is percent-encoded
    h, _ = curl_grpc(ngx, "ModelInfer", frame(infer_req(
        m, [1, 2, 3], [1, 3], model="caf\u00e9%").SerializeToString()))
    assert h["grpc-status"] == "5"
    assert "caf%C3%A9%25" in h["grpc-message"], h

    h, _ = curl_grpc(ngx, "ServerLive", frame(ok), ["grpc-timeout: 1x"])
    assert h["grpc-status"] == "3" and "grpc-timeout" in \
        h["grpc-message"].replace("%20", " ")

    # the gateway still serves afterwards
    h, body = curl_grpc(ngx, "ModelInfer", frame(msg))
    assert h["grpc-status"] == "0", h
    r = m.ModelInferResponse.FromString(body[5:])
    assert list(r.outputs[0].contents.fp32_contents) == [1, 2, 3]


def test_deadline(start_nginx, backend_proc, pb):
    """grpc-timeout is the gateway's deadline too: a call without a
    client-side deadline (curl) that sets grpc-timeout gets
    DEADLINE_EXCEEDED from the gateway while the model still runs."""
    ngx, _ = serve(start_nginx, backend_proc,
                   models=("slow=builtin:sleep:3:400000",
                           "id=builtin:identity:3"),
                   extra=("--queue-timeout-us", "5000000"))
    m, _ = pb
    msg = frame(infer_req(m, [1, 2, 3], [1, 3],
                          model="slow").SerializeToString())
    t0 = time.time()
    h, body = curl_grpc(ngx, "ModelInfer", msg, ["grpc-timeout: 100m"])
    took = time.time() - t0
    assert h.get("grpc-status") == "4", h
    assert "grpc-timeout" in h["grpc-message"].replace("%20", " ")
    assert took < 0.35, took

    # without a deadline the slow model answers; the slot came back
    h, body = curl_grpc(ngx, "ModelInfer", msg, ["grpc-timeout: 5S"])
    assert h.get("grpc-status") == "0", h

    # and through grpcio with its own deadline
    c = Client(ngx, pb)
    expect(grpc.StatusCode.DEADLINE_EXCEEDED, c.ModelInfer,
           infer_req(m, [1, 2, 3], [1, 3], model="slow"), timeout=0.1)
    time.sleep(0.5)
    assert outputs(c.ModelInfer(infer_req(m, [1, 2, 3], [1, 3]))) == \
        [1, 2, 3]
    c.close()


def test_cancel_mid_call(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc,
                   models=("slow=builtin:sleep:3:300000",
                           "id=builtin:identity:3"),
                   extra=("--slots", "8"))
    c = Client(ngx, pb)
    m = c.m
    # more cancelled calls than the worker has slots: each slot must
    # come back when the backend answers the abandoned request
    for _ in range(3):
        futs = [c.stub.ModelInfer.future(
            infer_req(m, [1, 2, 3], [1, 3], model="slow"), timeout=10)
            for _ in range(8)]
        time.sleep(0.05)
        for f in futs:
            assert f.cancel()
        for f in futs:
            assert f.cancelled()
        time.sleep(0.4)
    r = c.ModelInfer(infer_req(m, [4, 5, 6], [1, 3], model="slow"))
    assert outputs(r) == [4, 5, 6]
    c.close()
    assert "exited on signal" not in ngx.error_log


def test_concurrency(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc)
    errors = []

    def worker(k):
        c = Client(ngx, pb)
        try:
            for i in range(40):
                rows = 1 + (k * 7 + i) % 64
                vals = [float(k * 1000 + i + j) for j in range(rows * 3)]
                r = c.ModelInfer(infer_req(c.m, vals, [rows, 3],
                                           raw=bool(i % 2), id=f"{k}-{i}"))
                if r.id != f"{k}-{i}" or outputs(r) != vals:
                    errors.append((k, i))
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors[:5]


def test_backend_unavailable(start_nginx, backend_proc, pb):
    ngx, be = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    be.kill9()
    deadline = time.time() + 10
    while time.time() < deadline:
        if not c.ServerReady(c.m.ServerReadyRequest()).ready:
            break
        time.sleep(0.05)
    ngx.allowed_log.append(r"infergate")
    e = expect(grpc.StatusCode.UNAVAILABLE, c.ModelInfer,
               infer_req(c.m, [1, 2, 3], [1, 3]), fragment="backend")
    md = dict(e.trailing_metadata() or ())
    assert md.get("grpc-retry-pushback-ms") == "1000", md
    assert c.ServerLive(c.m.ServerLiveRequest()).live
    c.close()


def test_backend_fails(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc,
                   models=("bad=builtin:fail:3",))
    ngx.allowed_log.append(r"backend failed the request")
    c = Client(ngx, pb)
    expect(grpc.StatusCode.INTERNAL, c.ModelInfer,
           infer_req(c.m, [1, 2, 3], [1, 3], model="bad"),
           fragment="the model failed")
    c.close()


SCHEMA = '{"type":"object","required":["inputs"]}'


def audit_key(tmp_path):
    import os
    from conftest import BUILD
    out = subprocess.run([str(BUILD / "infergate-audit"), "keygen", "k1"],
                         capture_output=True, text=True, check=True)
    path = tmp_path / "audit.key"
    path.write_text(out.stdout.strip() + "\n")
    os.chmod(path, 0o600)
    return path


def test_admission_chain(start_nginx, backend_proc, pb, tmp_path):
    """auth (Bearer and x-api-key metadata), the key's models=, a limit
    with its pushback, a schema location, the audit record: each refusal
    is Trailers-Only with the gRPC code that means it."""
    import json
    only_id, only_id_line = make_key("acme", "models=id")
    anyk, any_line = make_key("globex")
    key = audit_key(tmp_path)
    http = ("infergate_keys keys.txt;\ninfergate_limit_zone z 1m;\n"
            f"infergate_audit @PREFIX@/audit.log key={key} key_id=k1 "
            "flush=100ms;\n")
    server = f"""
        location /inference.GRPCInferenceService/ {{
            infergate_auth on;
            infergate_limit zone=z rate=3r/m burst=3 key=$infergate_tenant;
            infergate_infer backend=be;
        }}
        location / {{
            infergate_schema @PREFIX@/s.json;
            infergate_infer backend=be;
        }}
    """
    ngx, _ = serve(start_nginx, backend_proc,
                   models=("id=builtin:identity:3",
                           "other=builtin:identity:3"),
                   http=http, server=server,
                   files={"keys.txt": only_id_line + "\n" + any_line + "\n",
                          "s.json": SCHEMA})
    m, _ = pb
    req = infer_req(m, [1, 2, 3], [1, 3])

    # the problem's detail, not the HTTP fallback mapping of a 401
    c = Client(ngx, pb)
    e = expect(grpc.StatusCode.UNAUTHENTICATED, c.ModelInfer, req,
               fragment="Bearer")
    assert "http2 header" not in e.details()
    c.close()
    c = Client(ngx, pb, [("authorization", "Bearer igk_nope")])
    e = expect(grpc.StatusCode.UNAUTHENTICATED, c.ModelInfer, req)
    assert e.details()
    c.close()

    # x-api-key metadata; the key's models= is checked on the message's
    # model (ModelInfer, ModelMetadata, ModelReady alike)
    c = Client(ngx, pb, [("x-api-key", only_id)])
    assert outputs(c.ModelInfer(req)) == [1, 2, 3]
    for call, r in ((c.ModelInfer, infer_req(m, [1, 2, 3], [1, 3],
                                             model="other")),
                    (c.ModelMetadata, m.ModelMetadataRequest(name="other")),
                    (c.ModelReady, m.ModelReadyRequest(name="other"))):
        expect(grpc.StatusCode.PERMISSION_DENIED, call, r,
               fragment='model "other"')
    c.close()

    # the fourth call of globex's burst of 3 (+1 at the rate)
    c = Client(ngx, pb, [("authorization", f"Bearer {anyk}")])
    seen = []
    for _ in range(6):
        try:
            c.ModelInfer(infer_req(m, [1, 2, 3], [1, 3], model="other"))
            seen.append("ok")
        except grpc.RpcError as e:
            seen.append(e)
    refused = [e for e in seen if e != "ok"]
    assert refused and seen[0] == "ok", seen
    e = refused[0]
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
    md = dict(e.trailing_metadata())
    ms = int(md["grpc-retry-pushback-ms"])
    assert 1000 <= ms <= 60000 and ms % 1000 == 0, md
    c.close()

    # a location with a schema validates JSON: gRPC is refused clearly
    c = Client(ngx, pb)
    c.ch.close()
    c.ch = grpc.insecure_channel(f"127.0.0.1:{ngx.port}")
    f = c.ch.unary_unary("/other.Service/ModelInfer",
                         request_serializer=lambda b: b,
                         response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as ei:
        f(req.SerializeToString(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "gRPC is not served on this location" in ei.value.details()
    c.close()

    # the audit record of a gRPC call names its model and action
    time.sleep(0.4)
    ngx.stop()
    recs = [json.loads(ln) for ln in
            (ngx.prefix / "audit.log").read_text().splitlines()]
    grpc_recs = [r for r in recs if r.get("url", {}).get("path", "")
                 .startswith(SVC)]
    acts = [(r["event"]["action"], r.get("infergate", {}).get("model"))
            for r in grpc_recs]
    assert ("infer", "id") in acts, acts
    assert ("forbidden", "other") in acts, acts
    assert any(a == "rate_limited" for a, _ in acts), acts


def test_model_statistics(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc, server=LOCATION + """
        location = /metrics { infergate_metrics; }""")
    c = Client(ngx, pb)
    m = c.m
    for rows in (1, 2, 5):
        c.ModelInfer(infer_req(m, [1.0] * rows * 3, [rows, 3]))
    c.ModelInfer(infer_req(m, [1, 2], [1, 2], model="v", model_version="1"))

    # the zone holds the backend's counters of about a second ago
    deadline = time.time() + 10
    while True:
        st = c.ModelStatistics(m.ModelStatisticsRequest(name="id"))
        if st.model_stats and st.model_stats[0].inference_count == 8:
            break
        assert time.time() < deadline, st
        time.sleep(0.2)
    s = st.model_stats[0]
    assert (s.name, s.inference_count) == ("id", 8)
    assert 1 <= s.execution_count <= 3
    assert s.inference_stats.success.count == 3
    assert s.inference_stats.fail.count == 0
    assert s.inference_stats.compute_infer.count == s.execution_count

    every = c.ModelStatistics(m.ModelStatisticsRequest())
    assert sorted((x.name, x.version) for x in every.model_stats) == \
        [("id", ""), ("v", "1"), ("v", "2")] or \
        sorted(x.name for x in every.model_stats) == ["id", "v", "v"]
    one = c.ModelStatistics(m.ModelStatisticsRequest(name="v", version="1"))
    assert [(x.name, x.version) for x in one.model_stats] == [("v", "1")]

    expect(grpc.StatusCode.NOT_FOUND, c.ModelStatistics,
           m.ModelStatisticsRequest(name="nope"))
    c.close()


def test_model_statistics_needs_metrics(start_nginx, backend_proc, pb):
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    expect(grpc.StatusCode.FAILED_PRECONDITION, c.ModelStatistics,
           c.m.ModelStatisticsRequest(name="id"), fragment="infergate_metrics")
    c.close()


def test_body_over_client_max_body_size(start_nginx, backend_proc, pb):
    """nginx's own 413 (the body outgrew client_max_body_size while it
    streamed in, no content-length) reaches the client as
    RESOURCE_EXHAUSTED, not as a bare HTTP status it would call UNKNOWN"""
    ngx, _ = serve(start_nginx, backend_proc, server="""
        location / { client_max_body_size 2k; infergate_infer backend=be; }
    """)
    ngx.allowed_log.append(r"too large")
    c = Client(ngx, pb)
    e = expect(grpc.StatusCode.RESOURCE_EXHAUSTED, c.ModelInfer,
               infer_req(c.m, [1.0] * 768, [256, 3]),
               fragment="client_max_body_size")
    assert outputs(c.ModelInfer(infer_req(c.m, [1, 2, 3], [1, 3]))) == \
        [1, 2, 3]
    c.close()
    # and an error page nginx makes for another reason: 405 for GET
    h = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-",
                        "-o", "/dev/null", "-H",
                        "content-type: application/grpc",
                        f"http://127.0.0.1:{ngx.port}{SVC}ServerLive"],
                       capture_output=True, text=True, timeout=30).stdout
    assert "grpc-status: 12" in h, h
    assert e


def test_tls(start_nginx, backend_proc, pb, tmp_path):
    """listen ... ssl http2: the same service over TLS (ALPN h2)"""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    be = backend_proc("id=builtin:identity:3")
    ngx = start_nginx(http=infer_http(be), workers=1, listen="ssl http2",
                      server=f"ssl_certificate {cert}; "
                             f"ssl_certificate_key {key};\n" + LOCATION)
    wait_connected(ngx, 1)
    m, s = pb
    ch = grpc.secure_channel(
        f"127.0.0.1:{ngx.port}",
        grpc.ssl_channel_credentials(root_certificates=cert.read_bytes()),
        options=[("grpc.ssl_target_name_override", "localhost")])
    stub = s.GRPCInferenceServiceStub(ch)
    assert stub.ServerLive(m.ServerLiveRequest(), timeout=10).live
    r = stub.ModelInfer(infer_req(m, [1, 2, 3], [1, 3], raw=True),
                        timeout=10)
    assert outputs(r) == [1, 2, 3]
    with pytest.raises(grpc.RpcError) as ei:
        stub.ModelInfer(infer_req(m, [1, 2], [1, 3]), timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ch.close()


def test_non_grpc_answer(start_nginx, backend_proc, pb):
    """a location where infergate took part that answers a gRPC call with
    something else (here an origin behind a limit, as a cache entry of the
    HTTP protocol would) gives INTERNAL with trailers, never a body the
    client cannot frame; an error page anywhere becomes its gRPC status;
    a 200 where no infergate stage ran is left alone"""
    ngx, _ = serve(start_nginx, backend_proc, http="""
        infergate_limit_zone z 1m;""", server="""
        location /inference.GRPCInferenceService/ServerLive {
            infergate_limit zone=z rate=100r/s burst=100;
            @PROXY@
        }
        location /inference.GRPCInferenceService/ServerMetadata {
            default_type text/plain; return 200 "hello";
        }
        location /inference.GRPCInferenceService/ServerReady {
            return 404;
        }
        location / { infergate_infer backend=be; }
    """)
    ngx.allowed_log.append(r"answered a gRPC call")
    c = Client(ngx, pb)
    expect(grpc.StatusCode.INTERNAL, c.ServerLive, c.m.ServerLiveRequest(),
           fragment="not gRPC")
    expect(grpc.StatusCode.NOT_FOUND, c.ServerReady,
           c.m.ServerReadyRequest(), fragment="HTTP 404")
    with pytest.raises(grpc.RpcError) as ei:
        c.ServerMetadata(c.m.ServerMetadataRequest())
    assert "not gRPC" not in ei.value.details(), ei.value.details()
    assert c.ModelReady(c.m.ModelReadyRequest(name="id")).ready
    c.close()


def h2_frame(kind, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", sid) + payload


def hpack(name, value):
    """a literal header field without indexing, new name (RFC 7541 6.2.2)"""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def test_body_cut_short_on_the_wire(start_nginx, backend_proc, pb):
    """a raw HTTP/2 client sends the headers and part of a ModelInfer
    message, then resets the stream, or closes the connection, or sends
    a message whose length prefix runs past END_STREAM: no crash, no
    leak of the request, INTERNAL for the last, and the worker serves
    the next call"""
    import socket
    ngx, _ = serve(start_nginx, backend_proc)
    m, _ = pb
    msg = frame(infer_req(m, [1, 2, 3], [1, 3]).SerializeToString())
    hdrs = (hpack(b":method", b"POST") + hpack(b":scheme", b"http")
            + hpack(b":path", (SVC + "ModelInfer").encode())
            + hpack(b":authority", b"localhost")
            + hpack(b"content-type", b"application/grpc")
            + hpack(b"te", b"trailers"))
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)

    def conn():
        s = socket.create_connection(("127.0.0.1", ngx.port), timeout=10)
        s.sendall(preface + h2_frame(1, 0x4, 1, hdrs)
                  + h2_frame(0, 0, 1, msg[:9]))
        return s

    for how in ("rst", "close"):
        for _ in range(20):
            s = conn()
            time.sleep(0.01)
            if how == "rst":
                s.sendall(h2_frame(3, 0, 1, struct.pack(">I", 8)))  # CANCEL
                time.sleep(0.01)
            s.close()

    # END_STREAM in the middle of the message: Trailers-Only INTERNAL
    s = socket.create_connection(("127.0.0.1", ngx.port), timeout=10)
    s.sendall(preface + h2_frame(1, 0x4, 1, hdrs)
              + h2_frame(0, 0x1, 1, msg[:9]))
    got = b""
    deadline = time.time() + 10
    while time.time() < deadline:
        data = s.recv(65536)
        if not data:
            break
        got += data
        # a HEADERS frame on stream 1 with END_STREAM ends the answer
        i, done = 0, False
        while i + 9 <= len(got):
            n = int.from_bytes(got[i:i + 3], "big")
            kind, flags = got[i + 3], got[i + 4]
            sid = int.from_bytes(got[i + 5:i + 9], "big") & 0x7fffffff
            if kind == 1 and sid == 1 and flags & 1:
                done = True
            if kind == 0 and sid == 1 and n:
                raise AssertionError("a DATA frame in a Trailers-Only answer")
            i += 9 + n
        if done:
            break
    s.close()
    assert done, got[:200]       # (its grpc-status 13: test_framing)

    c = Client(ngx, pb)
    assert outputs(c.ModelInfer(infer_req(m, [4, 5, 6], [1, 3]))) == \
        [4, 5, 6]
    c.close()


def test_compressed_messages(start_nginx, backend_proc, pb):
    """grpc-encoding gzip and deflate are inflated (grpcio compresses
    what it sends when asked to), at most 4 MiB (a bomb is
    RESOURCE_EXHAUSTED); another encoding is UNIMPLEMENTED with
    grpc-accept-encoding"""
    import gzip
    import zlib
    ngx, _ = serve(start_nginx, backend_proc)
    m, s = pb
    vals = [float(i) for i in range(256 * 3)]
    for comp in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        ch = grpc.insecure_channel(f"127.0.0.1:{ngx.port}", compression=comp)
        stub = s.GRPCInferenceServiceStub(ch)
        for raw in (False, True):
            r = stub.ModelInfer(infer_req(m, vals, [256, 3], raw=raw),
                                timeout=10)
            assert outputs(r) == vals, (comp, raw)
        ch.close()

    msg = infer_req(m, [1, 2, 3], [1, 3]).SerializeToString()
    for enc, data in (("gzip", gzip.compress(msg)),
                      ("deflate", zlib.compress(msg))):
        h, body = curl_grpc(ngx, "ModelInfer", frame(data, flag=1),
                            [f"grpc-encoding: {enc}"])
        assert h["grpc-status"] == "0", h
        r = m.ModelInferResponse.FromString(body[5:])
        assert list(r.outputs[0].contents.fp32_contents) == [1, 2, 3]

    # corrupt, and the wrong format for the encoding
    for enc, data in (("gzip", gzip.compress(msg)[:-6]),
                      ("deflate", gzip.compress(msg))):
        h, _ = curl_grpc(ngx, "ModelInfer", frame(data, flag=1),
                         [f"grpc-encoding: {enc}"])
        assert h["grpc-status"] == "13", h
        assert "corrupt" in h["grpc-message"].replace("%20", " ")

    bomb = gzip.compress(bytes(8 << 20), 9)
    assert len(bomb) < 64 << 10
    h, _ = curl_grpc(ngx, "ModelInfer", frame(bomb, flag=1),
                     ["grpc-encoding: gzip"])
    assert h["grpc-status"] == "8", h
    assert "larger than" in h["grpc-message"].replace("%20", " ")

    h, _ = curl_grpc(ngx, "ModelInfer", frame(msg, flag=1),
                     ["grpc-encoding: snappy"])
    assert h["grpc-status"] == "12", h
    assert h["grpc-accept-encoding"] == "identity,deflate,gzip"

    # an uncompressed message with grpc-encoding set is fine
    h, _ = curl_grpc(ngx, "ModelInfer", frame(msg), ["grpc-encoding: gzip"])
    assert h["grpc-status"] == "0", h


def test_fields_the_gateway_ignores(start_nginx, backend_proc, pb):
    """a client of a larger proto (Triton's): request parameters, output
    parameters and fields our .proto lacks are skipped, not refused"""
    ngx, _ = serve(start_nginx, backend_proc)
    c = Client(ngx, pb)
    m = c.m
    req = infer_req(m, [1, 2, 3], [1, 3], id="x")
    req.parameters["priority"].int64_param = 2
    req.parameters["sequence_start"].bool_param = True
    req.inputs[0].parameters["binary_data_size"].int64_param = 12
    out = req.outputs.add(name="output")
    out.parameters["classification"].int64_param = 0
    # field 99 (varint) and field 100 (bytes): unknown to every message
    data = req.SerializeToString() + b"\x98\x06\x01" + b"\xa2\x06\x02hi"
    code, body = c.raw("ModelInfer", data)
    assert code == grpc.StatusCode.OK, (code, body)
    r = m.ModelInferResponse.FromString(body)
    assert r.id == "x" and outputs(r) == [1, 2, 3]
    c.close()


# --------------------------------------------------------------------------
# the cache (issue 13 §2): ModelInfer keyed on the request message

from redis_fixtures import redis_factory, redis_server  # noqa: E402,F401


def cache_call(c, req, **kw):
    """(response, X-Cache-Status) of a ModelInfer with its metadata"""
    resp, call = c.stub.ModelInfer.with_call(req, metadata=c.md, timeout=10,
                                             **kw)
    md = dict(call.initial_metadata())
    assert call.code() == grpc.StatusCode.OK
    return resp, md.get("x-cache-status")


def until_hit(c, req):
    """the fill is written after the reply: ask again until it is there"""
    deadline = time.time() + 5
    while True:
        resp, st = cache_call(c, req)
        if st == "HIT" or time.time() > deadline:
            return resp, st
        time.sleep(0.05)


def cache_serve(start_nginx, backend_proc, redis_server, cache="", keys="",
                ttl="60s", loc=""):
    http = (f"infergate_redis r {redis_server.address} timeout=200ms;\n"
            + ("infergate_keys keys.txt;\n" if keys else ""))
    server = f"""
        location / {{
            {"infergate_auth on;" if keys else ""}
            infergate_cache redis=r ttl={ttl} methods=POST {cache};
            infergate_infer backend=be;
            {loc}
        }}
        location = /metrics {{ infergate_metrics; }}"""
    return serve(start_nginx, backend_proc, http=http, server=server,
                 files={"keys.txt": keys} if keys else None)


def test_cache_model_infer(start_nginx, backend_proc, pb, redis_server):
    """A repeated ModelInfer is a hit: the same message, grpc-status 0,
    and the backend saw one inference; another message misses; the
    other RPCs are not cached."""
    ngx, _ = cache_serve(start_nginx, backend_proc, redis_server)
    c = Client(ngx, pb)
    m = c.m
    req = infer_req(m, [1, 2, 3], [1, 3], raw=True)
    first, st = cache_call(c, req)
    assert st == "MISS"
    resp, st = until_hit(c, req)
    assert st == "HIT", st
    assert resp == first and outputs(resp) == [1, 2, 3]
    for _ in range(3):
        assert cache_call(c, req)[1] == "HIT"

    # hand-made: the same message as a client's, with its trailers
    hdrs, body = curl_grpc(ngx, "ModelInfer", frame(req.SerializeToString()))
    assert hdrs.get("x-cache-status") == "HIT", hdrs
    assert hdrs.get("grpc-status") == "0", hdrs
    assert body == frame(first.SerializeToString())

    other = infer_req(m, [1, 2, 4], [1, 3], raw=True)
    resp, st = cache_call(c, other)
    assert st == "MISS" and outputs(resp) == [1, 2, 4]
    assert until_hit(c, other)[1] == "HIT"

    # the backend ran two inferences (3 values each), not seven
    deadline = time.time() + 10
    while True:
        s = c.ModelStatistics(m.ModelStatisticsRequest(name="id"))
        if s.model_stats[0].inference_count >= 2:
            break
        assert time.time() < deadline, s
        time.sleep(0.2)
    time.sleep(1.2)
    s = c.ModelStatistics(m.ModelStatisticsRequest(name="id"))
    assert s.model_stats[0].inference_stats.success.count == 2, s

    # readiness is never served from the cache
    r, call = c.stub.ModelReady.with_call(m.ModelReadyRequest(name="id"),
                                          timeout=10)
    assert r.ready
    assert dict(call.initial_metadata()).get("x-cache-status") == "BYPASS"
    c.close()


def test_cache_refusals_not_stored(start_nginx, backend_proc, pb,
                                   redis_server):
    """INVALID_ARGUMENT and NOT_FOUND replies are never stored: the same
    bad message is refused again by the gateway, not replayed."""
    ngx, _ = cache_serve(start_nginx, backend_proc, redis_server)
    c = Client(ngx, pb)
    m = c.m
    for bad, code in ((infer_req(m, [1, 2], [1, 3]),
                       grpc.StatusCode.INVALID_ARGUMENT),
                      (infer_req(m, [1, 2, 3], [1, 3], model="nope"),
                       grpc.StatusCode.NOT_FOUND)):
        for _ in range(3):
            e = expect(code, c.ModelInfer, bad)
            assert dict(e.initial_metadata()).get("x-cache-status") \
                != "HIT"
            time.sleep(0.1)
    c.close()


def test_cache_tenants_apart(start_nginx, backend_proc, pb, redis_server):
    """One tenant's entry is never another's."""
    acme, acme_line = make_key("acme")
    globex, globex_line = make_key("globex")
    ngx, _ = cache_serve(start_nginx, backend_proc, redis_server,
                         keys=acme_line + "\n" + globex_line + "\n")
    m, _ = pb
    req = infer_req(m, [5, 6, 7], [1, 3], raw=True)
    a = Client(ngx, pb, [("authorization", f"Bearer {acme}")])
    assert cache_call(a, req)[1] == "MISS"
    assert until_hit(a, req)[1] == "HIT"
    g = Client(ngx, pb, [("x-api-key", globex)])
    resp, st = cache_call(g, req)
    assert st == "MISS" and outputs(resp) == [5, 6, 7]
    assert until_hit(g, req)[1] == "HIT"
    # without a key: refused, not replayed
    n = Client(ngx, pb)
    expect(grpc.StatusCode.UNAUTHENTICATED, n.ModelInfer, req)
    for c in (a, g, n):
        c.close()


def test_cache_http_and_grpc_apart(start_nginx, backend_proc, pb,
                                   redis_server):
    """A key= that both protocols share (here a header) still keeps the
    gRPC entries apart from the HTTP ones, both ways."""
    import json
    ngx, _ = cache_serve(start_nginx, backend_proc, redis_server,
                         cache="key=$http_x_k")
    c = Client(ngx, pb, [("x-k", "a")])
    m = c.m
    req = infer_req(m, [1, 2, 3], [1, 3], raw=True)
    assert cache_call(c, req)[1] == "MISS"
    assert until_hit(c, req)[1] == "HIT"

    def http(k):
        r = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-D", "/dev/stderr",
             "-H", "content-type: application/json", "-H", f"x-k: {k}",
             "--data-binary", json.dumps({"inputs": [{
                 "name": "input", "shape": [1, 3], "datatype": "FP32",
                 "data": [9, 8, 7]}]}),
             f"http://127.0.0.1:{ngx.port}/v2/models/id/infer"],
            capture_output=True, timeout=30)
        hdrs = r.stderr.decode().lower()
        return hdrs, r.stdout

    # the gRPC entry of "a" is not the HTTP answer of "a"
    hdrs, body = http("a")
    assert "x-cache-status: miss" in hdrs, hdrs
    assert json.loads(body)["outputs"][0]["data"] == [9, 8, 7]

    # an HTTP entry of "b" is not the gRPC answer of "b"
    hdrs, body = http("b")
    deadline = time.time() + 5
    while "x-cache-status: hit" not in hdrs and time.time() < deadline:
        time.sleep(0.05)
        hdrs, body = http("b")
    assert "x-cache-status: hit" in hdrs, hdrs
    assert "application/json" in hdrs
    c2 = Client(ngx, pb, [("x-k", "b")])
    resp, st = cache_call(c2, req)
    assert st == "MISS" and outputs(resp) == [1, 2, 3]
    for x in (c, c2):
        x.close()


@pytest.mark.parametrize("cache", ["", "key=$http_x_k"])
def test_cache_keeps_models_check(start_nginx, backend_proc, pb,
                                  redis_server, cache):
    """The model is inside the message, so models= is checked after the
    cache lookup: a key of the same tenant limited to models=id never
    gets the entry another key stored for model "other", with the default
    key or a key= that ignores the message."""
    full, full_line = make_key("acme")
    only_id, only_line = make_key("acme", "models=id")
    http = (f"infergate_redis r {redis_server.address} timeout=200ms;\n"
            "infergate_keys keys.txt;\n")
    server = """
        location / {
            infergate_auth on;
            infergate_cache redis=r ttl=60s methods=POST %s;
            infergate_infer backend=be;
        }""" % cache
    ngx, _ = serve(start_nginx, backend_proc,
                   models=("id=builtin:identity:3",
                           "other=builtin:identity:3"),
                   http=http, server=server,
                   files={"keys.txt": full_line + "\n" + only_line + "\n"})
    m, _ = pb
    req = infer_req(m, [1, 2, 3], [1, 3], raw=True, model="other")
    a = Client(ngx, pb, [("authorization", f"Bearer {full}")])
    assert cache_call(a, req)[1] == "MISS"
    assert until_hit(a, req)[1] == "HIT"
    b = Client(ngx, pb, [("authorization", f"Bearer {only_id}")])
    for _ in range(2):
        expect(grpc.StatusCode.PERMISSION_DENIED, b.ModelInfer, req,
               fragment='model "other"')
    # its own model is cached for it
    mine = infer_req(m, [1, 2, 3], [1, 3], raw=True)
    if not cache:
        assert cache_call(b, mine)[1] == "MISS"
    assert until_hit(b, mine)[1] == "HIT"
    for c in (a, b):
        c.close()


def test_cache_no_stale_grpc(start_nginx, backend_proc, pb, redis_server):
    """A gRPC entry past its ttl is not served stale (no
    stale-while-revalidate refresh, no stale-if-error swap): the call
    goes to the backend again and fills a fresh entry."""
    ngx, _ = cache_serve(start_nginx, backend_proc, redis_server, ttl="1s",
                         cache="ttl_jitter=0% stale_while_revalidate=60s "
                               "stale_if_error=60s")
    c = Client(ngx, pb)
    m = c.m
    req = infer_req(m, [4, 5, 6], [1, 3], raw=True)
    assert cache_call(c, req)[1] == "MISS"
    assert until_hit(c, req)[1] == "HIT"
    time.sleep(1.3)
    resp, st = cache_call(c, req)
    assert st == "MISS" and outputs(resp) == [4, 5, 6]
    assert until_hit(c, req)[1] == "HIT"
    c.close()


def test_cache_spooled_body(start_nginx, backend_proc, pb, redis_server):
    """A message nginx wrote to a temporary file (over
    client_body_buffer_size) is keyed on all of it: the same 256 rows hit,
    a change in the last value misses."""
    ngx, _ = cache_serve(start_nginx, backend_proc, redis_server,
                         loc="client_body_buffer_size 1k;")
    c = Client(ngx, pb)
    m = c.m
    vals = [float(i % 97) for i in range(256 * 3)]
    req = infer_req(m, vals, [256, 3], raw=True)
    first, st = cache_call(c, req)
    assert st == "MISS" and outputs(first) == vals
    resp, st = until_hit(c, req)
    assert st == "HIT" and resp == first
    other = infer_req(m, vals[:-1] + [1000.0], [256, 3], raw=True)
    resp, st = cache_call(c, other)
    assert st == "MISS" and outputs(resp)[-1] == 1000.0
    c.close()


def test_cache_concurrent_fill(start_nginx, backend_proc, pb, redis_server):
    """16 calls of one message at once: one fills, the others wait on its
    lease and get the entry (or go to the backend when it is late); every
    call ends OK with the right outputs and grpc-status 0."""
    ngx, _ = cache_serve(start_nginx, backend_proc, redis_server)
    c = Client(ngx, pb)
    m = c.m
    req = infer_req(m, [7, 8, 9], [1, 3], raw=True)
    got, errs = [], []

    def call():
        try:
            got.append(cache_call(c, req))
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=call) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errs, errs
    assert len(got) == 16
    assert all(outputs(r) == [7, 8, 9] for r, _ in got)
    sts = [st for _, st in got]
    assert set(sts) <= {"MISS", "HIT"}, sts
    assert sts.count("HIT") >= 1 or until_hit(c, req)[1] == "HIT", sts
    c.close()


# ---- circuit breaker -------------------------------------------------------

def test_breaker_counts_grpc_failures_and_ready_asks_it(start_nginx,
                                                        backend_proc, pb):
    """gRPC answers are HTTP 200 whatever they say: the breaker must count
    a call's grpc-status (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL) as the
    failure it is, fail fast once open, and ModelReady must say not ready
    while the model's breaker is open, as the HTTP ready route does."""
    ngx, be = serve(start_nginx, backend_proc,
                    models=("bad=builtin:fail:3", "id=builtin:identity:3"),
                    http="infergate_breaker_zone brk 1m;",
                    server="location / { infergate_breaker zone=brk "
                           "key=$http_x_model min_requests=4 open=30s; "
                           "infergate_infer backend=be; }")
    ngx.allowed_log.append(r"backend failed the request|infergate_breaker")
    c = Client(ngx, pb, metadata=[("x-model", "bad")])
    # the other RPCs neither count nor take the breaker's probes
    assert c.ModelReady(c.m.ModelReadyRequest(name="bad")).ready is True
    for _ in range(4):
        expect(grpc.StatusCode.INTERNAL, c.ModelInfer,
               infer_req(c.m, [1, 2, 3], [1, 3], model="bad"),
               fragment="the model failed")
    # open now: failed fast, before the backend
    e = expect(grpc.StatusCode.UNAVAILABLE, c.ModelInfer,
               infer_req(c.m, [1, 2, 3], [1, 3], model="bad"))
    md = dict(e.trailing_metadata() or ())
    assert int(md.get("grpc-retry-pushback-ms", "0")) > 20000, md
    assert c.ModelReady(c.m.ModelReadyRequest(name="bad")).ready is False
    c.close()
    # another key's calls and readiness are untouched
    c = Client(ngx, pb, metadata=[("x-model", "id")])
    assert outputs(c.ModelInfer(infer_req(c.m, [1, 2, 3], [1, 3]))) == \
        [1.0, 2.0, 3.0]
    assert c.ModelReady(c.m.ModelReadyRequest(name="id")).ready is True
    c.close()
