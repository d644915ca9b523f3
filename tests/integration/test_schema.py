"""Body validation: infergate_schema, infergate_schema_max_depth, media
type, malformed JSON, every-violation listing, RFC 3339 calendar truth,
large / chunked / spooled bodies forwarded intact, $infergate_json_*."""

import json
import random
import re

import pytest
import requests

from conftest import JSON_CT, SCORE_SCHEMA, assert_problem


INVALID = "https://infergate.dev/problems#invalid-body"
MALFORMED = "https://infergate.dev/problems#malformed-json"
UNSUPPORTED = "https://infergate.dev/problems#unsupported-media-type"

DATES = {
    "type": "object",
    "properties": {
        "dt": {"type": "string", "format": "date-time"},
        "d": {"type": "string", "format": "date"},
        "t": {"type": "string", "format": "time"},
        "u": {"type": "string", "format": "uuid"},
    },
}

BIG = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "v"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "integer", "minimum": 0},
                    "v": {"type": "string", "maxLength": 64},
                },
            },
        },
    },
}

SERVER = """
location /score {
    infergate_schema score.json;
    proxy_set_header X-User $infergate_json_user_id;
    proxy_set_header X-Amount $infergate_json_amount;
    @PROXY@
}
location /any {
    infergate_schema any.json;
    @PROXY@
}
location /anybig {
    client_max_body_size 8m;
    infergate_schema any.json;
    @PROXY@
}
location /depth3 {
    infergate_schema any.json;
    infergate_schema_max_depth 3;
    @PROXY@
}
location /dates {
    infergate_schema dates.json;
    @PROXY@
}
location /big {
    client_max_body_size 8m;
    infergate_schema big.json;
    @PROXY@
}
location /spool {
    client_body_buffer_size 1k;
    client_max_body_size 4m;
    infergate_schema big.json;
    @PROXY@
}
location /vars {
    infergate_schema any.json;
    proxy_set_header X-Name $infergate_json_name;
    proxy_set_header X-Flag $infergate_json_flag;
    proxy_set_header X-Nothing $infergate_json_nothing;
    proxy_set_header X-Obj $infergate_json_obj;
    proxy_set_header X-N $infergate_json_n;
    proxy_set_header X-Uid $infergate_json_user_id;
    @PROXY@
}
location /varcase {
    infergate_schema any.json;
    proxy_set_header X-Upper $infergate_json_USER_ID;
    proxy_set_header X-Mixed $infergate_json_User_Id;
    @PROXY@
}
location /open {
    @PROXY@
}
"""


@pytest.fixture(scope="module")
def ngx(module_nginx):
    return module_nginx(server=SERVER, files={
        "score.json": SCORE_SCHEMA.read_text(),
        "any.json": "{}",
        "dates.json": json.dumps(DATES),
        "big.json": json.dumps(BIG),
    })


def post(ngx, path, body, ct="application/json", **kw):
    headers = dict(kw.pop("headers", {}))
    if ct is not None:
        headers["Content-Type"] = ct
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return requests.post(ngx.url(path), data=body, headers=headers,
                         timeout=30, **kw)


def errors_of(body):
    errs = body.get("errors")
    assert isinstance(errs, list) and errs, f"no errors list: {body}"
    for e in errs:
        assert isinstance(e.get("pointer"), str), e
        assert isinstance(e.get("detail"), str) and e["detail"], e
    return errs


VALID_SCORE = {"user_id": "u123", "amount": 12.5,
               "login_time": "2024-03-25T10:00:00Z"}


# -- media type and empty bodies ---------------------------------------------

@pytest.mark.parametrize("ct", [
    "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
    "text/json", "application/xml", "multipart/form-data; boundary=x",
])
def test_unsupported_media_type_415(ngx, origin, ct):
    r = post(ngx, "/score?ct", VALID_SCORE, ct=ct)
    assert_problem(r, 415, UNSUPPORTED)


@pytest.mark.parametrize("ct", [
    "application/json", "Application/JSON", "application/json; charset=utf-8",
    "application/json;charset=UTF-8", "APPLICATION/JSON ; Charset=\"utf-8\"",
    None,   # no Content-Type at all is JSON (tritonclient.http sends none)
])
def test_json_media_type_variants_accepted(ngx, ct):
    r = post(ngx, "/score", VALID_SCORE, ct=ct)
    assert r.status_code == 200, (ct, r.status_code, r.text)


