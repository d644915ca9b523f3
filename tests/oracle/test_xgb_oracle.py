"""
Oracle: build/infergate-predict on XGBoost JSON models against
python3-xgboost's own Booster.predict (1.7.4), and the loader's refusals.

Predictions must match within 1e-6 absolute on 20,000 random rows with
10% NaN, for every supported objective, trees of depth 2 to 10 and 10 to
500 trees.  A share of the feature values are set exactly to split
thresholds of the model, so "x < cond goes left" on float32 is checked
where it matters.
"""

import json
import os
import random
import signal

import numpy as np
import pytest

from xgb_models import (PREDICT, NFEATURES, meta, model, run_predict,
                        split_conditions, synthetic)

xgb = pytest.importorskip("xgboost")

ROWS = 20000
TOL = 1e-6

# (objective, depth, boosting rounds, num_class, base_score)
CASES = [
    ("reg:squarederror", 2, 500, 0, None),
    ("reg:squarederror", 10, 10, 0, None),
    ("reg:logistic", 6, 60, 0, None),
    ("binary:logistic", 8, 200, 0, 0.3),
    ("binary:logistic", 2, 10, 0, None),
    ("binary:logitraw", 5, 100, 0, 0.3),
    ("multi:softprob", 4, 40, 4, None),
    ("multi:softmax", 10, 8, 3, None),
]


@pytest.fixture(scope="module", autouse=True)
def built():
    if not PREDICT.exists():
        pytest.fail(f"{PREDICT} missing: run make build first")


