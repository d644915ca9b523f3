"""The response cache never serves a response the origin would not have
given that request (issue 11 section 2): the key covers the scheme, the
matched server and the normalised host; Vary is honoured (variants, Vary: *
bypassed, a purge deletes every variant); RFC 9111 response directives
(no-store, no-cache, private, max-age, s-maxage, Expires, Age) decide
whether and how long an entry is stored; requests with Cookie or
Authorization bypass unless key= names them; the POST key covers the
media type."""

import concurrent.futures
import http.server
import json
import socket
import threading
import time

import requests

from redis_fixtures import (redis_factory, redis_server,  # noqa: F401
                            StoreOrigin, store_origin)


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers with what it saw: a personalised origin."""
    protocol_version = "HTTP/1.1"

    def _answer(self):
        o = self.server.owner
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path = self.path.split("?")[0]
        with o.lock:
            o.hits.append((self.command, self.path))
            o.n += 1
            seq = o.n
            extra = list(o.headers.get(path, ()))
            delay = o.delays.get(path, 0)
        if delay:
            time.sleep(delay)
        payload = json.dumps({
            "seq": seq,
            "path": self.path,
            "lang": ",".join(self.headers.get_all("Accept-Language") or [])
            or None,
            "cookie": self.headers.get("Cookie"),
            "auth": self.headers.get("Authorization"),
            "ct": self.headers.get("Content-Type"),
            "body": body.decode(errors="replace"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = _answer

    def do_PUT(self):
        o = self.server.owner
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        with o.lock:
            o.hits.append((self.command, self.path))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class EchoOrigin:
    def __init__(self):
        self.lock = threading.Lock()
        self.hits = []
        self.headers = {}
        self.delays = {}
        self.n = 0
        self.server = _Server(("127.0.0.1", 0), _EchoHandler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever,
                         kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def proxy(self):
        return (f"proxy_pass http://127.0.0.1:{self.port}; "
                f"proxy_http_version 1.1; proxy_set_header Connection \"\";")

    def count(self, method=None, path=None):
        with self.lock:
            return sum(1 for m, p in self.hits
                       if (method is None or m == method)
                       and (path is None or p == path))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


import pytest  # noqa: E402


@pytest.fixture
def echo():
    o = EchoOrigin()
    yield o
    o.close()


def conf(redis, origin, cache="ttl=60s", extra="", location="/"):
    http = f"infergate_redis r {redis.address} timeout=200ms;\n"
    server = f"""
    location {location} {{
        infergate_cache redis=r {cache};
        {extra}
        {origin.proxy}
    }}"""
    return http, server


def warm(ngx, path="/warm", headers=None):
    deadline = time.time() + 10
    while True:
        r = requests.get(ngx.url(path), headers=headers, timeout=5)
        st = r.headers.get("X-Cache-Status")
        if st in ("MISS", "HIT") or time.time() > deadline:
            assert st in ("MISS", "HIT"), r.headers
            return r
        time.sleep(0.05)


def get(ngx, path, **kw):
    return requests.get(ngx.url(path), timeout=10, **kw)


def settle(redis, pattern="igl:*"):
    """Fills land just after their response: wait for the leases to go."""
    deadline = time.time() + 2
    while redis.client().keys(pattern) and time.time() < deadline:
        time.sleep(0.02)


# -- bullet 1: the key covers the scheme, the server and the host ----------

def test_vhosts_do_not_share_entries(start_nginx, redis_server,
                                     store_origin):
    """infergate_cache at http level, two vhosts on two origins: Host
    b.example must never get vhost A's body."""
    other = StoreOrigin()
    try:
        store_origin.values["/v"] = "from-a"
        other.values["/v"] = "from-b"
        http = f"""
        infergate_redis r {redis_server.address} timeout=200ms;
        infergate_cache redis=r ttl=60s;
        server {{
            listen 127.0.0.1:@PORT@;
            server_name a.example;
            location / {{ {store_origin.proxy} }}
        }}
        server {{
            listen 127.0.0.1:@PORT@;
            server_name b.example;
            location / {{ {other.proxy} }}
        }}"""
        ngx = start_nginx(http=http, server="", workers=1)
        warm(ngx, headers={"Host": "a.example"})
        ra = get(ngx, "/v", headers={"Host": "a.example"})
        assert ra.json()["value"] == "from-a"
        assert ra.headers["X-Cache-Status"] == "MISS"
        settle(redis_server)
        rb = get(ngx, "/v", headers={"Host": "b.example"})
        assert rb.json()["value"] == "from-b", rb.headers
        assert rb.headers["X-Cache-Status"] == "MISS"
        settle(redis_server)
        # each vhost hits its own entry
        assert get(ngx, "/v", headers={"Host": "a.example"}) \
            .json()["value"] == "from-a"
        r = get(ngx, "/v", headers={"Host": "b.example"})
        assert r.json()["value"] == "from-b"
        assert r.headers["X-Cache-Status"] == "HIT"
        # the host is normalised: case, a trailing dot, the default port
        for host in ("A.Example", "a.example.", "a.example:80"):
            r = get(ngx, "/v", headers={"Host": host})
            assert r.headers["X-Cache-Status"] == "HIT", (host, r.headers)
            assert r.json()["value"] == "from-a", host
        # a non-default port is part of the key
        r = get(ngx, "/v", headers={"Host": "a.example:8080"})
        assert r.headers["X-Cache-Status"] == "MISS", r.headers
        assert store_origin.count("GET", "/v") == 2
        assert other.count("GET", "/v") == 1
    finally:
        other.close()


