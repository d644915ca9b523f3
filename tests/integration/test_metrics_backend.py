"""
The backend's own figures in /metrics: real nginx with the module, real
build/infergate-backend, scraped and parsed with the real Prometheus text
parser (python3-prometheus-client).  Each worker asks the backend for
IG_CTL_STATS once a second over its control socket; the metrics zone
keeps the latest reply per backend and renders it.

Covered: per-model requests, rows, batches and run-time histogram after
known traffic; batching under concurrency (batches < requests); model
load failures and reloads after a SIGHUP with a broken model file; the
ring client's gauges going to 0 when the backend is killed;
infergate_backend_up 0 then 1 after a restart (with reconnects counted);
shed 503s counted as shed, not as "backend down"; queue_full failures.
"""

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from infer_fixtures import backend_proc, infer_http, wait_connected  # noqa

prom = pytest.importorskip("prometheus_client.parser")


METRICS = "location = /metrics { infergate_metrics; }"
INFER = "location /v2 { infergate_infer backend=be; }"


def body(rows, width):
    return {"inputs": [{"name": "input", "shape": [rows, width],
                        "datatype": "FP32",
                        "data": [float(i) for i in range(rows * width)]}]}


def infer(ngx, model, rows, width, session=requests):
    return session.post(ngx.url(f"/v2/models/{model}/infer"),
                        json=body(rows, width), timeout=10)


def scrape(ngx):
    r = requests.get(ngx.url("/metrics"), timeout=10)
    assert r.status_code == 200, r.text
    fams = {f.name: f for f in prom.text_string_to_metric_families(r.text)}
    return fams, r.text


def sample(fams, family, name=None, **labels):
    """The value of the one sample of family (sample name `name`) whose
    labels include `labels`; None when there is none."""
    name = name or family
    if family not in fams:
        return None
    found = [s.value for s in fams[family].samples
             if s.name == name and all(s.labels.get(k) == v
                                       for k, v in labels.items())]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else None


def counter(fams, family, **labels):
    # the parser strips _total from a counter family's name
    return sample(fams, family[:-len("_total")], family, **labels)


def wait_for(ngx, cond, timeout=8.0):
    """Scrapes until cond(fams) is true; returns the last scrape."""
    deadline = time.time() + timeout
    while True:
        fams, text = scrape(ngx)
        if cond(fams):
            return fams, text
        if time.time() > deadline:
            raise AssertionError("condition not met; last scrape:\n" + text)
        time.sleep(0.1)


def start(start_nginx, backend_proc, *models, extra=(), workers=2,
          opts=""):
    be = backend_proc(*models, extra=extra)
    ngx = start_nginx(http=infer_http(be, opts),
                      server=INFER + "\n" + METRICS, workers=workers)
    wait_connected(ngx, workers)
    return ngx, be


def test_model_figures_after_known_traffic(start_nginx, backend_proc):
    ngx, _ = start(start_nginx, backend_proc, "id=builtin:identity:3",
                   "v:1=builtin:identity:2")

    for _ in range(7):
        assert infer(ngx, "id", 1, 3).status_code == 200
    for _ in range(3):
        assert infer(ngx, "v", 2, 2).status_code == 200

    def done(f):
        return (counter(f, "infergate_backend_model_requests_total",
                        backend="be", model="v") == 3
                and counter(f, "infergate_backend_model_requests_total",
                            backend="be", model="id") == 7)

    fams, text = wait_for(ngx, done)

    assert sample(fams, "infergate_backend_up", backend="be") == 1
    info = [s for s in fams["infergate_backend_info"].samples
            if s.labels["backend"] == "be"]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels["device"], info

    ident = dict(backend="be", model="id", version="1")
    v1 = dict(backend="be", model="v", version="1")

    assert counter(fams, "infergate_backend_model_rows_total", **ident) == 7
    assert counter(fams, "infergate_backend_model_rows_total", **v1) == 6

    # sequential requests: one batch each
    for lab, n in ((ident, 7), (v1, 3)):
        assert counter(fams, "infergate_backend_model_batches_total",
                       **lab) == n
        h = "infergate_backend_model_run_seconds"
        assert sample(fams, h, h + "_count", **lab) == n
        assert sample(fams, h, h + "_bucket", le="+Inf", **lab) == n
        assert sample(fams, h, h + "_sum", **lab) >= 0
        assert sample(fams, "infergate_backend_queue_depth", **lab) == 0
        for reason in ("bad_request", "no_model", "queue_full",
                       "queue_timeout", "model_error", "shutdown"):
            assert counter(fams, "infergate_backend_model_failures_total",
                           reason=reason, **lab) == 0, reason

    assert counter(fams, "infergate_backend_model_load_failures_total",
                   backend="be") == 0
    assert counter(fams, "infergate_backend_reloads_total",
                   backend="be") == 0
    assert sample(fams, "infergate_backend_uptime_seconds",
                  backend="be") > 0

    # the ring client's own figures
    assert sample(fams, "infergate_backend_connected_workers") == 2
    assert sample(fams, "infergate_backend_inflight") == 0
    assert counter(fams, "infergate_backend_requests_total",
                   result="ok") == 10


