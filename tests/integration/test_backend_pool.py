"""A pool of backends: `infergate_backend be unix:/a.sock unix:/b.sock
[slow_start=T];` with real nginx and real infergate-backend processes.

Covered: a backend killed (kill -9) under load while its requests are in
flight: every request answered 200 (the in-flight ones moved once to the
survivor), traffic on the survivor during the outage, then back on the
restarted backend with a gradual share (slow start, measured per window
from the backends' own request counters); least rows in flight (a slow
backend receives fewer rows); a model only one backend serves (routed
there alone; model-ready and server-ready answer for the pool); nginx -t
refusing bad pool arguments by the directive's name.

Per-backend counts come from each daemon's own figures in /metrics
(`infergate_backend_model_requests_total{backend="be/0"}`), which every
worker asks for once a second; the assertions are on shapes and
proportions, never on absolute timings.
"""

import threading
import time

import pytest
import requests

from backend_fixtures import RingClient
from infer_fixtures import backend_proc, wait_connected  # noqa

prom = pytest.importorskip("prometheus_client.parser")


LOC = """
location /v2 { infergate_infer backend=be; }
location = /metrics { infergate_metrics; }
"""


def pool_http(bes, opts=""):
    socks = " ".join(f"unix:{b.sock}" for b in bes)
    return f"infergate_backend be {socks} {opts};"


def body(n=2, rows=1):
    return {"inputs": [{"name": "input", "shape": [rows, n],
                        "datatype": "FP32",
                        "data": [float(i) for i in range(rows * n)]}]}


def post(ngx, model, session=requests, timeout=10, n=2, rows=1):
    return session.post(ngx.url(f"/v2/models/{model}/infer"),
                        json=body(n, rows), timeout=timeout)


def wait_until(pred, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def requests_by_member(ngx, model="m", what="requests"):
    """{member: requests_total} from the backends' own figures (only the
    members whose figures are fresh)."""
    r = requests.get(ngx.url("/metrics"), timeout=10)
    assert r.status_code == 200, r.text
    fams = {f.name: f for f in prom.text_string_to_metric_families(r.text)}
    out = {}
    fam = fams.get(f"infergate_backend_model_{what}")
    if fam is None:
        return out
    for s in fam.samples:
        if s.name == f"infergate_backend_model_{what}_total" \
                and s.labels.get("model") == model:
            out[s.labels["backend"]] = out.get(s.labels["backend"], 0) \
                + s.value
    return out


class Load:
    """n client threads posting to model until stop(); every result is
    kept as (t_start, t_end, status or exception)."""

    def __init__(self, ngx, model="m", n=8, rows=1):
        self.ngx = ngx
        self.model = model
        self.rows = rows
        self.results = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self.client)
                        for _ in range(n)]
        for t in self.threads:
            t.start()

    def client(self):
        s = requests.Session()
        while not self.halt.is_set():
            t0 = time.monotonic()
            try:
                r = post(self.ngx, self.model, s, timeout=15,
                         rows=self.rows)
                code = r.status_code
                if code != 200:
                    code = f"{code} {r.text}"
            except requests.RequestException as e:
                code = repr(e)
            with self.lock:
                self.results.append((t0, time.monotonic(), code))

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join(20)
            assert not t.is_alive(), "a client hangs"
        return self.results


def start_pool(start_nginx, backend_proc, models_a, models_b, opts="",
               workers=2, extra=()):
    # a long queue timeout: a busy shared machine must not turn a queued
    # request into a 503 the pool has nothing to do with
    extra = ["--queue-timeout-us", "5000000", *extra]
    a = backend_proc(*models_a, extra=extra)
    b = backend_proc(*models_b, extra=extra)
    ngx = start_nginx(http=pool_http([a, b], opts), server=LOC,
                      workers=workers)
    wait_connected(ngx, 2 * workers)
    return ngx, a, b


