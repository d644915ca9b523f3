"""
The real infergate-backend for integration tests, and a small Python ring
client that speaks lib/ig_ring.h like an nginx worker.

Fixtures
  start_backend   function: start(*models, args=(), sock=None, ready=True)
                  -> Backend.  models are --model values ("m=builtin:
                  identity:4").  Waits for the `event=ready` log line (or
                  the process's exit when ready=False).  At teardown each
                  backend still running gets SIGTERM and must exit 0, and
                  its stderr must hold no sanitizer report.

Use from a test module:  from backend_fixtures import start_backend, RingClient
"""

import mmap
import os
import re
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("IG_BUILD") or REPO / "build")
BACKEND_BIN = BUILD / "infergate-backend"
RINGBENCH_BIN = BUILD / "infergate-ringbench"
SANITIZE = os.environ.get("IG_SANITIZE") == "1"

BAD_STDERR = re.compile(r"Sanitizer|runtime error:|\bcore dumped\b")

# ig_ring_status_e
OK, EBADREQ, ENOMODEL, EQUEUE_FULL, EQUEUE_TIMEOUT, EMODEL, ESHUTDOWN = \
    range(7)

# lib/ig_ring.h layouts (little-endian, natural alignment)
REGION = struct.Struct("<QIIQQIIQQQQQQ")          # 88 bytes
HELLO = struct.Struct("<IIQII")                    # + REGION = 112
SLOT = struct.Struct("<QIIIIQIIIIII")              # 56 bytes
MODELS_HDR = struct.Struct("<IIII128s")            # 144 bytes
TENSOR = struct.Struct("<64sII4q")                 # 104 bytes
MODEL_HEAD = struct.Struct("<II64s16s")            # 88 bytes, meta follows
MODEL_SIZE = 336
Q_TAIL = 64


def put32(mm, off, value):
    """One 4-byte store into the shared region, as the C side does.
    struct.pack_into() zero-fills its target before it packs, and "<I"
    packs byte by byte, so the backend could read a queue's head or tail
    as 0 in between and drop the client as corrupt (seen under ASan with
    the doorbell words).  Reads use native "I" (one 4-byte load)."""
    with memoryview(mm) as m, m[off:off + 4] as b, b.cast("I") as w:
        w[0] = value & 0xffffffff

Q_ENTRIES = 128

IG_CTL_HELLO, IG_CTL_MODELS, IG_CTL_STATS_REQ, IG_CTL_STATS = 1, 2, 3, 4
STATS_HDR = struct.Struct("<IIIIQQQQ128s15QQQQQ")   # 328 bytes
STATS_MODEL_HEAD = struct.Struct("<II64s16sQQQ")    # requests, rows, batches
# ... run_buckets[16], success, queue_ns, compute_ns, last_ms, sha256[32],
# signer[64]
STATS_MODEL_SIZE = 88 + 8 * (3 + 8 + 3 + 16 + 4) + 32 + 64   # 456 bytes
IG_RING_MAGIC = 0x31474e4952474955
IG_RING_VERSION = 3                 # 3: doorbell words (lib/ig_ring.h)


def backend_env():
    env = dict(os.environ)
    if SANITIZE:
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1"
    return env


def _cstr(b):
    return b.split(b"\0", 1)[0].decode()


def parse_models(msg):
    mtype, n, max_batch, _, device = MODELS_HDR.unpack_from(msg, 0)
    assert mtype == IG_CTL_MODELS, mtype
    assert len(msg) >= MODELS_HDR.size + n * MODEL_SIZE, (len(msg), n)
    models = []
    for i in range(n):
        off = MODELS_HDR.size + i * MODEL_SIZE
        mid, ready, name, version = MODEL_HEAD.unpack_from(msg, off)
        meta = off + MODEL_HEAD.size
        platform = _cstr(msg[meta:meta + 32])
        inp = TENSOR.unpack_from(msg, meta + 32)
        out = TENSOR.unpack_from(msg, meta + 136)
        nf, no = struct.unpack_from("<II", msg, meta + 240)
        models.append({
            "id": mid, "ready": ready, "name": _cstr(name),
            "version": _cstr(version), "platform": platform,
            "input": _cstr(inp[0]), "output": _cstr(out[0]),
            "input_dims": list(inp[3:3 + min(inp[2], 4)]),
            "nfeatures": nf, "noutputs": no})
    return {"max_batch": max_batch, "device": _cstr(device),
            "models": models}