def test_same_host_two_servers_do_not_share(start_nginx, redis_server,
                                            store_origin):
    """Two server blocks with the same server_name on two ports: the
    matched server is in the key, so a Host sent to the other port does
    not read the first server's entry."""
    other = StoreOrigin()
    try:
        store_origin.values["/s"] = "server-1"
        other.values["/s"] = "server-2"
        import conftest
        port2 = conftest.free_port()
        http = f"""
        infergate_redis r {redis_server.address} timeout=200ms;
        infergate_cache redis=r ttl=60s;
        server {{
            listen 127.0.0.1:@PORT@;
            server_name same.example;
            location / {{ {store_origin.proxy} }}
        }}
        server {{
            listen 127.0.0.1:{port2};
            server_name same.example;
            location / {{ {other.proxy} }}
        }}"""
        ngx = start_nginx(http=http, server="", workers=1)
        h = {"Host": "same.example"}
        warm(ngx, headers=h)
        assert get(ngx, "/s", headers=h).json()["value"] == "server-1"
        settle(redis_server)
        assert get(ngx, "/s", headers=h).headers["X-Cache-Status"] == "HIT"
        url2 = f"http://127.0.0.1:{port2}/s"
        deadline = time.time() + 10
        while True:
            r = requests.get(url2, headers=h, timeout=5)
            if r.headers.get("X-Cache-Status") != "BYPASS" \
                    or time.time() > deadline:
                break
            time.sleep(0.05)
        assert r.json()["value"] == "server-2", r.headers
    finally:
        other.close()


# -- bullet 2: RFC 9111 response directives and Vary -----------------------

@pytest.mark.parametrize("cc", [
    "no-cache", "max-age=0", "s-maxage=0, max-age=60", "private",
    'private="X-Secret"', 'no-cache="Set-Cookie"', "no-store",
    "public, max-age=x", "max-age=-5",
])
def test_response_directives_not_stored(start_nginx, redis_server, echo,
                                        cc):
    echo.headers["/d"] = [("Cache-Control", cc)]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    for _ in range(2):
        r = get(ngx, "/d")
        assert r.headers["X-Cache-Status"] == "BYPASS", (cc, r.headers)
    assert echo.count("GET", "/d") == 2
    settle(redis_server)
    assert len(redis_server.client().keys("igc:*")) == 1     # /warm


def test_vary_star_not_stored(start_nginx, redis_server, echo):
    echo.headers["/star"] = [("Vary", "Accept-Language, *")]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    for _ in range(2):
        assert get(ngx, "/star").headers["X-Cache-Status"] == "BYPASS"
    assert echo.count("GET", "/star") == 2


def test_expired_expires_not_stored(start_nginx, redis_server, echo):
    echo.headers["/exp"] = [("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")]
    echo.headers["/exp0"] = [("Expires", "0")]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    for p in ("/exp", "/exp0"):
        for _ in range(2):
            assert get(ngx, p).headers["X-Cache-Status"] == "BYPASS", p
        assert echo.count("GET", p) == 2


