"""Inference faults: kill -9 of the backend under load (every in-flight
request answered 503 at once, none hangs, traffic resumes after a restart
without an nginx reload), a killed worker's slots coming back, timeout
504 with the slot kept until the backend returns it, max_inflight load
shedding, a client that leaves before the answer, backend and nginx
reloads, and a hostile peer on the control socket (bad HELLO, region or
model list; corrupt completions)."""

import os
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import SANITIZE, assert_problem
from backend_fixtures import put32
from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa


LOC = "location /v2 { infergate_infer backend=be; }"


def body(n=2):
    return {"inputs": [{"name": "input", "shape": [1, n],
                        "datatype": "FP32", "data": list(range(n))}]}


def post(ngx, model, timeout=10, n=2):
    return requests.post(ngx.url(f"/v2/models/{model}/infer"),
                         json=body(n), timeout=timeout)


def wait_until(pred, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill9_under_load_then_restart(start_nginx, backend_proc):
    # each batch sleeps 300 ms, so at any moment requests are in flight
    be = backend_proc("slow=builtin:sleep:2:300000",
                      extra=["--max-batch", "16",
                             "--queue-timeout-us", "5000000"])
    ngx = start_nginx(http=infer_http(be, "timeout=10s"), server=LOC,
                      workers=2)
    wait_connected(ngx, 2)
    workers = set(ngx.worker_pids())

    assert post(ngx, "slow").status_code == 200

    results = []
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        s = requests.Session()
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = s.post(ngx.url("/v2/models/slow/infer"), json=body(),
                           timeout=5)
                code = r.status_code
                if code == 503:
                    assert r.headers.get("Retry-After") == "1"
                    assert r.headers["Content-Type"] == \
                        "application/problem+json"
            except requests.RequestException as e:
                code = repr(e)
            with lock:
                results.append((t0, time.monotonic(), code))
            if code != 200:
                time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)

    kill_at = time.monotonic()
    be.kill9()
    time.sleep(0.8)

    with lock:
        inflight = [r for r in results if r[0] < kill_at < r[1]]
        before = [r for r in results if r[1] <= kill_at]

    # restart: the workers reconnect on their own
    be.start()
    wait_until(lambda: post(ngx, "slow").status_code == 200, 15,
               "traffic to resume after the restart")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a client hangs"

    assert before and all(c == 200 for _, _, c in before), before[:5]
    assert len(inflight) >= 4, inflight
    limit = 0.3 if SANITIZE else 0.1
    print(f"{len(inflight)} in flight at the kill, answered after at most "
          f"{max(t1 - kill_at for _, t1, _ in inflight) * 1000:.1f} ms")
    for t0, t1, code in inflight:
        assert code == 503, (code, inflight)
        assert t1 - kill_at < limit, \
            f"in-flight request answered {t1 - kill_at:.3f}s after kill"
    # nothing but 200 and 503, never an exception (hang or reset)
    assert {c for _, _, c in results} <= {200, 503}, \
        {c for _, _, c in results}
    # no reload happened
    assert set(ngx.worker_pids()) == workers
    assert "the backend closed the control socket" in ngx.error_log


def test_worker_killed_slots_come_back(start_nginx, backend_proc):
    be = backend_proc("id=builtin:identity:2", extra=["--clients", "2"])
    ngx = start_nginx(http=infer_http(be), server=LOC, workers=1)
    wait_connected(ngx, 1)
    assert post(ngx, "id").status_code == 200
    (w,) = ngx.worker_pids()
    since = len(ngx.error_log)
    os.kill(w, signal.SIGKILL)
    ngx.allowed_log.append(r".*exited on signal 9.*")

    # the backend reclaims the dead worker's client area
    wait_until(lambda: "client_gone" in be.log, 10, "client_gone")
    # the master's new worker connects and serves
    wait_connected(ngx, 1, since=since)
    assert post(ngx, "id").status_code == 200

    # with only 2 client areas, repeated worker deaths would run out
    # unless each one is reclaimed
    for _ in range(3):
        (w,) = wait_until(lambda: ngx.worker_pids(), 10, "a worker")
        since = len(ngx.error_log)
        os.kill(w, signal.SIGKILL)
        wait_connected(ngx, 1, since=since)
        assert wait_until(lambda: post(ngx, "id").status_code == 200, 10,
                          "a served request")
    assert "client_refused" not in be.log


