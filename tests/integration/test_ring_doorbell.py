"""
The ring's doorbell words and the inline run (lib/ig_ring.h, version 3).

A consumer stores 1 in its queue's "sleeping" word before it may block and
0 while it drains; a producer writes the eventfd only when it reads 1.
These tests drive the backend as a worker that follows that rule (rings
only when asked), so a backend that forgets to ask for a doorbell before
it sleeps leaves a request unanswered and the test times out.  Others
check that a client that writes the words wrong only hurts itself, that a
version mismatch is logged, and which requests the batcher runs inline on
the ring thread (--inline-us).  No assertion is on speed.
"""

import struct
import time

import pytest

from backend_fixtures import OK, IG_RING_VERSION, RingClient, put32, start_backend  # noqa: F401,E501

Q_SLEEPING = 4          # ig_ring_queue_t: head, sleeping, ... tail at 64
IG_CTL_STATS_REQ = 3
IG_CTL_VERSION = 5


class PoliteClient(RingClient):
    """A worker that rings the submission doorbell only when the backend's
    sq word asks for it, and asks for completion doorbells (cq word) only
    when it is about to block, as nginx does."""

    def sq_word(self):
        return struct.unpack_from("I", self.mm, self.sq + Q_SLEEPING)[0]

    def set_sq_word(self, v):
        put32(self.mm, self.sq + Q_SLEEPING, v)

    def set_cq_word(self, v):
        put32(self.mm, self.cq + Q_SLEEPING, v)

    def submit_polite(self, slot, model_id, rows, floats, tag=None):
        self.submit(slot, model_id, rows, floats, tag=tag, ring=False)
        if self.sq_word():
            self.ring()
            return True
        return False


def identity(c, slots, base, rows=1, nf=2):
    out = {}
    for s in slots:
        data = [float(base + s * 10 + j) for j in range(rows * nf)]
        out[s] = data
    return out


def test_lone_request_after_idle_still_rings(start_backend):
    b = start_backend("id=builtin:identity:2")
    with PoliteClient(b.sock) as c:
        # both consumers start asleep: the first push must ring
        assert c.sq_word() == 1
        for i in range(5):
            # long enough for the backend to be blocked in epoll_wait
            time.sleep(0.3)
            rang = c.submit_polite(i % c.nslots, 0, 1, [float(i), 1.0])
            assert rang, "an idle backend must ask for a doorbell"
            (r,) = c.collect(1)
            assert r["status"] == OK and r["data"] == [float(i), 1.0]
            # after its drain the backend asks for the next doorbell
            assert c.sq_word() == 1


def test_many_concurrent_requests_complete(start_backend):
    b = start_backend("id=builtin:identity:2", args=["--max-batch", "8"])
    with PoliteClient(b.sock) as c:
        n = c.nslots
        for rnd in range(20):
            want = identity(c, range(n), rnd * 1000)
            for s in range(n):
                c.submit_polite(s, 0, 1, want[s], tag=rnd * n + s)
            got = c.collect(n)
            assert sorted(r["slot"] for r in got) == list(range(n))
            for r in got:
                assert r["status"] == OK, r
                assert r["data"] == want[r["slot"]], r


def test_interleaved_submits_while_answers_land(start_backend):
    # a pipeline: each answer frees a slot that is resubmitted at once,
    # so pushes race the backend's drain (the unrung case of the words)
    b = start_backend("id=builtin:identity:2")
    with PoliteClient(b.sock) as c:
        n = min(c.nslots, 16)
        seq = 0
        for s in range(n):
            c.submit_polite(s, 0, 1, [float(seq), 0.0], tag=seq)
            seq += 1
        done = 0
        while done < 3000:
            for r in c.collect(1):
                assert r["status"] == OK
                assert r["data"] == [float(r["tag"]), 0.0], r
                done += 1
                c.submit_polite(r["slot"], 0, 1, [float(seq), 0.0],
                                tag=seq)
                seq += 1
        c.collect(n)


