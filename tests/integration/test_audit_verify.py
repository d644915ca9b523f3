"""
infergate-audit (keygen, verify, and the sign testing aid) on audit logs
generated here: no nginx involved.  Every tamper class the verifier knows
is applied to a real chained log, and the MAC format of lib/ig_audit.h is
checked independently with Python's hmac.
"""

import hashlib
import hmac
import json
import os
import random
import re
import stat
import subprocess

import pytest

from conftest import BUILD


TOOL = BUILD / "infergate-audit"

pytestmark = pytest.mark.skipif(not TOOL.exists(),
                                reason="build/infergate-audit not built")

KEY_LINE = re.compile(r"^([A-Za-z0-9._-]{1,32}):([0-9a-f]{64})$")
MAC_AT = b'"mac":"'
CHAIN_A = "0123456789abcdef0123456789abcdef"
CHAIN_B = "fedcba9876543210fedcba9876543210"


def run(*args, stdin=b""):
    r = subprocess.run([str(TOOL)] + [str(a) for a in args], input=stdin,
                       capture_output=True, timeout=120)
    assert r.returncode >= 0, f"killed by signal {-r.returncode}"
    return r


def keygen(kid):
    r = run("keygen", kid)
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode().strip()
    m = KEY_LINE.match(line)
    assert m and m.group(1) == kid, line
    return line


def keyfile(path, *lines):
    path.write_text("".join(line + "\n" for line in lines))
    os.chmod(path, 0o600)
    return path


def keys_of(path):
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            kid, _, hexkey = line.partition(":")
            out[kid] = bytes.fromhex(hexkey)
    return out


def sign(key, pid, records, key_id=None, chain_id=None, raw=False):
    args = ["sign", "--key", key, "--pid", str(pid)]
    if key_id:
        args += ["--key-id", key_id]
    if chain_id:
        args += ["--chain-id", chain_id]
    if raw:
        args.append("--raw")
        stdin = b"".join(r + b"\n" for r in records)
    else:
        stdin = "".join(json.dumps(r, separators=(",", ":")) + "\n"
                        for r in records).encode()
    r = run(*args, stdin=stdin)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines(keepends=True)


def verify(key, *paths, live=False, key_eq=False):
    args = ["verify", f"--key={key}" if key_eq else "--key"]
    if not key_eq:
        args.append(key)
    if live:
        args.append("--live")
    r = run(*args, *paths)
    return r.returncode, r.stdout.decode(errors="replace"), \
        r.stderr.decode(errors="replace")


def problems(out):
    """The "PATH:LINE: problem" lines, as (path, line, text)."""
    res = []
    for line in out.splitlines():
        m = re.match(r"^(.*):(\d+): (.*)$", line)
        if m and not line.startswith("chain "):
            res.append((m.group(1), int(m.group(2)), m.group(3)))
    return res


def resign(line, kid, key, replace=None):
    """A key holder's rewrite: optional (old, new) replacement, the key id
    set to kid, and the mac recomputed with key."""
    body = line.rstrip(b"\n")
    if replace:
        assert replace[0] in body
        body = body.replace(replace[0], replace[1], 1)
    body = re.sub(rb'"key_id":"[^"]*"', b'"key_id":"' + kid.encode() + b'"',
                  body)
    i = body.rindex(MAC_AT) + len(MAC_AT)
    mac = hmac.new(key, body[:i], hashlib.sha256).hexdigest().encode()
    return body[:i] + mac + b'"}}\n'


def requests(n, start=0):
    return [{"@timestamp": "2024-05-01T12:00:00.000Z",
             "event": {"action": "request", "outcome": "success"},
             "url": {"original": f"/v1/score?i={i}"},
             "http": {"response": {"status_code": 200}},
             "infergate": {"tenant": "acme", "model": "m1"}}
            for i in range(start, start + n)]


@pytest.fixture
def ring(tmp_path):
    return keyfile(tmp_path / "audit.key", keygen("k1"), keygen("k2"))


@pytest.fixture
def chain(ring):
    """A chain of 12 records (chain_start, 10 requests, chain_end)."""
    return sign(ring, 4242, requests(10), key_id="k1", chain_id=CHAIN_A)


def write(tmp_path, name, lines):
    p = tmp_path / name
    p.write_bytes(b"".join(lines))
    return p