def test_kill9_retries_then_slow_start(start_nginx, backend_proc):
    # 20 ms a batch: requests are in flight on both at any moment
    slow_start = 4.0
    ngx, a, b = start_pool(start_nginx, backend_proc,
                           ["m=builtin:sleep:2:20000"],
                           ["m=builtin:sleep:2:20000"],
                           opts=f"timeout=10s slow_start={int(slow_start)}s")
    assert post(ngx, "m").status_code == 200

    load = Load(ngx, n=8)
    time.sleep(1.5)

    before = requests_by_member(ngx)
    assert before.get("be/0", 0) > 0 and before.get("be/1", 0) > 0, before

    kill_at = time.monotonic()
    since = len(ngx.error_log)
    b.kill9()
    time.sleep(2.0)

    # the survivor takes everything while be/1 is gone
    mid_a = requests_by_member(ngx).get("be/0", 0)
    wait_until(lambda: requests_by_member(ngx).get("be/0", 0) > mid_a + 20,
               5, "the survivor to take traffic")

    # restart: the workers reconnect on their own, then slow start; the
    # test asks each daemon for its own counters (its figures in /metrics
    # are refreshed once a second only)
    b.start()
    ca = RingClient(a.sock)
    cb = RingClient(b.sock)
    wait_connected(ngx, 2, since=since)
    t0 = time.monotonic()

    samples = []                     # (t, count on be/0, count on be/1)
    try:
        while time.monotonic() - t0 < slow_start + 3.5:
            sa = ca.stats()[("m", "1")]["requests"]
            sb = cb.stats()[("m", "1")]["requests"]
            samples.append((time.monotonic() - t0, sa, sb))
            time.sleep(0.1)
    finally:
        ca.close()
        cb.close()

    results = load.stop()

    # 0 failed requests: the ones in flight on be/1 moved to be/0
    codes = {}
    for _, _, c in results:
        codes[c] = codes.get(c, 0) + 1
    assert set(codes) == {200}, codes
    inflight = [r for r in results if r[0] < kill_at < r[1]]
    assert inflight, "no request was in flight at the kill"
    assert "request moved to" in ngx.error_log or \
        "be/1" in ngx.error_log, ngx.error_log[-2000:]

    def share(t_from, t_to):
        first = [s for s in samples if s[0] >= t_from][0]
        last = [s for s in samples if s[0] <= t_to][-1]
        da, db = last[1] - first[1], last[2] - first[2]
        assert da + db > 0, (t_from, t_to, samples)
        return db / (da + db)

    per_second = [round(share(i, i + 1.0), 2)
                  for i in range(int(slow_start) + 3)]
    early = share(0.0, 1.0)
    late = share(slow_start + 0.5, slow_start + 3.4)
    print(f"be/1 share per second after its return: {per_second}; after "
          f"slow start {late:.2f}")
    # the restarted backend ramps: in its first second well below its
    # share once the ramp is over (the two then share about evenly), and
    # more in the second half of the ramp than in the first second
    assert late > 0.3, (late, samples)
    assert early < 0.5 * late, (early, late, per_second)
    assert share(slow_start / 2, slow_start) > early, per_second


def test_retries_counted(start_nginx, backend_proc):
    """kill -9 with requests in flight on both members: each is answered
    (moved once), infergate_backend_retries_total counts the moves."""
    ngx, a, b = start_pool(start_nginx, backend_proc,
                           ["m=builtin:sleep:2:300000"],
                           ["m=builtin:sleep:2:300000"],
                           opts="timeout=10s", workers=1,
                           extra=["--max-batch", "16"])
    load = Load(ngx, n=8)
    time.sleep(0.5)
    kill_at = time.monotonic()
    b.kill9()
    time.sleep(1.0)
    results = load.stop()
    inflight = [r for r in results if r[0] < kill_at < r[1]]
    assert len(inflight) >= 2, inflight
    assert all(c == 200 for _, _, c in results), \
        {c for _, _, c in results}
    text = requests.get(ngx.url("/metrics"), timeout=10).text
    retries = [ln for ln in text.splitlines()
               if ln.startswith("infergate_backend_retries_total ")]
    assert retries and float(retries[0].split()[1]) >= 2, retries


