"""Redis connections: hiredis on the nginx event loop (infergate_redis):
AUTH with an ACL user over a unix socket, SELECT, reconnect with backoff,
per-command timeouts, clean worker exit, configuration errors."""

import os
import signal
import threading
import time

import pytest
import requests

from redis_fixtures import (redis_factory, redis_server,  # noqa: F401
                            store_origin)


def cache_conf(redis, origin, params="", cache="ttl=60s"):
    http = f"infergate_redis r {redis.address} {params};\n"
    server = f"""
    location / {{
        infergate_cache redis=r {cache};
        add_header X-Status-Var $infergate_cache_status always;
        {origin.proxy}
    }}"""
    return http, server


def wait_status(ngx, path, want, timeout=10):
    """Requests path until X-Cache-Status is one of want; returns the
    last response."""
    deadline = time.time() + timeout
    while True:
        r = requests.get(ngx.url(path), timeout=5)
        if r.headers.get("X-Cache-Status") in want or time.time() > deadline:
            return r
        time.sleep(0.05)


def test_tcp_miss_then_hit(start_nginx, redis_server, store_origin):
    http, server = cache_conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=1)
    r = wait_status(ngx, "/warm", ("MISS", "HIT"))
    assert r.headers["X-Cache-Status"] == "MISS"
    r1 = requests.get(ngx.url("/a"))
    r2 = requests.get(ngx.url("/a"))
    assert r1.headers["X-Cache-Status"] == "MISS"
    assert r1.headers["X-Status-Var"] == "MISS"
    assert r2.headers["X-Cache-Status"] == "HIT", r2.headers
    assert r2.content == r1.content
    assert store_origin.count("GET", "/a") == 1
    stats = redis_server.commandstats()
    assert stats.get("evalsha", 0) + stats.get("eval", 0) >= 3, stats


def test_unix_acl_password_file_and_db(start_nginx, redis_factory,
                                       store_origin):
    srv = redis_factory(unix=True, acl_user="igw", password="s3cr3t-pw")
    http, server = cache_conf(
        srv, store_origin,
        "user=igw password_file=redis.pw db=3 timeout=200ms")
    ngx = start_nginx(http=http, server=server, workers=2,
                      files={"redis.pw": "s3cr3t-pw\n"})
    conf = (ngx.prefix / "nginx.conf").read_text()
    assert "s3cr3t-pw" not in conf
    wait_status(ngx, "/warm", ("MISS", "HIT"))
    requests.get(ngx.url("/u"))
    r = requests.get(ngx.url("/u"))
    assert r.headers["X-Cache-Status"] == "HIT"
    # the entries are in db 3 and nowhere else
    assert srv.client(db=3).keys("igc:*")
    assert not srv.client(db=0).keys("igc:*")
    assert all(len(k) == 4 + 16 + 1 + 64 for k in srv.client(db=3).keys("*"))


def test_password_env(start_nginx, redis_factory, store_origin, monkeypatch):
    srv = redis_factory(acl_user="envuser", password="from-env-1")
    monkeypatch.setenv("IG_TEST_REDIS_PW", "from-env-1")
    http, server = cache_conf(srv, store_origin,
                              "user=envuser password_env=IG_TEST_REDIS_PW")
    ngx = start_nginx(http=http, server=server, workers=1)
    r = wait_status(ngx, "/e", ("HIT",))
    assert r.headers["X-Cache-Status"] == "HIT"


def test_wrong_password_bypasses(start_nginx, redis_factory, store_origin):
    srv = redis_factory(acl_user="igw", password="right")
    http, server = cache_conf(srv, store_origin,
                              "user=igw password_file=pw")
    ngx = start_nginx(http=http, server=server, workers=1,
                      files={"pw": "wrong\n"})
    for _ in range(5):
        r = requests.get(ngx.url("/w"))
        assert r.status_code == 200
        assert r.headers["X-Cache-Status"] in ("BYPASS", "MISS")
        time.sleep(0.1)
    assert store_origin.count("GET", "/w") == 5
    assert not srv.client().keys("ig*")
    assert "AUTH failed" in ngx.error_log


