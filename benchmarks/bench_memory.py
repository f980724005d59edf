"""Memory: joblib and joblib-rs side by side, in one process, on the same workloads.

    python benchmarks/bench_memory.py [--quick] [--repeat 3] [--json out.json]

Each cache lives in its own temporary folder on the same file system.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import joblib_rs

from _common import Row, best_time, parser, print_table, write_json

try:
    import joblib
except ImportError:  # the comparison column stays empty
    joblib = None


def add(x, y=2):
    return x + y


def double(a):
    return a * 2.0


def per_call_median(fn: Callable[[], Any], calls: int, batches: int) -> float:
    """Median over ``batches`` of the mean time of ``calls`` calls (seconds per call)."""
    fn()
    samples = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def miss_overhead(module: Any, folder: str, calls: int) -> float:
    """Median time of a miss of a trivial function (new arguments each call)."""
    cached = module.Memory(folder, verbose=0).cache(add)
    counter = iter(range(10**9))
    cached(-1)
    samples = []
    for _ in range(calls):
        x = next(counter)
        start = time.perf_counter()
        cached(x)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    args = parser(__doc__).parse_args()
    scale = 10 if args.quick else 1
    root = tempfile.mkdtemp(prefix="bench-memory-")
    modules = {"rs": joblib_rs}
    if joblib is not None:
        modules["jl"] = joblib
    rows = []
    try:
        hit: dict[str, float] = {}
        for key, module in modules.items():
            cached = module.Memory(f"{root}/{key}-small", verbose=0).cache(add)
            cached(1)
            hit[key] = per_call_median(lambda c=cached: c(1), 2000 // scale, 15)
        rows.append(Row("hit, small scalar args", hit.get("jl"), hit["rs"], "<= 20 us, >= 4x"))

        miss: dict[str, float] = {}
        for key, module in modules.items():
            miss[key] = miss_overhead(module, f"{root}/{key}-miss", 300 // scale)
        rows.append(Row("miss, small args (overhead)", miss.get("jl"), miss["rs"], "<= joblib"))

        big = np.random.default_rng(0).random(100_000_000 // 8 // scale)
        label = f"{big.nbytes // 1_000_000} MB"
        for mmap_mode, target in ((None, ">= 5x"), ("r", ">= 20x")):
            times: dict[str, float] = {}
            for key, module in modules.items():
                memory = module.Memory(f"{root}/{key}-big-{mmap_mode}", mmap_mode=mmap_mode,
                                       verbose=0)
                cached = memory.cache(double)
                cached(big)
                times[key] = best_time(lambda c=cached: c(big), args.repeat)
                del cached
            name = f"hit, {label} array arg+result" + (" mmap" if mmap_mode else "")
            rows.append(Row(name, times.get("jl"), times["rs"], target))

        miss_big: dict[str, float] = {}
        for key, module in modules.items():
            memory = module.Memory(f"{root}/{key}-bigmiss", verbose=0)
            cached = memory.cache(double)

            def run(c=cached, m=memory):
                c.clear(warn=False)
                c(big)

            miss_big[key] = best_time(run, args.repeat)
        rows.append(Row(f"miss, {label} array arg+result", miss_big.get("jl"), miss_big["rs"],
                        "<= joblib"))

        reduce: dict[str, float] = {}
        n_entries = 2000 // scale
        for key, module in modules.items():
            memory = module.Memory(f"{root}/{key}-lru", verbose=0)
            cached = memory.cache(add)
            for i in range(n_entries):
                cached(i)
            reduce[key] = best_time(
                lambda m=memory: m.reduce_size(items_limit=n_entries), args.repeat
            )
        rows.append(Row(f"reduce_size scan, {n_entries} entries", reduce.get("jl"),
                        reduce["rs"], ""))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table("Memory (hits: median per call; others: best of runs)", rows)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