@pytest.mark.parametrize("headers,most_ms", [
    ([("Cache-Control", "max-age=2")], 2000),
    ([("Cache-Control", 'max-age="3"')], 3000),
    ([("Cache-Control", "max-age=100, s-maxage=2")], 2000),
    ([("Cache-Control", "public"), ("Cache-Control", "max-age=4")], 4000),
    ([("Cache-Control", "max-age=10"), ("Age", "8")], 2000),
    ([("Cache-Control", "max-age=2, max-age=100")], 2000),
    ([("Cache-Control", "max-age=99999999999999999999")], 66000),
    ([("Cache-Control", "max-age=100000")], 66000),
])
def test_origin_ttl_shorter_than_ttl_wins(start_nginx, redis_server, echo,
                                          headers, most_ms):
    echo.headers["/t"] = headers
    http, server = conf(redis_server, echo, cache="ttl=60s")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    assert get(ngx, "/t").headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    r = get(ngx, "/t")
    assert r.headers["X-Cache-Status"] == "HIT", r.headers
    c = redis_server.client()
    ttls = [c.pttl(k) for k in c.keys("igc:*")]
    entry = min(ttls)
    assert 0 < entry <= most_ms, (headers, ttls)
    assert entry > most_ms - 1500 or most_ms > 60000, (headers, ttls)


def test_age_counts_the_origins_age(start_nginx, redis_server, echo):
    echo.headers["/age"] = [("Cache-Control", "max-age=100"), ("Age", "30")]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    get(ngx, "/age")
    settle(redis_server)
    r = get(ngx, "/age")
    assert r.headers["X-Cache-Status"] == "HIT"
    assert 30 <= int(r.headers["Age"]) <= 32, r.headers


def test_request_no_store_bypasses(start_nginx, redis_server, echo):
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    h = {"Cache-Control": "no-store"}
    for _ in range(2):
        assert get(ngx, "/ns", headers=h).headers["X-Cache-Status"] \
            == "BYPASS"
    settle(redis_server)
    assert get(ngx, "/ns").headers["X-Cache-Status"] == "MISS"
    assert echo.count("GET", "/ns") == 3


def raw_get(ngx, path, header_lines):
    s = socket.create_connection(("127.0.0.1", ngx.port), timeout=5)
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    req += "".join(f"{h}\r\n" for h in header_lines) + "\r\n"
    s.sendall(req.encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode().split("\r\n")[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return headers, json.loads(body)


def test_vary_keys_on_named_request_headers(start_nginx, redis_server,
                                            echo):
    echo.headers["/v"] = [("Vary", "Accept-Language")]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx)
    de = {"Accept-Language": "de"}
    fr = {"Accept-Language": "fr"}
    r = get(ngx, "/v", headers=de)
    assert r.headers["X-Cache-Status"] == "MISS" and r.json()["lang"] == "de"
    settle(redis_server)
    r = get(ngx, "/v", headers=de)
    assert r.headers["X-Cache-Status"] == "HIT" and r.json()["lang"] == "de"
    assert r.headers["Vary"].lower() == "accept-language"
    # the bug: a de response served to fr
    r = get(ngx, "/v", headers=fr)
    assert r.json()["lang"] == "fr", r.headers
    assert r.headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    r = get(ngx, "/v", headers=fr)
    assert r.headers["X-Cache-Status"] == "HIT" and r.json()["lang"] == "fr"
    # absent matches only absent
    r = get(ngx, "/v")
    assert r.json()["lang"] is None and r.headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    r = get(ngx, "/v")
    assert r.json()["lang"] is None and r.headers["X-Cache-Status"] == "HIT"
    assert get(ngx, "/v", headers=de).json()["lang"] == "de"
    assert echo.count("GET", "/v") == 3
    # field lines combined, whitespace normalised: "de, fr" is one variant
    h, body = raw_get(ngx, "/v", ["Accept-Language: de ,  fr"])
    assert h["x-cache-status"] == "MISS", h
    settle(redis_server)
    h, body2 = raw_get(ngx, "/v", ["Accept-Language: de",
                                   "Accept-Language:fr"])
    assert h["x-cache-status"] == "HIT", h
    assert body2 == body
    # Redis keys stay fixed-length digests
    keys = redis_server.client().keys("*")
    assert all(len(k) == 4 + 16 + 1 + 64 for k in keys), keys


def test_vary_stampede_one_origin_request(start_nginx, redis_server, echo):
    """Leases still collapse concurrent misses of one variant."""
    echo.headers["/vs"] = [("Vary", "Accept-Language")]
    http, server = conf(redis_server, echo, cache="ttl=60s lock_timeout=5s")
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx)
    # learn the Vary spec first
    get(ngx, "/vs", headers={"Accept-Language": "en"})
    settle(redis_server)
    echo.delays["/vs"] = 0.5
    barrier = threading.Barrier(20)

    def one(_):
        s = requests.Session()
        barrier.wait()
        return s.get(ngx.url("/vs"), headers={"Accept-Language": "it"},
                     timeout=20)

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        rs = list(ex.map(one, range(20)))
    assert all(r.json()["lang"] == "it" for r in rs)
    st = [r.headers["X-Cache-Status"] for r in rs]
    assert st.count("MISS") == 1, st
    assert echo.count("GET", "/vs") == 2


