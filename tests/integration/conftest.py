"""
Integration harness for infergate: a real nginx (/usr/sbin/nginx) loading
build/ngx_http_infergate_module.so, one prefix directory per instance,
random ports on 127.0.0.1, and a recording Python origin.

Fixtures
  origin          session: threaded HTTP/1.1 origin recording every request
  start_nginx     function: start(http="", server="", workers=2, files={},
                  main="", listen="") -> Nginx (stopped and checked at
                  teardown)
  module_nginx    module-scoped variant of start_nginx (shared instances)
  nginx_t         function: nginx_t(http="", files={}, server="", main="")
                  -> (returncode, output) of `nginx -t`
  keygen          mint (key, line) pairs in Python (sha256 of the key)

In configuration snippets, @PORT@ is the instance's port, @PREFIX@ its
prefix directory, @ORIGIN@ "127.0.0.1:<origin port>" and @PROXY@ the
proxy_pass lines towards the origin.

IG_SANITIZE=1: nginx runs with the ASan runtime preloaded, sanitizer
reports go to <prefix>/asan.* and <prefix>/ubsan.*; any such file fails
the test.
"""

import ctypes
import hashlib
import http.server
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("IG_BUILD") or REPO / "build")
MODULE = BUILD / "ngx_http_infergate_module.so"
KEYS_TOOL = BUILD / "infergate-keys"
NGINX_BIN = "/usr/sbin/nginx"
SANITIZE = os.environ.get("IG_SANITIZE") == "1"
SCORE_SCHEMA = REPO / "conf" / "schemas" / "score.json"

PROBLEM_BASE = "https://infergate.dev/problems#"
QUOTA_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"

# error.log lines that fail a test whatever it asserted
BAD_LOG = re.compile(r"\[alert\]|\[emerg\]|exited on signal|Sanitizer|"
                     r"runtime error:|\bcore dumped\b")


# The daemonised nginx master becomes our child when we are a subreaper,
# so that its exit can be collected (and zombies don't pile up).
try:
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
except Exception:  # pragma: no cover
    pass


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "chaos: the chaos suite (make chaos), left out of "
        "make integration")


# --------------------------------------------------------------------------
# small helpers (importable: `from conftest import ...`)

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_key(tenant, opts=""):
    """A fresh API key and its keys-file line."""
    key = "igk_" + secrets.token_hex(16)
    digest = hashlib.sha256(key.encode()).hexdigest()
    line = f"{digest} {tenant}" + (f" {opts}" if opts else "")
    return key, line


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


JSON_CT = {"Content-Type": "application/json"}


def assert_problem(resp, status, type_=None):
    """Checks an RFC 9457 problem response and returns its parsed body."""
    assert resp.status_code == status, (
        f"expected HTTP {status}, got {resp.status_code}: "
        f"{resp.headers.get('Content-Type')} {resp.content[:600]!r}")
    ct = resp.headers.get("Content-Type", "")
    assert ct.split(";")[0].strip().lower() == "application/problem+json", (
        f"HTTP {status}: expected Content-Type application/problem+json, "
        f"got {ct!r}")
    try:
        body = json.loads(resp.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise AssertionError(f"problem body is not UTF-8 JSON ({e}): "
                             f"{resp.content[:600]!r}")
    assert isinstance(body, dict), body
    for member in ("type", "title", "status", "detail"):
        assert member in body, f"problem lacks {member!r}: {body}"
    assert body["status"] == status, f"problem status {body['status']!r}"
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert isinstance(body["type"], str), body
    if type_ is not None:
        assert body["type"] == type_, (
            f"expected problem type {type_!r}, got {body['type']!r}")
    elif status != 429:
        assert body["type"].startswith(PROBLEM_BASE), (
            f"problem type {body['type']!r} does not start with "
            f"{PROBLEM_BASE!r}")
    return body


_SF_ITEM = re.compile(r'\s*"((?:[^"\\]|\\.)*)"((?:\s*;\s*[A-Za-z*][\w.*-]*'
                      r'(?:=[^;,]*)?)*)\s*(?:,|$)')


def parse_sf_list(value):
    """Parses RateLimit / RateLimit-Policy (a structured-field list of
    quoted names with parameters) into {name: {param: int-or-str}}.
    Raises AssertionError when the value does not parse."""
    out = {}
    pos = 0
    value = value.strip()
    while pos < len(value):
        m = _SF_ITEM.match(value, pos)
        assert m and m.end() > pos, f"unparseable structured field {value!r}"
        params = {}
        for p in m.group(2).split(";")[1:]:
            k, _, v = p.strip().partition("=")
            v = v.strip()
            params[k] = int(v) if re.fullmatch(r"-?\d+", v) else v
        out[m.group(1)] = params
        pos = m.end()
    return out


def ratelimit(resp):
    """({zone: {q, w}}, {zone: {r, t}}) from the draft headers, asserting
    both are present and well-formed."""
    pol = resp.headers.get("RateLimit-Policy")
    cur = resp.headers.get("RateLimit")
    assert pol is not None, f"no RateLimit-Policy on {resp.status_code}: " \
                            f"{dict(resp.headers)}"
    assert cur is not None, f"no RateLimit on {resp.status_code}: " \
                            f"{dict(resp.headers)}"
    p, c = parse_sf_list(pol), parse_sf_list(cur)
    for zone, params in p.items():
        assert isinstance(params.get("q"), int) and params["q"] > 0, pol
        assert isinstance(params.get("w"), int) and params["w"] > 0, pol
    for zone, params in c.items():
        assert isinstance(params.get("r"), int) and params["r"] >= 0, cur
        assert isinstance(params.get("t"), int) and params["t"] >= 0, cur
    return p, c


def _proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1])          # state, ppid


