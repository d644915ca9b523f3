"""gRPC load for `make bench` (bench.py's grpc_bench): keeps CONNS unary
calls in flight on one HTTP/2 connection for SECS seconds, the request
message's bytes as they are, and prints one JSON line: requests, rps,
p50_us, p99_us, non_ok.  python3-grpcio; run pinned to the load CPU.

usage: grpc_load.py PORT METHOD BODY_FILE CONNS SECS [API_KEY]
"""

import json
import sys
import threading
import time

import grpc


def main():
    port, method, bodyf, conns, secs = sys.argv[1:6]
    conns, secs = int(conns), float(secs)
    md = [("authorization", f"Bearer {sys.argv[6]}")] \
        if len(sys.argv) > 6 else []
    body = open(bodyf, "rb").read()
    # no BDP pings: the gateway answers them, on its CPU, not the calls
    ch = grpc.insecure_channel(f"127.0.0.1:{port}",
                               options=[("grpc.http2.bdp_probe", 0)])
    call = ch.unary_unary(method)
    lock = threading.Lock()
    lat, bad = [], [0]
    codes = {}
    inflight = [0]
    done = threading.Event()
    end = time.perf_counter() + secs

    def issue():
        t0 = time.perf_counter()
        fut = call.future(body, metadata=md, timeout=10)
        fut.add_done_callback(lambda f: finished(f, t0))

    def finished(f, t0):
        now = time.perf_counter()
        ok = f.code() == grpc.StatusCode.OK
        with lock:
            if ok:
                lat.append(now - t0)
            else:
                bad[0] += 1
                k = f"{f.code().name}: {f.details()}"[:120]
                codes[k] = codes.get(k, 0) + 1
            again = now < end
            if not again:
                inflight[0] -= 1
                if inflight[0] == 0:
                    done.set()
        if again:
            issue()

    start = time.perf_counter()
    with lock:
        inflight[0] = conns
    for _ in range(conns):
        issue()
    done.wait(secs + 30)
    took = time.perf_counter() - start
    lat.sort()
    n = len(lat) + bad[0]

    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6 if lat \
            else None

    print(json.dumps({"requests": n, "rps": n / took, "p50_us": q(0.5),
                      "p99_us": q(0.99), "non_ok": bad[0],
                      "errors": codes}))
    ch.close()


if __name__ == "__main__":
    main()