def test_timeout_504_slot_kept(start_nginx, backend_proc):
    be = backend_proc("slow=builtin:sleep:2:800000", "id=builtin:identity:2")
    ngx = start_nginx(http=infer_http(be, "timeout=200ms max_inflight=1"),
                      server=LOC, workers=1)
    wait_connected(ngx, 1)

    t0 = time.monotonic()
    r = post(ngx, "slow")
    took = time.monotonic() - t0
    assert_problem(r, 504)
    assert 0.15 < took < 0.7, took

    # the slot stays reserved until the backend gives it back: the only
    # in-flight place is taken for the rest of the 800 ms
    r = post(ngx, "id")
    assert_problem(r, 503)
    assert r.headers["Retry-After"] == "1"
    assert "in flight" in r.json()["detail"]

    wait_until(lambda: post(ngx, "id").status_code == 200, 5,
               "the slot to come back")


def test_max_inflight_503(start_nginx, backend_proc):
    be = backend_proc("slow=builtin:sleep:2:500000",
                      extra=["--max-batch", "1",
                             "--queue-timeout-us", "5000000"])
    ngx = start_nginx(http=infer_http(be, "max_inflight=2"), server=LOC,
                      workers=1)
    wait_connected(ngx, 1)

    out = []
    lock = threading.Lock()

    def one():
        t0 = time.monotonic()
        r = post(ngx, "slow")
        with lock:
            out.append((r.status_code, time.monotonic() - t0,
                        r.headers.get("Retry-After")))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)

    ok = [o for o in out if o[0] == 200]
    shed = [o for o in out if o[0] == 503]
    assert len(ok) == 2 and len(shed) == 4, out
    # shed at once, never queued
    assert all(o[1] < 0.3 and o[2] == "1" for o in shed), shed


def test_client_gone_before_answer(start_nginx, backend_proc):
    be = backend_proc("slow=builtin:sleep:2:300000", "id=builtin:identity:2")
    ngx = start_nginx(http=infer_http(be), server=LOC, workers=1)
    wait_connected(ngx, 1)

    payload = (b'{"inputs":[{"name":"input","shape":[1,2],'
               b'"datatype":"FP32","data":[1,2]}]}')
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", ngx.port))
        s.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        time.sleep(0.05)
        s.close()

    # each request ended when its client left (499), before the backend
    # answered; the late completions find no request and only free slots
    wait_until(lambda: ngx.access_log.count(" 499 ") == 4, 5, "499s")
    time.sleep(1.0)
    for _ in range(5):
        r = post(ngx, "id")
        assert r.status_code == 200, r.text
    assert ngx.alive()


def test_backend_reload_adds_version(start_nginx, backend_proc, tmp_path):
    """SIGHUP to the backend: the model list comes again and a new
    version is served without touching nginx."""
    mdir = tmp_path / "m"
    (mdir / "1").mkdir(parents=True)
    (mdir / "1" / "model").write_text("builtin:identity:2\n")
    be = backend_proc(f"m={mdir}")
    ngx = start_nginx(http=infer_http(be), server=LOC, workers=2)
    wait_connected(ngx, 2)
    r = requests.get(ngx.url("/v2/models/m"))
    assert r.json()["versions"] == ["1"], r.text

    (mdir / "2").mkdir()
    (mdir / "2" / "model").write_text("builtin:identity:2\n")
    since = len(ngx.error_log)
    be.proc.send_signal(signal.SIGHUP)
    wait_connected(ngx, 2, since=since)

    for _ in range(4):      # both workers
        r = requests.get(ngx.url("/v2/models/m"))
        assert sorted(r.json()["versions"]) == ["1", "2"], r.text
        r = post(ngx, "m")
        assert r.status_code == 200 and r.json()["model_version"] == "2"
        r = requests.post(ngx.url("/v2/models/m/versions/1/infer"),
                          json=body())
        assert r.status_code == 200 and r.json()["model_version"] == "1"


def test_nginx_reload_reconnects(start_nginx, backend_proc):
    be = backend_proc("id=builtin:identity:2")
    ngx = start_nginx(http=infer_http(be), server=LOC, workers=2)
    wait_connected(ngx, 2)
    since = len(ngx.error_log)
    ngx.reload()
    wait_connected(ngx, 2, since=since)
    for _ in range(6):
        assert post(ngx, "id").status_code == 200
    # the old workers' client areas were given back
    wait_until(lambda: be.log.count("client_gone") >= 2, 10, "client_gone")


