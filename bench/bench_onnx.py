#!/usr/bin/python3
"""
Benchmark: the backend's ONNX path (build/infergate-predict) against
torch's eager forward on the same MLP, same thread count, rows/s at
batch 1, 16, 256 and 4096, for 1 and then 2 threads.

    /usr/bin/python3 bench/bench_onnx.py [--threads 1,2] [--rows N]
                                         [--repeat R] [--rounds N]
                                         [--blas] [--device cpu]

The model is 64 -> 256 -> 256 -> 2 (Linear + ReLU twice, Linear,
Softmax), exported with torch.onnx.export at opset 17 with a dynamic
batch axis (Gemm, Relu, Gemm, Relu, Gemm, Softmax).  Both sides run the
same rows in the same batches, float32; torch under inference_mode.
torch's figure includes its Python call overhead per batch, which is
what a Python server around it would pay too.

Fair threads: torch.set_num_threads(N) covers torch's own pool, but
torch here calls OpenBLAS (Debian's pthread build) for its GEMMs, whose
pool defaults to every core; it is set to N too through the library
torch loaded.

The machine is shared: ours and torch alternate for --rounds rounds,
each round the best of --repeat passes; the table has the best round of
each, the spread (worst round against best) of each, their ratio, and
the median of the rounds' own ratios ("paired": each round's two figures
were taken back to back, under about the same load).  --blas adds a
column with our executor forced onto OpenBLAS (IG_MLP_CPU_GEMM=blas).
Last, per thread count, one line for the lead's parser:

    ONNX-TARGET threads=1 min_ratio=1.34 met
"""

import argparse
import ctypes
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

BUILD = pathlib.Path(os.environ.get("IG_BUILD", "build"))
PREDICT = BUILD / "infergate-predict"
BATCHES = (1, 16, 256, 4096)
TARGET = 1.2


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(64, 256)
        self.l2 = torch.nn.Linear(256, 256)
        self.l3 = torch.nn.Linear(256, 2)

    def forward(self, x):
        h = torch.relu(self.l1(x))
        h = torch.relu(self.l2(h))
        return torch.softmax(self.l3(h), dim=-1)


def ours(model, xfile, outfile, batch, threads, repeat, device,
         blas=False):
    env = dict(os.environ)
    if blas:
        env["IG_MLP_CPU_GEMM"] = "blas"
    r = subprocess.run([str(PREDICT), "--device", device, "--threads",
                        str(threads), "--batch", str(batch), "--repeat",
                        str(repeat), str(model), str(xfile), str(outfile)],
                       capture_output=True, text=True, check=True, env=env)
    m = re.search(r"([0-9]+) rows/s", r.stderr)
    return float(m.group(1))


def theirs(module, x, batch, repeat):
    best = None
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        module(xt[:batch])                       # warm up
        for _ in range(repeat):
            t0 = time.perf_counter()
            for i in range(0, len(xt), batch):
                module(xt[i:i + batch])
            t = time.perf_counter() - t0
            best = t if best is None or t < best else best
    return len(xt) / best


def torch_threads(n):
    """torch's pool and the OpenBLAS pool its GEMMs run on, both n"""
    torch.set_num_threads(n)
    for lib in ("libopenblas.so.0", "libopenblasp-r0.3.21.so"):
        try:
            ob = ctypes.CDLL(lib)
            ob.openblas_set_num_threads(n)
            return f"openblas {ob.openblas_get_num_threads()}"
        except (OSError, AttributeError):
            continue
    return "no openblas found"


def spread(v):
    return (max(v) - min(v)) / max(v) * 100


def table(a, module, model, d, threads):
    blas = torch_threads(threads)
    print(f"\nONNX MLP 64-256-256-2, device {a.device}, {threads} "
          f"thread(s) (torch: {torch.get_num_threads()}, {blas}), "
          f"best of {a.rounds} rounds x {a.repeat}")
    print(f"{'batch':>6} {'rows':>6} {'infergate/s':>12} {'spread':>6} "
          f"{'torch/s':>10} {'spread':>6} {'ratio':>6} {'paired':>6} "
          f"{'max |diff|':>10}" + (f" {'openblas/s':>11}" if a.blas else ""))

    ratios = []
    for batch in BATCHES:
        rows = a.rows or max(4 * batch, 2048 if batch == 1 else 8192)
        x = np.random.default_rng(batch).standard_normal(
            (rows, 64)).astype(np.float32)
        xfile, outfile = d / "x.f32", d / "y.f32"
        x.tofile(xfile)

        ig, th, ob = [], [], []
        for _ in range(a.rounds):
            ig.append(ours(model, xfile, outfile, batch, threads, a.repeat,
                           a.device))
            th.append(theirs(module, x, batch, a.repeat))
            if a.blas:
                ob.append(ours(model, xfile, d / "yb.f32", batch, threads,
                               a.repeat, a.device, blas=True))

        got = np.fromfile(outfile, dtype=np.float32).reshape(rows, 2)
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).numpy()
        diff = float(np.abs(got - want).max())

        r = max(ig) / max(th)
        paired = sorted(i / t for i, t in zip(ig, th))[len(ig) // 2]
        ratios.append(r)
        print(f"{batch:>6} {rows:>6} {max(ig):>12,.0f} {spread(ig):>5.0f}% "
              f"{max(th):>10,.0f} {spread(th):>5.0f}% {r:>5.2f}x "
              f"{paired:>5.2f}x {diff:>10.2e}" + (f" {max(ob):>11,.0f}" if a.blas else ""))
        sys.stdout.flush()

    return min(ratios), diff


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2",
                    help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--rows", type=int, default=0,
                    help="rows per pass (default: scaled to the batch)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--blas", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    if not PREDICT.exists():
        sys.exit(f"{PREDICT} missing: run make build first")

    torch.manual_seed(0)
    module = Mlp().eval()
    results = []

    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        model = d / "mlp.onnx"
        torch.onnx.export(module, torch.randn(2, 64), str(model),
                          opset_version=17, input_names=["x"],
                          output_names=["y"],
                          dynamic_axes={"x": {0: "batch"},
                                        "y": {0: "batch"}})

        for t in [int(v) for v in a.threads.split(",")]:
            results.append((t,) + table(a, module, model, d, t))

    print()
    for t, r, diff in results:
        ok = r >= TARGET
        print(f"ONNX-TARGET threads={t} min_ratio={r:.2f} "
              f"target={TARGET} {'met' if ok else 'not met'}")


if __name__ == "__main__":
    main()
