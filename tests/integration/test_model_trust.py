"""
Trusting the model (issue 16 §1, §2): detached signatures over a model
file's bytes checked against --trust DIR, --require-signed, AES-256-GCM
encrypted model files decrypted in memory, at start, at --check and at a
SIGHUP reload, with the real infergate-backend and build/infergate-models;
the signatures interoperate with the openssl CLI both ways.
"""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from backend_fixtures import (BACKEND_BIN, BAD_STDERR, BUILD, RingClient,
                              backend_env, start_backend, OK, EMODEL)

assert start_backend  # a fixture, used by name

MODELS_BIN = BUILD / "infergate-models"
HDR = 128                              # lib/ig_modelcrypt.h IG_MC_HDR_LEN


def tool(*args, check=True, cwd=None):
    r = subprocess.run([str(MODELS_BIN), *map(str, args)],
                       capture_output=True, text=True, timeout=60, cwd=cwd,
                       env=backend_env())
    assert not BAD_STDERR.search(r.stderr), r.stderr
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def backend(*args, env=None):
    r = subprocess.run([str(BACKEND_BIN), "--device", "cpu",
                        *map(str, args)], capture_output=True, text=True,
                       timeout=60, env=env or backend_env())
    assert not BAD_STDERR.search(r.stderr), r.stderr
    return r


def write_key(path, kid, hexkey):
    path.write_text(f"# model keys\n{kid}:{hexkey}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def pki(tmp_path):
    """Signers risk-team (Ed25519), ml-team (ECDSA P-256), rsa-team
    (RSA-PSS) trusted; outsider (Ed25519) not."""
    keys = tmp_path / "keys"
    trust = tmp_path / "trust"
    keys.mkdir()
    trust.mkdir()
    for signer, alg in [("risk-team", "ed25519"), ("ml-team", "ecdsa-p256"),
                        ("rsa-team", "rsa-pss"), ("outsider", "ed25519")]:
        tool("keygen", "--alg", alg, keys / signer)
        assert (keys / f"{signer}.pem").stat().st_mode & 0o777 == 0o600
        if signer != "outsider":
            os.link(keys / f"{signer}.pub.pem", trust / f"{signer}.pub.pem")

    class P:
        pass
    p = P()
    p.keys, p.trust = keys, trust
    p.priv = lambda s: keys / f"{s}.pem"
    p.pub = lambda s: keys / f"{s}.pub.pem"
    p.aes = write_key(tmp_path / "model.key", "vendor-1", "11" * 32)
    return p


def builtin(tmp_path, name="m.model", spec="builtin:identity:4\n"):
    p = tmp_path / name
    p.write_text(spec)
    return p


def check_json(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# -- the tool and the openssl CLI --------------------------------------------

def test_ed25519_signature_is_what_openssl_writes(tmp_path, pki):
    m = builtin(tmp_path)
    tool("sign", "--key", pki.priv("risk-team"), m)
    sig = (tmp_path / "m.model.sig").read_bytes()
    assert len(sig) == 64
    o = tmp_path / "openssl.sig"
    subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey",
                    pki.priv("risk-team"), "-in", m, "-out", o], check=True)
    assert o.read_bytes() == sig                  # Ed25519 is deterministic
    subprocess.run(["openssl", "pkeyutl", "-verify", "-rawin", "-pubin",
                    "-inkey", pki.pub("risk-team"), "-in", m, "-sigfile",
                    tmp_path / "m.model.sig"], check=True,
                   capture_output=True)
    assert tool("verify", "--trust", pki.trust, m, o).stdout == "risk-team\n"


@pytest.mark.parametrize("signer, opts", [
    ("ml-team", []),
    ("rsa-team", ["-sigopt", "rsa_padding_mode:pss",
                  "-sigopt", "rsa_pss_saltlen:digest"]),
])
def test_ecdsa_and_rsa_pss_interoperate_with_openssl(tmp_path, pki, signer,
                                                     opts):
    m = builtin(tmp_path)
    ours = tmp_path / "ours.sig"
    theirs = tmp_path / "theirs.sig"
    tool("sign", "--key", pki.priv(signer), m, "-o", ours)
    subprocess.run(["openssl", "dgst", "-sha256", "-verify", pki.pub(signer),
                    *opts, "-signature", ours, m], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", pki.priv(signer),
                    *opts, "-out", theirs, m], check=True)
    assert tool("verify", "--trust", pki.trust, m, theirs).stdout \
        == f"{signer}\n"
    # and the backend takes openssl's signature
    meta = check_json(backend("--trust", pki.trust, "--check",
                              f"{m}#sig={theirs}"))
    assert meta["signer"] == signer