def test_reconnect_after_restart(start_nginx, redis_server, store_origin):
    http, server = cache_conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_status(ngx, "/r", ("HIT",))
    redis_server.stop()
    t = time.time()
    r = requests.get(ngx.url("/r"), timeout=5)
    assert r.status_code == 200
    assert r.headers["X-Cache-Status"] == "BYPASS"
    assert time.time() - t < 1
    redis_server.start()
    # backoff: 100 ms doubling, so a few seconds at most
    r = wait_status(ngx, "/r2", ("MISS", "HIT"), timeout=8)
    assert r.headers["X-Cache-Status"] in ("MISS", "HIT")
    r = wait_status(ngx, "/r2", ("HIT",), timeout=3)
    assert r.headers["X-Cache-Status"] == "HIT"
    # warnings are rate limited to one a second
    warns = [ln for ln in ngx.error_log.splitlines() if "[warn]" in ln
             and "infergate_redis" in ln]
    assert warns and len(warns) < 40, warns


def test_command_timeout(start_nginx, redis_server, store_origin):
    http, server = cache_conf(redis_server, store_origin, "timeout=100ms")
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_status(ngx, "/t", ("HIT",))
    redis_server.pause()
    try:
        for i in range(3):
            t = time.time()
            r = requests.get(ngx.url(f"/t{i}"), timeout=5)
            took = time.time() - t
            assert r.status_code == 200
            assert r.headers["X-Cache-Status"] == "BYPASS"
            assert took < 1.0, took
    finally:
        redis_server.resume()
    r = wait_status(ngx, "/t9", ("HIT",), timeout=10)
    assert r.headers["X-Cache-Status"] == "HIT"
    assert "command timed out" in ngx.error_log


def test_quit_while_redis_down_is_prompt(start_nginx, redis_server,
                                         store_origin):
    http, server = cache_conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=2)
    wait_status(ngx, "/q", ("HIT",))
    redis_server.stop()
    requests.get(ngx.url("/q"))
    time.sleep(0.5)
    t = time.time()
    ngx.stop()
    # reconnect timers are cancelable: graceful quit does not wait on them
    assert time.time() - t < 3
    assert "open socket" not in ngx.error_log


def test_reload_keeps_serving(start_nginx, redis_server, store_origin):
    http, server = cache_conf(redis_server, store_origin)
    ngx = start_nginx(http=http, server=server, workers=2)
    wait_status(ngx, "/rl", ("HIT",))
    ngx.reload()
    r = wait_status(ngx, "/rl", ("HIT",), timeout=5)
    assert r.headers["X-Cache-Status"] == "HIT"
    assert "open socket" not in ngx.error_log


@pytest.mark.parametrize("line,msg", [
    ("infergate_redis r localhost:6379;", "invalid address"),
    ("infergate_redis r 127.0.0.1;", "invalid address"),
    ("infergate_redis r 127.0.0.1:70000;", "invalid address"),
    ("infergate_redis r [::1];", "invalid address"),
    ("infergate_redis r ::1:6379;", "invalid address"),
    ("infergate_redis r unix:;", "invalid address"),
    ("infergate_redis r 127.0.0.1:6379 connections=0;",
     "connections must be between 1 and 64"),
    ("infergate_redis r 127.0.0.1:6379 timeout=abc;", "invalid parameter"),
    ("infergate_redis r 127.0.0.1:6379 db=x;", "invalid parameter"),
    ("infergate_redis r 127.0.0.1:6379 password_env=IG_NOPE_UNSET;",
     "is not set"),
    ("infergate_redis r 127.0.0.1:6379 password_file=missing.pw;",
     "cannot open"),
    ("infergate_redis r 127.0.0.1:6379 user=u;", "without password"),
    ("infergate_redis r 127.0.0.1:6379; infergate_redis r 127.0.0.1:1;",
     "duplicate"),
])
def test_config_errors(nginx_t, line, msg):
    rc, out = nginx_t(http=line)
    assert rc != 0
    assert "infergate_redis" in out and msg in out, out


@pytest.mark.parametrize("addr", ["127.0.0.1:6379", "[::1]:6379",
                                  "unix:/run/redis.sock"])
def test_addresses_accepted(nginx_t, addr):
    rc, out = nginx_t(http=f"infergate_redis r {addr} db=2 timeout=1s "
                           f"connect_timeout=1s connections=4;")
    assert rc == 0, out


def test_undefined_server(nginx_t):
    rc, out = nginx_t(server="location / { infergate_cache redis=nope "
                             "ttl=1s; }")
    assert rc != 0
    assert 'redis server "nope"' in out and "not defined" in out, out


