"""
Oracle: build/infergate-predict on ONNX models against torch (1.13).

Models are exported with torch.onnx.export at opsets 13 to 17 with a
dynamic batch axis and cover every supported op: Linear -> Gemm,
matmul + add -> MatMul + Add, Relu, LeakyRelu, Sigmoid, Tanh, Softmax
(last and inner axes), Flatten, Identity, and an Add of two activations.
Two hand-built graphs (onnx.helper) cover what torch never writes: Gemm
alpha/beta/transB=0 with 2-D and scalar C, and Softmax's opset-12
semantics.  Outputs must equal the reference within 1e-4 at batch sizes
1 to 512.

Then the refusals: an unsupported op is named, a corrupt file, a wrong
dtype, a bad shape; and a few hundred byte-mutated models must each load
or fail cleanly, never crash.
"""

import json
import os
import pathlib
import random
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

BUILD = pathlib.Path(os.environ.get("IG_BUILD", "build"))
PREDICT = BUILD / "infergate-predict"
TOL = 1e-4
ROWS = 512
BATCHES = (1, 37, 512)


def run(*args, check=True):
    r = subprocess.run([str(PREDICT), "--device", "cpu", "--threads", "2",
                        *map(str, args)], capture_output=True, text=True,
                       errors="replace", timeout=60)
    # sanitizer builds exit 1 on a finding: that is a crash, not a refusal
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, \
        r.stderr
    assert r.returncode >= 0, f"killed by signal {-r.returncode}"
    if check:
        assert r.returncode == 0, r.stderr
    return r


def predict(path, x, batch, tmp):
    x = np.ascontiguousarray(x, dtype=np.float32)
    fin, fout = tmp / "in.f32", tmp / "out.f32"
    x.tofile(fin)
    run("--batch", batch, path, fin, fout)
    return np.fromfile(fout, dtype=np.float32)


def meta(path):
    return json.loads(run("--meta", path).stdout)


# ---- models exported from torch ------------------------------------------

class Mlp(torch.nn.Module):
    """Linear -> Gemm; Relu, Tanh, Softmax(-1), nn.Identity."""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(16, 64)
        self.l2 = torch.nn.Linear(64, 64)
        self.l3 = torch.nn.Linear(64, 10)
        self.id = torch.nn.Identity()

    def forward(self, x):
        h = torch.relu(self.l1(self.id(x)))
        h = torch.tanh(self.l2(h))
        return torch.softmax(self.l3(h), dim=-1)


class MatmulAdd(torch.nn.Module):
    """x @ W + b -> MatMul + Add; Sigmoid, LeakyRelu(0.2)."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(12, 24) * 0.5)
        self.b1 = torch.nn.Parameter(torch.randn(24))
        self.w2 = torch.nn.Parameter(torch.randn(24, 5) * 0.5)
        self.b2 = torch.nn.Parameter(torch.randn(5))

    def forward(self, x):
        h = torch.sigmoid(x @ self.w1 + self.b1)
        return torch.nn.functional.leaky_relu(h @ self.w2 + self.b2, 0.2)


class FlattenNet(torch.nn.Module):
    """[N, 3, 5] -> Flatten -> Gemm -> LeakyRelu (default) -> Gemm."""

    def __init__(self):
        super().__init__()
        self.flat = torch.nn.Flatten()
        self.l1 = torch.nn.Linear(15, 20)
        self.act = torch.nn.LeakyReLU()
        self.l2 = torch.nn.Linear(20, 4)

    def forward(self, x):
        return self.l2(self.act(self.l1(self.flat(x))))


class Seq3d(torch.nn.Module):
    """[N, 4, 6] @ [6, 8] + b: MatMul over inner rows, Softmax on an
    inner axis (dim=1), flatten(1), Gemm, Sigmoid."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 8))
        self.b = torch.nn.Parameter(torch.randn(8))
        self.l = torch.nn.Linear(32, 3)

    def forward(self, x):
        h = torch.softmax(x @ self.w + self.b, dim=1)
        return torch.sigmoid(self.l(torch.flatten(h, 1)))


class Residual(torch.nn.Module):
    """h + f(h): an Add of two activations, then Softmax."""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(10, 32)
        self.l2 = torch.nn.Linear(32, 32)
        self.l3 = torch.nn.Linear(32, 6)

    def forward(self, x):
        h = torch.relu(self.l1(x))
        h = h + torch.tanh(self.l2(h))
        return torch.softmax(self.l3(h), dim=-1)