def test_tool_refuses_bad_input(tmp_path, pki):
    m = builtin(tmp_path)
    r = tool("keygen", pki.keys / "risk-team", check=False)
    assert r.returncode == 1 and "File exists" in r.stderr
    r = tool("keygen", "--alg", "dsa", "x", check=False, cwd=tmp_path)
    assert r.returncode == 2 and "--alg" in r.stderr
    r = tool("sign", "--key", pki.pub("risk-team"), m, check=False)
    assert r.returncode == 1 and "not a PEM private key" in r.stderr
    r = tool("verify", "--trust", pki.trust, m, check=False)
    assert r.returncode == 1 and "No such file" in r.stderr
    bad = tmp_path / "badtrust"
    bad.mkdir()
    (bad / "x.pem").write_text("junk\n")
    r = tool("verify", "--trust", bad, m, pki.priv("risk-team"), check=False)
    assert r.returncode == 1 and "not a PEM public key" in r.stderr


# -- signatures at load ------------------------------------------------------

def test_valid_signature_names_the_signer(tmp_path, pki):
    m = builtin(tmp_path)
    tool("sign", "--key", pki.priv("risk-team"), m)
    meta = check_json(backend("--trust", pki.trust, "--require-signed",
                              "--check", m))
    assert meta["signer"] == "risk-team"
    assert meta["sha256"] == hashlib.sha256(m.read_bytes()).hexdigest()
    meta = check_json(backend("--trust", pki.trust, "--check",
                              f"{m}#signer=risk-team"))
    assert meta["signer"] == "risk-team"


def flip(path, off):
    b = bytearray(path.read_bytes())
    b[off] ^= 0x01
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("case, msg", [
    ("wrong signer", "but #signer= requires \"risk-team\""),
    ("untrusted key", "does not verify with any key"),
    ("modified model", "does not verify with any key"),
    ("modified signature", "does not verify with any key"),
    ("truncated signature", "does not verify with any key"),
    ("empty signature", "does not verify with any key"),
    ("missing #sig= file", "signature"),
])
def test_bad_signatures_refused(tmp_path, pki, case, msg):
    m = builtin(tmp_path)
    sig = tmp_path / "m.model.sig"
    spec = str(m)
    signer = {"wrong signer": "ml-team",
              "untrusted key": "outsider"}.get(case, "risk-team")
    tool("sign", "--key", pki.priv(signer), m)
    if case == "wrong signer":
        spec += "#signer=risk-team"
    elif case == "modified model":
        m.write_text("builtin:identity:4 \n")
    elif case == "modified signature":
        flip(sig, 10)
    elif case == "truncated signature":
        sig.write_bytes(sig.read_bytes()[:63])
    elif case == "empty signature":
        sig.write_bytes(b"")
    elif case == "missing #sig= file":
        spec += f"#sig={tmp_path}/nope.sig"
    # refused with and without --require-signed: a bad signature is
    # never "unsigned"
    for req in ([], ["--require-signed"]):
        r = backend("--trust", pki.trust, *req, "--check", spec)
        assert r.returncode == 1, (case, r.stdout, r.stderr)
        assert msg in r.stderr, r.stderr
        assert r.stdout == ""


def test_missing_signature(tmp_path, pki):
    m = builtin(tmp_path)
    meta = check_json(backend("--trust", pki.trust, "--check", m))
    assert meta["signer"] == ""
    r = backend("--trust", pki.trust, "--check", m)
    assert "event=model_unsigned" in r.stderr and 'signer=""' in r.stderr
    r = backend("--trust", pki.trust, "--require-signed", "--check", m)
    assert r.returncode == 1 and "no signature" in r.stderr \
        and "--require-signed" in r.stderr, r.stderr
    r = backend("--trust", pki.trust, "--check", f"{m}#signer=risk-team")
    assert r.returncode == 1 and "no signature" in r.stderr, r.stderr