def test_graceful_quit_with_a_command_in_flight(start_nginx, redis_server,
                                                store_origin):
    """A request waiting on a paused Redis during a graceful quit gets its
    timeout, is served (BYPASS), and the worker then exits cleanly."""
    http, server = cache_conf(redis_server, store_origin, "timeout=400ms")
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_status(ngx, "/g", ("HIT",))
    out = {}
    redis_server.pause()
    try:
        t = threading.Thread(target=lambda: out.update(
            r=requests.get(ngx.url("/g-inflight"), timeout=10)))
        t.start()
        time.sleep(0.1)
        ngx.stop()
        t.join()
    finally:
        redis_server.resume()
    assert out["r"].status_code == 200
    assert out["r"].headers["X-Cache-Status"] == "BYPASS"
    assert "open socket" not in ngx.error_log


def test_fast_shutdown_with_a_command_in_flight(start_nginx, redis_server,
                                                store_origin):
    """SIGTERM while a request waits on Redis: the pending callback must
    not reach the request (sanitizer builds report any use after free)."""
    http, server = cache_conf(redis_server, store_origin, "timeout=5s")
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_status(ngx, "/f", ("HIT",))
    redis_server.pause()
    try:
        t = threading.Thread(target=lambda: _swallow(
            lambda: requests.get(ngx.url("/f-inflight"), timeout=10)))
        t.start()
        time.sleep(0.2)
        os.kill(ngx.master, signal.SIGTERM)
        deadline = time.time() + 10
        while ngx.alive() and time.time() < deadline:
            time.sleep(0.05)
        t.join()
    finally:
        redis_server.resume()
    assert not ngx.alive()
    assert "exited on signal" not in ngx.error_log


def _swallow(fn):
    try:
        fn()
    except requests.RequestException:
        pass


def test_connect_timeout(start_nginx, store_origin):
    """A server that never completes the handshake (its accept queue is
    full, so SYNs are dropped): connect_timeout drops the attempt and the
    cache bypasses without waiting."""
    import socket
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)

    class Addr:
        address = f"127.0.0.1:{port}"

    http, server = cache_conf(Addr, store_origin, "connect_timeout=100ms")
    try:
        ngx = start_nginx(http=http, server=server, workers=1)
        time.sleep(0.5)
        for _ in range(3):
            t = time.time()
            r = requests.get(ngx.url("/ct"), timeout=5)
            assert r.status_code == 200
            assert r.headers["X-Cache-Status"] == "BYPASS"
            assert time.time() - t < 0.5
        ngx.stop()
        assert "connect timed out" in ngx.error_log, ngx.error_log[-2000:]
    finally:
        for s in fillers:
            s.close()
        ls.close()


def test_connect_failures_logged_once_per_outage(start_nginx, redis_factory,
                                                 store_origin):
    """nginx core logs "connect() to unix:... failed" (error, or crit for
    a socket file gone) on every attempt: the first failure after a
    connection keeps its level, the retries of the same outage log it at
    info (the module's own warning, throttled, still says the server is
    down); the next outage logs its first failure again.  A unix socket:
    a TCP connect fails later, in the module, which logs it itself."""
    srv = redis_factory(unix=True)
    http, server = cache_conf(srv, store_origin, "connect_timeout=200ms")
    ngx = start_nginx(http=http, server=server, workers=1)
    wait_status(ngx, "/warm", ("MISS", "HIT"))

    def outage(seconds):
        offset = len(ngx.error_log)
        srv.stop()
        deadline = time.time() + seconds
        while time.time() < deadline:
            r = requests.get(ngx.url("/d"), timeout=5)
            assert r.status_code == 200
            time.sleep(0.05)
        return ngx.error_log[offset:]

    def connect_lines(log, levels):
        return [ln for ln in log.splitlines()
                if "connect() to unix:" in ln
                and any(f"[{lv}]" in ln for lv in levels)]

    # backoff 100, 200, 400, 800 ms (less a quarter): four attempts or more
    log = outage(2.5)
    loud = connect_lines(log, ("error", "crit"))
    assert len(loud) == 1, loud
    assert len(connect_lines(log, ("info",))) >= 3, log[-3000:]
    assert 'infergate_redis "r"' in log

    srv.start()
    r = wait_status(ngx, "/back", ("MISS", "HIT"), timeout=15)
    assert r.headers["X-Cache-Status"] == "MISS", ngx.error_log[-2000:]

    log = outage(1.0)
    loud = connect_lines(log, ("error", "crit"))
    assert len(loud) == 1, loud
