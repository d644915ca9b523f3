"""
Fixtures for the Redis layer: a real redis-server on a random port (or a
unix socket with an ACL user), and a small stateful origin whose values
change on writes and whose reads can be made slow.

  redis_server    function: RedisServer (started; stopped at teardown)
  redis_factory   function: make(unix=False, acl_user=None, password=None,
                  tls=None) -- tls: {"cert", "key", "ca", "auth_clients"}:
                  TLS only (port 0, tls-port)
  make_pki(dir)   a CA and certificates made with openssl: Pki
  sentinel_set    function: SentinelSet (a primary, a replica, three
                  redis-sentinel processes watching them as "igm")
  redis_cluster   function: RedisCluster (3 primaries + 3 replicas made
                  with redis-cli --cluster create, node timeout 1 s)
  store_origin    function: StoreOrigin (GET returns the stored value,
                  PUT/POST/DELETE set it; slow(path, seconds))
"""

import http.server
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import free_port


class RedisServer:
    def __init__(self, base, unix=False, acl_user=None, password=None,
                 tls=None, extra=()):
        self.tls = tls
        self.extra = list(extra)
        self.dir = Path(base)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.unix = str(self.dir / "redis.sock") if unix else None
        self.acl_user = acl_user
        self.password = password
        self.proc = None

    @property
    def address(self):
        return f"unix:{self.unix}" if self.unix else f"127.0.0.1:{self.port}"

    def start(self):
        args = ["redis-server", "--port", "0" if self.unix else str(self.port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--daemonize", "no",
                "--loglevel", "warning",
                "--logfile", str(self.dir / "redis.log")]
        if self.unix:
            args += ["--unixsocket", self.unix, "--unixsocketperm", "777"]
        if self.tls:
            args[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", self.tls["cert"],
                     "--tls-key-file", self.tls["key"],
                     "--tls-ca-cert-file", self.tls["ca"],
                     "--tls-auth-clients",
                     self.tls.get("auth_clients", "no")]
        if self.acl_user:
            # the default user is switched off: only the ACL user gets in
            args += ["--user", "default", "off",
                     "--user", self.acl_user, "on", f">{self.password}",
                     "~*", "&*", "+@all"]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                self.client().ping()
                return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start: " +
                           (self.dir / "redis.log").read_text()[-2000:])

    def client(self, db=0):
        kw = {"db": db, "socket_timeout": 5}
        if self.acl_user:
            kw.update(username=self.acl_user, password=self.password)
        if self.unix:
            return redis.Redis(unix_socket_path=self.unix, **kw)
        if self.tls:
            kw.update(ssl=True, ssl_ca_certs=self.tls["ca"],
                      ssl_certfile=self.tls.get("client_cert"),
                      ssl_keyfile=self.tls.get("client_key"))
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def commandstats(self):
        """{command: calls} from INFO commandstats."""
        info = self.client().info("commandstats")
        return {k.replace("cmdstat_", ""): v["calls"] for k, v in info.items()}

    def reset_stats(self):
        self.client().config_resetstat()


@pytest.fixture
def redis_factory(tmp_path):
    servers = []

    def make(unix=False, acl_user=None, password=None, tls=None):
        s = RedisServer(tmp_path / f"redis{len(servers)}", unix, acl_user,
                        password, tls)
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def redis_server(redis_factory):
    return redis_factory()


# --------------------------------------------------------------------------
# sentinel

