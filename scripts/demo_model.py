#!/usr/bin/python3
"""
The demo's model, built reproducibly: an XGBoost binary:logistic credit-
risk model trained on synthetic applicants (fixed seed), written with
xgboost's own save_model (JSON), and the feature names in input order.

usage: demo_model.py MODEL.json FEATURES.json
"""

import json
import sys

import numpy as np
import xgboost as xgb

FEATURES = ["amount", "login_hour", "account_age_days",
            "failed_logins_24h", "new_device", "foreign_ip",
            "txn_count_7d", "avg_amount_30d", "credit_limit"]


def applicants(rng, n):
    amount = rng.lognormal(4.5, 1.0, n)
    login_hour = rng.integers(0, 24, n)
    age = rng.integers(0, 3650, n)
    failed = rng.poisson(0.3, n)
    new_device = rng.random(n) < 0.15
    foreign_ip = rng.random(n) < 0.08
    txn7 = rng.poisson(6, n)
    avg30 = rng.lognormal(4.3, 0.8, n)
    limit = rng.choice([500, 1000, 2500, 5000, 10000], n)
    x = np.column_stack([amount, login_hour, age, failed, new_device,
                         foreign_ip, txn7, avg30, limit]).astype(np.float32)
    # risk rises with a large amount for the account, night logins, young
    # accounts, failed logins, new devices and foreign addresses
    z = (1.2 * np.log1p(amount / avg30) + 0.9 * (amount > 0.8 * limit)
         + 0.8 * ((login_hour < 6) | (login_hour > 22)) - 0.6 * np.log1p(age)
         / np.log(3650) * 3 + 0.7 * failed + 1.1 * new_device
         + 1.3 * foreign_ip - 0.05 * txn7 - 1.5)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    # a few missing values, as real feeds have
    x[rng.random(x.shape) < 0.02] = np.nan
    return x, y


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: demo_model.py MODEL.json FEATURES.json")
    rng = np.random.default_rng(42)
    x, y = applicants(rng, 20000)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4,
                         "eta": 0.3, "seed": 42, "nthread": 1,
                         "tree_method": "exact"},
                        xgb.DMatrix(x, label=y, feature_names=FEATURES),
                        num_boost_round=60)
    booster.save_model(sys.argv[1])
    with open(sys.argv[2], "w") as f:
        json.dump({"features": FEATURES}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
