"""GCRA rate limiting in shared memory: infergate_limit_zone,
infergate_limit, infergate_limit_headers, tenant overrides, dry_run,
precision across workers."""

import re
import threading
import time

import pytest
import requests

from conftest import QUOTA_TYPE, assert_problem, bearer, make_key, ratelimit


def assert_429(r, zone=None):
    body = assert_problem(r, 429, QUOTA_TYPE)
    assert r.headers.get("Cache-Control") == "no-store", \
        f"Cache-Control on 429: {r.headers.get('Cache-Control')!r}"
    ra = r.headers.get("Retry-After")
    assert ra is not None and re.fullmatch(r"\d+", ra), \
        f"Retry-After must be an integer, got {ra!r}"
    assert int(ra) >= 1
    return body, int(ra)


def simple(start_nginx, limit, headers="", auth=False, keys=None, extra=""):
    http = "infergate_limit_zone z 1m;\n"
    files = {}
    if keys is not None:
        http += "infergate_keys keys.txt;\n"
        files["keys.txt"] = "\n".join(keys) + "\n"
    server = f"""
    location / {{
        {"infergate_auth on;" if auth else ""}
        {limit}
        {headers}
        {extra}
        add_header X-IG-Limit $infergate_limit_status always;
        @PROXY@
    }}"""
    return start_nginx(http=http, server=server, files=files)


def test_burst_admits_n_plus_one_then_429(start_nginx, origin):
    ngx = simple(start_nginx, "infergate_limit zone=z rate=1r/m burst=2;")
    s = requests.Session()
    seen = []
    for i in range(3):
        r = s.get(ngx.url(f"/b{i}"))
        assert r.status_code == 200, (i, r.status_code, r.text)
        assert r.json() == {"ok": True}          # the proxied response
        pol, cur = ratelimit(r)
        assert pol == {"z": {"q": 1, "w": 60}}, pol
        assert set(cur) == {"z"}, cur
        seen.append((cur["z"]["r"], cur["z"]["t"]))
    # r counts down 2, 1, 0; t grows by one interval (60 s) each time
    assert [x[0] for x in seen] == [2, 1, 0], seen
    for (r_, t), expect in zip(seen, (60, 120, 180)):
        assert expect - 1 <= t <= expect, seen

    r = s.get(ngx.url("/b3"))
    body, ra = assert_429(r)
    pol, cur = ratelimit(r)
    assert pol == {"z": {"q": 1, "w": 60}}, pol
    assert cur["z"]["r"] == 0
    # after the 3rd admission the next one is due one interval later; on a
    # refusal t is that moment, so Retry-After never points before t
    assert 59 <= ra <= 60, ra
    assert cur["z"]["t"] == ra, (cur, ra)
    assert r.headers.get("X-IG-Limit") == "REJECTED"
    assert not origin.find("/b3"), "refused request reached the origin"


def test_policy_units(start_nginx):
    ngx = start_nginx(http="infergate_limit_zone z 1m;", server="""
        location /s { infergate_limit zone=z rate=10r/s burst=4; @PROXY@ }
        location /m { infergate_limit zone=z rate=600r/m key=m; @PROXY@ }
        location /h { infergate_limit zone=z rate=100r/h key=h; @PROXY@ }
    """)
    s = requests.Session()
    # two at once on /s first: 10r/s burst=4 leaves 4, then 3
    first, second = s.get(ngx.url("/s")), s.get(ngx.url("/s"))
    assert (first.status_code, second.status_code) == (200, 200)
    _, cur = ratelimit(first)
    assert cur["z"]["r"] == 4 and cur["z"]["t"] == 1, cur   # 0.1 s -> 1
    _, cur = ratelimit(second)
    assert cur["z"]["r"] == 3 and cur["z"]["t"] == 1, cur   # 0.2 s -> 1
    for path, q, w in (("/s", 10, 1), ("/m", 600, 60), ("/h", 100, 3600)):
        r = s.get(ngx.url(path))
        assert r.status_code == 200, r.text
        pol, cur = ratelimit(r)
        assert pol == {"z": {"q": q, "w": w}}, (path, pol)


def test_retry_after_consistent_with_ratelimit_t(start_nginx):
    ngx = simple(start_nginx, "infergate_limit zone=z rate=2r/s burst=3;")
    s = requests.Session()
    codes = []
    for i in range(6):
        r = s.get(ngx.url("/x"))
        codes.append(r.status_code)
        if r.status_code == 429:
            _, ra = assert_429(r)
            _, cur = ratelimit(r)
            assert cur["z"]["r"] == 0
            assert ra <= cur["z"]["t"], (ra, cur)
            assert cur["z"]["t"] <= 2, cur        # 4 x 0.5 s
            assert ra == 1, ra                    # 0.5 s rounds up
    assert codes[:4] == [200] * 4 and codes[4:] == [429, 429], codes


