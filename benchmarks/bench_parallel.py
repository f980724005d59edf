#!/usr/bin/env python
"""Parallel: joblib-rs side by side with joblib, in one run, on the same machine.

Usage:
    python benchmarks/bench_parallel.py [--quick] [--repeat N] [--json out.json]

Each workload runs on both libraries, alternating, ``repeat`` times; the table shows the best
time of each and the ratio joblib / joblib-rs (above 1: joblib-rs is faster). Compare ratios,
never absolute times across runs: this machine is shared. The speed targets of the default
backend against ``multiprocessing.Pool`` too (tiny tasks, warm call, first call, 50 MB
results) are ``benchmarks/bench_targets.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable

import joblib

import joblib_rs


def _tiny_tasks(mod, n: int) -> None:
    out = mod.Parallel(n_jobs=2, backend="threading")(mod.delayed(math.sqrt)(i) for i in range(n))
    assert len(out) == n and out[-1] == math.sqrt(n - 1)


def _small_call(mod, calls: int) -> None:
    # Per-call latency: `calls` warm calls of 10 tasks each.
    for _ in range(calls):
        out = mod.Parallel(n_jobs=2, backend="threading")(
            mod.delayed(math.sqrt)(i) for i in range(10)
        )
    assert out[4] == 2.0


def _sequential(mod, n: int) -> None:
    out = mod.Parallel(n_jobs=1)(mod.delayed(math.sqrt)(i) for i in range(n))
    assert len(out) == n


def _generator(mod, n: int) -> None:
    gen = mod.Parallel(n_jobs=2, backend="threading", return_as="generator")(
        mod.delayed(math.sqrt)(i) for i in range(n)
    )
    assert sum(1 for _ in gen) == n


def _numpy_threads(mod, n: int) -> None:
    import numpy as np

    a = np.random.default_rng(0).random((200, 200))
    out = mod.Parallel(n_jobs=2, prefer="threads")(mod.delayed(np.dot)(a, a) for _ in range(n))
    assert len(out) == n


def _processes(mod, calls: int) -> None:
    # The default ('loky') backend, 10 small tasks per call.
    for _ in range(calls):
        out = mod.Parallel(n_jobs=2)(mod.delayed(abs)(-i) for i in range(10))
    assert out[3] == 3


def _processes_tiny(mod, n: int) -> None:
    # The default backend on tiny tasks: dispatch, batching and transport costs.
    out = mod.Parallel(n_jobs=2)(mod.delayed(math.sqrt)(i) for i in range(n))
    assert len(out) == n and out[-1] == math.sqrt(n - 1)


WORKLOADS: list[tuple[str, Callable, int, int, str]] = [
    # name, function, size, quick size, what one size unit is
    ("threading: {n} tiny tasks", _tiny_tasks, 100_000, 10_000, "call"),
    ("threading: 10-task call, warm", _small_call, 200, 20, "per call"),
    ("n_jobs=1: {n} tiny tasks", _sequential, 100_000, 10_000, "call"),
    ("generator: {n} tiny tasks", _generator, 20_000, 2_000, "call"),
    ("threads: {n} x np.dot 200x200", _numpy_threads, 200, 40, "call"),
    ("default backend: 10-task call", _processes, 10, 3, "per call"),
    ("default backend: {n} tiny tasks", _processes_tiny, 100_000, 10_000, "call"),
]


def measure(func: Callable, mod, size: int) -> float:
    t0 = time.perf_counter()
    func(mod, size)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller workloads")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated name prefixes")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args()

    rows = []
    print(f"joblib {joblib.__version__} vs joblib-rs {joblib_rs.__version__}")
    print(f"{'workload':34} {'joblib':>11} {'joblib-rs':>11} {'ratio':>8}")
    for name, func, size, quick_size, unit in WORKLOADS:
        n = quick_size if args.quick else size
        name = name.format(n=n)
        if args.only and not any(name.startswith(p) for p in args.only.split(",")):
            continue
        per = n if unit == "per call" else 1
        # Warm both (threads, imports, process pools) before timing.
        func(joblib, min(n, 10))
        func(joblib_rs, min(n, 10))
        times: dict[str, list[float]] = {"joblib": [], "joblib_rs": []}
        for _ in range(max(args.repeat, 1)):
            for mod in (joblib, joblib_rs):
                times[mod.__name__].append(measure(func, mod, n) / per)
        theirs, ours = min(times["joblib"]), min(times["joblib_rs"])
        rows.append(
            {
                "workload": name,
                "unit": unit,
                "joblib_s": theirs,
                "joblib_rs_s": ours,
                "joblib_median_s": statistics.median(times["joblib"]),
                "joblib_rs_median_s": statistics.median(times["joblib_rs"]),
                "ratio": theirs / ours,
            }
        )
        print(f"{name:34} {_fmt(theirs):>11} {_fmt(ours):>11} {theirs / ours:7.1f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


if __name__ == "__main__":
    main()
