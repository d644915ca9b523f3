"""The audit's measuring aid (issue 17, sealing): INFERGATE_AUDIT_TSC in
nginx's environment makes each worker log, at exit, the cycles per record of
building, sealing, handing off and writing its records; without it nothing
is logged.  No timed assertions: only that every part was measured and that
the records counted are the records written, all of them verified."""

import concurrent.futures
import re

import requests

from test_audit import keyfile, records, requests_only, start, verify


REPORT = re.compile(
    r'infergate_audit "(?P<path>[^"]+)": cycles per record \(TSC at '
    r'(?P<ghz>[\d.]+) GHz\) over (?P<n>\d+) records \((?P<skipped>\d+) '
    r'preempted, left out\): build (?P<build>\d+), seal (?P<seal>\d+), '
    r'hand-off (?P<handoff>\d+) \((?P<rc>\d+) reserve and commit, '
    r'(?P<post>\d+) posting to and from the pool\), write (?P<write>\d+) '
    r'\((?P<writes>\d+) writes of (?P<per>\d+) records\)')


def _requests(ngx, n):
    s = requests.Session()
    for i in range(n):
        assert s.get(ngx.url(f"/open?i={i}")).status_code == 200


def test_tsc_knob_reports_every_part(start_nginx, tmp_path, monkeypatch):
    monkeypatch.setenv("INFERGATE_AUDIT_TSC", "1")
    ngx, _, key = start(start_nginx, tmp_path, workers=1)
    _requests(ngx, 400)
    ngx.stop()

    log = ngx.prefix / "audit.log"
    rc, out = verify(key, log)
    assert rc == 0, out
    assert len(requests_only(records(log))) == 400

    found = [m for m in map(REPORT.search, ngx.error_log.splitlines()) if m]
    assert len(found) == 1, ngx.error_log
    m = found[0]
    assert m["path"] == str(log)
    # every record sealed is counted, measured or left out as preempted
    assert int(m["n"]) + int(m["skipped"]) == 400
    assert int(m["n"]) > 0
    assert float(m["ghz"]) > 0
    for part in ("build", "seal", "handoff", "write"):
        assert int(m[part]) > 0, (part, m.group(0))
    assert int(m["handoff"]) >= int(m["rc"])
    # 16k buffers: the pool wrote several, the exit the last one
    assert int(m["writes"]) >= 2 and int(m["per"]) >= 1


def test_tsc_knob_survives_a_reload(start_nginx, tmp_path, monkeypatch):
    """The master reads the variable with each configuration: the workers
    of the old and the new configuration both report."""
    monkeypatch.setenv("INFERGATE_AUDIT_TSC", "1")
    ngx, _, key = start(start_nginx, tmp_path, workers=1)
    _requests(ngx, 50)
    monkeypatch.delenv("INFERGATE_AUDIT_TSC")
    ngx.reload()
    _requests(ngx, 50)
    ngx.stop()

    log = ngx.prefix / "audit.log"
    rc, out = verify(key, log)
    assert rc == 0, out
    found = [m for m in map(REPORT.search, ngx.error_log.splitlines()) if m]
    assert len(found) == 2, ngx.error_log
    assert sum(int(m["n"]) + int(m["skipped"]) for m in found) == 100


def test_no_report_without_the_variable(start_nginx, tmp_path, monkeypatch):
    monkeypatch.delenv("INFERGATE_AUDIT_TSC", raising=False)
    ngx, _, key = start(start_nginx, tmp_path, workers=1)
    _requests(ngx, 50)
    ngx.stop()

    rc, out = verify(key, ngx.prefix / "audit.log")
    assert rc == 0, out
    assert "cycles per record" not in ngx.error_log


def test_records_of_one_millisecond_and_across_verify(start_nginx, tmp_path):
    """Records that share their first 64 bytes (time stamp and request id
    prefix) reuse the first block's HMAC state; many in one millisecond and
    across millisecond boundaries, from two workers, all verify."""
    key = keyfile(tmp_path)
    ngx, _, key = start(start_nginx, tmp_path, key=key)

    def burst(j):
        s = requests.Session()
        for i in range(250):
            assert s.get(ngx.url(f"/open?j={j}&i={i}")).status_code == 200

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(burst, range(8)))
    ngx.stop()

    log = ngx.prefix / "audit.log"
    rc, out = verify(key, log)
    assert rc == 0, out
    reqs = requests_only(records(log))
    assert len(reqs) == 2000
    # some records did share a millisecond and a worker (the kept state
    # was used), and some did not
    stamps = {}
    for r in reqs:
        k = (r["infergate"]["pid"], r["@timestamp"])
        stamps[k] = stamps.get(k, 0) + 1
    assert max(stamps.values()) > 1
    assert len(stamps) > 1