def test_empty_body_400(ngx):
    r = post(ngx, "/score", b"")
    assert_problem(r, 400)
    r = requests.get(ngx.url("/score"), headers=JSON_CT)
    assert_problem(r, 400)
    r = post(ngx, "/any", b"   \r\n\t ")
    assert_problem(r, 400)


# -- malformed JSON and depth ------------------------------------------------

@pytest.mark.parametrize("body", [
    b'{"a": 1,, "b": 2}',
    b'{"a": tru}',
    b'{"a": 1',
    b'[1] [2]',
    b'{"a": "unterminated',
    b"{'a': 1}",
    b'{"a": 01}',
    b'{"a": NaN}',
])
def test_malformed_json_400_with_byte_offset(ngx, body):
    r = post(ngx, "/any", body)
    problem = assert_problem(r, 400, MALFORMED)
    errs = errors_of(problem)
    m = re.search(r"byte (\d+)", errs[0]["detail"])
    assert m, f"errors[0].detail lacks 'byte N': {errs[0]}"
    assert 0 <= int(m.group(1)) <= len(body), (body, errs[0])


def test_malformed_offset_points_at_the_error(ngx):
    body = b'{"aaaaaaaaaaaaaaaaaaaa": 1, "b": @}'
    r = post(ngx, "/any", body)
    errs = errors_of(assert_problem(r, 400, MALFORMED))
    n = int(re.search(r"byte (\d+)", errs[0]["detail"]).group(1))
    at = body.index(b"@")
    assert at - 2 <= n <= at + 2, f"byte {n}, the bad byte is at {at}"


def test_whitespace_around_document_is_fine(ngx):
    assert post(ngx, "/any", b' \n{"a": 1}\n ').status_code == 200


@pytest.mark.parametrize("depth,status", [(63, 200), (64, 200), (65, 400),
                                          (200, 400)])
def test_default_depth_limit_64(ngx, depth, status):
    r = post(ngx, "/any", b"[" * depth + b"]" * depth)
    if status == 200:
        assert r.status_code == 200, (depth, r.status_code, r.text[:300])
    else:
        assert_problem(r, 400)
    obj = b'{"a":' * depth + b"1" + b"}" * depth
    r = post(ngx, "/any", obj)
    if status == 200:
        assert r.status_code == 200, (depth, r.status_code, r.text[:300])
    else:
        assert_problem(r, 400)


@pytest.mark.parametrize("body,status", [
    (b'{"a":{"b":{}}}', 200),
    (b'[[[1]]]', 200),
    (b'{"a":[{"c":1}]}', 200),
    (b'{"a":{"b":{"c":{}}}}', 400),
    (b'[[[[1]]]]', 400),
    (b'{"a":[{"c":[]}]}', 400),
    (b'"scalar"', 200),
])
def test_schema_max_depth_3(ngx, body, status):
    r = post(ngx, "/depth3", body)
    if status == 200:
        assert r.status_code == 200, (body, r.status_code, r.text[:300])
    else:
        assert_problem(r, 400)


# -- violations ------------------------------------------------------------

def test_every_violation_listed_with_pointers(ngx, origin):
    origin.clear()
    body = {
        "user_id": 42,
        "amount": -5,
        "login_time": "03/25/2024",
        "currency": "JPY",
        "login_hour": 24,
        "account_age_days": 1.5,
        "device_id": "not-a-uuid",
        "tags": ["x" * 40, 7, "fine"],
        "extra": True,
    }
    r = post(ngx, "/score", body)
    problem = assert_problem(r, 400, INVALID)
    errs = errors_of(problem)
    pointers = [e["pointer"] for e in errs]
    for p in ("/user_id", "/amount", "/login_time", "/currency",
              "/login_hour", "/account_age_days", "/device_id", "/tags/0",
              "/tags/1"):
        assert p in pointers, f"{p} not reported; got {pointers}"
    assert "/tags/2" not in pointers
    assert any(e["pointer"] == "/extra" or
               ("extra" in e["detail"] and e["pointer"] in ("", "/extra"))
               for e in errs), f"additional property not reported: {errs}"
    lt = [e for e in errs if e["pointer"] == "/login_time"]
    assert any("RFC 3339" in e["detail"] for e in lt), lt
    assert len(errs) <= 32
    assert not origin.find("/score"), "invalid body reached the origin"