def test_batching_under_concurrency(start_nginx, backend_proc):
    # 20 ms per batch: requests arriving meanwhile wait and batch up
    ngx, _ = start(start_nginx, backend_proc, "slow=builtin:sleep:3:20000",
                   extra=["--max-batch", "64", "--max-delay-us", "5000"])

    n_threads, per_thread = 12, 4
    statuses = []

    def client():
        s = requests.Session()
        for _ in range(per_thread):
            statuses.append(infer(ngx, "slow", 1, 3, s).status_code)

    ts = [threading.Thread(target=client) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    sent = n_threads * per_thread
    assert statuses.count(200) == sent, statuses

    lab = dict(backend="be", model="slow")
    fams, _ = wait_for(ngx, lambda f: counter(
        f, "infergate_backend_model_requests_total", **lab) == sent)

    batches = counter(fams, "infergate_backend_model_batches_total", **lab)
    assert counter(fams, "infergate_backend_model_rows_total", **lab) == sent
    assert 1 <= batches < sent, batches
    h = "infergate_backend_model_run_seconds"
    assert sample(fams, h, h + "_count", **lab) == batches
    # every batch slept 20 ms: none in the buckets up to 10 ms
    assert sample(fams, h, h + "_bucket", le="0.01", **lab) == 0
    assert sample(fams, h, h + "_sum", **lab) >= 0.02 * batches

    # nginx's batch-size histogram saw the same batching
    bs = "infergate_backend_batch_size"
    assert sample(fams, bs, bs + "_count") == sent
    assert sample(fams, bs, bs + "_bucket", le="1") < sent


def test_load_failures_after_sighup(start_nginx, backend_proc, tmp_path):
    model = tmp_path / "m.builtin"
    model.write_text("builtin:identity:3\n")
    ngx, be = start(start_nginx, backend_proc, f"m:1={model}", workers=1)

    assert infer(ngx, "m", 1, 3).status_code == 200
    fams, _ = wait_for(ngx, lambda f: counter(
        f, "infergate_backend_model_requests_total", backend="be",
        model="m") == 1)
    assert counter(fams, "infergate_backend_model_load_failures_total",
                   backend="be") == 0

    model.write_text("this is not a model\n")
    be.proc.send_signal(signal.SIGHUP)

    fams, _ = wait_for(ngx, lambda f: counter(
        f, "infergate_backend_reloads_total", backend="be") == 1)
    assert counter(fams, "infergate_backend_model_load_failures_total",
                   backend="be") == 1
    assert "model_refused" in be.log

    # the loaded model stays and keeps serving
    assert infer(ngx, "m", 1, 3).status_code == 200


def test_backend_killed_then_restarted(start_nginx, backend_proc):
    ngx, be = start(start_nginx, backend_proc, "id=builtin:identity:3")

    for _ in range(3):
        assert infer(ngx, "id", 1, 3).status_code == 200

    fams, _ = wait_for(ngx, lambda f: counter(
        f, "infergate_backend_model_requests_total", backend="be") == 3)
    assert sample(fams, "infergate_backend_up", backend="be") == 1
    assert sample(fams, "infergate_backend_connected_workers") == 2
    before = counter(fams, "infergate_backend_reconnects_total")

    be.kill9()

    fams, _ = wait_for(ngx, lambda f: sample(
        f, "infergate_backend_connected_workers") == 0)
    assert sample(fams, "infergate_backend_inflight") == 0

    # no fresh figures: down within 3 s plus a poll, stale series gone
    t0 = time.time()
    fams, _ = wait_for(ngx, lambda f: sample(
        f, "infergate_backend_up", backend="be") == 0, timeout=6)
    assert time.time() - t0 < 5
    assert counter(fams, "infergate_backend_model_requests_total",
                   backend="be") is None
    assert infer(ngx, "id", 1, 3).status_code == 503

    since = len(ngx.error_log)
    be.start()
    wait_connected(ngx, 2, since=since)

    fams, _ = wait_for(ngx, lambda f: sample(
        f, "infergate_backend_up", backend="be") == 1)
    assert sample(fams, "infergate_backend_connected_workers") == 2
    assert counter(fams, "infergate_backend_reconnects_total") > before
    # a new backend process: its counters start again
    assert counter(fams, "infergate_backend_model_requests_total",
                   backend="be", model="id") == 0

    assert infer(ngx, "id", 1, 3).status_code == 200
    wait_for(ngx, lambda f: counter(
        f, "infergate_backend_model_requests_total", backend="be",
        model="id") == 1)


def test_shed_is_counted_apart_from_down(start_nginx, backend_proc):
    # one request in flight per worker, 300 ms a batch: the rest is shed
    ngx, _ = start(start_nginx, backend_proc, "slow=builtin:sleep:3:300000",
                   workers=1, opts="max_inflight=1")

    statuses = []

    def client():
        statuses.append(infer(ngx, "slow", 1, 3).status_code)

    ts = [threading.Thread(target=client) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    shed = statuses.count(503)
    assert shed >= 1 and statuses.count(200) >= 1, statuses
    assert shed + statuses.count(200) == 6, statuses

    fams, _ = scrape(ngx)
    assert counter(fams, "infergate_backend_requests_total",
                   result="shed") == shed
    assert counter(fams, "infergate_backend_requests_total",
                   result="unavailable") == 0
    assert counter(fams, "infergate_backend_requests_total",
                   result="ok") == statuses.count(200)


def test_queue_full_failures(start_nginx, backend_proc):
    # the backend's own queue holds one request: the rest come back
    # IG_RING_EQUEUE_FULL, a 503 counted as shed and as a failure
    ngx, _ = start(start_nginx, backend_proc, "slow=builtin:sleep:3:300000",
                   extra=["--queue-max", "1", "--max-batch", "1",
                          "--max-delay-us", "0",
                          "--queue-timeout-us", "5000000"], workers=1)

    statuses = []

    def client():
        statuses.append(infer(ngx, "slow", 1, 3).status_code)

    ts = [threading.Thread(target=client) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    full = statuses.count(503)
    assert full >= 1, statuses

    lab = dict(backend="be", model="slow")
    fams, _ = wait_for(ngx, lambda f: counter(
        f, "infergate_backend_model_requests_total", **lab) == 6)
    assert counter(fams, "infergate_backend_model_failures_total",
                   reason="queue_full", **lab) == full
    assert counter(fams, "infergate_backend_requests_total",
                   result="shed") == full


def test_model_errors_are_failures_and_batches(start_nginx, backend_proc):
    ngx, _ = start(start_nginx, backend_proc, "bad=builtin:fail:3",
                   workers=1)

    for _ in range(2):
        assert infer(ngx, "bad", 1, 3).status_code == 500

    lab = dict(backend="be", model="bad")
    fams, _ = wait_for(ngx, lambda f: counter(
        f, "infergate_backend_model_failures_total", reason="model_error",
        **lab) == 2)
    # the model ran and failed: each is a batch, in the run histogram
    assert counter(fams, "infergate_backend_model_requests_total",
                   **lab) == 2
    assert counter(fams, "infergate_backend_model_batches_total",
                   **lab) == 2
    h = "infergate_backend_model_run_seconds"
    assert sample(fams, h, h + "_count", **lab) == 2
    assert counter(fams, "infergate_backend_model_failures_total",
                   reason="queue_full", **lab) == 0


def test_zone_lock_under_contention(start_nginx, backend_proc):
    # Sixteen workers on two CPUs take the metrics zone's lock at start
    # (backend registration) and on every scrape; a holder preempted
    # while another spins sends the waiter to sleep on the lock's
    # semaphore.  That semaphore once lived in process memory, so the
    # holder's wake-up went to its own copy and the waiter slept forever:
    # a worker hung at start, then the scrapes and the reload stalled.
    workers = 16
    ngx, _ = start(start_nginx, backend_proc, "id=builtin:identity:3",
                   workers=workers)

    def scrape_ok(_):
        return requests.get(ngx.url("/metrics"), timeout=10).status_code

    for _ in range(4):
        with ThreadPoolExecutor(32) as ex:
            codes = list(ex.map(scrape_ok, range(400)))
        assert codes == [200] * len(codes)

        since = len(ngx.error_log)
        ngx.reload()
        wait_connected(ngx, workers, since=since)