class SentinelSet:
    MASTER = "igm"

    def __init__(self, base):
        self.base = Path(base)
        self.sentinels = []
        self.primary = self.replica = None
        try:
            self._start()
        except Exception:
            self.stop()
            raise

    def _start(self):
        # a first sync need not wait the diskless delay (5 s)
        fast = ["--repl-diskless-sync-delay", "0"]
        self.primary = RedisServer(self.base / "primary", extra=fast).start()
        self.replica = RedisServer(
            self.base / "replica",
            extra=fast + ["--replicaof", "127.0.0.1",
                          str(self.primary.port)]
        ).start()
        for i in range(3):
            d = self.base / f"sentinel{i}"
            d.mkdir(parents=True, exist_ok=True)
            port = free_port()
            conf = d / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                f"dir {d}\nlogfile {d}/sentinel.log\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 "
                f"{self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 4000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n")
            proc = subprocess.Popen(["redis-sentinel", str(conf)],
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            self.sentinels.append((port, proc))
        self.wait(lambda: all(self._knows_replica(p)
                              for p, _ in self.sentinels), 20,
                  "sentinels did not find the replica")

    @property
    def addresses(self):
        return ",".join(f"127.0.0.1:{p}" for p, _ in self.sentinels)

    def sentinel(self, i=0):
        return redis.Redis(host="127.0.0.1", port=self.sentinels[i][0],
                           socket_timeout=5, decode_responses=True)

    def _knows_replica(self, port):
        try:
            s = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1,
                            decode_responses=True)
            reps = s.execute_command("SENTINEL", "REPLICAS", self.MASTER)
            others = s.execute_command("SENTINEL", "SENTINELS",
                                       self.MASTER)
            ok = any("s_down" not in dict(zip(r[::2], r[1::2]))["flags"]
                     and dict(zip(r[::2], r[1::2])).get(
                         "master-link-status") == "ok" for r in reps)
            return ok and len(others) == 2
        except redis.exceptions.RedisError:
            return False

    def primary_port(self):
        ip, port = self.sentinel().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)
        return int(port)

    def failover(self, timeout=30):
        """SENTINEL FAILOVER; returns once every sentinel names the old
        replica and it says it is a primary."""
        old = self.primary_port()
        new = self.replica if old == self.primary.port else self.primary
        self.sentinel().execute_command("SENTINEL", "FAILOVER", self.MASTER)
        self.wait(lambda: new.client().execute_command("ROLE")[0]
                  in (b"master", "master") and
                  all(int(redis.Redis(host="127.0.0.1", port=p,
                                      decode_responses=True)
                          .execute_command("SENTINEL",
                                           "GET-MASTER-ADDR-BY-NAME",
                                           self.MASTER)[1]) == new.port
                      for p, _ in self.sentinels), timeout,
                  "the failover did not complete")
        gone = self.primary if new is self.replica else self.replica
        self.wait(lambda: gone.client().execute_command("ROLE")[0]
                  in (b"slave", "slave"), timeout,
                  "the old primary was not turned into a replica")
        return new

    @staticmethod
    def wait(cond, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if cond():
                    return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(what)

    def stop(self):
        for _, proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for x in (self.replica, self.primary):
            if x:
                x.stop()


@pytest.fixture
def sentinel_set(tmp_path):
    s = None
    try:
        s = SentinelSet(tmp_path / "sentinel")
        yield s
    finally:
        if s:
            s.stop()


# --------------------------------------------------------------------------
# cluster

def _cluster_port():
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        p = random.randint(20000, 30000)
        try:
            for q in (p, p + 10000):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", q))
                s.close()
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class ClusterNode(RedisServer):
    def __init__(self, base):
        super().__init__(base, extra=[
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(Path(base) / "nodes.conf"),
            "--cluster-node-timeout", "1000",
            "--cluster-replica-validity-factor", "0",
            "--cluster-require-full-coverage", "no",
            # a replica shows in CLUSTER SLOTS once its offset moved: the
            # primary's pings (10 s by default) move it; the first sync
            # need not wait the diskless delay (5 s)
            "--repl-ping-replica-period", "1",
            "--repl-diskless-sync-delay", "0"])
        self.port = _cluster_port()

    def node_id(self):
        return self.client().execute_command("CLUSTER MYID").decode()

    def is_primary(self):
        return self.client().execute_command("ROLE")[0] in (b"master",
                                                             "master")


class RedisCluster:
    def __init__(self, base, n=6):
        self.base = Path(base)
        self.nodes = []
        try:
            for i in range(n):
                self.nodes.append(ClusterNode(self.base / f"node{i}")
                                  .start())
            subprocess.run(["redis-cli", "--cluster", "create",
                            *[f"127.0.0.1:{x.port}" for x in self.nodes],
                            "--cluster-replicas", "1", "--cluster-yes"],
                           check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=60)
            self.wait_ok(replicas=True)
        except Exception:
            self.stop()
            raise

    @property
    def seeds(self):
        return ",".join(f"127.0.0.1:{x.port}" for x in self.nodes[:3])

    def live(self):
        return [x for x in self.nodes if x.proc and x.proc.poll() is None]

    def primaries(self):
        return [x for x in self.live() if x.is_primary()]

    def wait_ok(self, timeout=30, replicas=False):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if all(x.client().cluster("info")["cluster_state"] == "ok"
                       for x in self.live()):
                    slots = self.live()[0].client().execute_command(
                        "CLUSTER SLOTS")
                    if sum(e[1] - e[0] + 1 for e in slots) == 16384 and \
                            (not replicas or all(len(e) >= 4 for e in slots)):
                        return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the cluster is not ok")

    def slots_of(self, node):
        """How many slots node serves, by its own CLUSTER SLOTS."""
        return sum(e[1] - e[0] + 1 for e in
                   node.client().execute_command("CLUSTER SLOTS")
                   if int(e[2][1]) == node.port)

    def keys(self, pattern):
        """{port: [keys]} over the primaries."""
        return {x.port: x.client().keys(pattern) for x in self.primaries()}

    def commandstats(self):
        total = {}
        for x in self.primaries():
            for k, v in x.commandstats().items():
                total[k] = total.get(k, 0) + v
        return total

    def stop(self):
        for x in self.nodes:
            x.stop()


@pytest.fixture
def redis_cluster(tmp_path):
    c = None
    try:
        c = RedisCluster(tmp_path / "cluster")
        yield c
    finally:
        if c:
            c.stop()


# --------------------------------------------------------------------------
# certificates

class Pki:
    """ca, other_ca (an unrelated CA), server (SAN DNS:redis.test and
    IP:127.0.0.1) and client certificates, each a (cert, key) of paths."""

    def __init__(self, base):
        self.dir = Path(base)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self._ca("ca", "infergate test CA")
        self.other_ca = self._ca("other-ca", "some other CA")
        self.server = self._leaf("server", "redis.test", self.ca,
                                 "subjectAltName=DNS:redis.test,"
                                 "IP:127.0.0.1\nextendedKeyUsage="
                                 "serverAuth")
        self.client = self._leaf("client", "infergate gateway", self.ca,
                                 "extendedKeyUsage=clientAuth")

    def _run(self, *args):
        subprocess.run(["openssl", *args], check=True, cwd=self.dir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _ca(self, name, cn):
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                  "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                  "-out", f"{name}.pem")
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}.key")

    def _leaf(self, name, cn, ca, ext):
        (self.dir / f"{name}.ext").write_text(ext + "\n")
        self._run("req", "-new", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}",
                  "-keyout", f"{name}.key", "-out", f"{name}.csr")
        self._run("x509", "-req", "-in", f"{name}.csr", "-CA", ca[0],
                  "-CAkey", ca[1], "-CAcreateserial", "-days", "2",
                  "-extfile", f"{name}.ext", "-out", f"{name}.pem")
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}.key")


