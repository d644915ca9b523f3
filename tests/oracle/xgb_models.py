"""
XGBoost reference models for the oracle tests and the benchmark:
trained with python3-xgboost (1.7.4) on fixed-seed synthetic data and
cached under build/oracle/ by their parameters, so a second run of the
suite does not train again.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("IG_BUILD") or REPO / "build")
PREDICT = BUILD / "infergate-predict"
CACHE = BUILD / "oracle"

NFEATURES = 16


def synthetic(rows, seed, nan_fraction=0.1, nfeatures=NFEATURES):
    """Rows of float32 features: mixed scales, 10% NaN by default."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, nfeatures)).astype(np.float32)
    x[:, 1] *= 1000.0                         # a wide-range feature
    x[:, 2] = rng.integers(0, 24, rows)       # an integer feature
    if nan_fraction:
        x[rng.random(x.shape) < nan_fraction] = np.nan
    return x


def labels(x, objective, num_class, seed):
    rng = np.random.default_rng(seed + 1)
    z = np.nan_to_num(x[:, 0]) + 0.002 * np.nan_to_num(x[:, 1]) \
        - 0.1 * np.nan_to_num(x[:, 2]) + np.sin(np.nan_to_num(x[:, 3])) \
        + 0.5 * rng.normal(size=len(x))
    if objective.startswith("multi:"):
        edges = np.quantile(z, np.linspace(0, 1, num_class + 1)[1:-1])
        return np.digitize(z, edges).astype(np.float32)
    if objective in ("binary:logistic", "binary:logitraw", "reg:logistic"):
        return (z > 0).astype(np.float32)
    return (10.0 * z).astype(np.float32)


def model(objective, depth, rounds, num_class=0, base_score=None, seed=7):
    """Path of a trained model JSON (cached) and the Booster itself."""
    import xgboost as xgb

    key = f"{objective.replace(':', '_')}-d{depth}-r{rounds}-c{num_class}" \
          f"-b{base_score}-s{seed}"
    path = CACHE / f"{key}.json"

    params = {"objective": objective, "max_depth": depth, "eta": 0.3,
              "seed": seed, "nthread": 2, "tree_method": "hist"}
    if num_class:
        params["num_class"] = num_class
    if base_score is not None:
        params["base_score"] = base_score

    if path.exists():
        booster = xgb.Booster(model_file=str(path))
        booster.set_param({"nthread": 2})
        return path, booster

    CACHE.mkdir(parents=True, exist_ok=True)
    x = synthetic(4000, seed)
    y = labels(x, objective, num_class, seed)
    booster = xgb.train(params, xgb.DMatrix(x, y), num_boost_round=rounds)
    tmp = CACHE / f"{key}.{os.getpid()}.part.json"   # .json: JSON format
    booster.save_model(str(tmp))
    tmp.rename(path)
    return path, booster


def split_conditions(path):
    """(feature, threshold) of every split in a model file."""
    m = json.loads(Path(path).read_text())
    out = []
    for t in m["learner"]["gradient_booster"]["model"]["trees"]:
        for lc, f, c in zip(t["left_children"], t["split_indices"],
                            t["split_conditions"]):
            if lc != -1:
                out.append((f, c))
    return out


def run_predict(model_path, x, tmp_path, *args):
    """Our predictions for rows x: (returncode, output array, stderr)."""
    inp = tmp_path / "in.f32"
    out = tmp_path / "out.f32"
    np.ascontiguousarray(x, dtype=np.float32).tofile(inp)
    if out.exists():
        out.unlink()
    p = subprocess.run([str(PREDICT), "--device", "cpu", *args,
                        str(model_path), str(inp), str(out)],
                       capture_output=True, text=True, timeout=120)
    y = np.fromfile(out, dtype=np.float32) if p.returncode == 0 else None
    return p.returncode, y, p.stderr


def meta(model_path):
    """(returncode, parsed --meta output or None, stderr)."""
    p = subprocess.run([str(PREDICT), "--device", "cpu", "--meta",
                        str(model_path)], capture_output=True, text=True,
                       timeout=60)
    m = json.loads(p.stdout) if p.returncode == 0 else None
    return p.returncode, m, p.stderr
