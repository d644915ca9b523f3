"""Hostile input: never a 500, never a crash, problem bodies always valid
UTF-8 JSON."""

import json
import random
import socket
import time

import pytest
import requests

from conftest import SCORE_SCHEMA, assert_problem, bearer, make_key


KEY, LINE = make_key("acme")

SERVER = """
client_max_body_size 4m;
location /score {
    infergate_schema score.json;
    @PROXY@
}
location /any {
    infergate_schema any.json;
    @PROXY@
}
location /spool {
    client_body_buffer_size 1k;
    infergate_schema any.json;
    @PROXY@
}
location /full {
    infergate_auth on;
    infergate_limit zone=z rate=100000r/s burst=100000;
    infergate_schema score.json;
    @PROXY@
}
"""

CT = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def ngx(module_nginx):
    n = module_nginx(http="infergate_keys keys.txt; "
                          "infergate_limit_zone z 1m;",
                     server=SERVER,
                     files={"keys.txt": LINE + "\n", "any.json": "{}",
                            "score.json": SCORE_SCHEMA.read_text()})
    n.initial_workers = set(n.worker_pids())
    yield n
    assert n.alive(), "nginx master died"
    assert set(n.worker_pids()) == n.initial_workers, \
        "a worker process was replaced (crashed?)"


def check(r, allowed=(400,)):
    assert r.status_code != 500, r.content[:500]
    assert r.status_code in allowed, (r.status_code, r.content[:500])
    if r.status_code >= 400:
        assert_problem(r, r.status_code)


def test_random_bytes_bodies(ngx):
    rnd = random.Random(1234)
    s = requests.Session()
    for i in range(120):
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 3000)))
        check(s.post(ngx.url("/score"), data=body, headers=CT))
        check(s.post(ngx.url("/full"), data=body,
                     headers={**CT, **bearer(KEY)}))


def test_mutated_json_bodies(ngx):
    rnd = random.Random(99)
    base = json.dumps({"user_id": "u12", "amount": 10.5, "currency": "EUR",
                       "login_time": "2024-03-25T10:00:00Z",
                       "tags": ["a", "b"], "login_hour": 3}).encode()
    alphabet = b'{}[]":,\\0123456789.eE+-tfnu \x00\xff\xc3\xa9'
    s = requests.Session()
    for i in range(200):
        b = bytearray(base)
        for _ in range(rnd.randrange(1, 4)):
            op = rnd.randrange(3)
            pos = rnd.randrange(len(b))
            c = alphabet[rnd.randrange(len(alphabet))]
            if op == 0:
                b[pos] = c
            elif op == 1:
                b.insert(pos, c)
            else:
                del b[pos]
        check(s.post(ngx.url("/score"), data=bytes(b), headers=CT),
              (200, 400))


@pytest.mark.parametrize("body", [
    b'{"user_id": "u1\xff", "amount": 1, "login_time": "x"}',
    b'{"login_time": "\xff\xfe\xfd"}',
    b'{"currency": "\xc0\xaf"}',
    b'{"\xff\xfe": 1}',
    b'{"currency": "\xed\xa0\x80"}',
    b'{"currency": "\\ud800"}',
    b'{"currency": "\\udc00\\ud800"}',
    b'{"currency": "\\u0000"}',
    b'{"currency": "\xf4\x90\x80\x80"}',
    b'{"tags": ["\xe2\x82"]}',
])
def test_invalid_utf8_and_odd_strings(ngx, body):
    check(requests.post(ngx.url("/score"), data=body, headers=CT))
    check(requests.post(ngx.url("/any"), data=body, headers=CT), (200, 400))


@pytest.mark.parametrize("member,value,allowed", [
    ("amount", b"1e400", (400,)),
    ("amount", b"-1e400", (400,)),
    ("amount", b"1e-400", (200, 400)),
    ("amount", b"123456789012345678901234567890", (400,)),
    ("amount", b"-123456789012345678901234567890", (400,)),
    ("amount", b"0." + b"0" * 5000 + b"1", (200, 400)),
    ("amount", b"9" * 5000, (400,)),
    ("account_age_days", b"99999999999999999999999", (200, 400)),
    ("account_age_days", b"-99999999999999999999999", (400,)),
    ("account_age_days", b"9223372036854775808", (200, 400)),
    ("login_hour", b"1e2", (400,)),
    ("login_hour", b"-0", (200,)),
    ("login_hour", b"2.0", (200, 400)),
    ("login_hour", b"1E+1", (200, 400)),
])
def test_huge_and_odd_numbers(ngx, member, value, allowed):
    fields = {"user_id": b'"u1"', "amount": b"1",
              "login_time": b'"2024-03-25T10:00:00Z"'}
    fields[member] = value
    body = b"{" + b", ".join(b'"%s": %s' % (k.encode(), v)
                             for k, v in fields.items()) + b"}"
    check(requests.post(ngx.url("/score"), data=body, headers=CT), allowed)