# (name, module, per-row input shape, opset)
TORCH_CASES = [("mlp", Mlp, (16,), op) for op in range(13, 18)] + [
    ("matmul_add", MatmulAdd, (12,), 14),
    ("flatten", FlattenNet, (3, 5), 15),
    ("seq3d", Seq3d, (4, 6), 16),
    ("residual", Residual, (10,), 17),
]


def export(module, shape, opset, path, dtype=torch.float32):
    module.eval()
    x = torch.randn(2, *shape, dtype=dtype)
    torch.onnx.export(module, x, str(path), opset_version=opset,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


@pytest.fixture(scope="module", autouse=True)
def built():
    if not PREDICT.exists():
        pytest.fail(f"{PREDICT} missing: run make build first")


@pytest.mark.parametrize("name,cls,shape,opset", TORCH_CASES,
                         ids=[f"{c[0]}-opset{c[3]}" for c in TORCH_CASES])
def test_torch_export_matches(name, cls, shape, opset, tmp_path):
    torch.manual_seed(1000 + opset)
    module = cls().eval()
    path = tmp_path / f"{name}.onnx"
    export(module, shape, opset, path)

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops, "empty graph"

    m = meta(path)
    nfeat = int(np.prod(shape))
    assert m["platform"] == "onnx"
    assert m["input"]["shape"] == [-1, *shape]
    assert m["nfeatures"] == nfeat

    rng = np.random.default_rng(opset)
    x = rng.standard_normal((ROWS, *shape)).astype(np.float32) * 2
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy().reshape(ROWS, -1)
    assert m["noutputs"] == want.shape[1]

    for batch in BATCHES:
        got = predict(path, x, batch, tmp_path).reshape(ROWS, -1)
        err = np.abs(got - want).max()
        assert err <= TOL, f"{name} opset {opset} batch {batch}: {err}"


def test_ops_covered(tmp_path):
    """The torch cases above really produce every op the loader runs."""
    seen = set()
    for name, cls, shape, opset in TORCH_CASES:
        path = tmp_path / f"{name}-{opset}.onnx"
        export(cls(), shape, opset, path)
        seen |= {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Gemm", "MatMul", "Add", "Relu", "LeakyRelu", "Sigmoid", "Tanh",
            "Softmax", "Flatten"} <= seen, seen


# ---- hand-built graphs ----------------------------------------------------

def save(graph, path, opset=13):
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))


