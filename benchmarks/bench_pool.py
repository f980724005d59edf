"""The default process backend ('loky'): joblib-rs's Rust pool beside joblib's loky, one run.

python benchmarks/bench_pool.py [--quick] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time

import joblib_rs

from _common import Row, best_time, parser, print_table, write_json

try:
    import joblib
except ImportError:
    joblib = None

COLD_START = """
import time
from {mod} import Parallel, delayed
start = time.perf_counter()
Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(10))
print(time.perf_counter() - start)
"""


def cold_start(mod: str, repeat: int) -> float:
    """First Parallel(n_jobs=2) call in a fresh interpreter (import excluded)."""
    times = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", COLD_START.format(mod=mod)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        times.append(float(out.stdout.split()[-1]))
    return min(times)


def warm_call(mod, calls: int) -> float:
    """Median latency of a 10-task call on the warm pool."""
    mod.Parallel(n_jobs=2)(mod.delayed(abs)(-i) for i in range(10))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        mod.Parallel(n_jobs=2)(mod.delayed(abs)(-i) for i in range(10))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_tasks(mod, n: int) -> None:
    out = mod.Parallel(n_jobs=2)(mod.delayed(math.sqrt)(i) for i in range(n))
    assert len(out) == n


def sleepers(mod, n: int) -> None:
    mod.Parallel(n_jobs=2)(mod.delayed(time.sleep)(0.001) for _ in range(n))


def main() -> None:
    args = parser(__doc__).parse_args()
    scale = 10 if args.quick else 1
    mods = {"rs": joblib_rs, "jl": joblib}
    rows = [
        Row(
            "first call, fresh interpreter",
            cold_start("joblib", args.repeat) if joblib else None,
            cold_start("joblib_rs", args.repeat),
            "<= 1/2 joblib",
        ),
        Row(
            "warm 10-task call (median)",
            warm_call(joblib, 50) if joblib else None,
            warm_call(joblib_rs, 200),
            "<= 1 ms",
        ),
    ]
    for name, fn, n, target in [
        (f"{100_000 // scale} tiny tasks", tiny_tasks, 100_000 // scale, ">= 2x"),
        (
            f"{1000 // scale} tasks of 1 ms sleep",
            sleepers,
            1000 // scale,
            f"ideal {0.5 / scale:.2f} s",
        ),
    ]:
        theirs = best_time(lambda fn=fn, n=n: fn(mods["jl"], n), args.repeat) if joblib else None
        ours = best_time(lambda fn=fn, n=n: fn(mods["rs"], n), args.repeat)
        rows.append(Row(name, theirs, ours, target))
    print_table("process pool, n_jobs=2", rows)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
