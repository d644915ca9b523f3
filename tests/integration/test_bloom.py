"""Bloom-filter guard: infergate_bloom_zone and infergate_bloom.

A surely-absent id gets 404 problem+json and never reaches the origin;
known ids pass; ids created through the gateway (add_on) are seen by all
workers at once; the filter is saved on reload, on quit and every
save_every, and loaded at start; nginx -t refuses a zone too small, a
corrupt or mismatched file and an unknown zone."""

import json
import os
import subprocess
import time

import pytest
import requests

from conftest import BUILD, JSON_CT, SCORE_SCHEMA, assert_problem, free_port


BLOOM_TOOL = BUILD / "infergate-bloom"
UNKNOWN = "https://infergate.dev/problems#unknown-id"

pytestmark = pytest.mark.skipif(not BLOOM_TOOL.exists(),
                                reason="build/infergate-bloom not built")


def build_filter(tmp_path, ids, capacity=1000, error=0.001, name="ids"):
    src = tmp_path / f"{name}.txt"
    src.write_text("".join(i + "\n" for i in ids))
    out = tmp_path / f"{name}.bloom"
    subprocess.run([str(BLOOM_TOOL), "build", "--capacity", str(capacity),
                    "--error", str(error), str(src), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    return out.read_bytes()


def tool_test(path, *ids):
    """{id: True (maybe present) / False (surely absent)} per the tool."""
    r = subprocess.run([str(BLOOM_TOOL), "test", str(path), *ids],
                       capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    out = {}
    for line in r.stdout.splitlines():
        k, v = line.split("\t")
        out[k] = (v == "maybe")
    return out


ZONE = ("infergate_bloom_zone users 1m capacity=1000 error=0.001 "
        "file=@PREFIX@/users.bloom{extra};\n"
        "log_format bloom '$pid $status $request_uri $infergate_bloom';\n")

SERVER = """
location ~ ^/users/(\\w+)$ {
    infergate_bloom zone=users key=$1;
    access_log @PREFIX@/bloom.log bloom;
    @PROXY@
}
location /opt {
    infergate_bloom zone=users key=$arg_id;
    access_log @PREFIX@/bloom.log bloom;
    @PROXY@
}
location /score {
    infergate_schema score.json;
    infergate_bloom zone=users key=$infergate_json_user_id methods=POST;
    access_log @PREFIX@/bloom.log bloom;
    @PROXY@
}
"""

KNOWN = [f"u{i}" for i in range(1, 501)]


@pytest.fixture
def known_filter(tmp_path):
    return build_filter(tmp_path, KNOWN)


def files(bloom):
    out = {"score.json": SCORE_SCHEMA.read_text()}
    if bloom is not None:
        out["users.bloom"] = bloom
    return out


def bloom_log(ngx):
    try:
        return (ngx.prefix / "bloom.log").read_text().splitlines()
    except FileNotFoundError:
        return []


def test_unknown_id_404_no_origin(start_nginx, origin, known_filter,
                                  tmp_path):
    ngx = start_nginx(http=ZONE.format(extra=""), server=SERVER,
                      files=files(known_filter))
    s = requests.Session()

    for uid in ("u1", "u250", "u500"):
        r = s.get(ngx.url(f"/users/{uid}"))
        assert r.status_code == 200, r.text
        assert origin.find(f"/users/{uid}")

    # 300 ids never added: the tool says which are false positives
    absent = [f"x{i}" for i in range(300)]
    verdict = tool_test(ngx.prefix / "users.bloom", *absent)
    fps = [a for a in absent if verdict[a]]
    assert len(fps) < 10                       # error=0.001

    origin.clear()
    refused = 0
    for uid in absent:
        r = s.get(ngx.url(f"/users/{uid}"))
        if verdict[uid]:
            assert r.status_code == 200
        else:
            body = assert_problem(r, 404, UNKNOWN)
            assert body["status"] == 404
            assert r.headers["Cache-Control"] == "no-store"
            refused += 1

    assert refused == len(absent) - len(fps)
    # not one refused id reached the origin
    assert sorted(q["path"] for q in origin.requests) == \
        sorted(f"/users/{u}" for u in fps)

    time.sleep(0.2)
    log = bloom_log(ngx)
    assert any(ln.endswith("/users/u1 hit") for ln in log)
    assert any(ln.endswith("/users/x0 miss") or "/users/x0 hit" in ln
               for ln in log)
    miss = [ln for ln in log if ln.endswith(" miss")]
    assert len(miss) == refused
    assert all(" 404 " in ln for ln in miss)


def test_json_key_with_schema(start_nginx, origin, known_filter):
    ngx = start_nginx(http=ZONE.format(extra=""), server=SERVER,
                      files=files(known_filter))
    body = {"amount": 10, "login_time": "2024-05-01T10:00:00Z"}

    r = requests.post(ngx.url("/score"), headers=JSON_CT,
                      data=json.dumps({**body, "user_id": "u42"}))
    assert r.status_code == 200, r.text
    assert len(origin.find("/score")) == 1

    absent = [f"u{i}" for i in range(900000, 900040)]
    verdict = tool_test(ngx.prefix / "users.bloom", *absent)
    uid = next(a for a in absent if not verdict[a])

    origin.clear()
    r = requests.post(ngx.url("/score"), headers=JSON_CT,
                      data=json.dumps({**body, "user_id": uid}))
    assert_problem(r, 404, UNKNOWN)
    assert origin.find("/score") == []

    # the schema runs first: a missing user_id is the schema's 400
    r = requests.post(ngx.url("/score"), headers=JSON_CT,
                      data=json.dumps(body))
    assert_problem(r, 400)
    assert origin.find("/score") == []


def test_empty_key_passes(start_nginx, origin, known_filter):
    ngx = start_nginx(http=ZONE.format(extra=""), server=SERVER,
                      files=files(known_filter))
    r = requests.get(ngx.url("/opt"))
    assert r.status_code == 200
    assert len(origin.find("/opt")) == 1
    r = requests.get(ngx.url("/opt?id=u7"))
    assert r.status_code == 200
    time.sleep(0.2)
    # two workers: each writes its line after its response went out, so
    # the lines may come in either order
    log = sorted(bloom_log(ngx)[:2], key=lambda ln: "?" in ln)
    assert log[0].endswith(" 200 /opt -")          # no check: empty
    assert log[1].endswith(" 200 /opt?id=u7 hit")
    r = requests.get(ngx.url("/opt?id=nobody-has-this"))
    assert_problem(r, 404, UNKNOWN)
    assert origin.find("/opt?id=nobody-has-this") == []


def create_conf(extra="", workers=2):
    p2 = free_port()
    http = ZONE.format(extra=extra) + f"""
    server {{
        listen 127.0.0.1:{p2};
        location / {{ return 201 '{{"created":true}}'; }}
        location /conflict/ {{ return 409 '{{"exists":true}}'; }}
    }}
    """
    server = SERVER + f"""
    location ~ ^/create/(\\w+)$ {{
        infergate_bloom zone=users key=$1 check=off;
        proxy_pass http://127.0.0.1:{p2};
    }}
    location ~ ^/conflict/(\\w+)$ {{
        infergate_bloom zone=users key=$1 check=off;
        proxy_pass http://127.0.0.1:{p2};
    }}
    location ~ ^/weird/(\\w+)$ {{
        infergate_bloom zone=users key=$1 add_on=404;
        @PROXY@
    }}
    location ~ ^/either/(\\w+)$ {{
        infergate_bloom zone=users key=$1 check=off add_on=200 201;
        return 200 "ok\\n";
    }}
    """
    return http, server


def test_add_on_visible_to_all_workers(start_nginx, origin, known_filter):
    http, server = create_conf()
    ngx = start_nginx(http=http, server=server, workers=2,
                      listen="reuseport",
                      files=files(known_filter))

    r = requests.get(ngx.url("/users/new1"))
    assert_problem(r, 404, UNKNOWN)

    # a status outside add_on adds nothing
    r = requests.put(ngx.url("/conflict/new1"))
    assert r.status_code == 409
    r = requests.get(ngx.url("/users/new1"))
    assert_problem(r, 404, UNKNOWN)

    r = requests.put(ngx.url("/create/new1"))
    assert r.status_code == 201

    # fresh connections, spread over both workers by reuseport
    pids = set()
    origin.clear()
    for _ in range(60):
        r = requests.get(ngx.url("/users/new1"),
                         headers={"Connection": "close"})
        assert r.status_code == 200, r.text
    time.sleep(0.2)
    for ln in bloom_log(ngx):
        pid, status, uri, verdict = ln.split(" ")
        if uri == "/users/new1" and status == "200":
            assert verdict == "hit"
            pids.add(pid)
    assert len(pids) == 2, f"served by {pids}"
    assert len(origin.find("/users/new1")) == 60

    # the guard's own 404 never adds the id it refused
    assert_problem(requests.get(ngx.url("/weird/new3")), 404, UNKNOWN)
    assert_problem(requests.get(ngx.url("/weird/new3")), 404, UNKNOWN)

    # add_on takes a list
    r = requests.get(ngx.url("/either/new2"))
    assert r.status_code == 200
    assert requests.get(ngx.url("/users/new2")).status_code == 200


def test_write_creates_id_through_guarded_location(start_nginx, origin,
                                                  known_filter):
    """docs/bloom.md's "GET/PUT on one user": the check applies to
    methods= (GET HEAD by default) only, so a PUT or POST may create the
    id the guard would refuse; its add_on answer adds it for any method."""
    p2 = free_port()
    http = ZONE.format(extra="") + f"""
    server {{
        listen 127.0.0.1:{p2};
        location / {{ return 201 '{{"created":true}}'; }}
    }}
    """
    server = SERVER + f"""
    location ~ ^/u2/(\\w+)$ {{
        infergate_bloom zone=users key=$1;
        proxy_pass http://127.0.0.1:{p2};
    }}
    location ~ ^/u3/(\\w+)$ {{
        infergate_bloom zone=users key=$1 methods=GET HEAD DELETE;
        @PROXY@
    }}
    """
    ngx = start_nginx(http=http, server=server, files=files(known_filter))
    s = requests.Session()

    assert_problem(s.get(ngx.url("/u2/new_1")), 404, UNKNOWN)
    r = s.head(ngx.url("/u2/new_1"))
    assert r.status_code == 404
    for method in ("PUT", "POST"):
        r = s.request(method, ngx.url(f"/u2/new_{method}"))
        assert r.status_code == 201, (method, r.status_code, r.text)
        # created through the same location: now known to every method
        assert s.get(ngx.url(f"/u2/new_{method}")).status_code == 201
        assert s.get(ngx.url(f"/users/new_{method}")).status_code == 200

    # methods= lists what is checked: DELETE refused, PATCH passes
    origin.clear()
    assert_problem(s.delete(ngx.url("/u3/ghost")), 404, UNKNOWN)
    assert s.patch(ngx.url("/u3/ghost")).status_code == 200
    assert [q["method"] for q in origin.find("/u3/ghost")] == ["PATCH"]


def test_saved_on_reload_and_quit(start_nginx, known_filter, tmp_path):
    http, server = create_conf(extra=" save_every=3600s")
    ngx = start_nginx(http=http, server=server,
                      files=files(known_filter))
    path = ngx.prefix / "users.bloom"

    assert requests.put(ngx.url("/create/r1")).status_code == 201
    assert tool_test(path, "r1") == {"r1": False}      # not saved yet

    ngx.reload()
    assert tool_test(path, "r1") == {"r1": True}       # saved on reload
    # the zone survived the reload: the id is known without reading back
    assert requests.get(ngx.url("/users/r1")).status_code == 200

    assert requests.put(ngx.url("/create/r2")).status_code == 201
    ngx.stop()
    assert tool_test(path, "r1", "r2", "u3") == \
        {"r1": True, "r2": True, "u3": True}            # saved on quit
    assert not list(ngx.prefix.glob("users.bloom.tmp.*"))
    assert "saved" in ngx.error_log and "loaded 500 ids" in ngx.error_log

    # a new nginx loads the saved file
    ngx2 = start_nginx(http=http, server=server,
                       files=files(path.read_bytes()))
    for uid in ("r1", "r2", "u3"):
        assert requests.get(ngx2.url(f"/users/{uid}")).status_code == 200
    assert_problem(requests.get(ngx2.url("/users/r3")), 404, UNKNOWN)


def test_periodic_save(start_nginx, tmp_path):
    http, server = create_conf(extra=" save_every=1s")
    # no file yet: the zone starts empty and creates it
    ngx = start_nginx(http=http, server=server, files=files(None))
    path = ngx.prefix / "users.bloom"
    assert not path.exists()
    assert_problem(requests.get(ngx.url("/users/p1")), 404, UNKNOWN)
    assert requests.put(ngx.url("/create/p1")).status_code == 201

    deadline = time.time() + 8
    while time.time() < deadline:
        if path.exists() and tool_test(path, "p1") == {"p1": True}:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the filter was not saved within 8 s")

    # saved once, by one worker: an unchanged filter is not rewritten
    st = path.stat()
    time.sleep(2.5)
    assert path.stat().st_mtime_ns == st.st_mtime_ns
    assert ngx.error_log.count("saved 1 ids") == 1


# nginx -t

def test_nginx_t_zone_too_small(nginx_t):
    rc, out = nginx_t(http="infergate_bloom_zone users 64k "
                           "capacity=1000000 error=0.01;")
    assert rc != 0
    assert "infergate_bloom_zone" in out and "too small" in out
    assert "needs at least" in out
    need = int(out.split("needs at least ")[1].split("k")[0])
    # the size printed is enough
    rc, out = nginx_t(http=f"infergate_bloom_zone users {need}k "
                           "capacity=1000000 error=0.01;")
    assert rc == 0, out
    rc, out = nginx_t(http=f"infergate_bloom_zone users {need - 8}k "
                           "capacity=1000000 error=0.01;")
    assert rc != 0 and "too small" in out


def test_nginx_t_corrupt_file(nginx_t, known_filter, tmp_path):
    bad = bytearray(known_filter)
    bad[-3] ^= 0x40
    rc, out = nginx_t(http="infergate_bloom_zone users 1m capacity=1000 "
                           "error=0.001 file=@PREFIX@/users.bloom;",
                      files={"users.bloom": bytes(bad)})
    assert rc != 0
    assert "users.bloom" in out and "checksum mismatch" in out

    rc, out = nginx_t(http="infergate_bloom_zone users 1m capacity=1000 "
                           "error=0.001 file=@PREFIX@/users.bloom;",
                      files={"users.bloom": known_filter[:100]})
    assert rc != 0 and "truncated" in out

    rc, out = nginx_t(http="infergate_bloom_zone users 1m capacity=1000 "
                           "error=0.001 file=@PREFIX@/users.bloom;",
                      files={"users.bloom": b"hello world\n" * 10})
    assert rc != 0 and "bad magic" in out

    # a sound file of another geometry
    rc, out = nginx_t(http="infergate_bloom_zone users 1m capacity=2000 "
                           "error=0.001 file=@PREFIX@/users.bloom;",
                      files=files(known_filter))
    assert rc != 0 and "mismatched geometry" in out
    assert "capacity=1000" in out and "capacity=2000" in out

    rc, out = nginx_t(http="infergate_bloom_zone users 1m capacity=1000 "
                           "error=0.001 file=@PREFIX@/users.bloom;",
                      files=files(known_filter))
    assert rc == 0, out


def test_nginx_t_bad_directives(nginx_t):
    rc, out = nginx_t(server="location / { infergate_bloom zone=nope "
                             "key=$uri; }")
    assert rc != 0 and "unknown zone \"nope\"" in out

    for bad, msg in (
            ("capacity=0 error=0.01", "invalid parameter"),
            ("capacity=100 error=0.9", "error must be"),
            ("capacity=100 error=abc", "invalid parameter"),
            ("capacity=100", "are required"),
            ("capacity=100 error=0.01 save_every=0s", "save_every"),
            ("capacity=100 error=0.01 colour=blue", "invalid parameter")):
        rc, out = nginx_t(http=f"infergate_bloom_zone z 1m {bad};")
        assert rc != 0 and msg in out, (bad, out)

    zone = "infergate_bloom_zone z 1m capacity=100 error=0.01;"
    for bad, msg in (
            ("zone=z", "\"key=\" is required"),
            ("key=$uri", "\"zone=\" is required"),
            ("zone=z key=$uri add_on=99", "invalid add_on status"),
            ("zone=z key=$uri add_on=201 abc", "invalid add_on status"),
            ("zone=z key=$uri check=maybe", "invalid parameter"),
            ("zone=z key=$uri methods=", "invalid parameter"),
            ("zone=z key=$uri methods=GET,FETCH", "unknown method \"FETCH\""),
            ("zone=z key=$uri methods=get", "unknown method \"get\"")):
        rc, out = nginx_t(http=zone,
                          server=f"location / {{ infergate_bloom {bad}; }}")
        assert rc != 0 and msg in out, (bad, out)

    # set at http level and inherited: checked too
    rc, out = nginx_t(http="infergate_bloom zone=nope key=$uri;")
    assert rc != 0 and "unknown zone \"nope\"" in out

    # a limit zone of that name is not a Bloom zone
    rc, out = nginx_t(http="infergate_limit_zone lz 1m;",
                      server="location / { infergate_bloom zone=lz "
                             "key=$uri; }")
    assert rc != 0 and "unknown zone \"lz\"" in out


def test_audit_records_unknown_id(start_nginx, known_filter, tmp_path):
    audit_tool = BUILD / "infergate-audit"
    if not audit_tool.exists():
        pytest.skip("build/infergate-audit not built")
    out = subprocess.run([str(audit_tool), "keygen", "k1"],
                         capture_output=True, text=True, check=True)
    key = tmp_path / "audit.key"
    key.write_text(out.stdout.strip() + "\n")
    os.chmod(key, 0o600)

    ngx = start_nginx(http=ZONE.format(extra="") + f"""
        infergate_audit @PREFIX@/audit.log key={key} key_id=k1
                        buffer=4k flush=100ms;
    """, server=SERVER, files=files(known_filter))

    assert requests.get(ngx.url("/users/u9")).status_code == 200
    absent = [f"zz{i}" for i in range(20)]
    verdict = tool_test(ngx.prefix / "users.bloom", *absent)
    uid = next(a for a in absent if not verdict[a])
    assert_problem(requests.get(ngx.url(f"/users/{uid}")), 404, UNKNOWN)

    ngx.stop()
    recs = [json.loads(ln) for ln in
            (ngx.prefix / "audit.log").read_text().splitlines()]
    by_path = {r["url"]["path"]: r for r in recs if "url" in r}
    assert by_path["/users/u9"]["event"]["action"] == "request"
    miss = by_path[f"/users/{uid}"]
    assert miss["event"]["action"] == "unknown_id"
    assert miss["event"]["outcome"] == "failure"
    assert miss["http"]["response"]["status_code"] == 404


def test_resize_on_reload_keeps_unsaved_adds(start_nginx, known_filter):
    http, server = create_conf(extra=" save_every=3600s")
    ngx = start_nginx(http=http, server=server, files=files(known_filter))
    assert requests.put(ngx.url("/create/s1")).status_code == 201
    assert tool_test(ngx.prefix / "users.bloom", "s1") == {"s1": False}

    # a new SIZE is a new zone: it takes the old zone's ids, not the file's
    conf = ngx.prefix / "nginx.conf"
    conf.write_text(conf.read_text().replace("infergate_bloom_zone users 1m",
                                             "infergate_bloom_zone users 2m"))
    ngx.reload()
    assert "resized, 501 ids taken from the old zone" in ngx.error_log
    assert requests.get(ngx.url("/users/s1")).status_code == 200
    assert requests.get(ngx.url("/users/u17")).status_code == 200
    assert_problem(requests.get(ngx.url("/users/s2")), 404, UNKNOWN)


def test_reload_geometry_change_refused(start_nginx, known_filter):
    http, server = create_conf()
    ngx = start_nginx(http=http, server=server, files=files(known_filter))
    conf = ngx.prefix / "nginx.conf"
    conf.write_text(conf.read_text().replace("capacity=1000 ",
                                             "capacity=3000 "))
    new = ngx.reload_expect_failure()
    assert "mismatched geometry" in new
    # the running filter is untouched
    assert requests.get(ngx.url("/users/u17")).status_code == 200


def test_save_failure_keeps_serving(start_nginx):
    http, server = create_conf(extra=" save_every=1s")
    http = http.replace("file=@PREFIX@/users.bloom",
                        "file=@PREFIX@/no-such-dir/users.bloom")
    ngx = start_nginx(http=http, server=server, files=files(None))
    ngx.allowed_log.append(r".*\[alert\].*infergate_bloom_zone \"users\": "
                           r"save failed: cannot create .*no-such-dir.*")
    assert requests.put(ngx.url("/create/f1")).status_code == 201

    deadline = time.time() + 8
    while "save failed" not in ngx.error_log and time.time() < deadline:
        time.sleep(0.2)
    assert "save failed: cannot create" in ngx.error_log
    assert "No such file or directory" in ngx.error_log
    # the filter in memory is unaffected
    assert requests.get(ngx.url("/users/f1")).status_code == 200
    assert_problem(requests.get(ngx.url("/users/f2")), 404, UNKNOWN)
    # retried at the period, not at every timer: at most ~1 a second
    time.sleep(2)
    assert ngx.error_log.count("save failed") <= 4


def test_adds_during_saves_all_kept(start_nginx):
    """Creates from many connections (both workers) while the filter is
    saved every second: every file written is sound, and the last one
    holds every id."""
    import concurrent.futures

    http, server = create_conf(extra=" save_every=1s")
    ngx = start_nginx(http=http, server=server, workers=2,
                      listen="reuseport", files=files(None))
    path = ngx.prefix / "users.bloom"
    ids = [f"c{i}" for i in range(300)]

    def create(uid):
        r = requests.put(ngx.url(f"/create/{uid}"),
                         headers={"Connection": "close"})
        return r.status_code

    seen_files = 0
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futs = []
        for n, uid in enumerate(ids):
            futs.append(pool.submit(create, uid))
            if n % 50 == 0:
                time.sleep(0.4)
                if path.exists():
                    # whatever moment we look, the file is whole
                    r = subprocess.run([str(BLOOM_TOOL), "info", str(path)],
                                       capture_output=True, text=True)
                    assert r.returncode == 0, r.stderr
                    seen_files += 1
        assert all(f.result() == 201 for f in futs)

    assert seen_files >= 1
    ngx.stop()
    verdict = tool_test(path, *ids)
    assert all(verdict.values()), [k for k, v in verdict.items() if not v]
