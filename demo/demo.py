"""The joblib-rs demo: what the package does today, timed against joblib when it is installed.

Run with ``make demo``. It grows with each capability into the full "cached, parallel
pipeline" demo; today it shows ``hash``, the key of every cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import joblib_rs

try:
    import joblib
except ImportError:
    joblib = None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    print(f"joblib-rs {joblib_rs.__version__}\n")
    rng = np.random.default_rng(0)
    features = rng.random((4000, 8192))  # 256 MB of float64
    dataset = {
        "features": features,
        "labels": rng.integers(0, 10, size=4000),
        "meta": [{"id": i, "source": f"sensor-{i % 7}", "gain": i * 0.01} for i in range(50_000)],
        "params": {"lr": 0.01, "layers": (128, 64), "seed": 0},
    }

    print("1. hash identifies content, canonically")
    print(f"   hash(dataset)                    = {joblib_rs.hash(dataset)}")
    reordered = {k: dataset[k] for k in reversed(list(dataset))}
    print(f"   same dict, other key order       = {joblib_rs.hash(reordered)}")
    print(f"   Fortran-ordered copy of features = "
          f"{joblib_rs.hash(np.asfortranarray(features[:500])) == joblib_rs.hash(features[:500])}"
          " (equal to the C-ordered one)")
    tweaked = features.copy()
    tweaked[1234, 42] += 1e-12
    print(f"   one element changed by 1e-12     -> differs: "
          f"{joblib_rs.hash(tweaked) != joblib_rs.hash(features)}\n")

    print("2. speed, side by side on the same objects")
    rows = [("256 MB array", features), ("50k small dicts", dataset["meta"]),
            ("whole dataset", dataset)]
    print(f"   {'object':<18} {'joblib-rs':>10} {'joblib':>10} {'speed-up':>9}")
    for name, obj in rows:
        ours, _ = timed(lambda obj=obj: joblib_rs.hash(obj))
        if joblib is not None:
            theirs, _ = timed(lambda obj=obj: joblib.hash(obj))
            speed_up = theirs / ours
            print(f"   {name:<18} {ours * 1e3:>8.1f}ms {theirs * 1e3:>8.1f}ms {speed_up:>8.1f}x")
        else:
            print(f"   {name:<18} {ours * 1e3:>8.1f}ms {'-':>10} {'-':>9}")


if __name__ == "__main__":
    main()
