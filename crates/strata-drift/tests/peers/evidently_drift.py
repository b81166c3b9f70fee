"""Drift statistics from Evidently on generated data, for tests/reference.rs.

Prints one JSON document: a list of cases, each with the reference and
current samples and what Evidently's stat tests return on them.
"""

import json
import sys
import warnings

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests import (
    chi_stat_test,
    jensenshannon_stat_test,
    ks_stat_test,
    psi_stat_test,
    wasserstein_stat_test,
)
from evidently.legacy.core import ColumnType

warnings.filterwarnings("ignore")
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 7)

NUMERIC_TESTS = {
    "ks": ks_stat_test,
    "wasserstein": wasserstein_stat_test,
    "jensenshannon": jensenshannon_stat_test,
    "psi": psi_stat_test,
}
CATEGORICAL_TESTS = {
    "chisquare": chi_stat_test,
    "jensenshannon": jensenshannon_stat_test,
    "psi": psi_stat_test,
}


def numeric_case(name, reference, current):
    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    results = {}
    for test, fn in NUMERIC_TESTS.items():
        r = fn(pd.Series(reference), pd.Series(current), ColumnType.Numerical, None)
        results[test] = {"value": float(r.drift_score), "drifted": bool(r.drifted)}
    return {
        "name": name,
        "kind": "numeric",
        "reference": reference.tolist(),
        "current": current.tolist(),
        "results": results,
    }


def categorical_case(name, reference, current):
    results = {}
    for test, fn in CATEGORICAL_TESTS.items():
        r = fn(pd.Series(reference), pd.Series(current), ColumnType.Categorical, None)
        results[test] = {"value": float(r.drift_score), "drifted": bool(r.drifted)}
    return {
        "name": name,
        "kind": "categorical",
        "reference": list(reference),
        "current": list(current),
        "results": results,
    }


cases = [
    numeric_case("same normal", rng.normal(20, 2, 800), rng.normal(20, 2, 500)),
    numeric_case("mean shift", rng.normal(20, 2, 800), rng.normal(20.3, 2, 500)),
    numeric_case("small shift, equal sizes", rng.normal(0, 1, 300), rng.normal(0.2, 1, 300)),
    numeric_case("scale change", rng.normal(5, 1, 1000), rng.normal(5, 1.15, 700)),
    numeric_case("lognormal vs shifted", rng.lognormal(0, 0.5, 2000), rng.lognormal(0.06, 0.5, 1500)),
    numeric_case("tiny samples", rng.normal(0, 1, 7), rng.normal(1, 1, 5)),
    numeric_case("uniform, large", rng.uniform(0, 10, 9000), rng.uniform(0.05, 10.05, 10000)),
    numeric_case("asymptotic p-value", rng.normal(0, 1, 12000), rng.normal(0.03, 1, 15000)),
    numeric_case("few distinct values", rng.integers(0, 6, 600).astype(float), rng.integers(1, 7, 400).astype(float)),
    numeric_case("quantised sensor", np.round(rng.normal(50, 4, 1200), 1), np.round(rng.normal(50.5, 4, 900), 1)),
    numeric_case("stuck sensor", rng.normal(3, 0.5, 500), np.full(200, 3.2)),
    numeric_case("disjoint", rng.normal(0, 1, 400), rng.normal(10, 1, 300)),
    numeric_case("gcd case", rng.normal(0, 1, 120), rng.normal(0.3, 1, 90)),
    categorical_case(
        "firmware mix",
        list(rng.choice(["2.1", "2.2", "2.3"], 900, p=[0.5, 0.3, 0.2])),
        list(rng.choice(["2.1", "2.2", "2.3"], 600, p=[0.3, 0.3, 0.4])),
    ),
    categorical_case(
        "same categories",
        list(rng.choice(["a", "b", "c", "d"], 1000)),
        list(rng.choice(["a", "b", "c", "d"], 800)),
    ),
    categorical_case(
        "new category",
        list(rng.choice(["ok", "warn"], 500, p=[0.9, 0.1])),
        list(rng.choice(["ok", "warn", "fault"], 400, p=[0.8, 0.1, 0.1])),
    ),
]
json.dump(cases, sys.stdout)