@pytest.mark.parametrize("args, msg", [
    (["--require-signed"], "--require-signed needs --trust DIR"),
    (["--model", "m=/x#sig=/x.sig"], "#sig= and #signer= need --trust"),
    (["--trust", "/nonexistent"], "--trust /nonexistent: No such file"),
    (["--model", "m=/x#sig=a#sig=b"], "#sig= given twice"),
    (["--model", "m=/x#sig=/s#bogus=1"], "unknown field"),
    (["--model", "m=/x#signer=bad/id"], "#signer= takes one signer id"),
    (["--model", "m=builtin:identity:2#key=/k"],
     "a builtin model has no sha256, sig, key or signer"),
])
def test_bad_trust_flags_refused(tmp_path, args, msg):
    r = subprocess.run([str(BACKEND_BIN), "--socket", tmp_path / "s.sock",
                        "--model", "a=builtin:identity:2", *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and msg in r.stderr, r.stderr


def test_trust_dir_refuses_private_and_weak_keys(tmp_path, pki):
    d = tmp_path / "t2"
    d.mkdir()
    os.link(pki.priv("risk-team"), d / "oops.pem")
    r = backend("--trust", d, "--check", "builtin:identity:2")
    assert r.returncode == 2 and "not a PEM public key" in r.stderr
    (d / "oops.pem").unlink()
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", tmp_path / "weak.pem"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", tmp_path / "weak.pem",
                    "-pubout", "-out", d / "weak.pub.pem"], check=True)
    r = backend("--trust", d, "--check", "builtin:identity:2")
    assert r.returncode == 2 and "2048 bits" in r.stderr, r.stderr


def test_require_signed_at_start(tmp_path, pki, start_backend):
    m = builtin(tmp_path)
    b = start_backend(f"m={m}", args=["--trust", pki.trust,
                                      "--require-signed"], ready=False)
    b.expect_rc = 1
    assert b.proc.wait(30) == 1
    assert "event=model_refused" in b.stderr() and "no signature" \
        in b.stderr()

    tool("sign", "--key", pki.priv("risk-team"), m)
    b = start_backend(f"m={m}", args=["--trust", pki.trust,
                                      "--require-signed"])
    with RingClient(b.sock) as c:
        c.submit(0, 0, 1, [1.0, 2.0, 3.0, 4.0])
        (r,) = c.collect(1)
        assert r["status"] == OK and r["data"] == [1.0, 2.0, 3.0, 4.0]


def reload(b):
    done = len(b.events("reload_done"))
    b.signal(signal.SIGHUP)
    b.wait_event("reload_done", done + 1)


def test_reload_to_a_bad_version_keeps_the_good_one(tmp_path, pki,
                                                     start_backend):
    repo = tmp_path / "repo"
    (repo / "1").mkdir(parents=True)
    good = builtin(repo / "1", "model.builtin")
    # a version directory's signature may be model.sig
    tool("sign", "--key", pki.priv("risk-team"), good, "-o",
         repo / "1" / "model.sig")
    b = start_backend(f"risk={repo}", args=["--trust", pki.trust,
                                            "--require-signed"])

    def infer_ok(c, model_id=0):
        c.submit(0, model_id, 1, [1.0, 2.0, 3.0, 4.0])
        (r,) = c.collect(1)
        return r["status"] == OK and r["data"] == [1.0, 2.0, 3.0, 4.0]

    with RingClient(b.sock) as c:
        assert infer_ok(c)

    # version 1 replaced by a model that fails every batch, not re-signed
    good.write_text("builtin:fail:4\n")
    reload(b)
    refused = b.events("model_refused")
    assert refused and "does not verify" in refused[-1]["err"], b.stderr()
    assert refused[-1]["kept"] == "yes"
    with RingClient(b.sock) as c:
        assert infer_ok(c)             # the old version still answers

    # a new version signed by an untrusted key is not added
    (repo / "2").mkdir()
    bad = builtin(repo / "2", "model.builtin", "builtin:fail:4\n")
    tool("sign", "--key", pki.priv("outsider"), bad)
    # and one with no signature at all
    (repo / "3").mkdir()
    builtin(repo / "3", "model.builtin", "builtin:fail:4\n")
    reload(b)
    errs = [e["err"] for e in b.events("model_refused")]
    assert any("2/model.builtin" in e and "does not verify" in e
               for e in errs), errs
    assert any("3/model.builtin" in e and "no signature" in e
               for e in errs), errs
    with RingClient(b.sock) as c:
        assert [m["version"] for m in c.models["models"]] == ["1"]
        assert infer_ok(c)

    # once signed properly, the new versions load: the refusals above were
    # the signatures', nothing else
    good.write_text("builtin:identity:4\n")
    tool("sign", "--key", pki.priv("ml-team"), bad)
    tool("sign", "--key", pki.priv("risk-team"), repo / "3" /
         "model.builtin")
    reload(b)
    with RingClient(b.sock) as c:
        assert [m["version"] for m in c.models["models"]] == ["1", "2", "3"]
        assert infer_ok(c, 0)
        c.submit(0, 1, 1, [1.0, 2.0, 3.0, 4.0])
        (r,) = c.collect(1)
        assert r["status"] == EMODEL         # version 2 is builtin:fail