def test_denied_requests_consume_nothing(start_nginx):
    # 2r/s, burst 0: one every 500 ms.  Hammer 429s for 400 ms after an
    # admission; 520 ms after it one request must be admitted again.
    ngx = simple(start_nginx, "infergate_limit zone=z rate=2r/s;")
    s = requests.Session()
    s.get(ngx.url("/warmup"))       # opens the keep-alive connection
    time.sleep(0.6)
    t0 = time.monotonic()
    r = s.get(ngx.url("/first"))
    assert r.status_code == 200, r.text
    denied = 0
    while time.monotonic() - t0 < 0.4:
        r = s.get(ngx.url("/spam"))
        assert r.status_code == 429, r.status_code
        denied += 1
    assert denied >= 5
    last_denied = time.monotonic()
    time.sleep(max(0.0, t0 + 0.52 - time.monotonic()))
    assert time.monotonic() - last_denied < 0.5, "test machine too slow"
    r = s.get(ngx.url("/again"))
    assert r.status_code == 200, (
        f"after {denied} refusals, one interval after the last admission, "
        f"got {r.status_code} (Retry-After {r.headers.get('Retry-After')}):"
        " refused requests consumed quota")
    r = s.get(ngx.url("/again"))
    assert r.status_code == 429


def test_denied_by_one_limit_consumes_nothing_in_another(start_nginx):
    # zone a: 6 at once for everybody; zone b: 2 at once per X-B value
    ngx = start_nginx(http="infergate_limit_zone a 1m; "
                           "infergate_limit_zone b 1m;", server="""
        location / {
            infergate_limit zone=a rate=1r/m burst=5 key=all;
            infergate_limit zone=b rate=1r/m burst=1 key=$http_x_b;
            @PROXY@
        }""")
    s = requests.Session()

    def get(b):
        return s.get(ngx.url("/"), headers={"X-B": b}).status_code

    assert [get("1") for _ in range(2)] == [200, 200]
    assert [get("1") for _ in range(4)] == [429] * 4
    # zone a has 4 left if the refusals by b consumed nothing in a
    assert [get("2") for _ in range(2)] == [200, 200], \
        "requests refused by zone b consumed zone a"
    assert [get("3") for _ in range(2)] == [200, 200], \
        "requests refused by zone b consumed zone a"
    assert get("4") == 429


def test_several_limits_report_each_zone(start_nginx):
    ngx = start_nginx(http="infergate_limit_zone a 1m; "
                           "infergate_limit_zone b 1m;", server="""
        location / {
            infergate_limit zone=a rate=10r/s burst=20;
            infergate_limit zone=b rate=1r/m burst=1;
            @PROXY@
        }""")
    r = requests.get(ngx.url("/"))
    assert r.status_code == 200
    pol, cur = ratelimit(r)
    assert pol == {"a": {"q": 10, "w": 1}, "b": {"q": 1, "w": 60}}, pol
    assert cur["a"]["r"] == 20 and cur["b"]["r"] == 1, cur
    requests.get(ngx.url("/"))
    r = requests.get(ngx.url("/"))
    assert_429(r)
    pol, cur = ratelimit(r)
    assert "b" in pol and cur["b"]["r"] == 0, (pol, cur)


@pytest.mark.parametrize("mode", ["draft", "legacy", "both", "off"])
def test_header_modes(start_nginx, mode):
    ngx = simple(start_nginx, "infergate_limit zone=z rate=10r/s burst=1;",
                 headers=f"infergate_limit_headers {mode};")
    s = requests.Session()
    responses = [s.get(ngx.url("/")) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429], \
        [r.status_code for r in responses]
    assert_429(responses[2])
    draft = ("RateLimit-Policy", "RateLimit")
    legacy = ("X-RateLimit-Limit", "X-RateLimit-Remaining",
              "X-RateLimit-Reset")
    want = {"draft": draft, "legacy": legacy, "both": draft + legacy,
            "off": ()}[mode]
    for r in responses:
        for h in draft + legacy:
            if h in want:
                assert h in r.headers, (mode, r.status_code, h,
                                        dict(r.headers))
            else:
                assert h not in r.headers, (mode, r.status_code, h,
                                            dict(r.headers))
        for h in legacy:
            if h in want:
                assert re.fullmatch(r"\d+", r.headers[h]), (h, r.headers[h])
        if mode == "both":
            pol, cur = ratelimit(r)
            assert int(r.headers["X-RateLimit-Limit"]) == pol["z"]["q"]
            assert int(r.headers["X-RateLimit-Remaining"]) == cur["z"]["r"]
            assert int(r.headers["X-RateLimit-Reset"]) == cur["z"]["t"]
    if mode in ("legacy", "both"):
        assert [int(r.headers["X-RateLimit-Remaining"])
                for r in responses] == [1, 0, 0]
        assert int(responses[0].headers["X-RateLimit-Limit"]) == 10


