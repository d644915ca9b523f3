"""
The example configuration is drop-in: Debian's stock /etc/nginx/nginx.conf
plus a load_module line and an include of conf/infergate.conf passes
`nginx -t`; the same with a broken keys file does not.
"""

import re
import shutil
import subprocess

import pytest

from conftest import MODULE, NGINX_BIN, REPO, make_key, nginx_env


STOCK = "/etc/nginx/nginx.conf"


def _dropin(tmp_path, keys_text):
    if not shutil.os.path.exists(STOCK):
        pytest.skip("no stock /etc/nginx/nginx.conf")

    conf = open(STOCK).read()
    assert "http {" in conf

    shutil.copy(REPO / "conf" / "infergate.conf", tmp_path / "infergate.conf")
    shutil.copytree(REPO / "conf" / "schemas", tmp_path / "schemas")
    (tmp_path / "keys.txt").write_text(keys_text)

    conf = f"load_module {MODULE};\n" + conf
    conf = conf.replace("http {",
                        f"http {{\n\tinclude {tmp_path}/infergate.conf;", 1)
    (tmp_path / "nginx.conf").write_text(conf)

    return subprocess.run([NGINX_BIN, "-t", "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True,
                          env=nginx_env(tmp_path), timeout=30)


def test_stock_nginx_conf_accepts_the_example(tmp_path):
    _, line = make_key("acme", "rate=5r/s")
    r = _dropin(tmp_path, line + "\n")
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr


def test_stock_nginx_conf_rejects_a_bad_keys_line(tmp_path):
    r = _dropin(tmp_path, "not-a-digest acme\n")
    assert r.returncode != 0
    assert re.search(r"keys\.txt:1: ", r.stderr), r.stderr
