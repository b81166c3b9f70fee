"""Detection indices from river's ADWIN and Page-Hinkley on generated
streams with known change points, for tests/reference.rs.

Prints one JSON document: a list of streams, each with its values and, per
detector configuration, the indices river flagged.
"""

import json
import sys

import numpy as np
from river import drift

rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 11)


def stream(segments):
    """Concatenates (n, mean, std) normal segments."""
    return np.concatenate([rng.normal(m, s, n) for n, m, s in segments])


STREAMS = {
    "mean steps": stream([(1000, 0, 1), (1000, 2, 1), (1000, -1, 1)]),
    "variance change": stream([(1500, 5, 0.5), (1500, 5, 3)]),
    "slow ramp": np.linspace(0, 8, 3000) + rng.normal(0, 1, 3000),
    "no change": stream([(4000, 10, 2)]),
    "bernoulli errors": np.concatenate(
        [rng.binomial(1, 0.1, 1500), rng.binomial(1, 0.4, 1500)]
    ).astype(float),
    "spiky sensor": np.where(rng.random(3000) < 0.01, 50.0, 0.0) + stream([(1500, 1, 0.1), (1500, 1.5, 0.1)]),
}

CONFIGS = [
    ("adwin", {}),
    ("adwin", {"delta": 0.01, "clock": 1}),
    ("adwin", {"delta": 0.0001, "clock": 16, "max_buckets": 3, "min_window_length": 10, "grace_period": 50}),
    ("adwin", {"delta": 0.05, "clock": 4, "max_buckets": 2, "min_window_length": 1, "grace_period": 5}),
    ("page_hinkley", {}),
    ("page_hinkley", {"min_instances": 10, "delta": 0.01, "threshold": 20, "alpha": 0.999}),
    ("page_hinkley", {"threshold": 10, "mode": "up"}),
    ("page_hinkley", {"threshold": 10, "mode": "down"}),
]


def detections(kind, params, xs):
    det = drift.ADWIN(**params) if kind == "adwin" else drift.PageHinkley(**params)
    found = []
    for i, x in enumerate(xs):
        det.update(float(x))
        if det.drift_detected:
            found.append(i)
    return found


out = []
for name, xs in STREAMS.items():
    out.append(
        {
            "name": name,
            "values": [float(x) for x in xs],
            "runs": [
                {"kind": kind, "params": params, "detections": detections(kind, params, xs)}
                for kind, params in CONFIGS
            ],
        }
    )
json.dump(out, sys.stdout)