def test_required_members_reported(ngx):
    r = post(ngx, "/score", {})
    errs = errors_of(assert_problem(r, 400, INVALID))
    text = json.dumps(errs)
    for name in ("user_id", "amount", "login_time"):
        assert name in text, f"missing {name} not reported: {errs}"
    assert len(errs) >= 3, errs


def test_errors_capped_at_32(ngx):
    body = dict(VALID_SCORE, tags=list(range(40)))
    r = post(ngx, "/score", body)
    errs = errors_of(assert_problem(r, 400, INVALID))
    assert len(errs) == 32, f"{len(errs)} errors listed"


def test_wrong_root_type(ngx):
    for body in (b"[]", b"42", b'"x"', b"null", b"true"):
        r = post(ngx, "/score", body)
        errs = errors_of(assert_problem(r, 400, INVALID))
        assert errs[0]["pointer"] == "", errs


@pytest.mark.parametrize("field,value,ok", [
    ("dt", "2024-02-29T10:00:00Z", True),
    ("dt", "2023-02-29T10:00:00Z", False),
    ("dt", "2024-04-31T10:00:00Z", False),
    ("dt", "1998-12-31T23:59:60Z", True),
    ("dt", "2024-03-25T10:00:00+01:00", True),
    ("dt", "2024-03-25T10:00:00.123456Z", True),
    ("dt", "2024-03-25T24:00:00Z", False),
    ("dt", "2024-03-25 10:00:00Z", False),
    ("dt", "2024-03-25T10:00:00", False),
    ("dt", "03/25/2024", False),
    ("dt", "2000-02-29T00:00:00Z", True),
    ("dt", "1900-02-29T00:00:00Z", False),
    ("d", "2024-02-29", True),
    ("d", "2023-02-29", False),
    ("d", "2024-04-31", False),
    ("d", "2024-13-01", False),
    ("d", "2024-1-01", False),
    ("t", "23:59:60Z", True),
    ("t", "12:00:00+01:00", True),
    ("t", "12:00:00", False),
    ("t", "12:60:00Z", False),
    ("u", "2eb8aa08-aa98-11ea-b4aa-73b441d16380", True),
    ("u", "2eb8aa08-aa98-11ea-b4aa-73b441d1638", False),
])
def test_formats_calendar_truth(ngx, field, value, ok):
    r = post(ngx, "/dates", {field: value})
    if ok:
        assert r.status_code == 200, (value, r.status_code, r.text)
    else:
        errs = errors_of(assert_problem(r, 400, INVALID))
        assert errs[0]["pointer"] == f"/{field}", errs


def test_login_time_leap_day_through_score(ngx):
    for v, st in (("2024-02-29T08:00:00Z", 200), ("2023-02-29T08:00:00Z", 400),
                  ("2024-04-31T08:00:00Z", 400)):
        r = post(ngx, "/score", dict(VALID_SCORE, login_time=v))
        assert r.status_code == st, (v, r.status_code, r.text)


# -- pass-through and variables ---------------------------------------------

def test_valid_body_forwarded_byte_for_byte(ngx, origin):
    raw = (b'{ "user_id" : "u123",\n\t"amount": 12.50 ,"login_time":'
           b'"2024-03-25T10:00:00+01:00", "currency":"EUR",\r\n "tags": '
           b'["caf\\u00e9", "\xc3\xa9t\xc3\xa9", "\\ud83d\\ude00"]   }  ')
    r = post(ngx, "/score?raw", raw)
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True}
    up = origin.last("/score?raw")
    assert up["body"] == raw
    assert up["headers"].get("X-User") == "u123"
    assert up["headers"].get("X-Amount") == "12.50"
    assert up["headers"].get("Content-Length") == str(len(raw))


def test_json_member_variables(ngx, origin):
    raw = (b'{"name": "a\\"b\\u00e9", "flag": true, "nothing": null, '
           b'"obj": {"x": 1, "name": "inner"}, "n": -1.5e3}')
    r = post(ngx, "/vars?1", raw)
    assert r.status_code == 200, r.text
    h = origin.last("/vars?1")["headers"]
    # http.server decodes header bytes as latin-1
    assert h.get("X-Name", "").encode("latin-1") == 'a"b\u00e9'.encode(), \
        h.get("X-Name")
    assert h.get("X-Flag") == "true"
    assert h.get("X-Nothing") == "null"
    assert h.get("X-N") == "-1.5e3"
    assert h.get("X-Obj") is None, "non-scalar member became a variable"

    # only top-level members: the nested "name" is not $infergate_json_name
    r = post(ngx, "/vars?2", b'{"obj": {"name": "inner"}}')
    assert r.status_code == 200, r.text
    assert origin.last("/vars?2")["headers"].get("X-Name") is None