def test_no_headers_outside_limited_locations(start_nginx):
    ngx = start_nginx(http="infergate_limit_zone z 1m;", server="""
        location /free { @PROXY@ }
        location /lim { infergate_limit zone=z rate=1r/s; @PROXY@ }""")
    r = requests.get(ngx.url("/free"))
    assert r.status_code == 200
    for h in ("RateLimit", "RateLimit-Policy", "X-RateLimit-Limit",
              "Retry-After"):
        assert h not in r.headers, h


def test_dry_run_never_refuses(start_nginx, origin):
    ngx = simple(start_nginx,
                 "infergate_limit zone=z rate=1r/m burst=1 dry_run;",
                 extra="proxy_set_header X-Status $infergate_limit_status;")
    s = requests.Session()
    statuses = []
    for i in range(5):
        r = s.get(ngx.url(f"/d{i}"))
        assert r.status_code == 200, (i, r.status_code, r.text)
        statuses.append(r.headers.get("X-IG-Limit"))
        assert origin.last(f"/d{i}")["headers"]["X-Status"] == statuses[-1]
    assert statuses == ["PASSED", "PASSED"] + ["REJECTED_DRY_RUN"] * 3, \
        statuses


def test_limit_status_variable(start_nginx):
    ngx = simple(start_nginx, "infergate_limit zone=z rate=1r/m;")
    s = requests.Session()
    a, b = s.get(ngx.url("/")), s.get(ngx.url("/"))
    assert (a.status_code, b.status_code) == (200, 429)
    assert a.headers.get("X-IG-Limit") == "PASSED"
    assert b.headers.get("X-IG-Limit") == "REJECTED"


def test_custom_key(start_nginx):
    ngx = simple(start_nginx,
                 "infergate_limit zone=z rate=1r/m key=$http_x_client;")
    s = requests.Session()
    assert s.get(ngx.url("/"), headers={"X-Client": "a"}).status_code == 200
    assert s.get(ngx.url("/"), headers={"X-Client": "a"}).status_code == 429
    assert s.get(ngx.url("/"), headers={"X-Client": "b"}).status_code == 200


def test_client_address_key_when_auth_off(start_nginx):
    ngx = simple(start_nginx, "infergate_limit zone=z rate=1r/m burst=1;")
    # different connections, headers and paths: same client address
    assert requests.get(ngx.url("/1")).status_code == 200
    assert requests.get(ngx.url("/2"), headers={"X-API-Key": "x"}) \
        .status_code == 200
    assert_429(requests.get(ngx.url("/3")))


def test_tenant_key_and_keys_file_override(start_nginx):
    a1, la1 = make_key("acme")
    a2, la2 = make_key("acme")               # a second key, same tenant
    g, lg = make_key("globex", "rate=1r/m burst=1")
    i, li = make_key("initech", "burst=0")   # burst only
    ngx = simple(start_nginx, "infergate_limit zone=z rate=100r/m burst=2;",
                 auth=True, keys=[la1, la2, lg, li])
    s = requests.Session()
    # acme: location policy (3 at once), shared by both of its keys
    codes = [s.get(ngx.url("/"), headers=bearer(k)).status_code
             for k in (a1, a2, a1, a2)]
    assert codes == [200, 200, 200, 429], codes
    r = s.get(ngx.url("/"), headers=bearer(a1))
    pol, _ = ratelimit(r)
    assert pol == {"z": {"q": 100, "w": 60}}, pol

    # globex: its own rate=1r/m burst=1 from the keys file
    r = s.get(ngx.url("/"), headers=bearer(g))
    assert r.status_code == 200, "acme's usage leaked into globex"
    pol, cur = ratelimit(r)
    assert pol == {"z": {"q": 1, "w": 60}}, pol
    assert cur["z"]["r"] == 1, cur
    assert s.get(ngx.url("/"), headers=bearer(g)).status_code == 200
    r = s.get(ngx.url("/"), headers=bearer(g))
    assert_429(r)
    _, ra = assert_429(r)
    assert 59 <= ra <= 60, ra

    # initech: location rate, burst=0 from the keys file
    r = s.get(ngx.url("/"), headers=bearer(i))
    assert r.status_code == 200
    pol, cur = ratelimit(r)
    assert pol == {"z": {"q": 100, "w": 60}} and cur["z"]["r"] == 0, \
        (pol, cur)
    assert_429(s.get(ngx.url("/"), headers=bearer(i)))