def _gone(pid):
    try:
        r, _ = os.waitpid(pid, os.WNOHANG)
        if r == pid:
            return True
    except ChildProcessError:
        pass
    st = _proc_state(pid)
    return st is None or st[0] in ("Z", "X")


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_state(int(d))
            if st and st[1] == pid and st[0] not in ("Z", "X"):
                out.append(int(d))
    return out


_ASAN_LIB = None


def nginx_env(prefix):
    global _ASAN_LIB
    env = dict(os.environ)
    if SANITIZE:
        if _ASAN_LIB is None:
            lib = subprocess.run(["gcc", "-print-file-name=libasan.so"],
                                 capture_output=True, text=True).stdout
            _ASAN_LIB = os.path.realpath(lib.strip())
        env["LD_PRELOAD"] = _ASAN_LIB
        env["ASAN_OPTIONS"] = (f"log_path={prefix}/asan:detect_leaks=0:"
                               f"abort_on_error=1")
        env["UBSAN_OPTIONS"] = (f"print_stacktrace=1:log_path={prefix}/ubsan:"
                                f"halt_on_error=1")
    return env


def sanitizer_reports(prefix):
    out = []
    for f in sorted(Path(prefix).glob("asan.*")) + \
            sorted(Path(prefix).glob("ubsan.*")):
        out.append(f"==== {f}\n" + f.read_text(errors="replace"))
    return out


MAIN_TEMPLATE = """\
@USER@
worker_processes @WORKERS@;
master_process on;
daemon on;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log info;
worker_shutdown_timeout 10s;
load_module @MODULE@;
@MAIN@

events {
    worker_connections 1024;
}

http {
    log_format ig '$pid $status "$request" $request_length $request_time';
    access_log @PREFIX@/access.log ig;
    client_body_temp_path @PREFIX@/client_body_temp;
    proxy_temp_path @PREFIX@/proxy_temp;
    fastcgi_temp_path @PREFIX@/fastcgi_temp;
    uwsgi_temp_path @PREFIX@/uwsgi_temp;
    scgi_temp_path @PREFIX@/scgi_temp;
    default_type application/octet-stream;
    keepalive_requests 100000;

@HTTP@

    server {
        listen 127.0.0.1:@PORT@@LISTEN@;

@SERVER@
    }
}
"""


def _subst(text, subs):
    for k, v in subs.items():
        text = text.replace(f"@{k}@", str(v))
    return text


def render_conf(prefix, port, http="", server="", workers=2, main="",
                listen="", origin_port=None):
    subs = {
        "PREFIX": prefix,
        "PORT": port,
        "ORIGIN": f"127.0.0.1:{origin_port}" if origin_port else "",
        "PROXY": proxy_lines(origin_port) if origin_port else "",
    }
    user = "user root;" if os.geteuid() == 0 else ""
    conf = MAIN_TEMPLATE
    # the snippets first, so that their @...@ are expanded below too
    for k, v in (("HTTP", http), ("SERVER", server), ("MAIN", main)):
        conf = conf.replace(f"@{k}@", v)
    conf = conf.replace("@USER@", user).replace("@WORKERS@", str(workers)) \
               .replace("@MODULE@", str(MODULE)) \
               .replace("@LISTEN@", (" " + listen) if listen else "")
    return _subst(conf, subs)


def proxy_lines(origin_port):
    return (f"proxy_pass http://127.0.0.1:{origin_port}; "
            f"proxy_http_version 1.1; proxy_set_header Connection \"\";")