def test_purge_deletes_every_variant(start_nginx, redis_server, echo):
    echo.headers["/items/p"] = [("Vary", "Accept-Language")]
    http, server = conf(redis_server, echo, location="/items/",
                        extra="infergate_cache_purge;")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx, "/items/warm")
    langs = ("de", "fr", "it")
    for lang in langs:
        get(ngx, "/items/p", headers={"Accept-Language": lang})
    settle(redis_server)
    for lang in langs:
        r = get(ngx, "/items/p", headers={"Accept-Language": lang})
        assert r.headers["X-Cache-Status"] == "HIT", lang
    assert requests.put(ngx.url("/items/p"), data="x").status_code == 200
    for lang in langs:
        r = get(ngx, "/items/p", headers={"Accept-Language": lang})
        assert r.headers["X-Cache-Status"] == "MISS", (lang, r.headers)
        assert r.json()["lang"] == lang


def test_vary_slow_fill_never_stores_stale_variant(start_nginx,
                                                   redis_server, echo):
    """A variant's lease is deleted by the purge too: a variant fill that
    began before a write does not land."""
    echo.headers["/items/r"] = [("Vary", "Accept-Language")]
    http, server = conf(redis_server, echo, location="/items/",
                        extra="infergate_cache_purge;",
                        cache="ttl=60s lock_timeout=5s")
    ngx = start_nginx(http=http, server=server, workers=2)
    warm(ngx, "/items/warm")
    get(ngx, "/items/r", headers={"Accept-Language": "de"})
    settle(redis_server)
    echo.delays["/items/r"] = 1.0
    out = {}
    t = threading.Thread(target=lambda: out.update(
        slow=get(ngx, "/items/r", headers={"Accept-Language": "fr"})))
    t.start()
    time.sleep(0.3)
    assert requests.put(ngx.url("/items/r"), data="x").status_code == 200
    t.join()
    seq_slow = out["slow"].json()["seq"]
    echo.delays["/items/r"] = 0
    time.sleep(0.2)
    r = get(ngx, "/items/r", headers={"Accept-Language": "fr"})
    assert r.json()["seq"] != seq_slow, r.headers
    assert r.headers["X-Cache-Status"] == "MISS"


# -- bullet 3: Cookie and Authorization ------------------------------------