def test_hostile_words_only_hurt_their_writer(start_backend):
    b = start_backend("id=builtin:identity:2")
    with PoliteClient(b.sock) as bad, PoliteClient(b.sock) as good:
        # bad says "I am draining" on its cq for ever: no completion
        # doorbells for it, yet the answers land on its cq
        bad.set_cq_word(0)
        for i in range(4):
            bad.submit(i, 0, 1, [float(i), 2.0])
        deadline = time.monotonic() + 10
        got = []
        while len(got) < 4 and time.monotonic() < deadline:
            got += bad.pop()
            time.sleep(0.01)
        assert sorted(r["slot"] for r in got) == [0, 1, 2, 3]

        # bad clears the backend's sq word and pushes without a ring:
        # its request waits, the good client is served meanwhile
        time.sleep(0.2)
        bad.set_sq_word(0)
        bad.submit(5, 0, 1, [5.0, 5.0], ring=False)
        for i in range(10):
            good.submit_polite(i, 0, 1, [float(i), 3.0])
            (r,) = good.collect(1)
            assert r["status"] == OK and r["data"] == [float(i), 3.0]
        assert bad.pop() == []
        # garbage in the word reads as "ring me"; its next ring serves it
        bad.set_cq_word(1)
        bad.set_sq_word(0xdeadbeef)
        bad.ring()
        (r,) = bad.collect(1)
        assert r["slot"] == 5 and r["data"] == [5.0, 5.0]


def test_version_mismatch_is_logged_and_refused(start_backend):
    b = start_backend("id=builtin:identity:1")
    with RingClient(b.sock) as c:
        c.sock.send(struct.pack("<II", IG_CTL_STATS_REQ,
                                IG_RING_VERSION - 1))
        assert c.eof(), "the backend must close a peer of another version"
    (e,) = b.wait_event("ring_version_mismatch")
    assert e["theirs"] == str(IG_RING_VERSION - 1)
    assert e["ours"] == str(IG_RING_VERSION)


def inlined(b):
    b.stop()
    return {e["id"]: int(e["inlined"]) for e in b.events("model_stats")}


@pytest.mark.parametrize("inline_us", ["1000000", "0"])
def test_idle_quick_model_runs_inline(start_backend, inline_us):
    # 1 s: whatever the machine's load, an identity run is under it
    b = start_backend("id=builtin:identity:1",
                      args=["--inline-us", inline_us])
    with PoliteClient(b.sock) as c:
        for i in range(20):
            # idle in between: the last run has ended, the queue is empty
            time.sleep(0.01)
            c.submit_polite(0, 0, 1, [float(i)])
            (r,) = c.collect(1)
            assert r["status"] == OK and r["data"] == [float(i)]
            assert r["batch_rows"] == 1
    n = inlined(b)["0"]
    if inline_us != "0":
        # the first run goes to the runner (its time is unknown)
        assert n == 19, n
    else:
        assert n == 0


def test_slow_model_never_holds_the_ring_thread(start_backend):
    # 300 ms a run: far above --inline-us, so it stays on its runner and
    # the ring thread answers the quick model while it runs
    b = start_backend("slow=builtin:sleep:1:300000",
                      "id=builtin:identity:1",
                      args=["--queue-timeout-us", "0"])
    with PoliteClient(b.sock) as c:
        ids = {m["name"]: m["id"] for m in c.models["models"]}
        for rnd in range(2):           # the 2nd has the slow run's time
            c.submit_polite(0, ids["slow"], 1, [1.0], tag=100 + rnd)
            c.submit_polite(1, ids["id"], 1, [2.0], tag=200 + rnd)
            first = c.collect(1)[0]
            assert first["tag"] == 200 + rnd, first
            rest = c.collect(1)
            assert rest[0]["tag"] == 100 + rnd
    st = inlined(b)
    assert st[str(ids["slow"])] == 0


def test_nginx_names_a_version_mismatch_and_tells_the_backend(start_nginx):
    # a backend of ring version 2 (no doorbell words): the worker must
    # refuse it with a line that names both versions, tell it so with
    # IG_CTL_VERSION, and keep answering 503 while it reconnects
    import test_infer_faults as tif

    told = []

    def scenario(h, c):
        rg = tif.layout()
        c.send(tif.HELLO.pack(1, IG_RING_VERSION - 1, rg["generation"], 0,
                              1) + tif.pack_region(rg))
        c.settimeout(5)
        try:
            msg = c.recv(64)
        except OSError:
            msg = b""
        if len(msg) >= 8:
            told.append(struct.unpack_from("<II", msg, 0))
        tif._serve_until_closed(c, 1)

    h = tif.Hostile(scenario)
    try:
        ngx = start_nginx(http=f"infergate_backend be unix:{h.sock};",
                          server=tif.LOC, workers=1)
        tif.wait_until(lambda: h.conns >= 2, 10, "reconnects")
        tif.assert_problem(tif.post(ngx, "m"), 503)
        assert (f"ring protocol version {IG_RING_VERSION - 1}, this module "
                f"{IG_RING_VERSION}") in ngx.error_log
        assert told and told[0] == (IG_CTL_VERSION, IG_RING_VERSION), told
        assert ngx.alive() and len(ngx.worker_pids()) == 1
        assert not h.errors, h.errors
    finally:
        h.close()
