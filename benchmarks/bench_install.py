"""scikit-learn on joblib vs on joblib-rs through ``joblib_rs.install()``, side by side.

Each measurement runs in a fresh interpreter (imports excluded from the time), alternating
the two libraries: ``GridSearchCV(RandomForestClassifier(), small grid, n_jobs=2,
verbose=3)`` on 2,000 samples, and the cost of ``install()`` itself.

Usage: ``python benchmarks/bench_install.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

GRID = r"""
import contextlib, io, time
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV

if __name__ == "__main__":
    x, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    search = GridSearchCV(RandomForestClassifier(random_state=0),
                          {"n_estimators": [20, 50], "max_depth": [4, 8]}, cv=3, n_jobs=2,
                          verbose=3)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        search.fit(x, y)
        elapsed = time.perf_counter() - start
    import joblib
    print(elapsed, joblib.Parallel.__module__)
"""

INSTALL_COST = r"""
import time, joblib_rs
start = time.perf_counter(); joblib_rs.install(); mid = time.perf_counter()
import joblib
end = time.perf_counter()
print(mid - start, end - mid)
"""


def _run(code: str, installed: bool) -> list[str]:
    env = dict(os.environ)
    env.pop("JOBLIB_RS_INSTALL", None)
    if installed:
        env["JOBLIB_RS_INSTALL"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    # Workers print verbose lines of their own: the measurement is the last line.
    return out.stdout.strip().splitlines()[-1].split()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    times: dict[str, list[float]] = {"joblib": [], "joblib-rs": []}
    for _ in range(opts.repeat):
        for name, installed in (("joblib", False), ("joblib-rs", True)):
            seconds, module = _run(GRID, installed)
            expected = "joblib_rs.parallel" if installed else "joblib.parallel"
            assert module == expected, (name, module)
            times[name].append(float(seconds))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"GridSearchCV(RandomForest, 4 candidates x 3 folds, n_jobs=2, verbose=3), 2000 samples,"
        f" median of {opts.repeat}:"
    )
    for name, value in med.items():
        print(f"  {name:10s} {value * 1e3:8.0f} ms   runs: {[round(t, 2) for t in times[name]]}")
    print(f"  joblib-rs is {med['joblib'] / med['joblib-rs']:.2f}x joblib's speed")
    costs = [float(_run(INSTALL_COST, False)[0]) for _ in range(opts.repeat)]
    print(f"install() itself: median {statistics.median(costs) * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