def test_cookie_and_authorization_bypass(start_nginx, redis_server, echo):
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    r = get(ngx, "/me", headers={"Cookie": "session=alice"})
    assert r.json()["cookie"] == "session=alice"
    assert r.headers["X-Cache-Status"] == "BYPASS"
    r = get(ngx, "/me", headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert r.headers["X-Cache-Status"] == "BYPASS"
    settle(redis_server)
    anon = get(ngx, "/me")
    assert anon.json()["cookie"] is None and anon.json()["auth"] is None
    assert anon.headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    # and a personalised request is not served the anonymous entry either
    r = get(ngx, "/me", headers={"Cookie": "session=bob"})
    assert r.json()["cookie"] == "session=bob"
    assert r.headers["X-Cache-Status"] == "BYPASS"
    assert echo.count("GET", "/me") == 4


def test_key_naming_cookie_caches_per_cookie(start_nginx, redis_server,
                                            echo):
    http, server = conf(redis_server, echo,
                        cache="ttl=60s key=$uri:$cookie_session")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    a = {"Cookie": "session=alice"}
    b = {"Cookie": "session=bob"}
    assert get(ngx, "/k", headers=a).headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    r = get(ngx, "/k", headers=a)
    assert r.headers["X-Cache-Status"] == "HIT"
    assert r.json()["cookie"] == "session=alice"
    r = get(ngx, "/k", headers=b)
    assert r.json()["cookie"] == "session=bob"
    # key= names the cookie, not Authorization
    r = get(ngx, "/k", headers={"Authorization": "Basic Ym9iOnB3"})
    assert r.headers["X-Cache-Status"] == "BYPASS"


def test_key_naming_authorization(start_nginx, redis_server, echo):
    http, server = conf(redis_server, echo,
                        cache="ttl=60s key=$uri:$http_authorization")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    h = {"Authorization": "Basic YWxpY2U6cHc="}
    assert get(ngx, "/ka", headers=h).headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    assert get(ngx, "/ka", headers=h).headers["X-Cache-Status"] == "HIT"


# -- bullet 4: the POST key covers the media type --------------------------

def test_post_key_includes_media_type(start_nginx, redis_server, echo):
    http, server = conf(redis_server, echo, cache="ttl=60s methods=POST")
    ngx = start_nginx(http=http, server=server, workers=1)
    body = b'{"a":1}'
    deadline = time.time() + 10
    while True:
        r = requests.post(ngx.url("/post-warm"), data=body,
                          headers={"Content-Type": "application/json"})
        if r.headers.get("X-Cache-Status") != "BYPASS" \
                or time.time() > deadline:
            break
        time.sleep(0.05)
    r1 = requests.post(ngx.url("/p"), data=body,
                       headers={"Content-Type": "application/json"})
    assert r1.headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    r = requests.post(ngx.url("/p"), data=body,
                      headers={"Content-Type": "text/plain"})
    assert r.json()["ct"] == "text/plain", r.headers
    assert r.headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    # the media type is case-insensitive
    r = requests.post(ngx.url("/p"), data=body,
                      headers={"Content-Type": "Application/JSON"})
    assert r.headers["X-Cache-Status"] == "HIT", r.headers
    assert r.json()["ct"] == "application/json"
    # no Content-Type at all is another entry
    r = requests.post(ngx.url("/p"), data=body,
                      headers={"Content-Type": None})
    assert r.headers["X-Cache-Status"] == "MISS", r.headers
    assert echo.count("POST", "/p") == 3


# -- hostile and edge cases -------------------------------------------------

@pytest.mark.parametrize("vary", [
    ",".join(f"X-H{i}" for i in range(17)),     # more than 16 names
    "Accept Language",                          # not a token
    "X-" + "a" * 300,                           # longer than a spec
])
def test_unusable_vary_not_stored(start_nginx, redis_server, echo, vary):
    echo.headers["/uv"] = [("Vary", vary)]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    for _ in range(2):
        assert get(ngx, "/uv").headers["X-Cache-Status"] == "BYPASS"
    assert echo.count("GET", "/uv") == 2


def test_vary_sixteen_names_and_duplicates(start_nginx, redis_server,
                                          echo):
    names = [f"X-H{i}" for i in range(16)]
    echo.headers["/v16"] = [("Vary", ", ".join(names)),
                            ("Vary", "x-h3, X-H0")]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    h = {"X-H3": "a"}
    assert get(ngx, "/v16", headers=h).headers["X-Cache-Status"] == "MISS"
    settle(redis_server)
    r = get(ngx, "/v16", headers=h)
    assert r.headers["X-Cache-Status"] == "HIT"
    assert r.headers["Vary"] == ",".join(sorted(n.lower() for n in names))
    assert get(ngx, "/v16", headers={"X-H3": "b"}) \
        .headers["X-Cache-Status"] == "MISS"


def test_expires_in_the_future(start_nginx, redis_server, echo):
    from email.utils import formatdate
    echo.headers["/ex"] = [("Expires", formatdate(time.time() + 5,
                                                  usegmt=True))]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    get(ngx, "/ex")
    settle(redis_server)
    assert get(ngx, "/ex").headers["X-Cache-Status"] == "HIT"
    c = redis_server.client()
    ttl = min(c.pttl(k) for k in c.keys("igc:*"))
    assert 2500 < ttl <= 6000, ttl


def test_request_no_cache_still_served(start_nginx, redis_server, echo):
    """Documented choice: the gateway cannot revalidate and a client must
    not be able to push every request to the origin."""
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    get(ngx, "/nc")
    settle(redis_server)
    for h in ({"Cache-Control": "no-cache"}, {"Pragma": "no-cache"},
              {"Cache-Control": "max-age=0"}):
        assert get(ngx, "/nc", headers=h).headers["X-Cache-Status"] == "HIT"


def test_corrupt_vary_spec_bypasses(start_nginx, redis_server, echo):
    echo.headers["/cs"] = [("Vary", "Accept-Language")]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    ngx.allowed_log.append(r"malformed entry")
    warm(ngx)
    # warm() may return at its MISS before that fill lands: the snapshot
    # must hold the warm-up's entry, or it counts as new below
    settle(redis_server)
    c = redis_server.client()
    before = set(c.keys("igc:*"))
    get(ngx, "/cs", headers={"Accept-Language": "de"})
    settle(redis_server)
    new = set(c.keys("igc:*")) - before
    assert len(new) == 2, new           # the spec and the variant
    spec = [k for k in new if c.get(k).startswith(b"V ")]
    variant = [k for k in new if not c.get(k).startswith(b"V ")]
    assert len(spec) == 1 and c.get(spec[0]) == b"V accept-language"
    # a spec where a variant belongs: bypass, no loop
    c.set(variant[0], b"V accept-language")
    r = get(ngx, "/cs", headers={"Accept-Language": "de"})
    assert r.status_code == 200 and r.headers["X-Cache-Status"] == "BYPASS"
    for bad in (b"V ", b"V bad name", b"V " + b"a" * 400, b"V \x00\xff"):
        c.set(spec[0], bad)
        r = get(ngx, "/cs", headers={"Accept-Language": "de"})
        assert r.status_code == 200, bad
        assert r.headers["X-Cache-Status"] == "BYPASS", bad
    # garbage where an entry belongs
    c.set(spec[0], b"garbage")
    r = get(ngx, "/cs", headers={"Accept-Language": "de"})
    assert r.status_code == 200 and r.headers["X-Cache-Status"] == "BYPASS"


def test_hostile_hosts_and_many_fields(start_nginx, redis_server, echo):
    echo.headers["/hv"] = [("Vary", "Accept-Language")]
    http, server = conf(redis_server, echo)
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx)
    for host in ("[::1]:8080", "[::1]", "x:99999999999999999999", "a:",
                 "A.B.C.", "xn--bcher-kva.example:443"):
        r = get(ngx, "/h", headers={"Host": host})
        assert r.status_code == 200, (host, r.status_code)
    h, body = raw_get(ngx, "/hv", ["Accept-Language: x"] * 60)
    assert h["x-cache-status"] == "MISS"
    settle(redis_server)
    h, body2 = raw_get(ngx, "/hv", ["Accept-Language: " + ",".join(
        ["x"] * 60)])
    assert h["x-cache-status"] == "HIT" and body2 == body
    r = get(ngx, "/hv", headers={"Accept-Language": "y" * 6000})
    assert r.status_code == 200