def parse_stats(msg):
    """An IG_CTL_STATS reply (lib/ig_ring.h ig_ctl_stats_t)."""
    hdr = STATS_HDR.unpack_from(msg, 0)
    assert hdr[0] == IG_CTL_STATS and hdr[1] == IG_RING_VERSION, hdr[:2]
    n = hdr[2]
    assert len(msg) == STATS_HDR.size + n * STATS_MODEL_SIZE, (len(msg), n)
    out = {}
    for i in range(n):
        (_, _, name, version, req, rows, batches) = \
            STATS_MODEL_HEAD.unpack_from(
                msg, STATS_HDR.size + i * STATS_MODEL_SIZE)
        out[(_cstr(name), _cstr(version))] = {
            "requests": req, "rows": rows, "batches": batches}
    return out


class RingClient:
    """One worker's end of the ring: connect, HELLO, MODELS, submit."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 8)
        assert len(msg) == HELLO.size + REGION.size, len(msg)
        (mtype, version, self.generation, self.client,
         self.backend_pid) = HELLO.unpack_from(msg, 0)
        assert mtype == IG_CTL_HELLO and version == IG_RING_VERSION
        assert len(fds) == 3, fds
        self.region_fd, self.sq_efd, self.cq_efd = fds
        r = REGION.unpack_from(msg, HELLO.size)
        (magic, _, _, gen, self.region_bytes, self.nclients, self.nslots,
         self.slot_bytes, client_off, stride, sq_off, cq_off,
         slots_off) = r
        assert magic == IG_RING_MAGIC and gen == self.generation
        self.mm = mmap.mmap(self.region_fd, self.region_bytes)
        # the mapped header wins over the copy
        assert REGION.unpack_from(self.mm, 0) == r
        # version 2: the region holds this client's area alone
        area = client_off + (self.client if self.nclients > 1 else 0) \
            * stride
        self.sq = area + sq_off
        self.cq = area + cq_off
        self.slots = area + slots_off
        self.slot_floats = (self.slot_bytes - SLOT.size) // 4
        self.sq_tail = 0
        self.cq_head = 0
        self.models = parse_models(self.sock.recv(1 << 20))

    # -- raw access, for tests that corrupt things on purpose
    def slot_off(self, slot):
        return self.slots + slot * self.slot_bytes

    def write_header(self, slot, tag, model_id, rows, in_floats):
        off = self.slot_off(slot)
        struct.pack_into("<QIIII", self.mm, off, tag, model_id, rows,
                         in_floats, 0)
        struct.pack_into("<Q", self.mm, off + 24, time.monotonic_ns())

    def write_data(self, slot, floats):
        off = self.slot_off(slot) + SLOT.size
        struct.pack_into("<%df" % len(floats), self.mm, off, *floats)

    def push(self, slot):
        n = self.nslots
        put32(self.mm, self.sq + Q_ENTRIES + 4 * (self.sq_tail & (n - 1)),
              slot)
        self.sq_tail = (self.sq_tail + 1) & 0xffffffff
        put32(self.mm, self.sq + Q_TAIL, self.sq_tail)

    def set_sq_tail(self, value):
        put32(self.mm, self.sq + Q_TAIL, value)

    def ring(self):
        os.write(self.sq_efd, struct.pack("<Q", 1))

    def submit(self, slot, model_id, rows, floats, tag=None, ring=True):
        self.write_header(slot, slot if tag is None else tag, model_id,
                          rows, len(floats))
        self.write_data(slot, floats)
        self.push(slot)
        if ring:
            self.ring()

    def pop(self):
        """Answered slots now on cq, as dicts."""
        out = []
        n = self.nslots
        while True:
            tail = struct.unpack_from("I", self.mm, self.cq + Q_TAIL)[0]
            if tail == self.cq_head:
                return out
            slot = struct.unpack_from(
                "I", self.mm,
                self.cq + Q_ENTRIES + 4 * (self.cq_head & (n - 1)))[0]
            self.cq_head = (self.cq_head + 1) & 0xffffffff
            put32(self.mm, self.cq, self.cq_head)
            out.append(self.read_slot(slot))

    def read_slot(self, slot):
        h = SLOT.unpack_from(self.mm, self.slot_off(slot))
        res = {"slot": slot, "tag": h[0], "model_id": h[1], "rows": h[2],
               "status": h[6], "out_floats": h[7], "batch_rows": h[8],
               "queue_us": h[9], "run_us": h[10]}
        nout = min(h[7], self.slot_floats)
        res["data"] = list(struct.unpack_from(
            "<%df" % nout, self.mm, self.slot_off(slot) + SLOT.size))
        return res

    def collect(self, count, timeout=10.0):
        """Waits for count answers on the completion doorbell."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            got += self.pop()
            if len(got) >= count:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(got)} of {count} answers")
            r, _, _ = select.select([self.cq_efd], [], [], left)
            if r:
                try:
                    os.read(self.cq_efd, 8)
                except BlockingIOError:
                    pass
        return got

    def recv_models(self, timeout=10):
        self.sock.settimeout(timeout)
        return parse_models(self.sock.recv(1 << 20))

    def stats(self, timeout=10):
        """The backend's own figures (IG_CTL_STATS_REQ): {(model,
        version): {"requests", "rows", "batches"}}.  Model list messages
        that arrive in between are skipped."""
        self.sock.settimeout(timeout)
        self.sock.send(struct.pack("<II", IG_CTL_STATS_REQ,
                                   IG_RING_VERSION))
        while True:
            msg = self.sock.recv(1 << 20)
            assert msg, "the backend closed the control socket"
            if struct.unpack_from("<I", msg, 0)[0] == IG_CTL_STATS:
                return parse_stats(msg)

    def eof(self, timeout=5):
        """True when the backend closed our control socket."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if self.sock.recv(1 << 20) == b"":
                    return True
        except socket.timeout:
            return False
        except ConnectionError:
            return True

    def close(self):
        for fd in (self.region_fd, self.sq_efd, self.cq_efd):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.mm.close()
        except Exception:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Backend:
    def __init__(self, proc, sock, errpath):
        self.proc = proc
        self.sock = sock
        self.errpath = errpath
        self.expect_rc = 0          # a test that kills it sets None

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        return self.errpath.read_text(errors="replace")

    def events(self, event):
        """The log lines of one event, as dicts of their fields."""
        out = []
        for line in self.stderr().splitlines():
            if f" event={event}" not in line and \
               not line.endswith(f"event={event}"):
                continue
            fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
            out.append({k: v.strip('"') for k, v in fields.items()})
        return out

    def wait_event(self, event, count=1, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events(event)) >= count:
                return self.events(event)
            time.sleep(0.01)
        raise AssertionError(f"no {count}x event={event} in:\n"
                             + self.stderr())

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("backend did not drain in time:\n"
                                     + self.stderr())
        return self.proc.returncode

    def check(self):
        text = self.stderr()
        assert not BAD_STDERR.search(text), text
        if self.expect_rc is not None:
            assert self.proc.returncode == self.expect_rc, text


def _launch(tmp_path, models, args=(), sock=None, ready=True, n=[0]):
    if not BACKEND_BIN.exists():
        pytest.fail(f"{BACKEND_BIN} missing: run make build")
    n[0] += 1
    sock = Path(sock or tmp_path / f"backend{n[0]}.sock")
    errpath = tmp_path / f"backend{n[0]}.stderr"
    cmd = [str(BACKEND_BIN), "--socket", str(sock)]
    for m in models:
        cmd += ["--model", m]
    cmd += [str(a) for a in args]
    with open(errpath, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err,
                                env=backend_env())
    b = Backend(proc, sock, errpath)
    if ready:
        deadline = time.monotonic() + 30
        while " event=ready " not in b.stderr():
            if proc.poll() is not None:
                raise AssertionError("backend exited %s:\n%s"
                                     % (proc.returncode, b.stderr()))
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("backend not ready:\n" + b.stderr())
            time.sleep(0.01)
    return b


@pytest.fixture
def start_backend(tmp_path):
    started = []

    def start(*models, args=(), sock=None, ready=True):
        b = _launch(tmp_path, models, args, sock, ready)
        started.append(b)
        return b

    yield start

    errors = []
    for b in started:
        try:
            if b.expect_rc is None and b.proc.poll() is None:
                b.proc.kill()
                b.proc.wait()
            b.stop()
            b.check()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)