# --------------------------------------------------------------------------


def test_keygen():
    a, b = keygen("k1"), keygen("k1")
    assert a != b
    keygen("a.B_c-9" + "x" * 25)
    for bad in ("", "k 1", "k/1", "x" * 33, "k:1"):
        r = run("keygen", bad)
        assert r.returncode == 2, bad
        assert b"bad key id" in r.stderr
    assert run("keygen").returncode == 2
    assert run("keygen", "a", "b").returncode == 2


def test_untouched_log_verifies(ring, chain, tmp_path):
    log = write(tmp_path, "audit.log", chain)
    rc, out, err = verify(ring, log)
    assert rc == 0, out + err
    assert "OK: 12 records in 1 chains verified" in out
    assert f"chain {CHAIN_A}: 0..11 (12 records, pid 4242, key k1)" in out
    assert problems(out) == []

    rc, out, err = verify(ring, log, key_eq=True)
    assert rc == 0, out + err

    # every line is JSON with the layout of lib/ig_audit.h, and its mac is
    # HMAC-SHA256 over the bytes before the mac digits
    key = keys_of(ring)["k1"]
    prev = "0" * 64
    for seq, line in enumerate(chain):
        assert line.endswith(b'"}}\n')
        rec = json.loads(line)
        assert list(rec)[-1] == "infergate"
        ig = rec["infergate"]
        assert list(ig)[-5:] == ["chain", "seq", "key_id", "prev", "mac"]
        assert ig["chain"] == CHAIN_A and ig["seq"] == seq
        assert ig["key_id"] == "k1" and ig["prev"] == prev
        body = line[:-len(b'"}}\n') - 64]
        assert body.endswith(MAC_AT)
        assert hmac.new(key, body, hashlib.sha256).hexdigest() == ig["mac"]
        prev = ig["mac"]
    assert json.loads(chain[0])["event"]["action"] == "chain_start"
    assert json.loads(chain[0])["infergate"]["pid"] == 4242
    assert json.loads(chain[-1])["event"]["action"] == "chain_end"


def test_flipped_byte_is_modified(ring, chain, tmp_path):
    lines = list(chain)
    i = lines[5].index(b"score")
    lines[5] = lines[5][:i] + b"Score" + lines[5][i + 5:]
    log = write(tmp_path, "audit.log", lines)
    rc, out, _ = verify(ring, log)
    assert rc == 1, out
    assert problems(out) == [
        (str(log), 6, f"modified record (MAC mismatch): chain {CHAIN_A} "
                      "seq 5")]
    assert out.splitlines()[-2].startswith("FAILED: 1 problem")


@pytest.mark.parametrize("where", ["timestamp", "status", "mac", "prev"])
def test_any_byte_counts(ring, chain, tmp_path, where):
    lines = list(chain)
    line = lines[3]
    if where == "timestamp":
        i = line.index(b"2024") + 3
    elif where == "status":
        i = line.index(b"200")
    elif where == "mac":
        i = line.rindex(MAC_AT) + len(MAC_AT) + 63
    else:
        i = line.index(b'"prev":"') + 8
    c = line[i:i + 1]
    new = b"1" if c != b"1" else b"2"
    lines[3] = line[:i] + new + line[i + 1:]
    rc, out, _ = verify(ring, write(tmp_path, "audit.log", lines))
    assert rc == 1, out
    probs = problems(out)
    assert len(probs) == 1, out
    assert probs[0][1] == 4
    assert ("modified record" in probs[0][2]
            or "inserted or forged record" in probs[0][2]), out


def test_deleted_line_is_missing(ring, chain, tmp_path):
    lines = chain[:4] + chain[5:]
    log = write(tmp_path, "audit.log", lines)
    rc, out, _ = verify(ring, log)
    assert rc == 1, out
    assert problems(out) == [
        (str(log), 5, f"missing record(s): seq 4 absent (chain {CHAIN_A})")]

    lines = chain[:4] + chain[7:]
    rc, out, _ = verify(ring, write(tmp_path, "audit2.log", lines))
    assert rc == 1
    assert [p[2] for p in problems(out)] == [
        f"missing record(s): seq 4..6 absent (chain {CHAIN_A})"]