def vinfo(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def test_gemm_attributes_and_identity(tmp_path):
    """alpha, beta, transB=0 with C [1, N]; transB=1 with a scalar C given
    as float_data; Identity at both ends; LeakyRelu's default alpha."""
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((9, 14)).astype(np.float32)      # [K, N]
    c1 = rng.standard_normal((1, 14)).astype(np.float32)
    w2 = rng.standard_normal((3, 14)).astype(np.float32)      # [N, K]
    c2 = np.array(0.75, dtype=np.float32)
    c2_t = helper.make_tensor("c2", TensorProto.FLOAT, [], [0.75])
    nodes = [
        helper.make_node("Identity", ["x"], ["x1"]),
        helper.make_node("Gemm", ["x1", "w1", "c1"], ["g1"], alpha=0.5,
                         beta=2.0),
        helper.make_node("LeakyRelu", ["g1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "c2"], ["g2"], transB=1),
        helper.make_node("Identity", ["g2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [vinfo("x", ["n", 9])],
                              [vinfo("y", ["n", 3])],
                              [init("w1", w1), init("c1", c1),
                               init("w2", w2), c2_t])
    path = tmp_path / "gemm.onnx"
    save(graph, path)

    x = rng.standard_normal((ROWS, 9)).astype(np.float32)
    h = 0.5 * (x.astype(np.float64) @ w1) + 2.0 * c1
    h = np.where(h < 0, 0.01 * h, h)
    want = h @ w2.T.astype(np.float64) + c2
    for batch in BATCHES:
        got = predict(path, x, batch, tmp_path).reshape(ROWS, 3)
        assert np.abs(got - want).max() <= TOL, batch


def test_gemm_activation_c_and_vector_matmul(tmp_path):
    """Gemm's C as an activation (scaled by beta), one value read by
    three nodes, MatMul by a 1-D weight giving a [batch] output, and a
    weight reached through Identity (as torch writes tied weights)."""
    rng = np.random.default_rng(11)
    w1 = rng.standard_normal((6, 4)).astype(np.float32)
    w2 = rng.standard_normal((4, 6)).astype(np.float32)
    v = rng.standard_normal((4,)).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["w2src"], ["w2"]),
        helper.make_node("Gemm", ["x", "w1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["x", "w2", "t"], ["g"], beta=0.5,
                         transB=1),
        helper.make_node("Add", ["g", "h"], ["s"]),
        helper.make_node("MatMul", ["s", "v"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [vinfo("x", ["n", 6])],
                              [vinfo("y", ["n"])],
                              [init("w1", w1), init("w2src", w2),
                               init("v", v)])
    path = tmp_path / "cact.onnx"
    save(graph, path)

    m = meta(path)
    assert m["output"]["shape"] == [-1] and m["noutputs"] == 1

    x = rng.standard_normal((ROWS, 6)).astype(np.float32)
    xd = x.astype(np.float64)
    h = xd @ w1
    want = (xd @ w2.T + 0.5 * np.tanh(h) + h) @ v
    for batch in BATCHES:
        got = predict(path, x, batch, tmp_path)
        assert np.abs(got - want).max() <= TOL, batch


def softmax_np(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("opset", [12, 13])
def test_softmax_opset_semantics(opset, tmp_path):
    """Softmax(axis=1) on [N, 2, 3]: opset 12 normalises over the 6
    values from axis 1 on, opset 13 over axis 1 alone."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)], "g",
        [vinfo("x", ["n", 2, 3])], [vinfo("y", ["n", 2, 3])])
    path = tmp_path / "sm.onnx"
    save(graph, path, opset)

    x = np.random.default_rng(3).standard_normal((ROWS, 2, 3)) * 3
    x = x.astype(np.float32)
    if opset >= 13:
        want = softmax_np(x.astype(np.float64), 1)
    else:
        want = softmax_np(x.reshape(ROWS, 6).astype(np.float64), 1)
    got = predict(path, x, 64, tmp_path).reshape(ROWS, 6)
    assert np.abs(got - want.reshape(ROWS, 6)).max() <= TOL

    m = meta(path)
    assert m["output"]["shape"] == [-1, 2, 3] and m["noutputs"] == 6


def test_fixed_batch_dim_is_dynamic(tmp_path):
    """A graph exported with batch 1 fixed still takes any batch."""
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["y"])], "g",
        [vinfo("x", [1, 4])], [vinfo("y", [1, 4])])
    path = tmp_path / "fixed.onnx"
    save(graph, path)
    assert meta(path)["input"]["shape"] == [-1, 4]
    x = np.linspace(-30, 30, 40, dtype=np.float32).reshape(10, 4)
    got = predict(path, x, 10, tmp_path).reshape(10, 4)
    assert np.abs(got - 1 / (1 + np.exp(-x.astype(np.float64)))).max() < TOL


# ---- refusals -------------------------------------------------------------

def refuse(path):
    r = run("--meta", path, check=False)
    assert r.returncode == 1, r.stdout
    return r.stderr


def test_unsupported_op_is_named(tmp_path):
    class ConvNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(2, 3, 3)

        def forward(self, x):
            return torch.relu(self.conv(x))

    path = tmp_path / "conv.onnx"
    export(ConvNet(), (2, 8), 13, path)
    err = refuse(path)
    assert 'unsupported op "Conv"' in err, err


def test_corrupt_files(tmp_path):
    path = tmp_path / "mlp.onnx"
    export(Mlp(), (16,), 13, path)
    data = path.read_bytes()

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[: len(data) // 2])
    assert "not a valid ONNX ModelProto" in refuse(bad)

    bad.write_bytes(b"\xff" * 300)
    assert "onnx:" in refuse(bad)

    bad.write_bytes(b"\x08\x07")        # a valid message without a graph
    assert "no graph" in refuse(bad)


def test_wrong_dtype(tmp_path):
    path = tmp_path / "double.onnx"
    export(Mlp().double(), (16,), 13, path, dtype=torch.float64)
    err = refuse(path)
    assert "DOUBLE" in err and "only FLOAT" in err, err

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"])], "g",
        [vinfo("x", ["n", 3])], [vinfo("y", ["n", 3])],
        [init("b", np.array([1, 2, 3], dtype=np.int64))])
    save(graph, path)
    err = refuse(path)
    assert 'initializer "b" has data type INT64' in err, err


@pytest.mark.parametrize("case", ["gemm_shape", "softmax_batch",
                                  "flatten_axis", "two_inputs", "cycle",
                                  "raw_size", "bias_shape", "transA"])
def test_bad_graphs(case, tmp_path):
    w = init("w", np.ones((5, 3), dtype=np.float32))
    x, y = vinfo("x", ["n", 4]), vinfo("y", ["n", 3])
    want = {
        "gemm_shape": "does not fit",
        "softmax_batch": "batch dimension",
        "flatten_axis": "Flatten",
        "two_inputs": "exactly one is supported",
        "cycle": "never produced",
        "raw_size": "bytes of raw data",
        "bias_shape": "does not broadcast",
        "transA": "transA",
    }[case]
    inits, ins = [w], [x]
    if case == "gemm_shape":
        nodes = [helper.make_node("Gemm", ["x", "w"], ["y"])]
    elif case == "softmax_batch":
        nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=0)]
    elif case == "flatten_axis":
        x = vinfo("x", ["n", 2, 2])
        ins = [x]
        nodes = [helper.make_node("Flatten", ["x"], ["y"], axis=2)]
    elif case == "two_inputs":
        ins = [x, vinfo("z", ["n", 4])]
        nodes = [helper.make_node("Add", ["x", "z"], ["y"])]
    elif case == "cycle":
        nodes = [helper.make_node("Relu", ["b"], ["a"]),
                 helper.make_node("Add", ["a", "x"], ["b"]),
                 helper.make_node("Relu", ["b"], ["y"])]
    elif case == "raw_size":
        t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3],
                        raw_data=b"\0" * 20)
        inits = [t]
        nodes = [helper.make_node("Gemm", ["x", "w"], ["y"])]
    elif case == "bias_shape":
        inits = [init("b", np.ones((2,), dtype=np.float32))]
        nodes = [helper.make_node("Add", ["x", "b"], ["y"])]
    else:
        inits = [init("w", np.ones((4, 3), dtype=np.float32))]
        nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)]
    path = tmp_path / f"{case}.onnx"
    save(helper.make_graph(nodes, "g", ins, [y], inits), path)
    err = refuse(path)
    assert want in err, err


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num, payload):
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def test_deep_nesting_refused(tmp_path):
    """Graph in an attribute in a node in a graph, 20,000 deep (a 1 MB
    file): protobuf-c would recurse until the stack overflows."""
    g = b""
    for _ in range(20000):
        g = _field(1, _field(5, _field(6, g)))   # Graph.node.attribute.g
    path = tmp_path / "deep.onnx"
    path.write_bytes(_field(7, g))               # Model.graph
    assert "nested deeper than" in refuse(path)


def test_message_flood_refused(tmp_path):
    """Millions of empty nodes: a few MB of file, gigabytes unpacked."""
    path = tmp_path / "flood.onnx"
    path.write_bytes(_field(7, b"\x0a\x00" * (1 << 22 | 1)))
    assert "more than" in refuse(path)


def test_mutated_models_never_crash(tmp_path):
    """Byte flips, truncations and splices of real models: each load
    either succeeds or fails with a message, never a crash."""
    seeds = []
    for name, cls, shape, opset in TORCH_CASES[4:]:
        p = tmp_path / f"{name}.onnx"
        export(cls(), shape, opset, p)
        seeds.append(p.read_bytes())

    rnd = random.Random(20261122)
    bad = tmp_path / "m.onnx"
    for i in range(60):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 8)):
            kind = rnd.random()
            pos = rnd.randrange(len(data))
            if kind < 0.6:
                data[pos] = rnd.randrange(256)
            elif kind < 0.8:
                data[pos:pos + rnd.randint(1, 16)] = b""
            else:
                data[pos:pos] = bytes(rnd.randrange(256)
                                      for _ in range(rnd.randint(1, 8)))
        if not data:
            continue
        bad.write_bytes(bytes(data))
        r = run("--meta", bad, check=False)
        assert r.returncode in (0, 1), (i, r.returncode, r.stderr)
        if r.returncode == 1:
            assert r.stderr.isprintable() or r.stderr.endswith("\n"), i
            assert "\ufffd" not in r.stderr, r.stderr
            continue
        # what still loads must also run
        nf = json.loads(r.stdout)["nfeatures"]
        x = np.linspace(-2, 2, 3 * nf, dtype=np.float32)
        predict(bad, x, 2, tmp_path)