def eval_rows(path, seed):
    """20,000 rows, 10% NaN, 5% of values set exactly to thresholds."""
    x = synthetic(ROWS, seed)
    rng = np.random.default_rng(seed + 99)
    splits = split_conditions(path)
    picks = rng.integers(0, len(splits), ROWS // 2)
    rows = rng.integers(0, ROWS, ROWS // 2)
    for r, i in zip(rows, picks):
        f, c = splits[i]
        x[r, f] = np.float32(c)
    return x


@pytest.mark.parametrize("objective,depth,rounds,num_class,base", CASES,
                         ids=[f"{c[0]}-d{c[1]}-r{c[2]}" for c in CASES])
def test_matches_xgboost(objective, depth, rounds, num_class, base,
                         tmp_path):
    path, booster = model(objective, depth, rounds, num_class, base)
    x = eval_rows(path, seed=depth * 1000 + rounds)

    ref = booster.predict(xgb.DMatrix(x, missing=np.nan),
                          output_margin=False).astype(np.float32)
    ref = ref.reshape(ROWS, -1)

    # all rows at once on 2 threads, batches of 29 on one thread (a lane
    # of 16 rows, then 13 rows walking lanes of trees), and single rows
    for args in (["--threads", "2"], ["--threads", "1", "--batch", "29"],
                 ["--threads", "2", "--batch", "1"]):
        xs = x if args[-1] != "1" else x[:2000]
        rs = ref if args[-1] != "1" else ref[:2000]
        rc, y, err = run_predict(path, xs, tmp_path, *args)
        assert rc == 0, err
        y = y.reshape(len(xs), -1)
        assert y.shape == rs.shape
        diff = np.abs(y.astype(np.float64) - rs.astype(np.float64))
        assert diff.max() <= TOL, (args, diff.max(), int(diff.argmax()))

    if objective == "multi:softmax":
        assert set(np.unique(y)) <= set(range(num_class))


def test_threshold_equality_goes_right(tmp_path):
    """x == cond goes right, a hair below goes left, NaN per default."""
    path, booster = model("reg:squarederror", 2, 10)
    f, c = split_conditions(path)[0]
    c = np.float32(c)
    x = np.zeros((3, NFEATURES), dtype=np.float32)
    x[:, :] = np.nan
    x[0, f] = c
    x[1, f] = np.nextafter(c, np.float32(-np.inf))
    ref = booster.predict(xgb.DMatrix(x, missing=np.nan))
    rc, y, err = run_predict(path, x, tmp_path)
    assert rc == 0, err
    assert np.abs(y - ref).max() <= TOL
    assert ref[0] != ref[1]          # the test point straddles a split


def test_meta_shapes():
    path, _ = model("multi:softprob", 4, 40, 4)
    rc, m, err = meta(path)
    assert rc == 0, err
    assert m["platform"] == "xgboost_json"
    assert m["input"]["name"] == "input__0"
    assert m["input"]["shape"] == [-1, NFEATURES]
    assert m["output"]["name"] == "output__0"
    assert m["output"]["shape"] == [-1, 4]
    assert m["nfeatures"] == NFEATURES and m["noutputs"] == 4

    path, _ = model("multi:softmax", 10, 8, 3)
    rc, m, err = meta(path)
    assert rc == 0, err
    assert m["output"]["shape"] == [-1, 1]


# ---- refusals -----------------------------------------------------------

def small_model_text():
    path, _ = model("binary:logistic", 2, 10)
    return path.read_text()


def refused(tmp_path, text, *needles, name="bad.json"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc, m, err = meta(p)
    assert rc == 1, (rc, err)
    assert m is None
    for n in needles:
        assert n in err, err
    return err


def test_categorical_refused(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    x[:, 0] = rng.integers(0, 5, 400)
    d = xgb.DMatrix(x, (x[:, 0] > 2).astype(np.float32),
                    feature_types=["c", "q", "q"], enable_categorical=True)
    b = xgb.train({"tree_method": "hist", "max_cat_to_onehot": 1,
                   "objective": "binary:logistic"}, d, num_boost_round=3)
    p = tmp_path / "cat.json"
    b.save_model(str(p))
    text = p.read_text()
    assert "NaN" in text                  # XGBoost's non-JSON token
    refused(tmp_path, text, "categorical")

    # without the feature_types hint: the split itself is refused
    m = json.loads(text.replace("NaN", "0"))
    m["learner"]["feature_types"] = []
    refused(tmp_path, json.dumps(m), "categorical splits are not supported")
    for t in m["learner"]["gradient_booster"]["model"]["trees"]:
        t["categories_nodes"] = []
    refused(tmp_path, json.dumps(m), "categorical splits are not supported")


@pytest.mark.parametrize("booster", ["gblinear", "dart"])
def test_other_boosters_refused(booster, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    b = xgb.train({"booster": booster}, xgb.DMatrix(x, x[:, 0] > 0),
                  num_boost_round=2)
    p = tmp_path / "m.json"
    b.save_model(str(p))
    refused(tmp_path, p.read_text(), f'booster "{booster}" is not supported')


def test_other_objective_refused(tmp_path):
    m = json.loads(small_model_text())
    m["learner"]["objective"]["name"] = "count:poisson"
    refused(tmp_path, json.dumps(m), "count:poisson", "not supported")


def test_truncated_and_corrupt_refused(tmp_path):
    text = small_model_text()
    refused(tmp_path, text[: len(text) // 2], "XGBoost JSON")
    refused(tmp_path, text[:-1], "XGBoost JSON")
    refused(tmp_path, "{" * 200000, "nested deeper")
    refused(tmp_path, '{"learner": 1}', "no learner.gradient_booster")
    refused(tmp_path, b"{\x00}", "NUL byte")
    refused(tmp_path, "{}", "no learner")

    def edit(fn):
        m = json.loads(text)
        fn(m["learner"], m["learner"]["gradient_booster"]["model"])
        return json.dumps(m)

    def tree0(mdl):
        return mdl["trees"][0]

    cases = [
        (lambda l, m: tree0(m)["left_children"].__setitem__(0, 10 ** 6),
         "bad children"),
        (lambda l, m: tree0(m)["left_children"].__setitem__(0, 0),
         "bad children"),                                   # a cycle
        (lambda l, m: tree0(m)["right_children"].__setitem__(
            0, tree0(m)["left_children"][0]), "bad children"),  # a DAG
        (lambda l, m: tree0(m)["right_children"].__setitem__(0, -5),
         "bad children"),
        (lambda l, m: tree0(m)["split_indices"].__setitem__(0, NFEATURES),
         "split feature"),
        (lambda l, m: tree0(m)["split_indices"].__setitem__(0, -1),
         "split feature"),
        (lambda l, m: tree0(m)["split_conditions"].pop(), "arrays of"),
        (lambda l, m: tree0(m)["default_left"].__setitem__(0, 7),
         "default_left"),
        (lambda l, m: tree0(m)["split_conditions"].__setitem__(0, "x"),
         "bad split condition"),
        (lambda l, m: m["tree_info"].__setitem__(0, 1), "tree_info"),
        (lambda l, m: m["tree_info"].pop(), "tree_info"),
        (lambda l, m: m["trees"].clear(), "no trees"),
        (lambda l, m: m["gbtree_model_param"].__setitem__("num_trees", "3"),
         "num_trees"),
        (lambda l, m: l["learner_model_param"].__setitem__("num_feature",
                                                           "0"),
         "num_feature"),
        (lambda l, m: l["learner_model_param"].__setitem__("base_score",
                                                           "1.5"),
         "base_score"),
        (lambda l, m: l["learner_model_param"].__setitem__("base_score",
                                                           "abc"),
         "base_score"),
        (lambda l, m: tree0(m)["tree_param"].__setitem__(
            "size_leaf_vector", "2"), "vector leaves"),
    ]
    for fn, needle in cases:
        refused(tmp_path, edit(fn), needle)


def test_nan_leaf_refused_and_infinity_accepted(tmp_path):
    text = small_model_text()
    m = json.loads(text)
    t = m["learner"]["gradient_booster"]["model"]["trees"][0]
    leaf = t["left_children"].index(-1)
    t["split_conditions"][leaf] = 12345.5
    s = json.dumps(m)
    refused(tmp_path, s.replace("12345.5", "NaN"), "bad leaf value")

    # XGBoost writes Infinity for infinite values; a leaf may hold one
    p = tmp_path / "inf.json"
    p.write_text(s.replace("12345.5", "-Infinity"))
    rc, _, err = meta(p)
    assert rc == 0, err


def test_mutated_models_never_crash(tmp_path):
    """Random byte and token mutations: a load error or a model, never a
    signal (the loader bounds-checks everything it reads)."""
    text = small_model_text()
    rnd = random.Random(11)
    x = synthetic(64, 5)
    tokens = ["-1", "0", "1", "99999", "4294967295", "2147483647", "1e999",
              "-1e999", "NaN", "[]", "{}", '"x"', "null", "true"]
    outcomes = set()
    # an ASan build starts slowly (cuBLAS is linked): fewer rounds there;
    # tests/fuzz/fuzz_xgb.c does the long version
    for i in range(30 if os.environ.get("IG_SANITIZE") == "1" else 150):
        s = list(text)
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(len(s))
            if rnd.random() < 0.5:
                s[pos] = rnd.choice('0123456789-,[]{}":eE.')
            else:
                s[pos:pos + rnd.randint(1, 3)] = list(rnd.choice(tokens))
        p = tmp_path / "mut.json"
        p.write_text("".join(s))
        rc, _, err = run_predict(p, x, tmp_path)
        assert rc in (0, 1), (i, rc, err)
        assert rc >= 0 and rc != -signal.SIGSEGV
        outcomes.add(rc)
    assert 1 in outcomes                 # mutations do get refused


def test_demo_model(tmp_path):
    """scripts/demo_model.py: a loadable credit-risk model, its feature
    list, and the same scores as xgboost; risky beats safe."""
    import subprocess
    import sys
    from xgb_models import REPO

    mp, fp = tmp_path / "credit-risk.json", tmp_path / "features.json"
    p = subprocess.run([sys.executable, str(REPO / "scripts/demo_model.py"),
                        str(mp), str(fp)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    names = json.loads(fp.read_text())["features"]
    assert names[:3] == ["amount", "login_hour", "account_age_days"]

    rc, m, err = meta(mp)
    assert rc == 0, err
    assert m["input"]["shape"] == [-1, len(names)]

    risky = dict(amount=950, login_hour=3, account_age_days=12,
                 failed_logins_24h=4, new_device=1, foreign_ip=1,
                 txn_count_7d=1, avg_amount_30d=80, credit_limit=1000)
    safe = dict(amount=20, login_hour=14, account_age_days=2000,
                failed_logins_24h=0, new_device=0, foreign_ip=0,
                txn_count_7d=10, avg_amount_30d=60, credit_limit=5000)
    x = np.array([[r.get(n, 0) for n in names] for r in (risky, safe)]
                 + [[np.nan] * len(names)], dtype=np.float32)
    rc, y, err = run_predict(mp, x, tmp_path)
    assert rc == 0, err
    ref = xgb.Booster(model_file=str(mp)).predict(
        xgb.DMatrix(x, feature_names=names))
    assert np.abs(y - ref).max() <= TOL
    assert y[0] > 0.5 > 0.05 > y[1]


def test_single_leaf_tree(tmp_path):
    """A tree that is one leaf (depth 0), as xgboost itself reads the
    edited file, in lanes of rows and lanes of trees."""
    m = json.loads(small_model_text())
    trees = m["learner"]["gradient_booster"]["model"]["trees"]
    t = trees[0]
    t.update({"left_children": [-1], "right_children": [-1],
              "parents": [2147483647], "split_indices": [0],
              "split_conditions": [0.25], "default_left": [0],
              "split_type": [0], "base_weights": [0.25],
              "loss_changes": [0.0], "sum_hessian": [1.0]})
    t["tree_param"]["num_nodes"] = "1"
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(m))

    x = synthetic(500, 9)
    ref = xgb.Booster(model_file=str(p)).predict(xgb.DMatrix(x))
    for args in ([], ["--batch", "1"]):
        rc, y, err = run_predict(p, x, tmp_path, *args)
        assert rc == 0, err
        assert np.abs(y - ref).max() <= TOL


def test_multi_target_regression(tmp_path):
    """num_target 3 (reg:squarederror, one tree per target per round):
    three outputs per row, as xgboost predicts them."""
    rng = np.random.default_rng(12)
    x = synthetic(3000, 12)
    y = np.column_stack([np.nan_to_num(x[:, 0]) * 3,
                         np.sin(np.nan_to_num(x[:, 3])),
                         rng.normal(size=3000)]).astype(np.float32)
    b = xgb.train({"tree_method": "hist", "max_depth": 5, "nthread": 2},
                  xgb.DMatrix(x, y), num_boost_round=20)
    p = tmp_path / "mt.json"
    b.save_model(str(p))

    rc, m, err = meta(p)
    assert rc == 0, err
    assert m["output"]["shape"] == [-1, 3]

    xe = synthetic(5000, 13)
    ref = b.predict(xgb.DMatrix(xe))
    rc, y, err = run_predict(p, xe, tmp_path, "--batch", "37")
    assert rc == 0, err
    assert np.abs(y.reshape(ref.shape) - ref).max() <= TOL
