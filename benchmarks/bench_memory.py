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


def per_call_medians(
    fns: dict[str, Callable[[], Any]], calls: int, batches: int
) -> dict[str, float]:
    """For each function, the median over ``batches`` of the mean time of ``calls`` calls
    (seconds per call). Batches of the functions alternate, so load on a shared machine hits
    them alike."""
    samples: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(batches):
        for key, fn in fns.items():
            fn()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[key].append((time.perf_counter() - start) / calls)
    return {key: statistics.median(values) for key, values in samples.items()}


def miss_overheads(cached: dict[str, Callable[[Any], Any]], calls: int) -> dict[str, float]:
    """Median time of a miss of a trivial function (new arguments each call), alternating."""
    samples: dict[str, list[float]] = {key: [] for key in cached}
    for x in range(calls):
        for key, fn in cached.items():
            start = time.perf_counter()
            fn(x)
            samples[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    args = parser(__doc__).parse_args()
    scale = 10 if args.quick else 1
    root = tempfile.mkdtemp(prefix="bench-memory-")
    modules = {"rs": joblib_rs}
    if joblib is not None:
        modules["jl"] = joblib
    rows = []
    try:
        small = {
            key: module.Memory(f"{root}/{key}-small", verbose=0).cache(add)
            for key, module in modules.items()
        }
        hit = per_call_medians(
            {key: (lambda c=c: c(1)) for key, c in small.items()}, 2000 // scale, 15
        )
        rows.append(Row("hit, small scalar args", hit.get("jl"), hit["rs"], "<= 20 us, >= 4x"))

        missing = {
            key: module.Memory(f"{root}/{key}-miss", verbose=0).cache(add)
            for key, module in modules.items()
        }
        for c in missing.values():
            c(-1)
        miss = miss_overheads(missing, 300 // scale)
        rows.append(Row("miss, small args (overhead)", miss.get("jl"), miss["rs"], "<= joblib"))

        big = np.random.default_rng(0).random(100_000_000 // 8 // scale)
        label = f"{big.nbytes // 1_000_000} MB"
        for mmap_mode, target in ((None, ">= 5x"), ("r", ">= 20x")):
            times: dict[str, float] = {}
            for key, module in modules.items():
                memory = module.Memory(
                    f"{root}/{key}-big-{mmap_mode}", mmap_mode=mmap_mode, verbose=0
                )
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
        rows.append(
            Row(f"miss, {label} array arg+result", miss_big.get("jl"), miss_big["rs"], "<= joblib")
        )

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
        rows.append(
            Row(f"reduce_size scan, {n_entries} entries", reduce.get("jl"), reduce["rs"], "")
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table("Memory (hits: median per call; others: best of runs)", rows)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
