"""
The backend's batch schedulers (--batching continuous|window).

continuous (the default) makes batching free when idle: a request that
finds its model's queue empty and no batch of it running runs at once,
alone; requests that arrive while a batch runs form the next batch.
window is Triton's max_queue_delay batcher: a lone request waits
--max-delay-us for company.  Each test runs both and asserts what differs,
so each would fail on the other scheduler.  What is counted is the
backend's own: the rows of the batch each answer ran in (batch_rows) and
its batches and rows (RingClient.stats()); no assertion is on speed.
"""

import time

import pytest

from backend_fixtures import OK, EQUEUE_TIMEOUT, RingClient, start_backend  # noqa: F401,E501


def mode_args(mode):
    # continuous is the default: it is tested without the flag
    return [] if mode == "continuous" else ["--batching", mode]


def model_stats(c, name):
    (m,) = [v for k, v in c.stats().items() if k[0] == name]
    return m


@pytest.mark.parametrize("mode", ["continuous", "window"])
def test_lone_request_runs_at_once_only_when_continuous(start_backend, mode):
    # a 900 ms window: a lone request would wait it out
    b = start_backend("id=builtin:identity:1",
                      args=mode_args(mode) + ["--max-batch", "8",
                            "--max-delay-us", "900000",
                            "--queue-timeout-us", "0"])
    with RingClient(b.sock) as c:
        for i in range(3):
            c.submit(i, 0, 1, [float(i)])
            (r,) = c.collect(1)
            assert r["status"] == OK and r["data"] == [float(i)]
            assert r["batch_rows"] == 1
            if mode == "continuous":
                # queued for less than the window it would have waited
                assert r["queue_us"] < 900000, r
            else:
                assert r["queue_us"] >= 899000, r
        m = model_stats(c, "id")
    # one batch per request either way: sequential requests never share
    assert (m["requests"], m["rows"], m["batches"]) == (3, 3, 3)


@pytest.mark.parametrize("mode", ["continuous", "window"])
def test_arrivals_during_a_batch_form_the_next(start_backend, mode):
    # each batch sleeps 600 ms whatever its size
    b = start_backend("slow=builtin:sleep:1:600000",
                      args=mode_args(mode) + ["--max-batch", "64",
                            "--max-delay-us", "900000",
                            "--queue-timeout-us", "0"])
    with RingClient(b.sock) as c:
        c.submit(0, 0, 1, [0.0])
        # continuous: slot 0 runs now, alone, for 600 ms; window: it
        # waits 900 ms for company
        time.sleep(0.1)
        for s in (1, 2, 3):
            c.submit(s, 0, 1, [float(s)], ring=False)
        c.ring()
        res = {r["slot"]: r for r in c.collect(4, timeout=20)}
        m = model_stats(c, "slow")
    assert all(r["status"] == OK for r in res.values())
    assert all(r["data"] == [float(s)] for s, r in res.items())
    got = [res[s]["batch_rows"] for s in range(4)]
    if mode == "continuous":
        # the lone one ran at once; the three that came while it ran
        # were batched together in the next batch
        assert got == [1, 3, 3, 3]
        assert (m["rows"], m["batches"]) == (4, 2)
    else:
        # the first waited for company and took the rest with it
        assert got == [4, 4, 4, 4]
        assert (m["rows"], m["batches"]) == (4, 1)


def test_continuous_caps_the_next_batch_and_keeps_fifo(start_backend):
    # arrivals while a batch runs: at most max-batch rows a batch, in
    # arrival order; nothing waits for a window
    b = start_backend("slow=builtin:sleep:1:300000",
                      args=["--max-batch", "4", "--max-delay-us", "900000",
                            "--queue-timeout-us", "0"])
    with RingClient(b.sock) as c:
        c.submit(0, 0, 1, [0.0])
        time.sleep(0.1)
        for s in range(1, 10):
            c.submit(s, 0, 1, [float(s)], ring=False)
        c.ring()
        res = {r["slot"]: r for r in c.collect(10, timeout=20)}
        m = model_stats(c, "slow")
    assert all(r["status"] == OK for r in res.values())
    assert [res[s]["batch_rows"] for s in range(10)] == \
        [1, 4, 4, 4, 4, 4, 4, 4, 4, 1]
    assert (m["rows"], m["batches"]) == (10, 4)


def test_continuous_queue_timeout_while_a_batch_runs(start_backend):
    # the next batch forms while one runs; its requests still time out
    b = start_backend("slow=builtin:sleep:1:500000",
                      args=["--max-batch", "8", "--max-delay-us", "100",
                            "--queue-timeout-us", "100000"])
    with RingClient(b.sock) as c:
        c.submit(0, 0, 1, [0.0])
        time.sleep(0.05)
        c.submit(1, 0, 1, [1.0])
        res = {r["slot"]: r for r in c.collect(2, timeout=20)}
    assert res[0]["status"] == OK and res[0]["batch_rows"] == 1
    assert res[1]["status"] == EQUEUE_TIMEOUT


def test_batching_flag_is_checked(start_backend):
    b = start_backend("id=builtin:identity:1",
                      args=["--batching", "sometimes"], ready=False)
    b.expect_rc = 2
    b.proc.wait(10)
    assert '--batching "sometimes": expected continuous or window' \
        in b.stderr()