# --------------------------------------------------------------------------
# A hostile backend: a peer on the control socket that speaks lib/ig_ring.h
# wrongly on purpose.  The worker must refuse what does not add up, fail
# what is in flight with 503, never crash, and keep reconnecting.

import mmap
import select
import shutil
import struct
import tempfile

REGION = struct.Struct("<QIIQQIIQQQQQQ")
HELLO = struct.Struct("<IIQII")
SLOT = struct.Struct("<QIIIIQIIIIII")
MODELS_HDR = struct.Struct("<IIII128s")
MODEL_HEAD = struct.Struct("<II64s16s")
TENSOR = struct.Struct("<64sII4q")
MAGIC = 0x31474e4952474955


def _a(n, k):
    return (n + k - 1) // k * k


def layout(nclients=1, nslots=4, slot_bytes=256, gen=77):
    q = _a(128 + nslots * 4, 64)
    stride = _a(2 * q + nslots * slot_bytes, 4096)
    return dict(magic=MAGIC, version=3, header_bytes=88, generation=gen,
                region_bytes=4096 + nclients * stride, nclients=nclients,
                nslots=nslots, slot_bytes=slot_bytes, client_off=4096,
                client_stride=stride, sq_off=0, cq_off=q, slots_off=2 * q)


def pack_region(rg):
    return REGION.pack(*(rg[k] for k in (
        "magic", "version", "header_bytes", "generation", "region_bytes",
        "nclients", "nslots", "slot_bytes", "client_off", "client_stride",
        "sq_off", "cq_off", "slots_off")))


def models_msg(nfeatures=2):
    t_in = TENSOR.pack(b"input", 4, 2, -1, nfeatures, 0, 0)
    t_out = TENSOR.pack(b"output", 4, 2, -1, nfeatures, 0, 0)
    meta = struct.pack("<32s", b"hostile") + t_in + t_out + \
        struct.pack("<II", nfeatures, nfeatures)
    return MODELS_HDR.pack(2, 1, 8, 0, b"cpu") + \
        MODEL_HEAD.pack(0, 1, b"m", b"1") + meta


class Hostile:
    """Serves one scenario per connection on a SEQPACKET socket."""

    def __init__(self, scenario):
        self.dir = tempfile.mkdtemp(prefix="ighost")
        os.chmod(self.dir, 0o755)
        self.sock = f"{self.dir}/be.sock"
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.srv.bind(self.sock)
        self.srv.listen(8)
        self.scenario = scenario
        self.conns = 0
        self.errors = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        self.srv.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns += 1
            try:
                self.scenario(self, c)
            except Exception as e:          # noqa: BLE001
                self.errors.append(repr(e))
            finally:
                c.close()

    def hello(self, c, rg=None, region=None, nfds=3, hello_rg=None):
        rg = rg or layout()
        fd = os.memfd_create("ighost")
        os.ftruncate(fd, rg["region_bytes"])
        mm = mmap.mmap(fd, rg["region_bytes"])
        mm[:88] = region if region is not None else pack_region(rg)
        # ring version 3: the backend, sq's consumer, starts asleep
        put32(mm, rg["client_off"] + rg["sq_off"] + 4, 1)
        sq, cq = os.eventfd(0), os.eventfd(0, os.EFD_NONBLOCK)
        msg = HELLO.pack(1, 3, rg["generation"], 0, os.getpid()) + \
            pack_region(hello_rg or rg)
        socket.send_fds(c, [msg], [fd, sq, cq][:nfds])
        os.close(fd)
        return mm, rg, sq, cq

    def close(self):
        self.stop = True
        self.t.join(2)
        self.srv.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_submit(mm, rg, sq, timeout=5):
    r, _, _ = select.select([sq], [], [], timeout)
    assert r, "the worker submitted nothing"
    os.eventfd_read(sq)
    tail = struct.unpack_from("I", mm, rg["client_off"] + rg["sq_off"]
                              + 64)[0]
    assert tail >= 1
    return struct.unpack_from("I", mm, rg["client_off"] + rg["sq_off"]
                              + 128 + 4 * ((tail - 1) % rg["nslots"]))[0]


def complete(mm, rg, cq, index, n=1):
    base = rg["client_off"] + rg["cq_off"]
    tail = struct.unpack_from("I", mm, base + 64)[0]
    put32(mm, base + 128 + 4 * (tail % rg["nslots"]), index)
    put32(mm, base + 64, tail + n)
    os.eventfd_write(cq, 1)