def test_swapped_lines_are_reordered(ring, chain, tmp_path):
    lines = list(chain)
    lines[3], lines[4] = lines[4], lines[3]
    log = write(tmp_path, "audit.log", lines)
    rc, out, _ = verify(ring, log)
    assert rc == 1, out
    assert problems(out) == [
        (str(log), 5, f"reordered record: seq 3 after seq 4 (chain "
                      f"{CHAIN_A})")]

    lines = list(chain)
    lines[2], lines[8] = lines[8], lines[2]
    rc, out, _ = verify(ring, write(tmp_path, "audit2.log", lines))
    assert rc == 1, out
    texts = [p[2] for p in problems(out)]
    assert texts and all(t.startswith("reordered record") for t in texts)


def test_forged_line_is_inserted(ring, chain, tmp_path):
    forged = chain[6].replace(b'"seq":6,', b'"seq":12,')
    log = write(tmp_path, "audit.log", chain + [forged])
    rc, out, _ = verify(ring, log)
    assert rc == 1, out
    probs = problems(out)
    assert len(probs) == 1, out
    assert probs[0][:2] == (str(log), 13)
    assert probs[0][2].startswith("inserted or forged record")

    # in the middle of the chain
    forged = chain[6].replace(b'"seq":6,', b'"seq":7,')
    rc, out, _ = verify(ring, write(tmp_path, "audit2.log",
                                    chain[:7] + [forged] + chain[7:]))
    assert rc == 1
    assert [p[2].split(":")[0] for p in problems(out)] == [
        "inserted or forged record (MAC mismatch)"], out

    # a replayed genuine record, and a line that is not a record
    rc, out, _ = verify(ring, write(tmp_path, "audit3.log",
                                    chain[:7] + [chain[6]] + chain[7:]
                                    + [b'{"infergate":{}}\n']))
    assert rc == 1
    texts = [p[2] for p in problems(out)]
    assert texts == [
        f"inserted record: duplicate of seq 6 (chain {CHAIN_A})",
        "malformed line: \"infergate\" does not end with chain, seq, "
        "key_id, prev, mac"], out


def test_truncated_log(ring, chain, tmp_path):
    log = write(tmp_path, "audit.log", chain[:-2])
    rc, out, _ = verify(ring, log)
    assert rc == 1, out
    assert problems(out) == [
        (str(log), 10, f"chain {CHAIN_A} has no end record (truncated)")]

    rc, out, err = verify(ring, log, live=True)
    assert rc == 0, out + err
    assert "OK: 10 records in 1 chains verified" in out
    assert "open (--live)" in out

    # --live spares only the newest chain of a writer
    older = sign(ring, 4242, requests(2), chain_id=CHAIN_B)
    log2 = write(tmp_path, "audit2.log", older[:-1] + chain[:-2])
    rc, out, _ = verify(ring, log2, live=True)
    assert rc == 1
    assert [p[2] for p in problems(out)] == [
        f"chain {CHAIN_B} has no end record (truncated)"]

    # half a line at the end of the file
    log3 = write(tmp_path, "audit3.log", chain[:-1] + [chain[-1][:50]])
    rc, out, _ = verify(ring, log3)
    assert rc == 1
    texts = [p[2] for p in problems(out)]
    assert "truncated line (no newline at end of file)" in texts


def test_unknown_key(ring, chain, tmp_path):
    k9 = bytes.fromhex(keygen("k9").split(":")[1])
    lines = list(chain)
    lines[4] = resign(lines[4], "k9", k9)
    assert json.loads(lines[4])["infergate"]["key_id"] == "k9"
    log = write(tmp_path, "audit.log", lines)
    rc, out, _ = verify(ring, log)
    assert rc == 1, out
    assert problems(out) == [
        (str(log), 5, f'unknown key id "k9" (chain {CHAIN_A} seq 4)')]

    # a key holder changing a record is caught by the chain link
    lines = list(chain)
    lines[4] = resign(lines[4], "k1", keys_of(ring)["k1"],
                      (b"/v1/score", b"/v1/other"))
    rc, out, _ = verify(ring, write(tmp_path, "audit2.log", lines))
    assert rc == 1
    assert [p[2] for p in problems(out)] == [
        f"modified record link: prev of seq 5 is not the mac of seq 4 "
        f"(chain {CHAIN_A})"], out


