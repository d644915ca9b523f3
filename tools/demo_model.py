#!/usr/bin/python3
"""
Builds the demo's credit-risk model reproducibly: a binary:logistic
XGBoost model (python3-xgboost, fixed seed, one thread) trained on
synthetic transactions, saved as XGBoost JSON, plus a JSON file naming
its input features in column order.

usage: demo_model.py MODEL.json FEATURES.json

FEATURES.json: {"model": "credit-risk", "features": ["amount", ...]}.
The model's input row is those features as FP32 in that order (a
missing value may be NaN: the trees route it by default_left); its
output is the probability that the transaction is fraudulent.
"""

import json
import os
import sys

import numpy as np
import xgboost as xgb

FEATURES = [
    "amount",             # transaction amount (EUR)
    "login_hour",         # 0-23, hour of the login before the payment
    "account_age_days",   # days since the account was opened
    "failed_logins_24h",  # failed logins in the last 24 hours
    "txn_count_24h",      # transactions in the last 24 hours
    "device_age_days",    # days since this device was first seen
    "foreign_ip",         # 1 if the login came from abroad
    "new_payee",          # 1 if the payee was never paid before
]

SEED = 20240611


def synthetic(n, rng):
    amount = np.round(rng.lognormal(4.0, 1.3, n), 2)
    login_hour = rng.integers(0, 24, n)
    account_age = rng.integers(0, 3650, n)
    failed = rng.poisson(0.3, n)
    txns = rng.poisson(2.0, n)
    device_age = np.minimum(rng.exponential(200, n), account_age)
    foreign = rng.random(n) < 0.08
    new_payee = rng.random(n) < 0.25

    night = (login_hour < 6).astype(float)
    z = (-4.0 + 0.6 * np.log1p(amount) - 0.0009 * account_age
         + 1.1 * night + 0.7 * failed + 0.15 * txns
         - 0.004 * device_age + 1.3 * foreign + 0.9 * new_payee)
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-z))

    x = np.column_stack([amount, login_hour, account_age, failed, txns,
                         device_age, foreign, new_payee]).astype(np.float32)
    # a few unknown values: the model learns where missing ones go
    x[rng.random(x.shape) < 0.02] = np.nan
    return x, y.astype(np.float32)


def main():
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        return 2

    model_path, features_path = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(SEED)
    x, y = synthetic(20000, rng)

    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.2,
              "seed": SEED, "nthread": 1, "tree_method": "hist",
              "eval_metric": "auc"}
    d = xgb.DMatrix(x, y, feature_names=FEATURES)
    booster = xgb.train(params, d, num_boost_round=60)

    # no feature names in the file: the backend takes FP32 rows by position
    booster.feature_names = None
    tmp = model_path + ".part.json"
    booster.save_model(tmp)
    os.replace(tmp, model_path)

    with open(features_path + ".part", "w") as f:
        json.dump({"model": "credit-risk", "features": FEATURES}, f,
                  indent=2)
        f.write("\n")
    os.replace(features_path + ".part", features_path)

    p = booster.predict(xgb.DMatrix(x[:2000]))
    sys.stderr.write(f"demo_model: {model_path}: {len(FEATURES)} features, "
                     f"60 trees, fraud rate {y.mean():.3f}, "
                     f"mean score {p.mean():.3f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