def _serve_until_closed(c, timeout=5):
    c.settimeout(timeout)
    try:
        while c.recv(4096):
            pass
    except OSError:
        pass


@pytest.mark.parametrize("what", ["magic", "fds", "hello_size", "models",
                                  "region_short"])
def test_hostile_handshake(start_nginx, what):
    def scenario(h, c):
        rg = layout()
        if what == "magic":
            bad = dict(rg, magic=1)
            h.hello(c, rg, region=pack_region(bad))
        elif what == "fds":
            h.hello(c, rg, nfds=2)
        elif what == "hello_size":
            c.send(HELLO.pack(1, 3, 1, 0, 1))
        elif what == "models":
            h.hello(c, rg)
            c.send(models_msg()[:-10])
        elif what == "region_short":
            big = dict(rg, region_bytes=rg["region_bytes"] * 4)
            h.hello(c, rg, hello_rg=big)
        _serve_until_closed(c)

    h = Hostile(scenario)
    try:
        ngx = start_nginx(http=f"infergate_backend be unix:{h.sock};",
                          server=LOC, workers=1)
        wait_until(lambda: h.conns >= 3, 10, "reconnects")
        r = post(ngx, "m")
        assert_problem(r, 503)
        assert requests.get(ngx.url("/v2/health/ready")).status_code == 400
        assert ngx.alive() and len(ngx.worker_pids()) == 1
        assert "infergate_backend \"be\"" in ngx.error_log
        assert not h.errors, h.errors
    finally:
        h.close()


@pytest.mark.parametrize("what", ["index", "tag", "good"])
def test_hostile_completion(start_nginx, what):
    done = threading.Event()

    def scenario(h, c):
        if h.conns > 1:
            _serve_until_closed(c, 1)
            return
        mm, rg, sq, cq = h.hello(c)
        c.send(models_msg())
        idx = wait_submit(mm, rg, sq)
        off = rg["client_off"] + rg["slots_off"] + idx * rg["slot_bytes"]
        hdr = list(SLOT.unpack_from(mm, off))
        assert hdr[1:4] == [0, 1, 2], hdr
        if what == "index":
            complete(mm, rg, cq, 9999)
        elif what == "tag":
            hdr[0] += 1
            SLOT.pack_into(mm, off, *hdr)
            complete(mm, rg, cq, idx)
        else:
            hdr[6:8] = [0, 2]               # status OK, out_floats
            SLOT.pack_into(mm, off, *hdr)
            struct.pack_into("<2f", mm, off + 56, 0.25, -8.5)
            complete(mm, rg, cq, idx)
        done.wait(5)
        _serve_until_closed(c, 2)

    h = Hostile(scenario)
    try:
        ngx = start_nginx(http=f"infergate_backend be unix:{h.sock};",
                          server=LOC, workers=1)
        wait_until(lambda: "models on" in ngx.error_log, 10, "connected")
        r = post(ngx, "m")
        done.set()
        if what == "good":
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == [0.25, -8.5]
            assert r.json()["model_name"] == "m"
        else:
            assert_problem(r, 503)
            assert "went away" in r.json()["detail"]
            assert "corrupt" in ngx.error_log
            wait_until(lambda: h.conns >= 2, 10, "a reconnect")
        assert ngx.alive() and len(ngx.worker_pids()) == 1
        assert not h.errors, h.errors
    finally:
        h.close()


def test_new_workers_wait_for_the_backend_at_reload(start_nginx,
                                                    backend_proc):
    # a backend slow to greet (stopped here) while nginx reloads: a new
    # worker must not take requests before it has the backend's HELLO and
    # model list, or they get 503 "not connected" though it is up
    be = backend_proc("id=builtin:identity:2")
    ngx = start_nginx(http=infer_http(be, "timeout=5s"), server=LOC,
                      workers=2)
    wait_connected(ngx, 2)
    assert post(ngx, "id").status_code == 200

    results = []
    lock = threading.Lock()

    def one():
        try:
            r = post(ngx, "id", timeout=10)
            s = r.status_code, r.text[:120]
        except requests.RequestException as e:
            s = repr(e)
        with lock:
            results.append(s)

    os.kill(be.proc.pid, signal.SIGSTOP)
    try:
        ngx.reload()
        time.sleep(0.1)
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.3)
    finally:
        os.kill(be.proc.pid, signal.SIGCONT)
    for t in threads:
        t.join(15)
    assert [s for s in results if s[0] != 200] == [], results
    assert len(results) == 8