def test_key_rotation(ring, tmp_path):
    old = sign(ring, 100, requests(3), key_id="k1", chain_id=CHAIN_A)
    new = sign(ring, 101, requests(3), key_id="k2", chain_id=CHAIN_B)
    assert json.loads(old[1])["infergate"]["key_id"] == "k1"
    log = write(tmp_path, "audit.log", old + new)

    rc, out, err = verify(ring, log)
    assert rc == 0, out + err
    assert "OK: 10 records in 2 chains verified" in out
    assert f"chain {CHAIN_A}: 0..4 (5 records, pid 100, key k1)" in out
    assert f"chain {CHAIN_B}: 0..4 (5 records, pid 101, key k2)" in out

    # without the default --key-id the last key of the file signs
    assert json.loads(sign(ring, 1, [])[0])["infergate"]["key_id"] == "k2"

    # the old key retired from the key file
    k2 = [line for line in ring.read_text().splitlines()
          if line.startswith("k2:")]
    only_new = keyfile(tmp_path / "new.key", *k2)
    rc, out, _ = verify(only_new, log)
    assert rc == 1
    assert problems(out) == [
        (str(log), 1, f'unknown key id "k1" (chain {CHAIN_A} seq 0)')]


def test_rotated_files(ring, tmp_path):
    a = sign(ring, 7, requests(6), chain_id=CHAIN_A)
    b = sign(ring, 8, requests(6), chain_id=CHAIN_B)
    # two workers interleaved, then the file rotated mid-chain
    mixed = [x for pair in zip(a, b) for x in pair]
    old = write(tmp_path, "audit.log.1", mixed[:9])
    cur = write(tmp_path, "audit.log", mixed[9:])

    rc, out, err = verify(ring, old, cur)
    assert rc == 0, out + err
    assert "OK: 16 records in 2 chains verified" in out

    # out of order, or alone, they do not verify
    rc, out, _ = verify(ring, cur, old)
    assert rc == 1
    rc, out, _ = verify(ring, cur)
    assert rc == 1
    assert any("missing record(s): seq 0..3 absent" in p[2]
               for p in problems(out)), out
    rc, out, _ = verify(ring, old, live=True)
    assert rc == 0, out


def test_hostile_strings(ring, tmp_path):
    hostile = [
        b'quote " backslash \\ slash / "}},"infergate":{"seq":0}',
        bytes(range(1, 10)) + bytes(range(11, 32)) + b"\x7f",
        b"invalid \xff \xfe \xc0 \xf5 utf-8",
        b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
        b'{"event":{"action":"chain_end"}}',
        b"",
    ]
    lines = sign(ring, 9, hostile, raw=True, chain_id=CHAIN_A)
    log = write(tmp_path, "audit.log", lines)
    rc, out, err = verify(ring, log)
    assert rc == 0, out + err
    assert "OK: 8 records in 1 chains verified" in out

    for raw, line in zip(hostile, lines[1:-1]):
        assert b"\n" not in line[:-1]
        rec = json.loads(line.decode("utf-8"))
        assert rec["event"]["action"] == "request"
        assert rec["url"]["original"] == raw.decode("utf-8", "replace")
        assert list(rec["infergate"])[-5:] == [
            "chain", "seq", "key_id", "prev", "mac"]


def test_garbage_never_crashes(ring, chain, tmp_path):
    rnd = random.Random(1234)
    blob = b"".join(chain)
    for i in range(30):
        data = bytearray(blob)
        for _ in range(rnd.randint(1, 20)):
            op = rnd.random()
            pos = rnd.randrange(len(data))
            if op < 0.5:
                data[pos] = rnd.randrange(256)
            elif op < 0.75:
                del data[pos:pos + rnd.randint(1, 80)]
            else:
                data[pos:pos] = bytes(rnd.randrange(256)
                                      for _ in range(rnd.randint(1, 40)))
        p = tmp_path / f"g{i}.log"
        p.write_bytes(bytes(data))
        rc, out, err = verify(ring, p)
        assert rc in (0, 1), (rc, err)
        if rc == 1:
            assert "FAILED:" in out

    p = tmp_path / "random.bin"
    p.write_bytes(bytes(rnd.randrange(256) for _ in range(200000)))
    rc, out, _ = verify(ring, p)
    assert rc == 1 and "FAILED:" in out


