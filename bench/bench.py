#!/usr/bin/python3
"""
infergate benchmark (make bench): infergate against what users would
otherwise run, measured in one run on this machine.

Gateways, each one nginx worker pinned to one CPU (wrk, the origin, Redis
and the backend share the other):
  plain   stock nginx proxying to the origin (or returning the same body)
  lua     the same admission and cache chain in OpenResty Lua
          (bench/lua/gateway.lua: key lookup, GCRA in a shared
          dict, JSON validation of score.json, Redis cache)
  ig      infergate (auth, limit, schema; cache; Bloom; inference)

Scenarios (wrk, keep-alive, the same ~300-byte JSON POST):
  admission       plain proxy | lua admission | ig admission | ig+audit
  cache-hit       plain proxy | lua cache hit | ig cache hit
  redis           ig cache hit: one node in cleartext | one node over TLS
                  (verified, mTLS) | a 6-node Redis Cluster (SKIP=redis)
  bloom-reject    ig refusing unknown ids (no Redis, no origin)
  infer           plain `return 200` of the same body | ig → backend
  batching        ig → backend at concurrency 1, 2, 4, 16, 64: batching
                  off (max-batch 1), the window scheduler (--batching
                  window, Triton's max_queue_delay) and the continuous one
                  (the default: a request at idle runs at once); a curve
                  plot to build/bench/batching.png
  oip             the same gateway and model, 1 and 64 rows a request,
                  over OIP JSON and over Triton's binary tensor extension
                  (as tritonclient.http sends it); gRPC rows go beside them
  killed          ig → backend behind a breaker with a warm cache, the
                  backend up and then killed (kill -9): share of requests
                  answered 2xx and p99; half the bodies are cached

For each: req/s, p50, p99 (medians of RUNS interleaved runs), the worker's
CPU per request (from /proc), and the CPU the gateway adds over plain
nginx, 1/gateway - 1/plain in µs (the issue's formula).  Then the
backend's own benches (libxgboost vs ours, ring round trip, Bloom lookup,
ONNX vs torch) when their tools are built.  Results go to
build/bench/results.json and a plot to build/bench/bench.png.

Env: RUNS (3), SECONDS (5), CONNS (32), SKIP (comma list of scenario
names to skip: admission, cache, bloom, infer, oip, tools), ONLY=oip (the
OIP encodings table alone), ONLY=batching (the batching table alone),
BATCH_CONCURRENCY (1,2,4,16,64), NGINX_CPU / LOAD_CPU / BACKEND_CPU (the
inference backend's; LOAD_CPU by default).
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("IG_BUILD") or ROOT / "build")
OUT = BUILD / "bench"
NGINX = "/usr/sbin/nginx"
MODULE = BUILD / "ngx_http_infergate_module.so"
LUA_MODULES = ["/usr/lib/nginx/modules/ndk_http_module.so",
               "/usr/lib/nginx/modules/ngx_http_lua_module.so"]

RUNS = int(os.environ.get("RUNS", "3"))
SECONDS = int(os.environ.get("SECONDS", "5"))
CONNS = int(os.environ.get("CONNS", "32"))
SKIP = set(filter(None, os.environ.get("SKIP", "").split(",")))
# ONLY=oip: just the OIP encodings table (the set-up it needs, no other)
ONLY = set(filter(None, os.environ.get("ONLY", "").split(",")))
if "oip" in ONLY:
    SKIP |= {"admission", "cache", "bloom", "tools"}
# ONLY=batching: just the batching curve (the inference set-up it needs)
if "batching" in ONLY:
    SKIP |= {"admission", "cache", "redis", "bloom", "killed", "grpc", "oip",
             "tools"}
BATCH_CONCURRENCY = tuple(int(c) for c in os.environ.get(
    "BATCH_CONCURRENCY", "1,2,4,16,64").split(","))

BODY = ('{"user_id":"u1234567","amount":125.5,"currency":"EUR",'
        '"login_time":"2024-03-25T09:30:00Z","login_hour":9,'
        '"account_age_days":420,'
        '"device_id":"2eb8aa08-aa98-11ea-b4aa-73b441d16380",'
        '"tags":["web","mobile","returning","eu-west","card-present",'
        '"loyalty-gold","low-risk"]}')
ANSWER = '{"score": 0.12, "model": "credit-risk"}\n'

procs = []
ORIGIN_PORT = [0]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpus():
    c = sorted(os.sched_getaffinity(0))
    if len(c) < 2:
        sys.exit("bench: needs 2 CPUs")
    return (int(os.environ.get("NGINX_CPU", c[-1])),
            int(os.environ.get("LOAD_CPU", c[-2])))


NGINX_CPU, LOAD_CPU = cpus()
# the inference backend of the infer/batching/oip tables: with the load by
# default (2 CPUs); on a larger machine its own CPU, so that req/s is the
# gateway's (or the backend's) and not the three sharing one CPU
BACKEND_CPU = int(os.environ.get("BACKEND_CPU", LOAD_CPU))


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Nginx:
    def __init__(self, name, http, modules=(), cpu=None, workers=1):
        self.prefix = OUT / name
        shutil.rmtree(self.prefix, ignore_errors=True)
        self.prefix.mkdir(parents=True)
        user = "user root;" if os.getuid() == 0 else ""
        aff = ""
        if cpu is not None:
            aff = f"worker_cpu_affinity {1 << cpu:b};"
        loads = "".join(f"load_module {m};\n" for m in modules)
        p = self.prefix
        (p / "nginx.conf").write_text(f"""{user}
{loads}
worker_processes {workers};
{aff}
daemon on;
master_process on;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {p}/cbt;
    proxy_temp_path {p}/pt;
    fastcgi_temp_path {p}/ft;
    uwsgi_temp_path {p}/ut;
    scgi_temp_path {p}/st;
    keepalive_requests 1000000;
    {http}
}}
""")
        subprocess.run([NGINX, "-p", f"{p}/", "-c", "nginx.conf",
                        "-e", f"{p}/error.log"], check=True)
        self.master = int((p / "nginx.pid").read_text())
        deadline = time.time() + 10
        while not children(self.master) and time.time() < deadline:
            time.sleep(0.05)
        self.worker = children(self.master)[0]
        procs.append(self)

    def stop(self):
        try:
            os.kill(self.master, signal.SIGQUIT)
        except ProcessLookupError:
            pass


class Proc:
    def __init__(self, argv, cpu=None, **kw):
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        self.p = subprocess.Popen(argv, **kw)
        procs.append(self)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def wrk_script(name, method="POST", body=BODY, headers=None):
    headers = headers or {}
    lines = [f'wrk.method = "{method}"',
             f"wrk.body = [[{body}]]" if body else ""]
    for k, v in headers.items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    path = OUT / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk_script_file(name, body, headers=None):
    """A wrk script whose body is read from a file: binary bodies can hold
    any byte, which a Lua long string cannot."""
    headers = headers or {}
    data = OUT / f"{name}.body"
    data.write_bytes(body)
    lines = ['wrk.method = "POST"',
             f'local f = assert(io.open("{data}", "rb"))',
             'wrk.body = f:read("*a")', "f:close()"]
    for k, v in headers.items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    path = OUT / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(url, script, conns, secs):
    if isinstance(script, H2Load):
        return h2load(url, script, conns, secs)
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{conns}",
         f"-d{secs}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True).stdout

    def lat(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        v = float(m.group(1))
        return v * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)
                         .group(1)),
            "p50_us": lat("50"), "p99_us": lat("99"), "requests": reqs,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


class H2Load:
    """A gRPC case for wrk()'s place: h2load (Debian's nghttp2-client)
    posting one pre-encoded, length-prefixed message (body file) over h2c,
    all streams on one connection as a gRPC channel multiplexes them."""

    def __init__(self, body, headers):
        self.body = body
        self.headers = headers


def h2load(url, spec, conns, secs):
    log_file = OUT / "h2load.log"
    argv = ["taskset", "-c", str(LOAD_CPU), "h2load", "-t1", "-c1",
            f"-m{conns}", f"-D{secs}", "-d", str(spec.body),
            f"--log-file={log_file}"]
    for k, v in spec.headers.items():
        argv += ["-H", f"{k}: {v}"]
    out = subprocess.run(argv + [url], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, "
                  r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    done = int(m.group(1))
    st = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, "
                   r"(\d+) 5xx", out)
    lat = []
    with open(log_file) as f:
        for ln in f:
            parts = ln.split()
            if len(parts) >= 3:
                lat.append(float(parts[2]))
    lat.sort()

    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

    return {"rps": done / secs, "p50_us": q(0.5), "p99_us": q(0.99),
            "requests": done,
            "non2xx": sum(int(x) for x in st.groups()) + int(m.group(4))}


def measure(worker, url, script, conns=CONNS, secs=SECONDS):
    c0 = cpu_seconds(worker)
    r = wrk(url, script, conns, secs)
    r["cpu_us"] = (cpu_seconds(worker) - c0) * 1e6 / max(r["requests"], 1)
    return r


def median_runs(cases):
    """cases: name -> (worker, url, script, conns).  RUNS interleaved runs
    (order rotated), a short warm-up first; medians per case."""
    names = list(cases)
    for n in names:
        w, url, script, conns = cases[n]
        wrk(url, script, conns, 1)
    res = {n: [] for n in names}
    for i in range(RUNS):
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            w, url, script, conns = cases[n]
            res[n].append(measure(w, url, script, conns))
    out = {}
    for n, runs in res.items():
        m = {}
        for k in ("rps", "p50_us", "p99_us", "cpu_us"):
            vals = [r[k] for r in runs if r[k] is not None]
            m[k] = statistics.median(vals) if vals else None
        m["rps_min"] = min(r["rps"] for r in runs)
        m["rps_max"] = max(r["rps"] for r in runs)
        m["non2xx"] = sum(r["non2xx"] for r in runs)
        out[n] = m
    return out


def keys():
    out = subprocess.run([str(BUILD / "infergate-keys"), "new", "bench"],
                         capture_output=True, text=True, check=True).stdout
    key = re.search(r"^key: (\S+)", out, re.M).group(1)
    line = re.search(r"^line: (.+)$", out, re.M).group(1)
    return key, line


def start_redis():
    port = free_port()
    d = OUT / "redis"
    d.mkdir(parents=True, exist_ok=True)
    Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
          "--save", "", "--appendonly", "no", "--dir", str(d)],
         cpu=LOAD_CPU, stdout=subprocess.DEVNULL)
    wait_port(port)
    return port


def table(title, rows, base="plain"):
    print(f"\n## {title}\n")
    print(f"| {'case':<22} | {'req/s':>9} | {'spread':>15} | {'p50 µs':>8} "
          f"| {'p99 µs':>8} | {'CPU µs/req':>10} | {'vs ' + base:>8} "
          f"| {'adds µs':>8} | {'adds CPU':>8} |")
    print("|" + "|".join("-" * w for w in (24, 11, 17, 10, 10, 12, 10,
                                             10, 10)) + "|")
    b = rows.get(base)
    for n, m in rows.items():
        ratio = adds = cadds = ""
        if b and m["rps"]:
            ratio = f"{m['rps'] / b['rps']:.3f}"
            adds = f"{(1 / m['rps'] - 1 / b['rps']) * 1e6:+.2f}"
            m["adds_us"] = (1 / m["rps"] - 1 / b["rps"]) * 1e6
            m["ratio"] = m["rps"] / b["rps"]
        if b and m["cpu_us"] is not None and b["cpu_us"] is not None:
            m["adds_cpu_us"] = m["cpu_us"] - b["cpu_us"]
            cadds = f"{m['adds_cpu_us']:+.2f}"
        f = (lambda v, fmt="{:.0f}": fmt.format(v) if v is not None
             else "-")
        print(f"| {n:<22} | {f(m['rps']):>9} | "
              f"{f(m['rps_min']) + '-' + f(m['rps_max']):>15} | "
              f"{f(m['p50_us']):>8} | {f(m['p99_us']):>8} | "
              f"{f(m['cpu_us'], '{:.2f}'):>10} | {ratio:>8} | {adds:>8} "
              f"| {cadds:>8} |")
        if m["non2xx"]:
            print(f"|   (!) {m['non2xx']} non-2xx answers in {n}")
    sys.stdout.flush()


def run_tool(title, argv):
    tool = next(a for a in argv if a.startswith("/"))
    if not Path(tool).exists():
        print(f"\n## {title}\n\n(skipped: {tool} not built)")
        return None
    print(f"\n## {title}\n")
    sys.stdout.flush()
    r = subprocess.run(argv, capture_output=True, text=True)
    print("```")
    print((r.stdout + r.stderr).rstrip())
    print("```")
    sys.stdout.flush()
    return r.stdout + r.stderr


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    results = {"runs": RUNS, "seconds": SECONDS, "conns": CONNS}

    print(f"# infergate benchmark: {RUNS} runs x {SECONDS}s, {CONNS} "
          f"connections, gateway worker on CPU {NGINX_CPU}, load on CPU "
          f"{LOAD_CPU}")

    key, line = keys()
    (OUT / "keys.txt").write_text(line + "\n")
    shutil.copy(ROOT / "conf/schemas/score.json", OUT / "score.json")
    akey = subprocess.run([str(BUILD / "infergate-audit"), "keygen", "b"],
                          capture_output=True, text=True,
                          check=True).stdout
    (OUT / "audit.key").write_text(akey)
    os.chmod(OUT / "audit.key", 0o600)

    rport = start_redis()

    # the origin: its own nginx on the load CPU
    oport = free_port()
    ORIGIN_PORT[0] = oport
    Nginx("origin", f"""
    server {{
        listen 127.0.0.1:{oport};
        location / {{
            default_type application/json;
            return 200 '{ANSWER.strip()}\\n';
        }}
    }}""", cpu=LOAD_CPU)

    upstream = f"""
    upstream origin {{ server 127.0.0.1:{oport}; keepalive 64; }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    client_body_buffer_size 64k;"""

    # plain nginx: the baseline
    pport = free_port()
    plain = Nginx("plain", f"""{upstream}
    server {{
        listen 127.0.0.1:{pport};
        location / {{ proxy_pass http://origin; }}
        location /static {{
            default_type application/json;
            return 200 '{ANSWER.strip()}\\n';
        }}
    }}""", cpu=NGINX_CPU)

    # the Lua gateway
    lport = free_port()
    lua = Nginx("lua", f"""{upstream}
    lua_package_path "{ROOT}/bench/lua/?.lua;;";
    lua_shared_dict gcra 10m;
    init_by_lua_block {{
        require("gateway").init("{OUT}/keys.txt", {rport})
    }}
    server {{
        listen 127.0.0.1:{lport};
        location /admission {{
            access_by_lua_block {{ require("gateway").access({{}}) }}
            proxy_pass http://origin;
        }}
        location /cache {{
            access_by_lua_block {{
                require("gateway").access({{cache = true}})
            }}
            body_filter_by_lua_block {{ require("gateway").body_filter() }}
            proxy_pass http://origin;
        }}
    }}""", modules=LUA_MODULES, cpu=NGINX_CPU)

    # infergate
    iport = free_port()
    ig = Nginx("ig", f"""{upstream}
    infergate_keys {OUT}/keys.txt;
    infergate_limit_zone bench 10m;
    infergate_redis cache 127.0.0.1:{rport} timeout=200ms;
    server {{
        listen 127.0.0.1:{iport};
        infergate_limit_headers draft;
        location /admission {{
            infergate_auth on;
            infergate_limit zone=bench rate=1000000r/s burst=1000000;
            infergate_schema {OUT}/score.json;
            proxy_pass http://origin;
        }}
        location /audit {{
            infergate_auth on;
            infergate_limit zone=bench rate=1000000r/s burst=1000000;
            infergate_schema {OUT}/score.json;
            infergate_audit {OUT}/audit.log key={OUT}/audit.key key_id=b;
            proxy_pass http://origin;
        }}
        location /cache {{
            infergate_auth on;
            infergate_limit zone=bench rate=1000000r/s burst=1000000;
            infergate_schema {OUT}/score.json;
            infergate_cache redis=cache ttl=600s methods=POST;
            proxy_pass http://origin;
        }}
    }}""", modules=[MODULE], cpu=NGINX_CPU)

    for port in (oport, pport, lport, iport):
        wait_port(port)

    hdrs = {"Content-Type": "application/json",
            "Authorization": f"Bearer {key}"}
    post = wrk_script("post", headers=hdrs)

    def url(port, path):
        return f"http://127.0.0.1:{port}{path}"

    if "admission" not in SKIP:
        rows = median_runs({
            "plain": (plain.worker, url(pport, "/score"), post, CONNS),
            "lua": (lua.worker, url(lport, "/admission"), post, CONNS),
            "infergate": (ig.worker, url(iport, "/admission"), post, CONNS),
            "infergate+audit": (ig.worker, url(iport, "/audit"), post,
                                CONNS),
        })
        table("admission: auth + limit + JSON schema, then the origin",
              rows)
        results["admission"] = rows

    if "cache" not in SKIP:
        # fill both caches, then every request is a hit
        for u in (url(lport, "/cache"), url(iport, "/cache")):
            for _ in range(3):
                subprocess.run(["curl", "-s", "-o", "/dev/null", u, "-d",
                                BODY, "-H", "Content-Type: application/json",
                                "-H", f"Authorization: Bearer {key}"],
                               check=True)
                time.sleep(0.2)
        rows = median_runs({
            "plain": (plain.worker, url(pport, "/score"), post, CONNS),
            "lua cache hit": (lua.worker, url(lport, "/cache"), post,
                              CONNS),
            "infergate cache hit": (ig.worker, url(iport, "/cache"), post,
                                    CONNS),
        })
        table("cache hit (auth + limit + schema on, answer from Redis)",
              rows)
        results["cache"] = rows
        # Redis commands per infergate cache hit, counted by Redis itself
        subprocess.run(["redis-cli", "-p", str(rport), "config", "resetstat"],
                       capture_output=True, check=True)
        r = wrk(url(iport, "/cache"), post, CONNS, 2)
        info = subprocess.run(["redis-cli", "-p", str(rport), "info",
                               "commandstats"], capture_output=True,
                              text=True).stdout
        calls = sum(int(m) for m in re.findall(r"calls=(\d+)", info)) - 1
        per = calls / max(r["requests"], 1)
        print(f"\nRedis commands per infergate cache hit: {per:.3f} "
              f"({calls} commands for {r['requests']} requests)")
        results["redis_commands_per_hit"] = per

    if "redis" not in SKIP:
        redis_bench(results, key, upstream, rport)

    if "bloom" not in SKIP:
        bloom_bench(results, plain, pport, key)

    if "infer" not in SKIP:
        infer_bench(results, key, upstream)

    if "killed" not in SKIP:
        killed_bench(results, rport)

    for p in procs:
        p.stop()
    del procs[:]

    if "tools" not in SKIP:
        tools_bench(results)

    targets(results)

    json.dump(results, open(OUT / "results.json", "w"), indent=1)
    plot(results)


def redis_bench(results, key, upstream, rport):
    """Cache hits with Redis in cleartext, over TLS (server verified,
    client certificate) and in a 6-node cluster (3 primaries, 3
    replicas): what the transport and the routing cost per hit."""
    pki = OUT / "pki"
    pki.mkdir(parents=True, exist_ok=True)

    def ossl(*a):
        subprocess.run(["openssl", *a], cwd=pki, check=True,
                       capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ossl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=bench CA",
         "-keyout", "ca.key", "-out", "ca.pem")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (pki / f"{name}.ext").write_text(ext + "\n")
        ossl("req", "-new", *ec, "-subj", f"/CN={name}", "-keyout",
             f"{name}.key", "-out", f"{name}.csr")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
             "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
             "-extfile", f"{name}.ext", "-out", f"{name}.pem")

    tport = free_port()
    d = OUT / "redis-tls"
    d.mkdir(parents=True, exist_ok=True)
    Proc(["redis-server", "--port", "0", "--tls-port", str(tport),
          "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
          "--dir", str(d), "--tls-cert-file", str(pki / "server.pem"),
          "--tls-key-file", str(pki / "server.key"),
          "--tls-ca-cert-file", str(pki / "ca.pem"),
          "--tls-auth-clients", "yes"],
         cpu=LOAD_CPU, stdout=subprocess.DEVNULL)
    wait_port(tport)

    cports = []
    while len(cports) < 6:
        p = free_port()
        if p + 10000 < 65536 and p not in cports:
            cports.append(p)
    for p in cports:
        d = OUT / f"redis-cluster-{p}"
        d.mkdir(parents=True, exist_ok=True)
        Proc(["redis-server", "--port", str(p), "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", "--dir", str(d),
              "--cluster-enabled", "yes", "--cluster-node-timeout", "1000"],
             cpu=LOAD_CPU, stdout=subprocess.DEVNULL)
        wait_port(p)
    subprocess.run(["redis-cli", "--cluster", "create",
                    *[f"127.0.0.1:{p}" for p in cports],
                    "--cluster-replicas", "1", "--cluster-yes"],
                   check=True, capture_output=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        info = subprocess.run(["redis-cli", "-p", str(cports[0]), "cluster",
                               "info"], capture_output=True, text=True).stdout
        if "cluster_state:ok" in info:
            break
        time.sleep(0.2)

    seeds = ",".join(f"127.0.0.1:{p}" for p in cports[:3])
    backends = {
        "cleartext": f"127.0.0.1:{rport}",
        "TLS (mTLS)": (f"127.0.0.1:{tport} tls=on tls_ca={pki}/ca.pem "
                       f"tls_cert={pki}/client.pem "
                       f"tls_key={pki}/client.key"),
        "cluster (6 nodes)": f"cluster={seeds}",
    }
    gws = {}
    for n, (name, addr) in enumerate(backends.items()):
        port = free_port()
        gws[name] = (Nginx(f"ig-redis{n}", f"""{upstream}
    infergate_keys {OUT}/keys.txt;
    infergate_redis cache {addr} timeout=200ms;
    server {{
        listen 127.0.0.1:{port};
        location /cache {{
            infergate_auth on;
            infergate_cache redis=cache ttl=600s methods=POST;
            proxy_pass http://origin;
        }}
    }}""", modules=[MODULE], cpu=NGINX_CPU), port)
        wait_port(port)

    post = wrk_script("post-redis", headers={
        "Content-Type": "application/json",
        "Authorization": f"Bearer {key}"})
    for name, (g, port) in gws.items():
        for _ in range(3):
            subprocess.run(["curl", "-s", "-o", "/dev/null",
                            f"http://127.0.0.1:{port}/cache", "-d", BODY,
                            "-H", "Content-Type: application/json",
                            "-H", f"Authorization: Bearer {key}"],
                           check=True)
            time.sleep(0.3)
    rows = median_runs({
        name: (g.worker, f"http://127.0.0.1:{port}/cache", post, CONNS)
        for name, (g, port) in gws.items()})
    table("cache hit by Redis transport: cleartext, TLS, cluster", rows,
          base="cleartext")
    results["redis_transport"] = rows


def bloom_bench(results, plain, pport, key):
    ids = OUT / "ids.txt"
    ids.write_text("".join(f"u{i}\n" for i in range(100000)))
    bloom = OUT / "users.bloom"
    subprocess.run([str(BUILD / "infergate-bloom"), "build", "--capacity",
                    "1000000", "--error", "0.01", str(ids), "-o",
                    str(bloom)], check=True, capture_output=True)
    bport = free_port()
    ng = Nginx("bloom", f"""
    upstream origin {{ server 127.0.0.1:{ORIGIN_PORT[0]}; keepalive 64; }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    infergate_bloom_zone users 2m capacity=1000000 error=0.01
                         file={bloom} save_every=off;
    server {{
        listen 127.0.0.1:{bport};
        location ~ ^/users/(\\w+)$ {{
            infergate_bloom zone=users key=$1;
            proxy_pass http://origin;
        }}
    }}""", modules=[MODULE], cpu=NGINX_CPU)
    wait_port(bport)
    get = wrk_script("get", method="GET", body=None)
    rows = median_runs({
        "plain": (plain.worker, f"http://127.0.0.1:{pport}/users/u42", get,
                  CONNS),
        "bloom hit → origin": (ng.worker,
                               f"http://127.0.0.1:{bport}/users/u42", get,
                               CONNS),
        "bloom reject (404)": (ng.worker,
                               f"http://127.0.0.1:{bport}/users/x999999",
                               get, CONNS),
    })
    for n in ("bloom reject (404)",):
        rows[n]["non2xx"] = 0          # 404 is the answer measured
    table("Bloom guard: known id proxied, unknown id refused", rows)
    results["bloom"] = rows
    ng.stop()


def infer_bench(results, key, upstream):
    model = OUT / "credit_risk.json"
    feats = OUT / "features.json"
    script = ROOT / "scripts/demo_model.py"
    if not script.exists() or not (BUILD / "infergate-backend").exists():
        print("\n## inference\n\n(skipped: scripts/demo_model.py or the "
              "backend is missing)")
        return
    subprocess.run([sys.executable, str(script), str(model), str(feats)],
                   check=True, capture_output=True)
    nf = len(json.loads(feats.read_text())["features"]) \
        if feats.read_text().lstrip().startswith("{") \
        else len(json.loads(feats.read_text()))

    mlp = OUT / "mlp.onnx"
    subprocess.run([sys.executable, str(ROOT / "bench/mlp_model.py"),
                    str(mlp)], check=True, capture_output=True)

    # on: the default (continuous) scheduler; window: the old one
    socks = {}
    for name, batch, sched in (("on", 64, "continuous"), ("off", 1, None),
                               ("window", 64, "window")):
        sock = OUT / f"backend-{name}.sock"
        Proc([str(BUILD / "infergate-backend"), "--socket", str(sock),
              "--model", f"credit-risk:1={model}", "--model",
              f"mlp:1={mlp}", "--max-batch", str(batch),
              "--max-delay-us", "200", "--threads", "1",
              "--device", "cpu"] + (["--batching", sched] if sched else []),
             cpu=BACKEND_CPU, stderr=open(OUT / f"backend-{name}.log", "w"))
        socks[name] = sock
    deadline = time.time() + 20
    while not all(p.exists() for p in socks.values()):
        if time.time() > deadline:
            raise RuntimeError("backend did not start")
        time.sleep(0.05)

    ports = {n: free_port() for n in socks}
    servers = "".join(f"""
    server {{
        listen 127.0.0.1:{ports[n]};
        location /v2 {{
            infergate_auth on;
            infergate_limit zone=bench rate=1000000r/s burst=1000000;
            infergate_infer backend={n};
        }}
    }}""" for n in ports)
    # the inference path alone (no auth, no limit): splits what admission
    # adds from what the request costs the worker
    nport = free_port()
    servers += f"""
    server {{
        listen 127.0.0.1:{nport};
        location /v2 {{
            infergate_infer backend=on;
        }}
    }}"""
    # gRPC (h2c) beside them: the same worker, admission and backend
    gport = free_port()
    servers += f"""
    server {{
        listen 127.0.0.1:{gport} http2;
        client_max_body_size 8m;
        location /inference.GRPCInferenceService/ {{
            infergate_auth on;
            infergate_limit zone=bench rate=1000000r/s burst=1000000;
            infergate_infer backend=on;
        }}
    }}"""
    backends = "".join(f"""
    infergate_backend {n} unix:{socks[n]} timeout=2s;""" for n in socks)
    ng = Nginx("ig-infer", f"""
    infergate_keys {OUT}/keys.txt;
    infergate_limit_zone bench 10m;
    {backends}
    {servers}""", modules=[MODULE], cpu=NGINX_CPU)
    for p in list(ports.values()) + [gport, nport]:
        wait_port(p)

    body = json.dumps({"id": "b1", "inputs": [{
        "name": "input__0", "shape": [1, nf], "datatype": "FP32",
        "data": [round(0.5 + i, 2) for i in range(nf)]}]},
        separators=(",", ":"))
    path = "/v2/models/credit-risk/infer"
    hdrs = {"Content-Type": "application/json",
            "Authorization": f"Bearer {key}"}
    deadline = time.time() + 20
    while True:
        r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}",
                            f"http://127.0.0.1:{ports['on']}{path}", "-d",
                            body, "-H", "Content-Type: application/json",
                            "-H", f"Authorization: Bearer {key}"],
                           capture_output=True, text=True)
        answer, _, code = r.stdout.rpartition("\n")
        if code == "200" or time.time() > deadline:
            break
        time.sleep(0.2)
    if code != "200":
        print(f"\n## inference\n\n(skipped: the backend answered {code}: "
              f"{answer[:200]})")
        return

    sport = free_port()
    st = Nginx("plain-infer", f"""
    server {{
        listen 127.0.0.1:{sport};
        location / {{
            default_type application/json;
            return 200 '{answer}';
        }}
    }}""", cpu=NGINX_CPU)
    wait_port(sport)

    if "oip" in ONLY:
        oip_bench(results, key, ng, ports["on"], nf, gport)
        return

    ipost = wrk_script("infer", body=body, headers=hdrs)
    rows = {} if "batching" in ONLY else median_runs({
        "plain (same body)": (st.worker, f"http://127.0.0.1:{sport}{path}",
                              ipost, CONNS),
        "infergate → backend": (ng.worker,
                                f"http://127.0.0.1:{ports['on']}{path}",
                                ipost, CONNS),
        "no admission": (ng.worker, f"http://127.0.0.1:{nport}{path}",
                         ipost, CONNS),
    })
    if rows:
        table("inference end to end (credit-risk XGBoost, one row)", rows,
              base="plain (same body)")
        results["infer"] = rows
        # issue 17's row: the worker's CPU per request over a plain return
        # of the same body, split into admission (auth + limit: the two
        # infergate rows' difference) and the inference path (body,
        # decode into the slot, the ring, encode, send)
        p, ig, na = (rows[n] for n in ("plain (same body)",
                                       "infergate → backend",
                                       "no admission"))
        if None not in (p["cpu_us"], ig["cpu_us"], na["cpu_us"]):
            print(f"\nnginx CPU per inference request over plain return: "
                  f"{ig['cpu_us'] - p['cpu_us']:+.2f} µs (inference path "
                  f"{na['cpu_us'] - p['cpu_us']:+.2f}, admission "
                  f"{ig['cpu_us'] - na['cpu_us']:+.2f}; worker "
                  f"{ig['cpu_us']:.2f} vs plain {p['cpu_us']:.2f} µs/req)")
            sys.stdout.flush()

    if "batching" in SKIP:
        if "oip" not in SKIP:
            oip_bench(results, key, ng, ports["on"], nf, gport)
        return

    mbody = json.dumps({"inputs": [{
        "name": "input", "shape": [1, 64], "datatype": "FP32",
        "data": [round((i % 7) * 0.1 - 0.3, 2) for i in range(64)]}]},
        separators=(",", ":"))
    mpath = "/v2/models/mlp/infer"
    mpost = wrk_script("mlp", body=mbody, headers=hdrs)
    batching = {}
    for c in BATCH_CONCURRENCY:
        for n, sched in (("off", "off"), ("window", "window"),
                         ("on", "continuous")):
            batching[f"c={c} {sched}"] = (
                ng.worker, f"http://127.0.0.1:{ports[n]}{mpath}", mpost, c)
    rows = median_runs(batching)
    table("batching: off (max-batch 1) vs window (--batching window, "
          "max-batch 64, max-delay 200 µs) vs continuous (the default, "
          "same limits): MLP 64-512-512-2, one row per request, 1 backend "
          "thread", rows, base="c=1 off")
    results["batching"] = rows
    batching_curve(rows)

    if "oip" not in SKIP:
        oip_bench(results, key, ng, ports["on"], nf, gport)


def batching_curve(rows):
    """The issue's rows: per concurrency, each scheduler's req/s and p50
    against batching off, and the targets (c=1 within 5% of off, c=64
    >= 1.5x off)."""
    print("\n## batching curve (vs off at the same concurrency)\n")
    print("| c  | off req/s | window req/s (x off) | continuous req/s "
          "(x off) | p50 µs off / window / continuous |")
    print("|----|-----------|----------------------|--------------------"
          "-----|----------------------------------|")
    f = (lambda v: f"{v:.0f}" if v is not None else "-")
    for c in BATCH_CONCURRENCY:
        off, win, con = (rows.get(f"c={c} {n}") for n in
                         ("off", "window", "continuous"))
        if not (off and win and con and off["rps"]):
            continue
        print(f"| {c:<2} | {off['rps']:>9.0f} | {win['rps']:>9.0f} "
              f"({win['rps'] / off['rps']:.2f}x)    | {con['rps']:>9.0f} "
              f"({con['rps'] / off['rps']:.2f}x)        | "
              f"{f(off['p50_us'])} / {f(win['p50_us'])} / "
              f"{f(con['p50_us'])} |")
    sys.stdout.flush()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    cs = [c for c in BATCH_CONCURRENCY if f"c={c} off" in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for n, color in (("off", "#999999"), ("window", "#d98c3f"),
                     ("continuous", "#3f7fd9")):
        a1.plot(cs, [rows[f"c={c} {n}"]["rps"] for c in cs], "o-",
                color=color, label=n)
        a2.plot(cs, [rows[f"c={c} {n}"]["p50_us"] or 0 for c in cs], "o-",
                color=color, label=n)
    for a, t in ((a1, "req/s (one worker)"), (a2, "p50 µs")):
        a.set_xscale("log", base=2)
        a.set_xticks(cs)
        a.set_xticklabels([str(c) for c in cs])
        a.set_xlabel("concurrency")
        a.set_ylabel(t)
        a.legend()
    a1.set_title("batching: throughput")
    a2.set_title("batching: latency")
    fig.tight_layout()
    fig.savefig(OUT / "batching.png", dpi=100)
    plt.close(fig)
    print(f"\nplot: {OUT / 'batching.png'}")


def oip_body(nf, rows, binary):
    """An infer request as tritonclient.http builds it: binary_data=True
    inputs and no outputs (so binary_data_output), or binary_data=False.
    Returns (body bytes, extra headers)."""
    import struct
    vals = [round(0.5 + (i % nf) + (i // nf) * 0.01, 2)
            for i in range(rows * nf)]
    t = {"name": "input__0", "shape": [rows, nf], "datatype": "FP32"}
    req = {"inputs": [t]}
    if not binary:
        t["data"] = vals
        req["outputs"] = [{"name": "output__0",
                           "parameters": {"binary_data": False}}]
        return json.dumps(req, separators=(",", ":")).encode(), {}
    raw = struct.pack(f"<{len(vals)}f", *vals)
    t["parameters"] = {"binary_data_size": len(raw)}
    req["parameters"] = {"binary_data_output": True}
    head = json.dumps(req, separators=(",", ":")).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


def grpc_frame(nf, rows):
    """A ModelInferRequest as tritonclient.grpc builds it (raw contents,
    FP32), length-prefixed: what h2load posts.  The encoding is written
    out here (field numbers of ngx_http_infergate_grpc.proto) so that the
    bench needs no protobuf package."""
    vals = [round(0.5 + (i % nf) + (i // nf) * 0.01, 2)
            for i in range(rows * nf)]

    def varint(n):
        out = b""
        while True:
            b = n & 0x7f
            n >>= 7
            if n:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])

    def field(num, data):                  # length-delimited
        return varint(num << 3 | 2) + varint(len(data)) + data

    shape = varint(rows) + varint(nf)
    tensor = (field(1, b"input__0") + field(2, b"FP32")
              + field(3, shape))
    msg = (field(1, b"credit-risk") + field(5, tensor)
           + field(7, struct.pack(f"<{len(vals)}f", *vals)))
    return struct.pack(">BI", 0, len(msg)) + msg


def oip_bench(results, key, ng, port, nf, gport=None):
    """1 and 64 rows over OIP JSON and binary HTTP through the same
    gateway (auth, limit, infergate_infer) and backend; gRPC ModelInfer
    (raw_input_contents) with h2load on an h2c server of the same
    worker."""
    path = "/v2/models/credit-risk/infer"
    hdrs = {"Authorization": f"Bearer {key}"}
    cases = {}
    for rows in (1, 64):
        for name, binary in (("JSON", False), ("binary", True)):
            body, extra = oip_body(nf, rows, binary)
            h = dict(hdrs, **extra)
            if not binary:
                h["Content-Type"] = "application/json"
            r = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                 f"http://127.0.0.1:{port}{path}", "--data-binary", "@-"]
                + [a for k, v in h.items() for a in ("-H", f"{k}: {v}")],
                input=body, capture_output=True)
            if r.stdout != b"200":
                print(f"\n(oip {name} {rows} rows: HTTP {r.stdout!r})")
            cases[f"{rows} row{'s' * (rows > 1)} {name}"] = (
                ng.worker, f"http://127.0.0.1:{port}{path}",
                wrk_script_file(f"oip-{name}-{rows}", body, h), CONNS)
    gpath = "/inference.GRPCInferenceService/ModelInfer"
    for rows in (1, 64) if gport else ():
        bodyf = OUT / f"grpc-{rows}.bin"
        bodyf.write_bytes(grpc_frame(nf, rows))
        h = {"content-type": "application/grpc", "te": "trailers",
             "authorization": f"Bearer {key}"}
        r = subprocess.run(
            ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
             "-D", "-", f"http://127.0.0.1:{gport}{gpath}",
             "--data-binary", f"@{bodyf}"]
            + [a for k, v in h.items() for a in ("-H", f"{k}: {v}")],
            capture_output=True, text=True)
        if "grpc-status: 0" not in r.stdout:
            print(f"\n(oip gRPC {rows} rows: {r.stdout!r})")
        cases[f"{rows} row{'s' * (rows > 1)} gRPC"] = (
            ng.worker, f"http://127.0.0.1:{gport}{gpath}",
            H2Load(bodyf, h), CONNS)
    rows = median_runs(cases)
    table(f"OIP encodings through one gateway (credit-risk XGBoost, {nf} "
          "features, auth + limit + infer; binary = Triton's binary "
          "tensor extension both ways; gRPC = ModelInfer with "
          "raw_input_contents over h2c, driven by h2load)", rows,
          base="1 row JSON")
    results["oip"] = rows


def killed_bench(results, rport):
    """Backend killed, warm cache: half the requests repeat 5 cached
    bodies, half are new ones.  With the backend up all are answered; killed,
    the cached ones are answered stale (stale_if_error) and the others
    fail fast once the breaker is open."""
    if not (BUILD / "infergate-backend").exists():
        print("\n## backend killed, warm cache\n\n(skipped: no backend)")
        return
    sock = OUT / "backend-killed.sock"
    be = Proc([str(BUILD / "infergate-backend"), "--socket", str(sock),
               "--model", "id=builtin:identity:3", "--threads", "1",
               "--device", "cpu"], cpu=LOAD_CPU,
              stderr=open(OUT / "backend-killed.log", "w"))
    deadline = time.time() + 20
    while not sock.exists():
        if time.time() > deadline:
            raise RuntimeError("backend did not start")
        time.sleep(0.05)
    port = free_port()
    ng = Nginx("ig-killed", f"""
    infergate_redis r 127.0.0.1:{rport} timeout=1s;
    infergate_breaker_zone brk 1m;
    infergate_backend be unix:{sock} timeout=2s;
    server {{
        listen 127.0.0.1:{port};
        location /v2 {{
            infergate_cache redis=r ttl=1s stale_if_error=10m methods=POST;
            infergate_breaker zone=brk;
            infergate_infer backend=be;
        }}
    }}""", modules=[MODULE], cpu=NGINX_CPU)
    wait_port(port)
    url = f"http://127.0.0.1:{port}/v2/models/id/infer"

    def body(i):
        return ('{"inputs":[{"name":"input","shape":[1,3],'
                f'"datatype":"FP32","data":[{i},2,3]}}]}}')

    deadline = time.time() + 20
    for i in range(0, 10, 2):
        while True:
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w",
                                "%{http_code}", url, "-d", body(i), "-H",
                                "Content-Type: application/json"],
                               capture_output=True, text=True).stdout
            if r == "200" or time.time() > deadline:
                break
            time.sleep(0.2)
    script = OUT / "killed.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        'math.randomseed(os.time())\n'
        'local base = math.random(1, 1000000000)\n'
        'local n = 0\n'
        'request = function()\n'
        '  n = n + 1\n'
        '  local i = (n % 2 == 0) and (n % 10) or (base + n)\n'
        '  return wrk.format(nil, nil, nil, \'{"inputs":[{"name":"input",'
        '"shape":[1,3],"datatype":"FP32","data":[\' .. i .. \',2,3]}]}\')\n'
        'end\n')

    rows = {}
    for name in ("backend up, warm cache", "backend killed, warm cache"):
        if name.startswith("backend killed"):
            be.p.kill()
            be.p.wait(10)
            time.sleep(1.5)         # every entry expired: stale from now
        runs = [measure(ng.worker, url, script) for _ in range(RUNS)]
        total = sum(r["requests"] for r in runs)
        bad = sum(r["non2xx"] for r in runs)
        rows[name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "p99_us": statistics.median(r["p99_us"] for r in runs
                                        if r["p99_us"] is not None),
            "answered": (total - bad) / max(total, 1),
            "requests": total}
    print("\n## backend killed, warm cache (half the bodies cached; "
          "infergate_breaker defaults, stale_if_error=10m)\n")
    print("| case | req/s | p99 µs | answered 2xx |")
    print("|---|---|---|---|")
    for n, m in rows.items():
        print(f"| {n} | {m['rps']:.0f} | {m['p99_us']:.0f} | "
              f"{m['answered'] * 100:.1f}% |")
    sys.stdout.flush()
    results["killed"] = rows
    ng.stop()


def tools_bench(results):
    if (BUILD / "bench-xgb").exists() or (ROOT / "bench/bench_xgb.c").exists():
        r = subprocess.run(["make", "-s", "bench-xgb"], cwd=ROOT,
                           capture_output=True, text=True)
        print("\n## backend rows/s: ours vs libxgboost (500 trees, depth 8)"
              "\n")
        print("```")
        print((r.stdout + r.stderr).rstrip())
        print("```")
        results["xgb"] = r.stdout
    out = run_tool("Bloom lookup", [str(BUILD / "infergate-bloom"), "bench"])
    results["bloom_lookup"] = out
    if (ROOT / "bench/bench_onnx.py").exists():
        r = subprocess.run([sys.executable, str(ROOT / "bench/bench_onnx.py")],
                           cwd=ROOT, capture_output=True, text=True)
        print("\n## ONNX MLP rows/s: ours vs torch\n")
        print("```")
        print((r.stdout + r.stderr).rstrip())
        print("```")
        results["onnx"] = r.stdout
    sock = OUT / "ring.sock"
    if (BUILD / "infergate-ringbench").exists():
        be = Proc([str(BUILD / "infergate-backend"), "--socket", str(sock),
                   "--model", "id=builtin:identity:4", "--max-batch", "1",
                   "--max-delay-us", "0", "--threads", "1"], cpu=NGINX_CPU,
                  stderr=open(OUT / "backend-ring.log", "w"))
        deadline = time.time() + 10
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.05)
        argv = [str(BUILD / "infergate-ringbench"), "--socket", str(sock),
                "--model-id", "0", "--requests", "20000", "--concurrency",
                "1"]
        out = run_tool("ring round trip (identity model, submit → "
                       "complete): backend and client on one CPU",
                       ["taskset", "-c", str(NGINX_CPU)] + argv)
        results["ring_same_cpu"] = out
        out = run_tool("ring round trip: backend and client on different "
                       "CPUs (a wake-up across CPUs each way)",
                       ["taskset", "-c", str(LOAD_CPU)] + argv)
        results["ring_cross_cpu"] = out
        be.stop()
        # the floor under both: an eventfd ping-pong between two processes
        # on the same CPUs (write, then a blocking read, each way)
        pp = [str(BUILD / "infergate-ringbench"), "--pingpong",
              "--requests", "20000"]
        out = run_tool("ring floor: eventfd ping-pong, two processes on one "
                       "CPU", ["taskset", "-c", str(NGINX_CPU)] + pp)
        results["ring_floor_same_cpu"] = out
        out = run_tool("ring floor: eventfd ping-pong across CPUs",
                       ["taskset", "-c", f"{NGINX_CPU},{LOAD_CPU}"] + pp
                       + ["--cross"])
        results["ring_floor_cross_cpu"] = out
        for k in ("same_cpu", "cross_cpu"):
            r = re.search(r'"p50_us":([\d.]+)', results[f"ring_{k}"] or "")
            f = re.search(r'"p50_us":([\d.]+)',
                          results[f"ring_floor_{k}"] or "")
            if r and f:
                print(f"ring {k}: p50 {float(r.group(1)):.2f} µs, floor "
                      f"{float(f.group(1)):.2f} µs "
                      f"({float(r.group(1)) / float(f.group(1)):.2f}x)")
                print(json.dumps({"ring": k, "p50_us": float(r.group(1)),
                                  "floor_p50_us": float(f.group(1))}))


def targets(results):
    """Every target of the speed issues, from this run: the measure, the
    result, the target and met / NOT met, one table (the issue's rows
    first)."""
    out = []

    def line(what, ok, result, target):
        out.append((what, result, target, "met" if ok else "NOT met"))

    def missing(what, target, why):
        out.append((what, f"not measured ({why})", target, "-"))

    # batching: continuous vs off at c=1 and c=64
    b = results.get("batching") or {}
    for c, want, target in ((1, 0.95, "within 5% of off (>= 0.95x)"),
                            (64, 1.5, ">= 1.5x off")):
        on, win, off = (b.get(f"c={c} {n}") for n in
                        ("continuous", "window", "off"))
        what = f"batching on vs off at c={c} (MLP, one row)"
        if not (on and win and off and off["rps"]):
            missing(what, target, "SKIP or ONLY")
            continue
        q, qw = on["rps"] / off["rps"], win["rps"] / off["rps"]
        p50 = "/".join(f"{m['p50_us']:.0f}" if m["p50_us"] else "-"
                       for m in (off, win, on))
        line(what, q >= want, f"{q:.3f}x req/s (window {qw:.3f}x); p50 µs "
             f"off/window/on {p50}", target)

    # ONNX vs torch, every batch size, 1 and 2 threads
    o = results.get("onnx") or ""
    tl = re.findall(r"^ONNX-TARGET threads=(\d+) min_ratio=([\d.]+)", o,
                    re.M)
    if not tl:
        # the table's ratio column, one thread count
        rs = [float(m) for m in re.findall(r"^\s+\d+\s+\d+\s+[\d,]+\s+"
                                           r"[\d,]+\s+([\d.]+)x", o, re.M)]
        m = re.search(r"(\d+) thread", o)
        tl = [(m.group(1) if m else "1", str(min(rs)))] if rs else []
    if not tl:
        missing("ONNX MLP vs torch, every batch size", ">= 1.2x",
                "no bench_onnx output")
    for t, q in tl:
        line(f"ONNX MLP vs torch, {t} thread(s), worst batch size",
             float(q) >= 1.2, f"{float(q):.2f}x", ">= 1.2x at every size")

    # ring round trip, one CPU, with the eventfd ping-pong floor beside it
    r = results.get("ring_same_cpu")
    m = re.search(r'"p50_us":([\d.]+)', r or "")
    fl = re.search(r'"p50_us":([\d.]+)', results.get("ring_floor_same_cpu")
                   or "")
    floor = f"; eventfd ping-pong floor {float(fl.group(1)):.1f} µs" \
        if fl else ""
    if m:
        line("ring round trip p50, one CPU, identity model",
             float(m.group(1)) <= 10, f"{float(m.group(1)):.1f} µs{floor}",
             "<= 10 µs")
    else:
        missing("ring round trip p50, one CPU", "<= 10 µs",
                "infergate-ringbench not built or SKIP=tools")

    # nginx CPU per inference over a plain return of the same body
    i = results.get("infer") or {}
    ig, pl = i.get("infergate → backend"), i.get("plain (same body)")
    if ig and pl and ig.get("cpu_us") and pl.get("cpu_us"):
        d = ig["cpu_us"] - pl["cpu_us"]
        line("nginx CPU per inference over a plain return", d <= 3.0,
             f"{d:+.2f} µs ({ig['cpu_us']:.2f} vs {pl['cpu_us']:.2f})",
             "<= +3 µs")
    else:
        missing("nginx CPU per inference over a plain return", "<= +3 µs",
                "SKIP=infer or ONLY")

    # signed audit on vs off
    a = results.get("admission") or {}
    ig, au = a.get("infergate"), a.get("infergate+audit")
    if ig and au and ig.get("rps"):
        q = au["rps"] / ig["rps"]
        line("signed audit on vs off (req/s)", q >= 0.97,
             f"{q:.3f}, {au['rps']:.0f} vs {ig['rps']:.0f} req/s, "
             f"{au['cpu_us'] - ig['cpu_us']:+.2f} µs CPU", ">= 0.97x")
    else:
        missing("signed audit on vs off", ">= 0.97x", "SKIP=admission")

    # the earlier issues' targets
    lua = a.get("lua")
    if ig and lua:
        line("admission vs plain nginx (req/s)", ig.get("ratio", 0) >= 0.95,
             f"{ig.get('ratio', 0):.3f}", ">= 0.95x")
        if lua.get("adds_cpu_us") and ig.get("adds_cpu_us") is not None:
            q = ig["adds_cpu_us"] / lua["adds_cpu_us"]
            line("admission CPU added vs Lua's", q <= 0.25,
                 f"{ig['adds_cpu_us']:.2f} vs {lua['adds_cpu_us']:.2f} µs, "
                 f"{q:.2f}", "<= 1/4")
    c = results.get("cache")
    if c:
        ig, lua = c["infergate cache hit"], c["lua cache hit"]
        line("cache hit vs the plain proxy (req/s)",
             ig.get("ratio", 0) >= 0.9, f"{ig.get('ratio', 0):.3f}",
             ">= 0.9x")
        if lua.get("adds_cpu_us") and ig.get("adds_cpu_us") is not None:
            q = ig["adds_cpu_us"] / lua["adds_cpu_us"]
            line("cache hit CPU added vs Lua's", q <= 0.5,
                 f"{ig['adds_cpu_us']:.2f} vs {lua['adds_cpu_us']:.2f} µs, "
                 f"{q:.2f}", "<= 1/2")
    o = results.get("oip")
    for enc in ("binary", "gRPC"):
        if o and "64 rows JSON" in o and f"64 rows {enc}" in o:
            j, e = o["64 rows JSON"], o[f"64 rows {enc}"]
            line(f"{enc} vs JSON at 64 rows (req/s)",
                 e["rps"] > 1.2 * j["rps"], f"{e['rps'] / j['rps']:.2f}x",
                 "> 1.2x")
            # req/s at 64 rows is the backend's and the load tool's where
            # they share a CPU (2-CPU machines): the gateway's own cost
            # is its CPU
            if j["cpu_us"] and e["cpu_us"]:
                q = e["cpu_us"] / j["cpu_us"]
                line(f"{enc} gateway CPU vs JSON's at 64 rows", q <= 0.8,
                     f"{q:.2f}, {e['cpu_us']:.1f} vs {j['cpu_us']:.1f} "
                     "µs/req", "<= 0.8x")
    x = results.get("xgb")
    if x:
        ratios = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
            r"^\s+(\d+)\s+\d+\s+\d+\s+([\d.]+)x$", x, re.M)}
        if 1 in ratios:
            line("XGBoost vs libxgboost at batch 1", ratios[1] >= 10,
                 f"{ratios[1]:.1f}x", ">= 10x")
        big = [v for k, v in ratios.items() if k >= 256]
        if big:
            line("XGBoost vs libxgboost at batch >= 256", min(big) >= 3,
                 f"{min(big):.1f}x", ">= 3x")

    print("\n## targets\n")
    print("| measure | this run | target | |")
    print("|---|---|---|---|")
    for row in out:
        print("| " + " | ".join(row) + " |")
    results["targets"] = [dict(zip(("measure", "result", "target",
                                    "status"), row)) for row in out]


def plot(results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(no plot: python3-matplotlib is not installed)")
        return
    groups = [k for k in ("admission", "cache", "bloom", "infer", "batching",
                          "oip")
              if k in results]
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4))
    if len(groups) == 1:
        axes = [axes]
    for ax, g in zip(axes, groups):
        rows = results[g]
        names = list(rows)
        ax.bar(names, [rows[n]["rps"] for n in names],
               color=["#999999", "#d98c3f", "#3f7fd9", "#2a5aa0"][:len(names)])
        ax.set_title(g)
        ax.set_ylabel("req/s (one worker)")
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(OUT / "bench.png", dpi=100)
    print(f"\nplot: {OUT / 'bench.png'}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            try:
                p.stop()
            except Exception:
                pass
