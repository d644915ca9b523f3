"""
The backend's own signed audit trail (issue 16 §3) and the smaller items
of §4, against the real build/infergate-backend, the real verifier
(build/infergate-audit verify) and, for the metrics, real nginx.

Covered: --audit records the start, a model load, a client attached, a
client refused (a peer uid not in --allow-uid), a SIGHUP reload that
adds a version, the drain and the stop, and the whole file verifies with
the verifier the gateway's files use; a refused model; a restart on the
same file links its chain to the first; a modified or deleted record and
a removed chain are detected; bad --audit flags are refused at start; a
full disk loses records, not service; --user; one file shared with
nginx's workers; infergate_backend_model_info and
infergate_backend_signature_failures_total through nginx's /metrics, and
no GPU memory series on the CPU; a backend on --device cpu does not map
cuBLAS (nor do its binaries link it) and still predicts exactly.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from backend_fixtures import (BACKEND_BIN, BUILD, OK, RingClient,  # noqa
                              backend_env, start_backend)
from infer_fixtures import backend_proc  # noqa: F401
from test_ring_peers import NOBODY, connect_as, needs_root, open_dir  # noqa

AUDIT_BIN = BUILD / "infergate-audit"
CUDA_SO = BUILD / "libinfergate-cuda.so"


# -- helpers ------------------------------------------------------------------

def make_key(tmp_path, kid="bk1"):
    r = subprocess.run([str(AUDIT_BIN), "keygen", kid], capture_output=True,
                       text=True, check=True)
    key = tmp_path / "audit.key"
    key.write_text(r.stdout)
    os.chmod(key, 0o600)
    return key


def audit_args(tmp_path, kid="bk1"):
    key = tmp_path / "audit.key"
    if not key.exists():
        make_key(tmp_path, kid)
    log = tmp_path / "backend-audit.log"
    return log, key, ["--audit", str(log), "--audit-key", str(key),
                      "--audit-key-id", kid]


def verify(key, *paths, flags=()):
    r = subprocess.run([str(AUDIT_BIN), "verify", "--key", str(key),
                        *flags, *[str(p) for p in paths]],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def records(log):
    return [json.loads(ln) for ln in Path(log).read_text().splitlines()]


def actions(recs):
    return [r["event"]["action"] for r in recs]


def model_dir(tmp_path, *versions, width=3):
    d = tmp_path / "models" / "m"
    for v in versions:
        (d / str(v)).mkdir(parents=True, exist_ok=True)
        (d / str(v) / "model.builtin").write_text(
            f"builtin:identity:{width}\n")
    return d


# -- the trail ----------------------------------------------------------------

@needs_root
def test_audit_start_load_attach_refuse_reload_stop_verifies(
        start_backend, open_dir, tmp_path):
    log, key, args = audit_args(tmp_path)
    mdir = model_dir(tmp_path, 1)
    sock = open_dir / "be.sock"
    b = start_backend(f"m={mdir}", sock=sock,
                      args=[*args, "--device", "cpu",
                            "--allow-uid", "0"])
    os.chmod(sock, 0o666)             # the file system lets nobody in

    with RingClient(sock) as c:
        c.submit(0, 0, 1, [1.0, 2.0, 3.0])
        assert c.collect(1)[0]["data"] == [1.0, 2.0, 3.0]

    # a peer uid not in --allow-uid
    assert connect_as(sock, NOBODY.pw_uid, NOBODY.pw_gid) == ("closed", 0)
    b.wait_event("client_refused")

    # SIGHUP: a new version directory is a new model id
    model_dir(tmp_path, 2)
    b.signal(signal.SIGHUP)
    b.wait_event("reload_done")

    assert b.stop() == 0
    recs = records(log)
    acts = actions(recs)

    assert acts[0] == "chain_start" and acts[-1] == "chain_end", acts
    assert acts[1] == "backend_start"
    for a in ("client_attached", "client_refused", "reload", "reload_done",
              "drain", "stop"):
        assert a in acts, (a, acts)
    assert acts.index("reload") < acts.index("reload_done") \
        < acts.index("drain") < acts.index("stop")

    # every record is one chain of this backend, in seq order
    ig = [r["infergate"] for r in recs]
    assert len({i["chain"] for i in ig}) == 1
    assert [i["seq"] for i in ig] == list(range(len(recs)))
    assert all(i["pid"] == b.pid for i in ig)
    assert all(r["service"]["type"] == "infergate-backend" for r in recs)
    assert ig[-1]["records"] == len(recs) - 1 and ig[-1]["lost"] == 0

    start = recs[1]["infergate"]
    assert start["socket"] == str(sock) and start["device"] == "cpu"

    loads = [r for r in recs if r["event"]["action"] == "model_loaded"]
    assert [(r["infergate"]["model"]["name"],
             r["infergate"]["model"]["version"]) for r in loads] == \
        [("m", "1"), ("m", "2")]
    assert acts.index("reload") < recs.index(loads[1])
    for r, v in zip(loads, ("1", "2")):
        mod = r["infergate"]["model"]
        path = mdir / v / "model.builtin"
        assert r["file"]["path"] == str(path)
        assert mod["device"] == "cpu" and mod["signer"] == ""
        assert re.fullmatch(r"[0-9a-f]{64}", mod["sha256"])
        assert r["file"]["hash"]["sha256"] == mod["sha256"]
        # the registry's digest of the file's bytes (zeros until the
        # trust work computes it for every file)
        assert mod["sha256"] in (
            hashlib.sha256(path.read_bytes()).hexdigest(), "0" * 64)

    att = recs[acts.index("client_attached")]
    assert att["event"]["outcome"] == "success"
    assert att["infergate"]["peer"]["uid"] == 0
    assert att["client"]["user"]["id"] == "0"

    ref = recs[acts.index("client_refused")]
    assert ref["event"]["outcome"] == "failure"
    assert ref["infergate"]["peer"]["uid"] == NOBODY.pw_uid
    assert ref["infergate"]["peer"]["gid"] == NOBODY.pw_gid
    assert ref["infergate"]["peer"]["pid"] > 0
    assert "--allow-uid" in ref["event"]["reason"]

    assert recs[acts.index("drain")]["infergate"]["signal"] == signal.SIGTERM
    assert recs[acts.index("stop")]["infergate"]["exit_code"] == 0

    # the gateway's verifier, state file included
    st = Path(str(log) + ".chainstate").read_text()
    assert st.startswith("infergate-chainstate 1\nhead " + ig[0]["chain"])
    rc, out = verify(key, log)
    assert rc == 0, out
    assert f"{len(recs)} records in 1 chains verified" in out, out


def test_refused_model_at_reload_is_recorded(start_backend, tmp_path):
    log, key, args = audit_args(tmp_path)
    model = tmp_path / "m.builtin"
    model.write_text("builtin:identity:3\n")
    b = start_backend(f"m:1={model}", args=[*args, "--device", "cpu"])

    model.write_text("this is not a model\n")
    b.signal(signal.SIGHUP)
    b.wait_event("reload_done")
    assert b.stop() == 0

    recs = records(log)
    ref = [r for r in recs if r["event"]["action"] == "model_refused"]
    assert len(ref) == 1, actions(recs)
    r = ref[0]
    assert r["event"]["outcome"] == "failure" and r["event"]["reason"]
    assert r["infergate"]["model"] == {
        "name": "m", "version": "1", "id": 0, "kept": True,
        "signature_failure": False}
    assert r["file"] == {"path": str(model)}
    rc, out = verify(key, log)
    assert rc == 0, out


def test_restart_links_chains_and_tampering_is_detected(start_backend,
                                                        tmp_path):
    log, key, args = audit_args(tmp_path)
    for _ in range(2):
        b = start_backend("m=builtin:identity:2",
                          args=[*args, "--device", "cpu"])
        assert b.stop() == 0

    recs = records(log)
    starts = [r for r in recs if r["event"]["action"] == "chain_start"]
    ends = [r for r in recs if r["event"]["action"] == "chain_end"]
    assert len(starts) == 2 and len(ends) == 2
    assert starts[0]["infergate"]["link"] == "genesis"
    e = ends[0]["infergate"]
    assert starts[1]["infergate"]["link"] == \
        f"{e['chain']}:{e['seq']}:{e['mac']}"
    rc, out = verify(key, log)
    assert rc == 0 and "in 2 chains verified" in out, out

    good = log.read_text()
    lines = good.splitlines(keepends=True)
    i = next(k for k, ln in enumerate(lines) if '"model_loaded"' in ln)

    # a modified record: another device
    log.write_text(good.replace('"device":"cpu"}', '"device":"gpu"}', 1))
    rc, out = verify(key, log)
    assert rc != 0 and "modified" in out, out

    # a deleted record
    log.write_text("".join(lines[:i] + lines[i + 1:]))
    rc, out = verify(key, log)
    assert rc != 0 and "missing" in out, out

    # the first backend's whole chain removed
    first = starts[0]["infergate"]["chain"]
    log.write_text("".join(ln for ln in lines if first not in ln))
    rc, out = verify(key, log)
    assert rc != 0 and "removed" in out, out

    # another key cannot verify it
    log.write_text(good)
    other = tmp_path / "other"
    other.mkdir()
    rc, out = verify(make_key(other), log)
    assert rc != 0, out


@needs_root
def test_audit_opened_before_user_drops_root(start_backend, open_dir,
                                             tmp_path):
    """--user: the log and its state file are root's, 0600, in a
    directory only root may write; the backend keeps writing them."""
    os.chmod(tmp_path, 0o700)
    log, key, args = audit_args(tmp_path)
    model = open_dir / "m.builtin"
    model.write_text("builtin:identity:1\n")
    b = start_backend(f"m={model}", sock=open_dir / "be.sock",
                      args=[*args, "--device", "cpu", "--user", "nobody"])
    with RingClient(b.sock) as c:
        c.submit(0, 0, 1, [2.0])
        assert c.collect(1)[0]["data"] == [2.0]
    b.signal(signal.SIGHUP)
    b.wait_event("reload_done")
    assert b.stop() == 0
    for p in (log, Path(str(log) + ".chainstate")):
        st = p.stat()
        assert st.st_uid == 0 and st.st_mode & 0o777 == 0o600, p
    acts = actions(records(log))
    assert acts[-3:] == ["drain", "stop", "chain_end"], acts
    assert "client_attached" in acts and "model_reloaded" in acts
    rc, out = verify(key, log)
    assert rc == 0, out


@pytest.mark.parametrize("extra,msg", [
    (["--audit", "{log}"], "go together"),
    (["--audit", "{log}", "--audit-key", "{key}"], "go together"),
    (["--audit", "{log}", "--audit-key", "{key}", "--audit-key-id", "nope"],
     "--audit-key-id \"nope\": no such key"),
    (["--audit", "{log}", "--audit-key", "{key}.missing",
      "--audit-key-id", "bk1"], "open() failed"),
    (["--audit", "{log}", "--audit-key", "{loose}", "--audit-key-id", "bk1"],
     "chmod 600"),
    (["--audit", "/nonexistent-dir/a.log", "--audit-key", "{key}",
      "--audit-key-id", "bk1"], "--audit /nonexistent-dir/a.log"),
])
def test_bad_audit_flags_are_refused(tmp_path, extra, msg):
    log, key, _ = audit_args(tmp_path)
    loose = tmp_path / "loose.key"
    loose.write_text(key.read_text())
    os.chmod(loose, 0o644)
    args = [a.format(log=log, key=key, loose=loose) for a in extra]
    r = subprocess.run([str(BACKEND_BIN), "--socket",
                        str(tmp_path / "s.sock"), "--model",
                        "m=builtin:identity:1", "--device", "cpu", *args],
                       capture_output=True, text=True, timeout=30,
                       env=backend_env())
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr, r.stderr
    assert not (tmp_path / "s.sock").exists()


def test_audit_write_errors_lose_records_not_service(start_backend,
                                                     tmp_path):
    """The log on /dev/full: every write fails with ENOSPC; the backend
    logs the loss and keeps serving (the state file stays beside the
    link, untouched: no marker was written)."""
    key = make_key(tmp_path)
    log = tmp_path / "full.log"
    log.symlink_to("/dev/full")
    b = start_backend("m=builtin:identity:1",
                      args=["--audit", str(log), "--audit-key", str(key),
                            "--audit-key-id", "bk1", "--device", "cpu"])
    with RingClient(b.sock) as c:
        c.submit(0, 0, 1, [4.0])
        assert c.collect(1)[0]["data"] == [4.0]
    ev = b.wait_event("audit_write_failed")[0]
    assert ev["errno"] == "28"                          # ENOSPC
    assert b.stop() == 0
    assert Path(str(log) + ".chainstate").read_text() == ""


# -- metrics through nginx ----------------------------------------------------

def test_model_info_and_signature_failures_in_metrics(start_nginx,
                                                      backend_proc,
                                                      tmp_path):
    from infer_fixtures import infer_http, wait_connected
    from test_metrics_backend import (INFER, METRICS, counter, sample,
                                      wait_for)
    model = tmp_path / "m.builtin"
    model.write_text("builtin:identity:3\n")
    os.chmod(tmp_path, 0o755)
    be = backend_proc(f"m:4={model}", extra=["--device", "cpu"])
    ngx = start_nginx(http=infer_http(be), server=INFER + "\n" + METRICS,
                      workers=1)
    wait_connected(ngx, 1)

    fams, text = wait_for(ngx, lambda f: sample(
        f, "infergate_backend_model_info", backend="be", model="m",
        version="4") is not None)
    (s,) = [s for s in fams["infergate_backend_model_info"].samples
            if s.labels.get("model") == "m"]
    assert s.value == 1
    assert re.fullmatch(r"[0-9a-f]{64}", s.labels["sha256"]), s.labels
    assert s.labels["signer"] == ""
    assert counter(fams, "infergate_backend_signature_failures_total",
                   backend="be") == 0
    # no GPU here: no GPU memory series
    assert "infergate_backend_gpu_memory_bytes{" not in text


def test_gateway_and_backend_share_one_audit_file(start_nginx, backend_proc,
                                                   tmp_path):
    """nginx workers and the backend write one file with one key: the
    markers of all their chains form one list, and the verifier checks
    the whole file."""
    from infer_fixtures import infer_http, wait_connected
    from test_metrics_backend import INFER, infer
    os.chmod(tmp_path, 0o755)
    key = make_key(tmp_path, "k1")
    log = tmp_path / "shared-audit.log"
    be = backend_proc("m=builtin:identity:3",
                      extra=["--device", "cpu", "--audit", str(log),
                             "--audit-key", str(key), "--audit-key-id", "k1"])
    ngx = start_nginx(http=infer_http(be) + f"""
        infergate_audit {log} key={key} key_id=k1 buffer=16k flush=200ms;
    """, server=INFER, workers=2)
    wait_connected(ngx, 2)
    assert infer(ngx, "m", 1, 3).status_code == 200
    ngx.stop()
    be.stop()
    assert be.proc.returncode == 0, be.log

    recs = records(log)
    mine = [r for r in recs if r.get("service", {}).get("type")
            == "infergate-backend"]
    theirs = [r for r in recs if r not in mine]
    assert actions(mine).count("client_attached") == 2, actions(mine)
    assert "request" in actions(theirs) or "infer" in actions(theirs), \
        actions(theirs)
    chains = {r["infergate"]["chain"] for r in recs}
    assert len(chains) == 3                 # the backend's, two workers'
    # one genesis for the whole file: the first marker, the backend's
    links = [r["infergate"]["link"] for r in recs
             if r["event"]["action"] in ("chain_start", "chain_end")]
    assert links.count("genesis") == 1 and links[0] == "genesis"
    rc, out = verify(key, log)
    assert rc == 0 and "in 3 chains verified" in out, out


# -- CUDA only when a GPU is asked for ----------------------------------------

def maps(pid):
    return Path(f"/proc/{pid}/maps").read_text()


def test_binaries_do_not_link_cuda():
    for exe in ("infergate-backend", "infergate-predict"):
        r = subprocess.run(["ldd", str(BUILD / exe)], capture_output=True,
                           text=True, check=True)
        assert "libcublas" not in r.stdout, (exe, r.stdout)
        assert "libcudart" not in r.stdout, (exe, r.stdout)


def xgb_model(tmp_path):
    xgb = pytest.importorskip("xgboost")
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(11)
    X = rng.random((200, 5)).astype("float32")
    y = (X[:, 1] + X[:, 4] > 1).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3},
                        xgb.DMatrix(X, label=y), 10)
    path = tmp_path / "risk.json"
    booster.save_model(str(path))
    return path, X[:16], booster.predict(xgb.DMatrix(X[:16]))


def predict(sock, X):
    with RingClient(sock) as c:
        for s in range(4):
            c.submit(s, 0, 4, [float(v) for v in X[4 * s:4 * s + 4].ravel()])
        res = sorted(c.collect(4), key=lambda r: r["slot"])
        device = c.models["device"]
    assert all(r["status"] == OK for r in res)
    return [v for r in res for v in r["data"]], device


def test_cpu_backend_does_not_map_cublas(start_backend, tmp_path):
    path, X, want = xgb_model(tmp_path)
    b = start_backend(f"risk={path}", args=["--device", "cpu"])
    m = maps(b.pid)
    assert "libcublas" not in m and "libcudart" not in m, \
        [ln for ln in m.splitlines() if "cu" in ln]
    assert "libinfergate-cuda" not in m
    got, device = predict(b.sock, X)
    assert device == "cpu"
    assert max(abs(g - w) for g, w in zip(got, want)) <= 1e-6


@pytest.mark.skipif(not CUDA_SO.exists(), reason="built without nvcc")
def test_auto_without_gpu_loads_cuda_and_falls_back(start_backend,
                                                    tmp_path):
    """--device auto: the library is loaded (cuBLAS mapped now); with no
    GPU the backend runs on the CPU and says why, as before."""
    path, X, want = xgb_model(tmp_path)
    b = start_backend(f"risk={path}", args=["--device", "auto"])
    dev = b.events("device")[0]
    if dev["name"].startswith("cuda:"):
        pytest.skip("a GPU is present")
    assert dev["name"].startswith("cpu (no CUDA: "), dev
    assert "libinfergate-cuda.so" in maps(b.pid)
    got, device = predict(b.sock, X)
    assert device == dev["name"]
    assert max(abs(g - w) for g, w in zip(got, want)) <= 1e-6


def test_missing_cuda_library(tmp_path):
    env = backend_env()
    env["IG_CUDA_LIB"] = str(tmp_path / "no-such-libinfergate-cuda.so")
    # auto: the CPU, and the reason in the device name
    r = subprocess.run([str(BACKEND_BIN), "--device", "auto", "--check",
                        "builtin:identity:2"], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    dev = json.loads(r.stdout)["device"]
    assert dev.startswith("cpu (no CUDA: ") and \
        "no-such-libinfergate-cuda.so" in dev, dev
    # cuda:0 asked for: an error that names the library
    r = subprocess.run([str(BACKEND_BIN), "--device", "cuda:0", "--check",
                        "builtin:identity:2"], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode != 0
    assert "--device cuda:0: " in r.stderr and \
        "no-such-libinfergate-cuda.so" in r.stderr, r.stderr


FAKE_CUDA = r"""
#include <stdio.h>
#include "ig_cuda.h"