def test_override_applies_only_to_tenant_keyed_limits(start_nginx):
    """A tenant's rate=/burst= replace the limits keyed by tenant (the
    default key, or key=$infergate_tenant), never a shared cap with a key
    of its own (issue 11: 60 of 60 through zone=global ... key=all)."""
    big, line = make_key("bigco", "rate=1000r/s burst=1000")
    http = ("infergate_limit_zone z 1m; infergate_limit_zone t 1m; "
            "infergate_limit_zone global 1m; infergate_keys keys.txt;")
    ngx = start_nginx(http=http, server="""
        location / {
            infergate_auth on;
            infergate_limit zone=z rate=1r/m burst=0;
            infergate_limit zone=t rate=1r/m burst=0 key=${infergate_tenant};
            infergate_limit zone=global rate=1r/m burst=2 key=all;
            @PROXY@
        }""", files={"keys.txt": line + "\n"})
    s = requests.Session()
    codes = [s.get(ngx.url("/"), headers=bearer(big)).status_code
             for _ in range(6)]
    assert codes == [200, 200, 200, 429, 429, 429], codes
    r = s.get(ngx.url("/"), headers=bearer(big))
    body, _ = assert_429(r)
    assert body["violated-policies"] == ["global"], body
    pol, _ = ratelimit(r)
    assert pol["z"] == {"q": 1000, "w": 1}, pol
    assert pol["t"] == {"q": 1000, "w": 1}, pol
    assert pol["global"] == {"q": 1, "w": 60}, pol


def test_key_in_log_is_escaped(start_nginx):
    """A limit keyed by $uri logs the key: CR, LF and quotes from the URI
    must not forge a line in error.log."""
    ngx = simple(start_nginx, "infergate_limit zone=z rate=1r/m key=$uri;")
    ngx.allowed_log.append(r".*\[info\].*exceeded by key.*")
    forged = ("/x%0d%0a2026/01/01%2000:00:00%20%5balert%5d%201%231:%20"
              "forged%22%5c%ff")
    assert requests.get(ngx.url(forged)).status_code == 200
    assert_429(requests.get(ngx.url(forged)))
    log = ngx.error_log
    assert "forged" in log
    for ln in log.splitlines():
        assert not re.match(r"^2026/01/01 00:00:00", ln), ln
        assert "[alert] 1#1" not in ln or "\\x0d\\x0a" in ln, ln
    assert "/x\\x0d\\x0a2026/01/01 00:00:00 [alert] 1#1: " \
           "forged\\x22\\x5c\\xff" in log, log[-2000:]


def test_precision_10rps_two_workers(start_nginx):
    """rate=10r/s burst=0, clients firing flat out for 2 s over 2 workers
    and several keep-alive connections: 20 +- 2 admitted."""
    ngx = start_nginx(http="infergate_limit_zone z 1m;", listen="reuseport",
                      server="""
        location / { infergate_limit zone=z rate=10r/s; @PROXY@ }""")
    assert len(ngx.worker_pids()) == 2
    nthreads = 12
    barrier = threading.Barrier(nthreads + 1)
    results = [[] for _ in range(nthreads)]
    errors = []
    window = {}

    def client(idx):
        s = requests.Session()
        barrier.wait()
        start = window["start"]
        while time.monotonic() < start + 2.0:
            try:
                r = s.get(ngx.url(f"/p{idx}"), timeout=5)
                results[idx].append(r.status_code)
            except requests.RequestException as e:   # pragma: no cover
                errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,))
               for i in range(nthreads)]
    for t in threads:
        t.start()
    window["start"] = time.monotonic() + 0.05
    barrier.wait()
    for t in threads:
        t.join()
    flat = [c for res in results for c in res]
    assert not errors, errors[:5]
    assert set(flat) <= {200, 429}, set(flat)
    admitted = flat.count(200)
    total = len(flat)
    assert total > 200, f"only {total} requests in 2 s: client too slow"
    # both workers must have served requests, or this tested nothing
    pids = {ln.split()[0] for ln in ngx.access_log.splitlines()
            if '"GET /p' in ln}
    assert len(pids) == 2, f"only worker(s) {pids} served requests"
    admitted_pids = {ln.split()[0] for ln in ngx.access_log.splitlines()
                     if '"GET /p' in ln and ln.split()[1] == "200"}
    assert 18 <= admitted <= 22, (
        f"{admitted} admitted out of {total} in 2 s at 10r/s (expected "
        f"20 +- 2); admitting workers {admitted_pids}")
