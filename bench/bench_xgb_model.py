#!/usr/bin/python3
"""
Writes the benchmark's XGBoost model: 500 trees of depth 8,
binary:logistic, 32 features, trained with python3-xgboost on
fixed-seed synthetic data (so every run benchmarks the same model).

usage: bench_xgb_model.py OUT.json [--trees 500] [--depth 8]
"""

import argparse
import os

import numpy as np
import xgboost as xgb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--features", type=int, default=32)
    a = ap.parse_args()

    rng = np.random.default_rng(20261122)
    x = rng.normal(size=(20000, a.features)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    z = np.nansum(x[:, :8] * rng.normal(size=8), axis=1) \
        + np.sin(np.nan_to_num(x[:, 8]) * 3) + rng.normal(size=len(x))
    y = (z > 0).astype(np.float32)

    params = {"objective": "binary:logistic", "max_depth": a.depth,
              "eta": 0.05, "seed": 1, "nthread": 2, "tree_method": "hist",
              "min_child_weight": 0, "lambda": 0.1}
    booster = xgb.train(params, xgb.DMatrix(x, y),
                        num_boost_round=a.trees)

    tmp = a.out + ".part.json"
    booster.save_model(tmp)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
