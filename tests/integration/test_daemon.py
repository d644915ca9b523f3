"""
infergate-backend on its own: flags, --check, sha256 pinning, the ring
round trip, dynamic batching (max-batch, max-delay, queue timeout, queue
full), SIGHUP reload, SIGTERM drain, dead clients, hostile shared memory.
Driven by the Python ring client and build/infergate-ringbench.
"""

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from backend_fixtures import (
    BACKEND_BIN, RINGBENCH_BIN, RingClient, backend_env, start_backend,
    OK, EBADREQ, ENOMODEL, EQUEUE_FULL, EQUEUE_TIMEOUT, EMODEL, ESHUTDOWN)

assert start_backend  # a fixture, used by name


def run_backend(*args, timeout=30):
    return subprocess.run([str(BACKEND_BIN), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env=backend_env())


def ringbench(sock, *args, timeout=120):
    r = subprocess.run([str(RINGBENCH_BIN), "--socket", str(sock),
                        *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rows(n, nf, base=0.0):
    return [base + i * 0.5 for i in range(n * nf)]


# -- flags and --check ----------------------------------------------------

@pytest.mark.parametrize("args, msg", [
    ([], "--socket and at least one --model"),
    (["--socket", "/tmp/x.sock"], "at least one --model"),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "--slots", "3"], "--slots \"3\": must be a power of two"),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "--max-batch", "0"], "--max-batch \"0\": expected an integer 1..65536"),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "--max-delay-us", "-5"], "--max-delay-us \"-5\""),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "--clients", "257"], "--clients \"257\""),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "--slot-bytes", "12"], "--slot-bytes \"12\""),
    (["--socket", "/tmp/x.sock", "--model", "nopath"],
     "expected NAME[:VERSION]=PATH"),
    (["--socket", "/tmp/x.sock", "--model", "bad name=builtin:identity:2"],
     "bad name"),
    (["--socket", "/tmp/x.sock", "--model", "m=/x#sha256=abc"],
     "sha256 must be 64 hex digits"),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "--model", "m=builtin:identity:3"], "given twice"),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "--device", "tpu"], "is not auto, cpu or cuda:N"),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "stray"], "unexpected argument \"stray\""),
    (["--socket", "/tmp/x.sock", "--model", "m=builtin:identity:2",
      "--max-delay-us", "5000", "--queue-timeout-us", "5000"],
     "--max-delay-us 5000 must be below --queue-timeout-us 5000"),
])
def test_bad_flags_refused(args, msg):
    r = run_backend(*args)
    assert r.returncode == 2, r
    assert msg in r.stderr, r.stderr


def test_check_prints_metadata(tmp_path):
    r = run_backend("--device", "cpu", "--check", "builtin:identity:7")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["nfeatures"] == 7 and meta["noutputs"] == 7
    assert meta["input"] == {"name": "input", "datatype": "FP32",
                             "shape": [-1, 7]}
    assert meta["device"] == "cpu"


@pytest.mark.parametrize("content, msg", [
    (None, "No such file"),
    (b"", ""),                       # some loader error, non-zero
    (b"{ not a model", ""),
    (b"builtin:identity:0", "features must be"),
    (b"builtin:teapot:3", "unknown builtin model"),
])
def test_check_refuses_bad_models(tmp_path, content, msg):
    p = tmp_path / "model.bin"
    if content is not None:
        p.write_bytes(content)
    r = run_backend("--device", "cpu", "--check", p)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert "--check" in r.stderr and msg in r.stderr, r.stderr


def test_sha256_pinning(tmp_path, start_backend):
    p = tmp_path / "m.model"
    p.write_bytes(b"builtin:identity:3\n")
    good = hashlib.sha256(p.read_bytes()).hexdigest()
    bad = hashlib.sha256(b"other").hexdigest()

    r = run_backend("--check", f"{p}#sha256={bad}")
    assert r.returncode == 1 and "does not match" in r.stderr, r.stderr
    r = run_backend("--check", f"{p}#sha256={good}")
    assert r.returncode == 0, r.stderr

    b = start_backend(f"m={p}#sha256={bad}", ready=False)
    b.expect_rc = 1
    assert b.proc.wait(30) == 1
    assert "event=model_refused" in b.stderr()
    assert "does not match" in b.stderr()
    assert not os.path.exists(b.sock)

    b = start_backend(f"m={p}#sha256={good.upper()}")
    with RingClient(b.sock) as c:
        assert c.models["models"][0]["nfeatures"] == 3