@pytest.mark.parametrize("open_,close", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deep_nesting_10000(ngx, open_, close):
    body = open_ * 10000 + b"1" + close * 10000
    check(requests.post(ngx.url("/any"), data=body, headers=CT))
    check(requests.post(ngx.url("/score"), data=body, headers=CT))
    # unclosed
    check(requests.post(ngx.url("/any"), data=open_ * 10000, headers=CT))


def test_empty_and_whitespace_bodies(ngx):
    for b in (b"", b" ", b"\n", b"\x00", b"\xef\xbb\xbf"):
        check(requests.post(ngx.url("/score"), data=b, headers=CT))


def test_many_members_and_long_strings(ngx):
    many = "{" + ",".join(f'"k{i}": {i}' for i in range(20000)) + "}"
    r = requests.post(ngx.url("/score"), data=many, headers=CT)
    check(r)
    assert len(r.json()["errors"]) <= 32
    long = json.dumps({"user_id": "u" + "1" * 1_000_000, "amount": 1,
                       "login_time": "2024-03-25T10:00:00Z"})
    check(requests.post(ngx.url("/score"), data=long, headers=CT))
    r = requests.post(ngx.url("/any"), data=json.dumps(["\u00e9" * 500000]),
                      headers=CT)
    check(r, (200,))


def _raw(port, data, read=True, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        s.settimeout(timeout)
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def test_client_aborts_mid_body(ngx):
    for path in ("/score", "/spool", "/full"):
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {KEY}\r\n"
                "Content-Type: application/json\r\n"
                "Content-Length: 500000\r\n\r\n").encode()
        _raw(ngx.port, head + b'{"user_id": "u1", "tags": [' + b'"a",' * 5000,
             read=False)
        # chunked, aborted mid-chunk
        head = head.replace(b"Content-Length: 500000",
                            b"Transfer-Encoding: chunked")
        _raw(ngx.port, head + b"4000\r\n" + b"[" * 3000, read=False)
    time.sleep(0.3)
    r = requests.post(ngx.url("/any"), data=b"{}", headers=CT)
    assert r.status_code == 200


@pytest.mark.parametrize("path,body,status", [
    ("/any", b'{"a": [1, 2, {"b": "c"}]}', 200),
    ("/score", b'{"user_id": 1, "amount": -1}', 400),
    ("/score", b'{"user_id": "u1", "amount": ', 400),
    ("/spool", b'[' + b'"xxxxxxxxxx",' * 300 + b'1]', 200),
    ("/spool", b'[' + b'"xxxxxxxxxx",' * 300 + b'1', 400),
], ids=["valid", "invalid", "malformed", "spooled-valid",
        "spooled-malformed"])
def test_slow_client_body_in_pieces(ngx, origin, path, body, status):
    """The body arrives after the headers, in pieces, on a keep-alive
    connection: the body is read asynchronously and the decision is taken
    in the body handler; then a second request on the same connection."""
    s = socket.create_connection(("127.0.0.1", ngx.port), timeout=5)
    f = s.makefile("rb")

    def response():
        status_line = f.readline()
        length = 0
        while True:
            ln = f.readline()
            if ln in (b"\r\n", b""):
                break
            if ln.lower().startswith(b"content-length:"):
                length = int(ln.split(b":")[1])
        return status_line, f.read(length)

    try:
        s.sendall(b"POST %s?slow HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body)))
        third = len(body) // 3
        for piece in (body[:third], body[third:2 * third], body[2 * third:]):
            time.sleep(0.05)
            s.sendall(piece)
        first = response()
        s.sendall(b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                  b"Content-Type: application/json\r\n\r\n{}")
        second = response()
    finally:
        f.close()
        s.close()
    assert first[0].startswith(b"HTTP/1.1 %d " % status), first
    assert second[0].startswith(b"HTTP/1.1 200 "), second
    if status == 200:
        assert origin.last(f"{path}?slow")["body"] == body


def test_bad_chunked_encoding(ngx):
    head = (b"POST /any HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    for tail in (b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n",
                 b"ffffffffffffffffff\r\n{}"):
        out = _raw(ngx.port, head + tail)
        assert out.startswith(b"HTTP/1.1 4"), out[:200]


def _responses(raw):
    """[(status, headers-lowercase-text)] of the responses in raw."""
    out = []
    for part in raw.split(b"HTTP/1.1 ")[1:]:
        head = part.split(b"\r\n\r\n", 1)[0].lower()
        out.append((int(part[:3]), head))
    return out


def test_pipelined_requests_with_bodies(ngx):
    """Refused requests must have their bodies read or discarded: the
    next request on the connection is parsed correctly."""
    score = json.dumps({"user_id": "u1", "amount": 1,
                        "login_time": "2024-03-25T10:00:00Z"}).encode()

    def req(path, body, extra=b""):
        return (b"POST %s HTTP/1.1\r\nHost: x\r\n%s"
                b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s"
                % (path, extra, len(body), body))

    auth = b"Authorization: Bearer " + KEY.encode() + b"\r\n"
    plan = [
        (req(b"/any", b'{"a": 1}'), 200),
        (req(b"/any", b'{"a": '), 400),
        (req(b"/full", score), 401),
        (req(b"/full", b'{"a": 1}', b"Content-Type: text/plain\r\n" + auth)
         .replace(b"Content-Type: application/json\r\n", b"", 1), 415),
        (req(b"/full", score, auth), 200),
        (b"GET /any HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
         b"Content-Type: application/json\r\n\r\n", 400),
    ]
    out = _raw(ngx.port, b"".join(p[0] for p in plan))
    got = _responses(out)
    want = [p[1] for p in plan]
    assert len(got) >= 2 and [g[0] for g in got] == want[:len(got)], \
        (got, out[:1500])
    if len(got) < len(want):
        assert b"connection: close" in got[-1][1], \
            f"connection dropped after {got}"


def test_still_serving(ngx):
    r = requests.post(ngx.url("/full"), headers={**CT, **bearer(KEY)},
                      data=json.dumps({"user_id": "u1", "amount": 1,
                                       "login_time": "2024-03-25T10:00:00Z"}))
    assert r.status_code == 200, r.text