def make_pki(base):
    return Pki(base)


# --------------------------------------------------------------------------
# a stateful origin

class _StoreHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status, payload, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def do_GET(self):
        o = self.server.owner
        path = self.path.split("?")[0]
        with o.lock:
            o.hits.append((self.command, self.path, time.time()))
            value = o.values.get(path, "initial")
            delay = o.delays.get(path, 0)
            status = o.statuses.get(path, 200)
            extra = o.headers.get(path, ())
        # the value is read before the delay: a slow read returns what
        # was current when it started
        if delay:
            time.sleep(delay)
        payload = json.dumps({"path": path, "value": value,
                              "query": self.path}).encode()
        self._reply(status, payload, extra)

    do_HEAD = do_GET

    def _write(self):
        o = self.server.owner
        body = self._body()
        path = self.path.split("?")[0]
        with o.lock:
            o.hits.append((self.command, self.path, time.time()))
            if self.command == "DELETE":
                o.values.pop(path, None)
            else:
                o.values[path] = body.decode() or "empty"
        self._reply(200, b'{"written":true}')

    def do_POST(self):
        o = self.server.owner
        if o.post_echo:
            body = self._body()
            with o.lock:
                o.hits.append((self.command, self.path, time.time()))
            self._reply(200, json.dumps({"echo": body.decode()}).encode())
            return
        self._write()

    do_PUT = do_PATCH = do_DELETE = _write

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


class StoreOrigin:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}
        self.delays = {}
        self.statuses = {}
        self.headers = {}
        self.hits = []
        self.post_echo = False
        self.server = _Server(("127.0.0.1", 0), _StoreHandler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    @property
    def proxy(self):
        return (f"proxy_pass http://127.0.0.1:{self.port}; "
                f"proxy_http_version 1.1; proxy_set_header Connection \"\";")

    def count(self, method=None, path=None):
        with self.lock:
            return sum(1 for m, p, _ in self.hits
                       if (method is None or m == method)
                       and (path is None or p == path))

    def slow(self, path, seconds):
        with self.lock:
            self.delays[path] = seconds

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store_origin():
    o = StoreOrigin()
    yield o
    o.close()