def test_large_log_streams(ring, tmp_path):
    n = 20000
    lines = sign(ring, 1, requests(n), chain_id=CHAIN_A)
    log = write(tmp_path, "big.log", lines)
    rc, out, err = verify(ring, log)
    assert rc == 0, out + err
    assert f"OK: {n + 2} records in 1 chains verified" in out

    # a line longer than the verifier buffers (1 MiB) is one problem
    huge = b'{"x":"' + b"a" * (1 << 21) + b'"}\n'
    log2 = write(tmp_path, "huge.log", lines[:5] + [huge] + lines[5:])
    rc, out, _ = verify(ring, log2)
    assert rc == 1
    assert problems(out) == [
        (str(log2), 6, "malformed line: longer than 1048576 bytes")]


def test_key_file_rules(ring, chain, tmp_path):
    log = write(tmp_path, "audit.log", chain)

    for mode in (0o644, 0o640, 0o604, 0o620, 0o660):
        os.chmod(ring, mode)
        rc, out, err = verify(ring, log)
        assert rc == 2, (oct(mode), out, err)
        assert "group or others" in err and "chmod 600" in err
        assert out == ""
    os.chmod(ring, 0o400)
    assert verify(ring, log)[0] == 0
    os.chmod(ring, 0o600)

    rc, _, err = verify(tmp_path / "nope.key", log)
    assert rc == 2 and "No such file" in err

    bad = keyfile(tmp_path / "bad.key", "k1:" + "00" * 31)
    rc, _, err = verify(bad, log)
    assert rc == 2 and "line 1: key shorter than 32 bytes" in err

    dup = keyfile(tmp_path / "dup.key", keygen("k1"), "# c", keygen("k1"))
    rc, _, err = verify(dup, log)
    assert rc == 2 and 'line 3: duplicate key id "k1"' in err

    assert stat.S_IMODE(os.stat(ring).st_mode) == 0o600


def test_usage(ring, chain, tmp_path):
    log = write(tmp_path, "audit.log", chain)
    assert run("verify", "--key", ring).returncode == 2
    assert run("verify", log).returncode == 2
    assert run("verify", "--key").returncode == 2
    assert run("verify", "--key", ring, "--bogus", log).returncode == 2
    assert run("frobnicate").returncode == 2
    assert run().returncode == 2
    r = run("--help")
    assert r.returncode == 0 and b"testing aid" in r.stdout
    rc, _, err = verify(ring, log, tmp_path / "missing.log")
    assert rc == 2 and "missing.log" in err
    # stdin as a path
    r = run("verify", "--key", ring, "-", stdin=b"".join(chain))
    assert r.returncode == 0, r.stdout
    assert b"OK: 12 records" in r.stdout


def test_sign_with_state_links_chains(tmp_path):
    """sign --state links markers as nginx does; the verifier finds the
    state beside the last file and reports removed chains and heads."""
    key = keyfile(tmp_path / "k", keygen("k1"))
    log = tmp_path / "audit.log"
    state = tmp_path / "audit.log.chainstate"
    lines = []
    for pid in (1, 2, 3):
        rec = {"event": {"action": "request"}, "infergate": {}}
        lines += sign_state(key, pid, [rec], state)
    log.write_bytes(b"".join(lines))
    rc, out, err = verify(key, log)
    assert rc == 0, out + err
    assert state.read_text().startswith("infergate-chainstate 1\nhead ")

    log.write_bytes(b"".join(lines[3:]))            # the first chain
    rc, out, err = verify(key, log)
    assert rc == 1 and [p for p in problems(out)
                        if p[1] == 1 and "removed chain" in p[2]], out

    log.write_bytes(b"".join(lines[:6]))            # the newest chain
    rc, out, err = verify(key, log)
    assert rc == 1 and [p for p in problems(out)
                        if p[0] == str(state) and p[1] == 2], out
    r = run("verify", "--key", key, "--no-state", log)
    assert r.returncode == 0, r.stdout    # without its witness: unseen

    r = run("verify", "--key", key, "--state", tmp_path / "nope", log)
    assert r.returncode == 2 and b"nope" in r.stderr


def sign_state(key, pid, records, state):
    stdin = "".join(json.dumps(r, separators=(",", ":")) + "\n"
                    for r in records).encode()
    r = run("sign", "--key", key, "--pid", str(pid), "--state", state,
            stdin=stdin)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines(keepends=True)
