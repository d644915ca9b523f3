#!/usr/bin/python3
"""
Benchmark: the backend's ONNX path (build/infergate-predict) against
torch's eager forward on the same MLP, same thread count, rows/s at
batch 1, 16, 256 and 4096.  Prints one table.

    /usr/bin/python3 bench/bench_onnx.py [--threads N] [--rows N]
                                         [--repeat R] [--device cpu]

The model is 64 -> 256 -> 256 -> 2 (Linear + ReLU twice, Linear,
Softmax), exported with torch.onnx.export at opset 17 with a dynamic
batch axis (Gemm, Relu, Gemm, Relu, Gemm, Softmax).  Both sides run the
same rows in the same batches and the best of R passes counts; torch's
figure includes its Python call overhead per batch, which is what a
Python server around it would pay too.
"""

import argparse
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


def ours(model, xfile, outfile, batch, threads, repeat, device):
    r = subprocess.run([str(PREDICT), "--device", device, "--threads",
                        str(threads), "--batch", str(batch), "--repeat",
                        str(repeat), str(model), str(xfile), str(outfile)],
                       capture_output=True, text=True, check=True)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=0,
                    help="rows per pass (default: scaled to the batch)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    if not PREDICT.exists():
        sys.exit(f"{PREDICT} missing: run make build first")

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    module = Mlp().eval()

    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        model = d / "mlp.onnx"
        torch.onnx.export(module, torch.randn(2, 64), str(model),
                          opset_version=17, input_names=["x"],
                          output_names=["y"],
                          dynamic_axes={"x": {0: "batch"},
                                        "y": {0: "batch"}})

        print(f"ONNX MLP 64-256-256-2, device {a.device}, "
              f"{a.threads} thread(s), best of {a.repeat}")
        print(f"{'batch':>6} {'rows':>7} {'infergate rows/s':>17} "
              f"{'torch rows/s':>13} {'ratio':>6} {'max |diff|':>11}")

        for batch in BATCHES:
            rows = a.rows or max(4 * batch, 2048 if batch == 1 else 8192)
            x = np.random.default_rng(batch).standard_normal(
                (rows, 64)).astype(np.float32)
            xfile, outfile = d / "x.f32", d / "y.f32"
            x.tofile(xfile)

            ig = ours(model, xfile, outfile, batch, a.threads, a.repeat,
                      a.device)
            th = theirs(module, x, batch, a.repeat)

            got = np.fromfile(outfile, dtype=np.float32).reshape(rows, 2)
            with torch.inference_mode():
                want = module(torch.from_numpy(x)).numpy()
            diff = float(np.abs(got - want).max())

            print(f"{batch:>6} {rows:>7} {ig:>17,.0f} {th:>13,.0f} "
                  f"{ig / th:>5.1f}x {diff:>11.2e}")


if __name__ == "__main__":
    main()
