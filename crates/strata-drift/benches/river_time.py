"""Times river's detectors and Evidently's drift tests for benches/drift.rs.

usage: river_time.py detectors STREAM.f64
       river_time.py stats REFERENCE.f64 CURRENT.f64 PAIRS

detectors: reads detector names (adwin, page_hinkley) from standard
input, one a line; for each, runs river's detector once over the whole
stream and prints one JSON line: the seconds it took and the indices it
flagged. The bench alternates these runs with its own, so both sides are
timed on the machine as it is at that moment.

stats: prints JSON, seconds per (reference, current) comparison for each
Evidently test.
"""

import json
import sys
import time

import numpy as np


def detectors(path):
    from river import drift

    xs = np.fromfile(path, dtype="<f8").tolist()
    makers = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley}
    for line in sys.stdin:
        det = makers[line.strip()]()
        found = []
        start = time.perf_counter()
        for i, x in enumerate(xs):
            det.update(x)
            if det.drift_detected:
                found.append(i)
        elapsed = time.perf_counter() - start
        print(json.dumps({"seconds": elapsed, "detections": found}), flush=True)


def stats(ref_path, cur_path, pairs):
    import pandas as pd
    from evidently.legacy.calculations.stattests import (
        jensenshannon_stat_test,
        ks_stat_test,
        psi_stat_test,
        wasserstein_stat_test,
    )
    from evidently.legacy.core import ColumnType

    reference = np.fromfile(ref_path, dtype="<f8")
    current = np.fromfile(cur_path, dtype="<f8").reshape(pairs, -1)
    ref = pd.Series(reference)
    out = {}
    for name, test in [
        ("ks", ks_stat_test),
        ("wasserstein", wasserstein_stat_test),
        ("jensenshannon", jensenshannon_stat_test),
        ("psi", psi_stat_test),
    ]:
        start = time.perf_counter()
        for row in current:
            test(ref, pd.Series(row), ColumnType.Numerical, None)
        out[name] = (time.perf_counter() - start) / pairs
    json.dump(out, sys.stdout)


if sys.argv[1] == "detectors":
    detectors(sys.argv[2])
else:
    stats(sys.argv[2], sys.argv[3], int(sys.argv[4]))