# -- member names: exact, and never repeated (issue 11) ----------------------

def test_json_variable_matches_member_name_exactly(ngx, origin):
    # the body: a Bloom guard keyed on $infergate_json_user_id
    # must see what the origin acts on, never the "USER_ID" member
    r = post(ngx, "/vars?case1", b'{"user_id":"u777","USER_ID":"u1"}')
    assert r.status_code == 200, r.text
    h = origin.last("/vars?case1")["headers"]
    assert h.get("X-Uid") == "u777", h.get("X-Uid")

    r = post(ngx, "/vars?case2", b'{"USER_ID":"u1","User_Id":"u2"}')
    assert r.status_code == 200, r.text
    h = origin.last("/vars?case2")["headers"]
    assert h.get("X-Uid") is None, h.get("X-Uid")

    r = post(ngx, "/vars?case3", b'{"NAME":"upper","user_id":"u5"}')
    assert r.status_code == 200, r.text
    h = origin.last("/vars?case3")["headers"]
    assert h.get("X-Name") is None, h.get("X-Name")
    assert h.get("X-Uid") == "u5"


def test_json_variable_case_in_core_directives(ngx, origin):
    # nginx variable names are case-insensitive and reach the module
    # lower-cased: in nginx's own directives (proxy_set_header here)
    # $infergate_json_USER_ID reads the member "user_id"
    r = post(ngx, "/varcase?1", b'{"USER_ID":"x","User_Id":"y"}')
    assert r.status_code == 200, r.text
    h = origin.last("/varcase?1")["headers"]
    assert h.get("X-Upper") is None, h.get("X-Upper")
    assert h.get("X-Mixed") is None, h.get("X-Mixed")

    r = post(ngx, "/varcase?2", b'{"USER_ID":"x","user_id":"u9"}')
    assert r.status_code == 200, r.text
    h = origin.last("/varcase?2")["headers"]
    assert h.get("X-Upper") == "u9"
    assert h.get("X-Mixed") == "u9"


@pytest.mark.parametrize("directive,line", [
    ("infergate_limit",
     "infergate_limit zone=z rate=1r/s key=$infergate_json_userId;"),
    ("infergate_limit",
     "infergate_limit zone=z rate=1r/s key=t:${infergate_json_User_id};"),
    ("infergate_bloom",
     "infergate_bloom zone=b key=$infergate_json_userId methods=POST;"),
    ("infergate_cache",
     "infergate_cache redis=r ttl=5s methods=POST "
     "key=$uri:$infergate_json_USER_ID;"),
    ("infergate_cache",
     "infergate_cache redis=r ttl=5s tag=u:$infergate_json_UserId;"),
])
def test_json_variable_written_in_upper_case(nginx_t, directive, line):
    # $infergate_json_userId used to read "userid" silently (nginx
    # lower-cases variable names): nginx -t refuses it, naming the
    # directive
    http = ("infergate_limit_zone z 1m; infergate_redis r 127.0.0.1:6379;"
            "infergate_bloom_zone b 1m capacity=1000 error=0.01;")
    rc, out = nginx_t(http=http, server=f"location / {{ {line} }}")
    assert rc != 0, out
    assert directive in out and "upper-case" in out, out
    # the lower-case spelling is accepted
    low = re.sub(r"infergate_json_(\w+)",
                 lambda m: "infergate_json_" + m.group(1).lower(), line)
    rc, out = nginx_t(http=http, server=f"location / {{ {low} }}")
    assert rc == 0, out


DUP = 'duplicate member name "{}"'


