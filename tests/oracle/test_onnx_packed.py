"""
Oracle: the CPU executor's packed path (backend/mlp_cpu.c, AVX2/FMA)
against torch 1.13, on models sized for it: panels full and partial
(n 256, 70, 33, 130), the 4-panel single row, the few-column dot path
(n 2, 3, 5), activations fused (Relu, LeakyRelu) and not (Sigmoid,
Tanh), a MatMul over inner rows whose bias varies within a batch row,
and rows split between 2 threads (2048 rows).  Each model's outputs must
equal torch's within 1e-4 at every batch and thread count, and the
packed path's must equal the OpenBLAS path's (IG_MLP_CPU_GEMM=blas)
within 1e-5.
"""

import os
import pathlib
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")

BUILD = pathlib.Path(os.environ.get("IG_BUILD", "build"))
PREDICT = BUILD / "infergate-predict"
TOL = 1e-4
ROWS = 2048
BATCHES = (1, 7, 100, 2048)


class Wide(torch.nn.Module):
    """the bench's model: 64-256-256-2, Relu, Softmax"""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(64, 256)
        self.l2 = torch.nn.Linear(256, 256)
        self.l3 = torch.nn.Linear(256, 2)

    def forward(self, x):
        h = torch.relu(self.l1(x))
        h = torch.relu(self.l2(h))
        return torch.softmax(self.l3(h), dim=-1)


class Odd(torch.nn.Module):
    """widths off the 16-column panels, each activation once"""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(50, 70)
        self.l2 = torch.nn.Linear(70, 33)
        self.l3 = torch.nn.Linear(33, 130)
        self.l4 = torch.nn.Linear(130, 3)

    def forward(self, x):
        h = torch.nn.functional.leaky_relu(self.l1(x), 0.1)
        h = torch.sigmoid(self.l2(h))
        h = torch.tanh(self.l3(h))
        return self.l4(h)


class Inner(torch.nn.Module):
    """[N, 4, 40] @ [40, 24] + b: MatMul over 4 inner rows per batch
    row, Relu, flatten, Linear(96, 5)"""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(40, 24) * 0.3)
        self.b = torch.nn.Parameter(torch.randn(24))
        self.l = torch.nn.Linear(96, 5)

    def forward(self, x):
        h = torch.relu(x @ self.w + self.b)
        return self.l(torch.flatten(h, 1))


CASES = [("wide", Wide, (64,)), ("odd", Odd, (50,)), ("inner", Inner, (4, 40))]


def predict(path, x, batch, threads, tmp, blas=False):
    env = dict(os.environ)
    env.pop("IG_MLP_CPU_GEMM", None)
    if blas:
        env["IG_MLP_CPU_GEMM"] = "blas"
    fin, fout = tmp / "in.f32", tmp / "out.f32"
    np.ascontiguousarray(x, dtype=np.float32).tofile(fin)
    r = subprocess.run([str(PREDICT), "--device", "cpu", "--threads",
                        str(threads), "--batch", str(batch), str(path),
                        str(fin), str(fout)], capture_output=True,
                       text=True, errors="replace", timeout=60, env=env)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, \
        r.stderr
    assert r.returncode == 0, r.stderr
    return np.fromfile(fout, dtype=np.float32)


@pytest.mark.parametrize("name,cls,shape", CASES, ids=[c[0] for c in CASES])
def test_packed_matches_torch(name, cls, shape, tmp_path):
    if not PREDICT.exists():
        pytest.fail(f"{PREDICT} missing: run make build first")

    torch.manual_seed(17)
    module = cls().eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, torch.randn(2, *shape), str(path),
                      opset_version=17, input_names=["x"],
                      output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})

    x = np.random.default_rng(5).standard_normal(
        (ROWS, *shape)).astype(np.float32) * 2
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy().reshape(ROWS, -1)

    blas = predict(path, x, ROWS, 1, tmp_path, blas=True).reshape(ROWS, -1)
    assert np.abs(blas - want).max() <= TOL

    for threads in (1, 2):
        for batch in BATCHES:
            got = predict(path, x, batch, threads, tmp_path).reshape(ROWS,
                                                                     -1)
            err = np.abs(got - want).max()
            assert err <= TOL, f"{name} threads {threads} batch {batch}: " \
                               f"{err} from torch"
            err = np.abs(got - blas).max()
            assert err <= 1e-5, f"{name} threads {threads} batch {batch}: " \
                                f"{err} from the OpenBLAS path"
