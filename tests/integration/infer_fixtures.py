"""
Fixtures for the inference tests: a real build/infergate-backend process
on a unix socket, and helpers to wait until nginx workers have connected.

  backend_proc  function: start(*models, extra=()) -> Backend (killed at
                teardown).  models are "NAME[:VER]=SPEC" strings, e.g.
                "id=builtin:identity:3".
  infer_http    the http-block lines for `infergate_backend be ...`.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BUILD

BACKEND_BIN = BUILD / "infergate-backend"


class Backend:
    def __init__(self, sockdir, models, extra=()):
        self.dir = Path(sockdir)
        self.sock = self.dir / "be.sock"
        self.models = list(models)
        self.extra = list(extra)
        self.proc = None
        self.logs = []

    @property
    def log(self):
        out = ""
        for p in self.logs:
            try:
                out += p.read_text(errors="replace")
            except FileNotFoundError:
                pass
        return out

    def start(self, timeout=20):
        if not BACKEND_BIN.exists():
            pytest.fail(f"{BACKEND_BIN} is missing: run `make build` first")
        logf = self.dir / f"backend{len(self.logs)}.log"
        self.logs.append(logf)
        args = [str(BACKEND_BIN), "--socket", str(self.sock)]
        for m in self.models:
            args += ["--model", m]
        args += self.extra
        with open(logf, "wb") as f:
            self.proc = subprocess.Popen(args, stdout=f, stderr=f)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"backend exited: {self.log[-3000:]}")
            if "event=ready" in logf.read_text(errors="replace"):
                return self
            time.sleep(0.02)
        raise AssertionError("backend did not become ready:\n" + self.log)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def backend_proc():
    made = []

    def start(*models, extra=(), start=True):
        d = tempfile.mkdtemp(prefix="igbe")
        os.chmod(d, 0o755)
        be = Backend(d, models, extra)
        made.append(be)
        if start:
            be.start()
        return be

    yield start
    bad = []
    for be in made:
        be.stop()
        for ln in be.log.splitlines():
            if "Sanitizer" in ln or "runtime error:" in ln:
                bad.append(ln)
        shutil.rmtree(be.dir, ignore_errors=True)
    if bad:
        pytest.fail("backend sanitizer reports:\n" + "\n".join(bad[:20]),
                    pytrace=False)


def infer_http(be, opts=""):
    return f"infergate_backend be unix:{be.sock} {opts};"


def wait_connected(ngx, n, since=0, timeout=20):
    """Waits until n 'connected to pid' lines appear in error.log after
    offset since (one per worker connection)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = ngx.error_log[since:]
        if log.count("models on") >= n:
            return
        time.sleep(0.02)
    raise AssertionError("workers did not connect to the backend:\n"
                         + ngx.error_log[-3000:])