# -- the basic path ---------------------------------------------------------

def test_hello_models_round_trip(start_backend):
    b = start_backend("ident:3=builtin:identity:4", "other=builtin:fail:2",
                      args=["--device", "cpu", "--slots", "16",
                            "--slot-bytes", "4096", "--clients", "4",
                            "--max-delay-us", "0"])
    st = os.stat(b.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660

    with RingClient(b.sock) as c:
        # the region holds this client's area alone (version 2)
        assert c.client == 0 and c.nslots == 16 and c.nclients == 1
        assert c.slot_bytes == 4096 and c.backend_pid == b.pid
        m = c.models
        assert m["max_batch"] == 64 and m["device"] == "cpu"
        assert [(x["id"], x["name"], x["version"], x["ready"])
                for x in m["models"]] == [(0, "ident", "3", 1),
                                          (1, "other", "1", 1)]
        assert m["models"][0]["input_dims"] == [-1, 4]

        data = rows(3, 4, 1.25)
        c.submit(5, 0, 3, data, tag=0xabcdef0123)
        (res,) = c.collect(1)
        assert res["status"] == OK and res["slot"] == 5
        assert res["tag"] == 0xabcdef0123
        assert res["out_floats"] == 12 and res["data"] == data
        assert res["batch_rows"] == 3

        # a model that fails answers EMODEL, and only that request
        c.submit(6, 1, 1, [1.0, 2.0])
        c.submit(7, 0, 1, [9.0] * 4)
        got = {r["slot"]: r for r in c.collect(2)}
        assert got[6]["status"] == EMODEL and got[6]["out_floats"] == 0
        assert got[7]["status"] == OK and got[7]["data"] == [9.0] * 4

        # a second client gets the next index and a region of its own
        with RingClient(b.sock) as c2:
            assert c2.client == 1 and c2.generation == c.generation
            assert os.fstat(c2.region_fd).st_ino != \
                os.fstat(c.region_fd).st_ino

    b.wait_event("client_gone", 2)


def test_ringbench_round_trip(start_backend):
    b = start_backend("id=builtin:identity:4",
                      args=["--max-delay-us", "0", "--device", "cpu"])
    r = ringbench(b.sock, "--model-id", 0, "--requests", 5000)
    assert r["ok"] == 5000 and r["errors"] == {} and r["mismatches"] == 0
    assert 0 < r["p50_us"] <= r["p99_us"]
    r = ringbench(b.sock, "--model-id", 0, "--requests", 5000,
                  "--concurrency", 16, "--rows", 2)
    assert r["ok"] == 5000 and r["mismatches"] == 0


# -- batching ---------------------------------------------------------------

def test_requests_from_many_slots_run_as_one_batch(start_backend):
    b = start_backend("id=builtin:identity:2",
                      args=["--max-delay-us", "20000", "--max-batch", "64"])
    with RingClient(b.sock) as c:
        for s in range(32):
            c.submit(s, 0, 1, [float(s), -float(s)], ring=False)
        c.ring()
        res = c.collect(32)
    assert all(r["status"] == OK for r in res)
    assert all(r["data"] == [float(r["slot"]), -float(r["slot"])]
               for r in res)
    assert max(r["batch_rows"] for r in res) > 1


def test_batching_across_clients(start_backend):
    b = start_backend("id=builtin:identity:2",
                      args=["--batching", "window",
                            "--max-delay-us", "1000000", "--max-batch", "6",
                            "--queue-timeout-us", "0",
                            "--clients-per-pid", "3"])
    cs = [RingClient(b.sock) for _ in range(3)]
    try:
        t0 = time.monotonic()
        for i, c in enumerate(cs):
            c.submit(0, 0, 2, [float(i)] * 4)
        res = [c.collect(1)[0] for c in cs]
        # 3 clients x 2 rows reach max-batch: one batch, no 1 s wait
        assert time.monotonic() - t0 < 0.9
        assert [r["batch_rows"] for r in res] == [6, 6, 6]
        assert [r["data"] for r in res] == [[float(i)] * 4 for i in range(3)]
    finally:
        for c in cs:
            c.close()


def test_max_batch_caps_batches(start_backend):
    b = start_backend("id=builtin:identity:1",
                      args=["--max-delay-us", "5000", "--max-batch", "8"])
    with RingClient(b.sock) as c:
        for s in range(40):
            c.submit(s, 0, 1, [float(s)], ring=False)
        c.ring()
        res = c.collect(40)
    assert all(r["status"] == OK and r["data"] == [float(r["slot"])]
               for r in res)
    assert max(r["batch_rows"] for r in res) == 8


def test_max_delay_respected(start_backend):
    b = start_backend("id=builtin:identity:1",
                      args=["--batching", "window",
                            "--max-delay-us", "300000", "--max-batch", "4",
                            "--queue-timeout-us", "400000"])
    with RingClient(b.sock) as c:
        # alone: waits max-delay for company, then runs
        t0 = time.monotonic()
        c.submit(0, 0, 1, [1.0])
        (r,) = c.collect(1)
        took = time.monotonic() - t0
        assert r["status"] == OK and r["batch_rows"] == 1
        assert r["queue_us"] >= 299000 and took >= 0.299
        assert took < 3.0

        # a full batch does not wait
        t0 = time.monotonic()
        for s in range(4):
            c.submit(s, 0, 1, [float(s)], ring=False)
        c.ring()
        res = c.collect(4)
        assert time.monotonic() - t0 < 0.25
        assert {r["batch_rows"] for r in res} == {4}
        assert all(r["queue_us"] < 250000 for r in res)


def test_queue_timeout_fails_without_running(start_backend):
    b = start_backend("slow=builtin:sleep:1:800000",
                      args=["--max-batch", "1", "--max-delay-us", "0",
                            "--queue-timeout-us", "40000"])
    with RingClient(b.sock) as c:
        t0 = time.monotonic()
        for s in range(4):
            c.submit(s, 0, 1, [float(s)], ring=False)
        c.ring()
        # answered on time, while the first one's batch still runs
        early = c.collect(3, timeout=0.7)
        assert time.monotonic() - t0 < 0.7
        late = c.collect(4 - len(early), timeout=10)
    res = sorted(early + late, key=lambda r: r["slot"])
    assert res[0]["status"] == OK and res[0]["run_us"] >= 790000
    for r in res[1:]:
        assert r["status"] == EQUEUE_TIMEOUT, res
        assert r["run_us"] == 0 and r["out_floats"] == 0
        assert 40000 <= r["queue_us"] < 700000
    assert {r["slot"] for r in early} == {1, 2, 3}


def test_queue_full_sheds_at_once(start_backend):
    b = start_backend("slow=builtin:sleep:1:500000",
                      args=["--max-batch", "1", "--max-delay-us", "0",
                            "--queue-max", "2",
                            "--queue-timeout-us", "0"])
    with RingClient(b.sock) as c:
        t0 = time.monotonic()
        for s in range(8):
            c.submit(s, 0, 1, [float(s)], ring=False)
        c.ring()
        first = c.collect(5, timeout=0.45)
        assert time.monotonic() - t0 < 0.45
        assert all(r["status"] == EQUEUE_FULL for r in first), first
        rest = c.collect(8 - len(first), timeout=10)
    full = [r for r in first + rest if r["status"] == EQUEUE_FULL]
    ok = [r for r in first + rest if r["status"] == OK]
    assert len(full) + len(ok) == 8 and 5 <= len(full) <= 6
    assert all(r["data"] == [float(r["slot"])] for r in ok)


# -- signals ----------------------------------------------------------------

def test_sighup_reload_adds_versions_without_failures(tmp_path,
                                                      start_backend):
    repo = tmp_path / "repo"
    (repo / "1").mkdir(parents=True)
    (repo / "1" / "model.builtin").write_text("builtin:identity:4\n")
    b = start_backend(f"risk={repo}", "id=builtin:identity:4",
                      args=["--max-delay-us", "100"])

    with RingClient(b.sock) as c:
        assert [(m["id"], m["name"], m["version"])
                for m in c.models["models"]] == [(0, "risk", "1"),
                                                 (1, "id", "1")]
        out = {}
        bench = threading.Thread(target=lambda: out.update(ringbench(
            b.sock, "--model-id", 0, "--requests", 30000,
            "--concurrency", 8)))
        bench.start()
        time.sleep(0.2)
        for i in range(4):
            if i == 2:
                (repo / "2").mkdir()
                (repo / "2" / "m").write_text("builtin:identity:2")
            b.signal(signal.SIGHUP)
            time.sleep(0.1)
        bench.join(60)
        assert out["ok"] == 30000 and out["errors"] == {}, out
        assert out["mismatches"] == 0

        # SIGHUPs during a reload are coalesced into one more reload
        b.wait_event("reload_done", 2)
        assert len(b.events("model_reloaded")) >= 2
        models = c.recv_models()
        while len(models["models"]) < 3:
            models = c.recv_models()
        assert [(m["id"], m["name"], m["version"], m["nfeatures"])
                for m in models["models"]] == [(0, "risk", "1", 4),
                                               (1, "id", "1", 4),
                                               (2, "risk", "2", 2)]
        c.submit(0, 2, 2, [1.0, 2.0, 3.0, 4.0])
        (r,) = c.collect(1)
        assert r["status"] == OK and r["data"] == [1.0, 2.0, 3.0, 4.0]

    # a broken file is refused on reload, the loaded model stays
    (repo / "1" / "model.builtin").write_text("builtin:identity:9\n")
    time.sleep(0.2)
    done = len(b.events("reload_done"))
    b.signal(signal.SIGHUP)
    b.wait_event("reload_done", done + 1)
    refused = b.events("model_refused")
    assert refused and "row sizes" in refused[-1]["err"]
    with RingClient(b.sock) as c:
        c.submit(0, 0, 1, [1.0, 2.0, 3.0, 4.0])
        assert c.collect(1)[0]["status"] == OK


def test_sigterm_drains_then_exits(start_backend):
    b = start_backend("slow=builtin:sleep:1:300000",
                      args=["--max-batch", "1", "--max-delay-us", "0",
                            "--queue-timeout-us", "0"])
    with RingClient(b.sock) as c:
        for s in range(3):
            c.submit(s, 0, 1, [float(s)], ring=False)
        c.ring()
        time.sleep(0.03)
        b.signal(signal.SIGTERM)
        b.wait_event("drain")
        assert not os.path.exists(b.sock)
        c.submit(3, 0, 1, [3.0])
        res = {r["slot"]: r for r in c.collect(4)}
        assert res[3]["status"] == ESHUTDOWN
        assert [res[s]["status"] for s in range(3)] == [OK] * 3
        assert [res[s]["data"] for s in range(3)] == [[0.0], [1.0], [2.0]]
        assert b.proc.wait(10) == 0
        assert c.eof()
    assert "event=exit code=0" in b.stderr()


# -- dead clients, stale sockets --------------------------------------------

def test_dead_client_slots_reclaimed(start_backend):
    b = start_backend("slow=builtin:sleep:1:20000",
                      args=["--clients", "1", "--slots", "4",
                            "--max-batch", "4", "--max-delay-us", "0"])
    p = subprocess.Popen([str(RINGBENCH_BIN), "--socket", str(b.sock),
                          "--model-id", "0", "--requests", "100000",
                          "--concurrency", "4"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.wait_event("client_connected")
    time.sleep(0.2)
    p.kill()
    p.wait()
    gone = b.wait_event("client_gone")[0]
    assert gone["client"] == "0" and gone["reason"] == "eof"
    if int(gone["inflight"]):
        rec = b.wait_event("client_reclaimed")[0]
        assert rec["client"] == "0"

    # the index and all its slots serve the next worker
    deadline = time.monotonic() + 5
    while True:
        try:
            c = RingClient(b.sock, timeout=1)
            break
        except (ConnectionError, AssertionError, ValueError, OSError):
            # refused while the dead worker's batch still ran
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with c:
        assert c.client == 0
        for s in range(4):
            c.submit(s, 0, 1, [float(s)], ring=False)
        c.ring()
        res = c.collect(4)
        assert sorted(r["slot"] for r in res) == [0, 1, 2, 3]
        assert all(r["status"] == OK and r["data"] == [float(r["slot"])]
                   for r in res)


def test_no_free_index_refuses_connection(start_backend):
    b = start_backend("id=builtin:identity:1", args=["--clients", "1"])
    with RingClient(b.sock) as c:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(5)
        s.connect(str(b.sock))
        assert s.recv(4096) == b""
        s.close()
        assert b.wait_event("client_refused")
        c.submit(0, 0, 1, [2.0])
        assert c.collect(1)[0]["data"] == [2.0]


def test_stale_socket_replaced_live_one_kept(tmp_path, start_backend):
    path = tmp_path / "b.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(str(path))
    s.close()                        # a stale socket file stays behind
    b = start_backend("id=builtin:identity:1", sock=path)
    assert "event=stale_socket_removed" in b.stderr()

    b2 = start_backend("id=builtin:identity:1", sock=path, ready=False)
    b2.expect_rc = 1
    assert b2.proc.wait(30) == 1
    assert "another backend listens" in b2.stderr()
    with RingClient(path) as c:
        assert c.backend_pid == b.pid

    f = tmp_path / "file"
    f.write_text("not a socket")
    b3 = start_backend("id=builtin:identity:1", sock=f, ready=False)
    b3.expect_rc = 1
    assert b3.proc.wait(30) == 1
    assert "exists and is not a socket" in b3.stderr()
    assert f.read_text() == "not a socket"


# -- trusting nothing in shared memory --------------------------------------

def test_corrupt_slot_header_fails_that_request_alone(start_backend):
    b = start_backend("id=builtin:identity:2", "w=builtin:identity:3",
                      args=["--slots", "16", "--slot-bytes", "256",
                            "--max-delay-us", "1000"])
    with RingClient(b.sock) as c:
        floats = c.slot_floats
        c.submit(0, 0, 1, [1.0, 2.0], ring=False)           # good
        c.write_header(1, 1, 0, 2, 3)                      # rows*nf != n
        c.push(1)
        c.write_header(2, 2, 99, 1, 2)                     # no model 99
        c.push(2)
        c.write_header(3, 3, 0, 0, 0)                      # zero rows
        c.push(3)
        c.write_header(4, 4, 0, 1 << 31, 0)                # overflowing
        c.push(4)
        c.write_header(5, 5, 1, floats // 3 + 1,           # does not fit
                       (floats // 3 + 1) * 3)
        c.push(5)
        c.push(77)                                         # no such slot
        c.push(0)                                          # already queued
        c.submit(6, 1, 1, [7.0, 8.0, 9.0], ring=False)     # good
        c.ring()
        res = {r["slot"]: r for r in c.collect(7)}
        assert res[0]["status"] == OK and res[0]["data"] == [1.0, 2.0]
        assert res[6]["status"] == OK and res[6]["data"] == [7.0, 8.0, 9.0]
        assert res[1]["status"] == EBADREQ
        assert res[2]["status"] == ENOMODEL
        assert [res[s]["status"] for s in (3, 4, 5)] == [EBADREQ] * 3
        time.sleep(0.05)
        assert c.pop() == []         # nothing for slot 77 or the duplicate
        assert b.events("bad_entry")

        # the client still works after all that
        c.submit(1, 0, 1, [5.0, 6.0])
        assert c.collect(1)[0]["data"] == [5.0, 6.0]


def test_corrupt_queue_drops_that_client_only(start_backend):
    b = start_backend("id=builtin:identity:1")
    with RingClient(b.sock) as good, RingClient(b.sock) as bad:
        bad.set_sq_tail(1000)        # more entries than slots: impossible
        bad.ring()
        assert bad.eof()
        ev = b.wait_event("client_corrupt")[0]
        assert ev["client"] == str(bad.client) and ev["queue"] == "sq"
        good.submit(0, 0, 1, [4.0])
        assert good.collect(1)[0]["data"] == [4.0]
    assert b.proc.poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="--user needs root")
def test_user_drops_privileges(tmp_path, start_backend):
    import pwd
    nobody = pwd.getpwnam("nobody")
    os.chmod(tmp_path, 0o755)
    b = start_backend("id=builtin:identity:1", args=["--user", "nobody"])
    st = os.stat(b.sock)
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    status = open(f"/proc/{b.pid}/status").read()
    uids = [l for l in status.splitlines() if l.startswith("Uid:")][0]
    assert uids.split()[1:] == [str(nobody.pw_uid)] * 4
    with RingClient(b.sock) as c:
        c.submit(0, 0, 1, [3.0])
        assert c.collect(1)[0]["data"] == [3.0]
        # the client's region fd is 0600 and owned by the user too
        fds = os.listdir(f"/proc/{b.pid}/fd")
        memfds = [os.stat(f"/proc/{b.pid}/fd/{fd}") for fd in fds
                  if "memfd:infergate-ring" in
                  os.readlink(f"/proc/{b.pid}/fd/{fd}")]
        assert len(memfds) == 1
        assert all(stat.S_IMODE(m.st_mode) == 0o600
                   and m.st_uid == nobody.pw_uid for m in memfds)
        mine = os.fstat(c.region_fd)
        assert (mine.st_ino, mine.st_uid) == (memfds[0].st_ino,
                                              nobody.pw_uid)
    # gone with its client
    b.wait_event("client_gone")
    assert not [fd for fd in os.listdir(f"/proc/{b.pid}/fd")
                if "memfd:" in os.readlink(f"/proc/{b.pid}/fd/{fd}")]


def test_user_needs_root_or_exists(start_backend):
    b = start_backend("id=builtin:identity:1",
                      args=["--user", "no-such-user-ig"], ready=False)
    b.expect_rc = 1
    assert b.proc.wait(30) == 1
    assert "event=user_failed" in b.stderr()


def test_reload_loads_off_the_ring_thread(tmp_path, start_backend):
    # a FIFO as model file: every load blocks until we write it
    fifo = tmp_path / "slow.model"
    os.mkfifo(fifo)

    def feed(text):
        # the writer may pair with the previous load's reader just before
        # it closes the FIFO: then the write breaks and goes to the next
        for _ in range(50):
            try:
                with open(fifo, "w") as f:
                    f.write(text)
                return
            except BrokenPipeError:
                time.sleep(0.01)
        raise AssertionError("no loader read the model file")

    t = threading.Thread(target=feed, args=("builtin:identity:2\n",))
    t.start()
    b = start_backend(f"slow={fifo}", "id=builtin:identity:1")
    t.join(10)

    with RingClient(b.sock) as c:
        b.signal(signal.SIGHUP)
        b.wait_event("reload")
        time.sleep(0.1)
        # the load hangs; the ring still serves both models
        assert not b.events("reload_done")
        r = ringbench(b.sock, "--model-id", 1, "--requests", 2000)
        assert r["ok"] == 2000 and r["mismatches"] == 0
        c.submit(0, 0, 1, [1.5, 2.5])
        assert c.collect(1)[0]["data"] == [1.5, 2.5]

        # a second SIGHUP while loading is coalesced, not lost
        b.signal(signal.SIGHUP)
        time.sleep(0.1)
        feed("builtin:identity:2\n")
        b.wait_event("reload_done", 1)
        feed("builtin:identity:2\n")
        b.wait_event("reload_done", 2)
        assert len(b.events("model_reloaded")) == 4
        c.recv_models()
        c.submit(1, 0, 1, [3.0, 4.0])
        assert c.collect(1)[0]["data"] == [3.0, 4.0]


def test_exit_does_not_wait_for_a_stuck_reload(tmp_path, start_backend):
    fifo = tmp_path / "stuck.model"
    os.mkfifo(fifo)
    t = threading.Thread(target=lambda: open(fifo, "w").write(
        "builtin:identity:1"))
    t.start()
    b = start_backend(f"m={fifo}")
    t.join(10)
    b.signal(signal.SIGHUP)
    b.wait_event("reload")
    time.sleep(0.1)
    t0 = time.monotonic()
    assert b.stop() == 0
    assert time.monotonic() - t0 < 10
    assert b.events("reload_abandoned")
    # let the abandoned open() finish so nothing is left blocked
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def test_serves_a_real_xgboost_model(tmp_path, start_backend):
    xgb = pytest.importorskip("xgboost")
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(7)
    X = rng.random((300, 6)).astype("float32")
    y = (X[:, 0] + X[:, 3] > 1).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4},
                        xgb.DMatrix(X, label=y), 20)
    path = tmp_path / "risk.json"
    booster.save_model(str(path))
    want = booster.predict(xgb.DMatrix(X[:40]))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    b = start_backend(f"risk:7={path}#sha256={digest}",
                      args=["--device", "cpu", "--max-delay-us", "2000"])
    with RingClient(b.sock) as c:
        (m,) = c.models["models"]
        assert (m["name"], m["version"], m["platform"]) == \
            ("risk", "7", "xgboost_json")
        assert (m["nfeatures"], m["noutputs"]) == (6, 1)
        # 40 rows over 8 slots, batched together
        for s in range(8):
            c.submit(s, 0, 5, [float(v) for v in X[5 * s:5 * s + 5].ravel()],
                     ring=False)
        c.ring()
        res = sorted(c.collect(8), key=lambda r: r["slot"])
    got = np.array([v for r in res for v in r["data"]], dtype="float32")
    assert all(r["status"] == OK and r["out_floats"] == 5 for r in res)
    assert max(r["batch_rows"] for r in res) > 5
    assert np.max(np.abs(got - want)) <= 1e-6