@pytest.mark.parametrize("path,body,errs", [
    ("/any", b'{"a":1,"a":2}', [("/a", DUP.format("a"))]),
    ("/any", b'{"user_id":"u1","\\u0075ser_id":"u777"}',
     [("/user_id", DUP.format("user_id"))]),
    ("/any", b'{"x":[{"k":1},{"k":1,"\\u006b":2}]}',
     [("/x/1/k", DUP.format("k"))]),
    ("/any", b'{"a/b":{"~":1,"~":2},"a/b":3}',
     [("/a~1b/~0", DUP.format("~")), ("/a~1b", DUP.format("a/b"))]),
    ("/vars", b'{"user_id":"u777","user_id":"u1"}',
     [("/user_id", DUP.format("user_id"))]),
    ("/score", b'{"user_id":"u1","amount":1,"login_time":'
     b'"2024-03-25T10:00:00Z","amount":-1}',
     [("/amount", DUP.format("amount")),
      ("/amount", "must be >= 0, got -1")]),
])
def test_duplicate_member_names_400(ngx, origin, path, body, errs):
    origin.clear()
    r = post(ngx, path + "?dup", body)
    problem = assert_problem(r, 400, INVALID)
    got = [(e["pointer"], e["detail"]) for e in errors_of(problem)]
    assert got == errs, got
    assert not origin.find(path + "?dup"), "duplicate reached the origin"


def test_many_members_one_repeated(ngx, origin):
    # 60,000 names in one object (the hash-table path), 700 kB
    body = "{" + ",".join(f'"m{i}":{i}' for i in range(60000)) + "}"
    r = post(ngx, "/anybig?many", body.encode())
    assert r.status_code == 200, r.text[:300]
    assert origin.last("/anybig?many")["body"] == body.encode()

    body2 = body[:-1] + ',"m59999":0,"m0":1}'
    r = post(ngx, "/anybig?many-dup", body2.encode())
    errs = errors_of(assert_problem(r, 400, INVALID))
    assert [(e["pointer"], e["detail"]) for e in errs] == \
        [("/m59999", DUP.format("m59999")), ("/m0", DUP.format("m0"))], errs
    assert not origin.find("/anybig?many-dup")


def test_no_schema_no_validation(ngx, origin):
    r = post(ngx, "/open?x", b"{not json", ct="text/plain")
    assert r.status_code == 200
    assert origin.last("/open?x")["body"] == b"{not json"


def big_body(n, bad_at=None, seed=1):
    rnd = random.Random(seed)
    items = []
    for i in range(n):
        v = "".join(rnd.choice("abcdefghij \u00e9\"\\/") for _ in range(40))
        items.append({"id": i, "v": v if i != bad_at else 12345})
    return json.dumps({"items": items}, indent=1).encode()


def chunks(data, size):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_large_chunked_body_validated_and_forwarded(ngx, origin):
    raw = big_body(12000)
    assert len(raw) > 600_000
    r = requests.post(ngx.url("/big?chunked"), data=chunks(raw, 7001),
                      headers=JSON_CT, timeout=60)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    up = origin.last("/big?chunked")
    assert len(up["body"]) == len(raw)
    assert up["body"] == raw, "chunked body altered on its way upstream"


def test_large_chunked_invalid_body_pointer(ngx, origin):
    raw = big_body(12000, bad_at=9876)
    r = requests.post(ngx.url("/big?chunked-bad"), data=chunks(raw, 4093),
                      headers=JSON_CT, timeout=60)
    errs = errors_of(assert_problem(r, 400, INVALID))
    assert [e["pointer"] for e in errs] == ["/items/9876/v"], errs
    assert not origin.find("/big?chunked-bad")


def test_spooled_body_validated_and_forwarded(ngx, origin):
    raw = big_body(3000, seed=2)
    assert 150_000 < len(raw) < 400_000
    r = post(ngx, "/spool?cl", raw)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert origin.last("/spool?cl")["body"] == raw
    # chunked into the small buffer as well
    r = requests.post(ngx.url("/spool?te"), data=chunks(raw, 999),
                      headers=JSON_CT, timeout=60)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert origin.last("/spool?te")["body"] == raw
    assert "buffered to a temporary file" in ngx.error_log, \
        "the body was not spooled: the test did not test spooling"


def test_spooled_invalid_body(ngx, origin):
    raw = big_body(3000, bad_at=2999, seed=3)
    r = post(ngx, "/spool?bad", raw)
    errs = errors_of(assert_problem(r, 400, INVALID))
    assert [e["pointer"] for e in errs] == ["/items/2999/v"], errs
    # malformed at the very end of a spooled body
    r = post(ngx, "/spool?bad2", raw[:-1] + b"]")
    assert_problem(r, 400, MALFORMED)