def test_both_killed_503_not_retried_twice(start_nginx, backend_proc):
    """With no member left, a request fails once (503), never hangs."""
    ngx, a, b = start_pool(start_nginx, backend_proc,
                           ["m=builtin:sleep:2:300000"],
                           ["m=builtin:sleep:2:300000"],
                           opts="timeout=10s", workers=1)
    out = []

    def one():
        out.append(post(ngx, "m"))

    t = [threading.Thread(target=one) for _ in range(4)]
    for x in t:
        x.start()
    time.sleep(0.1)
    a.kill9()
    b.kill9()
    for x in t:
        x.join(10)
        assert not x.is_alive()
    assert [r.status_code for r in out] == [503] * 4, \
        [(r.status_code, r.text) for r in out]
    assert out[0].headers["Content-Type"] == "application/problem+json"
    r = requests.get(ngx.url("/v2/health/ready"), timeout=5)
    assert r.status_code == 400


def test_least_inflight_slow_backend_gets_fewer_rows(start_nginx,
                                                       backend_proc):
    ngx, a, b = start_pool(start_nginx, backend_proc,
                           ["m=builtin:sleep:2:40000"],
                           ["m=builtin:identity:2"], workers=1,
                           opts="slow_start=0")
    load = Load(ngx, n=8, rows=2)
    time.sleep(3.0)
    results = load.stop()
    assert {c for _, _, c in results} == {200}
    n = len(results)

    def settled():
        c = requests_by_member(ngx, what="rows")
        return c if c.get("be/0", 0) + c.get("be/1", 0) >= 2 * n else None

    rows = wait_until(settled, 5, "the backends' figures")
    print(f"rows: slow be/0 {rows.get('be/0')}, fast be/1 "
          f"{rows.get('be/1')}")
    # round robin would give each half; least rows in flight sends most
    # to the fast one
    assert rows["be/1"] > 3 * rows.get("be/0", 0), rows


def test_model_only_on_one_backend(start_nginx, backend_proc):
    ngx, a, b = start_pool(start_nginx, backend_proc,
                           ["m=builtin:identity:2", "only=builtin:identity:3"],
                           ["m=builtin:identity:2"], workers=1)

    s = requests.Session()
    for _ in range(20):
        r = post(ngx, "only", s, n=3)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [0.0, 1.0, 2.0]
        assert post(ngx, "m", s).status_code == 200

    counts = wait_until(
        lambda: (lambda c: c if c.get("be/0") == 20 else None)(
            requests_by_member(ngx, "only")), 5, "figures")
    assert "be/1" not in counts, counts

    # the model list is the pool's union; readiness answers for the pool
    r = s.get(ngx.url("/v2/models/only"), timeout=5)
    assert r.status_code == 200 and r.json()["name"] == "only", r.text
    assert s.get(ngx.url("/v2/models/only/ready")).status_code == 200
    assert s.get(ngx.url("/v2/health/ready")).status_code == 200

    # the only backend serving it dies: "m" goes on; "only" is known but
    # not ready (503, not 404), and the server is not ready while a model
    # has no backend
    a.kill9()
    wait_until(lambda: s.get(ngx.url("/v2/models/only/ready")).status_code
               == 400, 5, "only to be unready")
    assert s.get(ngx.url("/v2/models/m/ready")).status_code == 200
    assert s.get(ngx.url("/v2/health/ready")).status_code == 400
    for _ in range(10):
        assert post(ngx, "m", s).status_code == 200
    r = post(ngx, "only", s, n=3)
    assert r.status_code == 503, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    assert "not ready" in r.json()["detail"], r.text

    # back
    a.start()
    wait_until(lambda: post(ngx, "only", s, n=3).status_code == 200, 10,
               "only to come back")
    assert s.get(ngx.url("/v2/health/ready")).status_code == 200


def test_single_socket_unchanged_names(start_nginx, backend_proc):
    """One socket: the member keeps the backend's own name (metrics)."""
    a = backend_proc("m=builtin:identity:2")
    ngx = start_nginx(http=pool_http([a]), server=LOC, workers=1)
    wait_connected(ngx, 1)
    assert post(ngx, "m").status_code == 200
    c = wait_until(lambda: requests_by_member(ngx) or None, 5, "figures")
    assert set(c) == {"be"}, c


