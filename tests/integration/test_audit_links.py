"""
Issue 11 §4: chain links.  Every chain_start and chain_end names the
marker sealed before it in the same log (kept across reloads and restarts
in PATH.chainstate), so removing a whole chain (the first, a middle one),
a chain's tail with its chain_end, or the newest chains is reported with
FILE:LINE and a non-zero exit, with and without --live.  Real nginx writes
every log here; the tests then cut copies of it.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from conftest import BUILD, nginx_env

AUDIT_TOOL = BUILD / "infergate-audit"

pytestmark = pytest.mark.skipif(not AUDIT_TOOL.exists(),
                                reason="build/infergate-audit not built")


def keyfile(tmp_path):
    out = subprocess.run([str(AUDIT_TOOL), "keygen", "k1"],
                         capture_output=True, text=True, check=True)
    path = tmp_path / "audit.key"
    path.write_text(out.stdout)
    os.chmod(path, 0o600)
    return path


def verify(key, *paths, live=False, state=None):
    cmd = [str(AUDIT_TOOL), "verify", "--key", str(key)]
    if live:
        cmd.append("--live")
    if state is not None:
        cmd += ["--state", str(state)]
    r = subprocess.run(cmd + [str(p) for p in paths], capture_output=True,
                       text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def lines_of(path):
    return path.read_text().splitlines(keepends=True)


def rec(line):
    return json.loads(line)


def chains_in_order(lines):
    """chain ids in the order of their chain_start lines"""
    out = []
    for ln in lines:
        r = rec(ln)
        if r["event"]["action"] == "chain_start":
            out.append(r["infergate"]["chain"])
    return out


def without_chain(lines, chain):
    return [ln for ln in lines if rec(ln)["infergate"]["chain"] != chain]


def write(path, lines):
    path.write_text("".join(lines))
    return path


def start(start_nginx, tmp_path, workers=1):
    key = keyfile(tmp_path)
    ngx = start_nginx(workers=workers, http=f"""
        infergate_audit @PREFIX@/audit.log key={key} key_id=k1
                        buffer=16k flush=100ms;
    """, server="location / { @PROXY@ }")
    return ngx, key


def traffic(ngx, n=5, tag="r"):
    s = requests.Session()
    for i in range(n):
        assert s.get(ngx.url(f"/{tag}{i}"),
                     headers={"Connection": "close"}).status_code == 200


def three_generations(start_nginx, tmp_path, workers=1):
    """A log written by three generations of workers (two reloads), then
    a graceful stop: every chain closed."""
    ngx, key = start(start_nginx, tmp_path, workers)
    traffic(ngx, tag="a")
    ngx.reload()
    traffic(ngx, tag="b")
    ngx.reload()
    traffic(ngx, tag="c")
    ngx.stop()
    log = ngx.prefix / "audit.log"
    state = ngx.prefix / "audit.log.chainstate"
    return ngx, key, log, state


def problems(out):
    return [ln for ln in out.splitlines() if re.match(r"^\S+:\d+: ", ln)]


def test_untouched_log_and_state(start_nginx, tmp_path):
    ngx, key, log, state = three_generations(start_nginx, tmp_path, 2)
    rc, out = verify(key, log)          # finds audit.log.chainstate itself
    assert rc == 0, out
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    text = state.read_text().splitlines()
    assert text[0] == "infergate-chainstate 1" and text[-1] == "end"
    assert not [t for t in text if t.startswith("open ")], text
    # one genesis, every other marker names the one before it
    markers = [rec(ln) for ln in lines_of(log)
               if rec(ln)["event"]["action"] in ("chain_start", "chain_end")]
    assert len(markers) == 12
    links = [m["infergate"]["link"] for m in markers]
    assert links.count("genesis") == 1
    head = text[1].split()
    assert head[0] == "head"
    assert any(m["infergate"]["chain"] == head[1]
               and m["infergate"]["seq"] == int(head[2])
               and m["infergate"]["mac"] == head[3] for m in markers)


def test_delete_first_chain(start_nginx, tmp_path):
    ngx, key, log, state = three_generations(start_nginx, tmp_path)
    lines = lines_of(log)
    first = chains_in_order(lines)[0]
    assert rec(lines[0])["infergate"]["link"] == "genesis"
    cut = write(tmp_path / "cut.log", without_chain(lines, first))
    rc, out = verify(key, cut, state=state)
    assert rc == 1, out
    bad = problems(out)
    assert any("removed chain or records" in p and first in p
               and p.startswith(f"{cut}:") for p in bad), out


def test_delete_middle_chain_after_two_reloads(start_nginx, tmp_path):
    ngx, key, log, state = three_generations(start_nginx, tmp_path, 2)
    lines = lines_of(log)
    order = chains_in_order(lines)
    assert len(order) == 6
    for victim in order[1:5]:
        cut = write(tmp_path / "cut.log", without_chain(lines, victim))
        rc, out = verify(key, cut, state=state)
        assert rc == 1, out
        assert any("removed chain or records" in p and victim in p
                   for p in problems(out)), out
        # and without the state file too: the links alone show it
        rc, out = verify(key, cut, state=tmp_path / "none")
        assert rc == 2, out
        os.rename(state, state.with_suffix(".moved"))
        try:
            rc, out = verify(key, cut)
            assert rc == 1, out
            assert any("removed chain or records" in p and victim in p
                       for p in problems(out)), out
        finally:
            os.rename(state.with_suffix(".moved"), state)


def test_cut_tail_of_a_chain(start_nginx, tmp_path):
    """The last records and the chain_end of an old chain: reported with
    and without --live (its writer has exited: it cannot be open)."""
    ngx, key = start(start_nginx, tmp_path, workers=1)
    traffic(ngx, tag="a")
    ngx.reload()
    traffic(ngx, tag="b")
    ngx.reload()
    traffic(ngx, tag="c")
    log = ngx.prefix / "audit.log"
    state = ngx.prefix / "audit.log.chainstate"
    time.sleep(0.5)                     # flush=100ms
    lines = lines_of(log)

    # nginx still runs: the untouched log verifies with --live only
    rc, out = verify(key, log, live=True)
    assert rc == 0, out
    rc, out = verify(key, log)
    assert rc == 1 and "has no end record" in out, out

    order = chains_in_order(lines)
    assert len(order) == 3
    for victim in order[:2]:
        idx = [i for i, ln in enumerate(lines)
               if rec(ln)["infergate"]["chain"] == victim]
        assert rec(lines[idx[-1]])["event"]["action"] == "chain_end"
        cut_lines = [ln for i, ln in enumerate(lines) if i not in idx[-3:]]
        cut = write(tmp_path / "cut.log", cut_lines)
        for live in (False, True):
            rc, out = verify(key, cut, live=live, state=state)
            assert rc == 1, (live, out)
            assert any(victim in p and ("removed chain or records" in p
                                        or "has no end record" in p)
                       for p in problems(out)), out
            assert "removed chain or records" in out, out
    ngx.stop()


def test_delete_newest_chain_and_truncate(start_nginx, tmp_path):
    ngx, key, log, state = three_generations(start_nginx, tmp_path)
    lines = lines_of(log)
    newest = chains_in_order(lines)[-1]

    cut = write(tmp_path / "cut.log", without_chain(lines, newest))
    for live in (False, True):
        rc, out = verify(key, cut, live=live, state=state)
        assert rc == 1, out
        assert any(p.startswith(f"{state}:2: ")
                   and "newest chain marker" in p and newest in p
                   for p in problems(out)), out

    # the file cut short: the newest chain's last records and chain_end
    for n in (1, 3):
        cut = write(tmp_path / "cut.log", lines[:-n])
        for live in (False, True):
            rc, out = verify(key, cut, live=live, state=state)
            assert rc == 1, (n, live, out)
            assert "newest chain marker" in out, out


def test_rotated_files(start_nginx, tmp_path):
    ngx, key = start(start_nginx, tmp_path, workers=2)
    traffic(ngx, tag="a")
    os.rename(ngx.prefix / "audit.log", ngx.prefix / "audit.log.1")
    subprocess.run(ngx._cmd("-s", "reopen"), check=True,
                   env=nginx_env(ngx.prefix), capture_output=True)
    time.sleep(0.5)
    traffic(ngx, tag="b")
    ngx.reload()
    traffic(ngx, tag="c")
    ngx.stop()
    old, cur = ngx.prefix / "audit.log.1", ngx.prefix / "audit.log"
    state = ngx.prefix / "audit.log.chainstate"

    rc, out = verify(key, old, cur)
    assert rc == 0, out

    # the current file alone: what came before it is missing...
    rc, out = verify(key, cur)
    assert rc == 1 and "removed chain or records" in out, out
    # ...unless older files were deleted on purpose (logrotate)
    r = subprocess.run([str(AUDIT_TOOL), "verify", "--key", str(key),
                        "--partial", str(cur)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # but a chain cut from it still shows
    lines = lines_of(cur)
    victim = chains_in_order(lines)[1]
    cut = write(tmp_path / "cut.log", without_chain(lines, victim))
    r = subprocess.run([str(AUDIT_TOOL), "verify", "--key", str(key),
                        "--partial", "--state", str(state), str(cut)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and victim in r.stdout, r.stdout

    # a chain removed from the rotated file
    lines = lines_of(old)
    victim = chains_in_order(lines)[0]
    cut = write(tmp_path / "audit.log.1", without_chain(lines, victim))
    rc, out = verify(key, cut, cur, state=state)
    assert rc == 1 and victim in out, out


def test_live_accepts_only_running_writers(start_nginx, tmp_path):
    """kill -9 of a worker: its chain can never end.  --live accepts the
    running workers' open chains, not the dead one's."""
    ngx, key = start(start_nginx, tmp_path, workers=2)
    ngx.allowed_log.append(r".*exited on signal 9.*")
    traffic(ngx, n=10, tag="a")
    time.sleep(0.5)
    log = ngx.prefix / "audit.log"
    starts = {rec(ln)["infergate"]["pid"]: rec(ln)["infergate"]["chain"]
              for ln in lines_of(log)
              if rec(ln)["event"]["action"] == "chain_start"}
    victim_pid = sorted(ngx.worker_pids())[0]
    victim = starts[victim_pid]
    os.kill(victim_pid, signal.SIGKILL)
    deadline = time.time() + 20
    while len(set(ngx.worker_pids()) - {victim_pid}) < 2:
        assert time.time() < deadline
        time.sleep(0.05)
    traffic(ngx, n=10, tag="b")
    time.sleep(0.5)

    rc, out = verify(key, log, live=True)
    assert rc == 1, out
    bad = problems(out)
    assert len(bad) == 1 and victim in bad[0] \
        and "has no end record" in bad[0], out
    ngx.stop()


def test_reopen_then_quit_without_requests(start_nginx, tmp_path):
    """A reopen queues the old chain's chain_end behind its records; a
    quit before any other request must still write it."""
    ngx, key = start(start_nginx, tmp_path, workers=2)
    traffic(ngx, tag="a")
    os.rename(ngx.prefix / "audit.log", ngx.prefix / "audit.log.1")
    subprocess.run(ngx._cmd("-s", "reopen"), check=True,
                   env=nginx_env(ngx.prefix), capture_output=True)
    time.sleep(0.3)
    ngx.stop()
    old, cur = ngx.prefix / "audit.log.1", ngx.prefix / "audit.log"
    files = [old] + ([cur] if cur.exists() else [])
    rc, out = verify(key, *files, state=ngx.prefix / "audit.log.chainstate")
    assert rc == 0, out
    ends = [ln for ln in lines_of(old)
            if rec(ln)["event"]["action"] == "chain_end"]
    assert len(ends) == 2, out


def test_state_file_that_cannot_be_opened(nginx_t, tmp_path):
    key = keyfile(tmp_path)
    # a directory where the state file would go
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "a.log.chainstate").mkdir()
    rc, out = nginx_t(http=f"infergate_audit @PREFIX@/a.log key={key} "
                      f"key_id=k1;")
    assert rc != 0, out
    assert "infergate_audit" in out and "a.log.chainstate" in out, out


def test_damaged_state_file_is_a_reported_reset(start_nginx, tmp_path):
    """A state file torn or edited: the worker logs an alert and starts a
    new genesis; the verifier reports the reset, never silence."""
    ngx, key, log, state = three_generations(start_nginx, tmp_path)
    state.write_text("infergate-chainstate 1\nhead garbage\n")
    key2 = key
    ngx2 = start_nginx(workers=1, http=f"""
        infergate_audit {log} key={key2} key_id=k1 flush=100ms;
    """, server="location / { @PROXY@ }")
    ngx2.allowed_log.append(r".*\[alert\].*chain state file .* is damaged.*")
    traffic(ngx2, tag="d")
    ngx2.stop()
    assert "is damaged" in ngx2.error_log
    rc, out = verify(key, log, state=state)
    assert rc == 1 and "second genesis" in out, out