def write_files(prefix, files, subs):
    for rel, text in (files or {}).items():
        p = Path(prefix) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(_subst(text, subs))


def _require_module():
    if not MODULE.exists():
        pytest.fail(f"{MODULE} is missing: run `make build` first")


# --------------------------------------------------------------------------
# nginx instances

class NginxError(Exception):
    pass


class Nginx:
    def __init__(self, prefix, port, workers, origin_port):
        self.prefix = Path(prefix)
        self.port = port
        self.workers = workers
        self.origin_port = origin_port
        self.env = nginx_env(self.prefix)
        self.master = None
        self.stopped = False
        self.problems = []
        self.allowed_log = []      # regexes of error.log lines a test expects

    # -- paths and helpers
    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def error_log(self):
        try:
            return (self.prefix / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def access_log(self):
        try:
            return (self.prefix / "access.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def write(self, rel, text):
        write_files(self.prefix, {rel: text}, {"PREFIX": self.prefix})

    def _cmd(self, *extra):
        return [NGINX_BIN, "-p", f"{self.prefix}/", "-c", "nginx.conf",
                "-e", f"{self.prefix}/error.log", *extra]

    def worker_pids(self):
        return children(self.master) if self.master else []

    # -- life cycle
    def _start(self):
        r = subprocess.run(self._cmd(), env=self.env, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise NginxError(f"nginx failed to start (rc={r.returncode}):\n"
                             f"{r.stdout}{r.stderr}\n--- error.log:\n"
                             f"{self.error_log[-4000:]}")
        pidfile = self.prefix / "nginx.pid"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                self.master = int(pidfile.read_text().strip())
                break
            except (FileNotFoundError, ValueError):
                time.sleep(0.02)
        else:
            raise NginxError("nginx wrote no pid file:\n" + self.error_log)
        # the port accepts once the master listens; wait for the workers too
        while time.time() < deadline:
            if len(self.worker_pids()) >= self.workers:
                try:
                    socket.create_connection(("127.0.0.1", self.port),
                                             timeout=1).close()
                    return
                except OSError:
                    pass
            if _gone(self.master):
                break
            time.sleep(0.02)
        raise NginxError("nginx did not come up:\n" + self.error_log[-4000:])

    def reload(self, timeout=20):
        """nginx -s reload, then wait until new workers run and the old
        ones have left (so that every later request sees the new config)."""
        old = set(self.worker_pids())
        r = subprocess.run(self._cmd("-s", "reload"), env=self.env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise NginxError(f"nginx -s reload failed: {r.stdout}{r.stderr}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            cur = set(self.worker_pids())
            if len(cur - old) >= self.workers and not (cur & old):
                return
            if _gone(self.master):
                raise NginxError("nginx master died during reload:\n"
                                 + self.error_log[-4000:])
            time.sleep(0.02)
        raise NginxError("reload did not complete (new workers "
                         f"{sorted(set(self.worker_pids()) - old)}, old "
                         f"{sorted(old & set(self.worker_pids()))}):\n"
                         + self.error_log[-4000:])

    def reload_expect_failure(self, timeout=20):
        """A reload the master must refuse: sends SIGHUP, waits for the
        [emerg], checks that the old workers still run, and allows that
        [emerg] line at teardown.  Returns the new log text."""
        old = set(self.worker_pids())
        offset = len(self.error_log)
        # `nginx -s reload` would parse the bad config itself and refuse to
        # signal; the master is the one that must refuse it
        os.kill(self.master, signal.SIGHUP)
        deadline = time.time() + timeout
        while time.time() < deadline:
            new = self.error_log[offset:]
            if "[emerg]" in new:
                break
            time.sleep(0.02)
        else:
            raise NginxError("reload was not refused:\n"
                             + self.error_log[offset:])
        for ln in new.splitlines():
            if "[emerg]" in ln:
                self.allowed_log.append(re.escape(ln))
        time.sleep(0.2)
        assert set(self.worker_pids()) == old, "workers changed"
        return new

    def alive(self):
        return self.master is not None and not _gone(self.master)

    def stop(self):
        if self.stopped or self.master is None:
            self.stopped = True
            return
        self.stopped = True
        try:
            os.kill(self.master, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        deadline = time.time() + 20
        while time.time() < deadline:
            if _gone(self.master):
                return
            time.sleep(0.02)
        self.problems.append("nginx did not quit within 20 s (killed)")
        for pid in self.worker_pids() + [self.master]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def check(self):
        """Problems found in error.log and sanitizer logs."""
        out = list(self.problems)
        bad = [ln for ln in self.error_log.splitlines()
               if BAD_LOG.search(ln) and
               not any(re.fullmatch(a, ln) for a in self.allowed_log)]
        if bad:
            out.append(f"{self.prefix}/error.log has:\n  " +
                       "\n  ".join(bad[:40]))
        out += sanitizer_reports(self.prefix)
        return out


class NginxFactory:
    def __init__(self, base, origin):
        self.base = Path(base)
        self.origin = origin
        self.instances = []

    def __call__(self, http="", server="", workers=2, files=None, main="",
                 listen=""):
        _require_module()
        n = len(self.instances)
        prefix = self.base / (f"nginx{n}" if n else "nginx")
        prefix.mkdir(parents=True, exist_ok=True)
        os.chmod(prefix, 0o755)
        oport = self.origin.port if self.origin else None
        last = None
        for _ in range(5):
            port = free_port()
            subs = {"PREFIX": prefix, "PORT": port,
                    "ORIGIN": f"127.0.0.1:{oport}" if oport else "",
                    "PROXY": proxy_lines(oport) if oport else ""}
            write_files(prefix, files, subs)
            (prefix / "nginx.conf").write_text(render_conf(
                prefix, port, http, server, workers, main, listen, oport))
            ngx = Nginx(prefix, port, workers, oport)
            try:
                ngx._start()
            except NginxError as e:
                last = e
                if "Address already in use" in str(e):
                    continue
                raise
            self.instances.append(ngx)
            return ngx
        raise last

    def finalize(self):
        problems = []
        for ngx in self.instances:
            ngx.stop()
            problems += ngx.check()
        return problems


# --------------------------------------------------------------------------
# the recording origin

class _OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self):
        body = self._read_body()
        self.server.owner._record({
            "method": self.command,
            "path": self.path,
            "headers": self.headers,
            "body": body,
            "time": time.time(),
        })
        payload = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, *args):
        pass


class _OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class Origin:
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.server = _OriginServer(("127.0.0.1", 0), _OriginHandler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.proxy = proxy_lines(self.port)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def _record(self, req):
        with self.lock:
            self.requests.append(req)

    def clear(self):
        with self.lock:
            self.requests.clear()

    def find(self, path=None, header=None):
        """Requests whose path equals `path` and/or that carry header
        (name, value)."""
        with self.lock:
            reqs = list(self.requests)
        out = []
        for r in reqs:
            if path is not None and r["path"] != path:
                continue
            if header is not None and r["headers"].get(header[0]) != header[1]:
                continue
            out.append(r)
        return out

    def last(self, path=None):
        found = self.find(path)
        assert found, f"origin received no request for {path!r}"
        return found[-1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="session")
def origin():
    o = Origin()
    yield o
    o.close()


@pytest.fixture
def start_nginx(tmp_path, origin):
    factory = NginxFactory(tmp_path, origin)
    origin.clear()
    yield factory
    problems = factory.finalize()
    if problems:
        pytest.fail("nginx reported problems:\n" + "\n".join(problems),
                    pytrace=False)


@pytest.fixture(scope="module")
def module_nginx(tmp_path_factory, origin):
    factory = NginxFactory(tmp_path_factory.mktemp("mod"), origin)
    yield factory
    problems = factory.finalize()
    if problems:
        pytest.fail("nginx reported problems:\n" + "\n".join(problems),
                    pytrace=False)


def run_nginx_t(prefix, http="", files=None, server="", main=""):
    """(returncode, output) of `nginx -t` on a config built like
    start_nginx's.  Sanitizer reports raise AssertionError."""
    _require_module()
    prefix = Path(prefix)
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    write_files(prefix, files, {"PREFIX": prefix, "PORT": port})
    (prefix / "nginx.conf").write_text(
        render_conf(prefix, port, http, server, 1, main))
    r = subprocess.run([NGINX_BIN, "-t", "-p", f"{prefix}/", "-c",
                        "nginx.conf", "-e", f"{prefix}/error.log"],
                       env=nginx_env(prefix), capture_output=True,
                       text=True, timeout=60)
    out = r.stdout + r.stderr
    reports = sanitizer_reports(prefix)
    assert not reports, "sanitizer reports from nginx -t:\n" + \
        "\n".join(reports)
    assert "exited on signal" not in out and r.returncode >= 0, \
        f"nginx -t crashed (rc={r.returncode}):\n{out}"
    return r.returncode, out


@pytest.fixture
def nginx_t(tmp_path):
    counter = [0]

    def run(http="", files=None, server="", main=""):
        counter[0] += 1
        return run_nginx_t(tmp_path / f"t{counter[0]}", http, files, server,
                           main)
    return run


@pytest.fixture
def keygen():
    return make_key