# -- Redis Cluster: every script declares all its keys in KEYS (issue 15) --

# the key arguments of the commands the scripts may run: a first-argument
# key, or every argument one; a command not listed fails the test
KEY_FIRST = {"GET", "SET", "SADD", "SREM", "SMEMBERS", "SISMEMBER", "PTTL",
             "PEXPIRE", "EXPIRE", "INCR", "INCRBY", "HGET", "HSET"}
KEY_ALL = {"DEL", "UNLINK", "EXISTS"}
KEY_NONE = {"TIME"}


class Monitor:
    """MONITOR on a raw socket: the gateway's EVAL/EVALSHA lines with the
    commands each script ran ("[0 lua]" lines right after it)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.buf = b""
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        self.buf = self.buf.split(b"\r\n", 1)[1]
        self.lines = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            self.buf += data
            while b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                self.lines.append(line.decode("latin-1"))

    def close(self):
        time.sleep(0.3)
        self.stop = True
        self.t.join(5)
        self.sock.close()

    @staticmethod
    def args(line):
        import re
        src = line.split("] ", 1)[0].split(" ", 2)[-1]
        rest = line.split("] ", 1)[1]
        return src, [re.sub(r"\\(.)", r"\1", a) for a in
                     re.findall(r'"((?:[^"\\]|\\.)*)"', rest)]

    def undeclared(self):
        """[(script, command, key)] for every key a script touched that
        its KEYS did not name; and how many scripts ran."""
        bad, declared, script, n = [], None, None, 0
        self.derived = []
        for line in self.lines:
            if not line.startswith("+"):
                continue
            src, a = self.args(line[1:])
            if src != "lua":
                cmd = a[0].upper() if a else ""
                if cmd in ("EVAL", "EVALSHA"):
                    nk = int(a[2])
                    declared, script = set(a[3:3 + nk]), a[1][:40]
                    n += 1
                else:
                    declared = None
                continue
            assert declared is not None, line
            cmd = a[0].upper()
            if cmd in KEY_NONE:
                continue
            assert cmd in KEY_FIRST | KEY_ALL, f"unknown command: {line}"
            keys = a[1:] if cmd in KEY_ALL else a[1:2]
            for k in keys:
                if k in declared:
                    continue
                # the purge's set members (variants, tagged entries) and
                # their lease and variant set, dropped by DEL: known only
                # inside Redis, they share a declared set's hash tag
                if cmd in ("DEL", "SMEMBERS") \
                        and k[:4] in ("igc:", "igl:", "igv:") \
                        and tag(k) in {tag(d) for d in declared}:
                    self.derived.append(k)
                    continue
                bad.append((script, cmd, k))
        return bad, n


def tag(key):
    """a key's hash tag (what Redis Cluster hashes), or the whole key"""
    i = key.find("{")
    j = key.find("}", i + 1)
    return key[i + 1:j] if i >= 0 and j > i + 1 else key