@pytest.mark.parametrize("args, msg", [
    ("unix:/tmp/a.sock unix:/tmp/a.sock", "listed twice"),
    ("unix:/tmp/a.sock timeout=1s unix:/tmp/b.sock",
     "must come before the parameters"),
    ("unix:/tmp/a.sock slow_start=abc", "invalid slow_start"),
    ("unix:/tmp/a.sock slow_start=-1s", "invalid slow_start"),
    ("unix:/tmp/a.sock slow_start=", "invalid slow_start"),
    ("unix:/tmp/a.sock slow_start=2h", "invalid slow_start"),
    ("unix:/tmp/a.sock unix:", "the address must be"),
    ("timeout=1s", "the address must be"),
    (" ".join(f"unix:/tmp/{i}.sock" for i in range(17)), "more than 16"),
    ("unix:/tmp/a.sock unix:/tmp/b.sock weight=2", "unknown parameter"),
])
def test_nginx_t_rejects_bad_pool(nginx_t, args, msg):
    rc, out = nginx_t(http=f"infergate_backend be {args};", server=LOC)
    assert rc != 0, out
    assert "infergate_backend" in out and msg in out, out


def test_nginx_t_accepts_pool(nginx_t):
    rc, out = nginx_t(http="infergate_backend be unix:/tmp/a.sock "
                      "unix:/tmp/b.sock timeout=1s max_inflight=8 "
                      "slow_start=0;", server=LOC)
    assert rc == 0, out


def test_sigterm_drain_moves_requests(start_nginx, backend_proc):
    """SIGTERM of one member under load (it drains and exits): requests it
    answers `shutting down` go to the other member; no client sees an
    error."""
    ngx, a, b = start_pool(start_nginx, backend_proc,
                           ["m=builtin:sleep:2:20000"],
                           ["m=builtin:sleep:2:20000"],
                           opts="timeout=10s", workers=1)
    load = Load(ngx, n=8)
    time.sleep(1.0)
    b.stop()
    time.sleep(1.0)
    results = load.stop()
    codes = {c for _, _, c in results}
    assert codes == {200}, codes


def test_retry_has_only_the_remaining_time(start_nginx, backend_proc):
    """timeout=1s, batches of 700 ms: a request moved after 400 ms has
    600 ms left, so it gets 504 at about 1 s, not 200 at 1.1 s (the timer
    is not restarted for the retry)."""
    ngx, a, b = start_pool(start_nginx, backend_proc,
                           ["m=builtin:sleep:2:700000"],
                           ["m=builtin:sleep:2:700000"],
                           opts="timeout=1s slow_start=0", workers=1)
    out = []
    lock = threading.Lock()

    def one():
        t0 = time.monotonic()
        r = post(ngx, "m")
        with lock:
            out.append((r.status_code, time.monotonic() - t0))

    # two at once: one on each member (the fewest rows in flight)
    t = [threading.Thread(target=one) for _ in range(2)]
    for x in t:
        x.start()
    time.sleep(0.4)
    a.kill9()
    for x in t:
        x.join(10)
        assert not x.is_alive()
    out.sort()
    assert [c for c, _ in out] == [200, 504], out
    assert 0.85 < out[1][1] < 1.3, out
    assert "request moved to \"be/1\"" in ngx.error_log, \
        ngx.error_log[-2000:]


def test_statistics_extension_sums_the_pool(start_nginx, backend_proc):
    """GET /v2/models/{m}/stats on a pool: the members' figures are
    summed per (model, version), not missing because no member is named
    after the pool itself."""
    ngx, a, b = start_pool(start_nginx, backend_proc, ["m=builtin:identity:2"],
                           ["m=builtin:identity:2"], workers=1)
    s = requests.Session()
    for _ in range(40):
        assert post(ngx, "m", s).status_code == 200
    per = wait_until(lambda: (lambda d: d if sum(d.values()) == 40 else None)(
        requests_by_member(ngx)), what="both members' figures")
    assert len(per) == 2 and all(v > 0 for v in per.values()), per

    def summed():
        r = requests.get(ngx.url("/v2/models/m/stats"), timeout=10)
        if r.status_code != 200:
            return None
        (m,) = r.json()["model_stats"]
        return m if m["inference_count"] == 40 else None

    m = wait_until(summed, what="the pool's statistics")
    assert m["name"] == "m" and m["version"] == "1"
    assert m["inference_stats"]["success"]["count"] == 40
