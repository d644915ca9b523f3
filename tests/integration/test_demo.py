"""
`make demo` serves, and every curl it prints behaves as printed: the demo
script's own check mode runs them against the live demo.
"""

import os
import subprocess

from conftest import REPO, free_port


def test_demo_curls_behave_as_printed():
    env = dict(os.environ, DEMO_CHECK="1", PORT=str(free_port()))
    r = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env,
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "FAILED" not in out, out
    assert out.count(" ok") >= 12, out