static int
exec_open(int device, int *n, char *name, size_t len, char *err,
    size_t errlen)
{
    *n = 1;
    if (device >= 1) {
        return IG_CUDA_NO_DEVICE;
    }
    snprintf(name, len, "FakeGPU %d", device);
    (void) err; (void) errlen;
    return IG_CUDA_OK;
}

static int
mem_info(int device, uint64_t *f, uint64_t *t)
{
    (void) device;
    *f = 1000;
    *t = 4096;
    return 0;
}

static ig_tree_cuda_t *
tree_create(int device, const ig_tree_node_t *nodes, uint32_t nnodes,
    const ig_tree_info_t *trees, uint32_t ntrees, const float *base,
    uint32_t ngroups, uint32_t nfeatures, int transform, char *err,
    size_t errlen)
{
    snprintf(err, errlen, "fake device: no tree kernel");
    return NULL;
}

static const ig_cuda_api_t  api = {
    VERSION, sizeof(ig_cuda_api_t), exec_open, mem_info, NULL, NULL, NULL,
    tree_create, NULL, NULL
};

const ig_cuda_api_t *
ig_cuda_api(void)
{
    return &api;
}
"""


def fake_cuda(tmp_path, version="IG_CUDA_API_VERSION"):
    """A stand-in for build/libinfergate-cuda.so that claims one GPU:
    exercises the loader, the device selection and the GPU memory
    figures where no GPU is."""
    src = tmp_path / "fake_cuda.c"
    src.write_text(FAKE_CUDA)
    so = tmp_path / f"fake-cuda-{version}.so"
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(["cc", "-shared", "-fPIC", f"-DVERSION={version}",
                    "-I", str(repo / "lib"), "-I", str(repo / "backend"),
                    "-o", str(so), str(src)], check=True)
    return so


def test_cuda_library_is_checked_and_used(tmp_path):
    env = backend_env()
    # a library of another API version is refused: the CPU, and why
    env["IG_CUDA_LIB"] = str(fake_cuda(tmp_path, version="99"))
    r = subprocess.run([str(BACKEND_BIN), "--device", "auto", "--check",
                        "builtin:identity:2"], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    dev = json.loads(r.stdout)["device"]
    assert dev.startswith("cpu (no CUDA: ") and "API version 99" in dev, dev

    env["IG_CUDA_LIB"] = str(fake_cuda(tmp_path))
    r = subprocess.run([str(BACKEND_BIN), "--device", "cuda:0", "--check",
                        "builtin:identity:2"], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["device"] == "cuda:0 (FakeGPU 0)"
    r = subprocess.run([str(BACKEND_BIN), "--device", "cuda:1", "--check",
                        "builtin:identity:2"], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode != 0 and "--device cuda:1: 1 CUDA device(s)" in \
        r.stderr, r.stderr
    # a model load goes through the library's entry points
    path, _, _ = xgb_model(tmp_path)
    r = subprocess.run([str(BACKEND_BIN), "--device", "cuda:0", "--check",
                        str(path)], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode != 0 and "fake device: no tree kernel" in r.stderr, \
        r.stderr


def test_gpu_memory_in_metrics_where_a_gpu_is_used(start_nginx,
                                                   backend_proc, tmp_path,
                                                   monkeypatch):
    from infer_fixtures import infer_http, wait_connected
    from test_metrics_backend import INFER, METRICS, sample, wait_for
    os.chmod(tmp_path, 0o755)
    monkeypatch.setenv("IG_CUDA_LIB", str(fake_cuda(tmp_path)))
    be = backend_proc("m=builtin:identity:3", extra=["--device", "cuda:0"])
    ngx = start_nginx(http=infer_http(be), server=INFER + "\n" + METRICS,
                      workers=1)
    wait_connected(ngx, 1)
    fams, _ = wait_for(ngx, lambda f: sample(
        f, "infergate_backend_gpu_memory_bytes", backend="be",
        kind="total") is not None)
    assert sample(fams, "infergate_backend_gpu_memory_bytes", backend="be",
                  kind="total") == 4096
    assert sample(fams, "infergate_backend_gpu_memory_bytes", backend="be",
                  kind="free") == 1000
    assert sample(fams, "infergate_backend_info", backend="be",
                  device="cuda:0 (FakeGPU 0)") == 1



def test_signature_failure_is_counted_and_audited(start_nginx, backend_proc,
                                                  tmp_path):
    """A signed model loads with its signer in the audit and in
    infergate_backend_model_info; the same file changed and not re-signed
    is refused at SIGHUP: the audit's model_refused says signature_failure
    and infergate_backend_signature_failures_total counts it."""
    from infer_fixtures import infer_http, wait_connected
    from test_metrics_backend import (INFER, METRICS, counter, sample,
                                      wait_for)
    from test_model_trust import pki as _pki, tool  # noqa: F401
    pki = _pki.__wrapped__(tmp_path)
    log, key, args = audit_args(tmp_path)
    model = tmp_path / "m.builtin"
    model.write_text("builtin:identity:3\n")
    tool("sign", "--key", pki.priv("risk-team"), model)
    os.chmod(tmp_path, 0o755)
    be = backend_proc(f"m:4={model}",
                      extra=["--device", "cpu", "--trust", str(pki.trust),
                             *args])
    ngx = start_nginx(http=infer_http(be), server=INFER + "\n" + METRICS,
                      workers=1)
    wait_connected(ngx, 1)

    fams, _ = wait_for(ngx, lambda f: sample(
        f, "infergate_backend_model_info", backend="be", model="m",
        version="4") is not None)
    (s,) = [s for s in fams["infergate_backend_model_info"].samples
            if s.labels.get("model") == "m"]
    assert s.labels["signer"] == "risk-team", s.labels
    assert s.labels["sha256"] == hashlib.sha256(
        model.read_bytes()).hexdigest()
    assert counter(fams, "infergate_backend_signature_failures_total",
                   backend="be") == 0

    model.write_text("builtin:identity:3 \n")          # not re-signed
    be.proc.send_signal(signal.SIGHUP)
    wait_for(ngx, lambda f: counter(
        f, "infergate_backend_signature_failures_total", backend="be") == 1)
    be.stop()

    recs = records(log)
    (loaded,) = [r for r in recs if r["event"]["action"] == "model_loaded"]
    assert loaded["infergate"]["model"]["signer"] == "risk-team", loaded
    (ref,) = [r for r in recs if r["event"]["action"] == "model_refused"]
    assert ref["infergate"]["model"]["signature_failure"] is True, ref
    assert ref["infergate"]["model"]["kept"] is True, ref
    rc, out = verify(key, log)
    assert rc == 0, out