# -- encryption at rest ------------------------------------------------------

def encrypt(pki, src, dst, *extra):
    tool("encrypt", "--key", pki.aes, *extra, src, "-o", dst)
    return dst


def test_encrypt_decrypt_round_trip(tmp_path, pki):
    m = builtin(tmp_path)
    e = encrypt(pki, m, tmp_path / "m.enc")
    raw = e.read_bytes()
    assert raw[:8] == b"IGMODENC" and b"identity" not in raw
    assert len(raw) == HDR + len(m.read_bytes()) + 16
    assert raw[64:72] == b"vendor-1"
    # a fresh nonce per file
    assert encrypt(pki, m, tmp_path / "m2.enc").read_bytes()[12:24] \
        != raw[12:24]
    tool("decrypt", "--key", pki.aes, e, "-o", tmp_path / "m.dec")
    assert (tmp_path / "m.dec").read_bytes() == m.read_bytes()
    assert (tmp_path / "m.dec").stat().st_mode & 0o777 == 0o600
    r = tool("encrypt", "--key", pki.aes, e, "-o", tmp_path / "x",
             check=False)
    assert r.returncode == 1 and "already encrypted" in r.stderr
    meta = check_json(backend("--check", f"{e}#key={pki.aes}"))
    assert meta["nfeatures"] == 4 and meta["signer"] == ""
    assert meta["sha256"] == hashlib.sha256(raw).hexdigest()


def test_key_from_the_environment(tmp_path, pki):
    e = encrypt(pki, builtin(tmp_path), tmp_path / "m.enc")
    env = dict(backend_env(), INFERGATE_MODEL_KEYS="vendor-1:" + "11" * 32)
    assert check_json(backend("--check", e, env=env))["nfeatures"] == 4
    env = dict(backend_env())
    env.pop("INFERGATE_MODEL_KEYS", None)
    r = backend("--check", e, env=env)
    assert r.returncode == 1 and "no #key=FILE and no " \
        "$INFERGATE_MODEL_KEYS" in r.stderr, r.stderr


