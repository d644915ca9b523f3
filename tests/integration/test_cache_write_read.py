"""Read-your-writes across gateways (infergate_cache_purge): after a
write's 2xx, the writer's next read, through any gateway sharing the
Redis server, does not return the value from before the write.  The
writing gateway reaches Redis through a slow link: a TCP relay written
here that forwards every byte but holds the gateway->Redis direction back
(a slow network, not a stand-in for Redis).  The other gateway connects
directly, so a purge that is still on its way when the write's response
leaves loses the race deterministically."""

import heapq
import http.server
import json
import re
import socket
import threading
import time

import requests

from redis_fixtures import (redis_factory, redis_server,  # noqa: F401
                            store_origin)


class SlowRelay:
    """127.0.0.1:port -> target; client->server data is delivered
    `delay` seconds after it arrived (in order), server->client at once."""

    def __init__(self, target_port, delay):
        self.target = ("127.0.0.1", target_port)
        self.delay = delay
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            up.settimeout(None)
            self.socks += [c, up]
            q, cv = [], threading.Condition()
            threading.Thread(target=self._c2s_read, args=(c, up, q, cv),
                             daemon=True).start()
            threading.Thread(target=self._c2s_write, args=(up, q, cv),
                             daemon=True).start()
            threading.Thread(target=self._s2c, args=(up, c),
                             daemon=True).start()

    def _c2s_read(self, c, up, q, cv):
        seq = 0
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                data = b""
            with cv:
                heapq.heappush(q, (time.monotonic() + self.delay, seq, data))
                seq += 1
                cv.notify()
            if not data:
                return

    def _c2s_write(self, up, q, cv):
        while True:
            with cv:
                while not q:
                    cv.wait()
                due, _, data = q[0]
                now = time.monotonic()
                if due > now:
                    cv.wait(due - now)
                    continue
                heapq.heappop(q)
            try:
                if not data:
                    up.shutdown(socket.SHUT_WR)
                    return
                up.sendall(data)
            except OSError:
                return

    def _s2c(self, up, c):
        while True:
            try:
                data = up.recv(65536)
                if not data:
                    c.shutdown(socket.SHUT_WR)
                    return
                c.sendall(data)
            except OSError:
                return

    def close(self):
        self.closed = True
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


class _SlowWriteHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, payload, status=200):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        o = self.server.owner
        with o.lock:
            value = o.values.get(self.path, "initial")
        self._reply(json.dumps({"value": value}).encode())

    def do_PUT(self):
        o = self.server.owner
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode()
        # the write takes effect only after put_delay
        time.sleep(o.put_delay)
        if o.put_status != 200:
            self._reply(b'{"written":false}', o.put_status)
            return
        with o.lock:
            o.values[self.path] = body
        self._reply(b'{"written":true}')

    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass    # a client (nginx) that went away mid-write