def test_scripts_declare_every_key(start_nginx, redis_server, echo):
    """Lookup, fill, release and purge (an entry with variants, a tag set
    whose members are a primary with variants and a plain entry): every
    key any script reads or writes is one of its KEYS, as Redis Cluster
    wants, except the members of the purge's declared sets (and their
    leases and variant sets), which only Redis knows and which share the
    set's hash tag; and the purge still drops every variant and tag
    member, in the one script, before the write's response."""
    echo.headers["/items/v"] = [("Vary", "Accept-Language")]
    echo.headers["/items/t"] = [("Vary", "Accept-Language")]
    http, server = conf(redis_server, echo, location="/items/",
                        cache="ttl=60s tag=user:$arg_user",
                        extra="infergate_cache_purge tag=user:$arg_user;")
    ngx = start_nginx(http=http, server=server, workers=1)
    warm(ngx, "/items/warm")
    settle(redis_server)
    mon = Monitor(redis_server.port)
    try:
        langs = ("de", "fr", "it")
        paths = ("/items/v", "/items/t?user=u1", "/items/p?user=u1",
                 "/items/q?user=u2")
        for p in paths:
            for lang in langs:
                get(ngx, p, headers={"Accept-Language": lang})
        settle(redis_server)
        for p in paths:
            for lang in langs:
                r = get(ngx, p, headers={"Accept-Language": lang})
                assert r.headers["X-Cache-Status"] == "HIT", (p, lang)
        # a write purges the entry and its variants
        assert requests.put(ngx.url("/items/v"), data="x").status_code \
            == 200
        for lang in langs:
            r = get(ngx, "/items/v", headers={"Accept-Language": lang})
            assert r.headers["X-Cache-Status"] == "MISS", lang
        settle(redis_server)
        # the tag: u1's members (one with variants) go, u2's stay
        assert requests.post(ngx.url("/items/w?user=u1"),
                             data="x").status_code == 200
        for p in paths[1:]:
            # /items/p and /items/q have no Vary: one entry each
            for lang in langs if p.startswith("/items/t") else langs[:1]:
                r = get(ngx, p, headers={"Accept-Language": lang})
                want = "HIT" if "u2" in p else "MISS"
                assert r.headers["X-Cache-Status"] == want, (p, lang)
        settle(redis_server)
    finally:
        mon.close()
    bad, n = mon.undeclared()
    assert n > 20, mon.lines[:5]
    assert not bad, bad[:5]
    assert mon.derived, "the purge dropped no set member"