@pytest.mark.parametrize("case, msg", [
    ("wrong key", "wrong key"),
    ("unknown key id", "which the key file does not hold"),
    ("key file mode", "chmod 600"),
    ("truncated body", "truncated"),
    ("truncated header", "truncated"),
    ("trailing bytes", "trailing bytes"),
    ("flip magic", "not an encrypted model"),
    ("flip version", "unsupported version"),
    ("flip nonce", "header modified"),
    ("flip sha256", "header modified"),
    ("flip body", "body or tag modified"),
    ("flip tag", "body or tag modified"),
])
def test_encryption_damage_refused(tmp_path, pki, case, msg):
    e = encrypt(pki, builtin(tmp_path), tmp_path / "m.enc")
    raw = e.read_bytes()
    key = pki.aes
    if case == "wrong key":
        key = write_key(tmp_path / "k2", "vendor-1", "22" * 32)
    elif case == "unknown key id":
        key = write_key(tmp_path / "k2", "vendor-2", "11" * 32)
    elif case == "key file mode":
        key.chmod(0o644)
    elif case == "truncated body":
        e.write_bytes(raw[:-5])
    elif case == "truncated header":
        e.write_bytes(raw[:100])
    elif case == "trailing bytes":
        e.write_bytes(raw + b"\n")
    else:
        flip(e, {"flip magic": 0, "flip version": 8, "flip nonce": 12,
                 "flip sha256": 40, "flip body": HDR + 3,
                 "flip tag": len(raw) - 1}[case])
    r = backend("--check", f"{e}#key={key}")
    assert r.returncode == 1, (case, r.stdout, r.stderr)
    assert r.stdout == "" and msg in r.stderr, r.stderr
    # infergate-models decrypt says the same
    r = tool("decrypt", "--key", key, e, "-o", tmp_path / "out",
             check=False)
    assert r.returncode == 1 and msg in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_key_given_for_a_plaintext_model_is_refused(tmp_path, pki):
    m = builtin(tmp_path)
    r = backend("--check", f"{m}#key={pki.aes}")
    assert r.returncode == 1 and "not an encrypted model" in r.stderr


def xgb_model(tmp_path):
    np = pytest.importorskip("numpy")
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] > 0).astype(np.float32)
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 3,
                     "nthread": 1, "seed": 1}, xgb.DMatrix(x, label=y),
                    num_boost_round=12)
    p = tmp_path / "risk.json"
    bst.save_model(str(p))
    q = rng.normal(size=(6, 5)).astype(np.float32)
    return p, q, bst.predict(xgb.DMatrix(q))


def test_encrypted_signed_model_answers_as_the_plaintext(tmp_path, pki,
                                                         start_backend):
    plain, rows, want = xgb_model(tmp_path)
    enc = encrypt(pki, plain, tmp_path / "risk.json.enc")
    assert b"binary:logistic" not in enc.read_bytes()
    # the signature covers the ciphertext: verifiable without the key
    tool("sign", "--key", pki.priv("risk-team"), enc)
    tool("sign", "--key", pki.priv("ml-team"), plain)
    assert tool("verify", "--trust", pki.trust, enc).stdout \
        == "risk-team\n"
    b = start_backend(f"plain={plain}",
                      f"enc={enc}#signer=risk-team#key={pki.aes}",
                      args=["--trust", pki.trust, "--require-signed"])
    flat = [float(v) for v in rows.reshape(-1)]
    with RingClient(b.sock) as c:
        names = [m["name"] for m in c.models["models"]]
        assert names == ["plain", "enc"]
        c.submit(0, 0, 6, flat)
        c.submit(1, 1, 6, flat)
        out = {r["slot"]: r for r in c.collect(2)}
    assert out[0]["status"] == OK and out[1]["status"] == OK
    assert out[0]["data"] == out[1]["data"]
    assert all(abs(a - b) < 1e-5 for a, b in zip(out[1]["data"], want))

    # encrypted, signed by the wrong team for its #signer=: refused
    tool("sign", "--key", pki.priv("ml-team"), enc)
    b = start_backend(f"enc={enc}#key={pki.aes}#signer=risk-team",
                      args=["--trust", pki.trust], ready=False)
    b.expect_rc = 1
    assert b.proc.wait(30) == 1
    assert "but #signer= requires" in b.stderr()


def test_a_signature_is_never_taken_for_the_model(tmp_path, pki,
                                                  start_backend):
    # "model.sig" sorts before "zz.model": the version's model file is the
    # first regular file by name that is not a signature
    repo = tmp_path / "repo"
    (repo / "1").mkdir(parents=True)
    m = builtin(repo / "1", "zz.model", "builtin:identity:3\n")
    tool("sign", "--key", pki.priv("rsa-team"), m, "-o",
         repo / "1" / "model.sig")
    b = start_backend(f"r={repo}", args=["--trust", pki.trust,
                                         "--require-signed"])
    with RingClient(b.sock) as c:
        (info,) = c.models["models"]
        assert info["nfeatures"] == 3
    assert "zz.model" in b.events("model_loaded")[0]["path"]