class SlowWriteOrigin:
    """GET returns the value; PUT sets it after put_delay seconds."""

    def __init__(self, put_delay):
        self.lock = threading.Lock()
        self.values = {}
        self.put_delay = put_delay
        self.put_status = 200
        self.server = _QuietServer(("127.0.0.1", 0), _SlowWriteHandler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever,
                         kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def proxy(self):
        return f"proxy_pass http://127.0.0.1:{self.port};"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


HOST = {"Host": "api.test"}    # the cache key has the host in it


def gateway(start_nginx, address, origin, timeout):
    http = f"infergate_redis r {address} timeout={timeout};\n"
    server = f"""
    location /items/ {{
        infergate_cache redis=r ttl=60s tag=user:$arg_user;
        infergate_cache_purge redis=r;
        {origin.proxy}
    }}
    location /users/ {{
        infergate_cache_purge redis=r tag=user:$arg_user;
        {origin.proxy}
    }}
    location = /metrics {{ infergate_metrics; infergate_audit off; }}"""
    g = start_nginx(http=http, server=server, workers=1)
    g.allowed_log.append(r".*infergate_redis.*")
    return g


def wait_hit(g, path, timeout=15):
    deadline = time.time() + timeout
    while True:
        r = requests.get(g.url(path), headers=HOST, timeout=5)
        if r.headers.get("X-Cache-Status") == "HIT":
            return r
        assert time.time() < deadline, r.headers
        time.sleep(0.05)


def metric(g, name):
    text = requests.get(g.url("/metrics"), timeout=5).text
    m = re.search(rf"^{re.escape(name)} (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def test_write_then_read_through_another_gateway(start_nginx, redis_server,
                                                 store_origin):
    """Fill on a, write on c (its Redis link 300 ms slow), read on a at
    once: the new value, never the entry from before the write."""
    relay = SlowRelay(redis_server.port, 0.3)
    try:
        a = gateway(start_nginx, redis_server.address, store_origin, "2s")
        c = gateway(start_nginx, relay.address, store_origin, "2s")
        wait_hit(a, "/items/warm")
        wait_hit(c, "/items/warm")
        for i in range(3):
            path = f"/items/k{i}"
            assert requests.get(a.url(path), headers=HOST).json()["value"] \
                == "initial"
            assert wait_hit(a, path).json()["value"] == "initial"
            t0 = time.monotonic()
            w = requests.put(c.url(path), data=f"v{i}", headers=HOST,
                             timeout=10)
            took = time.monotonic() - t0
            assert w.status_code == 200
            r = requests.get(a.url(path), headers=HOST)
            assert r.json()["value"] == f"v{i}", (r.headers, took)
            assert r.headers["X-Cache-Status"] == "MISS"
        # a tag purge through c: the user's entries are gone on a
        for p in ("/items/a?user=u1", "/items/b?user=u2"):
            requests.get(a.url(p), headers=HOST)
            wait_hit(a, p)
        w = requests.post(c.url("/users/x?user=u1"), data="new",
                          headers=HOST, timeout=10)
        assert w.status_code == 200
        assert requests.get(a.url("/items/a?user=u1"), headers=HOST) \
            .headers["X-Cache-Status"] == "MISS"
        assert requests.get(a.url("/items/b?user=u2"), headers=HOST) \
            .headers["X-Cache-Status"] == "HIT"
        assert metric(c, "infergate_redis_errors_total") == 0
    finally:
        relay.close()


def test_reader_racing_the_write(start_nginx, redis_server):
    """A reader that misses while the write runs (after the purge before
    it, before the origin has the new value) reads the old value from the
    origin; its fill must not be what the writer reads after its 2xx,
    although the purge after the write is still on c's slow link."""
    relay = SlowRelay(redis_server.port, 0.3)
    origin = SlowWriteOrigin(0.6)
    try:
        a = gateway(start_nginx, redis_server.address, origin, "2s")
        c = gateway(start_nginx, relay.address, origin, "2s")
        wait_hit(a, "/items/warm")
        wait_hit(c, "/items/warm")
        path = "/items/race"
        requests.get(a.url(path), headers=HOST)
        assert wait_hit(a, path).json()["value"] == "initial"
        out = {}

        def write():
            out["w"] = requests.put(c.url(path), data="new", headers=HOST,
                                    timeout=10)
        t = threading.Thread(target=write)
        t0 = time.monotonic()
        t.start()
        # the purge before the write lands at ~0.3 s, the origin takes
        # the value at ~0.9 s, the purge after it lands at ~1.2 s
        time.sleep(0.5)
        racing = requests.get(a.url(path), headers=HOST, timeout=10)
        t.join()
        assert out["w"].status_code == 200
        done = time.monotonic() - t0
        r = requests.get(a.url(path), headers=HOST, timeout=10)
        assert r.json()["value"] == "new", (r.headers, racing.headers, done)
        assert racing.json()["value"] in ("initial", "new")
    finally:
        relay.close()
        origin.close()


def test_failed_write_lets_readers_go(start_nginx, redis_server):
    """A write answered 409 (no purge after it) gives its write lease
    back at once: a read after it does not wait out lock_timeout (2 s)."""
    origin = SlowWriteOrigin(0.0)
    origin.put_status = 409
    try:
        a = gateway(start_nginx, redis_server.address, origin, "2s")
        wait_hit(a, "/items/warm")
        for i in range(3):
            path = f"/items/f{i}"
            assert requests.put(a.url(path), data="x", headers=HOST,
                                timeout=10).status_code == 409
            t0 = time.monotonic()
            r = requests.get(a.url(path), headers=HOST, timeout=10)
            took = time.monotonic() - t0
            assert r.json()["value"] == "initial"
            assert r.headers["X-Cache-Status"] == "MISS"
            assert took < 1.0, took
        # the last read's fill (sent after its response) takes its lease
        deadline = time.time() + 2
        while redis_server.client().keys("igl:*") and time.time() < deadline:
            time.sleep(0.05)
        assert not redis_server.client().keys("igl:*")
    finally:
        origin.close()


def test_abandoned_write_lets_readers_go(start_nginx, redis_server):
    """A write whose client goes away before the origin answers ends
    without a response: its write lease goes with the request."""
    origin = SlowWriteOrigin(1.5)
    try:
        a = gateway(start_nginx, redis_server.address, origin, "2s")
        wait_hit(a, "/items/warm")
        try:
            requests.put(a.url("/items/gone"), data="x", headers=HOST,
                         timeout=0.3)
        except requests.exceptions.Timeout:
            pass
        time.sleep(0.2)
        t0 = time.monotonic()
        r = requests.get(a.url("/items/gone"), headers=HOST, timeout=10)
        took = time.monotonic() - t0
        assert r.headers["X-Cache-Status"] == "MISS"
        assert took < 1.0, took
    finally:
        origin.close()


def test_write_goes_on_when_the_purge_is_late(start_nginx, redis_server,
                                              store_origin):
    """The purge before the write waits at most the Redis timeout=; then
    the write goes to the origin anyway (logged and counted), it is not
    refused."""
    relay = SlowRelay(redis_server.port, 0.0)
    try:
        c = gateway(start_nginx, relay.address, store_origin, "300ms")
        wait_hit(c, "/items/warm")
        before = metric(c, "infergate_redis_errors_total")
        relay.delay = 1.5
        t0 = time.monotonic()
        w = requests.put(c.url("/items/late"), data="v-late", headers=HOST,
                         timeout=10)
        took = time.monotonic() - t0
        assert w.status_code == 200
        assert took < 1.2, took
        assert store_origin.count("PUT", "/items/late") == 1
        relay.delay = 0.0
        assert metric(c, "infergate_redis_errors_total") > before
        # the Redis layer's "timed out" or ours (warnings: one a second)
        assert re.search(r"\[warn\].*infergate_redis.*(purge|timed out)",
                         c.error_log), c.error_log[-2000:]
    finally:
        relay.close()


def test_write_goes_on_when_redis_is_down(start_nginx, redis_server,
                                          store_origin):
    """No Redis at all: the write is served at once, the purge logged."""
    c = gateway(start_nginx, redis_server.address, store_origin, "300ms")
    wait_hit(c, "/items/warm")
    redis_server.stop()
    time.sleep(0.3)
    t0 = time.monotonic()
    for path in ("/items/down", "/users/x?user=u1"):
        w = requests.put(c.url(path), data="v", headers=HOST, timeout=10)
        assert w.status_code == 200
    assert time.monotonic() - t0 < 1.5
    assert store_origin.count("PUT") == 2
