"""The ring trusts no local peer (issue 11, section 3): a peer of a uid
or gid not allowed is refused at accept with a logged reason; each
client gets a region of its own and can map nothing else; a hostile but
allowed peer that scribbles over its region and sends garbage control
messages changes no other worker's result and cannot take every client
index."""

import json
import os
import pwd
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from backend_fixtures import (OK, RINGBENCH_BIN, RingClient,  # noqa: F401
                              start_backend)


HERE = Path(__file__).resolve().parent
NOBODY = pwd.getpwnam("nobody")

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="changing uid needs root")


@pytest.fixture
def open_dir():
    """A socket directory every uid can traverse (so that a refusal is
    the backend's, not the file system's)."""
    d = tempfile.mkdtemp(prefix="igpeer")
    os.chmod(d, 0o755)
    yield Path(d)
    for p in Path(d).iterdir():
        p.unlink()
    os.rmdir(d)


def connect_as(path, uid, gid):
    """Connects from a forked child running as uid:gid; returns what it
    got: ('hello', nfds) or ('closed', 0) or ('error', errno)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.settimeout(5)
            try:
                s.connect(str(path))
                msg, fds, _, _ = socket.recv_fds(s, 4096, 8)
                out = ("hello", len(fds)) if msg else ("closed", 0)
                if msg:
                    s.recv(1 << 20)           # IG_CTL_MODELS
            except OSError as e:
                out = ("error", e.errno)
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return tuple(json.loads(data))


def ringbench(sock, *args):
    r = subprocess.run([str(RINGBENCH_BIN), "--socket", str(sock),
                        *[str(a) for a in args]], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# -- credentials at accept ----------------------------------------------------

@needs_root
def test_refused_uid_is_refused_and_logged(start_backend, open_dir):
    sock = open_dir / "be.sock"
    b = start_backend("id=builtin:identity:1", sock=sock)
    os.chmod(sock, 0o666)            # the file system lets nobody in

    got = connect_as(sock, NOBODY.pw_uid, NOBODY.pw_gid)
    assert got == ("closed", 0), got
    ev = b.wait_event("client_refused")[-1]
    assert ev["uid"] == str(NOBODY.pw_uid)
    assert "--allow-uid" in ev["reason"]
    assert not b.events("client_connected")

    # root and the backend's own uid are allowed by default
    with RingClient(sock) as c:
        c.submit(0, 0, 1, [1.5])
        assert c.collect(1)[0]["data"] == [1.5]


@needs_root
def test_allow_uid_and_gid(start_backend, open_dir):
    sock = open_dir / "a.sock"
    b = start_backend("id=builtin:identity:1", sock=sock,
                      args=["--allow-uid", "nobody"])
    os.chmod(sock, 0o666)
    assert connect_as(sock, NOBODY.pw_uid, NOBODY.pw_gid) == ("hello", 3)
    ev = b.wait_event("client_connected")[-1]
    assert ev["uid"] == str(NOBODY.pw_uid)
    # the list replaces the default: root is now refused
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(str(sock))
    assert s.recv(4096) == b""
    s.close()
    assert b.wait_event("client_refused")[-1]["uid"] == "0"

    sock2 = open_dir / "g.sock"
    b2 = start_backend("id=builtin:identity:1", sock=sock2,
                       args=["--allow-gid", str(NOBODY.pw_gid)])
    os.chmod(sock2, 0o666)
    assert connect_as(sock2, NOBODY.pw_uid, NOBODY.pw_gid) == ("hello", 3)
    # root still passes (its own uid, the default uid list)
    with RingClient(sock2) as c:
        c.submit(0, 0, 1, [2.5])
        assert c.collect(1)[0]["data"] == [2.5]
    assert connect_as(sock2, NOBODY.pw_uid, 12345) == ("closed", 0)
    assert b2.wait_event("client_refused")[-1]["gid"] == "12345"


def test_allow_flags_checked(start_backend):
    for args, msg in ((["--allow-uid", "no-such-user-ig"], "--allow-uid"),
                      (["--allow-gid", "no-such-group-ig"], "--allow-gid"),
                      (["--allow-uid", ""], "--allow-uid"),
                      (["--clients-per-pid", "0"], "--clients-per-pid"),
                      (["--clients-per-uid", "300"], "--clients-per-uid")):
        b = start_backend("id=builtin:identity:1", args=args, ready=False)
        b.expect_rc = 2
        assert b.proc.wait(30) == 2, args
        assert msg in b.stderr(), (args, b.stderr())


# -- one region per client -----------------------------------------------------

def test_region_holds_only_own_area(start_backend):
    b = start_backend("id=builtin:identity:4",
                      args=["--slots", "16", "--slot-bytes", "1024",
                            "--max-delay-us", "50000", "--max-batch", "64"])
    with RingClient(b.sock) as a, RingClient(b.sock) as h:
        # separate memory: not the same file, and one client area each
        assert os.fstat(a.region_fd).st_ino != os.fstat(h.region_fd).st_ino
        assert h.nclients == 1 and a.nclients == 1
        assert len(h.mm) == a.region_bytes == h.region_bytes
        area_end = h.slots + h.nslots * h.slot_bytes
        assert h.region_bytes == (area_end + 4095) // 4096 * 4096

        rnd = random.Random(7)
        want = {}
        for s in range(16):
            data = [rnd.uniform(-1e6, 1e6) for _ in range(4)]
            data = list(struct.unpack("<4f", struct.pack("<4f", *data)))
            want[s] = data
            a.submit(s, 0, 1, data, tag=1000 + s, ring=False)
        a.ring()

        # the requests wait up to 50 ms for company: scribble meanwhile
        end = time.monotonic() + 0.15
        while time.monotonic() < end:
            h.mm[:] = rnd.randbytes(len(h.mm))
            try:
                os.write(h.sq_efd, struct.pack("<Q", 1))
            except OSError:
                pass
        res = a.collect(16)
        assert sorted(r["slot"] for r in res) == list(range(16))
        for r in res:
            assert r["status"] == OK and r["tag"] == 1000 + r["slot"], r
            assert r["data"] == want[r["slot"]], r
    assert b.proc.poll() is None


# -- what one peer may hold ----------------------------------------------------

def test_one_process_cannot_take_every_index(start_backend):
    b = start_backend("id=builtin:identity:1", args=["--clients", "4"])
    mine = []
    try:
        for _ in range(6):
            try:
                mine.append(RingClient(b.sock, timeout=2))
            except (OSError, AssertionError, ValueError):
                pass
        assert 1 <= len(mine) <= 2, len(mine)
        ev = b.wait_event("client_refused")[-1]
        assert "--clients-per-pid" in ev["reason"]
        # another process still gets an index, with all its slots
        r = ringbench(b.sock, "--model-id", 0, "--requests", 2000,
                      "--concurrency", 8)
        assert r["ok"] == 2000 and r["mismatches"] == 0
    finally:
        for c in mine:
            c.close()


@needs_root
def test_clients_per_uid(start_backend, open_dir):
    sock = open_dir / "u.sock"
    b = start_backend("id=builtin:identity:1", sock=sock,
                      args=["--allow-uid", f"0,{NOBODY.pw_uid}",
                            "--clients-per-uid", "1", "--clients", "8"])
    os.chmod(sock, 0o666)
    hold = RingClient(sock)           # root's one
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(5)
        s.connect(str(sock))
        assert s.recv(4096) == b""    # root's second: refused
        s.close()
        assert "--clients-per-uid" in b.wait_event("client_refused")[-1][
            "reason"]
        # nobody's first still gets in
        assert connect_as(sock, NOBODY.pw_uid, NOBODY.pw_gid) == \
            ("hello", 3)
    finally:
        hold.close()


# -- a hostile allowed peer under nginx load -----------------------------------

LOC = "location /v2 { infergate_infer backend=be; }"


def test_hostile_peer_forges_nothing_under_load(start_nginx, start_backend):
    b = start_backend("id=builtin:identity:4",
                      args=["--slots", "16", "--slot-bytes", "1024",
                            "--clients", "8", "--max-delay-us", "100",
                            "--device", "cpu"])
    ngx = start_nginx(http=f"infergate_backend be unix:{b.sock};",
                      server=LOC, workers=2)
    deadline = time.time() + 20
    while ngx.error_log.count("models on") < 2:
        assert time.time() < deadline, ngx.error_log[-3000:]
        time.sleep(0.02)

    hostile = subprocess.Popen(
        [sys.executable, str(HERE / "ring_hostile_peer.py"), str(b.sock),
         "6", "16"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)

    results = {"ok": 0, "forged": [], "other": []}
    lock = threading.Lock()
    stop = threading.Event()

    def client(k):
        # a connection per request: a keep-alive one may be closed under
        # the next request by an old worker leaving at the reload
        rnd = random.Random(k)
        while not stop.is_set():
            data = [float(rnd.randrange(-10 ** 6, 10 ** 6)) / 8
                    for _ in range(4)]
            try:
                r = requests.post(ngx.url("/v2/models/id/infer"), timeout=10,
                                  headers={"Connection": "close"},
                                  json={"inputs": [{"name": "input",
                                                    "shape": [1, 4],
                                                    "datatype": "FP32",
                                                    "data": data}]})
            except requests.RequestException as e:
                with lock:
                    results["other"].append(repr(e))
                continue
            with lock:
                if r.status_code != 200:
                    results["other"].append((r.status_code, r.text[:200]))
                elif r.json()["outputs"][0]["data"] != data:
                    results["forged"].append((data, r.text[:200]))
                else:
                    results["ok"] += 1

    time.sleep(0.5)                    # the peer has taken what it can
    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    # new workers must still find a client index while the peer holds on
    ngx.reload()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(15)
        assert not t.is_alive()

    out, err = hostile.communicate(timeout=30)
    assert hostile.returncode == 0, err
    peer = json.loads(out.strip().splitlines()[-1])
    print("hostile peer:", peer, "good answers:", results["ok"])

    assert b.proc.poll() is None, b.stderr()[-3000:]
    assert results["ok"] >= 50, results
    assert results["forged"] == [], results["forged"][:5]
    assert results["other"] == [], results["other"][:5]
    assert peer["made"] >= 1 and peer["refused"] >= 1, peer
    # it held indexes (its view lags the backend's drops) and was refused
    # more by --clients-per-pid
    assert peer["held_max"] >= 2, peer
    assert any("--clients-per-pid" in e["reason"]
               for e in b.events("client_refused"))
    assert ngx.alive()
    # and after it, the workers still work
    r = requests.post(ngx.url("/v2/models/id/infer"), timeout=10,
                      json={"inputs": [{"name": "input", "shape": [1, 4],
                                        "datatype": "FP32",
                                        "data": [1, 2, 3, 4]}]})
    assert r.status_code == 200 and \
        r.json()["outputs"][0]["data"] == [1, 2, 3, 4]


def test_hung_up_indexes_count_against_the_pid(start_backend):
    # connect, submit to a slow model, hang up, again: an index whose
    # socket closed keeps its region until its requests finish, and it
    # must count against the pid, or one process takes every index
    b = start_backend("slow=builtin:sleep:1:3000000", "id=builtin:identity:1",
                      args=["--clients", "4", "--max-delay-us", "0"])
    made = 0
    for _ in range(6):
        try:
            c = RingClient(b.sock, timeout=2)
        except (OSError, AssertionError, ValueError):
            continue
        made += 1
        c.submit(0, 0, 1, [1.0])
        time.sleep(0.05)
        c.close()
    assert made <= 2, made
    assert any("--clients-per-pid" in e["reason"]
               for e in b.wait_event("client_refused"))
    # another process still gets an index while those requests run
    r = ringbench(b.sock, "--model-id", 1, "--requests", 200)
    assert r["ok"] == 200 and r["mismatches"] == 0
